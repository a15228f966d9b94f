//! [`DriveView`]: every drive call, made as one user. The unchecked
//! [`Drive`](super::Drive) is a view as the system; `as_user` gives a view
//! whose every call enforces that user's levels.

use std::sync::Arc;

use lmdb::RwTransaction;

use super::batch::{Batch, InBatch};
use super::calls::{Calls, Hooks, Snapshot};
use super::open_batch::OpenBatch;
use super::perms::Actor;
use super::tree::Ctx;
use super::DriveCore;
use crate::events::{micros, Level, Stopwatch};
use crate::{Error, Result};

const LOG_TARGET: &str = "keel::drive";

/// `ok`, or the error's kind (`NotFound`, `PermissionDenied`, ...).
fn outcome_name<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.kind().name(),
    }
}

/// The drive's calls, made as one user.
///
/// Reads run in a read transaction (a consistent snapshot); each write call
/// is one durable transaction, combined with concurrent writers' by group
/// commit; [`batch`](DriveView::batch) puts many calls in one transaction.
/// In a checked view (from [`as_user`](DriveView::as_user)) every call
/// needs a level on the items it touches — `read` to see, `edit` to change
/// data, create children, move or rename, `admin` to change permissions or
/// delete — and fails with
/// [`PermissionDenied`](crate::ErrorKind::PermissionDenied) otherwise.
/// See [`perms`](super::perms) for how levels are decided and inherited.
///
/// The calls themselves are [`Calls`]' methods: the same list a batch has.
pub type DriveView = Calls<AsView>;

/// What a [`DriveView`] runs its calls in: the drive, as one user.
#[derive(Clone)]
pub struct AsView {
    pub(crate) core: Arc<DriveCore>,
    pub(crate) actor: Arc<Actor>,
}

impl std::fmt::Debug for DriveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveView")
            .field("path", &self.hooks.core.env.path())
            .field("user", &self.hooks.actor.user)
            .field("checked", &self.hooks.actor.enforced)
            .finish()
    }
}

impl AsView {
    pub(crate) fn cx(&self) -> Ctx<'_> {
        Ctx {
            t: self.core.tables,
            actor: &self.actor,
            schemas: &self.core.schemas,
        }
    }
}

impl Hooks for AsView {
    /// One read transaction for the call `op`; a trace event with its time.
    fn read<T>(&self, op: &'static str, f: impl FnOnce(&Ctx<'_>, &Snapshot<'_>) -> Result<T>) -> Result<T> {
        let watch = Stopwatch::start(LOG_TARGET, Level::Trace);
        let cx = self.cx();
        let result = self.core.env.read(|txn| f(&cx, &Snapshot::of(txn)));
        if let Some(elapsed) = watch.elapsed() {
            log::trace!(
                target: LOG_TARGET,
                "read: op={op} elapsed_us={} outcome={}",
                micros(elapsed),
                outcome_name(&result)
            );
        }
        result
    }

    /// One durable write transaction for the call `op` (group-committed);
    /// a debug event with its time, queue wait and commit included.
    fn write<T: Send>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let watch = Stopwatch::start(LOG_TARGET, Level::Debug);
        let cx = self.cx();
        let result = self.core.env.write(move |txn| f(&cx, txn));
        if let Some(elapsed) = watch.elapsed() {
            log::debug!(
                target: LOG_TARGET,
                "write: op={op} user={:?} elapsed_us={} outcome={}",
                self.actor.user,
                micros(elapsed),
                outcome_name(&result)
            );
        }
        result
    }
}

impl DriveView {
    pub(crate) fn core(&self) -> &Arc<DriveCore> {
        &self.hooks.core
    }

    /// The user this view acts as (empty for the system).
    pub fn user(&self) -> &str {
        &self.hooks.actor.user
    }

    /// Whether this view enforces permission levels.
    pub fn is_checked(&self) -> bool {
        self.hooks.actor.enforced
    }

    /// A view whose every call is checked against `user`'s (and `roles'`)
    /// permission levels, and records `user` as creator and updater. Only
    /// the unchecked view offers it: from a checked view it is
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied), so a user's
    /// view cannot become another user's.
    pub fn as_user(&self, user: &str, roles: &[&str]) -> Result<DriveView> {
        self.refuse_if_checked("as_user")?;
        Ok(self.view_as(user, roles, true))
    }

    /// A view that records `user` as creator and updater but checks nothing
    /// (for services that have checked permissions themselves). Only the
    /// unchecked view offers it, like [`as_user`](DriveView::as_user).
    pub fn attributed_to(&self, user: &str) -> Result<DriveView> {
        self.refuse_if_checked("attributed_to")?;
        Ok(self.view_as(user, &[], false))
    }

    fn refuse_if_checked(&self, call: &str) -> Result<()> {
        if self.is_checked() {
            return Err(Error::permission_denied(format!(
                "{call} is only offered by the unchecked drive (this view acts as {:?})",
                self.user()
            )));
        }
        Ok(())
    }

    pub(crate) fn view_as(&self, user: &str, roles: &[&str], enforced: bool) -> DriveView {
        Calls {
            hooks: AsView {
                core: self.hooks.core.clone(),
                actor: Arc::new(Actor {
                    user: user.to_owned(),
                    roles: roles.iter().map(|role| (*role).to_owned()).collect(),
                    enforced,
                }),
            },
        }
    }

    /// Runs `f` with a [`Batch`]: every call in it is one transaction,
    /// committed durably when `f` returns `Ok`, undone entirely when it
    /// returns an error. `f` may run again if the map must grow.
    pub fn batch<T: Send>(&self, mut f: impl FnMut(&Batch<'_, '_>) -> Result<T> + Send) -> Result<T> {
        self.hooks.write("batch", |cx, txn| f(&InBatch::calls(*cx, txn)))
    }

    /// Opens a batch whose calls are made one at a time on this thread and
    /// ended by `commit` or `abort` (for host languages' `with` blocks). See
    /// [`OpenBatch`] for its rules and costs.
    pub fn begin_batch(&self) -> Result<OpenBatch> {
        OpenBatch::begin(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::drive::{Drive, DriveOptions};
    use crate::ErrorKind;

    #[test]
    fn only_the_unchecked_view_makes_views_as_users() {
        let dir = std::env::temp_dir().join(format!("keel-view-as-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let drive = Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap();
        let ann = drive.view.as_user("ann", &["staff"]).unwrap();
        assert!(ann.is_checked() && ann.user() == "ann");
        assert_eq!(
            ann.as_user("root", &[]).unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            ann.attributed_to("root").unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        let bob = drive.view.attributed_to("bob").unwrap();
        assert!(!bob.is_checked() && bob.user() == "bob");
        std::fs::remove_dir_all(&dir).ok();
    }
}

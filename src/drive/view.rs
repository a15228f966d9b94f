//! [`DriveView`]: every drive call, made as one user. The unchecked
//! [`Drive`](super::Drive) is a view as the system; `Drive::as_user` gives a
//! view whose every call enforces that user's levels.

use std::sync::Arc;

use lmdb::RwTransaction;
use serde_json::Value;

use super::batch::Batch;
use super::data::{self, Version, VersionInfo};
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::open_batch::{self, OpenBatch};
use super::perms::{Actor, Permissions};
use super::schema::{self, MigrateFn};
use super::tree::{self, Ctx, WalkOrder};
use super::DriveCore;
use crate::events::{micros, Level, Stopwatch};
use crate::Result;

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
/// In a checked view (from [`Drive::as_user`](super::Drive::as_user)) every
/// call needs a level on the items it touches — `read` to see, `edit` to
/// change data, create children, move or rename, `admin` to change
/// permissions or delete — and fails with
/// [`PermissionDenied`](crate::ErrorKind::PermissionDenied) otherwise.
/// See [`perms`](super::perms) for how levels are decided and inherited.
#[derive(Clone)]
pub struct DriveView {
    pub(crate) core: Arc<DriveCore>,
    pub(crate) actor: Arc<Actor>,
}

impl std::fmt::Debug for DriveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveView")
            .field("path", &self.core.env.path())
            .field("user", &self.actor.user)
            .field("checked", &self.actor.enforced)
            .finish()
    }
}

impl DriveView {
    fn cx(&self) -> Ctx<'_> {
        Ctx {
            t: self.core.tables,
            actor: &self.actor,
            schemas: &self.core.schemas,
        }
    }

    /// One read transaction for the call `op`; a trace event with its time.
    fn read<T>(&self, op: &'static str, f: impl FnOnce(&Ctx<'_>, &lmdb::RoTransaction<'_>) -> Result<T>) -> Result<T> {
        let watch = Stopwatch::start(LOG_TARGET, Level::Trace);
        let cx = self.cx();
        let result = self.core.env.read(|txn| f(&cx, txn));
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

    fn write<T: Send>(
        &self,
        op: &'static str,
        f: impl FnMut(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        open_batch::refuse_write_beside_open_batch(Arc::as_ptr(&self.core) as usize)?;
        self.write_unguarded(op, f)
    }

    /// One durable write transaction for the call `op` (group-committed);
    /// a debug event with its time, queue wait and commit included.
    fn write_unguarded<T: Send>(
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

    /// The user this view acts as (empty for the system).
    pub fn user(&self) -> &str {
        &self.actor.user
    }

    /// Whether this view enforces permission levels.
    pub fn is_checked(&self) -> bool {
        self.actor.enforced
    }

    /// Runs `f` with a [`Batch`]: every call in it is one transaction,
    /// committed durably when `f` returns `Ok`, undone entirely when it
    /// returns an error. `f` may run again if the map must grow.
    pub fn batch<T: Send>(&self, mut f: impl FnMut(&mut Batch<'_, '_>) -> Result<T> + Send) -> Result<T> {
        self.write("batch", |cx, txn| f(&mut Batch { cx: *cx, txn }))
    }

    /// `batch` without the open-batch check, for the open batch's own thread.
    pub(crate) fn batch_unguarded<T: Send>(
        &self,
        mut f: impl FnMut(&mut Batch<'_, '_>) -> Result<T> + Send,
    ) -> Result<T> {
        self.write_unguarded("open_batch", |cx, txn| f(&mut Batch { cx: *cx, txn }))
    }

    /// Opens a batch whose calls are made one at a time with
    /// [`OpenBatch::run`] and ended by `commit` or `abort` (for host
    /// languages' `with` blocks). See [`OpenBatch`] for its costs.
    pub fn begin_batch(&self) -> Result<OpenBatch> {
        open_batch::refuse_write_beside_open_batch(Arc::as_ptr(&self.core) as usize)?;
        OpenBatch::begin(self)
    }

    /// Item `id`. Needs `read`.
    pub fn get(&self, id: ItemId) -> Result<Item> {
        self.read("get", |cx, txn| tree::get(cx, txn, id, None))
    }

    /// Item `id`, which must be of type `kind` (Conflict otherwise).
    pub fn get_typed(&self, id: ItemId, kind: &str) -> Result<Item> {
        self.read("get_typed", |cx, txn| tree::get(cx, txn, id, Some(kind)))
    }

    /// Every item along `path` (`a/b/c`, case-insensitive; outer slashes and
    /// spaces ignored), first step first. A missing step is NotFound naming
    /// it. Needs `read` on every step.
    pub fn resolve(&self, path: &str) -> Result<Vec<Item>> {
        self.read("resolve", |cx, txn| tree::resolve(cx, txn, path))
    }

    /// The item at `path` (the root for `""`).
    pub fn at_path(&self, path: &str) -> Result<Item> {
        self.read("at_path", |cx, txn| tree::at_path(cx, txn, path))
    }

    /// The path of item `id` (names as given, joined by `/`).
    pub fn path_of(&self, id: ItemId) -> Result<String> {
        self.read("path_of", |cx, txn| tree::path_of(cx, txn, id))
    }

    /// Up to `limit` children of `parent`, in name order ignoring case,
    /// starting after the child named `after`. Unreadable children are left
    /// out.
    pub fn children(&self, parent: ItemId, after: Option<&str>, limit: usize) -> Result<Vec<Item>> {
        self.read("children", |cx, txn| tree::children(cx, txn, parent, after, limit))
    }

    /// Every readable item of the subtree at `top` (including `top` unless
    /// it is the root), in `order`, from one consistent snapshot.
    pub fn walk(&self, top: ItemId, order: WalkOrder) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        self.read("walk", |cx, txn| {
            tree::walk(cx, txn, top, order, |item| {
                items.push(item);
                Ok(())
            })
        })?;
        Ok(items)
    }

    /// Like [`walk`](DriveView::walk), calling `visit` on each item instead
    /// of collecting them; an error from `visit` stops the walk.
    pub fn walk_each(&self, top: ItemId, order: WalkOrder, mut visit: impl FnMut(&Item) -> Result<()>) -> Result<()> {
        self.read("walk_each", |cx, txn| {
            tree::walk(cx, txn, top, order, |item| visit(&item))
        })
    }

    /// Up to `limit` readable items of type `kind`, by id, after `after`.
    pub fn by_type(&self, kind: &str, after: Option<ItemId>, limit: usize) -> Result<Vec<Item>> {
        self.read("by_type", |cx, txn| tree::by_type(cx, txn, kind, after, limit))
    }

    /// Creates `new` under `parent`, which must exist. Needs `edit` on it.
    pub fn create(&self, parent: ItemId, new: &NewItem) -> Result<Item> {
        self.write("create", |cx, txn| tree::create(cx, txn, parent, new))
    }

    /// Creates `new` under the item at `parent_path`, which must exist.
    pub fn create_at(&self, parent_path: &str, new: &NewItem) -> Result<Item> {
        self.write("create_at", |cx, txn| {
            let parent = tree::at_path(cx, txn, parent_path)?;
            tree::create(cx, txn, parent.id, new)
        })
    }

    /// Creates the missing folders along `path`; returns every step's item.
    pub fn make_path(&self, path: &str) -> Result<Vec<Item>> {
        self.write("make_path", |cx, txn| tree::make_path(cx, txn, path))
    }

    /// Moves item `id` under `new_parent`, renamed to `new_name` if given,
    /// in one transaction. Refuses a move under the item's own descendant.
    pub fn move_item(&self, id: ItemId, new_parent: ItemId, new_name: Option<&str>) -> Result<Item> {
        self.write("move_item", |cx, txn| {
            tree::move_item(cx, txn, id, new_parent, new_name)
        })
    }

    /// Renames item `id` within its parent.
    pub fn rename(&self, id: ItemId, new_name: &str) -> Result<Item> {
        self.write("rename", |cx, txn| {
            let parent = tree::load(cx, txn, id)?.parent;
            tree::move_item(cx, txn, id, parent, Some(new_name))
        })
    }

    /// Deletes item `id`, everything below it and all their data. Needs
    /// `admin` on each. Returns how many items were removed.
    pub fn delete(&self, id: ItemId) -> Result<u64> {
        self.write("delete", |cx, txn| tree::delete(cx, txn, id))
    }

    /// Replaces item `id`'s own permissions. Needs `admin`.
    pub fn set_permissions(&self, id: ItemId, permissions: &Permissions) -> Result<Item> {
        self.write("set_permissions", |cx, txn| {
            tree::set_permissions(cx, txn, id, permissions)
        })
    }

    /// Writes `value` as `version` of typed item `id`'s data (default: the
    /// next patch after the current one), checked against the type's schema.
    /// A version that is already stored is refused with
    /// [`AlreadyExists`](crate::ErrorKind::AlreadyExists) (see
    /// [`replace_data`](DriveView::replace_data)). Needs `edit`. Returns the
    /// version written.
    pub fn set_data(&self, id: ItemId, value: &Value, version: Option<Version>) -> Result<Version> {
        self.write("set_data", |cx, txn| {
            data::set_data(cx, txn, id, value, version, data::Existing::Refuse)
        })
    }

    /// Like [`set_data`](DriveView::set_data) at `version`, replacing that
    /// version's data if it is stored (the old data is lost).
    pub fn replace_data(&self, id: ItemId, value: &Value, version: Version) -> Result<Version> {
        self.write("replace_data", |cx, txn| {
            data::set_data(cx, txn, id, value, Some(version), data::Existing::Replace)
        })
    }

    /// Item `id`'s data at `version` (default: current) and that version.
    pub fn get_data(&self, id: ItemId, version: Option<Version>) -> Result<(Version, Value)> {
        self.read("get_data", |cx, txn| data::get_data(cx, txn, id, version))
    }

    /// Like [`get_data`](DriveView::get_data), as the stored JSON text
    /// (no parse): cheaper when the data is handed on as text.
    pub fn get_data_text(&self, id: ItemId, version: Option<Version>) -> Result<(Version, String)> {
        self.read("get_data_text", |cx, txn| data::get_data_text(cx, txn, id, version))
    }

    /// Every stored version of item `id`'s data, newest first.
    pub fn versions(&self, id: ItemId) -> Result<Vec<VersionInfo>> {
        self.read("versions", |cx, txn| data::versions(cx, txn, id))
    }

    /// Deletes one version; deleting the current one makes the highest
    /// remaining version current. Returns the current version afterwards.
    pub fn delete_data(&self, id: ItemId, version: Version) -> Result<Option<Version>> {
        self.write("delete_data", |cx, txn| data::delete_data(cx, txn, id, version))
    }

    /// Registers `schema` (JSON Schema) as `version` of type `kind`'s schema.
    /// The same version again is a no-op returning `false`; a lower one is a
    /// Conflict; a higher one runs `migrate` over every stored version of
    /// every item of the type and validates the results — all in one
    /// transaction, so a failure (naming the item and version) changes
    /// nothing. Needs `admin` on the root in a checked view.
    pub fn set_schema(
        &self,
        kind: &str,
        schema: &Value,
        version: u32,
        mut migrate: Option<&mut MigrateFn<'_>>,
    ) -> Result<bool> {
        self.write("set_schema", |cx, txn| {
            schema::set_schema(cx, txn, kind, schema, version, migrate.as_deref_mut())
        })
    }

    /// The schema registered for `kind`, with its version.
    pub fn schema(&self, kind: &str) -> Result<Option<(u32, Value)>> {
        self.read("schema", |cx, txn| schema::get_schema(cx, txn, kind))
    }
}

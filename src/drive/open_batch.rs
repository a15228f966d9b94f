//! [`OpenBatch`]: a batch whose calls arrive one at a time (from a host
//! language's `with` block, or C calls between begin and commit) instead of
//! inside one closure.
//!
//! The batch keeps the drive's write transaction open on the thread that
//! began it ([`HeldWrite`]): each call runs right there, with no thread hop.
//! LMDB ties a write transaction to its thread, so the batch is used only
//! from that thread; any other is refused.

use std::cell::RefCell;
use std::thread::ThreadId;

use lmdb::RwTransaction;

use super::batch::{atomic, Batch, InBatch};
use super::calls::{Calls, Hooks, Snapshot};
use super::tree::Ctx;
use super::view::DriveView;
use crate::lmdb::HeldWrite;
use crate::{Error, Result};

/// An open batch: calls made through [`run`](OpenBatch::run) share one write
/// transaction, made durable by [`commit`](OpenBatch::commit) and undone by
/// [`abort`](OpenBatch::abort) (or by dropping it).
///
/// While it is open it holds the drive's write transaction: other writers
/// of the same file wait until it ends, so keep it short. It is used only
/// from the thread that opened it: `run`, `commit` and `abort` from another
/// thread fail with [`WouldDeadlock`](crate::ErrorKind::WouldDeadlock) and
/// leave it as it was. A write through the drive itself (not through the
/// batch) from the opening thread would wait for itself and fails with
/// `WouldDeadlock` too. If the batch outgrows the storage map, its calls
/// fail with [`StorageFull`](crate::ErrorKind::StorageFull) and so does
/// `commit`; the map has grown by then, so running the batch again succeeds.
///
/// Costs: a call is the call's own work in a nested transaction; opening
/// waits for the writers queued before it; commit is one fsync.
pub type OpenBatch = Calls<InOpenBatch>;

/// What an [`OpenBatch`] runs its calls in: the write transaction it holds
/// on the thread that opened it.
pub struct InOpenBatch {
    view: DriveView,
    held: RefCell<HeldWrite>,
    owner: ThreadId,
}

// SAFETY: every method checks `owner` (`held`) before touching the RefCell,
// so only the opening thread ever borrows it.
unsafe impl Sync for InOpenBatch {}

impl InOpenBatch {
    /// The batch's transaction, refusing other threads and re-entry (a call
    /// made from inside another call of the same batch).
    fn held(&self) -> Result<std::cell::RefMut<'_, HeldWrite>> {
        // The `Sync` impl rests on this check coming first.
        if self.owner != std::thread::current().id() {
            return Err(Error::would_deadlock(
                "an open batch is used only by the thread that opened it \
                 (LMDB ties a write transaction to its thread)",
            ));
        }
        self.held
            .try_borrow_mut()
            .map_err(|_| Error::would_deadlock("a batch call was made from inside another call of the same batch"))
    }
}

impl Hooks for InOpenBatch {
    fn read<T>(&self, _op: &'static str, f: impl FnOnce(&Ctx<'_>, &Snapshot<'_>) -> Result<T>) -> Result<T> {
        let cx = self.view.hooks.cx();
        self.held()?.run(|txn| f(&cx, &Snapshot::of(&*txn)))
    }

    fn write<T: Send>(
        &self,
        _op: &'static str,
        f: impl FnMut(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let cx = self.view.hooks.cx();
        self.held()?.run(|txn| atomic(&cx, txn, f))
    }
}

impl OpenBatch {
    pub(crate) fn begin(view: &DriveView) -> Result<OpenBatch> {
        let held = view.core().env.hold_write()?;
        Ok(Calls {
            hooks: InOpenBatch {
                view: view.clone(),
                held: RefCell::new(held),
                owner: std::thread::current().id(),
            },
        })
    }

    /// Runs `call` with the batch as a closure [`Batch`] and returns its
    /// result: for several calls at once. Each write in it is atomic, as
    /// when made on the open batch directly.
    pub fn run<T>(&self, call: impl FnOnce(&Batch<'_, '_>) -> Result<T>) -> Result<T> {
        let cx = self.hooks.view.hooks.cx();
        self.hooks.held()?.run(|txn| call(&InBatch::calls(cx, txn)))
    }

    /// Commits every call made, durably; returns once it is on disk.
    pub fn commit(&self) -> Result<()> {
        self.hooks.held()?.commit()
    }

    /// Undoes every call made. Aborting an ended batch is a no-op.
    pub fn abort(&self) -> Result<()> {
        self.hooks.held()?.abort()
    }

    /// Whether this thread opened the batch (the only one that may use it).
    pub fn opened_here(&self) -> bool {
        self.hooks.owner == std::thread::current().id()
    }

    /// Whether the batch is still open (neither committed nor aborted).
    pub fn is_open(&self) -> bool {
        self.hooks.held().is_ok_and(|held| held.is_open())
    }
}

impl std::fmt::Debug for OpenBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBatch").field("open", &self.is_open()).finish()
    }
}

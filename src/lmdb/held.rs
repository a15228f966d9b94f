//! [`HeldWrite`]: a write transaction kept open on its caller's thread
//! between calls, for batches whose calls arrive one at a time (a host
//! language's `with` block) — no thread hop, no channel per call.
//!
//! LMDB ties a write transaction to the thread that began it (the file's
//! writer mutex is owned by that thread), so a `HeldWrite` refuses every use
//! from another thread with [`WouldDeadlock`](crate::ErrorKind::WouldDeadlock)
//! naming the rule. While it is held, this process's group commit runs no
//! batch: other writers wait, and a plain write from the holding thread
//! (which would wait for itself) is refused by [`Env::write`].

use std::cell::RefCell;
use std::thread::ThreadId;

use lmdb::{RwTransaction, Transaction};
use parking_lot::RwLockReadGuard;

use super::env::Env;
use super::{is_map_full, map_err};
use crate::{Error, Result};

thread_local! {
    /// The environments (by address) this thread holds a write on.
    static HOLDING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread holds an open write on the environment at `env`.
pub(crate) fn holding_here(env: usize) -> bool {
    HOLDING.with(|holding| holding.borrow().contains(&env))
}

/// An open write transaction on one thread: calls run in it with
/// [`run`](HeldWrite::run); [`commit`](HeldWrite::commit) makes them durable
/// (per the environment's durability), [`abort`](HeldWrite::abort) or drop
/// undoes them.
///
/// If a call ran out of map space, the map cannot grow while the
/// transaction is open: that call fails with
/// [`StorageFull`](crate::ErrorKind::StorageFull), and so does `commit`,
/// which then grows the map, so running the batch again succeeds.
pub struct HeldWrite {
    // Field order is drop order: the transaction ends before the resize
    // guard is released, and both before the environment may close.
    txn: Option<RwTransaction<'static>>,
    resize: Option<RwLockReadGuard<'static, ()>>,
    env: Env,
    owner: ThreadId,
    map_full: bool,
}

// SAFETY: the transaction and guard are only touched by the thread that
// made them: every method checks `owner` first (see `check_thread`), and a
// drop on another thread follows the rule documented on `Drop`.
unsafe impl Send for HeldWrite {}

impl HeldWrite {
    /// Waits until this process's writers are idle, takes the leader's place
    /// and begins the write transaction (which may wait for another
    /// process's writer). Blocks: call it without holding other locks.
    pub(crate) fn begin(env: &Env) -> Result<HeldWrite> {
        let address = env.address();
        if holding_here(address) || super::group_commit::leading_here() {
            return Err(Error::would_deadlock(format!(
                "this thread already writes to {}: a second open batch would wait for itself",
                env.path().display()
            )));
        }
        let inner = env.inner();
        inner.commits.hold();
        let begun = inner.begin(|lmdb| lmdb.begin_rw_txn());
        let (guard, txn) = match begun {
            Ok(begun) => begun,
            Err(err) => {
                inner.commits.release_hold(false);
                return Err(err);
            }
        };
        HOLDING.with(|holding| holding.borrow_mut().push(address));
        // SAFETY: both borrow `inner`, which `env` (kept in the struct and
        // dropped after them) keeps alive at a stable address.
        let (guard, txn) = unsafe {
            (
                std::mem::transmute::<RwLockReadGuard<'_, ()>, RwLockReadGuard<'static, ()>>(guard),
                std::mem::transmute::<RwTransaction<'_>, RwTransaction<'static>>(txn),
            )
        };
        Ok(HeldWrite {
            txn: Some(txn),
            resize: Some(guard),
            env: env.clone(),
            owner: std::thread::current().id(),
            map_full: false,
        })
    }

    /// The environment written to.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Whether the transaction is still open.
    pub fn is_open(&self) -> bool {
        self.txn.is_some()
    }

    fn check_thread(&self) -> Result<()> {
        if std::thread::current().id() != self.owner {
            return Err(Error::would_deadlock(format!(
                "an open batch on {} is used only by the thread that opened it \
                 (LMDB ties a write transaction to its thread)",
                self.env.path().display()
            )));
        }
        Ok(())
    }

    /// Runs `call` in the transaction and returns its result.
    pub fn run<T>(&mut self, call: impl FnOnce(&mut RwTransaction<'_>) -> Result<T>) -> Result<T> {
        self.check_thread()?;
        let txn = self.txn.as_mut().ok_or_else(|| Error::closed("the batch has ended"))?;
        let result = call(txn);
        if matches!(&result, Err(err) if is_map_full(err)) {
            self.map_full = true;
        }
        result
    }

    /// Commits every change made, durably; returns once it is on disk.
    pub fn commit(&mut self) -> Result<()> {
        self.check_thread()?;
        let txn = self.txn.take().ok_or_else(|| Error::closed("the batch has ended"))?;
        if self.map_full {
            txn.abort();
            self.release(false);
            self.env.inner().grow_map()?;
            return Err(Error::storage_full(
                "the batch outgrew the storage map, which has now grown: run the batch again",
            ));
        }
        let committed = txn.commit();
        self.release(committed.is_ok());
        committed.map_err(|e| map_err(format!("commit to {}", self.env.path().display()), e))
    }

    /// Undoes every change made. Aborting an ended batch is a no-op; from
    /// another thread it is refused. If a call ran out of map space, the map
    /// grows now, so running the batch again can succeed.
    pub fn abort(&mut self) -> Result<()> {
        self.check_thread()?;
        if let Some(txn) = self.txn.take() {
            txn.abort();
            self.release(false);
            if self.map_full {
                self.env.inner().grow_map()?;
            }
        }
        Ok(())
    }

    /// Lets the resize lock and the leader's place go (the transaction has ended).
    fn release(&mut self, committed: bool) {
        self.resize = None;
        let address = self.env.address();
        if std::thread::current().id() == self.owner {
            HOLDING.with(|holding| holding.borrow_mut().retain(|held| *held != address));
        }
        self.env.inner().commits.release_hold(committed);
    }
}

/// Dropping an open `HeldWrite` aborts it. On its own thread that is all.
/// On another thread (a host language freeing an abandoned batch object
/// elsewhere) the transaction is aborted and the process's writers released,
/// but LMDB's writer mutex stays owned by the opening thread: writers then
/// wait until that thread ends. That is logged as an error; it is the cost
/// of misuse, never corruption.
impl Drop for HeldWrite {
    fn drop(&mut self) {
        if std::thread::current().id() == self.owner {
            let _ = self.abort();
            return;
        }
        let Some(txn) = self.txn.take() else {
            return;
        };
        log::error!(
            target: super::group_commit::LOG_TARGET,
            "an open batch on {} was dropped on another thread than its own: \
             writers of the file wait until the opening thread ends",
            self.env.path().display()
        );
        txn.abort();
        self.release(false);
    }
}

impl std::fmt::Debug for HeldWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldWrite")
            .field("path", &self.env.path())
            .field("open", &self.txn.is_some())
            .finish()
    }
}

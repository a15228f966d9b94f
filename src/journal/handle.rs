//! [`SharedMutation`]: a mutation whose calls arrive one at a time from a
//! host language (a Python `with` block, C calls between begin and commit)
//! instead of from one owner — the journal's counterpart of the drive's
//! `OpenBatch`. Any thread may use it, one call at a time; it ends once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use parking_lot::Mutex;

use super::Mutation;
use crate::{Error, Result};

/// A shareable, endable [`Mutation`].
///
/// Calls from several threads take turns. A call made from inside another
/// call on the same thread (a reader passed to `write_from` that uses the
/// mutation again) fails with [`WouldDeadlock`](crate::ErrorKind::WouldDeadlock)
/// instead of hanging. [`seq`](Self::seq) and [`is_active`](Self::is_active)
/// never wait, so a host may read them while a long call runs. Dropping an
/// unfinished one rolls it back (in the process that began it only).
#[derive(Debug)]
pub struct SharedMutation {
    slot: Mutex<Option<Mutation>>,
    /// The thread inside a call right now, for the re-entry check.
    user: Mutex<Option<ThreadId>>,
    active: AtomicBool,
    seq: u64,
}

impl SharedMutation {
    /// Wraps a live mutation.
    pub fn new(mutation: Mutation) -> SharedMutation {
        SharedMutation {
            seq: mutation.seq(),
            slot: Mutex::new(Some(mutation)),
            user: Mutex::new(None),
            active: AtomicBool::new(true),
        }
    }

    /// The mutation's sequence number (never waits).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// True until it is committed or rolled back (never waits).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Runs `op` on the live mutation, waiting for a call of another thread
    /// to finish first. `Closed` once ended; `WouldDeadlock` from inside a
    /// call of this same thread.
    pub fn with<T>(&self, op: impl FnOnce(&mut Mutation) -> Result<T>) -> Result<T> {
        let me = std::thread::current().id();
        self.refuse_reentry(me)?;
        let mut slot = self.slot.lock();
        let live = slot.as_mut().ok_or_else(ended)?;
        *self.user.lock() = Some(me);
        let _clear = ClearUser(&self.user);
        op(live)
    }

    /// Commits (see [`Mutation::commit`]); `Closed` if it has ended.
    pub fn commit(&self) -> Result<()> {
        self.take()?.commit()
    }

    /// Rolls back (see [`Mutation::rollback`]); `Closed` if it has ended.
    pub fn rollback(&self) -> Result<()> {
        self.take()?.rollback()
    }

    /// Takes the mutation out, to end it without holding the slot.
    fn take(&self) -> Result<Mutation> {
        self.refuse_reentry(std::thread::current().id())?;
        let taken = self.slot.lock().take().ok_or_else(ended)?;
        self.active.store(false, Ordering::Release);
        Ok(taken)
    }

    fn refuse_reentry(&self, me: ThreadId) -> Result<()> {
        if *self.user.lock() == Some(me) {
            return Err(Error::would_deadlock(
                "this thread is inside a call on this mutation already (a reader that uses the \
                 mutation it is being read into?)",
            ));
        }
        Ok(())
    }
}

fn ended() -> Error {
    Error::closed("the mutation has ended")
}

/// Clears the current user when a call returns (or unwinds).
struct ClearUser<'a>(&'a Mutex<Option<ThreadId>>);

impl Drop for ClearUser<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Journal};

    #[test]
    fn a_call_from_inside_a_call_is_would_deadlock_and_ending_twice_is_closed() {
        let dir = std::env::temp_dir().join(format!("keel-shared-mutation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let journal = Journal::open(&dir).unwrap();
        let shared = SharedMutation::new(journal.begin("t", "").unwrap());
        let inner = shared.with(|_| Ok(shared.with(|m| Ok(m.seq())).unwrap_err().kind()));
        assert_eq!(inner.unwrap(), ErrorKind::WouldDeadlock);
        assert!(shared.is_active());
        shared.with(|m| m.write("a", b"x")).unwrap();
        shared.commit().unwrap();
        assert!(!shared.is_active());
        assert_eq!(shared.rollback().unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! One key's state: its holders and its FIFO queue of waiters.
//!
//! Hand-off is explicit: a release (or a withdrawal) grants the key to the
//! waiters at the head of the queue itself, in arrival order, and wakes
//! exactly them. A writer at the head gets the key alone; readers at the head
//! are admitted together, up to the first writer behind them. Nobody else can
//! overtake: a newcomer is granted at once only while nobody waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::LockMode;

/// Holders and waiters of one key. Guarded by its shard's mutex.
#[derive(Default)]
pub(super) struct SlotState {
    /// The thread token of the exclusive holder.
    writer: Option<u64>,
    /// The thread tokens of the shared holders (one per guard).
    readers: Vec<u64>,
    /// Waiters in arrival order.
    queue: VecDeque<Waiter>,
}

/// A queued request for the key.
struct Waiter {
    id: u64,
    mode: LockMode,
    holder: u64,
    cell: Arc<WaitCell>,
}

/// Where one waiting thread sleeps, apart from everyone else, so a hand-off
/// wakes exactly the waiters it grants.
#[derive(Default)]
pub(super) struct WaitCell {
    state: Mutex<CellState>,
    wake: Condvar,
}

#[derive(Default)]
struct CellState {
    /// Set under the shard's lock when the key is handed to this waiter.
    granted: bool,
    /// Set by a cancellation; the waiter withdraws itself.
    cancelled: bool,
}

/// Why [`WaitCell::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitEnd {
    Granted,
    TimedOut,
    Cancelled,
}

impl WaitEnd {
    /// As the lock-wait event spells it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            WaitEnd::Granted => "granted",
            WaitEnd::TimedOut => "timed_out",
            WaitEnd::Cancelled => "cancelled",
        }
    }
}

impl WaitCell {
    fn grant(&self) {
        self.state.lock().granted = true;
        self.wake.notify_one();
    }

    /// Tells the waiter to give up; it withdraws itself from the queue.
    pub(super) fn cancel(&self) {
        self.state.lock().cancelled = true;
        self.wake.notify_one();
    }

    /// True once the key was handed to this waiter. Definitive when read
    /// under the shard's lock, since grants are made under it.
    pub(super) fn is_granted(&self) -> bool {
        self.state.lock().granted
    }

    /// Sleeps until the key is granted, the wait is cancelled or `deadline`
    /// passes. A grant wins over both.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> WaitEnd {
        let mut state = self.state.lock();
        loop {
            if state.granted {
                return WaitEnd::Granted;
            }
            if state.cancelled {
                return WaitEnd::Cancelled;
            }
            match deadline {
                Some(deadline) => {
                    if self.wake.wait_until(&mut state, deadline).timed_out() && !state.granted {
                        return if state.cancelled {
                            WaitEnd::Cancelled
                        } else {
                            WaitEnd::TimedOut
                        };
                    }
                }
                None => self.wake.wait(&mut state),
            }
        }
    }
}

impl SlotState {
    /// True if `holder` holds the key or waits for it: asking again would
    /// wait for itself.
    pub(super) fn involves(&self, holder: u64) -> bool {
        self.writer == Some(holder)
            || self.readers.contains(&holder)
            || self.queue.iter().any(|waiter| waiter.holder == holder)
    }

    /// True if a newcomer in `mode` may take the key now: nobody waits (no
    /// overtaking) and the holders are compatible.
    pub(super) fn can_grant_now(&self, mode: LockMode) -> bool {
        self.queue.is_empty() && self.compatible(mode)
    }

    fn compatible(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.writer.is_none() && self.readers.is_empty(),
            LockMode::Shared => self.writer.is_none(),
        }
    }

    pub(super) fn grant(&mut self, mode: LockMode, holder: u64) {
        match mode {
            LockMode::Exclusive => self.writer = Some(holder),
            LockMode::Shared => self.readers.push(holder),
        }
    }

    pub(super) fn revoke(&mut self, mode: LockMode, holder: u64) {
        match mode {
            LockMode::Exclusive => self.writer = None,
            LockMode::Shared => {
                let index = self.readers.iter().position(|&reader| reader == holder);
                self.readers
                    .swap_remove(index.expect("a shared guard is among the readers"));
            }
        }
    }

    /// Queues a waiter at the back.
    pub(super) fn enqueue(&mut self, id: u64, mode: LockMode, holder: u64) -> Arc<WaitCell> {
        let cell = Arc::new(WaitCell::default());
        self.queue.push_back(Waiter {
            id,
            mode,
            holder,
            cell: Arc::clone(&cell),
        });
        cell
    }

    /// Removes waiter `id` (it gave up), then lets in whoever it blocked.
    pub(super) fn withdraw(&mut self, id: u64) {
        self.queue.retain(|waiter| waiter.id != id);
        self.admit();
    }

    /// Hands the key to the head of the queue while it is compatible: one
    /// writer, or every reader up to the first writer.
    pub(super) fn admit(&mut self) {
        if self.queue.is_empty() {
            return; // the uncontended release
        }
        while let Some(head) = self.queue.front() {
            if !self.compatible(head.mode) {
                return;
            }
            let head = self.queue.pop_front().expect("the head exists");
            self.grant(head.mode, head.holder);
            head.cell.grant();
            if head.mode == LockMode::Exclusive {
                return;
            }
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty() && self.queue.is_empty()
    }

    pub(super) fn holders(&self) -> usize {
        self.readers.len() + usize::from(self.writer.is_some())
    }

    pub(super) fn waiters(&self) -> usize {
        self.queue.len()
    }
}

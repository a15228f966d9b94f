//! Counters a pool keeps for its whole life, and their snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::pool::outcome::Outcome;

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Tasks running now with a slot (abandoned threads excluded).
    pub in_flight: usize,
    /// The most tasks ever running at once.
    pub peak_concurrency: usize,
    /// Tasks that returned a value.
    pub completed: usize,
    /// Tasks that returned an error or panicked.
    pub failed: usize,
    /// Tasks reported timed out.
    pub timed_out: usize,
    /// Tasks reported cancelled.
    pub cancelled: usize,
    /// Tasks refused (abandoned-thread cap, key busy with a hung run, shut down).
    pub refused: usize,
    /// Abandoned threads still running (timed out or cancelled while running).
    pub abandoned: usize,
    /// Threads ever abandoned.
    pub abandoned_total: usize,
    /// Keys held in the pool's lock registry now (a hung thread keeps its key).
    pub locked_keys: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) peak: AtomicUsize,
    pub(crate) completed: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) timed_out: AtomicUsize,
    pub(crate) cancelled: AtomicUsize,
    pub(crate) refused: AtomicUsize,
    pub(crate) abandoned: AtomicUsize,
    pub(crate) abandoned_total: AtomicUsize,
}

impl Counters {
    /// A task got its key and starts running.
    pub(crate) fn task_started(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    /// A running task left its slot (finished, or abandoned).
    pub(crate) fn task_left_slot(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn thread_abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::SeqCst);
        self.abandoned_total.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn abandoned_thread_returned(&self) {
        self.abandoned.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn abandoned_now(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Counts a decided outcome in its column.
    pub(crate) fn record<T>(&self, outcome: &Outcome<T>) {
        let counter = match outcome {
            Outcome::Value(_) => &self.completed,
            Outcome::Error(_) | Outcome::Panicked(_) => &self.failed,
            Outcome::TimedOut => &self.timed_out,
            Outcome::Cancelled => &self.cancelled,
            Outcome::Refused(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, locked_keys: usize) -> PoolStats {
        let load = |counter: &AtomicUsize| counter.load(Ordering::SeqCst);
        PoolStats {
            in_flight: load(&self.in_flight),
            peak_concurrency: load(&self.peak),
            completed: load(&self.completed),
            failed: load(&self.failed),
            timed_out: load(&self.timed_out),
            cancelled: load(&self.cancelled),
            refused: load(&self.refused),
            abandoned: load(&self.abandoned),
            abandoned_total: load(&self.abandoned_total),
            locked_keys,
        }
    }
}

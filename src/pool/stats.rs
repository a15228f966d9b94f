//! Counters a pool keeps for its whole life, and their snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::pool::outcome::Outcome;
use crate::pool::slots::Slots;

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
// repr(C): the C surface hands this struct out as it is (keel.h names it
// keel_*_stats), so its counters are defined once for every surface.
#[repr(C)]
pub struct PoolStats {
    /// Tasks holding one of the pool's slots now: running, or waiting for
    /// their key (abandoned threads excluded).
    pub in_flight: usize,
    /// Workers waiting for a slot now (freed slots go to them first come,
    /// first served).
    pub slot_waiters: usize,
    /// The most slots in use when a task started: the peak concurrency.
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
    /// Tasks skipped because their key was paused by the failure backoff.
    pub skipped: usize,
    /// Keys paused by the failure backoff now.
    pub paused_keys: usize,
    /// Abandoned threads still running (timed out or cancelled while running).
    pub abandoned: usize,
    /// Threads ever abandoned.
    pub abandoned_total: usize,
    /// Keys held in the pool's lock registry now (a hung thread keeps its key).
    pub locked_keys: usize,
    /// Keys held by an abandoned thread: their tasks are refused until it returns.
    pub hung_keys: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) timed_out: AtomicUsize,
    pub(crate) cancelled: AtomicUsize,
    pub(crate) refused: AtomicUsize,
    pub(crate) skipped: AtomicUsize,
    pub(crate) abandoned: AtomicUsize,
    pub(crate) abandoned_total: AtomicUsize,
}

impl Counters {
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
            Outcome::Skipped { .. } => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, slots: &Slots, locked_keys: usize, paused_keys: usize) -> PoolStats {
        let load = |counter: &AtomicUsize| counter.load(Ordering::SeqCst);
        PoolStats {
            in_flight: slots.in_use(),
            slot_waiters: slots.waiting(),
            peak_concurrency: slots.peak(),
            completed: load(&self.completed),
            failed: load(&self.failed),
            timed_out: load(&self.timed_out),
            cancelled: load(&self.cancelled),
            refused: load(&self.refused),
            skipped: load(&self.skipped),
            paused_keys,
            abandoned: load(&self.abandoned),
            abandoned_total: load(&self.abandoned_total),
            locked_keys,
            hung_keys: 0,
        }
    }
}

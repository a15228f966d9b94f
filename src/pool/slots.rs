//! The pool-wide concurrency limit, shared by every batch of one pool.
//!
//! A slot is held by a task from the moment a worker takes it until it is
//! decided: by its worker when it returns, or by the caller when it abandons
//! it (a hung thread gives its slot up without knowing). Taking a free slot
//! is one compare-and-swap; only a full pool makes a worker sleep.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

pub(crate) struct Slots {
    limit: usize,
    in_use: AtomicUsize,
    /// The most slots ever in use while a task started.
    peak: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Slots {
            limit: limit.max(1),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot if one is free now.
    pub(crate) fn try_take(&self) -> bool {
        self.in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < self.limit).then_some(used + 1)
            })
            .is_ok()
    }

    /// Takes a slot, sleeping while none is free. Returns false, without a
    /// slot, once `give_up()` says the caller no longer wants one.
    pub(crate) fn take(&self, give_up: impl Fn() -> bool) -> bool {
        if self.try_take() {
            return true;
        }
        let mut guard = self.lock.lock();
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            // Checked after announcing the sleeper, so a release in between
            // either is seen here or sees us and wakes us.
            if self.try_take() {
                break true;
            }
            if give_up() {
                break false;
            }
            self.freed.wait(&mut guard);
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Gives a slot back and wakes one sleeper.
    pub(crate) fn release(&self) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            drop(self.lock.lock());
            self.freed.notify_one();
        }
    }

    /// A task holding a slot starts running: records the peak.
    pub(crate) fn task_started(&self) {
        let now = self.in_use.load(Ordering::Relaxed);
        // Reads first: the shared line is written only when a peak is new.
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Tasks holding a slot now (running, or waiting for their key).
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    /// The most slots in use when a task started.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Wakes every sleeper to re-check whether it still wants a slot.
    pub(crate) fn wake_all(&self) {
        drop(self.lock.lock());
        self.freed.notify_all();
    }
}

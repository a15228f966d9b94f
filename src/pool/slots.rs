//! The pool-wide concurrency limit, shared by every batch of one pool.
//!
//! A slot is held by a task from the moment a worker takes it until it is
//! decided: by its worker when it returns, or by the caller when it abandons
//! it (a hung thread gives its slot up without knowing). Taking a free slot
//! is one compare-and-swap while nobody waits for one.
//!
//! Freed slots go to who waited, first come first served: once a worker
//! sleeps for a slot, newcomers queue behind it instead of grabbing the
//! next free slot lock-free, and a release hands its slot to the head of the
//! queue directly. So when a hung task times out, its slot goes to the
//! longest waiter (a healthy task of another batch), not to the fresh worker
//! that replaces the hung one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

pub(crate) struct Slots {
    limit: usize,
    in_use: AtomicUsize,
    /// The most slots ever in use while a task started.
    peak: AtomicUsize,
    /// Workers in `queue`, readable without the lock.
    queued: AtomicUsize,
    queue: Mutex<VecDeque<Arc<Sleeper>>>,
}

/// One worker sleeping for a slot, on a condition variable of its own.
#[derive(Default)]
struct Sleeper {
    /// Set (under the queue's lock) when a slot is handed to it.
    granted: std::sync::atomic::AtomicBool,
    wake: Condvar,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Slots {
            limit: limit.max(1),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a slot if one is free now and nobody waits for one.
    pub(crate) fn try_take(&self) -> bool {
        if self.queued.load(Ordering::SeqCst) > 0 {
            return false;
        }
        self.cas_take()
    }

    fn cas_take(&self) -> bool {
        self.in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < self.limit).then_some(used + 1)
            })
            .is_ok()
    }

    /// Takes a slot, queueing (FIFO) while none is free. Returns false,
    /// without a slot, once `give_up()` says the caller no longer wants one.
    pub(crate) fn take(&self, give_up: impl Fn() -> bool) -> bool {
        if self.try_take() {
            return true;
        }
        let mut queue = self.queue.lock();
        // Checked under the lock: a release either sees this sleeper queued
        // (and hands it a slot) or has freed its slot before we look.
        if queue.is_empty() && self.cas_take() {
            return true;
        }
        let me = Arc::new(Sleeper::default());
        queue.push_back(Arc::clone(&me));
        self.queued.fetch_add(1, Ordering::SeqCst);
        loop {
            if me.granted.load(Ordering::SeqCst) {
                return true;
            }
            if give_up() {
                queue.retain(|sleeper| !Arc::ptr_eq(sleeper, &me));
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
            me.wake.wait(&mut queue);
        }
    }

    /// Gives a slot back: to the longest sleeper if there is one.
    pub(crate) fn release(&self) {
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut queue = self.queue.lock();
            if let Some(head) = queue.pop_front() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                // The slot changes hands: `in_use` stays as it is.
                head.granted.store(true, Ordering::SeqCst);
                head.wake.notify_one();
                return;
            }
            self.in_use.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.in_use.fetch_sub(1, Ordering::SeqCst);
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

    /// Workers sleeping for a slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The most slots in use when a task started.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Wakes every sleeper to re-check whether it still wants a slot.
    pub(crate) fn wake_all(&self) {
        let queue = self.queue.lock();
        for sleeper in queue.iter() {
            sleeper.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_slot_goes_to_the_sleeper_not_to_a_newcomer() {
        let slots = Slots::new(1);
        assert!(slots.take(|| false));
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| slots.take(|| false));
            while slots.queued.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            slots.release();
            // The slot was handed over: a newcomer finds none free.
            assert!(!slots.try_take());
            assert!(sleeper.join().unwrap());
        });
        assert_eq!(slots.in_use(), 1);
        slots.release();
        assert!(slots.try_take());
    }
}

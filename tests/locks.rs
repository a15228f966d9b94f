//! KeyedLocks as a specification: what must hold, and what must never happen.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use keel::pool::CancellationToken;
use keel::{ErrorKind, KeyedLocks, LockMode, LockStats, Wait};

/// Counts the holders of one key and records whether two ever overlapped.
#[derive(Default)]
struct OverlapProbe {
    writers: AtomicUsize,
    readers: AtomicUsize,
    violated: AtomicBool,
}

impl OverlapProbe {
    fn enter_writer(&self) {
        if self.writers.fetch_add(1, Ordering::SeqCst) != 0 || self.readers.load(Ordering::SeqCst) != 0 {
            self.violated.store(true, Ordering::SeqCst);
        }
    }
    fn leave_writer(&self) {
        self.writers.fetch_sub(1, Ordering::SeqCst);
    }
    fn enter_reader(&self) {
        self.readers.fetch_add(1, Ordering::SeqCst);
        if self.writers.load(Ordering::SeqCst) != 0 {
            self.violated.store(true, Ordering::SeqCst);
        }
    }
    fn leave_reader(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn two_exclusive_holders_of_one_key_never_overlap() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let probe = OverlapProbe::default();
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..2_000 {
                    let _guard = locks.lock("source-1").unwrap();
                    probe.enter_writer();
                    thread::yield_now();
                    probe.leave_writer();
                }
            });
        }
    });
    assert!(!probe.violated.load(Ordering::SeqCst), "two holders overlapped");
    assert_eq!(locks.stats(), LockStats::default());
}

#[test]
fn a_writer_never_overlaps_a_reader() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let probe = OverlapProbe::default();
    let max_readers = AtomicUsize::new(0);
    thread::scope(|s| {
        for worker in 0..8 {
            let (locks, probe, max_readers) = (&locks, &probe, &max_readers);
            s.spawn(move || {
                for round in 0..1_000 {
                    if (worker + round) % 4 == 0 {
                        let _guard = locks.lock("doc").unwrap();
                        probe.enter_writer();
                        thread::yield_now();
                        probe.leave_writer();
                    } else {
                        let _guard = locks.lock_shared("doc").unwrap();
                        probe.enter_reader();
                        max_readers.fetch_max(probe.readers.load(Ordering::SeqCst), Ordering::SeqCst);
                        thread::yield_now();
                        probe.leave_reader();
                    }
                }
            });
        }
    });
    assert!(!probe.violated.load(Ordering::SeqCst), "a writer overlapped a reader");
    assert!(locks.is_empty());
}

#[test]
fn readers_share_a_key() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let everyone_in = Barrier::new(4);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let _guard = locks.lock_shared("k").unwrap();
                // All four pass this barrier only if they hold the key together.
                everyone_in.wait();
            });
        }
    });
    assert!(locks.is_empty());
}

#[test]
fn distinct_keys_never_block_each_other() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let _a = locks.lock("a").unwrap();
    thread::scope(|s| {
        let other = s.spawn(|| locks.try_lock("b").unwrap().is_some());
        assert!(other.join().unwrap());
    });
}

#[test]
fn no_entry_is_left_after_ten_thousand_keys_from_many_threads() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    thread::scope(|s| {
        for worker in 0..8 {
            let locks = &locks;
            s.spawn(move || {
                for i in 0..10_000 {
                    // Every thread walks all keys, so keys are contended too.
                    let key = format!("source-{}", (i * 7 + worker * 1_250) % 10_000);
                    let mode = if i % 3 == 0 {
                        LockMode::Shared
                    } else {
                        LockMode::Exclusive
                    };
                    let guard = locks.acquire(key.as_str(), mode, Wait::Forever).unwrap();
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(locks.stats(), LockStats::default());
    assert_eq!(locks.len(), 0);
}

#[test]
fn stats_count_entries_holders_and_waiters() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let held = locks.lock("busy").unwrap();
    let _r1 = locks.lock_shared("shared").unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| locks.lock("busy").map(drop));
        // Wait (without sleeping) until the waiter is registered.
        while locks.stats().waiters == 0 {
            thread::yield_now();
        }
        assert_eq!(
            locks.stats(),
            LockStats {
                entries: 2,
                holders: 2,
                waiters: 1
            }
        );
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    assert_eq!(
        locks.stats(),
        LockStats {
            entries: 1,
            holders: 1,
            waiters: 0
        }
    );
}

#[test]
fn try_lock_returns_none_when_held_and_leaves_nothing() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            assert!(locks.try_lock("k").unwrap().is_none());
            assert!(locks.acquire("k", LockMode::Shared, Wait::Never).unwrap().is_none());
        });
    });
    assert_eq!(
        locks.stats(),
        LockStats {
            entries: 1,
            holders: 1,
            waiters: 0
        }
    );
    drop(held);
    assert!(locks.is_empty());
}

#[test]
fn a_timed_out_wait_returns_timeout_and_leaves_nothing() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let err = locks
                .lock_timeout("k", LockMode::Exclusive, Duration::from_millis(20))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        });
    });
    assert_eq!(
        locks.stats(),
        LockStats {
            entries: 1,
            holders: 1,
            waiters: 0
        }
    );
    drop(held);
    assert!(locks.is_empty());
    // A key nobody holds times out on nobody: granted at once.
    assert!(locks.lock_timeout("k", LockMode::Shared, Duration::ZERO).is_ok());
}

#[test]
fn readers_queued_behind_a_writer_that_times_out_are_released() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let reader = locks.lock_shared("k").unwrap();
    thread::scope(|s| {
        let writer = s.spawn(|| {
            locks
                .lock_timeout("k", LockMode::Exclusive, Duration::from_millis(50))
                .map(drop)
        });
        while locks.stats().waiters == 0 {
            thread::yield_now();
        }
        // This reader queues behind the waiting writer (writer preference) and
        // must be let in once the writer gives up, not stay stuck.
        let second_reader = s.spawn(|| locks.lock_shared("k").map(drop));
        assert_eq!(writer.join().unwrap().unwrap_err().kind(), ErrorKind::Timeout);
        second_reader.join().unwrap().unwrap();
    });
    drop(reader);
    assert!(locks.is_empty());
}

#[test]
fn taking_a_held_key_again_on_the_same_thread_would_deadlock() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let _guard = locks.lock("k").unwrap();
    for mode in [LockMode::Exclusive, LockMode::Shared] {
        for wait in [Wait::Forever, Wait::Never, Wait::For(Duration::from_secs(60))] {
            let err = locks.acquire("k", mode, wait).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
        }
    }
    assert_eq!(
        locks.stats(),
        LockStats {
            entries: 1,
            holders: 1,
            waiters: 0
        }
    );
}

#[test]
fn a_guard_may_be_released_on_another_thread() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let guard = locks.lock("k").unwrap();
    thread::spawn(move || drop(guard)).join().unwrap();
    assert!(locks.is_empty());
    // And the key is free for the thread that took it first.
    assert!(locks.try_lock("k").unwrap().is_some());
}

#[test]
fn lock_many_under_contention_never_deadlocks_and_is_all_or_none() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let keys = ["a", "b", "c", "d", "e"];
    let probes: Vec<OverlapProbe> = keys.iter().map(|_| OverlapProbe::default()).collect();
    thread::scope(|s| {
        for worker in 0..6usize {
            let (locks, probes) = (&locks, &probes);
            s.spawn(move || {
                for round in 0..500usize {
                    // Each thread asks for an overlapping set, in its own order.
                    let picked: Vec<usize> = (0..3).map(|i| (worker + round + i * 2) % keys.len()).collect();
                    let wanted: Vec<&str> = picked.iter().rev().map(|&i| keys[i]).collect();
                    let guard = locks
                        .lock_many(&wanted, LockMode::Exclusive, Wait::Forever)
                        .unwrap()
                        .unwrap();
                    let mut distinct = picked.clone();
                    distinct.sort();
                    distinct.dedup();
                    assert_eq!(guard.len(), distinct.len());
                    distinct.iter().for_each(|&i| probes[i].enter_writer());
                    thread::yield_now();
                    distinct.iter().for_each(|&i| probes[i].leave_writer());
                }
            });
        }
    });
    assert!(probes.iter().all(|p| !p.violated.load(Ordering::SeqCst)));
    assert!(locks.is_empty());
}

#[test]
fn lock_many_that_cannot_get_every_key_holds_none() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let held = locks.lock("c").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let none = locks
                .lock_many(&["a", "b", "c"], LockMode::Exclusive, Wait::Never)
                .unwrap();
            assert!(none.is_none());
            let err = locks
                .lock_many(
                    &["a", "b", "c"],
                    LockMode::Exclusive,
                    Wait::For(Duration::from_millis(10)),
                )
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        });
    });
    // Only the key held here remains: a and b were released.
    assert_eq!(
        locks.stats(),
        LockStats {
            entries: 1,
            holders: 1,
            waiters: 0
        }
    );
    drop(held);
    assert!(locks.is_empty());
}

#[test]
fn a_waiter_holds_the_entry_so_the_same_lock_is_handed_over() {
    // OPAL's fix popped entries on release; a waiter that then made a fresh
    // lock could overlap a late holder. Here the entry stays while waited for.
    let locks = Arc::new(KeyedLocks::<Vec<u8>>::new());
    let probe = Arc::new(OverlapProbe::default());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (locks, probe) = (Arc::clone(&locks), Arc::clone(&probe));
            thread::spawn(move || {
                for _ in 0..2_000 {
                    let guard = locks.lock(b"repo".as_slice()).unwrap();
                    probe.enter_writer();
                    probe.leave_writer();
                    // Release on a helper thread, as hosts do.
                    thread::spawn(move || drop(guard)).join().unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(!probe.violated.load(Ordering::SeqCst));
    assert!(locks.is_empty());
}

/// Waits (yielding) until `count` threads are queued: arrival order is
/// then known without sleeping.
fn until_waiters<K: std::hash::Hash + Eq + Send + 'static>(locks: &KeyedLocks<K>, count: usize) {
    while locks.stats().waiters != count {
        thread::yield_now();
    }
}

/// Pairs acquired in the opposite order from their arrival.
fn inversions(order: &[usize]) -> usize {
    let mut count = 0;
    for (i, &earlier) in order.iter().enumerate() {
        count += order[i + 1..].iter().filter(|&&later| later < earlier).count();
    }
    count
}

#[test]
fn a_hundred_queued_waiters_acquire_in_arrival_order() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let order = parking_lot::Mutex::new(Vec::new());
    let held = locks.lock("source-1").unwrap();
    thread::scope(|s| {
        for arrival in 0..100 {
            let (locks, order) = (&locks, &order);
            s.spawn(move || {
                // Shared and exclusive waiters mixed: the queue orders both.
                let mode = if arrival % 3 == 0 {
                    LockMode::Shared
                } else {
                    LockMode::Exclusive
                };
                let _guard = locks.acquire("source-1", mode, Wait::Forever).unwrap();
                order.lock().push(arrival);
            });
            until_waiters(locks, arrival + 1);
        }
        drop(held);
    });
    let order = order.into_inner();
    assert_eq!(order.len(), 100);
    assert_eq!(inversions(&order), 0, "acquisition order {order:?}");
    assert!(locks.is_empty());
}

#[test]
fn readers_queued_together_are_admitted_together_and_a_later_writer_waits() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let writer = locks.lock("k").unwrap();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    thread::scope(|s| {
        // Queue: reader, reader, writer, reader.
        for (arrival, mode) in [
            LockMode::Shared,
            LockMode::Shared,
            LockMode::Exclusive,
            LockMode::Shared,
        ]
        .into_iter()
        .enumerate()
        {
            let (locks, release_rx) = (&locks, release_rx.clone());
            s.spawn(move || {
                let _guard = locks.acquire("k", mode, Wait::Forever).unwrap();
                release_rx.recv().unwrap();
            });
            until_waiters(locks, arrival + 1);
        }
        drop(writer);
        // The two readers at the head got the key in one hand-off; the
        // writer behind them, and the reader behind it, still wait.
        until_waiters(&locks, 2);
        assert_eq!(
            locks.stats(),
            LockStats {
                entries: 1,
                holders: 2,
                waiters: 2
            }
        );
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
    });
    assert!(locks.is_empty());
}

#[test]
fn a_cancelled_wait_withdraws_the_waiter_and_unblocks_new_readers() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let reader = locks.lock_shared("k").unwrap();
    let token = CancellationToken::new();
    thread::scope(|s| {
        let writer = s.spawn(|| locks.lock_with("k", LockMode::Exclusive, None, Some(&token)));
        until_waiters(&locks, 1);
        // FIFO: a new reader queues behind the waiting writer.
        let blocked = s.spawn(|| locks.acquire("k", LockMode::Shared, Wait::Never).unwrap().is_none());
        assert!(blocked.join().unwrap());
        token.cancel();
        let err = writer.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert_eq!(locks.stats().waiters, 0);
        let admitted = s.spawn(|| locks.acquire("k", LockMode::Shared, Wait::Never).unwrap().is_some());
        assert!(admitted.join().unwrap(), "a new reader shares the key again");
    });
    drop(reader);
    assert!(locks.is_empty());
}

#[test]
fn a_wait_cancelled_before_it_starts_is_refused_and_leaves_nothing() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let token = CancellationToken::new();
    token.cancel();
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        let err = s
            .spawn(|| locks.lock_with("k", LockMode::Shared, None, Some(&token)))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    });
    assert_eq!(locks.stats().waiters, 0);
    drop(held);
    assert!(locks.is_empty());
}

#[test]
fn a_request_keeps_its_place_while_waited_in_slices_and_drop_withdraws_it() {
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let held = locks.lock("k").unwrap();
    let (sliced_tx, sliced_rx) = crossbeam_channel::bounded::<()>(1);
    thread::scope(|s| {
        let locks = &locks;
        let first = s.spawn(move || {
            let mut request = locks.request("k", LockMode::Exclusive).unwrap();
            // A slice runs out while the key is held: still queued.
            assert!(request.wait_timeout(Duration::from_millis(1)).unwrap().is_none());
            sliced_tx.send(()).unwrap();
            loop {
                if let Some(guard) = request.wait_timeout(Duration::from_millis(5)).unwrap() {
                    return guard.mode();
                }
            }
        });
        sliced_rx.recv().unwrap();
        let second = s.spawn(|| {
            let guard = locks.lock("k").unwrap();
            drop(guard);
        });
        until_waiters(locks, 2);
        drop(held);
        assert_eq!(first.join().unwrap(), LockMode::Exclusive);
        second.join().unwrap();
    });
    assert!(locks.is_empty());

    // Dropping a queued request withdraws it.
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let request = locks.request("k", LockMode::Shared).unwrap();
            assert_eq!(locks.stats().waiters, 1);
            drop(request);
        })
        .join()
        .unwrap();
    });
    assert_eq!(locks.stats().waiters, 0);
    drop(held);
    assert!(locks.is_empty());
}

#[test]
fn the_tables_give_their_memory_back_after_a_million_keys() {
    let locks: KeyedLocks<u64> = KeyedLocks::new();
    let at_start = locks.capacity();
    let guards: Vec<_> = (0..1_000_000u64).map(|key| locks.lock(&key).unwrap()).collect();
    let at_peak = locks.capacity();
    assert!(at_peak >= 1_000_000);
    drop(guards);
    assert!(locks.is_empty());
    let at_rest = locks.capacity();
    // At most a small fixed room per shard, whatever the peak was.
    assert!(
        at_rest <= at_start + 64 * 32,
        "capacity: start {at_start}, peak {at_peak}, at rest {at_rest}"
    );
}

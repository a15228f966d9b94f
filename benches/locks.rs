//! KeyedLocks against the physical baseline measured in the same run: a bare
//! `parking_lot::Mutex` lock/unlock plus one hash-map lookup.
//!
//! Target: uncontended lock+unlock within 3x of the baseline.

use std::collections::HashMap;
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use keel::KeyedLocks;
use parking_lot::Mutex;

const UNCONTENDED_OPS: usize = 2_000_000;
const CONTENDED_OPS: usize = 500_000;

/// The best of three runs, in nanoseconds per operation.
fn best_ns_per_op(ops: usize, mut run: impl FnMut() -> Duration) -> f64 {
    (0..3)
        .map(|_| run().as_nanos() as f64 / ops as f64)
        .fold(f64::INFINITY, f64::min)
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("source-{i}")).collect()
}

/// The baseline: a table of mutexes found through a hash map, as a hand-rolled
/// per-key lock with a fixed key set (and an ever-growing map) would be.
struct Baseline {
    index: HashMap<String, usize>,
    mutexes: Vec<Mutex<u64>>,
}

impl Baseline {
    fn new(keys: &[String]) -> Self {
        Baseline {
            index: keys.iter().cloned().enumerate().map(|(i, k)| (k, i)).collect(),
            mutexes: keys.iter().map(|_| Mutex::new(0)).collect(),
        }
    }

    fn lock_unlock(&self, key: &str) {
        let slot = self.index.get(key).copied().unwrap_or(0);
        *self.mutexes[slot].lock() += 1;
    }
}

fn report(name: &str, baseline: f64, keel: f64) {
    println!(
        "{name:<44} baseline {baseline:>8.1} ns/op   keel {keel:>8.1} ns/op   ratio {:>5.2}x",
        keel / baseline
    );
}

fn uncontended_one_key() {
    let keys = keys(1);
    let baseline = Baseline::new(&keys);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let base = best_ns_per_op(UNCONTENDED_OPS, || {
        let start = Instant::now();
        for _ in 0..UNCONTENDED_OPS {
            baseline.lock_unlock(black_box(&keys[0]));
        }
        start.elapsed()
    });
    let keel = best_ns_per_op(UNCONTENDED_OPS, || {
        let start = Instant::now();
        for _ in 0..UNCONTENDED_OPS {
            drop(black_box(locks.lock(black_box(keys[0].as_str())).unwrap()));
        }
        start.elapsed()
    });
    report("uncontended, one key", base, keel);
}

fn uncontended_fresh_keys() {
    let keys = keys(UNCONTENDED_OPS);
    let baseline = Baseline::new(&keys[..1]);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let base = best_ns_per_op(UNCONTENDED_OPS, || {
        let start = Instant::now();
        for key in &keys {
            baseline.lock_unlock(black_box(key));
        }
        start.elapsed()
    });
    let keel = best_ns_per_op(UNCONTENDED_OPS, || {
        let start = Instant::now();
        for key in &keys {
            drop(black_box(locks.lock(black_box(key.as_str())).unwrap()));
        }
        start.elapsed()
    });
    assert!(locks.is_empty());
    report("uncontended, a fresh key each time", base, keel);
}

fn contended(key_count: usize) {
    let keys = keys(key_count);
    let baseline = Baseline::new(&keys);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let per_thread = CONTENDED_OPS / 2;
    let two_threads = |op: &(dyn Fn(&str) + Sync)| {
        let start = Instant::now();
        thread::scope(|s| {
            for t in 0..2 {
                let keys = &keys;
                s.spawn(move || {
                    for i in 0..per_thread {
                        op(&keys[(i * 7 + t) % keys.len()]);
                    }
                });
            }
        });
        start.elapsed()
    };
    let base = best_ns_per_op(CONTENDED_OPS, || two_threads(&|key| baseline.lock_unlock(key)));
    let keel = best_ns_per_op(CONTENDED_OPS, || two_threads(&|key| drop(locks.lock(key).unwrap())));
    assert!(locks.is_empty());
    report(&format!("2 threads contending over {key_count} key(s)"), base, keel);
}

fn main() {
    println!("KeyedLocks lock+unlock vs parking_lot::Mutex + one HashMap lookup (same run)");
    uncontended_one_key();
    uncontended_fresh_keys();
    for key_count in [1, 16, 1_024] {
        contended(key_count);
    }
}

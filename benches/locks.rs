//! KeyedLocks against the physical baseline measured in the same run: a bare
//! `parking_lot::Mutex` lock/unlock plus one hash-map lookup.
//!
//! Target: uncontended lock+unlock costs at most 3x the baseline's, i.e. a
//! ratio (keel's speed over the baseline's) of at least 1/3 — in time and in
//! instructions counted by callgrind (when valgrind is installed), which
//! stay repeatable whatever else runs on the machine. Also prints the
//! registry's memory at rest after a million keys were held and released.
//!
//! `cargo bench --bench locks`; `-- callgrind <keel|baseline> <ops>` is the
//! child mode the instruction count runs under valgrind.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::thread;

use keel::KeyedLocks;
use parking_lot::Mutex;
use support::{header, ns_per_op, timed, Rounds, Target};

const ROUNDS: usize = 5;
const UNCONTENDED_OPS: usize = 1_000_000;
const CONTENDED_OPS: usize = 200_000;
const MEMORY_KEYS: u64 = 1_000_000;

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

fn uncontended_one_key() {
    let keys = keys(1);
    let baseline = Baseline::new(&keys);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let rounds = Rounds::run(
        ROUNDS,
        || {
            ns_per_op(UNCONTENDED_OPS, || {
                timed(|| (0..UNCONTENDED_OPS).for_each(|_| baseline.lock_unlock(black_box(&keys[0]))))
            })
        },
        || {
            ns_per_op(UNCONTENDED_OPS, || {
                timed(|| {
                    for _ in 0..UNCONTENDED_OPS {
                        drop(black_box(locks.lock(black_box(keys[0].as_str())).unwrap()));
                    }
                })
            })
        },
    );
    rounds.report("uncontended, one key", "ns/op", Target::AtLeast(1.0 / 3.0));
}

fn uncontended_fresh_keys() {
    let keys = keys(UNCONTENDED_OPS);
    let baseline = Baseline::new(&keys[..1]);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let rounds = Rounds::run(
        ROUNDS,
        || {
            ns_per_op(keys.len(), || {
                timed(|| keys.iter().for_each(|key| baseline.lock_unlock(black_box(key))))
            })
        },
        || {
            ns_per_op(keys.len(), || {
                timed(|| {
                    for key in &keys {
                        drop(black_box(locks.lock(black_box(key.as_str())).unwrap()));
                    }
                })
            })
        },
    );
    assert!(locks.is_empty());
    rounds.report("uncontended, a fresh key each time", "ns/op", Target::None);
}

fn contended(key_count: usize) {
    let keys = keys(key_count);
    let baseline = Baseline::new(&keys);
    let locks: KeyedLocks<String> = KeyedLocks::new();
    let per_thread = CONTENDED_OPS / 2;
    let two_threads = |op: &(dyn Fn(&str) + Sync)| {
        ns_per_op(CONTENDED_OPS, || {
            timed(|| {
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
            })
        })
    };
    let rounds = Rounds::run(
        ROUNDS,
        || two_threads(&|key| baseline.lock_unlock(key)),
        || two_threads(&|key| drop(locks.lock(key).unwrap())),
    );
    assert!(locks.is_empty());
    rounds.report(
        &format!("2 threads contending over {key_count} key(s)"),
        "ns/op",
        Target::None,
    );
}

/// Resident memory of this process, in MiB (Linux), if it can be read.
fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

fn memory_at_rest() {
    let locks: KeyedLocks<u64> = KeyedLocks::new();
    let (rss_start, cap_start) = (rss_mib(), locks.capacity());
    let guards: Vec<_> = (0..MEMORY_KEYS).map(|key| locks.lock(&key).unwrap()).collect();
    let (rss_peak, cap_peak) = (rss_mib(), locks.capacity());
    drop(guards);
    let (rss_rest, cap_rest) = (rss_mib(), locks.capacity());
    let mib = |rss: Option<f64>| rss.map_or_else(|| "?".to_owned(), |rss| format!("{rss:.1} MiB"));
    println!(
        "memory at rest after {MEMORY_KEYS} keys held and released: entries {}, table capacity {cap_start} -> {cap_peak} -> {cap_rest}, RSS {} -> {} -> {}  target capacity at rest <= 4096: {}",
        locks.len(),
        mib(rss_start),
        mib(rss_peak),
        mib(rss_rest),
        if cap_rest <= 4096 { "met" } else { "NOT MET" }
    );
}

/// The uncontended loop alone, for callgrind to count.
fn callgrind_child(which: &str, ops: usize) {
    let keys = keys(1);
    match which {
        "baseline" => {
            let baseline = Baseline::new(&keys);
            (0..ops).for_each(|_| baseline.lock_unlock(black_box(&keys[0])));
        }
        _ => {
            let locks: KeyedLocks<String> = KeyedLocks::new();
            for _ in 0..ops {
                drop(black_box(locks.lock(black_box(keys[0].as_str())).unwrap()));
            }
        }
    }
}

/// Instructions `valgrind --tool=callgrind` counts for a child run.
fn instructions(which: &str, ops: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out_file = std::env::temp_dir().join(format!("keel-locks-callgrind-{}-{which}-{ops}", std::process::id()));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args(["callgrind", which, &ops.to_string()])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&out_file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "==123== Collected : 456789"
    let collected = stderr.lines().find_map(|line| line.split("Collected :").nth(1))?;
    collected.trim().parse().ok()
}

/// Instructions per uncontended lock+unlock: the difference of two runs of
/// different lengths, so process start-up cancels out.
fn instructions_per_op(which: &str) -> Option<f64> {
    let (short, long) = (20_000, 120_000);
    Some((instructions(which, long)? - instructions(which, short)?) / (long - short) as f64)
}

fn callgrind_counts() {
    let (Some(baseline), Some(keel)) = (instructions_per_op("baseline"), instructions_per_op("keel")) else {
        println!("uncontended, one key (instructions)       skipped: valgrind is not installed");
        return;
    };
    let ratio = baseline / keel;
    let verdict = if ratio >= 1.0 / 3.0 { "met" } else { "NOT MET" };
    println!(
        "uncontended, one key (callgrind)         baseline {baseline:>10.1} instr/op  keel {keel:>10.1} instr/op  ratio {ratio:>5.2}  target >= 0.33: {verdict}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("callgrind") {
        let ops = args.get(3).and_then(|ops| ops.parse().ok()).unwrap_or(100_000);
        callgrind_child(args.get(2).map_or("keel", String::as_str), ops);
        return;
    }
    header("KeyedLocks lock+unlock vs parking_lot::Mutex + one HashMap lookup (same run)");
    uncontended_one_key();
    callgrind_counts();
    uncontended_fresh_keys();
    for key_count in [1, 16, 1_024] {
        contended(key_count);
    }
    memory_at_rest();
}

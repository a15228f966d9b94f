//! SyncPool benchmarks, with `benches/support` conventions: ratio = keel's
//! speed over the baseline's (above 1: keel is faster), median and spread
//! of interleaved rounds, each row with its target. Run with
//! `cargo bench --bench pool` (`-- overhead` runs only the rows named).
//!
//! 1. OPAL boot: 200 tasks over 120 sources; the first task of a source
//!    "fetches" (50 ms), followers work locally (5 ms); N = 10. Baseline: the
//!    ideal schedule computed from the same parameters. Target >= 1/1.15.
//! 2. Hung sources: 40 tasks that never return + 60 healthy 50 ms tasks,
//!    timeout 0.5 s, N = 10, on 4 dead sources and on 40. Baseline: the 60
//!    healthy tasks alone plus what no scheduler can avoid (one timeout for
//!    4 sources; 40 x 0.5 s of slot time over 10 slots for 40). Target: the
//!    last healthy finish within 1.5x of that.
//! 3. Overhead: 100,000 empty keyed tasks through the pool versus a bare
//!    crossbeam-channel thread pool whose tasks each lock their key (a
//!    parking_lot mutex found through a hash map), the same work keel does
//!    per task. Target >= 1/2; unkeyed keel against the bare pool, reported.
//!
//! Benchmark 4 (the OPAL boot from Python, keel versus asyncio) is
//! `benches/pool_python.py`.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use keel::pool::{BatchOptions, Outcome, PoolConfig, SyncPool, Task, TaskContext};
use parking_lot::Mutex;
use support::{header, report_row, Rounds, Spread, Target};

fn main() {
    // `cargo bench --bench pool -- overhead` runs only the benchmarks named.
    let only: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    header("SyncPool against its baselines (same run)");
    if wanted("opal_boot") {
        opal_boot();
    }
    if wanted("hung_sources") {
        hung_sources();
    }
    if wanted("overhead") {
        overhead();
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn opal_boot() {
    const TASKS: usize = 200;
    const SOURCES: usize = 120;
    const N: usize = 10;
    let fetch = Duration::from_millis(50);
    let local = Duration::from_millis(5);
    // Ideal: all work spread perfectly over N slots, or the longest chain of
    // one source, whichever is longer.
    let followers = TASKS - SOURCES;
    let total_work = fetch * SOURCES as u32 + local * followers as u32;
    let longest_chain = fetch + local * followers.div_ceil(SOURCES) as u32;
    let ideal = (total_work / N as u32).max(longest_chain);

    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(N));
    let mut walls = Vec::new();
    for _ in 0..3 {
        let tasks = (0..TASKS).map(|i| {
            Task::new(i % SOURCES, move |ctx: &TaskContext| {
                std::thread::sleep(if ctx.is_first_of_key() { fetch } else { local });
                Ok(())
            })
        });
        let start = Instant::now();
        let outcomes = pool.run_batch(tasks);
        walls.push(ms(start.elapsed()));
        assert!(outcomes.iter().all(Outcome::is_value));
    }
    assert_eq!(pool.stats().peak_concurrency, N);
    let ideal = ms(ideal);
    let ratios: Vec<f64> = walls.iter().map(|wall| ideal / wall).collect();
    report_row(
        &format!("1. OPAL boot ({TASKS} tasks, {SOURCES} src, N={N})"),
        "ms",
        Spread::of(&[ideal]),
        Spread::of(&walls),
        &ratios,
        Target::AtLeast(1.0 / 1.15),
    );
}

/// Names the dead source of hung task `i`.
type DeadKey = dyn Fn(usize) -> String;

enum Work {
    Hang(Receiver<()>),
    Sleep(Duration),
}

/// Runs `work` (one per task, keyed) and returns when the last healthy task finished.
fn last_healthy_finish(pool: &SyncPool<String>, work: Vec<(String, Work)>) -> Duration {
    let start = Instant::now();
    let (finished_tx, finished_rx): (Sender<Duration>, _) = crossbeam_channel::unbounded();
    let tasks = work.into_iter().map(|(key, work)| {
        let finished = finished_tx.clone();
        Task::new(key, move |_: &TaskContext| {
            match work {
                Work::Hang(release) => {
                    let _ = release.recv();
                }
                Work::Sleep(duration) => {
                    std::thread::sleep(duration);
                    let _ = finished.send(start.elapsed());
                }
            }
            Ok(())
        })
    });
    let outcomes = pool.run_batch(tasks);
    drop(finished_tx);
    assert!(outcomes.iter().any(Outcome::is_value));
    finished_rx.try_iter().max().expect("healthy tasks ran")
}

fn hung_sources() {
    const N: usize = 10;
    const HEALTHY: usize = 60;
    let timeout = Duration::from_millis(500);
    let work = Duration::from_millis(50);
    let config = PoolConfig::new(N).with_task_timeout(timeout).with_max_abandoned(100);
    let healthy = |i: usize| (format!("live-{i}"), Work::Sleep(work));

    let alone = {
        let pool = SyncPool::new(config.clone());
        last_healthy_finish(&pool, (0..HEALTHY).map(healthy).collect())
    };

    // 40 hung scopes interleaved with the healthy ones: two in every five
    // tasks hang.
    let (release, hang) = crossbeam_channel::unbounded::<()>();
    let mixed = |dead_key: &DeadKey| -> Vec<(String, Work)> {
        let mut healthy_index = 0;
        (0..100)
            .map(|i| {
                if i % 5 == 0 || i % 5 == 2 {
                    (dead_key(i), Work::Hang(hang.clone()))
                } else {
                    healthy_index += 1;
                    healthy(healthy_index)
                }
            })
            .collect()
    };
    // On 4 dead sources (OPAL: many scopes share a source) the hung key is
    // refused after its first timeout: one timeout is unavoidable. On 40
    // distinct dead sources each costs a slot for one timeout: 40 x 0.5 s
    // of slot time over N slots is unavoidable.
    let cases: [(&str, usize, &DeadKey); 2] = [
        ("4 dead sources", 1, &|i| format!("dead-{}", i % 4)),
        ("40 dead sources", 40 / N, &|i| format!("dead-{i}")),
    ];
    for (name, waves, dead_key) in cases {
        let unavoidable = alone + timeout * waves as u32;
        let pool = SyncPool::new(config.clone());
        let with_hung = last_healthy_finish(&pool, mixed(dead_key));
        let stats = pool.stats();
        let ratio = unavoidable.as_secs_f64() / with_hung.as_secs_f64();
        report_row(
            &format!("2. Hung: 40 scopes on {name}"),
            "ms",
            Spread::of(&[ms(unavoidable)]),
            Spread::of(&[ms(with_hung)]),
            &[ratio],
            Target::AtLeast(1.0 / 1.5),
        );
        println!(
            "   (healthy alone {:.0} ms; timed out {}, refused {}, abandoned {})",
            ms(alone),
            stats.timed_out,
            stats.refused,
            stats.abandoned
        );
    }
    drop(release);
}

fn overhead() {
    const TASKS: usize = 100_000;
    let n = 4;
    let per_task_ns = |time: Duration| time.as_secs_f64() * 1e9 / TASKS as f64;
    let bare = || {
        let start = Instant::now();
        let results = bare_pool(n, TASKS, None);
        assert_eq!(results.len(), TASKS);
        per_task_ns(start.elapsed())
    };
    let keyed_bare = || {
        let locks = KeyLocks::new(TASKS);
        let start = Instant::now();
        let results = bare_pool(n, TASKS, Some(locks));
        assert_eq!(results.len(), TASKS);
        per_task_ns(start.elapsed())
    };
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(n));
    let keel = || {
        let start = Instant::now();
        let outcomes = pool.run_batch((0..TASKS).map(|i| Task::new(i, move |_: &TaskContext| Ok(i))));
        assert_eq!(outcomes.len(), TASKS);
        per_task_ns(start.elapsed())
    };
    // The same without keys: what the per-key lock and key grouping cost.
    let unkeyed = || {
        let start = Instant::now();
        let tasks = (0..TASKS).map(|i| move |_: &TaskContext| Ok(i));
        let outcomes = pool.run_unkeyed(tasks, BatchOptions::new());
        assert_eq!(outcomes.len(), TASKS);
        per_task_ns(start.elapsed())
    };
    // Warm up, then interleaved rounds.
    keyed_bare();
    keel();
    let keyed = Rounds::run(5, keyed_bare, keel);
    keyed.report(
        &format!("3. Overhead, {TASKS} keyed empty tasks N={n}"),
        "ns/task",
        Target::AtLeast(0.5),
    );
    let plain = Rounds::run(5, bare, unkeyed);
    plain.report("   unkeyed keel vs bare crossbeam pool", "ns/task", Target::None);
}

/// The keyed baseline's per-key exclusion: one mutex per key, found
/// through a hash map, locked around each task.
struct KeyLocks {
    index: HashMap<usize, usize>,
    mutexes: Vec<Mutex<()>>,
}

impl KeyLocks {
    fn new(keys: usize) -> Arc<Self> {
        Arc::new(KeyLocks {
            index: (0..keys).map(|key| (key, key)).collect(),
            mutexes: (0..keys).map(|_| Mutex::new(())).collect(),
        })
    }

    fn run<T>(&self, key: usize, job: impl FnOnce() -> T) -> T {
        let slot = self.index.get(&black_box(key)).copied().unwrap_or(0);
        let _held = self.mutexes[slot].lock();
        job()
    }
}

/// The baseline: N threads on one job channel, results back on another,
/// reassembled in input order; with `locks`, each task holds its key's
/// mutex while it runs.
fn bare_pool(n: usize, tasks: usize, locks: Option<Arc<KeyLocks>>) -> Vec<usize> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<(usize, Box<dyn FnOnce() -> usize + Send>)>();
    let (results_tx, results_rx) = crossbeam_channel::unbounded();
    let workers: Vec<_> = (0..n)
        .map(|_| {
            let jobs = jobs_rx.clone();
            let results = results_tx.clone();
            let locks = locks.clone();
            std::thread::spawn(move || {
                for (index, job) in jobs {
                    let value = match &locks {
                        Some(locks) => locks.run(index, job),
                        None => job(),
                    };
                    let _ = results.send((index, value));
                }
            })
        })
        .collect();
    drop(results_tx);
    for i in 0..tasks {
        jobs_tx.send((i, Box::new(move || i))).unwrap();
    }
    drop(jobs_tx);
    let mut out = vec![0; tasks];
    for (index, value) in results_rx {
        out[index] = value;
    }
    for worker in workers {
        worker.join().unwrap();
    }
    out
}

//! SyncPool benchmarks. Each prints the baseline, keel, and their ratio,
//! measured in the same run. Run with `cargo bench --bench pool`.
//!
//! 1. OPAL boot: 200 tasks over 120 sources; the first task of a source
//!    "fetches" (50 ms), followers work locally (5 ms); N = 10. Baseline: the
//!    ideal schedule computed from the same parameters. Target ratio <= 1.15.
//! 2. Hung sources: 40 tasks that never return + 60 healthy 50 ms tasks,
//!    timeout 0.5 s, N = 10. Baseline: the 60 healthy tasks alone. Target:
//!    last healthy finish <= 1.5 x alone + one timeout.
//! 3. Overhead: 100,000 empty tasks through the pool versus a bare
//!    crossbeam-channel thread pool. Target within 2x.
//!
//! Benchmark 4 (the OPAL boot from Python, keel versus asyncio) is
//! `benches/pool_python.py`.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use keel::pool::{BatchOptions, Outcome, PoolConfig, SyncPool, Task, TaskContext};

fn main() {
    // `cargo bench --bench pool -- overhead` runs only the benchmarks named.
    let only: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
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
    let tasks = (0..TASKS).map(|i| {
        Task::new(i % SOURCES, move |ctx: &TaskContext| {
            std::thread::sleep(if ctx.is_first_of_key() { fetch } else { local });
            Ok(())
        })
    });
    let start = Instant::now();
    let outcomes = pool.run_batch(tasks);
    let wall = start.elapsed();
    assert!(outcomes.iter().all(Outcome::is_value));
    assert_eq!(pool.stats().peak_concurrency, N);
    println!(
        "1. OPAL boot ({TASKS} tasks, {SOURCES} sources, N={N}): ideal {:.0} ms, keel {:.0} ms, ratio {:.3} (target <= 1.15)",
        ms(ideal),
        ms(wall),
        wall.as_secs_f64() / ideal.as_secs_f64()
    );
}

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
    let config = PoolConfig::new(N).task_timeout(timeout).max_abandoned(100);
    let healthy = |i: usize| (format!("live-{i}"), Work::Sleep(work));

    let alone = {
        let pool = SyncPool::new(config.clone());
        last_healthy_finish(&pool, (0..HEALTHY).map(healthy).collect())
    };
    let target = alone.mul_f64(1.5) + timeout;

    // 40 hung scopes on 4 dead sources (OPAL: many scopes share a source),
    // interleaved with the healthy ones: two in every five tasks hang.
    let (release, hang) = crossbeam_channel::unbounded::<()>();
    let mixed = |dead_key: &dyn Fn(usize) -> String| -> Vec<(String, Work)> {
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
    let pool = SyncPool::new(config.clone());
    let with_hung = last_healthy_finish(&pool, mixed(&|i| format!("dead-{}", i % 4)));
    let stats = pool.stats();
    println!(
        "2. Hung sources (40 hung scopes on 4 dead sources + {HEALTHY} healthy, timeout {:.0} ms, N={N}): \
         alone {:.0} ms, keel {:.0} ms, ratio {:.2} (target <= 1.5 + one timeout = {:.2}); \
         timed out {}, refused {}",
        ms(timeout),
        ms(alone),
        ms(with_hung),
        with_hung.as_secs_f64() / alone.as_secs_f64(),
        target.as_secs_f64() / alone.as_secs_f64(),
        stats.timed_out,
        stats.refused,
    );

    // The harder case, for information: 40 distinct dead sources. Each costs
    // a slot for one timeout (40 x 0.5 s of slot time over 10 slots), which
    // no scheduler can avoid, so no target applies.
    let pool = SyncPool::new(config);
    let with_hung = last_healthy_finish(&pool, mixed(&|i| format!("dead-{i}")));
    println!(
        "   (40 distinct dead sources, no target: alone {:.0} ms, keel {:.0} ms, ratio {:.2}; \
         timed out {}, abandoned {})",
        ms(alone),
        ms(with_hung),
        with_hung.as_secs_f64() / alone.as_secs_f64(),
        pool.stats().timed_out,
        pool.stats().abandoned,
    );
    drop(release);
}

fn overhead() {
    const TASKS: usize = 100_000;
    let n = 4;
    let bare = || {
        let start = Instant::now();
        let results = bare_pool(n, TASKS);
        assert_eq!(results.len(), TASKS);
        start.elapsed()
    };
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(n));
    let keel = || {
        let start = Instant::now();
        let outcomes = pool.run_batch((0..TASKS).map(|i| Task::new(i, move |_: &TaskContext| Ok(i))));
        assert_eq!(outcomes.len(), TASKS);
        start.elapsed()
    };
    // The same without keys: what the per-key lock and key grouping cost.
    let unkeyed = || {
        let start = Instant::now();
        let tasks = (0..TASKS).map(|i| move |_: &TaskContext| Ok(i));
        let outcomes = pool.run_unkeyed(tasks, BatchOptions::new());
        assert_eq!(outcomes.len(), TASKS);
        start.elapsed()
    };
    // Warm up both, then take the best of five runs of each, interleaved so
    // both see the same machine load.
    bare();
    keel();
    let runs: Vec<_> = (0..5).map(|_| (bare(), keel(), unkeyed())).collect();
    let bare_time = runs.iter().map(|r| r.0).min().unwrap();
    let keel_time = runs.iter().map(|r| r.1).min().unwrap();
    let unkeyed_time = runs.iter().map(|r| r.2).min().unwrap();
    println!(
        "3. Overhead ({TASKS} empty tasks, N={n}): bare crossbeam pool {:.0} ms ({:.2} us/task), keel {:.0} ms ({:.2} us/task), ratio {:.2} (target <= 2)",
        ms(bare_time),
        bare_time.as_secs_f64() * 1e6 / TASKS as f64,
        ms(keel_time),
        keel_time.as_secs_f64() * 1e6 / TASKS as f64,
        keel_time.as_secs_f64() / bare_time.as_secs_f64()
    );
    println!(
        "   unkeyed (no key locks): keel {:.0} ms ({:.2} us/task), ratio {:.2}",
        ms(unkeyed_time),
        unkeyed_time.as_secs_f64() * 1e6 / TASKS as f64,
        unkeyed_time.as_secs_f64() / bare_time.as_secs_f64()
    );
}

/// The baseline: N threads on one job channel, results back on another,
/// reassembled in input order.
fn bare_pool(n: usize, tasks: usize) -> Vec<usize> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<(usize, Box<dyn FnOnce() -> usize + Send>)>();
    let (results_tx, results_rx) = crossbeam_channel::unbounded();
    let workers: Vec<_> = (0..n)
        .map(|_| {
            let jobs = jobs_rx.clone();
            let results = results_tx.clone();
            std::thread::spawn(move || {
                for (index, job) in jobs {
                    let _ = results.send((index, job()));
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

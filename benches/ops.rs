//! Durable jobs beside the raw durable single-put commit rate of LMDB,
//! measured in the same run on the same disk.
//!
//! Baseline: one put per durable commit straight through LMDB (no keel, no
//! group commit), one thread — what one fsync'd commit costs. Rows (ratio =
//! keel's speed / the baseline's, per job against per put):
//!
//! - **worker, 8 handlers**: jobs enqueued with `enqueue_many` and run by a
//!   `Worker` with 8 handler slots (a no-op handler) until every completion
//!   is stored. Target >= 1.5: under one commit per job (claims for every
//!   free slot in one transaction, completions several to a commit).
//! - **explicit calls, 1 and 8 threads**: `enqueue`, `dequeue`, `complete`,
//!   three durable calls per job (8 threads share commits through group
//!   commit). Reported.
//! - **enqueue_many(1000) vs enqueue**: per job, one call for 1,000 jobs
//!   against single enqueues. Target >= 20.
//!
//! Run: `cargo bench --bench ops`. `KEEL_BENCH_JOBS` sets the jobs per round
//! (default 400), `KEEL_BENCH_ROUNDS` the rounds (default 3).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use ::lmdb::Transaction;
use keel::ops::{EnqueueOptions, JobState, Queue, Worker};
use support::{header, ns_per_op, timed, Rounds, Target};

const LEASE: Duration = Duration::from_secs(60);
const THREADS: usize = 8;
const BATCH: usize = 1_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A fresh path per call in one scratch folder.
struct Scratch {
    dir: PathBuf,
    count: AtomicUsize,
}

impl Scratch {
    fn path(&self, name: &str) -> PathBuf {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{n}-{name}"))
    }
}

fn main() {
    let jobs = env_number("KEEL_BENCH_JOBS", 400) / THREADS * THREADS;
    let rounds = env_number("KEEL_BENCH_ROUNDS", 3);
    let dir = std::env::temp_dir().join(format!("keel-bench-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch {
        dir: dir.clone(),
        count: AtomicUsize::new(0),
    };
    header(&format!(
        "ops: {jobs} jobs per round, {rounds} rounds, durable, {} cores; costs in us per job (per put for the baseline)",
        thread::available_parallelism().map_or(1, |n| n.get())
    ));
    let us = |ns: f64| ns / 1_000.0;
    let baseline = || us(raw_put(&scratch.path("raw"), jobs));

    Rounds::run(rounds, baseline, || us(worker_flow(&scratch.path("worker.lmdb"), jobs))).report(
        "worker, 8 handlers vs raw LMDB put",
        "us",
        Target::AtLeast(1.5),
    );
    for threads in [1, THREADS] {
        Rounds::run(rounds, baseline, || {
            us(explicit_flow(&scratch.path("explicit.lmdb"), threads, jobs))
        })
        .report(
            &format!("explicit calls, {threads} threads vs raw put"),
            "us",
            Target::None,
        );
    }
    Rounds::run(
        rounds,
        || us(single_enqueues(&scratch.path("single.lmdb"), BATCH / 10)),
        || us(enqueue_many(&scratch.path("many.lmdb"), BATCH)),
    )
    .report(
        &format!("enqueue_many({BATCH}) vs enqueue"),
        "us",
        Target::AtLeast(20.0),
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Nanoseconds per put of `count` puts, one durable LMDB commit each.
fn raw_put(dir: &Path, count: usize) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let env = ::lmdb::Environment::new().set_map_size(1 << 30).open(dir).unwrap();
    let db = env.open_db(None).unwrap();
    let value = [7u8; 100];
    ns_per_op(count, || {
        timed(|| {
            for i in 0..count {
                let mut txn = env.begin_rw_txn().unwrap();
                txn.put(db, &format!("{i:08}"), &value, ::lmdb::WriteFlags::empty())
                    .unwrap();
                txn.commit().unwrap();
            }
        })
    })
}

fn payload(n: usize) -> String {
    format!(r#"{{"n":{n},"body":"{}"}}"#, "x".repeat(60))
}

/// Nanoseconds per job: `enqueue_many`, then a worker with 8 slots runs
/// them all and stores every completion.
fn worker_flow(path: &Path, count: usize) -> f64 {
    let queue = Queue::open(path).unwrap();
    let jobs: Vec<(&str, String, EnqueueOptions)> = (0..count)
        .map(|n| ("bench", payload(n), EnqueueOptions::default()))
        .collect();
    ns_per_op(count, || {
        timed(|| {
            queue.enqueue_many(&jobs).unwrap();
            let mut worker = Worker::builder(&queue)
                .map_options(|o| o.poll_interval = Duration::from_millis(50))
                .handler("bench", THREADS, |_| Ok(String::new()))
                .start()
                .unwrap();
            while queue.count("bench", JobState::Completed).unwrap() < count as u64 {
                thread::sleep(Duration::from_millis(1));
            }
            worker.stop(Duration::from_secs(60));
        })
    })
}

/// Nanoseconds per job of `threads` threads each running jobs through
/// `enqueue`, `dequeue`, `complete`.
fn explicit_flow(path: &Path, threads: usize, count: usize) -> f64 {
    let queue = Queue::open(path).unwrap();
    let start = Arc::new(Barrier::new(threads));
    ns_per_op(count, || {
        timed(|| {
            thread::scope(|scope| {
                for thread in 0..threads {
                    let (queue, start) = (&queue, start.clone());
                    scope.spawn(move || {
                        start.wait();
                        let worker = format!("bench-{thread}");
                        for n in 0..count / threads {
                            queue.enqueue("bench", &payload(n), &EnqueueOptions::default()).unwrap();
                            let job = queue
                                .dequeue(&["bench"], &worker, LEASE)
                                .unwrap()
                                .expect("a job is ready");
                            queue.complete(job.id, job.token, "").unwrap();
                        }
                    });
                }
            })
        })
    })
}

fn single_enqueues(path: &Path, count: usize) -> f64 {
    let queue = Queue::open(path).unwrap();
    ns_per_op(count, || {
        timed(|| {
            for n in 0..count {
                queue.enqueue("bench", &payload(n), &EnqueueOptions::default()).unwrap();
            }
        })
    })
}

fn enqueue_many(path: &Path, count: usize) -> f64 {
    let queue = Queue::open(path).unwrap();
    let jobs: Vec<(&str, String, EnqueueOptions)> = (0..count)
        .map(|n| ("bench", payload(n), EnqueueOptions::default()))
        .collect();
    ns_per_op(count, || timed(|| drop(queue.enqueue_many(&jobs).unwrap())))
}

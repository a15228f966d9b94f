//! Durable job throughput beside the raw durable single-put rate of an LMDB
//! environment, measured in the same run on the same disk.
//!
//! Baseline: `Env::write` of one small put per call (one durable commit),
//! from 1 and from 8 threads (group commit combines the 8). keel: the full
//! job flow — `enqueue`, `dequeue`, `complete`, each a durable commit — from
//! 1 and from 8 threads. A job is three commits, so the floor for the ratio
//! (baseline puts/s over keel jobs/s) is about 3.
//!
//! Run: `cargo bench --bench ops`. `KEEL_BENCH_JOBS` sets the jobs per
//! thread (default 300).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use keel::lmdb::{map_err, Env, EnvOptions, WriteFlags};
use keel::ops::{EnqueueOptions, Queue};

const LEASE: Duration = Duration::from_secs(60);

fn main() {
    let per_thread: usize = std::env::var("KEEL_BENCH_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("keel-bench-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "ops benchmark: {per_thread} per thread, durable, {} cores",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<8} {:>16} {:>30} {:>8}",
        "threads", "baseline puts/s", "keel enqueue+dequeue+complete/s", "ratio"
    );
    for threads in [1, 8] {
        let env = Env::open(&dir.join(format!("raw-{threads}.lmdb")), &EnvOptions::default()).unwrap();
        let db = env.database("bench").unwrap();
        let baseline = rate(threads, per_thread, |thread, i| raw_put(&env, db, thread, i));
        let queue = Queue::open(&dir.join(format!("jobs-{threads}.lmdb"))).unwrap();
        let keel = rate(threads, per_thread, |thread, _| job_flow(&queue, thread));
        println!("{threads:<8} {baseline:>16.0} {keel:>30.0} {:>7.2}x", baseline / keel);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Operations per second of `threads` threads each doing `per_thread` calls.
fn rate(threads: usize, per_thread: usize, op: impl Fn(usize, usize) + Send + Sync) -> f64 {
    let start = Barrier::new(threads + 1);
    let op = Arc::new(op);
    let began = thread::scope(|scope| {
        for thread in 0..threads {
            let (start, op) = (&start, op.clone());
            scope.spawn(move || {
                start.wait();
                for i in 0..per_thread {
                    op(thread, i);
                }
            });
        }
        start.wait();
        Instant::now()
    });
    (threads * per_thread) as f64 / began.elapsed().as_secs_f64()
}

/// One durable commit of one 100-byte put.
fn raw_put(env: &Env, db: keel::lmdb::Database, thread: usize, i: usize) {
    let key = format!("{thread:02}-{i:08}");
    let value = [7u8; 100];
    env.write(|txn| {
        txn.put(db, &key, &value, WriteFlags::empty())
            .map_err(|err| map_err("bench put", err))
    })
    .unwrap();
}

/// One job through its whole life: three durable commits.
fn job_flow(queue: &Queue, thread: usize) {
    let payload = format!(r#"{{"thread":{thread},"body":"{}"}}"#, "x".repeat(60));
    queue.enqueue("bench", &payload, &EnqueueOptions::default()).unwrap();
    let job = queue
        .dequeue(&["bench"], &format!("bench-{thread}"), LEASE)
        .unwrap()
        .expect("a job is ready");
    queue.complete(job.id, job.token, "").unwrap();
}

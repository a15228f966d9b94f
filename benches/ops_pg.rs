//! The PostgreSQL job queue beside a bare `FOR UPDATE SKIP LOCKED` loop on
//! the same server, in the same run, and its wake-up latency.
//!
//! Baseline: 8 threads each `INSERT` a row, claim one with `UPDATE ... WHERE
//! id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)` and mark it done — three
//! self-committing prepared statements, the least a durable queue can do.
//! keel: 8 threads each `enqueue`, `dequeue`, `complete` through
//! `Queue::postgres` (database time, leases, tokens, the resetter, counts).
//! Target: keel at least 0.8x the bare loop. Then an idle worker (polling
//! once a minute) and a job enqueued through another handle: the time from
//! enqueue to the handler's start, woken by LISTEN/NOTIFY. Target: p50
//! under 10 ms.
//!
//! Run: `KEEL_PG_FSYNC=on scripts/pg start; KEEL_TEST_PG_URL=$(scripts/pg
//! url) cargo bench --features postgres --bench ops_pg` (fsync on: durable
//! commits, as in production; with it off the server's commit costs
//! nothing and the figures compare CPU only). `KEEL_BENCH_JOBS` sets the
//! jobs per thread per round (default 200).

#[path = "support/mod.rs"]
mod support;

use std::sync::mpsc;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use keel::ops::{EnqueueOptions, Queue, Worker};
use keel::postgres::client::{Client, NoTls};
use keel::postgres::PgOptions;
use support::{Rounds, Spread, Target};

const THREADS: usize = 8;
const ROUNDS: usize = 5;
const LEASE: Duration = Duration::from_secs(60);

fn main() {
    let url = std::env::var("KEEL_TEST_PG_URL").expect("set KEEL_TEST_PG_URL (scripts/pg start; scripts/pg url)");
    let per_thread: usize = std::env::var("KEEL_BENCH_JOBS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    support::header(&format!(
        "PostgreSQL jobs benchmark: {THREADS} threads x {per_thread} jobs per round, {} cores",
        thread::available_parallelism().map_or(1, |n| n.get())
    ));
    let mut admin = Client::connect(&url, NoTls).unwrap();
    admin
        .batch_execute(
            "DROP SCHEMA IF EXISTS bench_keel CASCADE; DROP SCHEMA IF EXISTS bench_bare CASCADE;
             CREATE SCHEMA bench_bare;
             CREATE TABLE bench_bare.jobs (id bigserial PRIMARY KEY, state smallint NOT NULL, payload text NOT NULL);
             CREATE INDEX ON bench_bare.jobs (id) WHERE state = 1;",
        )
        .unwrap();
    let options = PgOptions {
        schema: "bench_keel".into(),
        pool_size: THREADS as u32,
        ..PgOptions::default()
    };
    let queue = Queue::postgres_with(&url, &options).unwrap();
    let bare: Vec<Mutex<Client>> = (0..THREADS)
        .map(|_| Mutex::new(Client::connect(&url, NoTls).unwrap()))
        .collect();
    let rounds = Rounds::run(
        ROUNDS,
        || ns_per_job(per_thread, |thread| bare_flow(&mut bare[thread].lock().unwrap())),
        || ns_per_job(per_thread, |_| keel_flow(&queue)),
    );
    rounds.report("enqueue+dequeue+complete, 8 threads", "us/job", Target::AtLeast(0.8));
    println!(
        "  (per job: bare {:.0} us, keel {:.0} us, median of rounds)",
        Spread::of(&rounds.baseline).median,
        Spread::of(&rounds.keel).median
    );
    latency(&url, &options);
}

/// Microseconds per job of `THREADS` threads each doing `per_thread` flows.
fn ns_per_job(per_thread: usize, flow: impl Fn(usize) + Sync) -> f64 {
    let start = Barrier::new(THREADS + 1);
    let took = thread::scope(|scope| {
        for thread in 0..THREADS {
            let (start, flow) = (&start, &flow);
            scope.spawn(move || {
                start.wait();
                for _ in 0..per_thread {
                    flow(thread);
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins every thread before returning.
        began
    });
    took.elapsed().as_secs_f64() * 1e6 / (THREADS * per_thread) as f64
}

fn bare_flow(client: &mut Client) {
    let insert = client
        .prepare("INSERT INTO bench_bare.jobs (state, payload) VALUES (1, $1)")
        .unwrap();
    let claim = client
        .prepare(
            "UPDATE bench_bare.jobs SET state = 2 WHERE id = (SELECT id FROM bench_bare.jobs WHERE state = 1 \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .unwrap();
    let done = client
        .prepare("UPDATE bench_bare.jobs SET state = 4 WHERE id = $1")
        .unwrap();
    client.execute(&insert, &[&"{}"]).unwrap();
    if let Some(row) = client.query_opt(&claim, &[]).unwrap() {
        let id: i64 = row.get(0);
        client.execute(&done, &[&id]).unwrap();
    }
}

fn keel_flow(queue: &Queue) {
    queue.enqueue("bench", "{}", &EnqueueOptions::default()).unwrap();
    if let Some(job) = queue.dequeue(&["bench"], "bench-worker", LEASE).unwrap() {
        queue.complete(job.id, job.token, "").unwrap();
    }
}

/// Enqueue-to-handler-start on an idle worker of another handle.
fn latency(url: &str, options: &PgOptions) {
    let waiting = Queue::postgres_with(url, options).unwrap();
    let (started_tx, started_rx) = mpsc::channel::<Instant>();
    let started_tx = Mutex::new(started_tx);
    let mut worker = Worker::builder(&waiting)
        .map_options(|options| options.poll_interval = Duration::from_secs(60))
        .handler("latency", 1, move |_| {
            started_tx.lock().unwrap().send(Instant::now()).unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    let other = Queue::postgres_with(url, options).unwrap();
    let mut samples = Vec::new();
    for _ in 0..50 {
        let sent = Instant::now();
        other.enqueue("latency", "{}", &EnqueueOptions::default()).unwrap();
        let began = started_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the handler never started");
        samples.push(began.duration_since(sent).as_secs_f64() * 1e3);
        thread::sleep(Duration::from_millis(20));
    }
    worker.stop(Duration::from_secs(10));
    samples.sort_by(f64::total_cmp);
    let p50 = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    let verdict = if p50 < 10.0 { "met" } else { "NOT MET" };
    println!(
        "{:<40} p50 {p50:.2} ms  p90 {p90:.2} ms  max {:.2} ms (poll interval 60 s)  target p50 < 10 ms: {verdict}",
        "enqueue -> idle worker's handler start",
        samples[samples.len() - 1]
    );
}

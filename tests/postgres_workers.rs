//! Workers in two separate processes share one PostgreSQL queue: 1,000 jobs
//! are each completed exactly once, even though one worker process is
//! SIGKILLed in the middle of a job. The processes reach the server over
//! loopback TCP (no network namespaces: they need privileges CI may lack).
#![cfg(feature = "postgres")]

#[path = "conformance/mod.rs"]
#[allow(dead_code)]
mod conformance;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conformance::postgres::{fresh_schema, url};
use keel::ops::{EnqueueOptions, JobState, Queue, Worker};
use keel::postgres::client::{Client, NoTls};
use keel::postgres::PgOptions;

const JOBS: usize = 1_000;
const TEST: &str = "workers_in_two_processes_complete_each_job_once_though_one_is_killed_mid_job";
const ROLE: &str = "KEEL_PG_WORKER_ROLE";
const SCHEMA: &str = "KEEL_PG_WORKER_SCHEMA";
const PATIENCE: Duration = Duration::from_secs(120);

fn options(schema: &str) -> PgOptions {
    PgOptions {
        schema: schema.to_owned(),
        pool_size: 4,
        ..PgOptions::default()
    }
}

/// A child: runs a worker until killed (the victim) or told to stop.
fn run_child(role: &str, schema: &str) {
    let queue = Queue::postgres_with(&url(), &options(schema)).unwrap();
    let handled = Mutex::new(Client::connect(&url(), NoTls).unwrap());
    let record = format!("INSERT INTO {schema}.handled VALUES ($1, $2)");
    let mut out = std::io::stdout();
    let role_owned = role.to_owned();
    let mut worker = Worker::builder(&queue)
        .map_options(|options| {
            options.name = format!("{role}-{}", std::process::id());
            options.lease = Duration::from_secs(2);
            options.poll_interval = Duration::from_millis(200);
        })
        .handler("work", 4, move |ctx| {
            let job = ctx.job();
            if job.payload.contains("slow") && role_owned == "victim" {
                // Say we are inside the slow job, then never finish it.
                let mut out = std::io::stdout();
                writeln!(out, "SLOW").unwrap();
                out.flush().unwrap();
                std::thread::sleep(Duration::from_secs(3600));
            }
            let id = job.id as i64;
            handled.lock().unwrap().execute(&record, &[&id, &role_owned]).unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    writeln!(out, "STARTED").unwrap();
    out.flush().unwrap();
    // The survivor runs until the parent closes its stdin.
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    worker.stop(Duration::from_secs(10));
}

fn spawn(role: &str, schema: &str) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SCHEMA, schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn wait_for(lines: &mut impl Iterator<Item = std::io::Result<String>>, word: &str) {
    assert!(
        lines.any(|line| line.unwrap().ends_with(word)),
        "the child never said {word}"
    );
}

#[test]
fn workers_in_two_processes_complete_each_job_once_though_one_is_killed_mid_job() {
    if let (Ok(role), Ok(schema)) = (std::env::var(ROLE), std::env::var(SCHEMA)) {
        return run_child(&role, &schema);
    }
    let schema = fresh_schema("two-processes");
    let queue = Queue::postgres_with(&url(), &options(&schema)).unwrap();
    let mut db = Client::connect(&url(), NoTls).unwrap();
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.handled (job bigint NOT NULL, role text NOT NULL)"
    ))
    .unwrap();
    // The slow job goes first, so the victim takes it.
    let slow = queue
        .enqueue(
            "work",
            r#"{"slow":true}"#,
            &EnqueueOptions {
                priority: 0,
                ..Default::default()
            },
        )
        .unwrap()
        .job
        .id;
    for n in 1..JOBS {
        queue
            .enqueue("work", &format!(r#"{{"n":{n}}}"#), &EnqueueOptions::default())
            .unwrap();
    }
    let (mut victim, mut victim_lines) = spawn("victim", &schema);
    wait_for(&mut victim_lines, "SLOW");
    let (mut survivor, mut survivor_lines) = spawn("survivor", &schema);
    wait_for(&mut survivor_lines, "STARTED");
    // SIGKILL: no graceful stop, no release; only the lease ends its claim.
    victim.kill().unwrap();
    victim.wait().unwrap();
    let started = Instant::now();
    while queue.count("work", JobState::Completed).unwrap() < JOBS as u64 {
        assert!(
            started.elapsed() < PATIENCE,
            "not every job completed: {:?}",
            queue.counts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(survivor.stdin.take());
    assert!(survivor.wait().unwrap().success(), "the survivor failed");

    let jobs = queue.list("work", None, JOBS + 1).unwrap();
    assert_eq!(jobs.len(), JOBS);
    for job in &jobs {
        assert_eq!(job.state, JobState::Completed, "job {}", job.id);
        assert_eq!(job.failures, 0, "job {}", job.id);
        // One claim per lost lease plus the one that completed it.
        assert_eq!(job.attempts, job.resets + 1, "job {}: {job:?}", job.id);
    }
    let slow_job = queue.get(slow).unwrap();
    assert_eq!(
        (slow_job.resets, slow_job.attempts),
        (1, 2),
        "the killed attempt was reset once"
    );
    let rows = db
        .query(
            &format!("SELECT job, count(*), min(role) FROM {schema}.handled GROUP BY job"),
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), JOBS, "every job's handler finished");
    for row in &rows {
        let id = row.get::<_, i64>(0) as u64;
        let count: i64 = row.get(1);
        let resets = jobs.iter().find(|job| job.id == id).unwrap().resets;
        // A handler that finished just before the kill, its completion not
        // yet committed, ran again elsewhere: only jobs that lost a lease.
        assert!(
            count == 1 || resets > 0,
            "job {id} handled {count} times without a reset"
        );
    }
    let by_survivor: String = rows
        .iter()
        .find(|row| row.get::<_, i64>(0) as u64 == slow)
        .unwrap()
        .get(2);
    assert_eq!(by_survivor, "survivor");
    let by_victim = rows.iter().filter(|row| row.get::<_, String>(2) == "victim").count();
    eprintln!("victim handled {by_victim} jobs before it was killed");
}

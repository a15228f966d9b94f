//! The Worker: exactly-once completion across workers, isolation of kinds,
//! panics, heartbeats, graceful stop, and a worker killed mid-job in a child
//! process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::ops::{
    Clock, EnqueueOptions, HandlerError, JobPolicy, JobState, LmdbStore, ManualClock, Queue, SystemClock, Worker,
    WorkerOptions,
};
use keel::ErrorKind;

/// A failsafe for waits on events the test itself causes; reaching it
/// means the behaviour under test is broken, not slow.
const FAILSAFE: Duration = Duration::from_secs(120);
const CHILD_ENV: &str = "KEEL_OPS_WORKER_CHILD";

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-worker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jobs.lmdb")
}

fn options(name: &str) -> WorkerOptions {
    WorkerOptions {
        name: name.to_owned(),
        poll_interval: Duration::from_millis(50),
        ..WorkerOptions::default()
    }
}

fn enqueue(q: &Queue, kind: &str, payload: &str) -> u64 {
    q.enqueue(kind, payload, &EnqueueOptions::default()).unwrap().job.id
}

/// Waits until `condition` holds, checking every few milliseconds; for
/// effects of background threads that have no event to wait on.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + FAILSAFE;
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn n_workers_times_m_jobs_complete_each_exactly_once() {
    const JOBS: usize = 200;
    let path = temp_path("exactly-once");
    let q = Queue::open(&path).unwrap();
    let ids: Vec<u64> = (0..JOBS)
        .map(|n| enqueue(&q, "work", &format!(r#"{{"n":{n}}}"#)))
        .collect();
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    let mut workers: Vec<Worker> = (0..4)
        .map(|n| {
            let runs = runs.clone();
            let done_tx = done_tx.clone();
            // Each worker opens the file itself, as separate services would.
            let queue = Queue::open(&path).unwrap();
            Worker::builder(&queue)
                .options(options(&format!("w{n}")))
                .handler("work", 3, move |ctx| {
                    let mut runs = runs.lock().unwrap();
                    *runs.entry(ctx.job().id).or_default() += 1;
                    if runs.values().sum::<usize>() == JOBS {
                        done_tx.send(()).unwrap();
                    }
                    Ok(String::new())
                })
                .start()
                .unwrap()
        })
        .collect();
    done_rx.recv_timeout(FAILSAFE).expect("not every job ran");
    let completed: u64 = workers
        .iter_mut()
        .map(|w| {
            w.stop(FAILSAFE);
            w.stats().completed
        })
        .sum();
    let runs = runs.lock().unwrap();
    for id in &ids {
        assert_eq!(runs.get(id), Some(&1), "job {id} ran {:?} times", runs.get(id));
    }
    assert_eq!(runs.len(), JOBS);
    assert_eq!(completed, JOBS as u64);
    assert_eq!(q.count("work", JobState::Completed).unwrap(), JOBS as u64);
}

#[test]
fn a_panicking_handler_fails_only_its_own_job() {
    let q = Queue::open(temp_path("panic")).unwrap();
    let bad = q
        .enqueue(
            "k",
            r#"{"panic":true}"#,
            &EnqueueOptions {
                max_attempts: 1,
                ..EnqueueOptions::default()
            },
        )
        .unwrap()
        .job
        .id;
    let good: Vec<u64> = (0..5).map(|n| enqueue(&q, "k", &format!(r#"{{"n":{n}}}"#))).collect();
    let (ran_tx, ran_rx) = mpsc::channel();
    let ran_tx = Mutex::new(ran_tx);
    let mut worker = Worker::builder(&q)
        .options(options("panicky"))
        .handler("k", 2, move |ctx| {
            ran_tx.lock().unwrap().send(()).unwrap();
            if ctx.payload().contains("panic") {
                panic!("handler blew up on job {}", ctx.job().id);
            }
            Ok(r#"{"ok":true}"#.to_owned())
        })
        .start()
        .unwrap();
    for _ in 0..6 {
        ran_rx.recv_timeout(FAILSAFE).unwrap();
    }
    worker.stop(FAILSAFE);
    let dead = q.get(bad).unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead.last_error.contains("handler blew up"), "{}", dead.last_error);
    for id in good {
        assert_eq!(q.get(id).unwrap().state, JobState::Completed);
    }
    let stats = worker.stats();
    assert_eq!((stats.panicked, stats.completed), (1, 5));
}

#[test]
fn a_handler_error_is_stored_as_a_failure_of_its_job() {
    let q = Queue::open(temp_path("error")).unwrap();
    let id = enqueue(&q, "k", "{}");
    let (ran_tx, ran_rx) = mpsc::channel();
    let ran_tx = Mutex::new(ran_tx);
    let mut worker = Worker::builder(&q)
        .options(options("erring"))
        .handler("k", 1, move |_| {
            ran_tx.lock().unwrap().send(()).unwrap();
            Err(HandlerError::permanent("bad payload"))
        })
        .start()
        .unwrap();
    ran_rx.recv_timeout(FAILSAFE).unwrap();
    worker.stop(FAILSAFE);
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.last_error.as_str()), (JobState::Dead, "bad payload"));
    assert_eq!(worker.stats().failed, 1);
}

#[test]
fn the_block_list_wins_and_an_unknown_kind_fails_start_up() {
    let q = Queue::open(temp_path("allow-block")).unwrap();
    let builder = || {
        Worker::builder(&q)
            .options(options("sel"))
            .handler("a", 1, |_| Ok(String::new()))
            .handler("b", 1, |_| Ok(String::new()))
    };
    let mut worker = builder().allow(["a", "b"]).block(["b"]).start().unwrap();
    assert_eq!(worker.kinds(), ["a"]);
    worker.stop(Duration::ZERO);
    let mut all = builder().start().unwrap();
    assert_eq!(all.kinds(), ["a", "b"]);
    all.stop(Duration::ZERO);
    for result in [
        builder().allow(["a", "typo"]).start(),
        builder().block(["typo"]).start(),
        builder().block(["a", "b"]).start(),
        builder().handler("c", 0, |_| Ok(String::new())).start(),
    ] {
        assert_eq!(result.err().unwrap().kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn each_kind_runs_at_its_own_concurrency_and_a_stuck_kind_does_not_starve_another() {
    let q = Queue::open(temp_path("isolation")).unwrap();
    for _ in 0..5 {
        enqueue(&q, "slow", "{}");
    }
    let fast: Vec<u64> = (0..3).map(|_| enqueue(&q, "fast", "{}")).collect();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let (fast_tx, fast_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let fast_tx = Mutex::new(fast_tx);
    let mut worker = Worker::builder(&q)
        .options(options("iso"))
        .handler("slow", 2, {
            let (running, most) = (running.clone(), most.clone());
            move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                started_tx.lock().unwrap().send(()).unwrap();
                release_rx.recv().unwrap();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(String::new())
            }
        })
        .handler("fast", 1, move |ctx| {
            fast_tx.lock().unwrap().send(ctx.job().id).unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    // Both slow slots are stuck; the fast kind still finishes everything.
    let mut done: Vec<u64> = (0..3).map(|_| fast_rx.recv_timeout(FAILSAFE).unwrap()).collect();
    done.sort();
    assert_eq!(done, fast);
    assert_eq!(most.load(Ordering::SeqCst), 2);
    for _ in 0..5 {
        release_tx.send(()).unwrap();
    }
    for _ in 0..3 {
        started_rx.recv_timeout(FAILSAFE).unwrap();
    }
    worker.stop(FAILSAFE);
    assert_eq!(most.load(Ordering::SeqCst), 2, "more than 2 slow handlers ran at once");
    assert_eq!(q.count("slow", JobState::Completed).unwrap(), 5);
}

#[test]
fn heartbeats_keep_a_running_job_leased_past_its_first_lease() {
    let clock = ManualClock::new(SystemClock.now());
    let store = Arc::new(LmdbStore::open(temp_path("heartbeat")).unwrap());
    let q = Queue::with_parts(store, Arc::new(clock.clone()), JobPolicy::default());
    let id = enqueue(&q, "long", "{}");
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let lease = Duration::from_secs(60);
    let mut worker = Worker::builder(&q)
        .options(WorkerOptions {
            lease,
            heartbeat_interval: Some(Duration::from_millis(10)),
            ..options("beater")
        })
        .handler("long", 1, move |_| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.recv().unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    let first_lease = q.get(id).unwrap().lease_until;
    clock.advance(lease / 2);
    wait_until("a heartbeat extends the lease", || {
        q.get(id).unwrap().lease_until > first_lease
    });
    clock.advance(lease / 2 + Duration::from_secs(1));
    assert!(clock.now() > first_lease);
    assert_eq!(q.reset_expired().unwrap().requeued, 0, "a heartbeating job was reset");
    release_tx.send(()).unwrap();
    worker.stop(FAILSAFE);
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.attempts, job.resets), (JobState::Completed, 1, 0));
}

#[test]
fn a_lost_lease_flags_only_its_own_job() {
    let q = Queue::open(temp_path("lost-lease")).unwrap();
    let doomed = enqueue(&q, "a", "{}");
    let other = enqueue(&q, "b", "{}");
    let (started_tx, started_rx) = mpsc::channel();
    let (lost_tx, lost_rx) = mpsc::channel();
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let started_a = Mutex::new(started_tx.clone());
    let started_b = Mutex::new(started_tx);
    let lost_tx = Mutex::new(lost_tx);
    let mut worker = Worker::builder(&q)
        .options(WorkerOptions {
            heartbeat_interval: Some(Duration::from_millis(10)),
            ..options("two")
        })
        .handler("a", 1, move |ctx| {
            started_a.lock().unwrap().send(()).unwrap();
            while !ctx.lease_lost() {
                std::thread::sleep(Duration::from_millis(2));
            }
            assert!(ctx.should_stop());
            let (done_tx, done_rx) = mpsc::channel::<()>();
            lost_tx.lock().unwrap().send(done_tx).unwrap();
            // Still running while the test looks at the running set.
            let _ = done_rx.recv_timeout(FAILSAFE);
            Ok(String::new())
        })
        .handler("b", 1, move |ctx| {
            started_b.lock().unwrap().send(()).unwrap();
            release_rx.recv().unwrap();
            assert!(!ctx.lease_lost());
            Ok(String::new())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    assert_eq!(worker.running(), 2);
    q.cancel(doomed, "operator cancelled").unwrap();
    let finish_a = lost_rx
        .recv_timeout(FAILSAFE)
        .expect("the cancelled job never saw its lease lost");
    // Its handler has not returned, yet the worker dropped it at the refused
    // heartbeat: only the other job is still running.
    assert_eq!(worker.running(), 1);
    assert_eq!(worker.stats().lost, 1);
    finish_a.send(()).unwrap();
    release_tx.send(()).unwrap();
    worker.stop(FAILSAFE);
    assert_eq!(q.get(doomed).unwrap().state, JobState::Cancelled);
    assert_eq!(q.get(other).unwrap().state, JobState::Completed);
    let stats = worker.stats();
    // The lost job's result was never offered to the store.
    assert_eq!((stats.completed, stats.refused, stats.lost), (1, 0, 1));
}

#[test]
fn a_zero_poll_or_maintenance_interval_is_refused() {
    let q = Queue::open(temp_path("zero-poll")).unwrap();
    for change in [
        (|o: &mut WorkerOptions| o.poll_interval = Duration::ZERO) as fn(&mut WorkerOptions),
        |o: &mut WorkerOptions| o.maintenance_interval = Duration::ZERO,
    ] {
        let err = Worker::builder(&q)
            .options(options("zero"))
            .map_options(change)
            .handler("a", 1, |_| Ok(String::new()))
            .start()
            .err()
            .expect("a zero interval was accepted");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn the_maximum_number_of_resets_is_the_queues_policy() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = Arc::new(LmdbStore::open(temp_path("max-resets")).unwrap());
    let policy = JobPolicy {
        max_resets: 1,
        ..JobPolicy::default()
    };
    let q = Queue::with_parts(store, Arc::new(clock.clone()), policy);
    let id = enqueue(&q, "a", "{}");
    for _ in 0..2 {
        q.dequeue(&["a"], "dying", Duration::from_secs(1)).unwrap().unwrap();
        clock.advance(Duration::from_secs(1));
        q.reset_expired().unwrap();
    }
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.resets), (JobState::Dead, 2));
}

#[test]
fn a_graceful_stop_releases_jobs_still_running_at_the_deadline() {
    let q = Queue::open(temp_path("stop")).unwrap();
    let id = enqueue(&q, "stuck", "{}");
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let (returned_tx, returned_rx) = mpsc::channel();
    let returned_tx = Mutex::new(returned_tx);
    let mut worker = Worker::builder(&q)
        .options(options("stopper"))
        .handler("stuck", 1, move |_| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.recv().unwrap();
            returned_tx.lock().unwrap().send(()).unwrap();
            Ok(String::new())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(FAILSAFE).unwrap();
    let report = worker.stop(Duration::from_millis(20));
    // The stuck handler's thread is abandoned by the pool; its slot is not.
    assert_eq!((report.released, report.detached), (1, 0));
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.failures), (JobState::Queued, 0));
    // The handler returns after the stop: its result must not be stored.
    release_tx.send(()).unwrap();
    returned_rx.recv_timeout(FAILSAFE).unwrap();
    let again = q.dequeue(&["stuck"], "next", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (id, 2));
}

#[test]
fn a_handler_past_the_job_timeout_fails_its_attempt_and_its_late_result_is_refused() {
    let q = Queue::open(temp_path("job-timeout")).unwrap();
    let id = enqueue(&q, "hang", "{}");
    let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
    let (returned_tx, returned_rx) = mpsc::channel();
    let returned_tx = Mutex::new(returned_tx);
    let mut worker = Worker::builder(&q)
        .options(WorkerOptions {
            job_timeout: Some(Duration::from_millis(50)),
            ..options("timer")
        })
        .handler("hang", 1, move |_| {
            release_rx.recv().unwrap();
            returned_tx.lock().unwrap().send(()).unwrap();
            Ok(r#"{"late":true}"#.to_owned())
        })
        .start()
        .unwrap();
    wait_until("the timed-out attempt is stored as a failure", || {
        q.get(id).unwrap().state == JobState::Retrying
    });
    let job = q.get(id).unwrap();
    assert_eq!((job.failures, job.attempts), (1, 1));
    assert!(job.last_error.contains("job timeout"), "{}", job.last_error);
    assert_eq!(worker.stats().timed_out, 1);
    release_tx.send(()).unwrap();
    returned_rx.recv_timeout(FAILSAFE).unwrap();
    worker.stop(FAILSAFE);
    let job = q.get(id).unwrap();
    assert_ne!(
        job.state,
        JobState::Completed,
        "the abandoned attempt's result was stored"
    );
    assert!(job.result.is_empty());
}

#[test]
fn a_worker_killed_mid_job_has_its_job_reset_and_finished_by_another() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // The child: take the job, say so, and hang until killed.
        let q = Queue::open(std::path::Path::new(&path)).unwrap();
        let _worker = Worker::builder(&q)
            .options(WorkerOptions {
                lease: Duration::from_secs(60),
                ..options("doomed")
            })
            .handler("task", 1, |ctx| {
                let mut out = std::io::stdout();
                writeln!(out, "\nSTARTED {} {}", ctx.job().id, ctx.job().token).unwrap();
                out.flush().unwrap();
                loop {
                    std::thread::park();
                }
            })
            .start()
            .unwrap();
        loop {
            std::thread::park();
        }
    }
    let path = temp_path("killed");
    let q = Queue::open(&path).unwrap();
    let id = enqueue(&q, "task", r#"{"x":1}"#);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_worker_killed_mid_job_has_its_job_reset_and_finished_by_another",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| line.unwrap())
        .find_map(|line| line.strip_prefix("STARTED ").map(str::to_owned))
        .expect("the child never started the job");
    let (job_id, killed_token) = started.split_once(' ').unwrap();
    let (job_id, killed_token): (u64, u64) = (job_id.parse().unwrap(), killed_token.parse().unwrap());
    assert_eq!(job_id, id);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        q.get(id).unwrap().state,
        JobState::Running,
        "the killed attempt still holds the lease"
    );

    // Another worker, whose clock is past the killed attempt's lease.
    let clock = ManualClock::new(SystemClock.now() + 61_000);
    let store = Arc::new(LmdbStore::open(&path).unwrap());
    let rescuer = Queue::with_parts(store, Arc::new(clock), JobPolicy::default());
    let (ran_tx, ran_rx) = mpsc::channel();
    let ran_tx = Mutex::new(ran_tx);
    let mut worker = Worker::builder(&rescuer)
        .options(options("rescuer"))
        .handler("task", 1, move |ctx| {
            ran_tx.lock().unwrap().send(ctx.job().token).unwrap();
            Ok(r#"{"done":true}"#.to_owned())
        })
        .start()
        .unwrap();
    let new_token = ran_rx.recv_timeout(FAILSAFE).unwrap();
    worker.stop(FAILSAFE);
    assert_ne!(new_token, killed_token);
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.attempts, job.resets), (JobState::Completed, 2, 1));
    let late = q.complete(id, killed_token, "").unwrap_err();
    assert_eq!(late.kind(), ErrorKind::Conflict);
    assert_eq!(q.get(id).unwrap().result, r#"{"done":true}"#);
}

#[test]
fn a_running_worker_reports_its_counters_in_keel_stats() {
    let q = Queue::open(temp_path("stats")).unwrap();
    let mut worker = Worker::builder(&q)
        .options(options("stats-probe"))
        .handler("k", 2, |_| Ok(String::new()))
        .start()
        .unwrap();
    let gathered = keel::stats::gather();
    let mine = gathered["workers"]
        .as_array()
        .and_then(|workers| workers.iter().find(|w| w["worker"] == "stats-probe"))
        .cloned()
        .expect("the worker is listed under ops");
    assert_eq!(mine["kinds"], serde_json::json!(["k"]));
    assert_eq!(mine["running"], 0);
    worker.stop(FAILSAFE);
}

const SHARE_ENV: &str = "KEEL_OPS_SHARE_CHILD";

#[test]
fn workers_in_two_processes_complete_each_job_exactly_once() {
    const JOBS: u64 = 100;
    if let Ok(path) = std::env::var(SHARE_ENV) {
        // The child: run a worker until stdin closes, then report.
        let q = Queue::open(std::path::Path::new(&path)).unwrap();
        let mut worker = Worker::builder(&q)
            .options(options("child"))
            .handler("shared", 2, |_| Ok(r#"{"by":"child"}"#.to_owned()))
            .start()
            .unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "\nREADY").unwrap();
        out.flush().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
        worker.stop(FAILSAFE);
        writeln!(out, "COMPLETED {}", worker.stats().completed).unwrap();
        out.flush().unwrap();
        return;
    }
    let path = temp_path("two-processes");
    let q = Queue::open(&path).unwrap();
    let ids: Vec<u64> = (0..JOBS)
        .map(|n| enqueue(&q, "shared", &format!(r#"{{"n":{n}}}"#)))
        .collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "workers_in_two_processes_complete_each_job_exactly_once"])
        .args(["--nocapture", "--test-threads=1"])
        .env(SHARE_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.by_ref().any(|line| line.unwrap().ends_with("READY")),
        "child never got ready"
    );
    let mut worker = Worker::builder(&q)
        .options(options("parent"))
        .handler("shared", 2, |_| Ok(r#"{"by":"parent"}"#.to_owned()))
        .start()
        .unwrap();
    wait_until("every job completed", || {
        q.count("shared", JobState::Completed).unwrap() == JOBS
    });
    worker.stop(FAILSAFE);
    drop(child.stdin.take()); // tells the child to stop
                              // Read to the end: the child still writes the harness's summary.
    let child_completed: u64 = lines
        .map(|line| line.unwrap())
        .filter_map(|line| line.strip_prefix("COMPLETED ").map(|n| n.parse().unwrap()))
        .last()
        .expect("the child reported");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        worker.stats().completed + child_completed,
        JOBS,
        "a job completed twice or never"
    );
    for id in ids {
        let job = q.get(id).unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Completed, 1), "job {id}");
    }
    eprintln!("parent completed {}, child {child_completed}", worker.stats().completed);
}

#[test]
fn free_slots_are_filled_by_one_claim() {
    const SLOTS: usize = 4;
    let store = Arc::new(LmdbStore::open(temp_path("claim-batch")).unwrap());
    let q = Queue::with_store(store.clone());
    for _ in 0..SLOTS {
        enqueue(&q, "k", "{}");
    }
    let all_running = Arc::new(std::sync::Barrier::new(SLOTS + 1));
    let release = Arc::new(std::sync::Barrier::new(SLOTS + 1));
    let before = store.env().stats().writes;
    let mut worker = Worker::builder(&q)
        .options(options("batch"))
        .handler("k", SLOTS, {
            let (all_running, release) = (all_running.clone(), release.clone());
            move |_| {
                all_running.wait();
                release.wait();
                Ok(String::new())
            }
        })
        .start()
        .unwrap();
    all_running.wait();
    // The four claims took one transaction (the start-up maintenance pass
    // may have taken another); one claim per slot would be four.
    let writes = store.env().stats().writes - before;
    assert!(writes <= 2, "{writes} transactions to claim {SLOTS} jobs");
    release.wait();
    wait_until("every job completed", || {
        q.count("k", JobState::Completed).unwrap() == SLOTS as u64
    });
    worker.stop(FAILSAFE);
    assert_eq!(worker.stats().completed, SLOTS as u64);
}

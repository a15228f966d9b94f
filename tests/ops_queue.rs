//! The job queue: priorities, scheduling, unique keys, fencing, retries with
//! backoff, the resetter, retention and counts. Time is a ManualClock, so
//! nothing here sleeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel::ops::{Backoff, Clock, EnqueueOptions, JobPolicy, JobState, LmdbStore, ManualClock, Queue};
use keel::ErrorKind;

const START: u64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-queue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jobs.lmdb")
}

fn policy() -> JobPolicy {
    JobPolicy {
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.25,
        },
        max_resets: 2,
    }
}

fn queue(name: &str) -> (Queue, ManualClock) {
    let clock = ManualClock::new(START);
    let store = Arc::new(LmdbStore::open(&temp_path(name)).unwrap());
    (Queue::with_parts(store, Arc::new(clock.clone()), policy()), clock)
}

fn opts() -> EnqueueOptions {
    EnqueueOptions::default()
}

#[test]
fn dequeue_takes_the_most_urgent_priority_then_the_oldest() {
    let (q, clock) = queue("priority");
    let low = q
        .enqueue("mail", r#"{"n":1}"#, &EnqueueOptions { priority: 7, ..opts() })
        .unwrap()
        .job;
    clock.advance(Duration::from_millis(1));
    let urgent_old = q
        .enqueue("mail", r#"{"n":2}"#, &EnqueueOptions { priority: 1, ..opts() })
        .unwrap()
        .job;
    clock.advance(Duration::from_millis(1));
    let urgent_new = q
        .enqueue("mail", r#"{"n":3}"#, &EnqueueOptions { priority: 1, ..opts() })
        .unwrap()
        .job;
    let order: Vec<u64> = (0..3)
        .map(|_| q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id)
        .collect();
    assert_eq!(order, vec![urgent_old.id, urgent_new.id, low.id]);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none());
}

#[test]
fn dequeue_only_takes_the_kinds_asked_for() {
    let (q, _) = queue("kinds");
    let report = q.enqueue("report", "{}", &opts()).unwrap().job;
    q.enqueue("mail", "{}", &opts()).unwrap();
    assert!(q.dequeue(&["other"], "w", LEASE).unwrap().is_none());
    let job = q.dequeue(&["report", "other"], "w", LEASE).unwrap().unwrap();
    assert_eq!(job.id, report.id);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 1);
    assert_ne!(job.token, 0);
}

#[test]
fn scheduled_jobs_do_not_run_early() {
    let (q, clock) = queue("scheduled");
    let later = START + 60_000;
    let job = q
        .enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                run_at: Some(later),
                priority: 0,
                ..opts()
            },
        )
        .unwrap()
        .job;
    // A less urgent job that is due runs first; the scheduled one waits.
    let due = q
        .enqueue("mail", "{}", &EnqueueOptions { priority: 9, ..opts() })
        .unwrap()
        .job;
    let running = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(running.id, due.id);
    q.complete(running.id, running.token, "").unwrap();
    clock.set(later - 1);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none(), "ran 1 ms early");
    clock.set(later);
    assert_eq!(q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id, job.id);
}

#[test]
fn a_live_unique_key_returns_the_existing_job_until_it_finishes() {
    let (q, _) = queue("unique");
    let unique = EnqueueOptions {
        unique_key: Some("sync:repo-1".into()),
        ..opts()
    };
    let first = q.enqueue("sync", r#"{"a":1}"#, &unique).unwrap();
    assert!(first.created);
    let second = q.enqueue("sync", r#"{"a":2}"#, &unique).unwrap();
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.payload, r#"{"a":1}"#);
    // The same key in another kind is another job.
    assert!(q.enqueue("other", "{}", &unique).unwrap().created);
    // Still live while running.
    let running = q.dequeue(&["sync"], "w", LEASE).unwrap().unwrap();
    assert!(!q.enqueue("sync", "{}", &unique).unwrap().created);
    q.complete(running.id, running.token, "").unwrap();
    let third = q.enqueue("sync", "{}", &unique).unwrap();
    assert!(third.created, "a finished job frees its unique key");
    assert_ne!(third.job.id, first.job.id);
    assert_eq!(q.count("sync", JobState::Queued).unwrap(), 1);
}

#[test]
fn an_always_failing_job_is_dead_after_exactly_max_attempts_with_growing_delays() {
    let (q, clock) = queue("dead");
    let id = q
        .enqueue(
            "flaky",
            "{}",
            &EnqueueOptions {
                max_attempts: 5,
                ..opts()
            },
        )
        .unwrap()
        .job
        .id;
    let mut delays = Vec::new();
    let mut attempts = 0;
    while let Some(job) = q.dequeue(&["flaky"], "w", LEASE).unwrap() {
        attempts += 1;
        let failed = q.fail(job.id, job.token, &format!("boom {attempts}"), true).unwrap();
        if failed.state == JobState::Retrying {
            let delay = failed.run_at - clock.now();
            assert!(
                q.dequeue(&["flaky"], "w", LEASE).unwrap().is_none(),
                "retried before its backoff"
            );
            delays.push(delay);
            clock.set(failed.run_at);
        }
        assert!(attempts <= 5, "ran more than max_attempts");
    }
    let job = q.get(id).unwrap();
    assert_eq!(attempts, 5);
    assert_eq!((job.state, job.attempts, job.failures), (JobState::Dead, 5, 5));
    assert_eq!(job.last_error, "boom 5");
    assert_eq!(delays.len(), 4);
    for pair in delays.windows(2) {
        assert!(pair[1] > pair[0], "delays do not grow: {delays:?}");
    }
    assert_eq!(q.count("flaky", JobState::Dead).unwrap(), 1);
}

#[test]
fn a_non_retryable_failure_is_dead_at_once() {
    let (q, _) = queue("permanent");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    let dead = q.fail(job.id, job.token, "bad address", false).unwrap();
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 1));
}

#[test]
fn an_expired_lease_is_reset_and_the_late_finish_is_refused() {
    let (q, clock) = queue("fencing");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let first = q.dequeue(&["mail"], "w1", LEASE).unwrap().unwrap();
    clock.advance(LEASE - Duration::from_millis(1));
    assert!(
        q.dequeue(&["mail"], "w2", LEASE).unwrap().is_none(),
        "taken while the lease holds"
    );
    clock.advance(Duration::from_millis(1));
    let second = q.dequeue(&["mail"], "w2", LEASE).unwrap().unwrap();
    assert_eq!(second.id, id);
    assert_ne!(second.token, first.token);
    for late in [
        q.complete(id, first.token, "").map(drop),
        q.fail(id, first.token, "x", true).map(drop),
        q.heartbeat(id, first.token, LEASE).map(drop),
        q.release(id, first.token).map(drop),
    ] {
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    }
    let done = q.complete(id, second.token, r#"{"sent":true}"#).unwrap();
    assert_eq!((done.state, done.attempts, done.resets), (JobState::Completed, 2, 1));
    assert_eq!(done.result, r#"{"sent":true}"#);
}

#[test]
fn a_heartbeat_keeps_the_lease() {
    let (q, clock) = queue("heartbeat");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w1", LEASE).unwrap().unwrap();
    for _ in 0..5 {
        clock.advance(LEASE / 2);
        q.heartbeat(job.id, job.token, LEASE).unwrap();
        assert_eq!(q.reset_expired().unwrap().requeued, 0);
    }
    assert_eq!(q.get(job.id).unwrap().state, JobState::Running);
}

#[test]
fn past_max_resets_the_job_dies_saying_its_processor_kept_dying() {
    let (q, clock) = queue("resets");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    for round in 1..=3 {
        q.dequeue(&["mail"], "crashy", LEASE).unwrap().unwrap();
        clock.advance(LEASE);
        let report = q.reset_expired().unwrap();
        if round <= 2 {
            assert_eq!((report.requeued, report.dead), (1, 0));
        } else {
            assert_eq!((report.requeued, report.dead), (0, 1));
        }
    }
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.resets), (JobState::Dead, 3));
    assert!(job.last_error.contains("processor kept dying"), "{}", job.last_error);
    assert!(q.dequeue(&["mail"], "w", LEASE).unwrap().is_none());
}

#[test]
fn cancel_fences_a_running_attempt_and_refuses_finished_jobs() {
    let (q, _) = queue("cancel");
    let id = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(q.cancel(id, "user asked").unwrap().state, JobState::Cancelled);
    assert_eq!(q.complete(id, job.token, "").unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.cancel(id, "again").unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.get(999).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn release_requeues_without_counting_a_failure() {
    let (q, _) = queue("release");
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    let released = q.release(job.id, job.token).unwrap();
    assert_eq!((released.state, released.failures), (JobState::Queued, 0));
    assert_eq!(q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap().id, job.id);
}

#[test]
fn cleanup_deletes_only_finished_jobs_past_retention() {
    let (q, clock) = queue("retention");
    let old = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    q.complete(job.id, job.token, "").unwrap();
    let pending = q
        .enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                run_at: Some(START + 10 * 86_400_000),
                ..opts()
            },
        )
        .unwrap()
        .job
        .id;
    clock.advance(Duration::from_secs(3600));
    let recent = q.enqueue("mail", "{}", &opts()).unwrap().job.id;
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(job.id, recent);
    q.cancel(recent, "no").unwrap();
    assert_eq!(q.cleanup(Duration::from_secs(1800)).unwrap(), 1);
    assert_eq!(q.get(old).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(q.get(recent).unwrap().state, JobState::Cancelled);
    assert_eq!(q.get(pending).unwrap().state, JobState::Queued);
    assert_eq!(q.count("mail", JobState::Completed).unwrap(), 0);
}

#[test]
fn counts_follow_every_move() {
    let (q, _) = queue("counts");
    for _ in 0..3 {
        q.enqueue("a", "{}", &opts()).unwrap();
    }
    q.enqueue("b", "{}", &opts()).unwrap();
    let job = q.dequeue(&["a"], "w", LEASE).unwrap().unwrap();
    q.fail(job.id, job.token, "x", false).unwrap();
    let job = q.dequeue(&["a"], "w", LEASE).unwrap().unwrap();
    let mut counts: Vec<(String, JobState, u64)> = q
        .counts()
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.state, c.count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("a".into(), JobState::Queued, 1),
            ("a".into(), JobState::Running, 1),
            ("a".into(), JobState::Dead, 1),
            ("b".into(), JobState::Queued, 1),
        ]
    );
    q.complete(job.id, job.token, "").unwrap();
    assert_eq!(q.count("a", JobState::Running).unwrap(), 0);
    assert_eq!(q.count("a", JobState::Completed).unwrap(), 1);
    assert_eq!(q.list("a", Some(JobState::Dead), 10).unwrap().len(), 1);
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let (q, _) = queue("bad-input");
    let cases = [
        q.enqueue("bad kind", "{}", &opts()),
        q.enqueue("mail", "{not json", &opts()),
        q.enqueue("mail", "{}", &EnqueueOptions { priority: 10, ..opts() }),
        q.enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                max_attempts: 0,
                ..opts()
            },
        ),
        q.enqueue(
            "mail",
            "{}",
            &EnqueueOptions {
                unique_key: Some("a\0b".into()),
                ..opts()
            },
        ),
    ];
    for case in cases {
        assert_eq!(case.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    assert!(q.counts().unwrap().is_empty());
    assert_eq!(
        q.dequeue(&[], "w", LEASE).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        q.dequeue(&["mail"], "w", Duration::ZERO).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    q.enqueue("mail", "{}", &opts()).unwrap();
    let job = q.dequeue(&["mail"], "w", LEASE).unwrap().unwrap();
    assert_eq!(
        q.complete(job.id, job.token, "{oops").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(q.get(job.id).unwrap().state, JobState::Running);
}

#[test]
fn jobs_survive_reopening_the_file() {
    let path = temp_path("reopen");
    let id = {
        let q = Queue::open(&path).unwrap();
        q.enqueue("mail", r#"{"to":"x"}"#, &opts()).unwrap().job.id
    };
    let q = Queue::open(&path).unwrap();
    let job = q.get(id).unwrap();
    assert_eq!((job.state, job.payload.as_str()), (JobState::Queued, r#"{"to":"x"}"#));
}

#[test]
fn operations_and_jobs_live_beside_a_drive_in_one_file() {
    use keel::drive::{Drive, DriveOptions};
    use keel::ops::Operations;
    let path = temp_path("beside-drive");
    let drive = Drive::open(&path, &DriveOptions::default()).unwrap();
    let q = Queue::with_env(drive.env()).unwrap();
    let ops = Operations::with_env(drive.env()).unwrap();
    let id = q.enqueue("index", r#"{"item":"x"}"#, &opts()).unwrap().job.id;
    ops.ready("x", &["index"]).unwrap();
    // Reopened through the file, not the handle: the same databases.
    let again = Queue::open(&path).unwrap();
    assert_eq!(again.get(id).unwrap().state, JobState::Queued);
    assert_eq!(Operations::open(&path).unwrap().next("index", 10).unwrap().len(), 1);
    // And the file still opens as a drive: the ops tables are not foreign.
    Drive::open(&path, &DriveOptions::default()).unwrap();
}

fn queue_with_store(name: &str) -> (Queue, Arc<LmdbStore>) {
    let clock = ManualClock::new(START);
    let store = Arc::new(LmdbStore::open(&temp_path(name)).unwrap());
    (Queue::with_parts(store.clone(), Arc::new(clock), policy()), store)
}

#[test]
fn enqueue_many_stores_every_job_in_one_transaction_in_order() {
    let (q, store) = queue_with_store("enqueue-many");
    let before = store.env().stats().writes;
    let unique = EnqueueOptions {
        unique_key: Some("once".into()),
        ..opts()
    };
    let jobs = vec![
        ("mail", r#"{"n":1}"#.to_owned(), opts()),
        ("mail", r#"{"n":2}"#.to_owned(), unique.clone()),
        ("mail", r#"{"n":3}"#.to_owned(), unique),
        ("sms", r#"{"n":4}"#.to_owned(), opts()),
    ];
    let enqueued = q.enqueue_many(&jobs).unwrap();
    assert_eq!(store.env().stats().writes - before, 1, "one transaction for the batch");
    let created: Vec<bool> = enqueued.iter().map(|e| e.created).collect();
    assert_eq!(created, [true, true, false, true]);
    assert_eq!(
        enqueued[2].job.id, enqueued[1].job.id,
        "the batch's own unique key holds"
    );
    assert!(enqueued[0].job.id < enqueued[1].job.id && enqueued[1].job.id < enqueued[3].job.id);
    assert_eq!(q.count("mail", JobState::Queued).unwrap(), 2);
    // One bad job refuses the whole batch before anything is stored.
    let bad = vec![
        ("mail", "{}".to_owned(), opts()),
        ("mail", "not json".to_owned(), opts()),
    ];
    assert_eq!(q.enqueue_many(&bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(q.count("mail", JobState::Queued).unwrap(), 2);
    assert!(q.enqueue_many::<&str, &str>(&[]).unwrap().is_empty());
}

#[test]
fn dequeue_many_claims_the_best_jobs_in_one_transaction() {
    let (q, store) = queue_with_store("dequeue-many");
    for priority in [5, 1, 9, 3] {
        q.enqueue("k", "{}", &EnqueueOptions { priority, ..opts() }).unwrap();
    }
    let before = store.env().stats().writes;
    let claimed = q.dequeue_many(&["k"], 3, "w", LEASE).unwrap();
    assert_eq!(store.env().stats().writes - before, 1);
    let priorities: Vec<u8> = claimed.iter().map(|job| job.priority).collect();
    assert_eq!(priorities, [1, 3, 5]);
    let tokens: std::collections::HashSet<u64> = claimed.iter().map(|job| job.token).collect();
    assert_eq!(tokens.len(), 3, "each claim has its own token");
    assert_eq!(q.dequeue_many(&["k"], 5, "w", LEASE).unwrap().len(), 1);
    assert!(q.dequeue_many(&["k"], 5, "w", LEASE).unwrap().is_empty());
    assert_eq!(
        q.dequeue_many(&["k"], 0, "w", LEASE).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn finish_many_stores_each_outcome_on_its_own_in_one_transaction() {
    use keel::ops::Finish;
    let (q, store) = queue_with_store("finish-many");
    for _ in 0..3 {
        q.enqueue("k", "{}", &opts()).unwrap();
    }
    let jobs = q.dequeue_many(&["k"], 3, "w", LEASE).unwrap();
    let before = store.env().stats().writes;
    let results = q
        .finish_many(&[
            (jobs[0].id, jobs[0].token, Finish::Complete { result: r#"{"ok":1}"# }),
            (jobs[1].id, jobs[1].token + 100, Finish::Complete { result: "" }),
            (
                jobs[2].id,
                jobs[2].token,
                Finish::Fail {
                    error: "boom",
                    retryable: true,
                },
            ),
        ])
        .unwrap();
    assert_eq!(store.env().stats().writes - before, 1);
    assert_eq!(results[0].as_ref().unwrap().state, JobState::Completed);
    assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(results[2].as_ref().unwrap().state, JobState::Retrying);
    assert_eq!(
        q.get(jobs[1].id).unwrap().state,
        JobState::Running,
        "the stale entry changed nothing"
    );
}

#[test]
fn a_delay_is_read_on_the_queues_clock() {
    let (q, clock) = queue("delay");
    let delayed = EnqueueOptions {
        delay: Some(Duration::from_secs(10)),
        ..opts()
    };
    let job = q.enqueue("k", "{}", &delayed).unwrap().job;
    assert_eq!(job.run_at, START + 10_000);
    assert!(q.dequeue(&["k"], "w", LEASE).unwrap().is_none());
    clock.advance(Duration::from_secs(10));
    assert!(q.dequeue(&["k"], "w", LEASE).unwrap().is_some());
    let both = EnqueueOptions {
        run_at: Some(START),
        ..delayed
    };
    assert_eq!(
        q.enqueue("k", "{}", &both).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

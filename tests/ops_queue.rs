//! The job queue in LMDB files: reopening, and sharing a file with a drive.
//! The store-level behaviours (priorities, scheduling, unique keys, fencing,
//! retries, the resetter, retention, counts) run on every store in
//! `tests/store_conformance.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel::ops::{Backoff, EnqueueOptions, JobPolicy, JobState, LmdbStore, ManualClock, Queue};
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

fn opts() -> EnqueueOptions {
    EnqueueOptions::default()
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

fn queue(name: &str) -> (Queue, ManualClock) {
    let clock = ManualClock::new(START);
    let store = Arc::new(LmdbStore::open(temp_path(name)).unwrap());
    (Queue::with_parts(store, Arc::new(clock.clone()), policy()), clock)
}

fn queue_with_store(name: &str) -> (Queue, Arc<LmdbStore>) {
    let clock = ManualClock::new(START);
    let store = Arc::new(LmdbStore::open(temp_path(name)).unwrap());
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

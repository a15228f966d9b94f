//! The job queue in LMDB files: reopening, and sharing a file with a drive.
//! The store-level behaviours (priorities, scheduling, unique keys, fencing,
//! retries, the resetter, retention, counts) run on every store in
//! `tests/store_conformance.rs`.

use std::path::PathBuf;

use keel::ops::{EnqueueOptions, JobState, Queue};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-queue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jobs.lmdb")
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

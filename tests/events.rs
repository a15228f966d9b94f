//! keel's events through the `log` facade: emitted with timings when on,
//! not even timed when off.

use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::lmdb::Durability;
use keel::ops::{EnqueueOptions, Queue};
use keel::{ErrorKind, Journal, KeyedLocks, LockMode, Outcome, PoolConfig, SyncPool, Task};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Capture(Mutex<Vec<(Level, String, String)>>);

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let event = (record.level(), record.target().to_owned(), record.args().to_string());
            self.0.lock().unwrap().push(event);
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn time_out_once(locks: &KeyedLocks<String>) {
    let held = locks.lock("k").unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let err = locks
                .lock_timeout("k", LockMode::Exclusive, Duration::from_millis(5))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        });
    });
    drop(held);
}

// One test: the logger and the max level are process-wide.
#[test]
fn a_lock_wait_is_one_timed_event_when_on_and_none_when_off() {
    log::set_logger(&CAPTURE).unwrap();
    let locks: KeyedLocks<String> = KeyedLocks::named("sources");

    log::set_max_level(LevelFilter::Debug);
    time_out_once(&locks);
    let events = std::mem::take(&mut *CAPTURE.0.lock().unwrap());
    assert_eq!(events.len(), 1, "{events:?}");
    let (level, target, text) = &events[0];
    assert_eq!((*level, target.as_str()), (Level::Debug, "keel::locks"));
    assert!(
        text.starts_with("lock wait: registry=\"sources\" mode=exclusive waited_us="),
        "{text}"
    );
    assert!(text.ends_with("outcome=timed_out"), "{text}");
    let waited: u64 = text
        .split("waited_us=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 5_000, "waited only {waited} us for a 5 ms timeout");

    log::set_max_level(LevelFilter::Info);
    time_out_once(&locks);
    assert!(CAPTURE.0.lock().unwrap().is_empty());

    every_part_logs_its_steps_when_on_and_nothing_when_off();
}

/// One step of each part that has an event: a pool task that times out, a
/// journal mutation, a drive write (one group-commit batch), a job's life.
fn exercise_every_part(dir: &Path) {
    let pool: SyncPool<String> = SyncPool::new(
        PoolConfig::new(1)
            .with_task_timeout(Duration::from_millis(20))
            .with_name("ev"),
    );
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let outcomes = pool.run_batch([Task::new("k".to_owned(), move |_: &_| {
        let _ = hold.recv();
        Ok(())
    })]);
    assert!(matches!(outcomes[..], [Outcome::TimedOut]));
    drop(release);

    let root = dir.join("tree");
    std::fs::create_dir_all(&root).unwrap();
    let journal = Journal::open(&root).unwrap();
    let mut mutation = journal.begin("add", "").unwrap();
    mutation.write("a.txt", b"hello").unwrap();
    mutation.commit().unwrap();

    let options = DriveOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..DriveOptions::default()
    };
    let drive = Drive::open(dir.join("drive.lmdb"), &options).unwrap();
    drive.create(ItemId::ROOT, &NewItem::named("docs")).unwrap();

    let queue = Queue::open(dir.join("jobs.lmdb")).unwrap();
    queue.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap();
    let job = queue.dequeue(&["mail"], "w", Duration::from_secs(60)).unwrap().unwrap();
    queue.complete(job.id, job.token, "").unwrap();
}

fn find<'a>(events: &'a [(Level, String, String)], target: &str, phrase: &str) -> &'a (Level, String, String) {
    events
        .iter()
        .find(|(_, t, text)| t == target && text.starts_with(phrase))
        .unwrap_or_else(|| panic!("no {target} event {phrase:?} in {events:#?}"))
}

fn every_part_logs_its_steps_when_on_and_nothing_when_off() {
    let dir = std::env::temp_dir().join(format!("keel-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    log::set_max_level(LevelFilter::Debug);
    exercise_every_part(&dir.join("on"));
    let events = std::mem::take(&mut *CAPTURE.0.lock().unwrap());
    let timed_out = find(
        &events,
        "keel::pool",
        "task timed out: pool=\"ev\" index=0 timeout_ms=20",
    );
    assert_eq!(timed_out.0, Level::Warn);
    assert_eq!(find(&events, "keel::pool", "task started: index=0").0, Level::Debug);
    let committed = find(&events, "keel::journal", "mutation committed: ");
    assert_eq!(committed.0, Level::Debug);
    // A new file needs no backup: its record is written once (active; the
    // commit removes it) and the file once.
    assert!(committed.2.contains(" files=2 "), "{}", committed.2);
    assert!(committed.2.contains(" elapsed_us="), "{}", committed.2);
    find(&events, "keel::journal", "snapshot: ");
    let batch = find(&events, "keel::lmdb", "write batch: ");
    assert!(
        batch.2.contains(" writes=1 ") && batch.2.contains(" commit_us="),
        "{}",
        batch.2
    );
    assert!(batch.2.ends_with("outcome=committed"), "{}", batch.2);
    let write = find(&events, "keel::drive", "write: op=create ");
    assert!(write.2.ends_with("outcome=ok"), "{}", write.2);
    find(&events, "keel::ops", "job enqueued: ");
    find(&events, "keel::ops", "job claimed: ");
    find(&events, "keel::ops", "job completed: ");
    for (level, target, text) in &events {
        assert!(target.starts_with("keel::"), "{target}: {text}");
        // Per-step events carry their duration.
        if *level == Level::Debug && !text.starts_with("lock wait") {
            assert!(text.contains("_us="), "{target}: {text}");
        }
    }

    log::set_max_level(LevelFilter::Off);
    exercise_every_part(&dir.join("off"));
    assert!(CAPTURE.0.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

//! `keel::stats::gather` lists one entry per live object of every part, with
//! the fields the operators' dashboards read, and forgets dropped objects.
//!
//! Tests in this binary run in parallel and `gather` is process-wide, so each
//! finds its own objects by a name or path no other test uses, and snapshots
//! are taken one at a time: a snapshot in progress holds every object it reads
//! until it returns, so one test's snapshot could otherwise still list what
//! another test has just dropped.

use std::path::PathBuf;
use std::time::Duration;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::journal::Journal;
use keel::lmdb::Durability;
use keel::ops::{EnqueueOptions, HandlerResult, Operations, Queue, Worker};
use keel::pool::{PoolConfig, SyncPool, Task};
use keel::KeyedLocks;
use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-stats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The entries of `part` whose `field` is `value`.
fn entries(part: &str, field: &str, value: &str) -> Vec<Value> {
    static ONE_SNAPSHOT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let gathered = {
        let _alone = ONE_SNAPSHOT_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keel::stats::gather()
    };
    let list = gathered
        .get(part)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.into_iter().filter(|entry| entry[field] == value).collect()
}

/// The one entry of `part` with `field == value`, checked to have `fields`
/// as numbers.
fn the_entry(part: &str, field: &str, value: &str, fields: &[&str]) -> Value {
    let mut found = entries(part, field, value);
    assert_eq!(found.len(), 1, "{part} {field}={value}: {found:?}");
    let entry = found.remove(0);
    for name in fields {
        assert!(entry[name].is_u64(), "{part} entry lacks the number {name:?}: {entry}");
    }
    entry
}

#[test]
fn a_lock_registry_is_listed_with_entries_holders_and_waiters() {
    let locks: KeyedLocks<String> = KeyedLocks::named("stats-locks");
    let held = locks.lock("k").unwrap();
    let entry = the_entry("locks", "name", "stats-locks", &["entries", "holders", "waiters"]);
    assert_eq!(
        (entry["entries"].as_u64(), entry["holders"].as_u64()),
        (Some(1), Some(1))
    );
    drop(held);
    drop(locks);
    assert!(entries("locks", "name", "stats-locks").is_empty());
}

#[test]
fn a_pool_is_listed_with_in_flight_peak_abandoned_and_timeouts() {
    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(2).with_name("stats-pool"));
    let outcomes = pool.run_batch((0..4).map(|n| Task::new(format!("k{n}"), move |_: &_| Ok(n))));
    assert_eq!(outcomes.len(), 4);
    let entry = the_entry(
        "pool",
        "name",
        "stats-pool",
        &["in_flight", "peak_concurrency", "abandoned", "timed_out", "completed"],
    );
    assert_eq!(entry["completed"].as_u64(), Some(4));
    assert_eq!(entry["in_flight"].as_u64(), Some(0));

    // A pool that has run a batch stays listed until its exiting worker
    // threads let go of it, which the test cannot wait for without polling:
    // the disappearance is checked on a pool that never started a thread.
    let idle: SyncPool<String> = SyncPool::new(PoolConfig::new(1).with_name("stats-pool-idle"));
    the_entry("pool", "name", "stats-pool-idle", &["in_flight"]);
    drop(idle);
    assert!(entries("pool", "name", "stats-pool-idle").is_empty());
}

#[test]
fn a_journal_is_listed_with_mutations_rollbacks_recoveries_and_quarantined() {
    let root = temp_dir("journal");
    let journal = Journal::open(&root).unwrap();
    let shown = journal.root().display().to_string();
    let mut mutation = journal.begin("add", "").unwrap();
    mutation.write("a.txt", b"hello").unwrap();
    mutation.commit().unwrap();
    journal.begin("edit", "").unwrap().rollback().unwrap();
    let entry = the_entry(
        "journal",
        "root",
        &shown,
        &[
            "mutations",
            "committed",
            "rolled_back",
            "recoveries",
            "recovered",
            "quarantined",
            "fsyncs",
            "bytes_written",
        ],
    );
    assert_eq!(entry["mutations"].as_u64(), Some(2));
    assert_eq!(entry["committed"].as_u64(), Some(1));
    assert_eq!(entry["rolled_back"].as_u64(), Some(1));
    assert!(entry["recoveries"].as_u64() >= Some(1), "open recovers: {entry}");
    drop(journal);
    assert!(entries("journal", "root", &shown).is_empty());
}

#[test]
fn a_drive_is_listed_with_its_map_readers_commits_and_batch_sizes() {
    let dir = temp_dir("drive");
    let options = DriveOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..DriveOptions::default()
    };
    let drive = Drive::open(dir.join("drive.lmdb"), &options).unwrap();
    let shown = drive.path().display().to_string();
    drive.create(ItemId::ROOT, &NewItem::named("docs")).unwrap();
    let entry = the_entry(
        "drive",
        "path",
        &shown,
        &["map_size", "used", "readers", "batches", "writes", "largest_batch"],
    );
    assert!(entry["batches"].as_u64() >= Some(2), "open and create commit: {entry}");
    assert!(entry["used"].as_u64() <= entry["map_size"].as_u64());
    drop(drive);
    assert!(entries("drive", "path", &shown).is_empty());
}

#[test]
fn a_queue_is_listed_with_counts_per_kind_and_state_and_the_oldest_ready_age() {
    let dir = temp_dir("queue");
    let queue = Queue::open(dir.join("jobs.lmdb")).unwrap();
    let shown = dir.join("jobs.lmdb").canonicalize().unwrap().display().to_string();
    let now = queue.clock().now();
    let past = EnqueueOptions {
        run_at: Some(now - 60_000),
        ..EnqueueOptions::default()
    };
    queue.enqueue("mail", "{}", &past).unwrap();
    queue.enqueue("mail", "{}", &EnqueueOptions::default()).unwrap();
    let later = EnqueueOptions {
        run_at: Some(now + 3_600_000),
        ..EnqueueOptions::default()
    };
    queue.enqueue("report", "{}", &later).unwrap();
    let entry = the_entry("queue", "store", &shown, &[]);
    assert_eq!(entry["counts"]["mail"]["queued"].as_u64(), Some(2), "{entry}");
    assert_eq!(entry["counts"]["report"]["queued"].as_u64(), Some(1), "{entry}");
    let age = entry["oldest_ready_age_ms"]["mail"].as_u64().unwrap();
    assert!(age >= 60_000, "the job ready a minute ago has waited {age} ms");
    assert!(
        entry["oldest_ready_age_ms"].get("report").is_none(),
        "a job scheduled later is not ready: {entry}"
    );
    drop(queue);
    assert!(entries("queue", "store", &shown).is_empty());
}

#[test]
fn operations_and_a_worker_are_listed_and_forgotten() {
    let dir = temp_dir("ops");
    let ops = Operations::open(dir.join("ops.lmdb")).unwrap();
    let shown = dir.join("ops.lmdb").canonicalize().unwrap().display().to_string();
    ops.ready("item-1", &["unpack"]).unwrap();
    let claims = ops.claim("unpack", 10, "w", Duration::from_secs(60)).unwrap();
    assert_eq!(claims.len(), 1);
    let entry = the_entry(
        "operations",
        "store",
        &shown,
        &["claims", "claimed", "updates", "conflicts"],
    );
    assert_eq!(
        (entry["claims"].as_u64(), entry["claimed"].as_u64()),
        (Some(1), Some(1))
    );
    drop(ops);
    assert!(entries("operations", "store", &shown).is_empty());

    let queue = Queue::open(dir.join("jobs.lmdb")).unwrap();
    let worker = Worker::builder(&queue)
        .handler("noop", 1, |_: &_| -> HandlerResult { Ok(String::new()) })
        .map_options(|options| options.name = "stats-worker".into())
        .start()
        .unwrap();
    the_entry(
        "workers",
        "worker",
        "stats-worker",
        &["running", "completed", "failed", "timed_out"],
    );
    drop(worker);
    assert!(entries("workers", "worker", "stats-worker").is_empty());
}

/// The keys of a serialized stats struct.
fn keys_of(stats: impl serde::Serialize) -> std::collections::BTreeSet<String> {
    serde_json::to_value(stats)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The keys of `entry` other than the object's identity `identity`.
fn counter_keys(entry: &Value, identity: &[&str]) -> std::collections::BTreeSet<String> {
    entry
        .as_object()
        .unwrap()
        .keys()
        .filter(|key| !identity.contains(&key.as_str()))
        .cloned()
        .collect()
}

#[test]
fn every_entry_is_its_identity_and_the_fields_of_its_parts_stats_struct() {
    let locks: KeyedLocks<String> = KeyedLocks::named("stats-keys-locks");
    let entry = the_entry("locks", "name", "stats-keys-locks", &[]);
    assert_eq!(counter_keys(&entry, &["name"]), keys_of(locks.stats()));

    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(1).with_name("stats-keys-pool"));
    let entry = the_entry("pool", "name", "stats-keys-pool", &[]);
    assert_eq!(
        counter_keys(&entry, &["name", "max_concurrency"]),
        keys_of(pool.stats())
    );

    let root = temp_dir("keys-journal");
    let journal = Journal::open(&root).unwrap();
    let entry = the_entry("journal", "root", &journal.root().display().to_string(), &[]);
    assert_eq!(counter_keys(&entry, &["root"]), keys_of(journal.stats()));

    let dir = temp_dir("keys-drive");
    let drive = Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap();
    let entry = the_entry("drive", "path", &drive.path().display().to_string(), &[]);
    assert_eq!(counter_keys(&entry, &["path"]), keys_of(drive.env().stats()));

    let queue = Queue::open(dir.join("jobs.lmdb")).unwrap();
    let worker = Worker::builder(&queue)
        .handler("noop", 1, |_: &_| -> HandlerResult { Ok(String::new()) })
        .map_options(|options| options.name = "stats-keys-worker".into())
        .start()
        .unwrap();
    let entry = the_entry("workers", "worker", "stats-keys-worker", &[]);
    assert_eq!(counter_keys(&entry, &["worker", "kinds"]), keys_of(worker.stats()));
}

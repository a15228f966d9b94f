//! Damaged operations and jobs files: every value is checksummed with its
//! key (format 2), so one flipped byte in any stored record, index entry,
//! count or counter — in its key or in its value — reads as `Corrupt`
//! naming the table: never a panic, never a wrong record. Verifying the
//! file lists it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel::lmdb::{map_err, Cursor, Durability, Env, EnvOptions, Transaction, WriteFlags};
use keel::ops::{
    EnqueueOptions, JobPolicy, JobRecord, LmdbStore, ManualClock, NextOrder, OpRecord, OpState, Operations, Queue,
};
use keel::ErrorKind;

const TABLES: [&str; 11] = [
    "keel.op.records",
    "keel.op.ready",
    "keel.op.working",
    "keel.op.lapses",
    "keel.jobs.records",
    "keel.jobs.available",
    "keel.jobs.running",
    "keel.jobs.finished",
    "keel.jobs.unique",
    "keel.jobs.counts",
    "keel.ops.meta",
];
/// Tables only calls that write read (dequeue, claim, enqueue, cleanup).
const WRITTEN_ONLY: [&str; 6] = [
    "keel.op.lapses",
    "keel.jobs.available",
    "keel.jobs.running",
    "keel.jobs.finished",
    "keel.jobs.unique",
    "keel.ops.meta",
];
const ITEMS: [&str; 3] = ["ds-1", "ds-2", "ds-3"];
const OPS: [&str; 3] = ["unpack", "index", "report"];
const KINDS: [&str; 3] = ["email", "index", "thumb"];
const START: u64 = 1_700_000_000_000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Parts {
    env: Env,
    ops: Operations,
    queue: Queue,
    clock: ManualClock,
}

fn open(path: &Path, clock: &ManualClock) -> Parts {
    let options = EnvOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..EnvOptions::default()
    };
    let env = Env::open(path, &options).unwrap();
    let store = Arc::new(LmdbStore::with_env(&env).unwrap());
    let ops = Operations::with_clock(store.clone(), Arc::new(clock.clone()));
    let queue = Queue::with_parts(store, Arc::new(clock.clone()), JobPolicy::default());
    Parts {
        env,
        ops,
        queue,
        clock: clock.clone(),
    }
}

/// A store with an entry in every table: READY, WORKING (one lapsed once),
/// OK and FAILED operations; queued, running, finished and unique jobs.
fn sample(name: &str) -> (PathBuf, Parts) {
    let path = temp_dir(name).join("ops.lmdb");
    let parts = open(&path, &ManualClock::new(START));
    let (ops, queue, clock) = (&parts.ops, &parts.queue, &parts.clock);
    let lease = Duration::from_secs(60);
    ops.ready("ds-1", &["unpack", "index"]).unwrap();
    ops.ready("ds-2", &["unpack"]).unwrap();
    ops.ready("ds-3", &["unpack"]).unwrap();
    let claims = ops.claim("unpack", 3, "w1", lease).unwrap();
    ops.update(
        "ds-1",
        "unpack",
        Some(claims[0].token),
        OpState::Ok,
        "done",
        &["report"],
    )
    .unwrap();
    ops.error("ds-2", "unpack", Some(claims[1].token), "bad").unwrap();
    ops.claim("index", 1, "w1", Duration::from_millis(10)).unwrap();
    clock.advance(Duration::from_secs(1));
    // The lapsed index claim is counted (keel.op.lapses) and claimed again.
    ops.claim("index", 1, "w2", lease).unwrap();
    let unique = EnqueueOptions {
        unique_key: Some("welcome".into()),
        ..EnqueueOptions::default()
    };
    queue.enqueue("email", r#"{"to":"a"}"#, &unique).unwrap();
    queue
        .enqueue("index", r#"{"item":1}"#, &EnqueueOptions::default())
        .unwrap();
    queue
        .enqueue("thumb", r#"{"item":2}"#, &EnqueueOptions::default())
        .unwrap();
    queue
        .enqueue("thumb", r#"{"item":3}"#, &EnqueueOptions::default())
        .unwrap();
    queue.dequeue(&["index"], "w", lease).unwrap().unwrap();
    let done = queue.dequeue(&["thumb"], "w", lease).unwrap().unwrap();
    queue.complete(done.id, done.token, "{}").unwrap();
    (path, parts)
}

/// Everything the read calls return.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    ops: Vec<OpRecord>,
    jobs: Vec<JobRecord>,
    counts: Vec<(String, String, u64)>,
}

/// Every read call, each either a result or an error.
fn read_all(parts: &Parts) -> Vec<keel::Result<Seen>> {
    let (ops, queue) = (&parts.ops, &parts.queue);
    let op_reads = ITEMS
        .iter()
        .map(|item| ops.states(item))
        .chain(OPS.iter().map(|op| ops.next(op, 100)))
        .chain(OPS.iter().map(|op| ops.next_in(op, 100, NextOrder::Item)));
    let mut seen: Vec<keel::Result<Seen>> = op_reads
        .map(|read| {
            read.map(|ops| Seen {
                ops,
                jobs: vec![],
                counts: vec![],
            })
        })
        .collect();
    let job_reads = (1..=4)
        .map(|id| queue.get(id).map(|job| vec![job]))
        .chain(KINDS.iter().map(|kind| queue.list(kind, None, 100)));
    seen.extend(job_reads.map(|read| {
        read.map(|jobs| Seen {
            ops: vec![],
            jobs,
            counts: vec![],
        })
    }));
    seen.push(queue.counts().map(|counts| {
        Seen {
            ops: vec![],
            jobs: vec![],
            counts: counts
                .into_iter()
                .map(|c| (c.kind, c.state.to_string(), c.count))
                .collect(),
        }
    }));
    seen
}

/// A stored key and value.
type Entry = (Vec<u8>, Vec<u8>);

/// Every (key, value) of `table`.
fn entries(env: &Env, table: &str) -> Vec<Entry> {
    let db = env.database(table).unwrap();
    env.read(|txn| {
        let mut cursor = txn.open_ro_cursor(db).map_err(|e| map_err("cursor", e))?;
        Ok(cursor
            .iter_start()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key.to_vec(), value.to_vec())
            })
            .collect())
    })
    .unwrap()
}

/// Replaces the entry at `key` of `table` by `(new_key, value)`.
fn replace(env: &Env, table: &str, key: &[u8], new_key: &[u8], value: &[u8]) {
    let db = env.database(table).unwrap();
    env.write(|txn| {
        txn.del(db, &key, None).map_err(|e| map_err("del", e))?;
        txn.put(db, &new_key, &value, WriteFlags::empty())
            .map_err(|e| map_err("put", e))
    })
    .unwrap();
}

/// Whether every record in `damaged` is the same as the baseline's record
/// of that identity (nothing wrong is returned; something may be missing
/// when a damaged key moved out of the range a call reads).
fn nothing_wrong(damaged: &Seen, baseline: &BTreeMap<String, String>) -> Result<(), String> {
    for op in &damaged.ops {
        let id = format!("op {} {}", op.item, op.op);
        if baseline.get(&id) != Some(&format!("{op:?}")) {
            return Err(format!("wrong {id}: {op:?}"));
        }
    }
    for job in &damaged.jobs {
        let id = format!("job {}", job.id);
        if baseline.get(&id) != Some(&format!("{job:?}")) {
            return Err(format!("wrong {id}: {job:?}"));
        }
    }
    for (kind, state, count) in &damaged.counts {
        let id = format!("count {kind} {state}");
        if baseline.get(&id) != Some(&count.to_string()) {
            return Err(format!("wrong {id}: {count}"));
        }
    }
    Ok(())
}

fn identities(seen: &[keel::Result<Seen>]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for seen in seen {
        let seen = seen.as_ref().unwrap();
        for op in &seen.ops {
            map.insert(format!("op {} {}", op.item, op.op), format!("{op:?}"));
        }
        for job in &seen.jobs {
            map.insert(format!("job {}", job.id), format!("{job:?}"));
        }
        for (kind, state, count) in &seen.counts {
            map.insert(format!("count {kind} {state}"), count.to_string());
        }
    }
    map
}

#[test]
fn every_table_has_entries_in_the_sample() {
    let (_, parts) = sample("coverage");
    for table in TABLES {
        assert!(!entries(&parts.env, table).is_empty(), "{table} is empty");
    }
}

#[test]
fn one_flipped_byte_anywhere_is_corrupt_naming_the_table_never_a_wrong_record() {
    let (_, parts) = sample("flips");
    let baseline_reads = read_all(&parts);
    let baseline = identities(&baseline_reads);
    let mut cases = 0;
    let mut detected = 0;
    for table in TABLES {
        for (key, value) in entries(&parts.env, table) {
            if table == "keel.ops.meta" && key == b"format" {
                continue; // the format marker: checked by the format layer
            }
            let flips = (0..key.len())
                .map(|at| (true, at))
                .chain((0..value.len()).map(|at| (false, at)));
            for (in_key, at) in flips {
                let (mut new_key, mut new_value) = (key.clone(), value.clone());
                match in_key {
                    true => new_key[at] ^= 0x04,
                    false => new_value[at] ^= 0x04,
                }
                replace(&parts.env, table, &key, &new_key, &new_value);
                let what = format!("{table} {} byte {at}", if in_key { "key" } else { "value" });
                let mut errors = 0;
                for read in read_all(&parts) {
                    match read {
                        Ok(seen) => nothing_wrong(&seen, &baseline).unwrap_or_else(|e| panic!("{what}: {e}")),
                        // A lookup by the key a damaged key had finds nothing.
                        Err(err) if in_key && err.kind() == ErrorKind::NotFound => {}
                        Err(err) => {
                            assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
                            assert!(err.message().contains(table), "{what}: {err}");
                            errors += 1;
                        }
                    }
                }
                cases += 1;
                detected += usize::from(errors > 0);
                // A damaged value is always read by some read call (that of
                // a table only writes read: by a write, see the last test); a
                // damaged key may move out of every range the calls read
                // (verify finds it).
                if !in_key && !WRITTEN_ONLY.contains(&table) {
                    assert!(errors > 0, "{what}: no call noticed");
                }
                replace(&parts.env, table, &new_key, &key, &value);
            }
        }
    }
    assert_eq!(read_all(&parts).len(), baseline_reads.len());
    assert!(cases > 500, "{cases} cases");
    println!("{cases} flips, {detected} noticed by a read call");
}

#[test]
fn a_flipped_record_byte_is_corrupt_on_get_and_listed_by_verify() {
    let (path, parts) = sample("verify");
    for (table, key) in [
        ("keel.jobs.records", 2u64.to_be_bytes().to_vec()),
        ("keel.op.records", b"ds-3\0unpack".to_vec()),
    ] {
        let (_, value) = entries(&parts.env, table).into_iter().find(|(k, _)| *k == key).unwrap();
        let mut damaged = value.clone();
        damaged[5] ^= 0x80;
        replace(&parts.env, table, &key, &key, &damaged);
        let err = match table {
            "keel.jobs.records" => parts.queue.get(2).map(drop).unwrap_err(),
            _ => parts.ops.states("ds-3").map(drop).unwrap_err(),
        };
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(
            err.message().contains(table) && err.message().contains("checksum"),
            "{err}"
        );
        let report = keel::drive::verify_file(&path).unwrap();
        let listed = report.problems.join("\n");
        assert!(listed.contains(table) && listed.contains("checksum"), "{listed}");
        replace(&parts.env, table, &key, &key, &value);
    }
    let report = keel::drive::verify_file(&path).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.tables["keel.jobs.records"], 4);
}

#[test]
fn calls_that_write_meet_damage_as_corrupt_naming_the_table() {
    // Each entry damaged in a fresh copy: verify lists it; dequeue, claim,
    // reset and enqueue either succeed or fail with Corrupt naming it.
    let (path, parts) = sample("writes");
    let tables: Vec<(&str, Vec<Entry>)> = TABLES.iter().map(|t| (*t, entries(&parts.env, t))).collect();
    drop(parts);
    let mut n = 0;
    for (table, entries) in &tables {
        for (key, value) in entries.iter().filter(|(key, _)| key != b"format") {
            n += 1;
            let copy = temp_dir(&format!("writes-{n}")).join("ops.lmdb");
            let env = Env::open(&path, &EnvOptions::default()).unwrap();
            env.backup(&copy).unwrap();
            let clock = ManualClock::new(START + 120_000);
            let parts = open(&copy, &clock);
            let mut damaged = value.clone();
            *damaged.last_mut().unwrap() ^= 1;
            replace(&parts.env, table, key, key, &damaged);
            let report = keel::drive::verify_file(&copy).unwrap();
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.contains(table) && p.contains("checksum")),
                "{table}: verify missed it: {:?}",
                report.problems
            );
            let lease = Duration::from_secs(60);
            let results: Vec<keel::Result<()>> = vec![
                parts.queue.dequeue(&KINDS, "w", lease).map(drop),
                parts.ops.claim("unpack", 10, "w", lease).map(drop),
                parts.ops.claim("index", 10, "w", lease).map(drop),
                parts.ops.claim("report", 10, "w", lease).map(drop),
                parts.queue.reset_expired().map(drop),
                parts.ops.reset_expired().map(drop),
                parts
                    .queue
                    .enqueue(
                        "email",
                        "{}",
                        &EnqueueOptions {
                            unique_key: Some("welcome".into()),
                            ..EnqueueOptions::default()
                        },
                    )
                    .map(drop),
                parts.queue.cleanup(Duration::ZERO).map(drop),
                parts.queue.enqueue("email", "{}", &EnqueueOptions::default()).map(drop),
            ];
            let mut noticed = false;
            for result in results {
                if let Err(err) = result {
                    assert_eq!(err.kind(), ErrorKind::Corrupt, "{table}: {err}");
                    assert!(err.message().contains(table), "{table}: {err}");
                    noticed = true;
                }
            }
            if WRITTEN_ONLY.contains(table) {
                assert!(noticed, "{table} key {key:02x?}: no call noticed");
            }
        }
    }
    assert!(n > 20, "{n} cases");
}

//! Drive calls beside raw lmdb-rkv doing the same physical work.
//!
//! The raw baseline keeps the drive's layout at the drive's size: an item
//! table, a child index and a data table of N entries each (N = the item
//! count), so neither side reads a small cache-hot table. Each raw "call"
//! does the lookups the drive call does, one transaction per call, copying
//! values out; data is compared parsed against parsed (serde_json) and text
//! against text. Durable writes compare keel's commit rate from 16 threads
//! with LMDB's bare durable commit rate (one put per commit), and print how
//! many writes each commit carried.
//!
//! Run: `cargo bench --bench drive` (release). `KEEL_BENCH_ITEMS` sets N
//! (default 2000, as in the peer's figures).
//!
//! Instruction counts: `cargo bench --bench drive -- --count OP CALLS` runs
//! only OP (`get`, `resolve`, `get_data`, `get_data_text`, `create`) CALLS
//! times after setting up, for `valgrind --tool=callgrind`; run it at two
//! call counts and divide the difference (`scripts/bench-callgrind drive`
//! does this), so setup cancels out.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use keel::drive::{Drive, DriveOptions, ItemId, NewItem, WalkOrder};
use keel::lmdb::Durability;
use lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction, WriteFlags};
use serde_json::{json, Value};
use support::{header, Rounds, Target};

const ROUNDS: usize = 5;

fn main() {
    let items: usize = std::env::var("KEEL_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("keel-bench-drive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--count") {
        let op = args.get(at + 1).expect("--count OP CALLS");
        let calls = args.get(at + 2).and_then(|c| c.parse().ok()).expect("--count OP CALLS");
        count(&dir, items, op, calls);
    } else {
        header(&format!(
            "drive: {items} items, {ROUNDS} interleaved rounds, {} cores",
            thread::available_parallelism().map_or(1, |n| n.get())
        ));
        let setup = Setup::new(&dir, items);
        reads(&setup);
        writes(&setup);
        durable(&dir, items);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The drive (no fsync) and the raw tables, both filled with N items under
/// `bench/a`, each with one data version.
struct Setup {
    drive: Drive,
    raw: Raw,
    folder: ItemId,
    ids: Vec<ItemId>,
    paths: Vec<String>,
    value: Value,
}

impl Setup {
    fn new(dir: &Path, n: usize) -> Setup {
        let options = DriveOptions {
            durability: Durability::NoSyncRisksLastCommits,
            ..DriveOptions::default()
        };
        let drive = Drive::open(dir.join("nosync.lmdb"), &options).unwrap();
        let folder = drive.make_path("bench/a").unwrap().pop().unwrap().id;
        let value = json!({"title": "a benchmark note", "tags": ["x", "y"], "count": 12345});
        let ids: Vec<ItemId> = drive
            .batch(|b| {
                (0..n)
                    .map(|i| {
                        let id = b.create(folder, &NewItem::typed(format!("item{i:05}"), "note"))?.id;
                        b.set_data(id, &value, None)?;
                        Ok(id)
                    })
                    .collect()
            })
            .unwrap();
        let record = drive.get(ids[0]).unwrap();
        let raw = Raw::open(
            &dir.join("raw-nosync.lmdb"),
            false,
            n,
            item_record_size(&record),
            &value,
        );
        let paths = (0..n).map(|i| format!("bench/a/item{i:05}")).collect();
        Setup {
            drive,
            raw,
            folder,
            ids,
            paths,
            value,
        }
    }
}

/// About the size of one stored item record (the raw values match it).
fn item_record_size(item: &keel::drive::Item) -> usize {
    70 + item.name.len() + item.kind.as_ref().map_or(0, String::len) + item.creator.len() + item.updater.len()
}

fn per_call(calls: usize, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..calls {
        op(i);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn reads(s: &Setup) {
    let n = s.ids.len();
    println!("\nreads (ns per call; the raw tables hold {n} entries each)");
    let (drive, raw) = (&s.drive, &s.raw);
    Rounds::run(
        ROUNDS,
        || per_call(n, |i| raw.read(i, &[Table::Items], Copy::Bytes)),
        || {
            per_call(n, |i| {
                std::hint::black_box(drive.get(s.ids[i]).unwrap());
            })
        },
    )
    .report("get by id", "ns", Target::None);
    let steps = [
        Table::Children,
        Table::Items,
        Table::Children,
        Table::Items,
        Table::Children,
        Table::Items,
    ];
    Rounds::run(
        ROUNDS,
        || per_call(n, |i| raw.read(i, &steps, Copy::Bytes)),
        || {
            per_call(n, |i| {
                std::hint::black_box(drive.resolve(&s.paths[i]).unwrap());
            })
        },
    )
    .report("resolve 3-step path", "ns", Target::None);
    Rounds::run(
        ROUNDS,
        || per_call(n, |i| raw.read(i, &[Table::Items, Table::Data], Copy::Parsed)),
        || {
            per_call(n, |i| {
                std::hint::black_box(drive.get_data(s.ids[i], None).unwrap());
            })
        },
    )
    .report("get current data, parsed", "ns", Target::None);
    Rounds::run(
        ROUNDS,
        || per_call(n, |i| raw.read(i, &[Table::Items, Table::Data], Copy::Text)),
        || {
            per_call(n, |i| {
                std::hint::black_box(drive.get_data_text(s.ids[i], None).unwrap());
            })
        },
    )
    .report("get current data, as text", "ns", Target::None);
    Rounds::run(
        ROUNDS,
        || raw.scan_per_item(),
        || {
            let start = Instant::now();
            let items = drive.children(s.folder, None, usize::MAX).unwrap().len();
            start.elapsed().as_nanos() as f64 / items as f64
        },
    )
    .report("list children (per item)", "ns", Target::None);
    Rounds::run(
        ROUNDS,
        || raw.scan_per_item(),
        || {
            let start = Instant::now();
            let items = drive.walk(ItemId::ROOT, WalkOrder::ChildrenFirst).unwrap().len();
            start.elapsed().as_nanos() as f64 / items as f64
        },
    )
    .report("walk whole tree (per item)", "ns", Target::None);
}

fn writes(s: &Setup) {
    let calls = s.ids.len().min(1000);
    println!("\nwrites, no fsync (ns per call; one transaction per call unless batched)");
    let mut round = 0;
    let raw = &s.raw;
    Rounds::run(
        ROUNDS,
        || raw.time_writes(calls, 4),
        || {
            round += 1;
            let folder = s
                .drive
                .create(ItemId::ROOT, &NewItem::named(format!("w{round}")))
                .unwrap();
            per_call(calls, |i| {
                s.drive
                    .create(folder.id, &NewItem::typed(format!("n{i}"), "note"))
                    .unwrap();
            })
        },
    )
    .report("create item", "ns", Target::None);
    Rounds::run(
        ROUNDS,
        || raw.time_writes(calls, 2),
        || {
            per_call(calls, |i| {
                s.drive.set_data(s.ids[i], &s.value, None).unwrap();
            })
        },
    )
    .report("set data", "ns", Target::None);
    let mut round = 0;
    Rounds::run(
        ROUNDS,
        || raw.time_batch(calls, 4),
        || {
            round += 1;
            let start = Instant::now();
            s.drive
                .batch(|b| {
                    let folder = b.create(ItemId::ROOT, &NewItem::named(format!("b{round}")))?;
                    for i in 0..calls {
                        b.create(folder.id, &NewItem::typed(format!("n{i}"), "note"))?;
                    }
                    Ok(())
                })
                .unwrap();
            start.elapsed().as_nanos() as f64 / calls as f64
        },
    )
    .report("create item, all in one batch", "ns", Target::None);
}

/// Durable writes: LMDB's bare durable commit rate (one put per commit) and
/// keel's commits from 16 writing threads, with writes per commit.
fn durable(dir: &Path, n: usize) {
    let threads = 16;
    let writes = (n / 4).max(threads * 8);
    println!(
        "\ndurable writes: {threads} threads x {} creates, each returning after fsync",
        writes / threads
    );
    let drive = Drive::open(dir.join("durable.lmdb"), &DriveOptions::default()).unwrap();
    let raw = Raw::open(&dir.join("raw-durable.lmdb"), true, 64, 120, &json!({}));
    let mut per_commit = Vec::new();
    let mut round = 0;
    Rounds::run(
        ROUNDS,
        || raw.time_writes(writes / 4, 1) / 1e6,
        || {
            round += 1;
            let folder = drive
                .create(ItemId::ROOT, &NewItem::named(format!("t{round}")))
                .unwrap();
            let before = drive.env().stats();
            let took = parallel(threads, writes, |t, i| {
                drive.create(folder.id, &NewItem::named(format!("w{t}-{i}"))).unwrap();
            });
            let after = drive.env().stats();
            let commits = (after.batches - before.batches) as f64;
            per_commit.push((after.writes - before.writes) as f64 / commits);
            took.as_nanos() as f64 / 1e6 / commits
        },
    )
    .report("keel's commits vs bare LMDB commits", "ms", Target::AtLeast(0.8));
    let spread = support::Spread::of(&per_commit);
    println!(
        "{:<40} median {:.1} ({:.1}..{:.1})  target >= 12: {}",
        format!("writes per commit (of {threads} writers)"),
        spread.median,
        spread.min,
        spread.max,
        if spread.median >= 12.0 { "met" } else { "NOT MET" }
    );
}

/// How long `total` calls split over `threads` threads took.
fn parallel(threads: usize, total: usize, op: impl Fn(usize, usize) + Sync) -> Duration {
    let per_thread = total / threads;
    let start_line = Barrier::new(threads + 1);
    thread::scope(|s| {
        for t in 0..threads {
            let (op, start_line) = (&op, &start_line);
            s.spawn(move || {
                start_line.wait();
                for i in 0..per_thread {
                    op(t, i);
                }
            });
        }
        start_line.wait();
        Instant::now()
    })
    .elapsed()
}

/// Runs one operation `calls` times after setting up, for callgrind.
fn count(dir: &Path, n: usize, op: &str, calls: usize) {
    let s = Setup::new(dir, n);
    let d = &s.drive;
    match op {
        "get" => per_call(calls, |i| drop(std::hint::black_box(d.get(s.ids[i % n])))),
        "resolve" => per_call(calls, |i| drop(std::hint::black_box(d.resolve(&s.paths[i % n])))),
        "get_data" => per_call(calls, |i| drop(std::hint::black_box(d.get_data(s.ids[i % n], None)))),
        "get_data_text" => per_call(calls, |i| {
            drop(std::hint::black_box(d.get_data_text(s.ids[i % n], None)))
        }),
        "create" => per_call(calls, |i| {
            d.create(s.folder, &NewItem::named(format!("c{i}"))).unwrap();
        }),
        "raw_get" => per_call(calls, |i| s.raw.read(i, &[Table::Items], Copy::Bytes)),
        "raw_get_data" => per_call(calls, |i| s.raw.read(i, &[Table::Items, Table::Data], Copy::Parsed)),
        other => panic!("unknown op {other:?}"),
    };
}

#[derive(Clone, Copy)]
enum Table {
    Items,
    Children,
    Data,
}

/// What a raw read does with each value: copies it, or (for the last
/// value, the data) parses it as JSON or copies it into a String.
#[derive(Clone, Copy, PartialEq)]
enum Copy {
    Bytes,
    Parsed,
    Text,
}

/// Plain lmdb-rkv with the drive's three tables at the drive's size.
struct Raw {
    env: Environment,
    items: Database,
    children: Database,
    data: Database,
    keys: Vec<[u8; 16]>,
}

impl Raw {
    fn open(path: &Path, durable: bool, n: usize, item_size: usize, data: &Value) -> Raw {
        let mut flags = EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_TLS;
        if !durable {
            flags |= EnvironmentFlags::NO_SYNC;
        }
        let env = Environment::new()
            .set_flags(flags)
            .set_map_size(1 << 30)
            .set_max_dbs(4)
            .open(path)
            .unwrap();
        let db = |name| env.create_db(Some(name), lmdb::DatabaseFlags::empty()).unwrap();
        let (items, children, data_db) = (db("items"), db("children"), db("data"));
        let keys: Vec<[u8; 16]> = (0..n as u64)
            .map(|i| {
                let mut key = [0u8; 16];
                key[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                key
            })
            .collect();
        let text = data.to_string();
        let mut txn = env.begin_rw_txn().unwrap();
        for key in &keys {
            txn.put(items, key, &vec![7u8; item_size], WriteFlags::empty()).unwrap();
            txn.put(children, key, &[1u8; 16], WriteFlags::empty()).unwrap();
            txn.put(data_db, key, &text, WriteFlags::empty()).unwrap();
        }
        txn.commit().unwrap();
        Raw {
            env,
            items,
            children,
            data: data_db,
            keys,
        }
    }

    fn key(&self, i: usize) -> &[u8; 16] {
        &self.keys[i % self.keys.len()]
    }

    fn db(&self, table: Table) -> Database {
        match table {
            Table::Items => self.items,
            Table::Children => self.children,
            Table::Data => self.data,
        }
    }

    /// One read transaction reading `tables` in turn (each at a different
    /// key, as a path's steps are), treating the last value per `copy`.
    fn read(&self, i: usize, tables: &[Table], copy: Copy) {
        let txn = self.env.begin_ro_txn().unwrap();
        for (step, table) in tables.iter().enumerate() {
            let value = txn.get(self.db(*table), self.key(i.wrapping_mul(7) + step)).unwrap();
            let last = step + 1 == tables.len();
            match copy {
                Copy::Parsed if last => drop(std::hint::black_box(serde_json::from_slice::<Value>(value).unwrap())),
                Copy::Text if last => drop(std::hint::black_box(String::from_utf8(value.to_vec()).unwrap())),
                _ => drop(std::hint::black_box(value.to_vec())),
            }
        }
    }

    /// ns per call of `calls` transactions of `puts` puts each.
    fn time_writes(&self, calls: usize, puts: usize) -> f64 {
        let value = vec![7u8; 120];
        per_call(calls, |i| {
            let mut txn = self.env.begin_rw_txn().unwrap();
            for p in 0..puts {
                txn.put(self.items, self.key(i * puts + p), &value, WriteFlags::empty())
                    .unwrap();
            }
            txn.commit().unwrap();
        })
    }

    /// ns per call of `calls` calls of `puts` puts each, in one transaction.
    fn time_batch(&self, calls: usize, puts: usize) -> f64 {
        let value = vec![7u8; 120];
        let start = Instant::now();
        let mut txn = self.env.begin_rw_txn().unwrap();
        for i in 0..calls * puts {
            txn.put(self.items, self.key(i), &value, WriteFlags::empty()).unwrap();
        }
        txn.commit().unwrap();
        start.elapsed().as_nanos() as f64 / calls as f64
    }

    /// ns per entry of what a listing physically does: a cursor scan over
    /// the N-entry index plus one item lookup per entry, copying values.
    fn scan_per_item(&self) -> f64 {
        let start = Instant::now();
        let txn = self.env.begin_ro_txn().unwrap();
        let mut cursor = txn.open_ro_cursor(self.children).unwrap();
        let mut count = 0;
        for entry in cursor.iter_start() {
            std::hint::black_box(entry.unwrap().1.to_vec());
            std::hint::black_box(txn.get(self.items, self.key(count * 7)).unwrap().to_vec());
            count += 1;
        }
        start.elapsed().as_nanos() as f64 / count as f64
    }
}

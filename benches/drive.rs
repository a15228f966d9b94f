//! Drive throughput beside raw lmdb-rkv doing the same physical work.
//!
//! Each row prints the raw baseline (lmdb-rkv gets/puts of the same key and
//! value sizes, the same number of lookups per operation, one transaction
//! per operation as the drive uses), the drive's rate, and the ratio of
//! their per-operation times (1.0 = as fast as raw LMDB). Durable writes are
//! then measured from 1 and from 16 threads: the group-commit gain.
//!
//! Run: `cargo bench --bench drive` (release build). `KEEL_BENCH_ITEMS`
//! changes the item count (default 2000, as in the peer's figures). With
//! `KEEL_BENCH_PYTHON` set to a Python that has keel installed, the same
//! operations are then run from Python (benches/drive.py) and printed beside
//! the Rust rates of this run.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use keel::drive::{Drive, DriveOptions, ItemId, NewItem, WalkOrder};
use keel::lmdb::Durability;
use lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction, WriteFlags};
use serde_json::json;

fn main() {
    let items: usize = std::env::var("KEEL_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("keel-bench-drive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "drive benchmark: {items} items, {} cores",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "operation", "raw lmdb-rkv/s", "keel/s", "ratio"
    );
    reads_and_writes(&dir, items);
    durable_writers(&dir, items);
    if let Ok(python) = std::env::var("KEEL_BENCH_PYTHON") {
        python_rows(&python, &dir, items);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every keel rate printed so far, by row name (for the Python comparison).
static KEEL_RATES: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());

/// Runs benches/drive.py and prints its rates beside this run's Rust rates.
fn python_rows(python: &str, dir: &Path, items: usize) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/drive.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(items.to_string())
        .arg(dir)
        .output()
        .expect("run the Python benchmark");
    if !output.status.success() {
        println!("\nPython rows failed: {}", String::from_utf8_lossy(&output.stderr));
        return;
    }
    let rates: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the Python benchmark prints JSON");
    println!();
    println!("the same operations from Python (keel.Drive), beside Rust keel in this run:");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "operation", "Rust keel/s", "Python/s", "ratio"
    );
    for (name, rust) in KEEL_RATES.lock().unwrap().iter() {
        if let Some(py) = rates.get(name).and_then(serde_json::Value::as_f64) {
            println!("{name:<34} {rust:>14.0} {py:>14.0} {:>7.2}x", rust / py);
        }
    }
}

/// Per-operation reads and (unsynced) writes beside the raw baseline.
fn reads_and_writes(dir: &Path, n: usize) {
    let options = DriveOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..DriveOptions::default()
    };
    let drive = Drive::open(&dir.join("nosync.lmdb"), &options).unwrap();
    let raw = Raw::open(&dir.join("raw-nosync.lmdb"), false);
    let folder = drive.make_path("bench/a/b").unwrap().pop().unwrap();

    // create: the drive writes the item, the child index, the type index and
    // the parent's count; raw does the same four puts.
    let record_size = 120;
    let mut ids = Vec::with_capacity(n);
    let raw_create = raw.time_writes(n, 4, record_size);
    let keel_create = time(n, |i| {
        ids.push(
            drive
                .create(folder.id, &NewItem::typed(format!("item{i:05}"), "note"))
                .unwrap()
                .id,
        )
    });
    row("create item (no fsync)", raw_create, keel_create);

    let value = json!({"title": "a benchmark note", "tags": ["x", "y"], "count": 12345});
    let raw_set = raw.time_writes(n, 2, value.to_string().len() + 20);
    let keel_set = time(n, |i| {
        drive.set_data(ids[i], &value, None).unwrap();
    });
    row("set data (no fsync)", raw_set, keel_set);

    let raw_get = raw.time_reads(n, 1);
    let keel_get = time(n, |i| {
        std::hint::black_box(drive.get(ids[i]).unwrap());
    });
    row("get by id", raw_get, keel_get);

    let paths: Vec<String> = (0..n).map(|i| format!("bench/a/b/item{i:05}")).collect();
    let raw_resolve = raw.time_reads(n, 10); // 5 steps x (child index + item)
    let keel_resolve = time(n, |i| {
        std::hint::black_box(drive.resolve(&paths[i]).unwrap());
    });
    row("resolve 5-step path", raw_resolve, keel_resolve);
    let short: Vec<String> = (0..n).map(|i| format!("a{}/b/c", i % 10)).collect();
    for i in 0..10 {
        drive.make_path(&format!("a{i}/b/c")).unwrap();
    }
    let raw_resolve3 = raw.time_reads(n, 6);
    let keel_resolve3 = time(n, |i| {
        std::hint::black_box(drive.resolve(&short[i]).unwrap());
    });
    row("resolve 3-step path", raw_resolve3, keel_resolve3);

    let raw_get_data = raw.time_reads(n, 2); // item + current version
    let keel_get_data = time(n, |i| {
        std::hint::black_box(drive.get_data(ids[i], None).unwrap());
    });
    row("get current data", raw_get_data, keel_get_data);
    let keel_get_text = time(n, |i| {
        std::hint::black_box(drive.get_data_text(ids[i], None).unwrap());
    });
    row("get current data as JSON text", raw_get_data, keel_get_text);

    let raw_list = raw.time_scan(n);
    let keel_list = time_items(|| drive.children(folder.id, None, usize::MAX).unwrap().len());
    row("list children (items/s)", raw_list, keel_list);
    let keel_walk = time_items(|| drive.walk(ItemId::ROOT, WalkOrder::ChildrenFirst).unwrap().len());
    row("walk whole tree (items/s)", raw_list, keel_walk);
}

/// Durable writes: 1 thread, then 16, for the drive and for raw lmdb-rkv
/// (whose writers each commit and fsync alone).
fn durable_writers(dir: &Path, n: usize) {
    let drive = Drive::open(&dir.join("durable.lmdb"), &DriveOptions::default()).unwrap();
    let raw = Arc::new(Raw::open(&dir.join("raw-durable.lmdb"), true));
    let writes = (n / 4).max(64);
    println!();
    println!("durable writes ({writes} per run), each call returns after fsync:");
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "writers", "raw lmdb-rkv/s", "keel/s", "ratio"
    );
    let mut single = 0.0;
    for threads in [1usize, 16] {
        let folder = drive
            .create(ItemId::ROOT, &NewItem::named(format!("t{threads}")))
            .unwrap();
        let raw_rate = parallel(threads, writes, |t, i| raw.put_one(&format!("{threads}/{t}/{i}"), 120));
        let drive_ref = &drive;
        let keel_rate = parallel(threads, writes, |t, i| {
            drive_ref
                .create(folder.id, &NewItem::named(format!("w{t}-{i}")))
                .unwrap();
        });
        row(&format!("{threads} thread(s) creating items"), raw_rate, keel_rate);
        if threads == 1 {
            single = keel_rate;
        } else {
            println!("  group-commit gain, 16 vs 1 writer: {:.1}x", keel_rate / single);
        }
    }
    let stats = drive.env().stats();
    println!(
        "  commits: {} batches for {} writes (largest batch {})",
        stats.batches, stats.writes, stats.largest_batch
    );
}

fn row(name: &str, raw: f64, keel: f64) {
    KEEL_RATES.lock().unwrap().push((name.to_owned(), keel));
    println!("{name:<34} {raw:>14.0} {keel:>14.0} {:>7.2}x", raw / keel);
}

fn time(n: usize, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        op(i);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Items per second of a listing call, repeated for about 0.3 s.
fn time_items(mut op: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut items = 0;
    while start.elapsed() < Duration::from_millis(300) {
        items += op();
    }
    items as f64 / start.elapsed().as_secs_f64()
}

/// Ops per second of `per_thread` calls from each of `threads` threads.
fn parallel(threads: usize, total: usize, op: impl Fn(usize, usize) + Sync) -> f64 {
    let per_thread = total / threads;
    let start_line = Barrier::new(threads);
    let start = Instant::now();
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
    });
    (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
}

/// Plain lmdb-rkv: one environment, one database, 16-byte keys.
struct Raw {
    env: Environment,
    db: Database,
    keys: Vec<[u8; 16]>,
}

impl Raw {
    fn open(path: &Path, durable: bool) -> Raw {
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
        let db = env.create_db(Some("raw"), lmdb::DatabaseFlags::empty()).unwrap();
        let keys = (0..4096u64)
            .map(|i| {
                let mut key = [0u8; 16];
                key[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                key
            })
            .collect();
        let raw = Raw { env, db, keys };
        raw.fill(120);
        raw
    }

    /// Gives every key a value, so reads always hit.
    fn fill(&self, size: usize) {
        let mut txn = self.env.begin_rw_txn().unwrap();
        for key in &self.keys {
            txn.put(self.db, key, &vec![7u8; size], WriteFlags::empty()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn key(&self, i: usize) -> &[u8; 16] {
        &self.keys[i % self.keys.len()]
    }

    /// `n` transactions of `puts` puts each of `size`-byte values.
    fn time_writes(&self, n: usize, puts: usize, size: usize) -> f64 {
        let value = vec![7u8; size];
        time(n, |i| {
            let mut txn = self.env.begin_rw_txn().unwrap();
            for p in 0..puts {
                txn.put(self.db, self.key(i * puts + p), &value, WriteFlags::empty())
                    .unwrap();
            }
            txn.commit().unwrap();
        })
    }

    /// `n` read transactions of `gets` gets each, copying the values out.
    fn time_reads(&self, n: usize, gets: usize) -> f64 {
        time(n, |i| {
            let txn = self.env.begin_ro_txn().unwrap();
            for g in 0..gets {
                let value = txn.get(self.db, self.key(i * gets + g)).unwrap();
                std::hint::black_box(value.to_vec());
            }
        })
    }

    /// Entries per second of what a listing physically does: a cursor scan
    /// over an index of `n` keys plus one lookup per entry, copying values.
    fn time_scan(&self, n: usize) -> f64 {
        time_items(|| {
            let txn = self.env.begin_ro_txn().unwrap();
            let mut cursor = txn.open_ro_cursor(self.db).unwrap();
            let mut count = 0;
            for entry in cursor.iter_start().take(n) {
                std::hint::black_box(entry.unwrap().1.to_vec());
                std::hint::black_box(txn.get(self.db, self.key(count * 7)).unwrap().to_vec());
                count += 1;
            }
            count
        })
    }

    fn put_one(&self, key: &str, size: usize) {
        let mut txn = self.env.begin_rw_txn().unwrap();
        txn.put(self.db, &key, &vec![1u8; size], WriteFlags::empty()).unwrap();
        txn.commit().unwrap();
    }
}

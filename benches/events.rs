//! The cost of keel's events on its instrumented hot paths, in one run:
//!
//! - **no logger**: no logger installed, `log`'s max level `Off` (the
//!   default) — the baseline, as close to "no logging at all" as one binary
//!   gets (the events are compiled in; `log` skips them after one atomic load);
//! - **disabled**: a logger installed, its level `Error`, below every event
//!   on these paths — what a host that logs only errors pays;
//! - **on**: level `Debug`, every event formatted into a sink — the cost a
//!   host accepts when it turns the timings on.
//!
//! Paths: a contended lock wait (two threads taking one key in turn), a pool
//! batch of empty keyed tasks, and group-committed writes to a no-sync drive
//! from four threads (one drive event and one LMDB batch event per commit).
//! A logger cannot be uninstalled, so each mode runs in child processes of
//! this benchmark (the "no logger" ones never install one), alternated so
//! drift in the machine's load hits every mode alike. The ns/op columns are
//! each mode's best run; the ratios are the median, over rounds, of a logger
//! child's figure over the no-logger child's run just before it. Target:
//! disabled within noise (≤ 1.05x) of no logger.
//!
//! Figures are CPU time per operation (every thread of the process, from
//! `getrusage`), not wall time: on a shared machine a thread waiting for a
//! core would otherwise dwarf the nanoseconds an event check costs.
//!
//! Run: `cargo bench --bench events` (about 20 s; it prints its run time).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::lmdb::Durability;
use keel::{KeyedLocks, PoolConfig, SyncPool, Task};
use log::{LevelFilter, Log, Metadata, Record};

/// Child processes per mode (6 pairs: about 25 s on a busy 2-core machine).
const ROUNDS: usize = 6;
/// Runs of each workload per mode in one child.
const RUNS_PER_CHILD: usize = 3;
const LOCK_OPS_PER_THREAD: usize = 5_000;
/// Steps of busy work while a lock is held.
const HOLD_STEPS: u32 = 200;
const POOL_TASKS: usize = 500;
const POOL_BATCHES: usize = 40;
const WRITERS: usize = 4;
const WRITES_PER_WRITER: usize = 1_000;

/// Formats every event (the work a real backend does first) and drops it.
struct Sink;

impl Log for Sink {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            thread_local! {
                static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            }
            TEXT.with(|text| {
                let mut text = text.borrow_mut();
                text.clear();
                let _ = write!(text, "{} {}: {}", record.level(), record.target(), record.args());
                black_box(text.len());
            });
            EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

static SINK: Sink = Sink;
/// Events the sink has formatted, to show each path really emits events.
static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One workload: runs its operations once, returns how many it ran.
type Workload = Box<dyn Fn() -> usize>;

/// CPU time used so far by every thread of this process, living or ended.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Keeps this thread on one CPU (of those there are), so the two threads
/// of the lock workload run side by side in every process rather than
/// sometimes sharing a core: their hand-offs cost wildly different amounts
/// of time in the two cases.
fn pin_to_cpu(cpu: usize) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: the set is a plain bit mask built here; 0 means this thread.
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Two threads take one key in turn: each holds it until the other is
/// trying for it, and after releasing it waits until the other has it before
/// trying again, so every acquisition but the first goes through the wait
/// path (KeyedLocks lets a releasing thread barge back in otherwise).
fn contended_lock_wait() -> Workload {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let locks: Arc<KeyedLocks<String>> = Arc::new(KeyedLocks::named("bench"));
    Box::new(move || {
        let trying = [AtomicBool::new(false), AtomicBool::new(false)];
        let done = [AtomicBool::new(false), AtomicBool::new(false)];
        let acquisitions = AtomicU64::new(0);
        thread::scope(|s| {
            for me in 0..2 {
                let (locks, trying, done, acquisitions) = (&locks, &trying, &done, &acquisitions);
                s.spawn(move || {
                    pin_to_cpu(me);
                    let other = 1 - me;
                    let other_gone = || done[other].load(Ordering::SeqCst);
                    for _ in 0..LOCK_OPS_PER_THREAD {
                        trying[me].store(true, Ordering::SeqCst);
                        let guard = locks.lock("k").unwrap();
                        trying[me].store(false, Ordering::SeqCst);
                        let mine = acquisitions.fetch_add(1, Ordering::SeqCst) + 1;
                        while !trying[other].load(Ordering::SeqCst) && !other_gone() {
                            std::hint::spin_loop();
                        }
                        // A moment for the other thread to find the key taken.
                        for step in 0..HOLD_STEPS {
                            black_box(step);
                        }
                        drop(guard);
                        while acquisitions.load(Ordering::SeqCst) == mine && !other_gone() {
                            std::hint::spin_loop();
                        }
                    }
                    done[me].store(true, Ordering::SeqCst);
                });
            }
        });
        2 * LOCK_OPS_PER_THREAD
    })
}

fn pool_batch_of_empty_tasks() -> Workload {
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(2).with_name("bench"));
    Box::new(move || {
        for _ in 0..POOL_BATCHES {
            let outcomes = pool.run_batch((0..POOL_TASKS).map(|key| Task::new(key, |_: &_| Ok(()))));
            black_box(outcomes);
        }
        POOL_BATCHES * POOL_TASKS
    })
}

fn group_committed_drive_writes(dir: &Path) -> Workload {
    let options = DriveOptions {
        durability: Durability::NoSyncRisksLastCommits,
        ..DriveOptions::default()
    };
    let drive = Drive::open(dir.join("drive.lmdb"), &options).unwrap();
    let folders: Vec<ItemId> = (0..WRITERS)
        .map(|n| drive.create(ItemId::ROOT, &NewItem::named(format!("w{n}"))).unwrap().id)
        .collect();
    Box::new(move || {
        let start = Arc::new(Barrier::new(WRITERS));
        thread::scope(|s| {
            for &folder in &folders {
                let (drive, start) = (&drive, start.clone());
                s.spawn(move || {
                    start.wait();
                    // Create and delete: two commits that leave the drive as
                    // it was, so every run does the same work.
                    for i in 0..WRITES_PER_WRITER / 2 {
                        let item = drive.create(folder, &NewItem::named(format!("i{i}"))).unwrap();
                        drive.delete(item.id).unwrap();
                    }
                });
            }
        });
        WRITERS * (WRITES_PER_WRITER / 2) * 2
    })
}

/// CPU nanoseconds per operation of one run.
fn ns_per_op(workload: &Workload) -> f64 {
    let before = cpu_time();
    let ops = workload();
    (cpu_time() - before).as_nanos() as f64 / ops as f64
}

/// How many operations one run of workload `index` counts.
fn workload_ops(index: usize) -> usize {
    [
        2 * LOCK_OPS_PER_THREAD,
        POOL_BATCHES * POOL_TASKS,
        WRITERS * (WRITES_PER_WRITER / 2) * 2,
    ][index]
}

const CHILD_ENV: &str = "KEEL_BENCH_EVENTS_CHILD";
const NAMES: [&str; 3] = [
    "contended lock wait (2 threads)",
    "pool batch of 500 empty keyed tasks",
    "no-sync drive writes (4 threads)",
];

/// A child process: measures every workload in its modes and prints
/// `mode index ns_per_op` lines. `no_logger` never installs a logger;
/// `logger` installs one and measures at Error, then at Debug.
fn child(mode: &str) {
    let dir = std::env::temp_dir().join(format!("keel-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let workloads = [
        contended_lock_wait(),
        pool_batch_of_empty_tasks(),
        group_committed_drive_writes(&dir),
    ];
    // The logger child also measures `off` (logger installed, max level
    // Off: the same code path as no logger), interleaved run by run with
    // `disabled` and `on`, for a same-process comparison.
    let levels: &[(&str, LevelFilter)] = match mode {
        "no_logger" => &[("no_logger", LevelFilter::Off)],
        _ => {
            log::set_logger(&SINK).expect("no other logger in this benchmark");
            &[
                ("off", LevelFilter::Off),
                ("disabled", LevelFilter::Error),
                ("on", LevelFilter::Debug),
            ]
        }
    };
    for (index, workload) in workloads.iter().enumerate() {
        ns_per_op(workload); // warm up: threads, pages, caches
        let mut best = vec![f64::INFINITY; levels.len()];
        let mut events = vec![0u64; levels.len()];
        for _ in 0..RUNS_PER_CHILD {
            for (at, &(name, level)) in levels.iter().enumerate() {
                if name != "no_logger" {
                    log::set_max_level(level);
                }
                assert_eq!(log::max_level(), level);
                let events_before = EVENTS.load(std::sync::atomic::Ordering::Relaxed);
                best[at] = best[at].min(ns_per_op(workload));
                events[at] += EVENTS.load(std::sync::atomic::Ordering::Relaxed) - events_before;
            }
        }
        for (at, &(name, _)) in levels.iter().enumerate() {
            println!("{name} {index} {}", best[at]);
            let per_op = events[at] as f64 / (RUNS_PER_CHILD * workload_ops(index)) as f64;
            println!("events_{name} {index} {per_op}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One child's figures: `(mode, workload index)` → its best ns per op.
type Figures = std::collections::HashMap<(String, usize), f64>;

/// Runs one child and returns its figures.
fn run_child(mode: &str) -> Figures {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let output = std::process::Command::new(exe)
        .env(CHILD_ENV, mode)
        .output()
        .expect("start a benchmark child");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut figures = Figures::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, index, ns] = fields[..] else { continue };
        if let (Ok(index), Ok(ns)) = (index.parse::<usize>(), ns.parse::<f64>()) {
            figures.insert((name.to_owned(), index), ns);
        }
    }
    figures
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return child(&mode);
    }
    // A logger cannot be uninstalled, so the modes run in separate processes,
    // alternated: each round is a pair of children run back to back, and the
    // ratios are the median of the rounds' ratios, so drift in the machine's
    // load (other processes come and go) cancels out.
    let started = std::time::Instant::now();
    let rounds: Vec<(Figures, Figures)> = (0..ROUNDS)
        .map(|_| (run_child("no_logger"), run_child("logger")))
        .collect();
    let get = |figures: &Figures, mode: &str, index: usize| figures.get(&(mode.to_owned(), index)).copied();
    let best = |mode: &str, index: usize, of_logger: bool| {
        rounds
            .iter()
            .filter_map(|(plain, logged)| get(if of_logger { logged } else { plain }, mode, index))
            .fold(f64::INFINITY, f64::min)
    };
    // A logger child's `mode` over `base`: the no-logger child run just
    // before it, or (`base == "off"`) its own interleaved `off` runs.
    let ratio = |mode: &str, base: &str, index: usize| {
        median(
            rounds
                .iter()
                .filter_map(|(plain, logged)| {
                    let base = if base == "off" {
                        get(logged, "off", index)?
                    } else {
                        get(plain, base, index)?
                    };
                    Some(get(logged, mode, index)? / base)
                })
                .collect(),
        )
    };
    println!(
        "events benchmark: {ROUNDS} rounds of two child processes (no logger; logger at Error, then Debug), \
         best of {RUNS_PER_CHILD} runs each; {} cores",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<38} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "path (CPU ns per op, best run)", "no logger", "disabled", "ratio", "ratio/off", "on", "ratio", "events/op"
    );
    for (index, name) in NAMES.iter().enumerate() {
        // The events per op seen when on (the smallest count of any child).
        let events = best("events_on", index, true);
        println!(
            "{name:<38} {:>10.1} {:>10.1} {:>9.3}x {:>9.3}x {:>10.1} {:>9.3}x {events:>9.2}",
            best("no_logger", index, false),
            best("disabled", index, true),
            ratio("disabled", "no_logger", index),
            ratio("disabled", "off", index),
            best("on", index, true),
            ratio("on", "no_logger", index),
        );
    }
    println!(
        "ratio: median over rounds of the logger child's figure over the no-logger child run just before it;\n\
         ratio/off: the same against the logger child's own runs at level Off, interleaved run by run"
    );
    println!("target: disabled within noise (<= 1.05x) of no logger");
    println!("run time: {:.1} s", started.elapsed().as_secs_f64());
}

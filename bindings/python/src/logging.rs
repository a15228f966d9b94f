//! keel's events in Python's `logging`, under the loggers `keel.locks`,
//! `keel.pool`, ... (the Rust target with `::` read as `.`).
//!
//! The host only configures `logging`. The levels of keel's loggers are read
//! when a keel call enters from Python (it holds the GIL then anyway), at most
//! once a second, so a level that is off costs no GIL traffic at all: keel's
//! threads see it in an atomic and neither time nor format the event. Events
//! that are on are queued and handed to `logging` by one thread, so a keel
//! thread never waits for the GIL while holding one of keel's locks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use keel::events::TARGETS;
use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

use crate::run::blocking;

const QUEUE_CAPACITY: usize = 10_000;
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The longest `flush_logs` waits for the log thread (a handler stuck in
/// `logging` must not hang its caller forever).
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// The most verbose level enabled per target of `TARGETS` (a LevelFilter as usize).
static LEVELS: [AtomicUsize; TARGETS.len()] = [const { AtomicUsize::new(0) }; TARGETS.len()];
/// Milliseconds since `epoch()` of the last refresh.
static REFRESHED_MS: AtomicU64 = AtomicU64::new(0);
static QUEUE: OnceLock<Sender<Message>> = OnceLock::new();
/// The log thread, and the process that started it (a forked child has
/// the queue but not the thread).
static EMITTER: OnceLock<(std::thread::ThreadId, u32)> = OnceLock::new();
static LOGGER: PythonLogger = PythonLogger;

enum Message {
    Event { logger: String, level: Level, text: String },
    Flush(Sender<()>),
}

struct PythonLogger;

fn target_index(target: &str) -> Option<usize> {
    TARGETS.iter().position(|known| target.starts_with(known))
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn python_level(level: Level) -> u32 {
    match level {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
        Level::Trace => 5,
    }
}

fn filter_for_python_level(effective: u32) -> LevelFilter {
    match effective {
        0..=5 => LevelFilter::Trace,
        6..=10 => LevelFilter::Debug,
        11..=20 => LevelFilter::Info,
        21..=30 => LevelFilter::Warn,
        31..=40 => LevelFilter::Error,
        _ => LevelFilter::Off,
    }
}

impl Log for PythonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        target_index(metadata.target())
            .is_some_and(|index| metadata.level() as usize <= LEVELS[index].load(Ordering::Relaxed))
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(queue) = QUEUE.get() {
            // A full queue drops the event: logging must never block keel.
            let _ = queue.try_send(Message::Event {
                logger: record.target().replace("::", "."),
                level: record.level(),
                text: record.args().to_string(),
            });
        }
    }

    fn flush(&self) {}
}

/// Hands queued events to `logging`, attaching to the interpreter per batch.
fn emit_events(queue: Receiver<Message>) {
    while let Ok(first) = queue.recv() {
        let batch: Vec<Message> = std::iter::once(first).chain(queue.try_iter()).collect();
        let mut flushed = Vec::new();
        // None: the interpreter is shutting down; the events are dropped.
        let _ = crate::run::attached(|py| {
            let Ok(logging) = py.import("logging") else { return };
            for message in batch {
                match message {
                    Message::Event { logger, level, text } => {
                        let _ = logging
                            .call_method1("getLogger", (logger,))
                            .and_then(|logger| logger.call_method1("log", (python_level(level), text)));
                    }
                    Message::Flush(done) => flushed.push(done),
                }
            }
        });
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Installs the bridge (once per process) and reads the levels now.
pub fn install(py: Python<'_>) -> PyResult<()> {
    if log::set_logger(&LOGGER).is_ok() {
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let _ = QUEUE.set(sender);
        let thread = std::thread::Builder::new()
            .name("keel-log".into())
            .spawn(move || emit_events(receiver))
            .map_err(|err| pyo3::exceptions::PyOSError::new_err(err.to_string()))?;
        let _ = EMITTER.set((thread.thread().id(), std::process::id()));
    }
    refresh_levels(py)
}

/// Re-reads the levels if the last read is older than a second.
pub fn refresh_if_stale(py: Python<'_>) {
    let now = epoch().elapsed().as_millis() as u64;
    let last = REFRESHED_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= REFRESH_EVERY.as_millis() as u64
        && REFRESHED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let _ = refresh_levels(py);
    }
}

fn refresh_levels(py: Python<'_>) -> PyResult<()> {
    let logging = py.import("logging")?;
    let mut most_verbose = LevelFilter::Off;
    for (index, target) in TARGETS.iter().enumerate() {
        let logger = logging.call_method1("getLogger", (target.replace("::", "."),))?;
        let effective: u32 = logger.call_method0("getEffectiveLevel")?.extract()?;
        let filter = filter_for_python_level(effective);
        LEVELS[index].store(filter as usize, Ordering::Relaxed);
        most_verbose = most_verbose.max(filter);
    }
    log::set_max_level(most_verbose);
    REFRESHED_MS.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    Ok(())
}

/// Re-reads the levels of keel's loggers now (they are otherwise re-read at
/// most once a second), and waits until every event so far has reached
/// `logging` — at most [`FLUSH_WAIT`]. Called on the log thread itself (from
/// a logging handler) or in a forked child (no log thread), it only re-reads
/// the levels: waiting would never end.
#[pyfunction]
pub fn flush_logs(py: Python<'_>) -> PyResult<()> {
    refresh_levels(py)?;
    let Some(queue) = QUEUE.get() else { return Ok(()) };
    match EMITTER.get() {
        Some((thread, pid)) if *thread != std::thread::current().id() && *pid == std::process::id() => {}
        _ => return Ok(()),
    }
    let (done, wait) = crossbeam_channel::bounded(1);
    blocking(py, || {
        if queue.send_timeout(Message::Flush(done), FLUSH_WAIT).is_ok() {
            let _ = wait.recv_timeout(FLUSH_WAIT);
        }
        Ok(())
    })
}

//! keel's events in Python's `logging`, under the loggers `keel.locks`,
//! `keel.pool`, ... (the Rust target with `::` read as `.`).
//!
//! The host only configures `logging`. The levels of keel's loggers are read
//! at import and again whenever `logging` changes a level (the package hooks
//! the logger manager's cache reset, which every `setLevel`, `disable` and
//! configuration runs), with a once-a-second re-read on keel calls as a
//! fallback for levels assigned behind `logging`'s back. A level that is off
//! costs no GIL traffic at all: keel's threads see it in an atomic and
//! neither time nor format the event. Events that are on are queued and
//! handed to `logging` by one thread, so a keel thread never waits for the
//! GIL while holding one of keel's locks; the package flushes the queue at
//! interpreter exit.
//!
//! A record carries the event's own time, Rust file, line and module, and
//! its `key=value` fields parsed into `record.keel_fields` (with the event's
//! name in `record.keel_event`), so structured formatters can use them.

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
    Event(Box<Event>),
    Flush(Sender<()>),
}

/// One event, as the Rust side saw it.
struct Event {
    logger: String,
    level: Level,
    text: String,
    /// Seconds since the Unix epoch when the event happened.
    time: f64,
    file: Option<String>,
    line: Option<u32>,
    module: Option<String>,
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
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64());
            let _ = queue.try_send(Message::Event(Box::new(Event {
                logger: record.target().replace("::", "."),
                level: record.level(),
                text: record.args().to_string(),
                time,
                file: record.file().map(str::to_owned),
                line: record.line(),
                module: record.module_path().map(str::to_owned),
            })));
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
                    Message::Event(event) => {
                        let _ = hand_over(&logging, &event);
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

/// Makes a `logging.LogRecord` for `event` (its time, file, line and
/// fields) and hands it to its logger's handlers, if the logger is on.
fn hand_over(logging: &Bound<'_, PyModule>, event: &Event) -> PyResult<()> {
    let py = logging.py();
    let logger = logging.call_method1("getLogger", (&event.logger,))?;
    let level = python_level(event.level);
    if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
        return Ok(());
    }
    let (name, fields) = parse_event(&event.text);
    let extra = pyo3::types::PyDict::new(py);
    extra.set_item("keel_event", name)?;
    let fields_dict = pyo3::types::PyDict::new(py);
    for (key, value) in fields {
        fields_dict.set_item(key, field_value(py, value)?)?;
    }
    extra.set_item("keel_fields", fields_dict)?;
    let args = pyo3::types::PyTuple::empty(py);
    let record = logger.call_method1(
        "makeRecord",
        (
            &event.logger,
            level,
            event.file.as_deref().unwrap_or("(keel)"),
            event.line.unwrap_or(0),
            &event.text,
            args,
            py.None(),
            event.module.as_deref(),
            extra,
        ),
    )?;
    // The event's own time, not the moment this thread got to it.
    record.setattr("created", event.time)?;
    record.setattr("msecs", (event.time.fract() * 1000.0).floor())?;
    let start: f64 = logging.getattr("_startTime")?.extract().unwrap_or(event.time);
    record.setattr("relativeCreated", (event.time - start) * 1000.0)?;
    logger.call_method1("handle", (record,))?;
    Ok(())
}

/// An event's text, `what happened: key=value key="text" ...`, as its name
/// and its fields (values still in their written form).
fn parse_event(text: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((name, rest)) = text.split_once(": ") else {
        return (text, Vec::new());
    };
    let mut fields = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = &rest[..eq];
        if key.is_empty() || key.contains(' ') {
            break;
        }
        let value_and_more = &rest[eq + 1..];
        let end = value_end(value_and_more);
        fields.push((key, &value_and_more[..end]));
        rest = value_and_more[end..].trim_start();
    }
    (name, fields)
}

/// Where a written value ends: a quoted string at its closing quote, a
/// bracketed list at its closing bracket, anything else at a space.
fn value_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (open, close) = match bytes.first() {
        Some(b'"') => (b'"', b'"'),
        Some(b'[') => (b'[', b']'),
        _ => return text.find(' ').unwrap_or(text.len()),
    };
    let mut depth = 0usize;
    let mut escaped = false;
    for (index, &byte) in bytes.iter().enumerate().skip(1) {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' if open == b'[' => {}
            _ if byte == close && depth == 0 => return index + 1,
            _ if byte == open && open == b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    text.len()
}

/// A field's written value as a Python value: a number, true/false, a JSON
/// string or list, or else the text as written.
fn field_value<'py>(py: Python<'py>, written: &str) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(number) = written.parse::<i64>() {
        return Ok(number.into_pyobject(py)?.into_any());
    }
    if let Ok(number) = written.parse::<f64>() {
        return Ok(number.into_pyobject(py)?.into_any());
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(written) {
        if value.is_string() || value.is_array() || value.is_boolean() {
            return crate::json::to_py(py, &value);
        }
    }
    Ok(written.into_pyobject(py)?.into_any())
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

/// Re-reads the levels of keel's loggers now; the package calls it whenever
/// `logging` changes a level.
#[pyfunction]
pub fn _refresh_log_levels(py: Python<'_>) -> PyResult<()> {
    refresh_levels(py)
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

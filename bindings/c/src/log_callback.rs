//! keel's events, handed to a C callback.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::io::Write;
use std::sync::OnceLock;

use keel_core::Error;
use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

use crate::callback::Userdata;
use crate::ffi;
use crate::status::keel_status;

/// How much keel logs, from nothing to everything.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keel_log_level {
    /// Nothing.
    KEEL_LOG_OFF = 0,
    /// Failures keel could not handle.
    KEEL_LOG_ERROR = 1,
    /// Trouble keel handled: a task timed out, a journal was quarantined.
    KEEL_LOG_WARN = 2,
    /// Rare, notable steps: recovery ran, a map grew.
    KEEL_LOG_INFO = 3,
    /// One event per meaningful step, with its duration.
    KEEL_LOG_DEBUG = 4,
    /// Everything.
    KEEL_LOG_TRACE = 5,
}

/// Receives one event. `target` is the part (`"keel::pool"`), `message` the
/// event with its fields (`"task finished: key=... elapsed_us=..."`); both are
/// NUL-terminated and their lengths exclude the NUL; both are valid only
/// during the call.
///
/// Called on whichever thread the event happens: the caller's thread or one
/// of keel's own (pool workers, group-commit leaders), possibly on several
/// threads at once, so it must be thread-safe. It may call keel functions;
/// events raised inside the callback itself are dropped rather than nested.
pub type keel_log_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: keel_log_level,
        target: *const c_char,
        target_len: usize,
        message: *const c_char,
        message_len: usize,
    ),
>;

struct Callback {
    function: unsafe extern "C" fn(*mut c_void, keel_log_level, *const c_char, usize, *const c_char, usize),
    userdata: Userdata,
}

static CALLBACK: RwLock<Option<Callback>> = RwLock::new(None);
static LOGGER: CallbackLogger = CallbackLogger;

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    static TEXT: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

struct CallbackLogger;

impl Log for CallbackLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || IN_CALLBACK.with(Cell::get) {
            return;
        }
        let callback = CALLBACK.read();
        let Some(callback) = callback.as_ref() else { return };
        TEXT.with(|text| {
            let (target, message) = &mut *text.borrow_mut();
            fill_c_string(target, format_args!("{}", record.target()));
            fill_c_string(message, *record.args());
            IN_CALLBACK.with(|flag| flag.set(true));
            // SAFETY: the function and userdata were given by C to
            // keel_set_log_callback, which documents this call.
            unsafe {
                (callback.function)(
                    callback.userdata.as_ptr(),
                    level_of(record.level()),
                    target.as_ptr().cast(),
                    target.len() - 1,
                    message.as_ptr().cast(),
                    message.len() - 1,
                );
            }
            IN_CALLBACK.with(|flag| flag.set(false));
        });
    }

    fn flush(&self) {}
}

/// Writes `args` and a NUL into `buffer`, reusing its allocation.
fn fill_c_string(buffer: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    buffer.clear();
    let _ = buffer.write_fmt(args);
    buffer.retain(|&byte| byte != 0);
    buffer.push(0);
}

fn level_of(level: log::Level) -> keel_log_level {
    match level {
        log::Level::Error => keel_log_level::KEEL_LOG_ERROR,
        log::Level::Warn => keel_log_level::KEEL_LOG_WARN,
        log::Level::Info => keel_log_level::KEEL_LOG_INFO,
        log::Level::Debug => keel_log_level::KEEL_LOG_DEBUG,
        log::Level::Trace => keel_log_level::KEEL_LOG_TRACE,
    }
}

fn filter_of(level: u32) -> keel_core::Result<LevelFilter> {
    Ok(match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        other => {
            return Err(Error::invalid_argument(format!(
                "level {other} is not a keel_log_level"
            )))
        }
    })
}

/// Sends keel's events up to `max_level` (a keel_log_level) to `callback`
/// with `userdata`; a NULL callback or KEEL_LOG_OFF turns logging off. When
/// off, keel neither formats nor times anything.
///
/// Returns KEEL_CONFLICT if the process already has another Rust logger
/// (libkeel linked into a Rust program that set its own). Replacing the
/// callback is safe at any time; the old one is not called after this returns.
/// Calling it from inside the callback returns KEEL_WOULD_DEADLOCK.
#[no_mangle]
pub unsafe extern "C" fn keel_set_log_callback(
    max_level: u32,
    callback: keel_log_fn,
    userdata: *mut c_void,
) -> keel_status {
    ffi::call(|| {
        let filter = filter_of(max_level)?;
        if IN_CALLBACK.with(Cell::get) {
            // The running callback holds the read side of CALLBACK.
            return Err(Error::would_deadlock(
                "keel_set_log_callback called from inside the log callback",
            ));
        }
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        if !*INSTALLED.get_or_init(|| log::set_logger(&LOGGER).is_ok()) {
            return Err(Error::conflict("another logger is installed in this process"));
        }
        let mut slot = CALLBACK.write();
        *slot = callback.map(|function| Callback {
            function,
            userdata: Userdata::new(userdata),
        });
        log::set_max_level(if slot.is_some() { filter } else { LevelFilter::Off });
        Ok(())
    })
}

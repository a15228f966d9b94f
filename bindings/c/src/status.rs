//! `keel_status`, the thread's last error, and the test-only panic entry point.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

use keel_core::{Error, ErrorKind};

use crate::ffi;

/// The result of every fallible keel call. The numbers are stable: they are
/// keel's error kinds, and 0 is success.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keel_status {
    /// Success.
    KEEL_OK = 0,
    /// A malformed argument: NULL where a value is required, invalid UTF-8,
    /// a bad name or path, an out-of-range option.
    KEEL_INVALID_ARGUMENT = 1,
    /// The thing asked for does not exist.
    KEEL_NOT_FOUND = 2,
    /// The thing to create exists already.
    KEEL_ALREADY_EXISTS = 3,
    /// A version, state or token did not match.
    KEEL_CONFLICT = 4,
    /// Held by someone else, and the call would not wait.
    KEEL_BUSY = 5,
    /// A wait or a task ran past its deadline.
    KEEL_TIMEOUT = 6,
    /// Cancelled before it finished.
    KEEL_CANCELLED = 7,
    /// The caller lacks the permission the call needs.
    KEEL_PERMISSION_DENIED = 8,
    /// Stored data is malformed or truncated.
    KEEL_CORRUPT = 9,
    /// The disk or the storage map is full.
    KEEL_STORAGE_FULL = 10,
    /// Another operating-system I/O failure.
    KEEL_IO = 11,
    /// The call would wait forever on something this thread holds.
    KEEL_WOULD_DEADLOCK = 12,
    /// The object was closed or shut down.
    KEEL_CLOSED = 13,
    /// keel (or a callback it ran) panicked; the panic was contained.
    KEEL_PANIC = 14,
    /// Data of a newer or unknown format than this build reads.
    KEEL_UNSUPPORTED = 15,
}

impl keel_status {
    /// The status of an error kind: the same stable number.
    pub(crate) fn of(kind: ErrorKind) -> keel_status {
        use keel_status::*;
        match kind {
            ErrorKind::InvalidArgument => KEEL_INVALID_ARGUMENT,
            ErrorKind::NotFound => KEEL_NOT_FOUND,
            ErrorKind::AlreadyExists => KEEL_ALREADY_EXISTS,
            ErrorKind::Conflict => KEEL_CONFLICT,
            ErrorKind::Busy => KEEL_BUSY,
            ErrorKind::Timeout => KEEL_TIMEOUT,
            ErrorKind::Cancelled => KEEL_CANCELLED,
            ErrorKind::PermissionDenied => KEEL_PERMISSION_DENIED,
            ErrorKind::Corrupt => KEEL_CORRUPT,
            ErrorKind::StorageFull => KEEL_STORAGE_FULL,
            ErrorKind::Io => KEEL_IO,
            ErrorKind::WouldDeadlock => KEEL_WOULD_DEADLOCK,
            ErrorKind::Closed => KEEL_CLOSED,
            ErrorKind::Panic => KEEL_PANIC,
            ErrorKind::Unsupported => KEEL_UNSUPPORTED,
            // A kind added to the core before it is added here.
            _ => KEEL_IO,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `err` as this thread's last error.
pub(crate) fn set_last_error(err: &Error) {
    let text = format!("{}: {}", err.kind(), err.message());
    // Interior NULs cannot cross as a C string; show them instead of truncating.
    let text = CString::new(text.replace('\0', "\\0")).expect("NULs were replaced");
    LAST_ERROR.with(|last| *last.borrow_mut() = text);
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|last| {
        let mut last = last.borrow_mut();
        if !last.as_bytes().is_empty() {
            *last = CString::default();
        }
    });
}

/// The message of the last failed keel call on this thread (`"Timeout: ..."`),
/// or an empty string after a success.
///
/// The pointer stays valid until this thread's next keel call; copy the
/// text to keep it. Never NULL; never free it.
#[no_mangle]
pub extern "C" fn keel_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// The name of a status (`"KEEL_TIMEOUT"`), or `"KEEL_UNKNOWN"` for a number
/// keel does not define. A static string: never free it.
#[no_mangle]
pub extern "C" fn keel_status_name(status: i32) -> *const c_char {
    use keel_status::*;
    let known = u32::try_from(status).ok().and_then(|code| {
        if code == 0 {
            Some(KEEL_OK)
        } else {
            ErrorKind::from_code(code).map(keel_status::of)
        }
    });
    let Some(status) = known else {
        return c"KEEL_UNKNOWN".as_ptr();
    };
    let name: &'static [u8] = match status {
        KEEL_OK => b"KEEL_OK\0",
        KEEL_INVALID_ARGUMENT => b"KEEL_INVALID_ARGUMENT\0",
        KEEL_NOT_FOUND => b"KEEL_NOT_FOUND\0",
        KEEL_ALREADY_EXISTS => b"KEEL_ALREADY_EXISTS\0",
        KEEL_CONFLICT => b"KEEL_CONFLICT\0",
        KEEL_BUSY => b"KEEL_BUSY\0",
        KEEL_TIMEOUT => b"KEEL_TIMEOUT\0",
        KEEL_CANCELLED => b"KEEL_CANCELLED\0",
        KEEL_PERMISSION_DENIED => b"KEEL_PERMISSION_DENIED\0",
        KEEL_CORRUPT => b"KEEL_CORRUPT\0",
        KEEL_STORAGE_FULL => b"KEEL_STORAGE_FULL\0",
        KEEL_IO => b"KEEL_IO\0",
        KEEL_WOULD_DEADLOCK => b"KEEL_WOULD_DEADLOCK\0",
        KEEL_CLOSED => b"KEEL_CLOSED\0",
        KEEL_PANIC => b"KEEL_PANIC\0",
        KEEL_UNSUPPORTED => b"KEEL_UNSUPPORTED\0",
    };
    name.as_ptr().cast()
}

/// For tests of the panic boundary only: panics inside keel and returns the
/// status the boundary turned that into (KEEL_PANIC).
#[no_mangle]
pub extern "C" fn keel_debug_panic() -> keel_status {
    ffi::call(|| -> keel_core::Result<()> { panic!("keel_debug_panic was called") })
}

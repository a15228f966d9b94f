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
    let text = format!("{}: {}", err.kind(), err.report());
    // Interior NULs cannot cross as a C string; show them instead of truncating.
    let text = CString::new(text.replace('\0', "\\0")).expect("NULs were replaced");
    // try_with: during thread exit the slot may be gone; the message then is too.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = text);
}

pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|last| {
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
    ffi::call_value(|| {
        LAST_ERROR
            .try_with(|last| last.borrow().as_ptr())
            .unwrap_or(c"".as_ptr())
    })
}

/// The name of a status (`"KEEL_TIMEOUT"`), or `"KEEL_UNKNOWN"` for a number
/// keel does not define. A static string: never free it.
#[no_mangle]
pub extern "C" fn keel_status_name(status: i32) -> *const c_char {
    ffi::call_value(|| status_cname(status).as_ptr())
}

/// The name of a status, `KEEL_UNKNOWN` for a number keel does not define.
pub(crate) fn status_name(status: i32) -> &'static str {
    status_cname(status).to_str().expect("status names are ASCII")
}

fn status_cname(status: i32) -> &'static std::ffi::CStr {
    use keel_status::*;
    let known = u32::try_from(status).ok().and_then(|code| {
        if code == 0 {
            Some(KEEL_OK)
        } else {
            ErrorKind::from_code(code).map(keel_status::of)
        }
    });
    let Some(status) = known else {
        return c"KEEL_UNKNOWN";
    };
    match status {
        KEEL_OK => c"KEEL_OK",
        KEEL_INVALID_ARGUMENT => c"KEEL_INVALID_ARGUMENT",
        KEEL_NOT_FOUND => c"KEEL_NOT_FOUND",
        KEEL_ALREADY_EXISTS => c"KEEL_ALREADY_EXISTS",
        KEEL_CONFLICT => c"KEEL_CONFLICT",
        KEEL_BUSY => c"KEEL_BUSY",
        KEEL_TIMEOUT => c"KEEL_TIMEOUT",
        KEEL_CANCELLED => c"KEEL_CANCELLED",
        KEEL_PERMISSION_DENIED => c"KEEL_PERMISSION_DENIED",
        KEEL_CORRUPT => c"KEEL_CORRUPT",
        KEEL_STORAGE_FULL => c"KEEL_STORAGE_FULL",
        KEEL_IO => c"KEEL_IO",
        KEEL_WOULD_DEADLOCK => c"KEEL_WOULD_DEADLOCK",
        KEEL_CLOSED => c"KEEL_CLOSED",
        KEEL_PANIC => c"KEEL_PANIC",
        KEEL_UNSUPPORTED => c"KEEL_UNSUPPORTED",
    }
}

/// For tests of the panic boundary only: panics inside keel and returns the
/// status the boundary turned that into (KEEL_PANIC).
#[no_mangle]
pub extern "C" fn keel_debug_panic() -> keel_status {
    ffi::call(|| -> keel_core::Result<()> { panic!("keel_debug_panic was called") })
}

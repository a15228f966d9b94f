//! The boundary: every entry point runs inside [`call`], and every pointer
//! from C is checked by a function here, so no entry point can forget.

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_core::{Error, Result};

use crate::buf::keel_bytes;
use crate::status::{clear_last_error, keel_status, set_last_error};

/// Runs one entry point: a panic becomes `KEEL_PANIC`, an error its status,
/// and either is recorded as this thread's last error.
pub(crate) fn call(body: impl FnOnce() -> Result<()>) -> keel_status {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(payload)));
    match outcome {
        Ok(()) => {
            clear_last_error();
            keel_status::KEEL_OK
        }
        Err(err) => {
            set_last_error(&err);
            keel_status::of(err.kind())
        }
    }
}

/// Runs an entry point that cannot report failure (a `_free`): a panic is
/// contained and recorded, never unwound into C.
pub(crate) fn call_void(body: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        set_last_error(&Error::from_panic(payload));
    }
}

/// `(ptr, len)` as bytes. NULL with length 0 is empty; NULL otherwise is an error.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return match len {
            0 => Ok(&[]),
            _ => Err(Error::invalid_argument(format!("{what} is NULL with length {len}"))),
        };
    }
    // SAFETY: the header requires `ptr` to point at `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `(ptr, len)` as UTF-8 text.
pub(crate) unsafe fn utf8<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str> {
    // SAFETY: as for `bytes`.
    let raw = unsafe { bytes(ptr.cast(), len, what)? };
    std::str::from_utf8(raw).map_err(|err| Error::invalid_argument(format!("{what} is not valid UTF-8 ({err})")))
}

/// An optional UTF-8 string: NULL is `None`.
pub(crate) unsafe fn optional_utf8<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: as for `bytes`.
    unsafe { utf8(ptr, len, what).map(Some) }
}

/// A handle made by keel and still alive, borrowed for the call.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the header requires a live handle of this type (or NULL).
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::invalid_argument(format!("{what} is NULL")))
}

/// An out-parameter, checked before the call does any work, so a NULL one
/// never leaves a lock taken or an item made with nowhere to report it.
pub(crate) struct Out<'a, T>(&'a mut *mut T);

/// The out-parameter `ptr` for a handle.
pub(crate) unsafe fn out_handle<'a, T>(ptr: *mut *mut T, what: &str) -> Result<Out<'a, T>> {
    // SAFETY: the header requires `ptr` to be writable (or NULL).
    match unsafe { ptr.as_mut() } {
        Some(slot) => Ok(Out(slot)),
        None => Err(Error::invalid_argument(format!("{what} is NULL"))),
    }
}

impl<T> Out<'_, T> {
    /// Hands `value` to C as a new handle, to be freed by its `_free`.
    pub(crate) fn put(self, value: T) {
        *self.0 = Box::into_raw(Box::new(value));
    }
}

/// A plain out-parameter (a struct or a number).
pub(crate) unsafe fn out_value<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: the header requires `ptr` to be writable (or NULL).
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::invalid_argument(format!("{what} is NULL")))
}

/// Frees a handle made by [`Out::put`]; NULL is a no-op.
pub(crate) unsafe fn free_handle<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: made by `Box::into_raw` in `Out::put`, freed once (the header says so).
        call_void(|| drop(unsafe { Box::from_raw(ptr) }));
    }
}

/// `count` items at `ptr`. NULL with count 0 is empty.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, count: usize, what: &str) -> Result<&'a [T]> {
    if ptr.is_null() {
        return match count {
            0 => Ok(&[]),
            _ => Err(Error::invalid_argument(format!("{what} is NULL with count {count}"))),
        };
    }
    // SAFETY: the header requires `ptr` to point at `count` readable items.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// `count` byte strings at `list`, each named `what[i]` in errors.
pub(crate) unsafe fn bytes_list<'a>(list: *const keel_bytes, count: usize, what: &str) -> Result<Vec<&'a [u8]>> {
    // SAFETY: as for `slice` and `bytes`.
    let list = unsafe { slice(list, count, what)? };
    list.iter()
        .enumerate()
        .map(|(i, item)| unsafe { bytes(item.ptr, item.len, &format!("{what}[{i}]")) })
        .collect()
}

/// `count` UTF-8 strings at `list`, each named `what[i]` in errors.
pub(crate) unsafe fn utf8_list<'a>(list: *const keel_bytes, count: usize, what: &str) -> Result<Vec<&'a str>> {
    // SAFETY: as for `slice` and `utf8`.
    let list = unsafe { slice(list, count, what)? };
    list.iter()
        .enumerate()
        .map(|(i, item)| unsafe { utf8(item.ptr.cast(), item.len, &format!("{what}[{i}]")) })
        .collect()
}

/// `(ptr, len)` as a JSON value.
pub(crate) unsafe fn json(ptr: *const c_char, len: usize, what: &str) -> Result<serde_json::Value> {
    // SAFETY: as for `utf8`.
    let text = unsafe { utf8(ptr, len, what)? };
    serde_json::from_str(text).map_err(|err| Error::invalid_argument(format!("{what} is not JSON: {err}")))
}

/// An unsigned millisecond count from C as a duration.
pub(crate) fn ms(value: u64) -> std::time::Duration {
    std::time::Duration::from_millis(value)
}

/// A signed millisecond timeout from C: -1 means no limit (KEEL_WAIT_FOREVER,
/// KEEL_POOL_NO_TIMEOUT), 0 or more a limit; any other negative is an error.
pub(crate) fn timeout_ms(ms: i64, what: &str) -> Result<Option<std::time::Duration>> {
    match ms {
        -1 => Ok(None),
        ms if ms >= 0 => Ok(Some(std::time::Duration::from_millis(ms.unsigned_abs()))),
        other => Err(Error::invalid_argument(format!(
            "{what} {other} is not a number of ms >= 0 or -1"
        ))),
    }
}

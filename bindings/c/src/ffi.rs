//! The boundary: every entry point runs inside [`call`] (fallible calls) or
//! [`call_value`] (calls that return a plain value), and every pointer from C
//! is checked by a function here, so no entry point can forget. A test
//! (`tests/boundary.rs`) fails when an export does not start with one of them.

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_core::{Error, Result};

use crate::buf::keel_bytes;
use crate::status::{clear_last_error, keel_status, set_last_error};

/// Runs one fallible entry point: a panic becomes `KEEL_PANIC`, an error its
/// status, and either is recorded as this thread's last error; success
/// clears it.
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

/// Runs an entry point that returns a plain value and cannot report failure
/// (a `_free`, a getter, a `_default`): a panic is contained and recorded,
/// never unwound into C, and the call returns [`PanicValue::on_panic`]. The
/// last error is left as it was, so `keel_last_error()` can read it.
pub(crate) fn call_value<R: PanicValue>(body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(&Error::from_panic(payload));
        R::on_panic()
    })
}

/// [`call_value`] for an entry point that returns nothing.
pub(crate) fn call_void(body: impl FnOnce()) {
    call_value(body)
}

/// What an entry point of [`call_value`] returns when its body panicked:
/// the value its documentation gives for a NULL argument.
pub(crate) trait PanicValue {
    fn on_panic() -> Self;
}

macro_rules! panic_value {
    ($($type:ty => $value:expr),* $(,)?) => {
        $(impl PanicValue for $type {
            fn on_panic() -> Self {
                $value
            }
        })*
    };
}

panic_value! {
    () => (),
    bool => false,
    u32 => 0,
    u64 => 0,
    usize => 0,
    i64 => 0,
}

impl<T> PanicValue for *const T {
    fn on_panic() -> Self {
        std::ptr::null()
    }
}

impl<T> PanicValue for *mut T {
    fn on_panic() -> Self {
        std::ptr::null_mut()
    }
}

/// Refuses a `(ptr, count)` whose byte size Rust cannot address: a slice
/// longer than `isize::MAX` bytes is undefined behaviour, so this is checked
/// before any slice is made.
fn check_extent<T>(count: usize, what: &str) -> Result<()> {
    let fits = count
        .checked_mul(std::mem::size_of::<T>())
        .is_some_and(|size| isize::try_from(size).is_ok());
    if fits {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{what} has {count} items of {} bytes, more than memory can hold",
            std::mem::size_of::<T>()
        )))
    }
}

/// `(ptr, len)` as bytes. NULL with length 0 is empty; NULL otherwise is an error.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    // SAFETY: as for `slice`.
    unsafe { slice(ptr, len, what) }
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

/// A handle made by keel and still alive, borrowed mutably for the call (the
/// header says which handles one thread at a time may change).
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: the header requires a live handle of this type (or NULL), not
    // used by another call at the same time.
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::invalid_argument(format!("{what} is NULL")))
}

/// An optional input struct (options): NULL is `None`.
pub(crate) unsafe fn optional<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: the header requires a readable struct (or NULL).
    unsafe { ptr.as_ref() }
}

/// An optional struct C lends to be changed (a keel_buf to free): NULL is `None`.
pub(crate) unsafe fn optional_mut<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    // SAFETY: the header requires a writable struct (or NULL).
    unsafe { ptr.as_mut() }
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

/// Writes `value` to an optional out-parameter; NULL means the caller does
/// not want it.
pub(crate) unsafe fn put_optional<T>(ptr: *mut T, value: T) {
    // SAFETY: the header requires `ptr` to be writable (or NULL).
    if let Some(slot) = unsafe { ptr.as_mut() } {
        *slot = value;
    }
}

/// Takes back a handle made by [`Out::put`] (a `_free`, or a call that
/// consumes its argument); NULL is `None`. The handle is gone afterwards.
pub(crate) unsafe fn take_handle<T>(ptr: *mut T) -> Option<Box<T>> {
    // SAFETY: made by `Box::into_raw` in `Out::put` and given back once (the
    // header says so).
    (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })
}

/// Frees a handle made by [`Out::put`]; NULL is a no-op.
pub(crate) unsafe fn free_handle<T>(ptr: *mut T) {
    // SAFETY: as for `take_handle`.
    drop(unsafe { take_handle(ptr) });
}

/// `count` items at `ptr`. NULL with count 0 is empty.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, count: usize, what: &str) -> Result<&'a [T]> {
    check_extent::<T>(count, what)?;
    if ptr.is_null() {
        return match count {
            0 => Ok(&[]),
            _ => Err(Error::invalid_argument(format!("{what} is NULL with length {count}"))),
        };
    }
    // SAFETY: the header requires `ptr` to point at `count` readable items;
    // their size was checked to fit in isize above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// `count` writable items at `ptr` (an array C lends for results). NULL
/// with count 0 is empty.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, count: usize, what: &str) -> Result<&'a mut [T]> {
    check_extent::<T>(count, what)?;
    if ptr.is_null() {
        return match count {
            0 => Ok(&mut []),
            _ => Err(Error::invalid_argument(format!("{what} is NULL with length {count}"))),
        };
    }
    // SAFETY: the header requires `ptr` to point at `count` writable items
    // no one else uses during the call; their size fits in isize (above).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, count) })
}

/// `count` byte strings at `list`, each named `what[i]` in errors.
pub(crate) unsafe fn bytes_list<'a>(list: *const keel_bytes, count: usize, what: &str) -> Result<Vec<&'a [u8]>> {
    // SAFETY: as for `slice` and `bytes`.
    let list = unsafe { slice(list, count, what)? };
    list.iter()
        .enumerate()
        // SAFETY: each keel_bytes follows the header's (ptr, len) contract.
        .map(|(i, item)| unsafe { bytes(item.ptr, item.len, &format!("{what}[{i}]")) })
        .collect()
}

/// `count` UTF-8 strings at `list`, each named `what[i]` in errors.
pub(crate) unsafe fn utf8_list<'a>(list: *const keel_bytes, count: usize, what: &str) -> Result<Vec<&'a str>> {
    // SAFETY: as for `slice` and `utf8`.
    let list = unsafe { slice(list, count, what)? };
    list.iter()
        .enumerate()
        // SAFETY: each keel_bytes follows the header's (ptr, len) contract.
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

/// Where a store lives, from C: a file path, or a URL whose scheme names
/// the store (`postgresql://`); an unknown scheme is an error.
///
/// # Safety
/// As [`utf8`].
pub(crate) unsafe fn location(ptr: *const c_char, len: usize) -> Result<keel_core::location::Location> {
    // SAFETY: forwarded from the caller.
    let text = unsafe { utf8(ptr, len, "location")? };
    keel_core::location::Location::parse(text)
}

/// A duration as whole ms for C (saturating: no default is that long).
pub(crate) fn ms_of(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A point in time from C, in ms since the Unix epoch: -1 means now
/// (KEEL_RUN_NOW, `None`); any other negative is an error.
pub(crate) fn time_ms(ms: i64, what: &str) -> Result<Option<u64>> {
    match ms {
        -1 => Ok(None),
        ms if ms >= 0 => Ok(Some(ms.unsigned_abs())),
        other => Err(Error::invalid_argument(format!(
            "{what} {other} is not a time in ms >= 0 or -1 (now)"
        ))),
    }
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

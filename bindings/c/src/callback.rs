//! Calling C back: the `void *userdata` C hands keel with a callback, the
//! output a callback sets through its `*_set_output` call, and what the
//! status a callback returns means. Every callback of the header uses these,
//! so the rules are the same for tasks, commits, job handlers and migrations.

use std::ffi::c_void;

use keel_core::{Error, ErrorKind, Result};

use crate::ffi;
use crate::status::status_name;

/// The `void *userdata` C passes with a callback and gets back on every
/// call, carried to whichever thread runs the callback. keel never
/// dereferences it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Userdata(*mut c_void);

// SAFETY: keel only hands the pointer back to C; the header says on which
// threads each callback runs, and the data behind it is C's to make safe
// for that.
unsafe impl Send for Userdata {}
// SAFETY: as for Send: keel never reads through the pointer.
unsafe impl Sync for Userdata {}

impl Userdata {
    pub(crate) fn new(ptr: *mut c_void) -> Userdata {
        Userdata(ptr)
    }

    /// The pointer, to pass back to C.
    pub(crate) fn as_ptr(self) -> *mut c_void {
        self.0
    }
}

/// What a running callback set as its output (a copy): the value on
/// success, the message on failure. Unset until the callback sets it.
#[derive(Debug, Default)]
pub(crate) struct Output(Option<Vec<u8>>);

impl Output {
    /// Replaces the output with a copy of `(data, len)`: the body of every
    /// `*_set_output` export.
    ///
    /// # Safety
    /// `(data, len)` keeps the header's `(ptr, len)` contract.
    pub(crate) unsafe fn set(&mut self, data: *const u8, len: usize) -> Result<()> {
        // SAFETY: as this function's contract says.
        let data = unsafe { ffi::bytes(data, len, "data")? };
        self.0 = Some(data.to_vec());
        Ok(())
    }

    /// Whether the callback set an output (an empty one counts).
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The output, empty if the callback set none.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0.unwrap_or_default()
    }
}

/// What a callback's `status` and `output` mean, the one rule for every
/// callback. Callbacks return a plain `int32_t`, not `keel_status`: a C
/// function may return any number, and a Rust enum holding a value it does
/// not define is undefined behaviour. The rule: 0 (KEEL_OK) is success with the output as its value; a
/// keel_status is that kind of failure, with the output (or, when empty,
/// "`what` failed with KEEL_...") as its message; any other number is a
/// bug in the callback, reported as KEEL_INVALID_ARGUMENT naming the number.
pub(crate) fn outcome(status: i32, output: Output, what: impl Fn() -> String) -> Result<Vec<u8>> {
    if status == 0 {
        return Ok(output.into_bytes());
    }
    let text = String::from_utf8_lossy(&output.into_bytes()).into_owned();
    let kind = u32::try_from(status).ok().and_then(ErrorKind::from_code);
    Err(match kind {
        Some(kind) => {
            let message = match text.is_empty() {
                true => format!("{} failed with {}", what(), status_name(status)),
                false => text,
            };
            Error::new(kind, message)
        }
        None => {
            let detail = match text.is_empty() {
                true => String::new(),
                false => format!(": {text}"),
            };
            Error::invalid_argument(format!(
                "{} returned {status}, which is not a keel_status{detail}",
                what()
            ))
        }
    })
}

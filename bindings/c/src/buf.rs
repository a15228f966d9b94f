//! `keel_buf`: bytes keel hands to C, freed with keel_buf_free.

use crate::ffi;

/// Bytes lent by C for the length of a call: `len` bytes at `ptr` (a key,
/// a name, a path). Lists of them are `(const keel_bytes *, size_t count)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_bytes {
    /// The first byte (may be NULL when len is 0).
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

/// Bytes owned by keel and lent to C: `len` bytes at `ptr`, followed by a
/// NUL that `len` does not count (so text can be read as a C string). Free
/// it once with keel_buf_free; a zeroed keel_buf is empty and free to free.
#[repr(C)]
#[derive(Debug)]
pub struct keel_buf {
    /// The first byte, or NULL for an empty buffer that was never filled.
    pub ptr: *mut u8,
    /// The number of bytes, not counting the trailing NUL.
    pub len: usize,
    /// Private: the allocation's capacity, needed to free it.
    pub cap: usize,
}

impl keel_buf {
    /// Lends `value` to C as JSON text.
    pub(crate) fn from_json(value: &serde_json::Value) -> keel_buf {
        keel_buf::from_vec(value.to_string().into_bytes())
    }

    /// Lends a core struct (stats, a status) to C as its JSON: the same
    /// keys every surface gives, from the struct's one `Serialize`.
    pub(crate) fn serialized(value: &impl serde::Serialize) -> keel_core::Result<keel_buf> {
        let text = serde_json::to_vec(value)
            .map_err(|err| keel_core::Error::invalid_argument(format!("did not serialize: {err}")))?;
        Ok(keel_buf::from_vec(text))
    }

    /// Frees the bytes and leaves the buffer zeroed (empty, free to free again).
    ///
    /// # Safety
    /// The buffer was filled by [`keel_buf::from_vec`] or is zeroed.
    pub(crate) unsafe fn release(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: made by `from_vec` with this pointer, length + NUL and capacity.
            drop(unsafe { Vec::from_raw_parts(self.ptr, self.len + 1, self.cap) });
        }
        *self = keel_buf {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        };
    }

    /// Lends `bytes` (plus a trailing NUL) to C.
    pub(crate) fn from_vec(mut bytes: Vec<u8>) -> keel_buf {
        let len = bytes.len();
        bytes.push(0);
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        keel_buf {
            ptr: bytes.as_mut_ptr(),
            len,
            cap: bytes.capacity(),
        }
    }
}

/// Frees the bytes of `buf` and zeroes it. NULL, or a zeroed buffer, is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_buf_free(buf: *mut keel_buf) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe {
        if let Some(buf) = ffi::optional_mut(buf) {
            buf.release();
        }
    });
}

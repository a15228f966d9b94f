//! The lock registry: `keel_locks` and `keel_lock_guard`.

use std::ffi::c_char;

use keel_core::{KeyedLocks, LockMode, MultiKeyGuard, Wait};

use crate::buf::keel_bytes;
use crate::ffi;
use crate::status::keel_status;
use keel_core::LockStats;

/// A registry of per-key locks (see KeyedLocks in the Rust docs): one lock per
/// key while it is held or waited for, and no entry once nobody does.
/// Thread-safe: one registry may be used from any number of threads.
pub struct keel_locks {
    inner: KeyedLocks<Vec<u8>>,
}

/// One key (or, from keel_locks_lock_many, a set of keys) held until
/// keel_lock_guard_release. May be released on any thread. A guard keeps its
/// registry alive, so freeing the registry first is safe.
pub struct keel_lock_guard {
    _held: MultiKeyGuard<Vec<u8>>,
}

/// How a key is held.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum keel_lock_mode {
    /// One holder, nobody else.
    KEEL_LOCK_EXCLUSIVE = 0,
    /// Any number of holders, no exclusive one.
    KEEL_LOCK_SHARED = 1,
}

/// Pass as `timeout_ms` to wait as long as it takes.
pub const KEEL_WAIT_FOREVER: i64 = -1;

/// A keel_lock_mode from C, checked: an out-of-range number is an error,
/// not undefined behaviour.
fn lock_mode(mode: u32) -> keel_core::Result<LockMode> {
    match mode {
        m if m == keel_lock_mode::KEEL_LOCK_EXCLUSIVE as u32 => Ok(LockMode::Exclusive),
        m if m == keel_lock_mode::KEEL_LOCK_SHARED as u32 => Ok(LockMode::Shared),
        other => Err(keel_core::Error::invalid_argument(format!(
            "mode {other} is not a keel_lock_mode"
        ))),
    }
}

/// Makes an empty registry in `*out`; free it with keel_locks_free.
///
/// `name` (UTF-8, `name_len` bytes; NULL for none) names the registry in
/// error messages.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_new(
    name: *const c_char,
    name_len: usize,
    out: *mut *mut keel_locks,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let name = ffi::optional_utf8(name, name_len, "name")?;
        let inner = match name {
            Some(name) => KeyedLocks::named(name),
            None => KeyedLocks::new(),
        };
        out.put(keel_locks { inner });
        Ok(())
    })
}

/// Frees a registry. Guards still alive keep working and release normally.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_free(locks: *mut keel_locks) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(locks) })
}

/// Takes the key `key[0..key_len]` in `mode` (a keel_lock_mode), waiting at most `timeout_ms`
/// milliseconds (KEEL_WAIT_FOREVER: no limit; other negatives are
/// KEEL_INVALID_ARGUMENT), and puts the guard in `*out`.
///
/// Returns KEEL_TIMEOUT when the wait runs out (nothing is left behind) and
/// KEEL_WOULD_DEADLOCK when this thread holds the key already. Blocks the
/// calling thread while waiting.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_lock(
    locks: *const keel_locks,
    key: *const u8,
    key_len: usize,
    mode: u32,
    timeout_ms: i64,
    out: *mut *mut keel_lock_guard,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let locks = ffi::handle(locks, "locks")?;
        let key = ffi::bytes(key, key_len, "key")?;
        let out = ffi::out_handle(out, "out")?;
        let timeout = ffi::timeout_ms(timeout_ms, "timeout_ms")?;
        let guard = locks.inner.lock_with(key, lock_mode(mode)?, timeout, None)?;
        out.put(keel_lock_guard { _held: guard.into() });
        Ok(())
    })
}

/// Takes the key in `mode` only if that needs no wait; otherwise returns
/// KEEL_BUSY and leaves `*out` untouched.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_try_lock(
    locks: *const keel_locks,
    key: *const u8,
    key_len: usize,
    mode: u32,
    out: *mut *mut keel_lock_guard,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let locks = ffi::handle(locks, "locks")?;
        let key = ffi::bytes(key, key_len, "key")?;
        let out = ffi::out_handle(out, "out")?;
        match locks.inner.acquire(key, lock_mode(mode)?, Wait::Never)? {
            Some(guard) => {
                out.put(keel_lock_guard { _held: guard.into() });
                Ok(())
            }
            None => Err(keel_core::Error::busy("the key is held by someone else")),
        }
    })
}

/// Takes every key of `keys[0..count]` in `mode`, all or none, in a canonical
/// order (so concurrent callers cannot deadlock), waiting at most
/// `timeout_ms` in all. One guard in `*out` releases them all.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_lock_many(
    locks: *const keel_locks,
    keys: *const keel_bytes,
    count: usize,
    mode: u32,
    timeout_ms: i64,
    out: *mut *mut keel_lock_guard,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let locks = ffi::handle(locks, "locks")?;
        let out = ffi::out_handle(out, "out")?;
        let keys = ffi::bytes_list(keys, count, "keys")?;
        let timeout = ffi::timeout_ms(timeout_ms, "timeout_ms")?;
        let guard = locks.inner.lock_many_with(&keys, lock_mode(mode)?, timeout, None)?;
        out.put(keel_lock_guard { _held: guard });
        Ok(())
    })
}

/// Releases the key(s) and frees the guard. Any thread may call it. NULL is
/// a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_lock_guard_release(guard: *mut keel_lock_guard) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(guard) })
}

/// Writes the registry's entries, holders and waiters to `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_stats(locks: *const keel_locks, out: *mut LockStats) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let locks = ffi::handle(locks, "locks")?;
        let out = ffi::out_value(out, "out")?;
        *out = locks.inner.stats();
        Ok(())
    })
}

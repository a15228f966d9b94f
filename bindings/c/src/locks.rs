//! The lock registry: `keel_locks` and `keel_lock_guard`, in this process
//! (keel_locks_new) or across processes and hosts on PostgreSQL
//! (keel_locks_open).

use std::ffi::c_char;

use keel_core::location::Location;
use keel_core::postgres::{PgKeyGuard, PgKeyedLocks};
use keel_core::{ErrorKind, KeyedLocks, LockMode, MultiKeyGuard, Wait};

use crate::buf::keel_bytes;
use crate::ffi;
use crate::status::keel_status;
use keel_core::LockStats;

/// A registry of per-key locks (see KeyedLocks in the Rust docs): one lock per
/// key while it is held or waited for, and no entry once nobody does.
/// Thread-safe: one registry may be used from any number of threads.
pub struct keel_locks {
    inner: Registry,
}

enum Registry {
    Local(KeyedLocks<Vec<u8>>),
    Pg(PgKeyedLocks),
}

/// One key (or, from keel_locks_lock_many, a set of keys) held until
/// keel_lock_guard_release. May be released on any thread. A guard keeps its
/// registry alive, so freeing the registry first is safe.
pub struct keel_lock_guard {
    held: Held,
}

enum Held {
    Local(#[allow(dead_code)] MultiKeyGuard<Vec<u8>>),
    Pg(Box<PgKeyGuard>),
}

impl keel_lock_guard {
    fn local(held: MultiKeyGuard<Vec<u8>>) -> keel_lock_guard {
        keel_lock_guard {
            held: Held::Local(held),
        }
    }

    fn pg(held: PgKeyGuard) -> keel_lock_guard {
        keel_lock_guard {
            held: Held::Pg(Box::new(held)),
        }
    }
}

/// A PostgreSQL lock key: its bytes must be UTF-8.
fn pg_key<'a>(key: &'a [u8], what: &str) -> keel_core::Result<&'a str> {
    std::str::from_utf8(key)
        .map_err(|_| keel_core::Error::invalid_argument(format!("{what}: a PostgreSQL lock key must be UTF-8")))
}

/// A wait from keel.h's `timeout_ms` (None: forever).
fn pg_wait(timeout: Option<std::time::Duration>) -> Wait {
    timeout.map_or(Wait::Forever, Wait::For)
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
        out.put(keel_locks {
            inner: Registry::Local(inner),
        });
        Ok(())
    })
}

/// Opens the locks at `location` (UTF-8, `location_len` bytes) into `*out`:
/// a `postgresql://` URL (libpq conventions, the `keel` schema) gives locks
/// shared by every process and host that opens the same database, on its
/// advisory locks; any other text names an in-process registry, as
/// keel_locks_new does. An unknown `scheme://` is KEEL_INVALID_ARGUMENT.
/// Free it with keel_locks_free.
///
/// On PostgreSQL: keys must be UTF-8; every held guard pins one database
/// connection; a thread asking again for a key it holds waits for itself
/// like for anyone else (no KEEL_WOULD_DEADLOCK: give it a timeout);
/// keel_lock_guard_check tells a holder whose session was lost, and
/// keel_lock_guard_token gives its fencing token; keel_locks_stats counts
/// what this handle holds and waits for, not other processes'.
#[no_mangle]
pub unsafe extern "C" fn keel_locks_open(
    location: *const c_char,
    location_len: usize,
    out: *mut *mut keel_locks,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let location = ffi::utf8(location, location_len, "location")?;
        let inner = match Location::parse(location)? {
            Location::Postgres(url) => Registry::Pg(PgKeyedLocks::open(&url)?),
            Location::Path(_) => Registry::Local(KeyedLocks::named(location)),
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
        let guard = match &locks.inner {
            Registry::Local(inner) => {
                keel_lock_guard::local(inner.lock_with(key, lock_mode(mode)?, timeout, None)?.into())
            }
            Registry::Pg(inner) => {
                let key = pg_key(key, "key")?;
                let guard = inner.acquire(key, lock_mode(mode)?, pg_wait(timeout))?;
                keel_lock_guard::pg(guard.expect("a waiting acquisition returns a guard"))
            }
        };
        out.put(guard);
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
        let guard = match &locks.inner {
            Registry::Local(inner) => inner
                .acquire(key, lock_mode(mode)?, Wait::Never)?
                .map(|guard| keel_lock_guard::local(guard.into())),
            Registry::Pg(inner) => inner
                .acquire(pg_key(key, "key")?, lock_mode(mode)?, Wait::Never)?
                .map(keel_lock_guard::pg),
        };
        match guard {
            Some(guard) => {
                out.put(guard);
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
        let guard = match &locks.inner {
            Registry::Local(inner) => {
                keel_lock_guard::local(inner.lock_many_with(&keys, lock_mode(mode)?, timeout, None)?)
            }
            Registry::Pg(inner) => {
                let keys = keys
                    .iter()
                    .map(|key| pg_key(key, "keys"))
                    .collect::<keel_core::Result<Vec<&str>>>()?;
                let guard = inner.lock_many(&keys, lock_mode(mode)?, pg_wait(timeout))?;
                keel_lock_guard::pg(guard.expect("a waiting acquisition returns a guard"))
            }
        };
        out.put(guard);
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
        *out = match &locks.inner {
            Registry::Local(inner) => inner.stats(),
            Registry::Pg(inner) => inner.stats(),
        };
        Ok(())
    })
}

/// KEEL_OK while the guard's keys are held; KEEL_CLOSED once the PostgreSQL
/// session holding them was lost (the server released them, and someone
/// else may hold them now: stop touching what they protect). Asks the
/// server (one round trip). An in-process guard is always KEEL_OK.
#[no_mangle]
pub unsafe extern "C" fn keel_lock_guard_check(guard: *mut keel_lock_guard) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let guard = ffi::handle_mut(guard, "guard")?;
        match &mut guard.held {
            Held::Local(_) => Ok(()),
            Held::Pg(held) => held.check(),
        }
    })
}

/// Writes the guard's fencing token to `*out`: larger for every later
/// acquisition of PostgreSQL locks, so the protected resource can remember
/// the largest it saw and refuse a holder whose session was lost.
/// KEEL_UNSUPPORTED for an in-process guard (it has none).
#[no_mangle]
pub unsafe extern "C" fn keel_lock_guard_token(guard: *const keel_lock_guard, out: *mut u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let guard = ffi::handle(guard, "guard")?;
        let out = ffi::out_value(out, "out")?;
        match &guard.held {
            Held::Local(_) => Err(keel_core::Error::new(
                ErrorKind::Unsupported,
                "an in-process lock guard has no fencing token",
            )),
            Held::Pg(held) => {
                *out = held.token();
                Ok(())
            }
        }
    })
}

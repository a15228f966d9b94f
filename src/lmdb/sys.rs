//! The few LMDB calls lmdb-rkv does not wrap, each behind a small safe
//! function. Every `unsafe` block here relies on one fact: the
//! `lmdb::Environment` passed in is open and outlives the call, which the
//! borrow guarantees.

use std::os::fd::AsRawFd;

use lmdb::Environment;
use lmdb_sys as ffi;

/// Clears reader slots left by processes that died mid-read, so they cannot
/// pin old pages (or fill the reader table) forever. Returns how many were
/// cleared.
pub(crate) fn clear_stale_readers(env: &Environment) -> Result<usize, lmdb::Error> {
    let mut dead: libc::c_int = 0;
    // SAFETY: `env.env()` is a live, opened MDB_env for the borrow of `env`;
    // `dead` is a valid out-pointer.
    let rc = unsafe { ffi::mdb_reader_check(env.env(), &mut dead) };
    check(rc)?;
    Ok(dead.max(0) as usize)
}

/// Writes a consistent, compacted copy of the whole environment to `file`
/// (LMDB's `mdb_env_copyfd2` with `MDB_CP_COMPACT`: free pages are omitted and
/// pages renumbered). Runs inside its own read transaction, so writers go on.
pub(crate) fn copy_compacted(env: &Environment, file: &std::fs::File) -> Result<(), lmdb::Error> {
    // SAFETY: `env` is open (see above); the descriptor belongs to `file`,
    // which stays open for the whole call.
    let rc = unsafe { ffi::mdb_env_copyfd2(env.env(), file.as_raw_fd(), ffi::MDB_CP_COMPACT) };
    check(rc)
}

/// Below this many free bytes a file system counts as full: LMDB writes
/// whole pages (and a short write leaves a few bytes at most).
const FULL_BELOW: u64 = 1 << 20;

/// Whether the file system holding `path` is (nearly) out of space for an
/// unprivileged writer, per `statvfs`. LMDB reports a short write at the
/// end of the file as EIO, not ENOSPC; this tells the two apart. `false`
/// when `statvfs` itself fails.
pub(crate) fn file_system_full(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a valid
    // out-pointer; statvfs writes all of it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: rc == 0, so statvfs filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // u64 on 64-bit Linux, narrower elsewhere
    let (free, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    free.saturating_mul(size) < FULL_BELOW
}

fn check(rc: libc::c_int) -> Result<(), lmdb::Error> {
    if rc == 0 {
        Ok(())
    } else {
        Err(lmdb::Error::from_err_code(rc))
    }
}

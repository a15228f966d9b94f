//! The mutation journal: `keel_journal` and `keel_mutation`.

use std::ffi::c_char;

use keel_core::journal::{MutationStatus, ReadGuard, RecoveryReport, SharedMutation};
use keel_core::{Error, Journal, Mutation, Result};

use crate::buf::{keel_buf, keel_bytes};
use crate::ffi;
use crate::status::keel_status;

/// A managed directory tree whose changes are made through mutations that
/// end exactly as before or exactly as after, whatever happens (see Journal
/// in the Rust docs). Thread-safe; several handles, threads and processes
/// may use one root — mutations are serialized by an flock and an
/// in-process lock.
pub struct keel_journal {
    inner: Journal,
}

/// One mutation, holding the root's exclusive lock until it is committed,
/// rolled back or freed (freeing an unfinished mutation rolls it back).
/// May be used and freed on any thread; calls from several threads take
/// turns. Only the process that began it ends it: freed in a forked child,
/// it leaves the tree and the lock alone.
pub struct keel_mutation {
    inner: SharedMutation,
}

/// The shared lock of a root (keel_journal_read): no mutation runs while it
/// is held, and the tree is in a committed state. keel_read_guard_release
/// releases it.
pub struct keel_read_guard {
    _held: ReadGuard,
}

/// What keel_journal_recover did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_recovery_report {
    /// Interrupted mutations rolled back.
    pub rolled_back: usize,
    /// Finished records discarded.
    pub discarded: usize,
    /// Untrusted records moved to .keel/quarantine/ (never applied).
    pub quarantined: usize,
    /// Leftover backup, staging and trash folders removed.
    pub reaped: usize,
}

/// What keel_journal_status found on disk.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_journal_state {
    /// Records still `active` (outside a running mutation: recovery pending).
    pub active: usize,
    /// Records committed or rolled back, awaiting cleanup.
    pub finished: usize,
    /// Records that cannot be read or trusted.
    pub unreadable: usize,
    /// Folders in .keel/quarantine/.
    pub quarantined: usize,
    /// True when the last recovery in this process failed: mutations are
    /// refused (KEEL_CONFLICT) until keel_journal_recover succeeds or
    /// keel_journal_resolve is called.
    pub blocked: bool,
}

/// Opens the journal of the existing folder `root` (UTF-8, `root_len`
/// bytes), creating `root/.keel/` and recovering what a crash left, and puts
/// the handle in `*out`; free it with keel_journal_free. A symlinked `.keel`
/// gives KEEL_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_open(
    root: *const c_char,
    root_len: usize,
    out: *mut *mut keel_journal,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let root = ffi::utf8(root, root_len, "root")?;
        out.put(keel_journal {
            inner: Journal::open(root)?,
        });
        Ok(())
    })
}

/// Frees a journal handle. Mutations still alive keep working. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_free(journal: *mut keel_journal) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(journal) })
}

/// Starts a mutation, waiting (blocking this thread) for the exclusive lock,
/// and puts it in `*out`. `operation` and `details` (UTF-8; `details` may be
/// NULL) are kept in the record for operators. Returns KEEL_CONFLICT when an
/// earlier crash could not be recovered.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_begin(
    journal: *const keel_journal,
    operation: *const c_char,
    operation_len: usize,
    details: *const c_char,
    details_len: usize,
    out: *mut *mut keel_mutation,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let operation = ffi::utf8(operation, operation_len, "operation")?;
        let details = ffi::optional_utf8(details, details_len, "details")?;
        let out = ffi::out_handle(out, "out")?;
        let mutation = journal.inner.begin(operation, details.unwrap_or(""))?;
        out.put(keel_mutation {
            inner: SharedMutation::new(mutation),
        });
        Ok(())
    })
}

/// keel_journal_begin waiting `timeout_ms` at most (-1: no limit, 0: do
/// not wait): KEEL_TIMEOUT (and `*out` untouched) when it elapsed. Waiting
/// for another process polls its lock every 20 ms at most.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_begin_timeout(
    journal: *const keel_journal,
    operation: *const c_char,
    operation_len: usize,
    details: *const c_char,
    details_len: usize,
    timeout_ms: i64,
    out: *mut *mut keel_mutation,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let operation = ffi::utf8(operation, operation_len, "operation")?;
        let details = ffi::optional_utf8(details, details_len, "details")?.unwrap_or("");
        let timeout = ffi::timeout_ms(timeout_ms, "timeout_ms")?;
        let out = ffi::out_handle(out, "out")?;
        let mutation = match timeout {
            None => journal.inner.begin(operation, details)?,
            Some(timeout) => journal
                .inner
                .begin_timeout(operation, details, timeout)?
                .ok_or_else(|| {
                    Error::timeout(format!(
                        "{} stayed held by another mutation or reader for {timeout_ms} ms",
                        journal.inner.root().display()
                    ))
                })?,
        };
        out.put(keel_mutation {
            inner: SharedMutation::new(mutation),
        });
        Ok(())
    })
}

/// keel_journal_begin without waiting: returns KEEL_BUSY (and leaves `*out`
/// untouched) when another thread or process holds the root.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_try_begin(
    journal: *const keel_journal,
    operation: *const c_char,
    operation_len: usize,
    details: *const c_char,
    details_len: usize,
    out: *mut *mut keel_mutation,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let operation = ffi::utf8(operation, operation_len, "operation")?;
        let details = ffi::optional_utf8(details, details_len, "details")?;
        let out = ffi::out_handle(out, "out")?;
        match journal.inner.try_begin(operation, details.unwrap_or(""))? {
            Some(mutation) => {
                out.put(keel_mutation {
                    inner: SharedMutation::new(mutation),
                });
                Ok(())
            }
            None => Err(Error::busy(format!(
                "{} is held by another mutation or reader",
                journal.inner.root().display()
            ))),
        }
    })
}

/// Runs recovery now and fills `*out` (may be NULL). On failure nothing is
/// deleted and the message names every path that could not be restored.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_recover(
    journal: *const keel_journal,
    out: *mut keel_recovery_report,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let report = journal.inner.recover()?;
        ffi::put_optional(out, report_of(&report));
        Ok(())
    })
}

fn report_of(report: &RecoveryReport) -> keel_recovery_report {
    keel_recovery_report {
        rolled_back: report.rolled_back.len(),
        discarded: report.discarded.len(),
        quarantined: report.quarantined.len(),
        reaped: report.reaped,
    }
}

/// What the last recovery of this handle did (the one keel_journal_open
/// ran first): fills `*out` and sets `*found` to true, or sets `*found` to
/// false if none ran yet (another process held the root at open).
#[no_mangle]
pub unsafe extern "C" fn keel_journal_last_recovery(
    journal: *const keel_journal,
    out: *mut keel_recovery_report,
    found: *mut bool,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let out = ffi::out_value(out, "out")?;
        let found = ffi::out_value(found, "found")?;
        let last = journal.inner.last_recovery();
        *found = last.is_some();
        *out = last.as_ref().map(report_of).unwrap_or_default();
        Ok(())
    })
}

/// Takes the shared lock of the root (waiting, blocking this thread, for
/// running mutations to end; recovering a crashed one first) and puts the
/// guard in `*out`; keel_read_guard_release releases the lock and frees it.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_read(
    journal: *const keel_journal,
    out: *mut *mut keel_read_guard,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let out = ffi::out_handle(out, "out")?;
        out.put(keel_read_guard {
            _held: journal.inner.read()?,
        });
        Ok(())
    })
}

/// Releases a read guard's lock and frees the guard, as
/// keel_lock_guard_release does for a lock guard. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_read_guard_release(guard: *mut keel_read_guard) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(guard) })
}

/// Fills `*out` with what is on disk. Takes no lock.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_status(
    journal: *const keel_journal,
    out: *mut keel_journal_state,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let out = ffi::out_value(out, "out")?;
        let status = journal.inner.status()?;
        let active = status
            .pending
            .iter()
            .filter(|p| p.status == MutationStatus::Active)
            .count();
        *out = keel_journal_state {
            active,
            finished: status.pending.len() - active,
            unreadable: status.unreadable.len(),
            quarantined: status.quarantined.len(),
            blocked: status.last_recovery_error.is_some() || !status.problems.is_empty(),
        };
        Ok(())
    })
}

/// The journal's root folder (canonical) as text in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_root(journal: *const keel_journal, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let out = ffi::out_value(out, "out")?;
        let root = journal.inner.root().to_string_lossy().into_owned();
        *out = keel_buf::from_vec(root.into_bytes());
        Ok(())
    })
}

/// What the journal of `root` holds, without opening it: nothing is
/// created, locked, recovered or written. `*out` gets the JSON
/// `{"pending": [{"seq", "operation", "details", "status", "paths"}],
/// "unreadable", "quarantined", "last_recovery_error", "last_recovery",
/// "problems"}`; an interrupted mutation shows as a pending "active" record
/// that keel_journal_recover would roll back.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_inspect(root: *const c_char, root_len: usize, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let root = ffi::utf8(root, root_len, "root")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::serialized(&Journal::inspect(root)?)?;
        Ok(())
    })
}

/// The journal handle's counters as a JSON object in `*out`: the fields of
/// keel::journal::JournalStats (`mutations`, `committed`, `rolled_back`,
/// `fsyncs`, ...), as keel_stats_json lists them.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_stats_json(journal: *const keel_journal, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::serialized(&journal.inner.stats())?;
        Ok(())
    })
}

/// For operators: gives up on rolling back mutation `seq`; its record and
/// backups move to .keel/quarantine/ and the tree is left as it is.
/// KEEL_NOT_FOUND when there is no such record.
#[no_mangle]
pub unsafe extern "C" fn keel_journal_resolve(journal: *const keel_journal, seq: u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let journal = ffi::handle(journal, "journal")?;
        journal.inner.resolve(seq).map(|_| ())
    })
}

/// Runs `op` on the mutation; KEEL_CLOSED once it was committed or rolled back.
unsafe fn with_mutation<T>(mutation: *const keel_mutation, op: impl FnOnce(&mut Mutation) -> Result<T>) -> Result<T> {
    // SAFETY: passed on from the export, whose caller keeps keel.h's contract.
    let mutation = unsafe { ffi::handle(mutation, "mutation")? };
    mutation.inner.with(op)
}

/// The mutation's sequence number, in `*out` (never waits).
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_seq(mutation: *const keel_mutation, out: *mut u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_value(out, "out")?;
        *out = ffi::handle(mutation, "mutation")?.inner.seq();
        Ok(())
    })
}

/// Makes `path` a symlink to `target` (stored, never followed).
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_symlink(
    mutation: *const keel_mutation,
    path: *const c_char,
    path_len: usize,
    target: *const c_char,
    target_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let path = ffi::utf8(path, path_len, "path")?;
        let target = ffi::utf8(target, target_len, "target")?;
        with_mutation(mutation, |m| m.symlink(path, target))
    })
}

/// Like keel_mutation_declare, but folders are copied whole, so the caller
/// may edit their files in place (costs their bytes).
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_declare_copy(
    mutation: *const keel_mutation,
    paths: *const keel_bytes,
    count: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let paths = ffi::utf8_list(paths, count, "paths")?;
        with_mutation(mutation, |m| m.declare_copy(&paths))
    })
}

/// A private folder on the root's file system to prepare files in: its
/// path (UTF-8) in `*out`, freed with keel_buf_free. keel_mutation_publish
/// moves its contents into the tree; it is removed when the mutation ends.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_staging_dir(mutation: *const keel_mutation, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_value(out, "out")?;
        let dir = with_mutation(mutation, |m| m.staging_dir())?;
        *out = keel_buf::from_vec(dir.to_string_lossy().into_owned().into_bytes());
        Ok(())
    })
}

/// Moves everything in the staging folder into the folder `into` (relative
/// to the root; empty or NULL for the root itself), merging with existing
/// folders; a file replacing an existing one keeps that file's mode.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_publish(
    mutation: *const keel_mutation,
    into: *const c_char,
    into_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let into = ffi::optional_utf8(into, into_len, "into")?;
        with_mutation(mutation, |m| m.publish(into.unwrap_or("")))
    })
}

/// Writes `data[0..data_len]` to the file `path` (relative to the root,
/// UTF-8): snapshot, temp file, rename over; the file and its folder are
/// fsynced before the commit point, together with those of the writes
/// around it (so an fsync failure shows at the next other change or at
/// commit, which then rolls back). A replaced file keeps its mode; a new one gets the umask mode. `..`, absolute paths
/// and paths through symlinks give KEEL_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_write(
    mutation: *const keel_mutation,
    path: *const c_char,
    path_len: usize,
    data: *const u8,
    data_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let path = ffi::utf8(path, path_len, "path")?;
        let data = ffi::bytes(data, data_len, "data")?;
        with_mutation(mutation, |m| m.write(path, data))
    })
}

/// Writes `count` files at once: `paths[i]` (UTF-8, relative to the root)
/// gets `data[i]`. Cheaper than keel_mutation_write per file: the paths are
/// snapshotted with one record write, and each changed folder is fsynced
/// once. Nothing is changed unless every path is valid (no folder, none
/// through a symlink, none inside another path of the batch); a path given
/// twice ends with its last bytes.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_write_many(
    mutation: *const keel_mutation,
    paths: *const keel_bytes,
    data: *const keel_bytes,
    count: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let paths = ffi::utf8_list(paths, count, "paths")?;
        let data = ffi::bytes_list(data, count, "data")?;
        let files: Vec<(&str, &[u8])> = paths.into_iter().zip(data).collect();
        with_mutation(mutation, |m| m.write_many(&files))
    })
}

/// Removes the file, symlink or folder `path`; KEEL_NOT_FOUND if missing.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_remove(
    mutation: *const keel_mutation,
    path: *const c_char,
    path_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let path = ffi::utf8(path, path_len, "path")?;
        with_mutation(mutation, |m| m.remove(path))
    })
}

/// Renames `from` to `to` (both relative to the root).
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_rename(
    mutation: *const keel_mutation,
    from: *const c_char,
    from_len: usize,
    to: *const c_char,
    to_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let from = ffi::utf8(from, from_len, "from")?;
        let to = ffi::utf8(to, to_len, "to")?;
        with_mutation(mutation, |m| m.rename(from, to))
    })
}

/// Creates the folder `path` and missing parents; an existing folder is fine.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_create_dir(
    mutation: *const keel_mutation,
    path: *const c_char,
    path_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let path = ffi::utf8(path, path_len, "path")?;
        with_mutation(mutation, |m| m.create_dir(path))
    })
}

/// Snapshots `count` paths (UTF-8 keel_bytes) the caller will change itself:
/// files are copied, folders hardlinked (replace files in them, never edit
/// in place), missing paths removed on rollback.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_declare(
    mutation: *const keel_mutation,
    paths: *const keel_bytes,
    count: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let paths = ffi::utf8_list(paths, count, "paths")?;
        with_mutation(mutation, |m| m.declare(&paths))
    })
}

/// Makes the mutation durable and final. If a change failed earlier or the
/// commit fails, the mutation is rolled back and the error returned. Either
/// way it has ended; free the handle with keel_mutation_free.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_commit(mutation: *const keel_mutation) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle(mutation, "mutation")?.inner.commit() })
}

/// Undoes every change. If some paths cannot be restored, all are named in
/// the error, the backups stay, and new mutations are refused until
/// recovery succeeds.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_rollback(mutation: *const keel_mutation) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle(mutation, "mutation")?.inner.rollback() })
}

/// Frees a mutation handle, rolling the mutation back if it has not ended.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_free(mutation: *mut keel_mutation) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(mutation) })
}

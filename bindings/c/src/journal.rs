//! The mutation journal: `keel_journal` and `keel_mutation`.

use std::ffi::c_char;

use keel_core::journal::MutationStatus;
use keel_core::{Error, Journal, Mutation, Result};
use std::sync::{Mutex, MutexGuard};

use crate::buf::keel_bytes;
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
/// May be used and freed on any thread, one call at a time.
pub struct keel_mutation {
    inner: Mutex<Option<Mutation>>,
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
            inner: Mutex::new(Some(mutation)),
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
                    inner: Mutex::new(Some(mutation)),
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
        ffi::put_optional(
            out,
            keel_recovery_report {
                rolled_back: report.rolled_back.len(),
                discarded: report.discarded.len(),
                quarantined: report.quarantined.len(),
                reaped: report.reaped,
            },
        );
        Ok(())
    })
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
            blocked: status.last_recovery_error.is_some(),
        };
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

/// The mutation slot; a panic in an earlier call leaves it usable (the
/// mutation itself is consistent between calls).
fn lock(mutation: &keel_mutation) -> MutexGuard<'_, Option<Mutation>> {
    mutation.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `op` on the mutation; KEEL_CLOSED once it was committed or rolled back.
unsafe fn with_mutation(mutation: *const keel_mutation, op: impl FnOnce(&mut Mutation) -> Result<()>) -> Result<()> {
    // SAFETY: passed on from the export, whose caller keeps keel.h's contract.
    let mutation = unsafe { ffi::handle(mutation, "mutation")? };
    let mut slot = lock(mutation);
    let live = slot.as_mut().ok_or_else(|| Error::closed("the mutation has ended"))?;
    op(live)
}

/// Ends the mutation with `finish` (commit or rollback).
unsafe fn finish(mutation: *const keel_mutation, finish: impl FnOnce(Mutation) -> Result<()>) -> Result<()> {
    // SAFETY: passed on from the export, whose caller keeps keel.h's contract.
    let mutation = unsafe { ffi::handle(mutation, "mutation")? };
    let live = lock(mutation)
        .take()
        .ok_or_else(|| Error::closed("the mutation has ended"))?;
    finish(live)
}

/// The mutation's sequence number, in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_seq(mutation: *const keel_mutation, out: *mut u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_value(out, "out")?;
        with_mutation(mutation, |m| {
            *out = m.seq();
            Ok(())
        })
    })
}

/// Writes `data[0..data_len]` to the file `path` (relative to the root,
/// UTF-8): snapshot, temp file, fsync, rename, fsync the folder. A replaced
/// file keeps its mode; a new one gets the umask mode. `..`, absolute paths
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
    ffi::call(|| unsafe { finish(mutation, Mutation::commit) })
}

/// Undoes every change. If some paths cannot be restored, all are named in
/// the error, the backups stay, and new mutations are refused until
/// recovery succeeds.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_rollback(mutation: *const keel_mutation) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { finish(mutation, Mutation::rollback) })
}

/// Frees a mutation handle, rolling the mutation back if it has not ended.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_mutation_free(mutation: *mut keel_mutation) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(mutation) })
}

//! [`Journal`]: crash-safe mutations of a directory tree.
//!
//! A journal manages the tree under a root folder and keeps its own state in
//! `root/.keel/` (lock file, journal records, backups, staging, quarantine).
//! A [`Mutation`] changes the tree so that, whatever happens — an error, a
//! panic, `kill -9`, a power loss, a full disk — the tree ends up exactly as
//! before the mutation or exactly as after it: bytes, modes and symlinks.
//!
//! The protocol, in order:
//! 1. [`Journal::begin`] takes the exclusive lock (an `flock` on
//!    `.keel/lock`, opened without following symlinks, plus an in-process
//!    gate) and first recovers anything a crashed mutation left.
//! 2. Before a path is first touched, it is snapshotted into
//!    `.keel/journal/<seq>.<index>` (its data made durable); then the record
//!    `.keel/journal/<seq>.json` (status `active`, one entry per path) is
//!    written atomically: the fsync of the journal folder that makes the
//!    record durable makes the backup's entry durable too. Cost grows with
//!    what is touched, not with the tree.
//! 3. Each change is made durable before the commit point: a write is a
//!    temp file renamed over the path, and the files and folders of
//!    consecutive writes are fsynced together, before the next change of
//!    another kind or the commit (a crash before then rolls them back from
//!    the record, durable before the rename); other changes are fsynced as
//!    they are made.
//! 4. `commit` removes the record and fsyncs the journal folder (the commit
//!    point: without an `active` record nothing is rolled back) and cleans
//!    up; a rollback restores every entry, fsyncs it, marks `rolled_back`
//!    and cleans up. Records marked `committed` (older builds wrote them)
//!    are discarded by recovery.
//! 5. Recovery (on open and at every exclusive acquisition that finds
//!    leftovers) rolls back `active` records newest first by sequence
//!    number, discards terminal ones and reaps orphan folders; see
//!    [`Journal::recover`].

mod audit;
mod counters;
mod fault;
mod fs;
mod handle;
mod lock;
mod manifest;
mod mutation;
mod paths;
mod record;
mod recovery;
mod restore;
mod snapshot;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

// Fault plans are a test tool: public only with the `fault-injection`
// feature (keel's own tests enable it), so no user arms one by mistake.
#[cfg(not(feature = "fault-injection"))]
use fault::FaultPlan;
#[cfg(feature = "fault-injection")]
pub use fault::{FaultAction, FaultPlan, Step};
pub use handle::SharedMutation;
pub use mutation::Mutation;
pub use record::{MutationStatus, FORMAT_VERSION};
pub use recovery::{Quarantined, RecoveryReport};

use counters::Counters;
use fs::Fs;
use lock::{RootLock, SharedGuard};
use paths::{parse_record_name, Layout};
use record::Record;
use snapshot::io_err;

use crate::{Error, ErrorKind, Result};

/// A managed directory tree whose changes are made through [`Mutation`]s.
///
/// Guarantees: mutations of one root are serialized across threads and
/// processes, and end only in the process that began them; after any crash
/// the next `open`, `begin` or `read` restores the last committed state
/// before anything else runs; a damaged record is quarantined, never
/// applied; a record of a newer format (or with a status or kind this build
/// does not know) blocks mutations and reads ([`ErrorKind::Unsupported`])
/// until a newer build recovers it or an operator resolves it; state under
/// `.keel/` that keel did not make (a symlink, FIFO, device, or a backup
/// that does not match its record) blocks recovery with
/// [`ErrorKind::Corrupt`] and nothing is touched; paths outside the root are
/// never touched. Cloning is cheap (a shared handle). Costs: `open` and
/// `begin` list four small folders; see [`Mutation`] for the cost of changes.
#[derive(Debug, Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    fs: Fs,
    layout: Layout,
    lock: Arc<RootLock>,
    /// The canonical root path, written into every record.
    root_id: String,
    last_seq: AtomicU64,
    last_recovery_error: Mutex<Option<String>>,
    /// What the last recovery in this process did (that of `open` first).
    last_recovery: Mutex<Option<RecoveryReport>>,
    counters: Counters,
}

impl Inner {
    fn stats(&self) -> JournalStats {
        let c = &self.counters;
        let io = self.fs.io();
        JournalStats {
            mutations: Counters::get(&c.begun),
            committed: Counters::get(&c.committed),
            rolled_back: Counters::get(&c.rolled_back),
            recoveries: Counters::get(&c.recoveries),
            recovered: Counters::get(&c.recovered),
            quarantined: Counters::get(&c.quarantined),
            recovery_failures: Counters::get(&c.recovery_failures),
            fsyncs: io.fsyncs,
            files_written: io.files_written,
            bytes_written: io.bytes_written,
            links: io.links,
            blocked: self.last_recovery_error.lock().is_some(),
        }
    }
}

impl crate::stats::StatsSource for Inner {
    fn stats_json(&self) -> serde_json::Value {
        crate::stats::entry(serde_json::json!({ "root": self.root_id }), &self.stats())
    }
}

/// What a journal has on disk, for operators. Serializes to the JSON the
/// Python and C surfaces give (`Journal.status()`, `keel_journal_inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStatus {
    /// Records on disk: an `active` one outside a running mutation means
    /// recovery has not finished.
    pub pending: Vec<PendingMutation>,
    /// Record files that could not be read or trusted (not yet quarantined).
    pub unreadable: Vec<String>,
    /// Folders under `.keel/quarantine/`.
    pub quarantined: Vec<String>,
    /// Why the last recovery in this process failed, if it did; mutations
    /// are refused until [`Journal::recover`] succeeds or
    /// [`Journal::resolve`] is called.
    pub last_recovery_error: Option<String>,
    /// What the last successful recovery in this process did (see
    /// [`Journal::last_recovery`]).
    pub last_recovery: Option<RecoveryReport>,
    /// Entries of `.keel/` that keel did not make (a symlink, FIFO, device
    /// or foreign file where keel keeps its state): while there are any,
    /// recovery refuses to run and mutations are refused.
    pub problems: Vec<String>,
}

/// One record on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingMutation {
    pub seq: u64,
    pub operation: String,
    pub details: String,
    pub status: MutationStatus,
    /// The snapshotted paths, relative to the root.
    pub paths: Vec<String>,
}

/// Counters of a journal handle (all clones of the same `open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    /// Mutations begun.
    pub mutations: u64,
    /// Mutations committed.
    pub committed: u64,
    /// Mutations rolled back (explicitly, on error or on drop).
    pub rolled_back: u64,
    /// Recoveries run (at open, at a lock holder's start, or asked for).
    pub recoveries: u64,
    /// Interrupted mutations rolled back by recovery.
    pub recovered: u64,
    /// Records quarantined by recovery.
    pub quarantined: u64,
    /// Recoveries that could not finish.
    pub recovery_failures: u64,
    /// fsyncs issued (files and folders).
    pub fsyncs: u64,
    /// Files created with content (copies, writes, records).
    pub files_written: u64,
    /// Bytes written into those files.
    pub bytes_written: u64,
    /// Hardlinks made (snapshots that copied nothing).
    pub links: u64,
    /// Whether the last recovery failed, so mutations are refused.
    pub blocked: bool,
}

/// A shared lock on the root: no mutation runs while it is held, and the
/// tree is in a committed state.
#[derive(Debug)]
pub struct ReadGuard {
    _guard: SharedGuard,
}

impl ReadGuard {
    /// Releases the shared lock now (as dropping the guard does): the one
    /// verb every guard of keel has, in every surface.
    pub fn release(self) {}
}

impl Journal {
    /// Opens the journal of `root` (which must be an existing folder),
    /// creating `root/.keel/` if needed, and recovers what a crash left
    /// (unless another thread or process holds the root right now; `open`
    /// never waits, and the next lock holder recovers first anyway).
    ///
    /// A symlinked `.keel` (or any of its folders, or its lock file) is
    /// refused. Records are relative to the root: those of a copied (or
    /// moved) tree are recovered in place. A failed recovery does not fail
    /// `open` — mutations are refused until it succeeds, and
    /// [`status`](Self::status) says why; what a successful one did is kept
    /// in [`last_recovery`](Self::last_recovery).
    pub fn open(root: impl AsRef<Path>) -> Result<Journal> {
        Journal::open_with(root.as_ref(), None)
    }

    /// Test hook: [`open`](Self::open) with a [`FaultPlan`] armed from the
    /// first step, so a crash during the recovery that `open` runs can be
    /// tested too.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn open_with_fault_plan(root: impl AsRef<Path>, plan: Arc<FaultPlan>) -> Result<Journal> {
        Journal::open_with(root.as_ref(), Some(plan))
    }

    fn open_with(given: &Path, plan: Option<Arc<FaultPlan>>) -> Result<Journal> {
        let root = std::fs::canonicalize(given).map_err(|e| io_err("open journal root", given, e))?;
        if !root.is_dir() {
            return Err(Error::invalid_argument(format!(
                "journal root {} is not a folder",
                root.display()
            )));
        }
        let layout = Layout::new(root.clone());
        let fs = Fs::default();
        fs.set_plan(plan);
        prepare_state_dirs(&fs, &layout)?;
        let lock = RootLock::for_path(&layout.lock, || open_lock_file(&layout.lock))?;
        let journal = Journal {
            inner: Arc::new(Inner {
                fs,
                layout,
                lock,
                root_id: root.to_string_lossy().into_owned(),
                last_seq: AtomicU64::new(0),
                last_recovery_error: Mutex::new(None),
                last_recovery: Mutex::new(None),
                counters: Counters::default(),
            }),
        };
        crate::stats::register("journal", &journal.inner);
        // Recover now unless someone holds the root: then a mutation is
        // running (nothing to recover while it lives), and whoever takes the
        // lock next recovers first anyway. Opening never waits for it.
        match journal.inner.lock.try_exclusive() {
            Ok(Some(_guard)) => {
                let _ = journal.recover_locked();
            }
            Ok(None) => {}
            Err(err) if err.kind() == ErrorKind::WouldDeadlock => {}
            Err(err) => return Err(err),
        }
        Ok(journal)
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// What the last successful recovery of this handle did — the one `open`
    /// ran first, then any later one — or `None` if none ran yet. Opening
    /// never hides that it rolled back a crashed mutation: this says so.
    pub fn last_recovery(&self) -> Option<RecoveryReport> {
        self.inner.last_recovery.lock().clone()
    }

    /// Starts a mutation: waits for the exclusive lock, recovers leftovers
    /// of crashed mutations, and refuses (with [`ErrorKind::Conflict`])
    /// when that recovery cannot finish ([`ErrorKind::Unsupported`] when a
    /// record of a newer format stops it). `operation` and `details` are kept
    /// in the record for operators.
    pub fn begin(&self, operation: &str, details: &str) -> Result<Mutation> {
        let guard = self.inner.lock.exclusive()?;
        self.start(guard, operation, details)
    }

    /// [`begin`](Self::begin) waiting `timeout` at most for the lock:
    /// `Ok(None)` when it elapsed. A host that must stay responsive (Python
    /// checking for Ctrl-C) calls it in short slices. Another process's
    /// hold is polled (an `flock` cannot time out), every 20 ms at most.
    pub fn begin_timeout(&self, operation: &str, details: &str, timeout: Duration) -> Result<Option<Mutation>> {
        match self.inner.lock.exclusive_until(deadline(timeout))? {
            Some(guard) => self.start(guard, operation, details).map(Some),
            None => Ok(None),
        }
    }

    /// [`begin`](Self::begin) without waiting: `Ok(None)` when another
    /// thread or process holds the root (e.g. to report "another ingest is
    /// running" instead of queueing behind it).
    pub fn try_begin(&self, operation: &str, details: &str) -> Result<Option<Mutation>> {
        match self.inner.lock.try_exclusive()? {
            Some(guard) => self.start(guard, operation, details).map(Some),
            None => Ok(None),
        }
    }

    /// Recovers leftovers under the freshly taken lock, then starts.
    fn start(&self, guard: lock::ExclusiveGuard, operation: &str, details: &str) -> Result<Mutation> {
        if recovery::needed(&self.inner.fs, &self.inner.layout)? {
            if let Err(err) = self.recover_locked() {
                return Err(refused(
                    &err,
                    format!(
                        "journal {}: new mutations are refused until recover() succeeds or resolve() is \
                         called: {}",
                        self.root().display(),
                        err.report()
                    ),
                ));
            }
        }
        Counters::add(&self.inner.counters.begun, 1);
        Ok(Mutation::new(
            Arc::clone(&self.inner),
            guard,
            self.next_seq(),
            operation,
            details,
        ))
    }

    /// Takes the shared lock: waits for running mutations to end and, if a
    /// crashed one left its record, recovers first, so the reader sees only
    /// committed states.
    pub fn read(&self) -> Result<ReadGuard> {
        loop {
            let shared = self.inner.lock.shared()?;
            if list_names(&self.inner, &self.inner.layout.journal)?.is_empty() {
                return Ok(ReadGuard { _guard: shared });
            }
            drop(shared);
            let exclusive = self.inner.lock.exclusive()?;
            self.recover_locked().map_err(|err| {
                refused(
                    &err,
                    format!(
                        "journal {}: cannot read, recovery failed: {}",
                        self.root().display(),
                        err.report()
                    ),
                )
            })?;
            drop(exclusive);
        }
    }

    /// [`read`](Self::read) waiting `timeout` at most: `Ok(None)` when it
    /// elapsed (see [`begin_timeout`](Self::begin_timeout)).
    pub fn read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard>> {
        let deadline = deadline(timeout);
        loop {
            let Some(shared) = self.inner.lock.shared_until(deadline)? else {
                return Ok(None);
            };
            if list_names(&self.inner, &self.inner.layout.journal)?.is_empty() {
                return Ok(Some(ReadGuard { _guard: shared }));
            }
            drop(shared);
            let Some(exclusive) = self.inner.lock.exclusive_until(deadline)? else {
                return Ok(None);
            };
            self.recover_locked().map_err(|err| {
                refused(
                    &err,
                    format!(
                        "journal {}: cannot read, recovery failed: {}",
                        self.root().display(),
                        err.report()
                    ),
                )
            })?;
            drop(exclusive);
        }
    }

    /// Runs recovery now (under the exclusive lock) and reports what it did.
    /// On failure nothing is deleted and the error names every path that
    /// could not be restored.
    pub fn recover(&self) -> Result<RecoveryReport> {
        let _guard = self.inner.lock.exclusive()?;
        self.recover_locked()
    }

    /// Gives up on rolling back mutation `seq`: its record and backups are
    /// moved to `.keel/quarantine/` (kept for inspection, not deleted) and
    /// the tree is left as it is. For operators, after inspecting
    /// [`status`](Self::status).
    pub fn resolve(&self, seq: u64) -> Result<Quarantined> {
        let _guard = self.inner.lock.exclusive()?;
        let name = paths::record_name(seq);
        let path = self.inner.layout.journal.join(&name);
        if self
            .inner
            .fs
            .lstat("resolve", &path)
            .map_err(|e| io_err("stat", &path, e))?
            .is_none()
        {
            return Err(Error::not_found(format!(
                "no record for mutation {seq} in {}",
                self.root().display()
            )));
        }
        let moved = recovery::quarantine(&self.inner.fs, &self.inner.layout, &name, "resolved by an operator")?;
        *self.inner.last_recovery_error.lock() = None;
        Ok(moved)
    }

    /// What is on disk: records, unreadable records, quarantine, problems
    /// with the state keel did not make, and the last recovery's outcome.
    /// Takes no lock.
    pub fn status(&self) -> Result<JournalStatus> {
        let inner = &self.inner;
        let mut status = read_status(&inner.fs, &inner.layout)?;
        status.last_recovery_error = inner.last_recovery_error.lock().clone();
        status.last_recovery = inner.last_recovery.lock().clone();
        Ok(status)
    }

    /// What the journal of `root` holds, without opening it: nothing is
    /// created, locked, recovered or written (a root without `.keel/` has
    /// an empty status). An interrupted mutation shows as a pending
    /// `active` record, which [`recover`](Self::recover) would roll back;
    /// backups that are not what their records say are in `problems`. For
    /// inspection tools (`keel journal status`).
    pub fn inspect(root: impl AsRef<Path>) -> Result<JournalStatus> {
        let given = root.as_ref();
        let root = std::fs::canonicalize(given).map_err(|e| io_err("inspect journal root", given, e))?;
        let layout = Layout::new(root);
        let fs = Fs::default();
        if fs
            .lstat("status", &layout.state)
            .map_err(|e| io_err("stat", &layout.state, e))?
            .is_none()
        {
            return Ok(JournalStatus::default());
        }
        let mut status = read_status(&fs, &layout)?;
        if status.problems.is_empty() {
            let scan = recovery::Scan::read(&fs, &layout)?;
            status.problems = scan.backup_problems(&fs, &layout)?;
        }
        Ok(status)
    }

    /// Counters (fsyncs issued, mutations ended, recoveries), for benchmarks
    /// and diagnostics; also in [`crate::stats::gather`] under `journal`.
    pub fn stats(&self) -> JournalStats {
        self.inner.stats()
    }

    /// Test hook: arms a [`FaultPlan`] on every file-system step of this
    /// journal (`None` disarms).
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn set_fault_plan(&self, plan: Option<Arc<FaultPlan>>) {
        self.inner.fs.set_plan(plan);
    }

    fn recover_locked(&self) -> Result<RecoveryReport> {
        let inner = &self.inner;
        let watch = counters::StepWatch::start(&inner.fs, crate::events::Level::Info);
        let result = recovery::run(&inner.fs, &inner.layout)
            .map_err(|err| err.context(format!("journal {}", self.root().display())));
        *inner.last_recovery_error.lock() = result.as_ref().err().map(ToString::to_string);
        if let Ok(report) = &result {
            *inner.last_recovery.lock() = Some(report.clone());
        }
        counters::recovery_ended(&inner.counters, &inner.root_id, &result, watch.read(&inner.fs));
        result
    }

    /// A sequence number above every earlier one: time-based so it keeps
    /// growing across processes, and above this process's last one.
    fn next_seq(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.inner.last_seq.load(Ordering::SeqCst);
        loop {
            let next = now.max(last + 1);
            match self
                .inner
                .last_seq
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }
}

/// `timeout` from now (far in the future for a huge one).
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The error for a call refused because recovery failed: `Unsupported` when
/// a record of a newer format blocks it (a newer build must finish it),
/// `Conflict` otherwise.
fn refused(cause: &Error, message: String) -> Error {
    match cause.kind() {
        ErrorKind::Unsupported => Error::unsupported(message),
        _ => Error::conflict(message),
    }
}

/// Creates `.keel/` and its folders, refusing any that is a symlink.
fn prepare_state_dirs(fs: &Fs, layout: &Layout) -> Result<()> {
    let dirs = [
        &layout.state,
        &layout.journal,
        &layout.staging,
        &layout.trash,
        &layout.quarantine,
    ];
    for dir in dirs {
        // Twice at most: another process opening the same root may create
        // the folder between our stat and our mkdir; then we check theirs.
        for attempt in 0..2 {
            match fs.lstat("open", dir).map_err(|e| io_err("stat", dir, e))? {
                Some(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::invalid_argument(format!(
                        "{} is a symlink; the journal refuses to follow it",
                        dir.display()
                    )))
                }
                Some(meta) if !meta.is_dir() => {
                    return Err(Error::invalid_argument(format!("{} is not a folder", dir.display())))
                }
                Some(_) => break,
                None => match fs.mkdir("open", dir, Some(0o700)) {
                    Ok(()) => {
                        let parent = dir.parent().unwrap_or(&layout.root);
                        fs.fsync_dir("open", parent).map_err(|e| io_err("fsync", parent, e))?;
                        break;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempt == 0 => {}
                    Err(err) => return Err(io_err("create", dir, err)),
                },
            }
        }
    }
    Ok(())
}

/// Opens (creating) the lock file: never through a symlink, never blocking
/// on a FIFO planted there, and only if it is a regular file.
fn open_lock_file(path: &PathBuf) -> Result<File> {
    if let Some(meta) = std::fs::symlink_metadata(path).ok().filter(|meta| !meta.is_file()) {
        return Err(Error::invalid_argument(format!(
            "{} is {}, not the lock file keel made; the journal refuses to use it",
            path.display(),
            fs::kind_name(&meta)
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("open lock file (symlinks are refused)", path, e))?;
    let meta = file.metadata().map_err(|e| io_err("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid_argument(format!(
            "{} is {}, not the lock file keel made",
            path.display(),
            fs::kind_name(&meta)
        )));
    }
    Ok(file)
}

fn list_names(inner: &Inner, dir: &Path) -> Result<Vec<String>> {
    list_in(&inner.fs, dir)
}

fn list_in(fs: &Fs, dir: &Path) -> Result<Vec<String>> {
    let names = fs.read_dir("status", dir).map_err(|e| io_err("list", dir, e))?;
    Ok(names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
}

/// Reads what is on disk, changing nothing (every read is of a regular
/// file, opened without following links or blocking).
fn read_status(fs: &Fs, layout: &Layout) -> Result<JournalStatus> {
    let mut status = JournalStatus {
        problems: audit::state(fs, layout)?,
        ..JournalStatus::default()
    };
    if !status.problems.is_empty() {
        return Ok(status);
    }
    status.quarantined = list_in(fs, &layout.quarantine)?;
    for name in list_in(fs, &layout.journal)? {
        let backup = parse_record_name(&name).is_none() && paths::seq_of(&name).is_some();
        if backup {
            continue;
        }
        let path = layout.journal.join(&name);
        let record = fs
            .read("status", &path)
            .ok()
            .and_then(|bytes| Record::decode(&bytes).ok())
            .filter(|record| parse_record_name(&name) == Some(record.seq));
        match record {
            Some(record) => status.pending.push(PendingMutation {
                seq: record.seq,
                paths: record.entries.iter().map(|e| e.path.clone()).collect(),
                operation: record.operation,
                details: record.details,
                status: record.status,
            }),
            None => status.unreadable.push(name),
        }
    }
    Ok(status)
}

//! [`Env`]: a shared, growable, group-committing LMDB environment.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lmdb::{Database, DatabaseFlags, Environment, EnvironmentFlags, RoTransaction, RwTransaction, Transaction};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::group_commit::{BatchEvent, GroupCommit, Outcome, Work, LOG_TARGET};
use super::registry::{self, Registry};
use super::{is_map_full, map_err, sys, Durability, EnvOptions};
use crate::events::{micros, Level, Stopwatch};
use crate::{Error, Result};

static OPEN_ENVS: Registry<Inner> = Registry::new();

/// An open LMDB environment (one file), shared by every opener of that file in
/// this process.
///
/// Cloning is cheap (an `Arc`); the environment closes when the last clone is
/// dropped. `Env` is `Send + Sync`: any thread may read or write.
///
/// Rules for closures passed to [`read`](Env::read) and [`write`](Env::write):
/// use only the transaction given, and do not call `write` from inside `read`
/// or `write` (the map may need to grow, which waits for every transaction in
/// the process to end).
#[derive(Clone)]
pub struct Env {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    env: Environment,
    path: PathBuf,
    /// Shared by every transaction; taken exclusively to resize the map,
    /// which LMDB allows only while this process has no transaction open.
    resize: RwLock<()>,
    databases: Mutex<HashMap<String, Database>>,
    pub(super) commits: GroupCommit,
    map_growths: AtomicU64,
}

/// A snapshot of an environment's size and activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct EnvStats {
    /// The memory map's current size in bytes.
    pub map_size: usize,
    /// Bytes of the map in use (up to the highest page written).
    pub used: usize,
    /// Reader slots in use, across processes.
    pub readers: u32,
    /// Write batches committed or attempted by this process (each one commit).
    pub batches: u64,
    /// Writes (calls to `write`) run by this process.
    pub writes: u64,
    /// The most writes one batch has carried.
    pub largest_batch: u64,
    /// How often this process has grown the map.
    pub map_growths: u64,
    /// Writers queued for the next batch at the moment of the snapshot.
    pub queued_writes: usize,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("path", &self.inner.path).finish()
    }
}

impl Env {
    /// Opens (creating it and its folder if missing) the LMDB file at `path`,
    /// or returns the environment this process already has open for it, by
    /// whatever spelling. Clears reader slots left by dead processes and
    /// checks the file: one that is not LMDB, or is truncated, gives
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt).
    pub fn open(path: impl AsRef<Path>, options: &EnvOptions) -> Result<Env> {
        registry::watch_for_fork();
        let canonical = registry::canonical_file_path(path.as_ref())?;
        let inner = OPEN_ENVS.get_or_open(&canonical, || Inner::open(&canonical, options))?;
        Ok(Env { inner })
    }

    /// Opens the existing file at `path` only to read it (LMDB's
    /// `MDB_RDONLY`): nothing is created, neither the file nor a database
    /// in it, and every write fails. For one-off looks at a file (the keel
    /// command's inspection). If this process has the file open already,
    /// that environment is returned (reading it is just as safe); a
    /// read-only one is never shared, so drop it before opening the file
    /// for writing. A missing file gives
    /// [`NotFound`](crate::ErrorKind::NotFound).
    pub fn open_read_only(path: impl AsRef<Path>, options: &EnvOptions) -> Result<Env> {
        registry::watch_for_fork();
        let path = path.as_ref();
        let canonical = path.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("{}: no such file", path.display())),
            _ => Error::io(format!("resolve {}", path.display()), e),
        })?;
        if let Some(inner) = OPEN_ENVS.get(&canonical) {
            return Ok(Env { inner });
        }
        let inner = Arc::new(Inner::open_with(&canonical, options, EnvironmentFlags::READ_ONLY)?);
        Ok(Env { inner })
    }

    /// The named database if the file has it; never creates one (so it
    /// works on a read-only environment).
    pub fn existing_database(&self, name: &str) -> Result<Option<Database>> {
        if let Some(db) = self.inner.databases.lock().get(name) {
            return Ok(Some(*db));
        }
        match self.inner.env.open_db(Some(name)) {
            Ok(db) => Ok(Some(db)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(err) => Err(map_err(
                format!("open database {name} of {}", self.inner.path.display()),
                err,
            )),
        }
    }

    /// The canonical path of the file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// [`path`](Env::path), for values that outlive the environment (table
    /// handles naming their file in errors).
    pub fn static_path(&self) -> &'static Path {
        registry::intern_path(&self.inner.path)
    }

    /// The named database, created if missing. Handles are cached, so this is
    /// cheap after the first call. Call it outside `read`/`write` closures.
    pub fn database(&self, name: &str) -> Result<Database> {
        self.database_with_flags(name, DatabaseFlags::empty())
    }

    /// Like [`database`](Env::database), creating it with `flags` (e.g.
    /// `DUP_SORT`) if missing.
    pub fn database_with_flags(&self, name: &str, flags: DatabaseFlags) -> Result<Database> {
        self.inner.check_usable()?;
        if let Some(db) = self.inner.databases.lock().get(name) {
            return Ok(*db);
        }
        let context = || format!("open database {name:?} in {}", self.inner.path.display());
        let db = self
            .inner
            .retrying_growth(|env| env.create_db(Some(name), flags))
            .map_err(|e| e.context(context()))?;
        self.inner.databases.lock().insert(name.to_owned(), db);
        Ok(db)
    }

    /// The names of the named databases in the file (the keys of LMDB's main
    /// database), to tell what a file holds before adding to it.
    pub fn database_names(&self) -> Result<Vec<String>> {
        self.inner.check_usable()?;
        let main = self
            .inner
            .retrying_growth(|env| env.open_db(None))
            .map_err(|e| e.context("open main database"))?;
        self.read(|txn| {
            use lmdb::Cursor;
            let mut cursor = txn.open_ro_cursor(main).map_err(|e| map_err("list databases", e))?;
            cursor
                .iter_start()
                .map(|entry| {
                    let (key, _) = entry.map_err(|e| map_err("list databases", e))?;
                    Ok(String::from_utf8_lossy(key).into_owned())
                })
                .collect()
        })
    }

    /// Runs `f` in a read-only transaction: a consistent snapshot, never
    /// blocked by writers.
    pub fn read<T>(&self, f: impl FnOnce(&RoTransaction<'_>) -> Result<T>) -> Result<T> {
        self.inner.check_usable()?;
        let (_resize, txn) = self.inner.begin(|env| env.begin_ro_txn())?;
        f(&txn)
    }

    /// One durable write: runs `f` in a write transaction and returns once
    /// the commit is on disk (per [`Durability`]).
    ///
    /// Concurrent callers share one commit (group commit): each closure runs
    /// in its own nested transaction, so an error (or panic) in one aborts
    /// only that closure's changes and is returned to its caller. `f` may run
    /// more than once — if the map fills, the batch is aborted, the map grown
    /// and the batch run again — so it must not have effects outside the
    /// transaction that cannot be repeated.
    pub fn write<T: Send>(&self, f: impl FnMut(&mut RwTransaction<'_>) -> Result<T> + Send) -> Result<T> {
        self.inner.check_usable()?;
        if super::group_commit::leading_here() {
            return Err(Error::would_deadlock(format!(
                "a write to {} from inside a write on the same thread would wait for itself: \
                 use the transaction given",
                self.inner.path.display()
            )));
        }
        if super::held::holding_here(self.address()) {
            return Err(Error::would_deadlock(format!(
                "this thread has a batch open on {}: write through the batch, or end it first",
                self.inner.path.display()
            )));
        }
        let mut job = Job { f, result: None };
        let event = self
            .inner
            .commits
            .submit(&mut job, &|batch, waited| self.inner.run_batch(batch, waited));
        // Logged by the batch's leader once every writer in it is released.
        if let Some(event) = event {
            log_batch(&self.inner.path, &event);
        }
        job.result
            .unwrap_or_else(|| Err(Error::new(crate::ErrorKind::Io, "write batch gave no result")))
    }

    /// Writes a consistent, compacted copy of the environment to `dest`
    /// while it stays in use. The copy is durable when this returns: written
    /// to a temporary file beside `dest`, fsynced, renamed over `dest`, and
    /// the folder fsynced.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        self.inner.check_usable()?;
        let dest = registry::canonical_file_path(dest.as_ref())?;
        if dest == self.inner.path {
            return Err(Error::invalid_argument(format!(
                "backup of {} onto itself",
                dest.display()
            )));
        }
        let temp = temp_path_beside(&dest);
        let result = self.inner.copy_to(&temp, &dest);
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// The map's size and use, and this process's commit counters.
    pub fn stats(&self) -> EnvStats {
        let (batches, writes, largest_batch) = self.inner.commits.counters();
        let mut stats = EnvStats {
            batches,
            writes,
            largest_batch,
            map_growths: self.inner.map_growths.load(Ordering::Relaxed),
            queued_writes: self.inner.commits.queued(),
            ..EnvStats::default()
        };
        if let (Ok(info), Ok(stat)) = (self.inner.env.info(), self.inner.env.stat()) {
            stats.map_size = info.map_size();
            stats.used = (info.last_pgno() + 1) * stat.page_size() as usize;
            stats.readers = info.num_readers();
        }
        stats
    }

    /// Holds this file's write transaction on the calling thread until it is
    /// committed or aborted (see [`HeldWrite`](super::HeldWrite)). Waits for
    /// the writers queued before it.
    pub fn hold_write(&self) -> Result<super::HeldWrite> {
        self.inner.check_usable()?;
        super::HeldWrite::begin(self)
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The shared environment's address: the same for every clone.
    pub(super) fn address(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Clears reader slots left by processes that died mid-read (as a
    /// verifier child does when a damaged page kills it), so they do not
    /// pin old pages until the next open. Returns how many were cleared.
    pub fn clear_stale_readers(&self) -> Result<usize> {
        self.inner.check_usable()?;
        sys::clear_stale_readers(&self.inner.env)
            .map_err(|e| map_err(format!("clear stale readers of {}", self.inner.path.display()), e))
    }

    /// Whether `self` and `other` are the same open environment.
    pub fn same_as(&self, other: &Env) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// One writer's closure and, once run, its result.
struct Job<F, T> {
    f: F,
    result: Option<Result<T>>,
}

impl<F, T> Work for Job<F, T>
where
    F: FnMut(&mut RwTransaction<'_>) -> Result<T> + Send,
    T: Send,
{
    fn run(&mut self, txn: &mut RwTransaction<'_>) -> Outcome {
        let result = catch_unwind(AssertUnwindSafe(|| (self.f)(txn))).unwrap_or_else(|p| Err(Error::from_panic(p)));
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(err) if is_map_full(err) => Outcome::MapFull,
            Err(_) => Outcome::Failed,
        };
        self.result = Some(result);
        outcome
    }

    fn fail(&mut self, err: Error) {
        if !matches!(self.result, Some(Err(_))) {
            self.result = Some(Err(err));
        }
    }
}

/// `write batch: path=.. writes=.. failed_writes=.. attempts=.. wait_us=..
/// run_us=.. commit_us=.. outcome=..` (`wait_us`: the oldest writer's time in
/// the queue; `commit_us`: writing the pages and, when durable, the fsync).
fn log_batch(path: &Path, event: &BatchEvent) {
    log::debug!(
        target: LOG_TARGET,
        "write batch: path={} writes={} failed_writes={} attempts={} wait_us={} run_us={} commit_us={} outcome={}",
        path.display(),
        event.writes,
        event.failed_writes,
        event.attempts,
        event.wait_us,
        event.run_us,
        event.commit_us,
        event.outcome
    );
}

/// What a batch's event reports beyond its timing.
#[derive(Default)]
struct BatchTally {
    attempts: u32,
    /// Writers whose closure failed (their changes aborted) in the last attempt.
    failed_writes: u32,
    /// The last commit's time: writing the pages and, when durable, the fsync.
    commit: Option<Duration>,
}

/// How one attempt at a batch ended.
enum BatchEnd {
    Committed,
    MapFull,
    Failed(Error),
}

impl Inner {
    fn open(path: &Path, options: &EnvOptions) -> Result<Inner> {
        Inner::open_with(path, options, EnvironmentFlags::empty())
    }

    fn open_with(path: &Path, options: &EnvOptions, extra: EnvironmentFlags) -> Result<Inner> {
        let shown = path.display();
        let mut flags = EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_TLS | extra;
        if options.durability == Durability::NoSyncRisksLastCommits {
            flags |= EnvironmentFlags::NO_SYNC;
        }
        let env = Environment::new()
            .set_flags(flags)
            .set_max_dbs(options.max_dbs)
            .set_max_readers(options.max_readers)
            .set_map_size(options.initial_map_size.max(1 << 16))
            // 0o666 so the umask alone decides the new file's mode.
            .open_with_permissions(path, 0o666)
            .map_err(|e| map_err(format!("open LMDB file {shown}"), e))?;
        check_not_truncated(&env, path)?;
        sys::clear_stale_readers(&env).map_err(|e| map_err(format!("clear stale readers of {shown}"), e))?;
        Ok(Inner {
            env,
            path: path.to_path_buf(),
            resize: RwLock::new(()),
            databases: Mutex::new(HashMap::new()),
            commits: GroupCommit::new(),
            map_growths: AtomicU64::new(0),
        })
    }

    fn check_usable(&self) -> Result<()> {
        if registry::forked() {
            return Err(Error::closed(format!(
                "LMDB file {} was opened before fork(); a child process must open its own",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Begins a transaction under the shared resize lock. If another process
    /// grew the map past ours, adopts its size and tries again.
    pub(super) fn begin<'a, T>(
        &'a self,
        begin: impl Fn(&'a Environment) -> lmdb::Result<T>,
    ) -> Result<(RwLockReadGuard<'a, ()>, T)> {
        loop {
            let guard = self.resize.read_recursive();
            match begin(&self.env) {
                Ok(txn) => return Ok((guard, txn)),
                Err(lmdb::Error::MapResized) => {
                    drop(guard);
                    self.adopt_grown_map()?;
                }
                Err(e) => return Err(map_err(format!("begin transaction on {}", self.path.display()), e)),
            }
        }
    }

    /// Runs a self-contained LMDB call that opens its own write transaction
    /// (like `create_db`), growing the map if it fills.
    fn retrying_growth<T>(&self, call: impl Fn(&Environment) -> lmdb::Result<T>) -> Result<T> {
        loop {
            let attempt = {
                let _resize = self.resize.read_recursive();
                call(&self.env)
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(lmdb::Error::MapFull) => self.grow_map()?,
                Err(lmdb::Error::MapResized) => self.adopt_grown_map()?,
                Err(e) => return Err(map_err(self.path.display(), e)),
            }
        }
    }

    /// Runs one batch to completion: every job gets a result. Returns its
    /// event when the event is on.
    fn run_batch(&self, batch: &mut [&mut dyn Work], waited: Option<Duration>) -> Option<BatchEvent> {
        let ran = Stopwatch::start(LOG_TARGET, Level::Debug);
        let mut tally = BatchTally::default();
        let outcome = loop {
            tally.attempts += 1;
            match self.try_batch(batch, &mut tally) {
                BatchEnd::Committed => break "committed",
                BatchEnd::MapFull => {
                    if let Err(err) = self.grow_map() {
                        batch.iter_mut().for_each(|job| job.fail(err.clone()));
                        break "map_full";
                    }
                }
                BatchEnd::Failed(err) => {
                    batch.iter_mut().for_each(|job| job.fail(err.clone()));
                    break "failed";
                }
            }
        };
        ran.elapsed().map(|elapsed| BatchEvent {
            writes: batch.len(),
            failed_writes: tally.failed_writes,
            attempts: tally.attempts,
            wait_us: waited.map_or(0, micros),
            run_us: micros(elapsed),
            commit_us: tally.commit.map_or(0, micros),
            outcome,
        })
    }

    /// One attempt: a write transaction, each job in a nested one, one commit.
    fn try_batch(&self, batch: &mut [&mut dyn Work], tally: &mut BatchTally) -> BatchEnd {
        tally.failed_writes = 0;
        let (_resize, mut txn) = match self.begin(|env| env.begin_rw_txn()) {
            Ok(begun) => begun,
            Err(err) => return BatchEnd::Failed(err),
        };
        for job in batch.iter_mut() {
            let mut nested = match txn.begin_nested_txn() {
                Ok(nested) => nested,
                Err(lmdb::Error::MapFull) => return BatchEnd::MapFull,
                Err(e) => return BatchEnd::Failed(map_err("begin nested transaction", e)),
            };
            match job.run(&mut nested) {
                Outcome::Ok => match nested.commit() {
                    Ok(()) => {}
                    Err(lmdb::Error::MapFull) => return BatchEnd::MapFull,
                    Err(e) => job.fail(self.write_error("commit to", e)),
                },
                Outcome::Failed => {
                    tally.failed_writes += 1;
                    nested.abort();
                }
                Outcome::MapFull => return BatchEnd::MapFull,
            }
        }
        let commit = Stopwatch::start(LOG_TARGET, Level::Debug);
        let committed = txn.commit();
        tally.commit = commit.elapsed();
        match committed {
            Ok(()) => BatchEnd::Committed,
            Err(lmdb::Error::MapFull) => BatchEnd::MapFull,
            Err(e) => BatchEnd::Failed(self.write_error("commit to", e)),
        }
    }

    /// A failed write's error. LMDB reports a short write at the end of the
    /// file as EIO; when the file system is out of space that is
    /// [`StorageFull`](crate::ErrorKind::StorageFull), not an I/O fault.
    fn write_error(&self, doing: &str, err: lmdb::Error) -> Error {
        let context = format!("{doing} {}", self.path.display());
        if err == lmdb::Error::Other(libc::EIO) && sys::file_system_full(&self.path) {
            return Error::storage_full(format!(
                "{context}: the file system is out of space (a short write at the end of the file)"
            ))
            .with_source(err);
        }
        map_err(context, err)
    }

    /// Doubles the map. Waits until this process has no transaction open.
    pub(super) fn grow_map(&self) -> Result<()> {
        let _exclusive = self.resize.write();
        let current = self.env.info().map_err(|e| map_err("read map size", e))?.map_size();
        let doubled = current.checked_mul(2).ok_or_else(|| {
            Error::storage_full(format!(
                "LMDB map of {} cannot grow past {current} bytes",
                self.path.display()
            ))
        })?;
        self.env.set_map_size(doubled).map_err(|e| {
            map_err(
                format!("grow LMDB map of {} to {doubled} bytes", self.path.display()),
                e,
            )
        })?;
        self.map_growths.fetch_add(1, Ordering::Relaxed);
        log::info!(target: LOG_TARGET, "map grew: path={} from={current} to={doubled}", self.path.display());
        Ok(())
    }

    /// Takes up the larger map size another process has set.
    fn adopt_grown_map(&self) -> Result<()> {
        let _exclusive = self.resize.write();
        self.env
            .set_map_size(0)
            .map_err(|e| map_err(format!("adopt grown map of {}", self.path.display()), e))
    }

    fn copy_to(&self, temp: &Path, dest: &Path) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(temp)
            .map_err(|e| Error::io(format!("create backup file {}", temp.display()), e))?;
        {
            let _resize = self.resize.read_recursive();
            sys::copy_compacted(&self.env, &file)
                .map_err(|e| map_err(format!("copy {} to {}", self.path.display(), temp.display()), e))?;
        }
        file.sync_all()
            .map_err(|e| Error::io(format!("fsync backup file {}", temp.display()), e))?;
        drop(file);
        std::fs::rename(temp, dest)
            .map_err(|e| Error::io(format!("rename {} to {}", temp.display(), dest.display()), e))?;
        sync_parent(dest)
    }
}

/// Refuses a file shorter than its own meta page claims: reading past the
/// end of a mapped file would kill the process with SIGBUS.
pub(crate) fn check_not_truncated(env: &Environment, path: &Path) -> Result<()> {
    let shown = path.display();
    let info = env.info().map_err(|e| map_err(format!("read header of {shown}"), e))?;
    let stat = env.stat().map_err(|e| map_err(format!("read header of {shown}"), e))?;
    let needed = (info.last_pgno() as u64 + 1) * u64::from(stat.page_size());
    let actual = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("stat {shown}"), e))?
        .len();
    if actual < needed {
        return Err(Error::corrupt(format!(
            "LMDB file {shown} is truncated: {actual} bytes, but its header says {needed}"
        )));
    }
    Ok(())
}

fn temp_path_beside(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.tmp-{}-{unique}", std::process::id()))
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("fsync folder {}", parent.display()), e))
}

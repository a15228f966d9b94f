//! The root lock: an `flock` on `.keel/lock` for other processes plus an
//! in-process reader/writer gate for other threads.
//!
//! `flock` locks belong to an open file description, so one process shares a
//! single lock file handle per root (a process-wide registry keyed by the
//! canonical lock path) and the gate decides which thread may use it. Guards
//! are `Send`: a host may release a lock on another thread than took it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

/// The shared lock of one root within this process.
#[derive(Debug)]
pub(crate) struct RootLock {
    file: File,
    path: PathBuf,
    gate: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    /// The thread that took the exclusive lock, while it is held.
    writer: Option<ThreadId>,
    /// The threads that took a shared lock (one element per guard).
    readers: Vec<ThreadId>,
}

impl Gate {
    /// Refuses a wait that could only end when this very thread releases
    /// what it holds: the locks are not reentrant.
    fn check_not_held_by(&self, me: ThreadId) -> Result<()> {
        if self.writer == Some(me) || self.readers.contains(&me) {
            return Err(Error::would_deadlock(
                "this thread already holds this journal's lock (a mutation or a read guard); \
                 the journal's locks are not reentrant",
            ));
        }
        Ok(())
    }
}

/// The longest pause between two polls of another process's `flock` in a
/// timed wait.
const POLL_CAP: Duration = Duration::from_millis(20);

type Registry = Mutex<HashMap<PathBuf, Weak<RootLock>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl RootLock {
    /// The process's lock for `path`, opened by `open` the first time.
    pub(crate) fn for_path(path: &Path, open: impl FnOnce() -> Result<File>) -> Result<Arc<RootLock>> {
        let mut locks = registry().lock();
        locks.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
            return Ok(lock);
        }
        let lock = Arc::new(RootLock {
            file: open()?,
            path: path.to_path_buf(),
            gate: Mutex::new(Gate::default()),
            changed: Condvar::new(),
        });
        locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
        Ok(lock)
    }

    /// Takes exclusive use of the root only if no thread or process holds
    /// it; `None` when that would need a wait.
    pub(crate) fn try_exclusive(self: &Arc<Self>) -> Result<Option<ExclusiveGuard>> {
        let me = thread::current().id();
        let mut gate = self.gate.lock();
        gate.check_not_held_by(me)?;
        if gate.writer.is_some() || !gate.readers.is_empty() {
            return Ok(None);
        }
        gate.writer = Some(me);
        drop(gate);
        let taken = self.flock(libc::LOCK_EX | libc::LOCK_NB);
        match taken {
            Ok(()) => Ok(Some(ExclusiveGuard::new(self))),
            Err(err) => {
                self.gate.lock().writer = None;
                self.changed.notify_all();
                match err.kind() {
                    crate::ErrorKind::Busy => Ok(None),
                    _ => Err(err),
                }
            }
        }
    }

    /// Waits for exclusive use of the root across threads and processes.
    pub(crate) fn exclusive(self: &Arc<Self>) -> Result<ExclusiveGuard> {
        let me = thread::current().id();
        let mut gate = self.gate.lock();
        gate.check_not_held_by(me)?;
        while gate.writer.is_some() || !gate.readers.is_empty() {
            self.changed.wait(&mut gate);
        }
        gate.writer = Some(me);
        drop(gate);
        // Other threads now wait on the gate, so the blocking flock below
        // only ever waits for other processes.
        if let Err(err) = self.flock(libc::LOCK_EX) {
            self.gate.lock().writer = None;
            self.changed.notify_all();
            return Err(err);
        }
        Ok(ExclusiveGuard::new(self))
    }

    /// [`exclusive`](Self::exclusive) waiting until `deadline` at most:
    /// `None` when it passed. Other threads are waited for on the gate;
    /// another process is polled (`flock` has no timeout) with pauses
    /// growing to [`POLL_CAP`].
    pub(crate) fn exclusive_until(self: &Arc<Self>, deadline: Instant) -> Result<Option<ExclusiveGuard>> {
        let me = thread::current().id();
        let mut gate = self.gate.lock();
        gate.check_not_held_by(me)?;
        while gate.writer.is_some() || !gate.readers.is_empty() {
            if self.changed.wait_until(&mut gate, deadline).timed_out()
                && (gate.writer.is_some() || !gate.readers.is_empty())
            {
                return Ok(None);
            }
        }
        gate.writer = Some(me);
        drop(gate);
        let release = || {
            self.gate.lock().writer = None;
            self.changed.notify_all();
        };
        let mut pause = Duration::from_millis(1);
        loop {
            match self.flock(libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(Some(ExclusiveGuard::new(self))),
                Err(err) if err.kind() == crate::ErrorKind::Busy => {}
                Err(err) => {
                    release();
                    return Err(err);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                release();
                return Ok(None);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(POLL_CAP);
        }
    }

    /// [`shared`](Self::shared) waiting until `deadline` at most: `None`
    /// when it passed (see [`exclusive_until`](Self::exclusive_until)).
    pub(crate) fn shared_until(self: &Arc<Self>, deadline: Instant) -> Result<Option<SharedGuard>> {
        let me = thread::current().id();
        let mut pause = Duration::from_millis(1);
        loop {
            let mut gate = self.gate.lock();
            if gate.writer == Some(me) {
                gate.check_not_held_by(me)?;
            }
            while gate.writer.is_some() {
                if self.changed.wait_until(&mut gate, deadline).timed_out() && gate.writer.is_some() {
                    return Ok(None);
                }
            }
            let taken = match gate.readers.is_empty() {
                true => self.flock(libc::LOCK_SH | libc::LOCK_NB),
                false => Ok(()),
            };
            match taken {
                Ok(()) => {
                    gate.readers.push(me);
                    return Ok(Some(SharedGuard {
                        lock: Arc::clone(self),
                        reader: me,
                        owner: std::process::id(),
                    }));
                }
                Err(err) if err.kind() == crate::ErrorKind::Busy => {}
                Err(err) => return Err(err),
            }
            // Another process writes: wait outside the gate, then retry.
            drop(gate);
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(POLL_CAP);
        }
    }

    /// Waits for shared use: many readers, no writer.
    pub(crate) fn shared(self: &Arc<Self>) -> Result<SharedGuard> {
        let me = thread::current().id();
        let mut gate = self.gate.lock();
        if gate.writer == Some(me) {
            gate.check_not_held_by(me)?;
        }
        while gate.writer.is_some() {
            self.changed.wait(&mut gate);
        }
        if gate.readers.is_empty() {
            // Held under the gate so a second reader cannot slip in before
            // the process-level shared lock is taken.
            self.flock(libc::LOCK_SH)?;
        }
        gate.readers.push(me);
        Ok(SharedGuard {
            lock: Arc::clone(self),
            reader: me,
            owner: std::process::id(),
        })
    }

    fn flock(&self, operation: i32) -> Result<()> {
        loop {
            // SAFETY: the descriptor is owned by `self.file` and open.
            if unsafe { libc::flock(self.file.as_raw_fd(), operation) } == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(format!("flock {}", self.path.display()), err));
            }
        }
    }

    fn unlock(&self) {
        // Unlocking an flock we hold cannot fail in a way we could act on.
        let _ = self.flock(libc::LOCK_UN);
    }
}

/// Exclusive use of a root; released on drop, in the process that took it
/// only.
#[derive(Debug)]
pub(crate) struct ExclusiveGuard {
    lock: Arc<RootLock>,
    /// The process that took it. A forked child shares the lock file's open
    /// description, so its `LOCK_UN` would release the parent's lock: a
    /// guard dropped in another process does nothing.
    owner: u32,
}

impl ExclusiveGuard {
    fn new(lock: &Arc<RootLock>) -> ExclusiveGuard {
        ExclusiveGuard {
            lock: Arc::clone(lock),
            owner: std::process::id(),
        }
    }
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        self.lock.unlock();
        self.lock.gate.lock().writer = None;
        self.lock.changed.notify_all();
    }
}

/// Shared use of a root; released on drop, in the process that took it only
/// (see [`ExclusiveGuard`]).
#[derive(Debug)]
pub(crate) struct SharedGuard {
    lock: Arc<RootLock>,
    /// The thread that took it (the holder, wherever it is released).
    reader: ThreadId,
    owner: u32,
}

impl Drop for SharedGuard {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        let mut gate = self.lock.gate.lock();
        if let Some(at) = gate.readers.iter().position(|r| *r == self.reader) {
            gate.readers.swap_remove(at);
        }
        if gate.readers.is_empty() {
            self.lock.unlock();
        }
        drop(gate);
        self.lock.changed.notify_all();
    }
}

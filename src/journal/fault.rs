//! Test-only fault plans: fail, kill or "power off" the process at the n-th
//! file-system step of the journal protocol.
//!
//! A plan counts every step that goes through [`super::fs::Fs`]. Tests first
//! run a scenario with [`FaultPlan::count`] to learn how many steps it takes,
//! then run it again once per step with a fault armed at that step. The power
//! loss mode also tracks every write and folder entry not yet made durable by
//! an fsync and throws them away at the crash, the way LevelDB's
//! fault-injection environment does, which is what proves the fsync order.

// Without the `fault-injection` feature only the hooks `fs.rs` calls are
// reachable; the plan builders are for keel's own tests.
#![cfg_attr(not(feature = "fault-injection"), allow(dead_code))]

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// What happens when the armed step is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The step fails with this OS error number (e.g. `libc::EIO`, `libc::ENOSPC`).
    Fail(i32),
    /// Every step from the armed one on fails with this OS error number.
    FailFrom(i32),
    /// The process SIGKILLs itself before the step.
    Kill,
    /// Un-synced writes and folder entries are discarded, then SIGKILL.
    PowerLoss,
}

/// A fault plan for one journal (see the module docs). Not for production use.
#[derive(Debug)]
pub struct FaultPlan {
    counter: AtomicUsize,
    trigger: Option<(usize, FaultAction)>,
    /// Every step with one of these names fails with its errno.
    matching: Vec<(String, i32)>,
    steps: Mutex<Vec<Step>>,
    tracker: Option<Mutex<Tracker>>,
}

/// One recorded step: its name and whether it changes the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `"<protocol step>/<system call>"`, e.g. `"write/rename"`.
    pub name: String,
    /// False for reads (`lstat`, `readdir`, reading a backup).
    pub mutates: bool,
}

impl FaultPlan {
    /// A plan that only records the steps taken.
    pub fn count() -> FaultPlan {
        FaultPlan::with(None, None)
    }

    /// A plan that makes step `step` (0-based) fail with `errno`.
    pub fn fail_at(step: usize, errno: i32) -> FaultPlan {
        FaultPlan::with(Some((step, FaultAction::Fail(errno))), None)
    }

    /// A plan that makes step `step` and every later one fail with `errno`.
    pub fn fail_from(step: usize, errno: i32) -> FaultPlan {
        FaultPlan::with(Some((step, FaultAction::FailFrom(errno))), None)
    }

    /// A plan that makes every step named `name` (`"<step>/<call>"`, e.g.
    /// `"snapshot/link"`) fail with `errno`: for testing fallbacks.
    pub fn fail_matching(name: &str, errno: i32) -> FaultPlan {
        FaultPlan::fail_matching_all(&[(name, errno)])
    }

    /// [`fail_matching`](Self::fail_matching) for several step names at once.
    pub fn fail_matching_all(rules: &[(&str, i32)]) -> FaultPlan {
        let mut plan = FaultPlan::with(None, None);
        plan.matching = rules.iter().map(|(name, errno)| ((*name).to_owned(), *errno)).collect();
        plan
    }

    /// A plan that SIGKILLs the process just before step `step`.
    pub fn kill_at(step: usize) -> FaultPlan {
        FaultPlan::with(Some((step, FaultAction::Kill)), None)
    }

    /// A plan that simulates a power loss just before step `step`: un-synced
    /// data and folder entries are rolled back (copies of replaced entries are
    /// kept in `ghost_dir`, outside the tree), then the process SIGKILLs itself.
    pub fn power_loss_at(step: usize, ghost_dir: PathBuf) -> FaultPlan {
        let tracker = Tracker {
            ghost_dir,
            next_ghost: 0,
            dirty: HashSet::new(),
            ops: Vec::new(),
        };
        FaultPlan::with(Some((step, FaultAction::PowerLoss)), Some(tracker))
    }

    fn with(trigger: Option<(usize, FaultAction)>, tracker: Option<Tracker>) -> FaultPlan {
        FaultPlan {
            counter: AtomicUsize::new(0),
            trigger,
            matching: Vec::new(),
            steps: Mutex::new(Vec::new()),
            tracker: tracker.map(Mutex::new),
        }
    }

    /// The steps taken so far, in order.
    pub fn steps(&self) -> Vec<Step> {
        self.steps.lock().clone()
    }

    /// Called before every step; returns the injected error, or never returns
    /// for the kill modes.
    pub(crate) fn point(&self, step: &str, call: &str, mutates: bool) -> io::Result<()> {
        let index = self.counter.fetch_add(1, Ordering::SeqCst);
        self.steps.lock().push(Step {
            name: format!("{step}/{call}"),
            mutates,
        });
        for (name, errno) in &self.matching {
            if name.split_once('/') == Some((step, call)) {
                return Err(injected(*errno));
            }
        }
        let Some((at, action)) = self.trigger else {
            return Ok(());
        };
        match action {
            FaultAction::Fail(errno) if index == at => Err(injected(errno)),
            FaultAction::FailFrom(errno) if index >= at => Err(injected(errno)),
            FaultAction::Kill if index == at => die(),
            FaultAction::PowerLoss if index == at => {
                if let Some(tracker) = &self.tracker {
                    tracker.lock().lose_unsynced();
                }
                die()
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn tracking(&self) -> bool {
        self.tracker.is_some()
    }

    pub(crate) fn track(&self, event: Event<'_>) {
        if let Some(tracker) = &self.tracker {
            tracker.lock().record(event);
        }
    }
}

/// An injected error is a real OS error, so it is classified exactly as
/// the failure it stands for (ENOSPC becomes `StorageFull`).
fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn die() -> ! {
    // SAFETY: kill and getpid have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL did not stop the process")
}

/// A change the power-loss tracker must know about.
pub(crate) enum Event<'a> {
    /// A file was created and written; its data is not durable yet.
    Dirty(&'a Path),
    /// The file's data was fsynced.
    Synced(&'a Path),
    /// A folder was fsynced: its entries are durable.
    DirSynced(&'a Path),
    /// An entry is about to be created at the path (replacing what is there).
    Creating(&'a Path),
    /// The entry at the path is about to be removed.
    Removing(&'a Path),
    /// The entry at `from` is about to be renamed to `to`.
    Renaming(&'a Path, &'a Path),
}

#[derive(Debug)]
struct Tracker {
    ghost_dir: PathBuf,
    next_ghost: usize,
    dirty: HashSet<PathBuf>,
    ops: Vec<DirOp>,
}

/// A folder-entry change not yet made durable by an fsync of its folder.
#[derive(Debug)]
enum DirOp {
    /// An entry appeared at `path`; `replaced` holds a copy of what it replaced.
    Created { path: PathBuf, replaced: Option<PathBuf> },
    /// The entry at `path` went away; `ghost` holds a copy of it.
    Removed { path: PathBuf, ghost: PathBuf },
}

impl DirOp {
    fn path(&self) -> &Path {
        match self {
            DirOp::Created { path, .. } | DirOp::Removed { path, .. } => path,
        }
    }
}

impl Tracker {
    fn record(&mut self, event: Event<'_>) {
        match event {
            Event::Dirty(path) => {
                self.dirty.insert(path.to_path_buf());
            }
            Event::Synced(path) => {
                self.dirty.remove(path);
            }
            Event::DirSynced(dir) => self.ops.retain(|op| op.path().parent() != Some(dir)),
            Event::Creating(path) => {
                let replaced = self.ghost(path);
                self.ops.push(DirOp::Created {
                    path: path.to_path_buf(),
                    replaced,
                });
            }
            Event::Removing(path) => {
                if let Some(ghost) = self.ghost(path) {
                    self.ops.push(DirOp::Removed {
                        path: path.to_path_buf(),
                        ghost,
                    });
                }
            }
            Event::Renaming(from, to) => {
                if let Some(ghost) = self.ghost(from) {
                    self.ops.push(DirOp::Removed {
                        path: from.to_path_buf(),
                        ghost,
                    });
                }
                let replaced = self.ghost(to);
                self.ops.push(DirOp::Created {
                    path: to.to_path_buf(),
                    replaced,
                });
                if self.dirty.remove(from) {
                    self.dirty.insert(to.to_path_buf());
                }
            }
        }
    }

    /// Copies whatever is at `path` into the ghost folder, so it can come back.
    fn ghost(&mut self, path: &Path) -> Option<PathBuf> {
        fs::symlink_metadata(path).ok()?;
        let ghost = self.ghost_dir.join(self.next_ghost.to_string());
        self.next_ghost += 1;
        fs::create_dir_all(&self.ghost_dir).ok()?;
        copy_any(path, &ghost).ok()?;
        Some(ghost)
    }

    /// What a power loss does: un-synced file data is lost, then every
    /// un-synced folder entry change is undone, newest first.
    fn lose_unsynced(&mut self) {
        for path in &self.dirty {
            if let Ok(meta) = fs::symlink_metadata(path) {
                if meta.is_file() {
                    let _ = fs::OpenOptions::new().write(true).truncate(true).open(path);
                }
            }
        }
        for op in self.ops.drain(..).rev() {
            match op {
                DirOp::Created { path, replaced } => {
                    remove_any(&path);
                    if let Some(ghost) = replaced {
                        let _ = copy_any(&ghost, &path);
                    }
                }
                DirOp::Removed { path, ghost } => {
                    if fs::symlink_metadata(&path).is_err() {
                        let _ = copy_any(&ghost, &path);
                    }
                }
            }
        }
    }
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Copies a file, symlink or folder tree with its modes, never following links.
fn copy_any(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_any(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
    } else {
        fs::copy(from, to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
    }
}

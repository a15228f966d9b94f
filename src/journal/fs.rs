//! Every file-system call of the journal protocol, each behind a named step.
//!
//! Nothing else in `journal/` touches the disk. Each call first passes its
//! step (`"<protocol step>/<system call>"`) to the fault plan when one is
//! armed, so tests can fail or kill the process at every step in turn, and
//! tells the power-loss tracker what it changes. Calls never follow symlinks:
//! files are opened with `O_NOFOLLOW`, metadata is read with `lstat`.

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::fault::{Event, FaultPlan};

/// The file-system layer of one journal: the fault plan and its I/O counters.
#[derive(Debug, Default)]
pub(crate) struct Fs {
    plan: RwLock<Option<Arc<FaultPlan>>>,
    fsyncs: AtomicU64,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
    links: AtomicU64,
}

/// What a journal's file-system layer has done, for events and stats: a
/// step's own I/O is the difference of two readings (mutations of a root are
/// serialized, so nothing else moves the counters meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Io {
    pub(crate) fsyncs: u64,
    /// Files created with content (copies, writes, records).
    pub(crate) files_written: u64,
    pub(crate) bytes_written: u64,
    /// Hardlinks made (snapshots that copied nothing).
    pub(crate) links: u64,
}

impl Io {
    /// The I/O done between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Io) -> Io {
        Io {
            fsyncs: self.fsyncs.saturating_sub(earlier.fsyncs),
            files_written: self.files_written.saturating_sub(earlier.files_written),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
            links: self.links.saturating_sub(earlier.links),
        }
    }
}

impl std::fmt::Display for Io {
    /// `files=.. bytes=.. links=.. fsyncs=..`, the fields of journal events.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "files={} bytes={} links={} fsyncs={}",
            self.files_written, self.bytes_written, self.links, self.fsyncs
        )
    }
}

/// `errno`s after which a hardlink snapshot falls back to copying: every
/// "cannot hardlink here" answer (EINVAL comes from file systems without
/// links, such as some FUSE and network mounts).
const LINK_FALLBACK: [i32; 7] = [
    libc::EXDEV,
    libc::EINVAL,
    libc::EPERM,
    libc::EACCES,
    libc::EMLINK,
    libc::EOPNOTSUPP,
    libc::ENOSYS,
];

/// Whether a failed `link` should fall back to a copy.
pub(crate) fn link_should_copy(err: &io::Error) -> bool {
    err.raw_os_error().is_some_and(|errno| LINK_FALLBACK.contains(&errno))
}

/// Whether a failed `rename` crossed file systems.
pub(crate) fn crossed_devices(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EXDEV)
}

impl Fs {
    pub(crate) fn set_plan(&self, plan: Option<Arc<FaultPlan>>) {
        *self.plan.write() = plan;
    }

    /// The I/O counters now.
    pub(crate) fn io(&self) -> Io {
        Io {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            files_written: self.files_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            links: self.links.load(Ordering::Relaxed),
        }
    }

    fn point(&self, step: &str, call: &str, mutates: bool) -> io::Result<()> {
        match &*self.plan.read() {
            Some(plan) => plan.point(step, call, mutates),
            None => Ok(()),
        }
    }

    fn track(&self, event: Event<'_>) {
        if let Some(plan) = &*self.plan.read() {
            if plan.tracking() {
                plan.track(event);
            }
        }
    }

    /// `lstat`, with a missing path as `None`.
    pub(crate) fn lstat(&self, step: &str, path: &Path) -> io::Result<Option<Metadata>> {
        self.point(step, "lstat", false)?;
        match fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some(meta)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The names in a folder, sorted so every walk is deterministic.
    pub(crate) fn read_dir(&self, step: &str, dir: &Path) -> io::Result<Vec<OsString>> {
        self.point(step, "readdir", false)?;
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    pub(crate) fn read_link(&self, step: &str, path: &Path) -> io::Result<PathBuf> {
        self.point(step, "readlink", false)?;
        fs::read_link(path)
    }

    /// Reads a whole regular file, never following a symlink at `path` nor
    /// opening anything else (a FIFO or device there is an error, at once).
    pub(crate) fn read(&self, step: &str, path: &Path) -> io::Result<Vec<u8>> {
        self.point(step, "read", false)?;
        let mut bytes = Vec::new();
        open_regular(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Opens a regular file for reading (see [`read`](Self::read)).
    pub(crate) fn open_read(&self, step: &str, path: &Path) -> io::Result<File> {
        self.point(step, "open", false)?;
        open_regular(path)
    }

    /// The size and CRC-32C of a regular file's content.
    pub(crate) fn checksum(&self, step: &str, path: &Path) -> io::Result<Content> {
        self.point(step, "read", false)?;
        let mut reader = Hashing::new(open_regular(path)?);
        io::copy(&mut reader, &mut io::sink())?;
        Ok(reader.content())
    }

    /// Creates `path` (which must not exist), fills it from `data`, sets
    /// `mode` (or leaves the umask mode of a `0o666` create) and fsyncs it.
    pub(crate) fn write_new(&self, step: &str, path: &Path, data: &mut dyn Read, mode: Option<u32>) -> io::Result<u64> {
        let (file, written) = self.write_unsynced(step, path, data, mode)?;
        self.point(step, "fsync", true)?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        file.sync_all()?;
        self.track(Event::Synced(path));
        Ok(written)
    }

    /// [`write_new`](Self::write_new) without the fsync: the open file is
    /// returned for [`fsync_all`](Self::fsync_all).
    pub(crate) fn write_unsynced(
        &self,
        step: &str,
        path: &Path,
        data: &mut dyn Read,
        mode: Option<u32>,
    ) -> io::Result<(File, u64)> {
        self.point(step, "create", true)?;
        self.track(Event::Creating(path));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        self.track(Event::Dirty(path));
        self.point(step, "write", true)?;
        let written = io::copy(data, &mut file)?;
        file.flush()?;
        self.files_written.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        if let Some(mode) = mode {
            self.point(step, "fchmod", true)?;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok((file, written))
    }

    /// fsyncs files (opened by [`write_unsynced`](Self::write_unsynced)) and
    /// folders at once, each on its own thread: their fsyncs overlap (file
    /// systems such as ext4 and XFS serve them with one journal commit), so
    /// the batch waits about as long as one. Fault points are passed in
    /// order first; what counts as synced is told only once all are.
    /// Returns the first failure, after every fsync has ended.
    pub(crate) fn fsync_all(&self, step: &str, targets: Vec<Sync>) -> io::Result<()> {
        let mut opened = Vec::with_capacity(targets.len());
        for target in targets {
            match target {
                Sync::File(path, file) => {
                    self.point(step, "fsync", true)?;
                    opened.push((path, file, false));
                }
                Sync::Dir(path) => {
                    self.point(step, "fsync_dir", true)?;
                    let dir = open_dir(&path)?;
                    opened.push((path, dir, true));
                }
            }
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let results: Vec<io::Result<()>> = match opened.as_slice() {
            [] => Vec::new(),
            [(_, file, _)] => vec![file.sync_all()],
            [(_, first, _), rest @ ..] => std::thread::scope(|scope| {
                let others: Vec<_> = rest
                    .iter()
                    .map(|(_, file, _)| scope.spawn(move || file.sync_all()))
                    .collect();
                let mut results = vec![first.sync_all()];
                results.extend(others.into_iter().map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")))
                }));
                results
            }),
        };
        results.into_iter().collect::<io::Result<Vec<()>>>()?;
        for (path, _, is_dir) in &opened {
            self.track(if *is_dir {
                Event::DirSynced(path)
            } else {
                Event::Synced(path)
            });
        }
        Ok(())
    }

    /// Copies the file `from` to the new file `to` with `mode`, fsynced;
    /// returns what was copied (size and checksum, computed on the way).
    pub(crate) fn copy_file(&self, step: &str, from: &Path, to: &Path, mode: u32) -> io::Result<Content> {
        let mut source = Hashing::new(self.open_read(step, from)?);
        self.write_new(step, to, &mut source, Some(mode))?;
        Ok(source.content())
    }

    /// fsyncs an existing file (e.g. one the caller wrote into staging).
    pub(crate) fn fsync_file(&self, step: &str, path: &Path) -> io::Result<()> {
        self.point(step, "fsync", true)?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        open_regular(path)?.sync_all()?;
        self.track(Event::Synced(path));
        Ok(())
    }

    /// fsyncs a folder, making its entries (creates, renames, unlinks) durable.
    pub(crate) fn fsync_dir(&self, step: &str, dir: &Path) -> io::Result<()> {
        self.point(step, "fsync_dir", true)?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        open_dir(dir)?.sync_all()?;
        self.track(Event::DirSynced(dir));
        Ok(())
    }

    pub(crate) fn rename(&self, step: &str, from: &Path, to: &Path) -> io::Result<()> {
        self.point(step, "rename", true)?;
        self.track(Event::Renaming(from, to));
        fs::rename(from, to)
    }

    /// Creates a folder with `mode`, or the umask mode of `0o777` when `None`.
    pub(crate) fn mkdir(&self, step: &str, path: &Path, mode: Option<u32>) -> io::Result<()> {
        self.point(step, "mkdir", true)?;
        self.track(Event::Creating(path));
        fs::create_dir(path)?;
        if let Some(mode) = mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    pub(crate) fn unlink(&self, step: &str, path: &Path) -> io::Result<()> {
        self.point(step, "unlink", true)?;
        self.track(Event::Removing(path));
        fs::remove_file(path)
    }

    pub(crate) fn rmdir(&self, step: &str, path: &Path) -> io::Result<()> {
        self.point(step, "rmdir", true)?;
        self.track(Event::Removing(path));
        fs::remove_dir(path)
    }

    pub(crate) fn symlink(&self, step: &str, target: &Path, path: &Path) -> io::Result<()> {
        self.point(step, "symlink", true)?;
        self.track(Event::Creating(path));
        symlink(target, path)
    }

    pub(crate) fn hard_link(&self, step: &str, from: &Path, to: &Path) -> io::Result<()> {
        self.point(step, "link", true)?;
        self.track(Event::Creating(to));
        fs::hard_link(from, to)?;
        self.links.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the mode of a file or folder (callers have checked it is not a
    /// symlink).
    pub(crate) fn chmod(&self, step: &str, path: &Path, mode: u32) -> io::Result<()> {
        self.point(step, "chmod", true)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    /// Removes whatever is at `path` (a whole tree for a folder), never
    /// following symlinks; a missing path is fine.
    pub(crate) fn remove_any(&self, step: &str, path: &Path) -> io::Result<()> {
        let Some(meta) = self.lstat(step, path)? else {
            return Ok(());
        };
        if !meta.is_dir() {
            return self.unlink(step, path);
        }
        if meta_mode(&meta) & 0o700 != 0o700 {
            // A read-only folder (a backup of one) must be writable to empty it.
            self.chmod(step, path, 0o700)?;
        }
        for name in self.read_dir(step, path)? {
            self.remove_any(step, &path.join(name))?;
        }
        self.rmdir(step, path)
    }

    /// fsyncs every file and folder under `path` (a staged tree before it is
    /// published), children before their folder.
    pub(crate) fn fsync_tree(&self, step: &str, path: &Path) -> io::Result<()> {
        let Some(meta) = self.lstat(step, path)? else {
            return Ok(());
        };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if !meta.is_dir() {
            return self.fsync_file(step, path);
        }
        for name in self.read_dir(step, path)? {
            self.fsync_tree(step, &path.join(name))?;
        }
        self.fsync_dir(step, path)
    }
}

/// What [`Fs::fsync_all`] syncs: a file opened for writing, or a folder.
pub(crate) enum Sync {
    File(PathBuf, File),
    Dir(PathBuf),
}

/// Opens a folder to fsync it, never through a symlink.
fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// The permission bits of `meta` (`0o7777`).
pub(crate) fn meta_mode(meta: &Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.mode() & 0o7777
}

/// Opens `path` for reading only if it is a regular file: `lstat` first (so
/// a device is never opened), then `O_NOFOLLOW | O_NONBLOCK` (so a FIFO
/// swapped in meanwhile cannot block the open), then `fstat` to check that
/// the file opened is the one checked.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let before = fs::symlink_metadata(path)?;
    if !before.is_file() {
        return Err(not_regular(path, &before));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.ino() != before.ino() || opened.dev() != before.dev() {
        return Err(not_regular(path, &opened));
    }
    Ok(file)
}

/// The error for a path that is not the regular file keel expects there.
pub(crate) fn not_regular(path: &Path, meta: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is {}, not a regular file", path.display(), kind_name(meta)),
    )
}

/// What a metadata's file type is, for messages.
pub(crate) fn kind_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_symlink() {
        "a symlink"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "of an unknown type"
    }
}

/// A file's content as the journal records it: size and CRC-32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) size: u64,
    pub(crate) crc: u32,
}

/// A reader that checksums what passes through it.
pub(crate) struct Hashing<R> {
    inner: R,
    size: u64,
    crc: u32,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Hashing<R> {
        Hashing { inner, size: 0, crc: 0 }
    }

    pub(crate) fn content(&self) -> Content {
        Content {
            size: self.size,
            crc: self.crc,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

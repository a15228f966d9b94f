//! The process-wide registry: one open environment per canonical file path.
//!
//! LMDB must not open the same file twice in one process (its locks are per
//! process; a second handle would corrupt them and break on close), so every
//! `Env::open` of a file goes through here. Entries are weak: when the last
//! `Env` of a file is dropped the environment closes, and a later open starts
//! fresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock, Weak};

use parking_lot::Mutex;

use crate::{Error, Result};

type Entries<T> = Mutex<HashMap<PathBuf, Weak<T>>>;

/// A registry of shared values keyed by canonical path.
pub(crate) struct Registry<T> {
    entries: OnceLock<Entries<T>>,
}

impl<T> Registry<T> {
    pub(crate) const fn new() -> Registry<T> {
        Registry {
            entries: OnceLock::new(),
        }
    }

    /// The live value for `canonical`, or a new one made by `open` (called
    /// under the registry lock, so two threads never open one file twice).
    /// The value already open for `canonical`, if any.
    pub(crate) fn get(&self, canonical: &Path) -> Option<Arc<T>> {
        self.entries.get()?.lock().get(canonical).and_then(Weak::upgrade)
    }

    pub(crate) fn get_or_open(&self, canonical: &Path, open: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut entries = self.entries.get_or_init(Default::default).lock();
        if let Some(live) = entries.get(canonical).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let value = Arc::new(open()?);
        entries.retain(|_, weak| weak.strong_count() > 0);
        entries.insert(canonical.to_path_buf(), Arc::downgrade(&value));
        Ok(value)
    }
}

/// `path` as a `&'static Path`, leaked once per distinct path in the
/// process (tables name their file in errors and are `Copy`; the number of
/// files a process opens bounds what is kept).
pub(crate) fn intern_path(path: &Path) -> &'static Path {
    static INTERNED: Mutex<Vec<&'static Path>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock();
    if let Some(known) = interned.iter().find(|known| **known == path) {
        return known;
    }
    let leaked: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
    interned.push(leaked);
    leaked
}

/// The canonical form of a database file path, creating its parent folders:
/// symlinks and `.`/`..` in the folder resolved, and the file itself resolved
/// if it exists. Two spellings of one file give one key.
pub(crate) fn canonical_file_path(path: &Path) -> Result<PathBuf> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(Error::invalid_argument("database path is empty"));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::invalid_argument(format!(
            "database path {shown:?} contains a NUL byte"
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid_argument(format!("database path {shown:?} names no file")))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Opening makes the file, never its folder: a mistyped folder is an
    // error (NotFound), not a new tree in the wrong place.
    let parent = parent
        .canonicalize()
        .map_err(|e| Error::io(format!("open {shown}: its folder {}", parent.display()), e))?;
    let joined = parent.join(name);
    let canonical = match joined.canonicalize() {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => joined,
        Err(e) => return Err(Error::io(format!("resolve {shown}"), e)),
    };
    if canonical.is_dir() {
        return Err(Error::invalid_argument(format!(
            "database path {shown} is a folder, not a file"
        )));
    }
    Ok(canonical)
}

static FORKED: AtomicBool = AtomicBool::new(false);
static WATCH_FORK: Once = Once::new();

/// Starts noting `fork()`: after it, [`forked`] is true in the child. LMDB
/// environments must never be used across a fork (their locks and maps belong
/// to the parent).
pub(crate) fn watch_for_fork() {
    extern "C" fn in_child() {
        FORKED.store(true, Ordering::Relaxed);
    }
    WATCH_FORK.call_once(|| {
        // SAFETY: registering a handler that only stores to an atomic, which
        // is async-signal-safe as the child-side handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// Whether this process is a fork of the one that opened the environments.
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_spellings_of_one_file_are_one_key() {
        let dir = std::env::temp_dir().join(format!("keel-registry-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let a = canonical_file_path(&dir.join("sub/db.lmdb")).unwrap();
        let b = canonical_file_path(&dir.join("sub/../sub/./db.lmdb")).unwrap();
        assert_eq!(a, b);
        assert!(a.is_absolute());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_folder_is_not_found_and_not_created() {
        let dir = std::env::temp_dir().join(format!("keel-registry-missing-{}", std::process::id()));
        let err = canonical_file_path(&dir.join("db.lmdb")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert!(!dir.exists());
    }

    #[test]
    fn bad_paths_are_invalid_arguments() {
        use crate::ErrorKind;
        assert_eq!(
            canonical_file_path(Path::new("")).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            canonical_file_path(Path::new("a\0b")).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            canonical_file_path(Path::new("/")).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            canonical_file_path(&dir).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}

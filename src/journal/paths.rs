//! Paths inside a managed root: validated relative paths and the layout of
//! the journal's own state under `root/.keel/`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The name of the journal's state folder inside a root.
pub(crate) const STATE_DIR: &str = ".keel";

/// A path relative to the root: non-empty, `/`-separated, no `.`, `..` or
/// empty components, no NUL, and not inside `.keel`. Records store only these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RelPath(String);

/// A caller's path as the text records store: paths inside a root are
/// UTF-8, so anything else is refused before it is looked at.
pub(crate) fn caller_text(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::invalid_argument(format!("path {path:?} is not UTF-8")))
}

impl RelPath {
    /// Validates `path` as given by a caller or read from a record.
    pub(crate) fn parse(path: &str) -> Result<RelPath> {
        let bad = |why: &str| Err(Error::invalid_argument(format!("path {path:?}: {why}")));
        if path.is_empty() {
            return bad("is empty");
        }
        if path.contains('\0') {
            return bad("contains a NUL byte");
        }
        if path.starts_with('/') {
            return bad("is absolute; paths are relative to the journal's root");
        }
        for component in path.split('/') {
            match component {
                "" => return bad("has an empty component"),
                "." | ".." => return bad("has a '.' or '..' component"),
                _ => {}
            }
        }
        if path.split('/').next() == Some(STATE_DIR) {
            return bad("is inside the journal's own .keel folder");
        }
        Ok(RelPath(path.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/name`, validated.
    pub(crate) fn join(&self, name: &str) -> Result<RelPath> {
        RelPath::parse(&format!("{}/{name}", self.0))
    }

    /// Number of components: children sort after their parents by depth.
    pub(crate) fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// Whether `self` is a strict ancestor of `other`.
    pub(crate) fn is_ancestor_of(&self, other: &RelPath) -> bool {
        other.0.len() > self.0.len() && other.0.starts_with(&self.0) && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// Whether `self` is `other` or an ancestor of it.
    pub(crate) fn covers(&self, other: &RelPath) -> bool {
        self == other || self.is_ancestor_of(other)
    }

    /// The strict ancestors, outermost first (`a`, `a/b` for `a/b/c`).
    pub(crate) fn ancestors(&self) -> Vec<RelPath> {
        self.0
            .match_indices('/')
            .map(|(at, _)| RelPath(self.0[..at].to_owned()))
            .collect()
    }
}

/// A validated path relative to the root, or the root itself (`""`), as the
/// target folder of a publish.
pub(crate) fn parse_folder(path: &str) -> Result<Option<RelPath>> {
    if path.is_empty() || path == "." {
        Ok(None)
    } else {
        RelPath::parse(path.trim_end_matches('/')).map(Some)
    }
}

/// Where the journal keeps its state.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) lock: PathBuf,
    /// Records and their backups, side by side so that one fsync of this
    /// folder makes both durable: `<seq>.json`, `<seq>.<index>`.
    pub(crate) journal: PathBuf,
    pub(crate) staging: PathBuf,
    pub(crate) trash: PathBuf,
    pub(crate) quarantine: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Layout {
        let state = root.join(STATE_DIR);
        Layout {
            lock: state.join("lock"),
            journal: state.join("journal"),
            staging: state.join("staging"),
            trash: state.join("trash"),
            quarantine: state.join("quarantine"),
            state,
            root,
        }
    }

    /// The folders under `.keel` that hold per-mutation folders named by
    /// sequence (backups live in the journal folder itself).
    pub(crate) fn per_mutation_dirs(&self) -> [&Path; 2] {
        [&self.staging, &self.trash]
    }

    pub(crate) fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(&rel.0)
    }

    /// The record file of mutation `seq`.
    pub(crate) fn record(&self, seq: u64) -> PathBuf {
        self.journal.join(record_name(seq))
    }

    /// The backup of entry `index` of mutation `seq`, beside its record.
    pub(crate) fn backup_of(&self, seq: u64, index: usize) -> PathBuf {
        self.journal.join(format!("{seq:020}.{index}"))
    }

    pub(crate) fn staging_dir(&self, seq: u64) -> PathBuf {
        self.staging.join(seq.to_string())
    }

    pub(crate) fn trash_dir(&self, seq: u64) -> PathBuf {
        self.trash.join(seq.to_string())
    }
}

/// `00000000000000000042.json`: zero-padded so names sort by sequence.
pub(crate) fn record_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The sequence number in a record file name, if it is one.
pub(crate) fn parse_record_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The sequence number a journal-folder name belongs to (`<seq>.json`,
/// `<seq>.json.tmp`, `<seq>.<index>`, `<seq>.<index>.fingerprints`).
pub(crate) fn seq_of(name: &str) -> Option<u64> {
    let digits = name.get(..20)?;
    if name.as_bytes().get(20) != Some(&b'.') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The temp file written beside `target` before it is renamed over it. One
/// fixed name per target, so a rollback can always find and remove a temp
/// file left by a crash.
pub(crate) fn temp_beside(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    target.with_file_name(format!(".{name}.keel-tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_are_invalid_arguments() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            ".keel",
            ".keel/lock",
        ] {
            let err = RelPath::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(RelPath::parse("a/.keel").is_ok());
        assert!(RelPath::parse("..a/b..").is_ok());
    }

    #[test]
    fn ancestry_is_by_whole_components() {
        let a = RelPath::parse("a/b").unwrap();
        assert!(a.is_ancestor_of(&RelPath::parse("a/b/c").unwrap()));
        assert!(!a.is_ancestor_of(&RelPath::parse("a/bc").unwrap()));
        assert!(!a.is_ancestor_of(&a));
        assert!(a.covers(&a));
        let deep = RelPath::parse("x/y/z").unwrap();
        let names: Vec<_> = deep.ancestors().into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["x", "x/y"]);
        assert_eq!(deep.depth(), 3);
    }

    #[test]
    fn record_names_round_trip_and_sort() {
        assert_eq!(parse_record_name(&record_name(42)), Some(42));
        assert!(record_name(9) < record_name(10));
        assert_eq!(parse_record_name("42.json"), None);
        assert_eq!(parse_record_name("0000000000000000004x.json"), None);
        assert_eq!(seq_of("00000000000000000042.json.tmp"), Some(42));
        assert_eq!(seq_of("00000000000000000042.3.fingerprints"), Some(42));
        assert_eq!(seq_of("notes.txt"), None);
        assert_eq!(seq_of("00000000000000000042"), None);
    }
}

//! The manifest of a folder backup (`<seq>.<index>.fingerprints`): every
//! file and symlink the backup holds, so a rollback can tell what keel put
//! there from anything planted or changed since.
//!
//! Format 2 (first line `keel-manifest 2`), one line per entry:
//! - `file SIZE MTIME MTIME_NS MODE INO CTIME CTIME_NS CRC LIVE_INO LIVE_CTIME LIVE_CTIME_NS<TAB>PATH`:
//!   the backup file's identity after the snapshot (`CRC` is a CRC-32C of
//!   its content, or `-` where it was not read), and the live file's inode
//!   and ctime (the same inode for a hardlinked file) to see at commit
//!   which files the caller changed;
//! - `link<TAB>PATH`: a symlink.
//!
//! Format 1 files have no header and list only hardlinked files, as
//! `SIZE MTIME MTIME_NS MODE<TAB>PATH`; they are still read.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::fs::meta_mode;

const HEADER: &str = "keel-manifest 2";

/// What was recorded of one backed-up file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMark {
    pub(crate) size: u64,
    pub(crate) mtime: (i64, i64),
    pub(crate) mode: u32,
    /// Format 2 only: the backup's inode and ctime.
    pub(crate) ino: Option<u64>,
    pub(crate) ctime: Option<(i64, i64)>,
    /// Format 2 only, where the content was read.
    pub(crate) crc: Option<u32>,
    /// Format 2 only: the live file's inode and ctime after the snapshot.
    pub(crate) live: Option<(u64, (i64, i64))>,
}

impl FileMark {
    /// The mark of a backup file (`backup`) taken from the live file `live`.
    pub(crate) fn of(backup: &Metadata, live: &Metadata, crc: Option<u32>) -> FileMark {
        FileMark {
            size: backup.len(),
            mtime: (backup.mtime(), backup.mtime_nsec()),
            mode: meta_mode(backup),
            ino: Some(backup.ino()),
            ctime: Some(ctime(backup)),
            crc,
            live: Some((live.ino(), ctime(live))),
        }
    }

    /// Whether `meta` (of the backup file now) still is the inode recorded,
    /// untouched since (its ctime moves on any write, chmod or utimes).
    pub(crate) fn untouched(&self, meta: &Metadata) -> bool {
        self.ino == Some(meta.ino()) && self.ctime == Some(ctime(meta))
    }

    /// Whether size, mtime and mode still are the recorded ones.
    pub(crate) fn same_stat(&self, meta: &Metadata) -> bool {
        self.size == meta.len() && self.mtime == (meta.mtime(), meta.mtime_nsec()) && self.mode == meta_mode(meta)
    }

    fn line(&self) -> String {
        let (ino, (ct, ctn)) = (self.ino.unwrap_or(0), self.ctime.unwrap_or((0, 0)));
        let crc = self.crc.map_or_else(|| "-".to_owned(), |crc| format!("{crc:08x}"));
        let (live_ino, (lct, lctn)) = self.live.unwrap_or((0, (0, 0)));
        format!(
            "file {} {} {} {:o} {ino} {ct} {ctn} {crc} {live_ino} {lct} {lctn}",
            self.size, self.mtime.0, self.mtime.1, self.mode
        )
    }

    fn parse(fields: &[&str]) -> Option<FileMark> {
        let int = |at: usize| fields.get(at)?.parse::<i64>().ok();
        let uint = |at: usize| fields.get(at)?.parse::<u64>().ok();
        let mode = u32::from_str_radix(fields.get(3)?, 8).ok()?;
        let mut mark = FileMark {
            size: uint(0)?,
            mtime: (int(1)?, int(2)?),
            mode,
            ino: None,
            ctime: None,
            crc: None,
            live: None,
        };
        if fields.len() == 4 {
            return Some(mark);
        }
        if fields.len() != 11 {
            return None;
        }
        mark.ino = Some(uint(4)?);
        mark.ctime = Some((int(5)?, int(6)?));
        mark.crc = match fields[7] {
            "-" => None,
            hex => Some(u32::from_str_radix(hex, 16).ok()?),
        };
        mark.live = Some((uint(8)?, (int(9)?, int(10)?)));
        Some(mark)
    }
}

/// The ctime of `meta`, seconds and nanoseconds.
pub(crate) fn ctime(meta: &Metadata) -> (i64, i64) {
    (meta.ctime(), meta.ctime_nsec())
}

/// A folder backup's manifest, keyed by path inside the folder.
#[derive(Debug, Default, Clone)]
pub(crate) struct Manifest {
    /// Format 2: every entry is listed, and anything unlisted is foreign.
    pub(crate) complete: bool,
    pub(crate) files: HashMap<String, FileMark>,
    pub(crate) links: HashSet<String>,
}

impl Manifest {
    pub(crate) fn new() -> Manifest {
        Manifest {
            complete: true,
            ..Manifest::default()
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (path, mark) in files {
            out.push_str(&format!("{}\t{path}\n", mark.line()));
        }
        let mut links: Vec<_> = self.links.iter().collect();
        links.sort();
        for path in links {
            out.push_str(&format!("link\t{path}\n"));
        }
        out
    }

    /// Parses either format; `None` for a line that is neither.
    pub(crate) fn parse(text: &str) -> Option<Manifest> {
        let mut lines = text.lines().peekable();
        let complete = lines.peek() == Some(&HEADER);
        if complete {
            lines.next();
        }
        let mut manifest = Manifest {
            complete,
            ..Manifest::default()
        };
        for line in lines {
            let (head, path) = line.split_once('\t')?;
            let fields: Vec<&str> = head.split(' ').collect();
            match (complete, fields.first().copied()) {
                (true, Some("link")) if fields.len() == 1 => {
                    manifest.links.insert(path.to_owned());
                }
                (true, Some("file")) => {
                    manifest.files.insert(path.to_owned(), FileMark::parse(&fields[1..])?);
                }
                (false, _) => {
                    manifest.files.insert(path.to_owned(), FileMark::parse(&fields)?);
                }
                _ => return None,
            }
        }
        Some(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_format_1_still_parses() {
        let mut manifest = Manifest::new();
        manifest.files.insert(
            "a/b.md".into(),
            FileMark {
                size: 3,
                mtime: (10, 20),
                mode: 0o640,
                ino: Some(7),
                ctime: Some((11, 21)),
                crc: Some(0xabcd),
                live: Some((7, (11, 21))),
            },
        );
        manifest.links.insert("l".into());
        let parsed = Manifest::parse(&manifest.encode()).unwrap();
        assert!(parsed.complete);
        assert_eq!(parsed.files, manifest.files);
        assert_eq!(parsed.links, manifest.links);
        let old = Manifest::parse("3 10 20 644\ta.md\n").unwrap();
        assert!(!old.complete);
        assert_eq!(old.files["a.md"].ino, None);
        assert!(Manifest::parse("garbage").is_none());
    }
}

//! Checking the journal's own state before trusting it.
//!
//! Nothing under `.keel/` is used blindly: before recovery (or a rollback)
//! touches anything, every state folder must be a real folder, every entry
//! of the journal folder a regular file or (for folder backups) a real
//! folder, every staging and trash entry a real folder, and every backup
//! what its record says it is — type, size and CRC-32C for files, and for
//! folder backups every entry listed in its manifest with the inode keel
//! put there. Anything else (a symlink, a FIFO, a device, a file keel did
//! not write) is a [`Corrupt`](crate::ErrorKind::Corrupt) error naming
//! every problem, and nothing is touched. The checks only read (`lstat`,
//! and reads of regular files opened without following links or blocking).

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::fs::{kind_name, Fs};
use super::manifest::Manifest;
use super::paths::{parse_record_name, seq_of, Layout};
use super::record::{Prior, Record};
use super::snapshot::{fingerprints_path, io_err};
use crate::{Error, Result};

const STEP: &str = "audit";

/// The problems found, as one error (or `Ok` when there are none).
pub(crate) fn verdict(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::corrupt(format!(
        "the journal's state was changed by something other than keel; recovery refused, nothing \
         touched, new mutations refused until an operator removes what keel did not make (or sets the \
         record aside with resolve): {}",
        problems.join("; ")
    )))
}

/// Checks the state folders and every entry keel would list, open or
/// rename in them; returns the problems found.
pub(crate) fn state(fs: &Fs, layout: &Layout) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for dir in [
        &layout.state,
        &layout.journal,
        &layout.staging,
        &layout.trash,
        &layout.quarantine,
    ] {
        match lstat(fs, dir)? {
            Some(meta) if meta.is_dir() => {}
            Some(meta) => problems.push(format!("{} is {}, not a folder", dir.display(), kind_name(&meta))),
            None => problems.push(format!("{} is missing", dir.display())),
        }
        if dir == &layout.state && !problems.is_empty() {
            // Nothing below a `.keel` that is not a folder can be looked at.
            return Ok(problems);
        }
    }
    if !problems.is_empty() {
        return Ok(problems);
    }
    for name in list(fs, &layout.journal)? {
        let path = layout.journal.join(&name);
        let Some(meta) = lstat(fs, &path)? else { continue };
        let text = name.to_string_lossy();
        // Backups of folders are folders; everything else keel writes here
        // (records, temp records, file backups, manifests) is a regular file.
        let folder_backup = seq_of(&text).is_some() && parse_record_name(&text).is_none() && is_backup_name(&text);
        let fine = meta.is_file() || (folder_backup && meta.is_dir());
        if !fine {
            problems.push(format!("{} is {}", path.display(), kind_name(&meta)));
        }
    }
    for dir in layout.per_mutation_dirs() {
        for name in list(fs, dir)? {
            let path = dir.join(&name);
            match lstat(fs, &path)? {
                Some(meta) if !meta.is_dir() => problems.push(format!(
                    "{} is {}, not a folder keel made",
                    path.display(),
                    kind_name(&meta)
                )),
                _ => {}
            }
        }
    }
    Ok(problems)
}

/// `<seq>.<index>` exactly (not a record, temp record or manifest).
fn is_backup_name(name: &str) -> bool {
    name.get(21..)
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks every backup of `record` against what the record (and a folder
/// backup's manifest) says it is; returns the problems found.
pub(crate) fn backups(fs: &Fs, layout: &Layout, record: &Record) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (index, _path, prior) in record.paths() {
        let backup = layout.backup_of(record.seq, index);
        match prior {
            Prior::Absent | Prior::Symlink { .. } => {}
            Prior::File { size, crc, .. } => file_backup(fs, &backup, *size, *crc, &mut problems)?,
            Prior::Dir { .. } => folder_backup(fs, &backup, &mut problems)?,
        }
    }
    Ok(problems)
}

fn file_backup(fs: &Fs, backup: &Path, size: Option<u64>, crc: Option<u32>, problems: &mut Vec<String>) -> Result<()> {
    // A missing backup is not a planted one: the restore reports that entry
    // and goes on with the others.
    let Some(meta) = lstat(fs, backup)? else {
        return Ok(());
    };
    if !meta.is_file() {
        problems.push(format!(
            "backup {} is {}, not the file keel wrote",
            backup.display(),
            kind_name(&meta)
        ));
        return Ok(());
    }
    if size.is_some_and(|size| size != meta.len()) {
        problems.push(format!(
            "backup {} has {} bytes, not the {} recorded",
            backup.display(),
            meta.len(),
            size.unwrap_or_default()
        ));
        return Ok(());
    }
    if let Some(expected) = crc {
        let content = fs.checksum(STEP, backup).map_err(|e| io_err("read", backup, e))?;
        if content.crc != expected {
            problems.push(format!(
                "backup {} does not match the checksum recorded when it was taken",
                backup.display()
            ));
        }
    }
    Ok(())
}

fn folder_backup(fs: &Fs, backup: &Path, problems: &mut Vec<String>) -> Result<()> {
    let Some(meta) = lstat(fs, backup)? else {
        return Ok(());
    };
    if !meta.is_dir() {
        problems.push(format!(
            "backup {} is {}, not a folder",
            backup.display(),
            kind_name(&meta)
        ));
        return Ok(());
    }
    let manifest = read_manifest(fs, backup)?;
    let Some(manifest) = manifest else {
        problems.push(format!("the manifest of backup {} is unreadable", backup.display()));
        return Ok(());
    };
    walk(fs, backup, Path::new(""), &manifest, problems)
}

/// The manifest of a folder backup: `Some(empty)` when there is none (a
/// format 1 folder without linked files), `None` when it is unreadable.
pub(crate) fn read_manifest(fs: &Fs, backup: &Path) -> Result<Option<Manifest>> {
    let file = fingerprints_path(backup);
    if lstat(fs, &file)?.is_none() {
        return Ok(Some(Manifest::default()));
    }
    let Ok(bytes) = fs.read(STEP, &file) else {
        return Ok(None);
    };
    Ok(std::str::from_utf8(&bytes).ok().and_then(Manifest::parse))
}

fn walk(fs: &Fs, dir: &Path, rel: &Path, manifest: &Manifest, problems: &mut Vec<String>) -> Result<()> {
    for name in list(fs, dir)? {
        let path = dir.join(&name);
        let inside = rel.join(&name);
        let key = inside.to_string_lossy().into_owned();
        let Some(meta) = lstat(fs, &path)? else { continue };
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(fs, &path, &inside, manifest, problems)?;
        } else if kind.is_symlink() {
            if manifest.complete && !manifest.links.contains(&key) {
                problems.push(format!(
                    "{} is a symlink keel did not put in the backup",
                    path.display()
                ));
            }
        } else if kind.is_file() {
            match manifest.files.get(&key) {
                Some(mark) if mark.ino.is_some_and(|ino| ino != meta.ino()) => problems.push(format!(
                    "{} is not the file keel put in the backup (another inode)",
                    path.display()
                )),
                None if manifest.complete => {
                    problems.push(format!("{} is a file keel did not put in the backup", path.display()))
                }
                _ => {}
            }
        } else {
            problems.push(format!("{} is {}", path.display(), kind_name(&meta)));
        }
    }
    Ok(())
}

/// Whether `path` (under the trash or staging folder) may be used as a
/// folder keel made: missing, or a real folder.
pub(crate) fn own_folder(fs: &Fs, path: &Path) -> Result<()> {
    match lstat(fs, path)? {
        Some(meta) if !meta.is_dir() => verdict(vec![format!(
            "{} is {}, not a folder keel made",
            path.display(),
            kind_name(&meta)
        )]),
        _ => Ok(()),
    }
}

fn lstat(fs: &Fs, path: &Path) -> Result<Option<Metadata>> {
    fs.lstat(STEP, path).map_err(|e| io_err("stat", path, e))
}

fn list(fs: &Fs, dir: &Path) -> Result<Vec<OsString>> {
    fs.read_dir(STEP, dir).map_err(|e| io_err("list", dir, e))
}

//! Taking the "before" copy of a path: files are copied, symlinks recorded,
//! folders hardlinked file by file (copied where the file system refuses).
//!
//! Every backup is durable before it is returned: copied files are fsynced
//! and each backup folder is fsynced after its entries are in place, so the
//! record that names the backup can only become `active` after the backup
//! itself is on disk.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::fs::{link_should_copy, meta_mode, Fs};
use super::manifest::{FileMark, Manifest};
use super::record::Prior;
use crate::{Error, Result};

const STEP: &str = "snapshot";

/// How a path is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackupMode {
    /// The mutation itself replaces what it touches (always by rename, never
    /// in place), so the old inodes keep the old bytes: files and folders
    /// are hardlinked, O(1) per file whatever the size.
    Replaced,
    /// Declared by the caller, who may edit files in place: a file is
    /// copied; a folder is hardlinked (fingerprinted, see [`TreeLinks`]).
    Declared,
    /// Declared by a caller who edits a folder's files in place: copied
    /// whole, O(bytes).
    DeclaredCopy,
}

/// Snapshots the existing path `live` (metadata `meta`) into `backup`.
pub(crate) fn take(fs: &Fs, live: &Path, meta: &Metadata, backup: &Path, how: BackupMode) -> Result<Prior> {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs.read_link(STEP, live).map_err(|e| io_err("read symlink", live, e))?;
        return Ok(Prior::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        });
    }
    if file_type.is_file() {
        let mode = meta_mode(meta);
        if how == BackupMode::Replaced {
            match fs.hard_link(STEP, live, backup) {
                Ok(()) => {
                    // The mutation replaces the live file by rename, so this
                    // inode keeps these bytes; recorded so a rollback can
                    // check the backup is still what was linked.
                    let content = fs.checksum(STEP, backup).map_err(|e| io_err("read", backup, e))?;
                    return Ok(Prior::File {
                        mode,
                        size: Some(content.size),
                        crc: Some(content.crc),
                    });
                }
                Err(err) if link_should_copy(&err) => {}
                Err(err) => return Err(io_err("hardlink", live, err)),
            }
        }
        let content = fs
            .copy_file(STEP, live, backup, mode)
            .map_err(|e| io_err("back up file", live, e))?;
        return Ok(Prior::File {
            mode,
            size: Some(content.size),
            crc: Some(content.crc),
        });
    }
    if file_type.is_dir() {
        let mut links = TreeLinks::new(true, how == BackupMode::DeclaredCopy);
        // A declared folder's files may be edited in place by the caller:
        // their content is checksummed, so a rollback notices an edit that
        // kept size and mtime.
        links.checksum = how == BackupMode::Declared;
        link_tree(fs, live, meta, backup, &mut links)?;
        if let Some(manifest) = links.manifest.take() {
            let path = fingerprints_path(backup);
            fs.write_new(STEP, &path, &mut manifest.encode().as_bytes(), Some(0o600))
                .map_err(|e| io_err("write", &path, e))?;
        }
        return Ok(Prior::Dir {
            mode: meta_mode(meta),
            linked: links.all_linked,
        });
    }
    Err(Error::invalid_argument(format!(
        "cannot snapshot {}: not a file, symlink or folder",
        live.display()
    )))
}

/// What [`link_tree`] did: whether every file was hardlinked, and (when
/// asked) the [`Manifest`] of everything it put in the backup.
#[derive(Debug)]
pub(crate) struct TreeLinks {
    pub(crate) all_linked: bool,
    /// Every file (with its identity) and symlink of the backup. A linked
    /// file shares its inode with the live tree, so an in-place edit changes
    /// the backup too; the manifest lets the restore notice, and refuse
    /// anything planted in the backup since.
    manifest: Option<Manifest>,
    /// Copy every file instead of linking it.
    copy: bool,
    /// Checksum the content of linked files too (copies always are).
    checksum: bool,
}

impl TreeLinks {
    pub(crate) fn new(manifest: bool, copy: bool) -> TreeLinks {
        TreeLinks {
            all_linked: !copy,
            manifest: manifest.then(Manifest::new),
            copy,
            checksum: false,
        }
    }
}

/// The fingerprint file beside the backup of a folder.
pub(crate) fn fingerprints_path(backup: &Path) -> std::path::PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".fingerprints");
    name.into()
}

/// Rebuilds the folder `src` at `dst` with hardlinks to its files (copies
/// where linking fails with one of the fallback errors), its symlinks and
/// subfolders, each folder fsynced and given its mode.
pub(crate) fn link_tree(fs: &Fs, src: &Path, meta: &Metadata, dst: &Path, links: &mut TreeLinks) -> Result<()> {
    link_tree_at(fs, src, meta, dst, Path::new(""), links)
}

fn link_tree_at(fs: &Fs, src: &Path, meta: &Metadata, dst: &Path, rel: &Path, links: &mut TreeLinks) -> Result<()> {
    fs.mkdir(STEP, dst, Some(0o700))
        .map_err(|e| io_err("create backup folder", dst, e))?;
    let names = fs.read_dir(STEP, src).map_err(|e| io_err("list folder", src, e))?;
    for name in names {
        let (from, to) = (src.join(&name), dst.join(&name));
        let Some(child) = fs.lstat(STEP, &from).map_err(|e| io_err("stat", &from, e))? else {
            continue;
        };
        link_child(fs, &from, &child, &to, &rel.join(&name), links)?;
    }
    fs.chmod(STEP, dst, meta_mode(meta))
        .map_err(|e| io_err("set mode of", dst, e))?;
    fs.fsync_dir(STEP, dst)
        .map_err(|e| io_err("fsync backup folder", dst, e))
}

fn link_child(fs: &Fs, from: &Path, meta: &Metadata, to: &Path, rel: &Path, links: &mut TreeLinks) -> Result<()> {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return link_tree_at(fs, from, meta, to, rel, links);
    }
    if file_type.is_symlink() {
        let target = fs.read_link(STEP, from).map_err(|e| io_err("read symlink", from, e))?;
        fs.symlink(STEP, &target, to)
            .map_err(|e| io_err("back up symlink", from, e))?;
        if let Some(manifest) = &mut links.manifest {
            manifest.links.insert(rel.to_string_lossy().into_owned());
        }
        return Ok(());
    }
    if !file_type.is_file() {
        return Err(Error::invalid_argument(format!(
            "cannot snapshot {}: not a file, symlink or folder",
            from.display()
        )));
    }
    let linked = match links.copy {
        true => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
        false => fs.hard_link(STEP, from, to),
    };
    let crc = match linked {
        Ok(()) if links.checksum && links.manifest.is_some() => {
            Some(fs.checksum(STEP, to).map_err(|e| io_err("read", to, e))?.crc)
        }
        Ok(()) => None,
        Err(err) if link_should_copy(&err) => {
            links.all_linked = false;
            let content = fs
                .copy_file(STEP, from, to, meta_mode(meta))
                .map_err(|e| io_err("back up file", from, e))?;
            Some(content.crc)
        }
        Err(err) => return Err(io_err("hardlink", from, err)),
    };
    if let Some(manifest) = &mut links.manifest {
        // Both read after the link or copy: a link moves the inode's ctime.
        let backup = lstat_file(fs, to)?;
        let live = lstat_file(fs, from)?;
        let mark = FileMark::of(&backup, &live, crc);
        manifest.files.insert(rel.to_string_lossy().into_owned(), mark);
    }
    Ok(())
}

fn lstat_file(fs: &Fs, path: &Path) -> Result<Metadata> {
    fs.lstat(STEP, path)
        .map_err(|e| io_err("stat", path, e))?
        .ok_or_else(|| {
            Error::io(
                format!("{} vanished during the snapshot", path.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
}

pub(crate) fn io_err(action: &str, path: &Path, err: std::io::Error) -> Error {
    Error::io(format!("{action} {}", path.display()), err)
}

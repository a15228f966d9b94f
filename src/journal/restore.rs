//! Undoing a mutation: every entry of a record is put back as it was.
//!
//! Entries are restored children before parents (deepest first, later
//! entries first at equal depth). A folder's restore leaves alone every
//! descendant that has an entry of its own, since that entry holds the
//! older state. Nothing is unlinked before its replacement is ready: a copy
//! (or a hardlink of the backup) is written beside the target, fsynced and
//! renamed over it. A failing entry does not stop the others; all failures
//! are returned. Restores are idempotent, so a rollback cut short by a crash
//! is simply run again.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::audit;
use super::fs::{link_should_copy, meta_mode, Fs};
use super::manifest::Manifest;
use super::paths::{temp_beside, Layout, RelPath};
use super::record::{Prior, Record};
use super::snapshot::io_err;
use crate::{Error, Result};

const STEP: &str = "restore";

/// Restores every entry of `record`; returns the failures (empty on success).
/// Backups that are not what the record says (see [`audit`]) stop it
/// before anything is touched.
pub(crate) fn rollback(fs: &Fs, layout: &Layout, record: &Record) -> Vec<Error> {
    if let Err(err) = check(fs, layout, record) {
        return vec![err];
    }
    let mut entries = record.paths();
    entries.sort_by(|a, b| b.1.depth().cmp(&a.1.depth()).then(b.0.cmp(&a.0)));
    let all_paths: Vec<RelPath> = entries.iter().map(|(_, path, _)| path.clone()).collect();
    let mut restorer = Restorer {
        fs,
        layout,
        seq: record.seq,
        skip: Vec::new(),
        entry_path: None,
        manifest: Manifest::default(),
        deferred: RefCell::new(Vec::new()),
    };
    let mut errors = Vec::new();
    for (index, path, prior) in &entries {
        restorer.skip = all_paths.iter().filter(|p| path.is_ancestor_of(p)).cloned().collect();
        if let Err(err) = restorer.entry(*index, path, prior) {
            errors.push(err.context(format!("restore {:?}", path.as_str())));
        }
        errors.extend(restorer.deferred.take());
    }
    errors
}

/// The checks of [`audit`] for one record: its backups and its trash folder.
pub(crate) fn check(fs: &Fs, layout: &Layout, record: &Record) -> Result<()> {
    let mut problems = audit::backups(fs, layout, record)?;
    if let Err(err) = audit::own_folder(fs, &layout.trash_dir(record.seq)) {
        problems.push(err.report().to_string());
    }
    audit::verdict(problems)
}

struct Restorer<'a> {
    fs: &'a Fs,
    layout: &'a Layout,
    seq: u64,
    /// Descendants of the entry being restored that have entries of their own.
    skip: Vec<RelPath>,
    /// The folder entry being restored, and its backup's manifest (keyed by
    /// path inside the folder).
    entry_path: Option<RelPath>,
    manifest: Manifest,
    /// Failures inside a folder restore, which goes on past them.
    deferred: RefCell<Vec<Error>>,
}

impl Restorer<'_> {
    fn entry(&mut self, index: usize, path: &RelPath, prior: &Prior) -> Result<()> {
        let target = self.layout.abs(path);
        let backup = self.layout.backup_of(self.seq, index);
        if let Prior::Absent = prior {
            return self.remove_created(path, &target);
        }
        self.prepare_ancestors(path)?;
        self.remove(&temp_beside(&target))?;
        match prior {
            Prior::Absent => Ok(()),
            Prior::File { mode, size, crc } => {
                if self.untouched(&target, &backup, *mode, *size, *crc)? {
                    // Never changed, or a rollback cut short got this far
                    // (rename() of two links to one inode would do nothing
                    // and leave the temp). Recognised by content too, so a
                    // file in a folder that refuses writes is not rewritten.
                    return self.sync_parent(&target);
                }
                let tmp = temp_beside(&target);
                self.place_file(&backup, &tmp)?;
                self.replace(&tmp, &target)?;
                self.sync_parent(&target)
            }
            Prior::Symlink { target: link } => {
                if self.set_symlink(&target, Path::new(OsStr::from_bytes(link)))? {
                    self.sync_parent(&target)?;
                }
                Ok(())
            }
            Prior::Dir { linked, .. } => {
                self.load_fingerprints(path, &backup)?;
                if self.dir(&target, &backup, path, *linked)? {
                    self.sync_parent(&target)?;
                }
                Ok(())
            }
        }
    }

    /// Removes what the mutation created at `path`, unless it is only
    /// reachable through a non-folder ancestor (whose own entry handles it).
    fn remove_created(&self, path: &RelPath, target: &Path) -> Result<()> {
        for ancestor in path.ancestors() {
            match self.lstat(&self.layout.abs(&ancestor))? {
                Some(meta) if meta.is_dir() => {}
                _ => return Ok(()),
            }
        }
        self.remove(&temp_beside(target))?;
        if self.lstat(target)?.is_some() {
            self.remove(target)?;
            self.sync_parent(target)?;
        }
        Ok(())
    }

    /// Makes every ancestor of `path` a real folder: a missing one is
    /// created, a file or symlink in the way is moved to the trash (the
    /// ancestor's own entry restores it later).
    fn prepare_ancestors(&self, path: &RelPath) -> Result<()> {
        for ancestor in path.ancestors() {
            let dir = self.layout.abs(&ancestor);
            match self.lstat(&dir)? {
                Some(meta) if meta.is_dir() => continue,
                Some(_) => self.to_trash(&dir)?,
                None => {}
            }
            self.fs
                .mkdir(STEP, &dir, None)
                .map_err(|e| io_err("create folder", &dir, e))?;
            self.sync_parent(&dir)?;
        }
        Ok(())
    }

    /// Restores the folder `live` from `backup`; true when `live`'s entry in
    /// its parent changed.
    fn dir(&self, live: &Path, backup: &Path, rel: &RelPath, linked: bool) -> Result<bool> {
        let backup_meta = self.lstat(backup)?.ok_or_else(|| missing_backup(backup))?;
        match self.lstat(live)? {
            Some(meta) if meta.is_dir() => {
                self.dir_diff(live, &meta, backup, &backup_meta, rel, linked)?;
                Ok(false)
            }
            existing => {
                // Rebuilt in place, entry by entry: a crash part-way leaves a
                // folder that the rerun simply finishes by the same diff.
                if existing.is_some() {
                    self.to_trash(live)?;
                }
                self.fs
                    .mkdir(STEP, live, Some(0o700))
                    .map_err(|e| io_err("create folder", live, e))?;
                let live_meta = self.lstat(live)?.ok_or_else(|| missing_backup(live))?;
                self.dir_diff(live, &live_meta, backup, &backup_meta, rel, linked)?;
                Ok(true)
            }
        }
    }

    /// Brings an existing folder back to its backup, touching only what
    /// differs: entries the backup lacks are removed, changed ones replaced.
    fn dir_diff(
        &self,
        live: &Path,
        live_meta: &Metadata,
        backup: &Path,
        backup_meta: &Metadata,
        rel: &RelPath,
        linked: bool,
    ) -> Result<()> {
        let live_names = self.read_dir(live)?;
        let backup_names = self.read_dir(backup)?;
        let mut changed = false;
        for name in live_names.iter().filter(|name| !backup_names.contains(name)) {
            let child = child_rel(rel, name)?;
            if self.skip.iter().any(|skip| child.covers(skip)) {
                continue;
            }
            self.remove(&live.join(name))?;
            changed = true;
        }
        for name in &backup_names {
            let child = child_rel(rel, name)?;
            if self.skip.contains(&child) {
                continue;
            }
            match self.child(&live.join(name), &backup.join(name), &child, linked) {
                Ok(child_changed) => changed |= child_changed,
                Err(err) => self
                    .deferred
                    .borrow_mut()
                    .push(err.context(format!("restore {:?}", child.as_str()))),
            }
        }
        if meta_mode(live_meta) != meta_mode(backup_meta) {
            self.fs
                .chmod(STEP, live, meta_mode(backup_meta))
                .map_err(|e| io_err("set mode of", live, e))?;
            changed = true;
        }
        if changed {
            self.fs.fsync_dir(STEP, live).map_err(|e| io_err("fsync", live, e))?;
        }
        Ok(())
    }

    /// Restores one child of a folder; true when the folder's entries changed.
    fn child(&self, live: &Path, backup: &Path, rel: &RelPath, linked: bool) -> Result<bool> {
        let backup_meta = self.lstat(backup)?.ok_or_else(|| missing_backup(backup))?;
        let file_type = backup_meta.file_type();
        if file_type.is_dir() {
            return self.dir(live, backup, rel, linked);
        }
        if file_type.is_symlink() {
            let link = self
                .fs
                .read_link(STEP, backup)
                .map_err(|e| io_err("read symlink", backup, e))?;
            return self.set_symlink(live, &link);
        }
        if !file_type.is_file() {
            return Err(Error::corrupt(format!(
                "backup {} is {}, not what keel put there",
                backup.display(),
                super::fs::kind_name(&backup_meta)
            )));
        }
        self.check_fingerprint(rel, backup, &backup_meta)?;
        let live_meta = self.lstat(live)?;
        if let Some(meta) = &live_meta {
            if meta.is_file() && self.same_file(meta, live, &backup_meta, backup, linked)? {
                return Ok(false);
            }
        }
        let tmp = temp_beside(live);
        self.remove(&tmp)?;
        self.place_file(backup, &tmp)?;
        self.replace(&tmp, live)?;
        Ok(true)
    }

    /// Reads the manifest of the folder backup of `path`, if any.
    fn load_fingerprints(&mut self, path: &RelPath, backup: &Path) -> Result<()> {
        self.entry_path = Some(path.clone());
        self.manifest = audit::read_manifest(self.fs, backup)?
            .ok_or_else(|| Error::corrupt(format!("the manifest of backup {} is unreadable", backup.display())))?;
        Ok(())
    }

    /// Refuses to restore a hardlinked file whose shared inode was edited or
    /// chmod-ed in place: its earlier state is gone, and pretending
    /// otherwise would leave a mix of before and after. An untouched inode
    /// keeps its ctime; one whose ctime moved (a link count change does that
    /// too) is compared by content when its checksum was recorded, else by
    /// size, mtime and mode.
    fn check_fingerprint(&self, rel: &RelPath, backup: &Path, backup_meta: &Metadata) -> Result<()> {
        let Some(root) = &self.entry_path else {
            return Ok(());
        };
        let Some(inside) = rel
            .as_str()
            .strip_prefix(root.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(());
        };
        let Some(mark) = self.manifest.files.get(inside) else {
            return Ok(());
        };
        let intact = if mark.untouched(backup_meta) {
            true
        } else if let Some(crc) = mark.crc {
            let content = self.fs.checksum(STEP, backup).map_err(|e| io_err("read", backup, e))?;
            content.crc == crc && mark.size == backup_meta.len() && mark.mode == meta_mode(backup_meta)
        } else {
            mark.same_stat(backup_meta)
        };
        if intact {
            return Ok(());
        }
        Err(Error::corrupt(format!(
            "{:?} was changed in place while its folder was hardlinked into the backup, so its \
             earlier state is lost (replace files in a declared folder, never edit them in place)",
            rel.as_str()
        )))
    }

    /// Whether the live file still is the backed-up one: the same inode for
    /// a hardlinked backup, the same mode and bytes for a copied one.
    fn same_file(
        &self,
        live_meta: &Metadata,
        live: &Path,
        backup_meta: &Metadata,
        backup: &Path,
        linked: bool,
    ) -> Result<bool> {
        if live_meta.dev() == backup_meta.dev() && live_meta.ino() == backup_meta.ino() {
            return Ok(true);
        }
        if linked || meta_mode(live_meta) != meta_mode(backup_meta) || live_meta.len() != backup_meta.len() {
            return Ok(false);
        }
        let read = |path: &Path| self.fs.read(STEP, path).map_err(|e| io_err("read", path, e));
        Ok(read(live)? == read(backup)?)
    }

    /// Whether `live` already is the backed-up file: the backup's inode
    /// (restored by a link, or never replaced), or a regular file with the
    /// recorded mode and content (a copied backup of an untouched file).
    fn untouched(&self, live: &Path, backup: &Path, mode: u32, size: Option<u64>, crc: Option<u32>) -> Result<bool> {
        let (Some(live_meta), Some(backup_meta)) = (self.lstat(live)?, self.lstat(backup)?) else {
            return Ok(false);
        };
        if !live_meta.is_file() || meta_mode(&live_meta) != mode {
            return Ok(false);
        }
        if live_meta.dev() == backup_meta.dev() && live_meta.ino() == backup_meta.ino() {
            return Ok(true);
        }
        match (size, crc) {
            (Some(size), Some(crc)) if size == live_meta.len() => {
                let content = self.fs.checksum(STEP, live).map_err(|e| io_err("read", live, e))?;
                Ok(content.crc == crc && content.size == size)
            }
            (Some(_), Some(_)) => Ok(false),
            _ if live_meta.len() != backup_meta.len() => Ok(false),
            _ => {
                let read = |path: &Path| self.fs.read(STEP, path).map_err(|e| io_err("read", path, e));
                Ok(read(live)? == read(backup)?)
            }
        }
    }

    /// Makes `live` a symlink to `link` unless it already is; true if changed.
    fn set_symlink(&self, live: &Path, link: &Path) -> Result<bool> {
        if let Some(meta) = self.lstat(live)? {
            if meta.file_type().is_symlink() {
                let current = self
                    .fs
                    .read_link(STEP, live)
                    .map_err(|e| io_err("read symlink", live, e))?;
                if current == link {
                    return Ok(false);
                }
            }
        }
        let tmp = temp_beside(live);
        self.remove(&tmp)?;
        self.fs
            .symlink(STEP, link, &tmp)
            .map_err(|e| io_err("create symlink", &tmp, e))?;
        self.replace(&tmp, live)?;
        Ok(true)
    }

    /// Puts the backed-up file at `tmp`: a hardlink to the backup (O(1), the
    /// backup's data is already durable), or an fsynced copy.
    fn place_file(&self, backup: &Path, tmp: &Path) -> Result<()> {
        match self.fs.hard_link(STEP, backup, tmp) {
            Ok(()) => Ok(()),
            Err(err) if link_should_copy(&err) => {
                let meta = self.lstat(backup)?.ok_or_else(|| missing_backup(backup))?;
                self.fs
                    .copy_file(STEP, backup, tmp, meta_mode(&meta))
                    .map(|_| ())
                    .map_err(|e| io_err("copy backup to", tmp, e))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(missing_backup(backup)),
            Err(err) => Err(io_err("link backup to", tmp, err)),
        }
    }

    /// Renames the prepared `tmp` over `target`; a folder in the way (which
    /// rename cannot replace) is moved to the trash first.
    fn replace(&self, tmp: &Path, target: &Path) -> Result<()> {
        if let Some(meta) = self.lstat(target)? {
            if meta.is_dir() {
                self.to_trash(target)?;
            }
        }
        self.rename(tmp, target)
    }

    /// Moves `path` out of the tree into `.keel/trash/<seq>/`, never deleting
    /// it in place; the trash is emptied once the rollback is final.
    fn to_trash(&self, path: &Path) -> Result<()> {
        let trash = self.layout.trash_dir(self.seq);
        // Never rename a tree entry into something planted there.
        audit::own_folder(self.fs, &trash)?;
        if self.lstat(&trash)?.is_none() {
            self.fs
                .mkdir(STEP, &trash, Some(0o700))
                .map_err(|e| io_err("create", &trash, e))?;
        }
        let slot = trash.join(self.read_dir(&trash)?.len().to_string());
        self.rename(path, &slot)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.fs
            .rename(STEP, from, to)
            .map_err(|e| io_err(&format!("rename {} to", from.display()), to, e))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.fs.remove_any(STEP, path).map_err(|e| io_err("remove", path, e))
    }

    fn sync_parent(&self, path: &Path) -> Result<()> {
        let parent = path.parent().unwrap_or(&self.layout.root);
        self.fs.fsync_dir(STEP, parent).map_err(|e| io_err("fsync", parent, e))
    }

    fn lstat(&self, path: &Path) -> Result<Option<Metadata>> {
        self.fs.lstat(STEP, path).map_err(|e| io_err("stat", path, e))
    }

    fn read_dir(&self, dir: &Path) -> Result<Vec<std::ffi::OsString>> {
        self.fs.read_dir(STEP, dir).map_err(|e| io_err("list", dir, e))
    }
}

/// The path of a folder's child, for matching against entries; a name that
/// is not UTF-8 never matches one, so its lossy form is enough.
fn child_rel(parent: &RelPath, name: &OsStr) -> Result<RelPath> {
    parent.join(&name.to_string_lossy())
}

fn missing_backup(backup: &Path) -> Error {
    Error::corrupt(format!("backup {} is missing", backup.display()))
}

/// The parent folder of `path` (the root for a top-level path).
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

//! Staging and publishing: files prepared in a private folder on the
//! root's file system, then moved into the tree by rename.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Mutation, STEP};
use crate::events::Level;
use crate::journal::counters::{StepWatch, LOG_TARGET};
use crate::journal::fs::{crossed_devices, meta_mode, Sync};
use crate::journal::paths::{caller_text, parse_folder, temp_beside, RelPath};
use crate::journal::restore::parent_of;
use crate::journal::snapshot::{io_err, link_tree, BackupMode, TreeLinks};
use crate::{Error, Result};

impl Mutation {
    /// A private folder on the root's file system (`.keel/staging/<seq>/`)
    /// to prepare files in; [`publish`](Self::publish) moves its contents
    /// into the tree. It is removed when the mutation ends, and reaped by
    /// recovery after a crash.
    pub fn staging_dir(&mut self) -> Result<PathBuf> {
        if let Some(dir) = &self.staging {
            return Ok(dir.clone());
        }
        self.guarded(|m| {
            let dir = m.inner.layout.staging_dir(m.record.seq);
            m.remove_path(&dir)?;
            m.inner
                .fs
                .mkdir(STEP, &dir, Some(0o700))
                .map_err(|e| io_err("create", &dir, e))?;
            m.sync_dir(&m.inner.layout.staging.clone())?;
            m.staging = Some(dir.clone());
            Ok(dir)
        })
    }

    /// Moves everything in the staging folder into the folder `into` (`""`
    /// for the root), merging with existing folders: each staged file or new
    /// folder is fsynced, its target snapshotted, then renamed into place
    /// (copied and fsynced when the target is on another device).
    pub fn publish(&mut self, into: impl AsRef<Path>) -> Result<()> {
        let into = parse_folder(caller_text(into.as_ref())?)?;
        let Some(staging) = self.staging.clone() else {
            return Err(Error::invalid_argument(
                "nothing to publish: staging_dir() was never called",
            ));
        };
        let watch = StepWatch::start(&self.inner.fs, Level::Debug);
        let moved = self.flushed(|m| {
            let mut moves = Vec::new();
            m.plan_publish(&staging, into.as_ref(), &mut moves)?;
            for (src, dst) in &moves {
                m.keep_mode(src, dst)?;
            }
            // The staged data (and mode) must be durable before it enters the tree.
            for (src, _) in &moves {
                m.inner
                    .fs
                    .fsync_tree(STEP, src)
                    .map_err(|e| io_err("fsync staged", src, e))?;
            }
            let targets: Vec<RelPath> = moves.iter().map(|(_, dst)| dst.clone()).collect();
            m.snapshot_all(&targets, BackupMode::Replaced)?;
            let mut dirty = BTreeSet::new();
            for (src, dst) in &moves {
                m.move_into_place(src, dst)?;
                dirty.insert(parent_of(&m.abs(dst)));
            }
            // Each changed folder once, their fsyncs overlapping.
            m.sync_all(dirty.into_iter().map(Sync::Dir).collect())?;
            Ok(moves.len())
        })?;
        if let Some((elapsed, io)) = watch.read(&self.inner.fs) {
            log::debug!(
                target: LOG_TARGET,
                "publish: seq={} into={:?} moved={moved} {io} elapsed_us={elapsed}",
                self.record.seq,
                into.as_ref().map_or("", |folder| folder.as_str())
            );
        }
        Ok(())
    }

    /// Lists what publishing `src_dir` into `into` moves: every staged file
    /// or folder whose target is not an existing folder (those are merged).
    fn plan_publish(&self, src_dir: &Path, into: Option<&RelPath>, moves: &mut Vec<(PathBuf, RelPath)>) -> Result<()> {
        let names = self
            .inner
            .fs
            .read_dir(STEP, src_dir)
            .map_err(|e| io_err("list", src_dir, e))?;
        for name in names {
            let text = std::str::from_utf8(name.as_bytes())
                .map_err(|_| Error::invalid_argument(format!("staged name {name:?} is not UTF-8")))?;
            let dst = match into {
                Some(into) => into.join(text)?,
                None => RelPath::parse(text)?,
            };
            let src = src_dir.join(&name);
            let Some(src_meta) = self.lstat(&src)? else {
                continue;
            };
            self.check_ancestors(&dst)?;
            let live_is_dir = self.lstat(&self.abs(&dst))?.is_some_and(|meta| meta.is_dir());
            if src_meta.is_dir() && live_is_dir {
                self.plan_publish(&src, Some(&dst), moves)?;
            } else {
                moves.push((src, dst));
            }
        }
        Ok(())
    }

    /// A staged file that replaces an existing file takes that file's mode,
    /// as [`write`](Mutation::write) keeps it.
    fn keep_mode(&self, src: &Path, dst: &RelPath) -> Result<()> {
        let (Some(staged), Some(live)) = (self.lstat(src)?, self.lstat(&self.abs(dst))?) else {
            return Ok(());
        };
        if staged.is_file() && live.is_file() && meta_mode(&staged) != meta_mode(&live) {
            self.inner
                .fs
                .chmod(STEP, src, meta_mode(&live))
                .map_err(|e| io_err("set mode of", src, e))?;
        }
        Ok(())
    }

    /// Moves one staged file or folder over its (snapshotted) target.
    fn move_into_place(&mut self, src: &Path, dst: &RelPath) -> Result<()> {
        let Some(src_meta) = self.lstat(src)? else {
            return Ok(());
        };
        self.ensure_parents(dst)?;
        let live = self.abs(dst);
        if let Some(live_meta) = self.lstat(&live)? {
            // rename() cannot put a file over a folder or a folder over a file.
            if live_meta.is_dir() || src_meta.is_dir() {
                self.remove_path(&live)?;
            }
        }
        // Its own step name, so tests can make just this rename cross devices.
        match self.inner.fs.rename("publish", src, &live) {
            Ok(()) => Ok(()),
            Err(err) if crossed_devices(&err) => self.copy_across(src, &src_meta, &live),
            Err(err) => Err(io_err(&format!("publish {} to", src.display()), &live, err)),
        }
    }

    /// Publishes across devices: an fsynced copy beside the target, renamed over it.
    fn copy_across(&mut self, src: &Path, meta: &std::fs::Metadata, live: &Path) -> Result<()> {
        let tmp = temp_beside(live);
        self.remove_path(&tmp)?;
        if meta.is_dir() {
            link_tree(&self.inner.fs, src, meta, &tmp, &mut TreeLinks::new(false, false))?;
        } else if meta.file_type().is_symlink() {
            let target = self
                .inner
                .fs
                .read_link(STEP, src)
                .map_err(|e| io_err("read symlink", src, e))?;
            self.inner
                .fs
                .symlink(STEP, &target, &tmp)
                .map_err(|e| io_err("symlink", &tmp, e))?;
        } else {
            self.inner
                .fs
                .copy_file(STEP, src, &tmp, meta_mode(meta))
                .map_err(|e| io_err("copy staged file to", &tmp, e))?;
        }
        self.rename_path(&tmp, live)?;
        self.remove_path(src)
    }
}

//! Making what the caller wrote in declared paths durable before commit.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Mutation, STEP};
use crate::journal::audit;
use crate::journal::manifest::{ctime, Manifest};
use crate::journal::paths::RelPath;
use crate::journal::record::Prior;
use crate::journal::restore::parent_of;
use crate::journal::snapshot::io_err;
use crate::Result;

impl Mutation {
    /// fsyncs every declared path as the caller left it: files it changed or
    /// added, every folder, and the folder holding the path. Files of a
    /// hardlinked folder that still are the inode snapshotted, with the same
    /// ctime, were not touched and are skipped.
    pub(super) fn sync_declared(&self) -> Result<()> {
        let declared = self.declared.clone();
        for rel in &declared {
            let manifest = self.manifest_of(rel)?;
            let live = self.abs(rel);
            self.sync_tree(&live, Path::new(""), &manifest)?;
            self.sync_dir(&parent_of(&live))?;
        }
        Ok(())
    }

    /// The manifest of the folder backup taken for exactly `rel`, if any.
    fn manifest_of(&self, rel: &RelPath) -> Result<Manifest> {
        let (fs, layout) = (&self.inner.fs, &self.inner.layout);
        for (index, path, prior) in self.record.paths() {
            if path == *rel && matches!(prior, Prior::Dir { .. }) {
                let backup = layout.backup_of(self.record.seq, index);
                return Ok(audit::read_manifest(fs, &backup)?.unwrap_or_default());
            }
        }
        Ok(Manifest::default())
    }

    fn sync_tree(&self, path: &Path, inside: &Path, manifest: &Manifest) -> Result<()> {
        let fs = &self.inner.fs;
        let Some(meta) = self.lstat(path)? else {
            return Ok(());
        };
        if meta.is_file() {
            let key = inside.to_string_lossy();
            let unchanged = manifest
                .files
                .get(key.as_ref())
                .and_then(|mark| mark.live)
                .is_some_and(|(ino, at)| ino == meta.ino() && at == ctime(&meta));
            if !unchanged {
                fs.fsync_file(STEP, path).map_err(|e| io_err("fsync", path, e))?;
            }
            return Ok(());
        }
        if !meta.is_dir() {
            return Ok(());
        }
        let names = fs.read_dir(STEP, path).map_err(|e| io_err("list", path, e))?;
        for name in names {
            self.sync_tree(&path.join(&name), &inside.join(&name), manifest)?;
        }
        self.sync_dir(path)
    }
}

//! A mutation: changes to the tree that end exactly as before or exactly as
//! after, whatever happens.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::counters::{self, Counters};
use super::fs::{meta_mode, Sync};
use super::lock::ExclusiveGuard;
use super::paths::{caller_text, temp_beside, RelPath};
use super::record::{Entry, MutationStatus, Prior, Record, FORMAT_VERSION};
use super::recovery::{cleanup, commit_point, write_record};
use super::restore::{self, parent_of};
use super::snapshot::{self, io_err, BackupMode};
use super::Inner;
use crate::events::{micros, Level, Stopwatch};
use crate::{Error, ErrorKind, Result};

mod durable;
mod publish;

const STEP: &str = "mutate";

/// One mutation of a journal's tree, holding the root's exclusive lock.
///
/// Guarantees: every path is snapshotted just before the mutation first
/// touches it (cost grows with what is touched, not with the tree); the
/// tree ends exactly as before or exactly as after — [`commit`](Self::commit)
/// makes it final, [`rollback`](Self::rollback), an error in `commit` or
/// dropping the mutation undoes it, and a crash is undone by the next
/// recovery. Each first touch costs a backup (a hardlink, or a copy where
/// linking is refused, for files, whose content is read once for its
/// checksum; hardlinks for folders) and one record write (two fsyncs); each
/// write costs a temp file and a rename, and its file and folder are
/// fsynced before the commit point, together with those of the writes
/// around it (each folder once); the commit point, one fsync. Paths are relative to the root, `/`-separated, and never
/// followed through symlinks.
///
/// To change many paths in one mutation, [`declare`](Self::declare) them
/// (or their folder) first: one record write for the batch instead of one
/// per path.
#[derive(Debug)]
pub struct Mutation {
    inner: Arc<Inner>,
    guard: Option<ExclusiveGuard>,
    record: Record,
    /// Whether the record is on disk (only after the first snapshot).
    written: bool,
    staging: Option<PathBuf>,
    /// The first file-system failure; such a mutation can only roll back.
    failed: Option<Error>,
    finished: bool,
    /// Times the whole mutation and counts its I/O for its final event.
    begun: counters::StepWatch,
    /// The process that began it: only there is it used and ended (a forked
    /// child that drops it leaves the tree and the lock alone).
    owner: u32,
    /// Paths given to `declare`/`declare_copy`: the caller changes them
    /// itself, so commit makes them durable first.
    declared: Vec<RelPath>,
    /// What writes left to fsync: files written and folders whose entries
    /// changed. A write needs its record durable before it renames into the
    /// tree, not its own data (a crash before the commit point rolls it back
    /// from the record), so these wait and are fsynced together — before the
    /// commit point, and before any other change (which could move or remove
    /// them).
    unsynced: Unsynced,
}

#[derive(Debug, Default)]
struct Unsynced {
    /// Live paths of written files, with the file opened when it was written.
    files: Vec<(PathBuf, std::fs::File)>,
    folders: BTreeSet<PathBuf>,
}

impl Mutation {
    pub(crate) fn new(inner: Arc<Inner>, guard: ExclusiveGuard, seq: u64, operation: &str, details: &str) -> Mutation {
        let record = Record {
            format: FORMAT_VERSION,
            seq,
            root: inner.root_id.clone(),
            operation: operation.to_owned(),
            details: details.to_owned(),
            status: MutationStatus::Active,
            entries: Vec::new(),
        };
        let begun = counters::StepWatch::start(&inner.fs, crate::events::Level::Debug);
        Mutation {
            begun,
            inner,
            guard: Some(guard),
            record,
            written: false,
            staging: None,
            failed: None,
            finished: false,
            owner: std::process::id(),
            declared: Vec::new(),
            unsynced: Unsynced::default(),
        }
    }

    /// `Closed` when called in another process than the one that began the
    /// mutation (a forked child): nothing there may touch it.
    fn check_owner(&self) -> Result<()> {
        if std::process::id() == self.owner {
            return Ok(());
        }
        Err(Error::closed(format!(
            "mutation {} belongs to process {}: a mutation is used and ended only in the process that \
             began it",
            self.record.seq, self.owner
        )))
    }

    /// In a forked child: ends this copy without touching the tree or the
    /// lock (the lock's guard does nothing outside its owner process either).
    fn disown(&mut self) {
        self.finished = true;
        self.guard = None;
    }

    /// The mutation's sequence number (its record is `.keel/journal/<seq>.json`).
    pub fn seq(&self) -> u64 {
        self.record.seq
    }

    /// The paths snapshotted so far, in the order they were first touched.
    pub fn touched(&self) -> Vec<String> {
        self.record.entries.iter().map(|entry| entry.path.clone()).collect()
    }

    /// Snapshots paths the caller will change itself: files are copied,
    /// folders hardlinked file by file (copied where the file system refuses
    /// links), missing paths recorded as "remove on rollback". One record
    /// write for the whole batch.
    ///
    /// A hardlinked folder shares its files' inodes with the backup, so the
    /// caller must replace files (write a new file and rename it, as
    /// [`write`](Self::write) does) rather than edit them in place. Each
    /// linked file's inode, ctime and content checksum are recorded (so
    /// declaring a folder reads its bytes once, and writes none): a rollback
    /// that finds one changed in place — even keeping its size and mtime —
    /// reports it ([`ErrorKind::Corrupt`], the record kept for
    /// [`Journal::resolve`](super::Journal::resolve)) instead of claiming a
    /// clean restore. Use [`declare_copy`](Self::declare_copy) for folders
    /// whose files are edited in place.
    ///
    /// Whatever the caller writes in declared paths is made durable by
    /// [`commit`](Self::commit) before the commit point: every file it
    /// changed or added, and every folder, is fsynced.
    pub fn declare<S: AsRef<Path>>(&mut self, paths: &[S]) -> Result<()> {
        let rels = paths
            .iter()
            .map(|p| RelPath::parse(caller_text(p.as_ref())?))
            .collect::<Result<Vec<_>>>()?;
        self.flushed(|m| m.snapshot_all(&rels, BackupMode::Declared))
    }

    /// Like [`declare`](Self::declare), but folders are copied whole, so
    /// the caller may edit their files in place. Costs O(bytes) of the
    /// folders instead of O(files).
    pub fn declare_copy<S: AsRef<Path>>(&mut self, paths: &[S]) -> Result<()> {
        let rels = paths
            .iter()
            .map(|p| RelPath::parse(caller_text(p.as_ref())?))
            .collect::<Result<Vec<_>>>()?;
        self.flushed(|m| m.snapshot_all(&rels, BackupMode::DeclaredCopy))
    }

    /// Writes `bytes` to the file at `path` (see [`write_from`](Self::write_from)).
    pub fn write(&mut self, path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        self.write_from(path, &mut &bytes[..]).map(|_| ())
    }

    /// Writes the file at `path` from `reader`, streaming: temp file beside
    /// it, renamed over. Its data and its folder are fsynced before the
    /// commit point, together with those of the other writes (and before any
    /// other kind of change): a crash before then rolls the write back from
    /// the record, which is durable before the rename. A replaced file keeps its
    /// mode; a new one gets the umask mode; missing folders are created. A
    /// symlink at `path` is replaced, never followed. Returns the bytes written.
    pub fn write_from(&mut self, path: impl AsRef<Path>, reader: &mut dyn Read) -> Result<u64> {
        let path = caller_text(path.as_ref())?;
        let rel = RelPath::parse(path)?;
        self.guarded(|m| {
            m.check_ancestors(&rel)?;
            let target = m.abs(&rel);
            let existing = m.lstat(&target)?;
            if existing.as_ref().is_some_and(|meta| meta.is_dir()) {
                return Err(Error::invalid_argument(format!(
                    "cannot write {path:?}: it is a folder"
                )));
            }
            m.touch(&rel)?;
            let mut folders = std::mem::take(&mut m.unsynced.folders);
            let created = m.create_parents(&rel, &mut folders);
            m.unsynced.folders = folders;
            created?;
            let mode = existing.filter(|meta| meta.is_file()).map(|meta| meta_mode(&meta));
            let tmp = temp_beside(&target);
            m.remove_path(&tmp)?;
            let (file, written) = m
                .inner
                .fs
                .write_unsynced(STEP, &tmp, reader, mode)
                .map_err(|e| io_err("write", &tmp, e))?;
            m.rename_path(&tmp, &target)?;
            m.unsynced_file(target, file);
            Ok(written)
        })
    }

    /// Writes several files as [`write`](Self::write) does each, at a lower
    /// cost: the paths are snapshotted together (one record write, two
    /// fsyncs, instead of two per path). Then, as for `write`, each file and
    /// each changed folder is fsynced once, all together, before the commit
    /// point: a 3-file batch costs 2 + 3 + one fsync per distinct folder,
    /// plus the commit's one. Nothing is changed unless every path is valid: no
    /// path may be a folder, reached through a symlink or a file, or inside
    /// another path of the batch. A path given twice ends with its last bytes.
    pub fn write_many<P: AsRef<Path>, B: AsRef<[u8]>>(&mut self, files: &[(P, B)]) -> Result<()> {
        let rels = files
            .iter()
            .map(|(path, _)| RelPath::parse(caller_text(path.as_ref())?))
            .collect::<Result<Vec<_>>>()?;
        for rel in &rels {
            if let Some(outer) = rels.iter().find(|other| other.is_ancestor_of(rel)) {
                return Err(Error::invalid_argument(format!(
                    "cannot write {:?} and {:?} in one batch: one is inside the other",
                    outer.as_str(),
                    rel.as_str()
                )));
            }
        }
        self.guarded(|m| {
            for rel in &rels {
                m.check_ancestors(rel)?;
                if m.lstat(&m.abs(rel))?.is_some_and(|meta| meta.is_dir()) {
                    return Err(Error::invalid_argument(format!(
                        "cannot write {:?}: it is a folder",
                        rel.as_str()
                    )));
                }
            }
            // One record write: every entry (and backup) durable before the
            // first file is replaced.
            m.snapshot_all(&rels, BackupMode::Replaced)?;
            for (i, (rel, (_, bytes))) in rels.iter().zip(files).enumerate() {
                if rels[i + 1..].contains(rel) {
                    continue; // written again later in the batch: the last bytes win
                }
                let mut folders = std::mem::take(&mut m.unsynced.folders);
                let created = m.create_parents(rel, &mut folders);
                m.unsynced.folders = folders;
                created?;
                let target = m.abs(rel);
                let mode = m
                    .lstat(&target)?
                    .filter(|meta| meta.is_file())
                    .map(|meta| meta_mode(&meta));
                let tmp = temp_beside(&target);
                m.remove_path(&tmp)?;
                let (file, _) = m
                    .inner
                    .fs
                    .write_unsynced(STEP, &tmp, &mut bytes.as_ref(), mode)
                    .map_err(|e| io_err("write", &tmp, e))?;
                m.rename_path(&tmp, &target)?;
                m.unsynced_file(target, file);
            }
            Ok(())
        })
    }

    /// Makes `path` a symlink to `target` (which is stored, never followed).
    pub fn symlink(&mut self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<()> {
        let (path, target) = (caller_text(path.as_ref())?, caller_text(target.as_ref())?);
        let rel = RelPath::parse(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(Error::invalid_argument(format!("bad symlink target {target:?}")));
        }
        self.flushed(|m| {
            m.check_ancestors(&rel)?;
            let live = m.abs(&rel);
            if m.lstat(&live)?.is_some_and(|meta| meta.is_dir()) {
                return Err(Error::invalid_argument(format!(
                    "cannot replace folder {path:?} by a symlink"
                )));
            }
            m.touch(&rel)?;
            m.ensure_parents(&rel)?;
            let tmp = temp_beside(&live);
            m.remove_path(&tmp)?;
            m.inner
                .fs
                .symlink(STEP, Path::new(target), &tmp)
                .map_err(|e| io_err("symlink", &tmp, e))?;
            m.rename_path(&tmp, &live)?;
            m.sync_dir(&parent_of(&live))
        })
    }

    /// Removes the file, symlink or whole folder at `path`.
    pub fn remove(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = caller_text(path.as_ref())?;
        let rel = RelPath::parse(path)?;
        self.flushed(|m| {
            m.check_ancestors(&rel)?;
            let live = m.abs(&rel);
            if m.lstat(&live)?.is_none() {
                return Err(Error::not_found(format!("cannot remove {path:?}: no such path")));
            }
            m.touch(&rel)?;
            m.remove_path(&live)?;
            m.sync_dir(&parent_of(&live))
        })
    }

    /// Renames `from` to `to` (a file over a file, a folder to a new name).
    pub fn rename(&mut self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        let (from, to) = (caller_text(from.as_ref())?, caller_text(to.as_ref())?);
        let (src, dst) = (RelPath::parse(from)?, RelPath::parse(to)?);
        self.flushed(|m| {
            m.check_ancestors(&src)?;
            m.check_ancestors(&dst)?;
            if m.lstat(&m.abs(&src))?.is_none() {
                return Err(Error::not_found(format!("cannot rename {from:?}: no such path")));
            }
            if src.covers(&dst) || dst.is_ancestor_of(&src) {
                return Err(Error::invalid_argument(format!("cannot rename {from:?} to {to:?}")));
            }
            m.touch(&src)?;
            m.touch(&dst)?;
            m.ensure_parents(&dst)?;
            let (src_path, dst_path) = (m.abs(&src), m.abs(&dst));
            m.rename_path(&src_path, &dst_path)?;
            m.sync_dir(&parent_of(&dst_path))?;
            if parent_of(&src_path) != parent_of(&dst_path) {
                m.sync_dir(&parent_of(&src_path))?;
            }
            Ok(())
        })
    }

    /// Creates the folder `path` and any missing parents (umask mode); an
    /// existing folder is fine.
    pub fn create_dir(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = caller_text(path.as_ref())?;
        let rel = RelPath::parse(path)?;
        self.flushed(|m| {
            m.check_ancestors(&rel)?;
            let live = m.abs(&rel);
            match m.lstat(&live)? {
                Some(meta) if meta.is_dir() => return Ok(()),
                Some(_) => return Err(Error::already_exists(format!("{path:?} exists and is not a folder"))),
                None => {}
            }
            m.touch(&rel)?;
            m.ensure_parents(&rel)?;
            m.inner
                .fs
                .mkdir(STEP, &live, None)
                .map_err(|e| io_err("create folder", &live, e))?;
            m.sync_dir(&parent_of(&live))
        })
    }

    /// Makes the mutation durable and final, then cleans up. If a change
    /// failed earlier, or the commit itself fails, the mutation is rolled
    /// back and the error returned.
    pub fn commit(mut self) -> Result<()> {
        if let Err(err) = self.check_owner() {
            self.disown();
            return Err(err);
        }
        let stopwatch = Stopwatch::start(counters::LOG_TARGET, Level::Debug);
        if let Some(err) = self.failed.take() {
            let undo = self.finish_rollback();
            return Err(refused_commit(err, undo));
        }
        if let Err(err) = self.flush().and_then(|()| self.sync_declared()) {
            let undo = self.finish_rollback();
            return Err(refused_commit(err, undo));
        }
        if self.written {
            // The commit point: the record's removal made durable (one
            // fsync). Without a record, what is left of the mutation is
            // orphan backups and folders, which recovery reaps.
            if let Err(err) = commit_point(&self.inner.fs, &self.inner.layout, self.record.seq) {
                // The removal may be on disk or not: put the active record
                // back first, so a rollback that fails too is finished by
                // recovery instead of leaving a mix without a record.
                let _ = self.write_record();
                let undo = self.finish_rollback();
                return Err(refused_commit(err, undo));
            }
        }
        // Past the commit point: a failed cleanup only leaves what recovery
        // reaps (orphan backups and folders).
        let _ = cleanup(&self.inner.fs, &self.inner.layout, self.record.seq);
        self.finished = true;
        self.guard = None;
        Counters::add(&self.inner.counters.committed, 1);
        self.log_end("committed", stopwatch);
        Ok(())
    }

    /// Undoes every change, children before parents, and cleans up. If some
    /// paths cannot be restored, all failures are reported, the record and
    /// backups stay, and new mutations are refused until recovery succeeds.
    pub fn rollback(mut self) -> Result<()> {
        if let Err(err) = self.check_owner() {
            self.disown();
            return Err(err);
        }
        self.finish_rollback()
    }

    fn finish_rollback(&mut self) -> Result<()> {
        let stopwatch = Stopwatch::start(counters::LOG_TARGET, Level::Debug);
        self.finished = true;
        let result = self.undo();
        self.guard = None;
        match &result {
            Ok(()) => {
                Counters::add(&self.inner.counters.rolled_back, 1);
                self.log_end("rolled back", stopwatch);
            }
            Err(err) => log::error!(
                target: counters::LOG_TARGET,
                "rollback failed: seq={} error={}",
                self.record.seq,
                err.report()
            ),
        }
        result
    }

    fn log_end(&self, what: &str, stopwatch: Stopwatch) {
        let record = &self.record;
        counters::mutation_ended(
            what,
            record.seq,
            &record.operation,
            record.entries.len(),
            stopwatch.elapsed().map(micros),
            self.begun.read(&self.inner.fs),
        );
    }

    /// `snapshot: seq=.. paths=.. files=.. bytes=.. ... elapsed_us=..` for a
    /// batch of new entries (their backups and the record write).
    fn log_snapshot(&self, watch: &counters::StepWatch, before: usize) {
        if let Some((elapsed, io)) = watch.read(&self.inner.fs) {
            log::debug!(
                target: counters::LOG_TARGET,
                "snapshot: seq={} paths={} {io} elapsed_us={elapsed}",
                self.record.seq,
                self.record.entries.len().saturating_sub(before)
            );
        }
    }

    fn undo(&mut self) -> Result<()> {
        // Rolled back: what the writes left unsynced no longer matters.
        self.unsynced = Unsynced::default();
        let (fs, layout) = (&self.inner.fs, &self.inner.layout);
        if self.written {
            let errors = restore::rollback(fs, layout, &self.record);
            if let Some(first) = errors.first() {
                let all: Vec<String> = errors.iter().map(|err| err.report().to_string()).collect();
                let err = Error::new(first.kind(), format!("rollback did not finish: {}", all.join("; ")));
                *self.inner.last_recovery_error.lock() = Some(err.to_string());
                return Err(err);
            }
            self.record.status = MutationStatus::RolledBack;
            write_record(fs, layout, &self.record)?;
            // Final now: a failed cleanup only leaves what recovery discards.
            let _ = cleanup(fs, layout, self.record.seq);
            return Ok(());
        }
        cleanup(fs, layout, self.record.seq)
    }

    /// Runs `op`; a file-system failure marks the mutation failed (it can
    /// then only roll back). Argument errors leave it usable.
    fn guarded<T>(&mut self, op: impl FnOnce(&mut Mutation) -> Result<T>) -> Result<T> {
        if self.finished {
            return Err(Error::closed("the mutation has ended"));
        }
        self.check_owner()?;
        let result = op(self);
        if let Err(err) = &result {
            let argument_error = matches!(
                err.kind(),
                ErrorKind::InvalidArgument | ErrorKind::NotFound | ErrorKind::AlreadyExists
            );
            if !argument_error && self.failed.is_none() {
                self.failed = Some(err.clone());
            }
        }
        result
    }

    /// [`guarded`](Self::guarded), after fsyncing what writes left.
    fn flushed<T>(&mut self, op: impl FnOnce(&mut Mutation) -> Result<T>) -> Result<T> {
        self.guarded(|m| {
            m.flush()?;
            op(m)
        })
    }

    /// Notes a written file (now at `target`) and its folder for the next flush.
    fn unsynced_file(&mut self, target: PathBuf, file: std::fs::File) {
        self.unsynced.folders.insert(parent_of(&target));
        // Written again: the earlier file is gone from the tree.
        self.unsynced.files.retain(|(path, _)| *path != target);
        self.unsynced.files.push((target, file));
    }

    /// fsyncs every file written and folder changed since the last flush,
    /// all at once (children's folders before parents' in the fault order).
    fn flush(&mut self) -> Result<()> {
        let Unsynced { files, folders } = std::mem::take(&mut self.unsynced);
        let mut targets: Vec<Sync> = files.into_iter().map(|(path, file)| Sync::File(path, file)).collect();
        targets.extend(folders.into_iter().rev().map(Sync::Dir));
        self.sync_all(targets)
    }

    /// Snapshots `rel` unless an entry already covers it, and records it.
    fn touch(&mut self, rel: &RelPath) -> Result<()> {
        let watch = counters::StepWatch::start(&self.inner.fs, Level::Debug);
        let before = self.record.entries.len();
        self.snapshot(rel, BackupMode::Replaced)?;
        if self.record.entries.len() > before {
            if let Err(err) = self.write_record() {
                self.record.entries.truncate(before);
                return Err(err);
            }
            self.log_snapshot(&watch, before);
        }
        Ok(())
    }

    /// Snapshots every path in `rels` (checked for symlinked ancestors),
    /// then writes the record once for the whole batch.
    fn snapshot_all(&mut self, rels: &[RelPath], mode: BackupMode) -> Result<()> {
        let watch = counters::StepWatch::start(&self.inner.fs, Level::Debug);
        let before = self.record.entries.len();
        let result = rels.iter().try_for_each(|rel| {
            self.check_ancestors(rel)?;
            self.snapshot(rel, mode)
        });
        let result = result.and_then(|()| match self.record.entries.len() > before {
            true => self.write_record(),
            false => Ok(()),
        });
        if result.is_ok() && mode != BackupMode::Replaced {
            self.declared.extend(rels.iter().cloned());
        }
        match result {
            Err(_) => self.record.entries.truncate(before),
            Ok(()) if self.record.entries.len() > before => self.log_snapshot(&watch, before),
            Ok(()) => {}
        }
        result
    }

    /// Adds an entry for `rel` (or for its outermost missing ancestor, which
    /// covers everything created below it), with a durable backup.
    fn snapshot(&mut self, rel: &RelPath, mode: BackupMode) -> Result<()> {
        if self.covered(rel) {
            return Ok(());
        }
        for ancestor in rel.ancestors() {
            if self.lstat(&self.abs(&ancestor))?.is_none() {
                return self.push_entry(&ancestor, Prior::Absent);
            }
        }
        let live = self.abs(rel);
        let Some(meta) = self.lstat(&live)? else {
            return self.push_entry(rel, Prior::Absent);
        };
        let index = self.record.entries.len();
        let backup = self.inner.layout.backup_of(self.record.seq, index);
        self.remove_path(&backup)?;
        // Durable once the record is: its write fsyncs the journal folder,
        // which holds this backup's entry too.
        let prior = snapshot::take(&self.inner.fs, &live, &meta, &backup, mode)?;
        self.push_entry(rel, prior)
    }

    fn push_entry(&mut self, rel: &RelPath, prior: Prior) -> Result<()> {
        self.record.entries.push(Entry {
            path: rel.as_str().to_owned(),
            prior,
        });
        Ok(())
    }

    fn covered(&self, rel: &RelPath) -> bool {
        self.record
            .entries
            .iter()
            .any(|entry| RelPath::parse(&entry.path).is_ok_and(|path| path.covers(rel)))
    }

    fn write_record(&mut self) -> Result<()> {
        write_record(&self.inner.fs, &self.inner.layout, &self.record)?;
        self.written = true;
        Ok(())
    }

    /// Refuses a path reached through a symlink or a non-folder.
    fn check_ancestors(&self, rel: &RelPath) -> Result<()> {
        for ancestor in rel.ancestors() {
            match self.lstat(&self.abs(&ancestor))? {
                None => return Ok(()),
                Some(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::invalid_argument(format!(
                        "path {:?} is reached through the symlink {:?}",
                        rel.as_str(),
                        ancestor.as_str()
                    )))
                }
                Some(meta) if !meta.is_dir() => {
                    return Err(Error::invalid_argument(format!(
                        "path {:?}: {:?} is not a folder",
                        rel.as_str(),
                        ancestor.as_str()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Creates the missing ancestors of `rel` (already covered by an
    /// `absent` entry), each made durable in its parent.
    fn ensure_parents(&mut self, rel: &RelPath) -> Result<()> {
        for ancestor in rel.ancestors() {
            let dir = self.abs(&ancestor);
            if self.lstat(&dir)?.is_none() {
                self.inner
                    .fs
                    .mkdir(STEP, &dir, None)
                    .map_err(|e| io_err("create folder", &dir, e))?;
                self.sync_dir(&parent_of(&dir))?;
            }
        }
        Ok(())
    }

    /// [`ensure_parents`](Self::ensure_parents) leaving the fsyncs to the
    /// caller: each folder whose entries changed is added to `dirty`.
    fn create_parents(&mut self, rel: &RelPath, dirty: &mut BTreeSet<PathBuf>) -> Result<()> {
        for ancestor in rel.ancestors() {
            let dir = self.abs(&ancestor);
            if self.lstat(&dir)?.is_none() {
                self.inner
                    .fs
                    .mkdir(STEP, &dir, None)
                    .map_err(|e| io_err("create folder", &dir, e))?;
                dirty.insert(parent_of(&dir));
            }
        }
        Ok(())
    }

    fn abs(&self, rel: &RelPath) -> PathBuf {
        self.inner.layout.abs(rel)
    }

    fn lstat(&self, path: &Path) -> Result<Option<std::fs::Metadata>> {
        self.inner.fs.lstat(STEP, path).map_err(|e| io_err("stat", path, e))
    }

    fn remove_path(&self, path: &Path) -> Result<()> {
        self.inner
            .fs
            .remove_any(STEP, path)
            .map_err(|e| io_err("remove", path, e))
    }

    fn rename_path(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner
            .fs
            .rename(STEP, from, to)
            .map_err(|e| io_err(&format!("rename {} to", from.display()), to, e))
    }

    /// fsyncs files and folders at once (see [`Fs::fsync_all`](super::fs::Fs::fsync_all)).
    pub(super) fn sync_all(&self, targets: Vec<Sync>) -> Result<()> {
        let first = match targets.first() {
            Some(Sync::File(path, _) | Sync::Dir(path)) => path.clone(),
            None => return Ok(()),
        };
        self.inner
            .fs
            .fsync_all(STEP, targets)
            .map_err(|e| io_err("fsync (with the rest of its batch)", &first, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.inner.fs.fsync_dir(STEP, dir).map_err(|e| io_err("fsync", dir, e))
    }
}

impl Drop for Mutation {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            self.disown();
            return;
        }
        if !self.finished {
            // A failure leaves the record active: the next exclusive
            // acquisition retries the rollback before anything else runs.
            let _ = self.finish_rollback();
        }
    }
}

fn refused_commit(cause: Error, undo: Result<()>) -> Error {
    let outcome = match undo {
        Ok(()) => "the mutation was rolled back".to_owned(),
        Err(err) => format!("rolling it back failed too: {}", err.report()),
    };
    Error::new(cause.kind(), format!("commit refused: {}; {outcome}", cause.report()))
}

//! Bringing a root back to a committed state after a crash.
//!
//! Runs under the exclusive lock. Records are read and checked first.
//!
//! A record of a **newer format** than this build reads stops recovery before
//! anything is touched: no record is applied, quarantined or removed, and
//! the error ([`Unsupported`](crate::ErrorKind::Unsupported)) names the
//! record and both versions. Such a record is a mutation a newer build
//! started and did not finish; this build cannot undo it, and setting it
//! aside would leave the tree half-changed while new mutations build on it.
//! So mutations and reads stay refused until a newer build recovers the
//! root, or an operator sets the record aside with
//! [`Journal::resolve`](super::Journal::resolve).
//!
//! A record with an unknown `status` or entry `kind` blocks the same way.
//! Before anything is touched the journal's own state is checked (see
//! [`audit`](super::audit)): a symlink, FIFO or device in a state folder,
//! or a backup that is not what its record says, stops recovery with a
//! [`Corrupt`](crate::ErrorKind::Corrupt) error, nothing touched.
//!
//! A record that is malformed or fails its checksum is
//! moved (with its backup) to `.keel/quarantine/` and reported, never
//! applied and never deleted. Records are relative to the root, so those of
//! a copied or moved tree are recovered in place. Valid records are handled
//! newest first by sequence number: `active` ones are rolled back, terminal
//! ones discarded. Only when every record is done are leftover backup,
//! staging and trash folders reaped; if a rollback fails, recovery stops
//! there and deletes nothing.

use std::path::Path;

use super::audit;
use super::fs::Fs;
use super::paths::{parse_record_name, record_name, seq_of, Layout};
use super::record::{MutationStatus, Record};
use super::restore;
use super::snapshot::io_err;
use crate::{Error, ErrorKind, Result};

const STEP: &str = "recover";

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Sequence numbers of the `active` mutations rolled back, newest first.
    pub rolled_back: Vec<u64>,
    /// Sequence numbers of the terminal records discarded.
    pub discarded: Vec<u64>,
    /// Records moved to the quarantine folder, with why.
    pub quarantined: Vec<Quarantined>,
    /// Leftover backup, staging and trash folders removed.
    pub reaped: usize,
}

/// A record moved to `.keel/quarantine/` instead of being applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// The record's file name.
    pub name: String,
    /// The folder it was moved to, under `.keel/quarantine/`.
    pub folder: String,
    /// Why it was not trusted.
    pub reason: String,
}

/// Whether anything is left over from an unfinished mutation.
/// Anything wrong with the state folders themselves counts (recovery then
/// refuses with the audit's error), so no mutation ever writes through a
/// state folder swapped for a symlink after the journal was opened.
pub(crate) fn needed(fs: &Fs, layout: &Layout) -> Result<bool> {
    if !audit::state(fs, layout)?.is_empty() {
        return Ok(true);
    }
    for dir in [layout.journal.as_path()].into_iter().chain(layout.per_mutation_dirs()) {
        if !list(fs, dir)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs recovery (see the module docs). The caller holds the exclusive lock.
pub(crate) fn run(fs: &Fs, layout: &Layout) -> Result<RecoveryReport> {
    audit::verdict(audit::state(fs, layout)?)?;
    let scan = Scan::read(fs, layout)?;
    refuse_newer_formats(layout, &scan.checked)?;
    audit::verdict(scan.backup_problems(fs, layout)?)?;
    let mut report = RecoveryReport::default();
    let mut records = settle(fs, layout, scan, &mut report)?;
    records.sort_by_key(|record| std::cmp::Reverse(record.seq));
    for mut record in records {
        if record.status == MutationStatus::Active {
            let errors = restore::rollback(fs, layout, &record);
            if !errors.is_empty() {
                return Err(combine(record.seq, errors));
            }
            record.status = MutationStatus::RolledBack;
            write_record(fs, layout, &record)?;
            report.rolled_back.push(record.seq);
        } else {
            report.discarded.push(record.seq);
        }
        cleanup(fs, layout, record.seq)?;
    }
    // Every record is done: what is left are backups, staging and trash
    // of mutations that died before their first record write.
    for name in list(fs, &layout.journal)? {
        remove(fs, &layout.journal.join(name))?;
        report.reaped += 1;
    }
    for dir in layout.per_mutation_dirs() {
        for name in list(fs, dir)? {
            remove(fs, &dir.join(name))?;
            report.reaped += 1;
        }
    }
    Ok(report)
}

/// What the journal folder holds, read and checked without changing it.
pub(crate) struct Scan {
    /// Record writes cut short (`<seq>.json.tmp`).
    pub(crate) partial: Vec<String>,
    /// Every record (and stray) file with what checking it gave.
    pub(crate) checked: Vec<(String, Result<Record>)>,
}

impl Scan {
    pub(crate) fn read(fs: &Fs, layout: &Layout) -> Result<Scan> {
        let mut scan = Scan {
            partial: Vec::new(),
            checked: Vec::new(),
        };
        for name in list(fs, &layout.journal)? {
            if name.ends_with(".tmp") {
                scan.partial.push(name);
            } else if parse_record_name(&name).is_some() || seq_of(&name).is_none() {
                // Not a backup (those are kept while their record stands).
                let result = check_record(fs, layout, &name);
                scan.checked.push((name, result));
            }
        }
        Ok(scan)
    }

    /// The problems of the backups of every `active` record.
    pub(crate) fn backup_problems(&self, fs: &Fs, layout: &Layout) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for (_, result) in &self.checked {
            if let Ok(record) = result {
                if record.status == MutationStatus::Active {
                    if let Err(err) = restore::check(fs, layout, record) {
                        problems.push(err.report().to_string());
                    }
                }
            }
        }
        Ok(problems)
    }
}

/// Removes partial record writes and quarantines the untrustworthy records;
/// returns the valid ones.
fn settle(fs: &Fs, layout: &Layout, scan: Scan, report: &mut RecoveryReport) -> Result<Vec<Record>> {
    let Scan { partial, checked } = scan;
    for name in partial {
        // A record write cut short; the previous version (if any) is
        // still in place, so the partial copy is never needed.
        remove(fs, &layout.journal.join(&name))?;
    }
    let mut records = Vec::new();
    for (name, result) in checked {
        match result {
            Ok(record) => records.push(record),
            Err(err) => {
                let moved = quarantine(fs, layout, &name, &err.report().to_string())?;
                report.quarantined.push(moved);
            }
        }
    }
    Ok(records)
}

/// The first record of a newer format, as an `Unsupported` error.
pub(crate) fn refuse_newer_formats(layout: &Layout, checked: &[(String, Result<Record>)]) -> Result<()> {
    let newer = checked.iter().find_map(|(name, result)| match result {
        Err(err) if err.kind() == ErrorKind::Unsupported => Some((name, err)),
        _ => None,
    });
    let Some((name, err)) = newer else {
        return Ok(());
    };
    let seq = parse_record_name(name).map_or_else(|| "<seq>".to_owned(), |seq| seq.to_string());
    Err(Error::unsupported(format!(
        "journal record {}: {}; recovery refused, nothing applied, moved or removed: recover with a newer \
         keel, or set the record aside with resolve({seq})",
        layout.journal.join(name).display(),
        err.report()
    )))
}

fn check_record(fs: &Fs, layout: &Layout, name: &str) -> Result<Record> {
    let seq = parse_record_name(name).ok_or_else(|| Error::corrupt("not a record file name"))?;
    let path = layout.journal.join(name);
    // Never blocks or follows: a FIFO or symlink here was found by the
    // audit already, and reading only opens regular files.
    let bytes = fs
        .read(STEP, &path)
        .map_err(|err| Error::corrupt(format!("unreadable: {err}")))?;
    let record = Record::decode(&bytes)?;
    if record.seq != seq {
        return Err(Error::corrupt(format!("names sequence {seq} but holds {}", record.seq)));
    }
    Ok(record)
}

/// Moves the record `name`, its backups and the staging and trash folders of its
/// sequence number (from the name, never from the content) into a fresh
/// folder under `.keel/quarantine/`, with a note saying why.
pub(crate) fn quarantine(fs: &Fs, layout: &Layout, name: &str, reason: &str) -> Result<Quarantined> {
    let stem = name.strip_suffix(".json").unwrap_or(name);
    let taken = list(fs, &layout.quarantine)?;
    let folder = (0..)
        .map(|n| format!("{stem}.{n}"))
        .find(|candidate| !taken.contains(candidate))
        .expect("an unused name exists");
    let dest = layout.quarantine.join(&folder);
    fs.mkdir(STEP, &dest, Some(0o700))
        .map_err(|e| io_err("create", &dest, e))?;
    let mut note = format!("{reason}\n").into_bytes();
    let note_path = dest.join("REASON.txt");
    fs.write_new(STEP, &note_path, &mut note.as_slice(), Some(0o600))
        .map_err(|e| io_err("write", &note_path, e))?;
    note.clear();
    if let Some(seq) = parse_record_name(name) {
        for backup in list(fs, &layout.journal)? {
            if backup != name && seq_of(&backup) == Some(seq) {
                rename(fs, &layout.journal.join(&backup), &dest.join(&backup))?;
            }
        }
        for dir in layout.per_mutation_dirs() {
            let from = dir.join(seq.to_string());
            if fs.lstat(STEP, &from).map_err(|e| io_err("stat", &from, e))?.is_some() {
                let kind = dir.file_name().unwrap_or_default();
                rename(fs, &from, &dest.join(kind))?;
            }
        }
    }
    rename(fs, &layout.journal.join(name), &dest.join(name))?;
    fs.fsync_dir(STEP, &dest).map_err(|e| io_err("fsync", &dest, e))?;
    for dir in [&layout.quarantine, &layout.journal] {
        fs.fsync_dir(STEP, dir).map_err(|e| io_err("fsync", dir, e))?;
    }
    Ok(Quarantined {
        name: name.to_owned(),
        folder,
        reason: reason.to_owned(),
    })
}

/// Writes a record atomically: temp file, fsync, rename, fsync the folder.
pub(crate) fn write_record(fs: &Fs, layout: &Layout, record: &Record) -> Result<()> {
    const STEP: &str = "record";
    let path = layout.record(record.seq);
    let tmp = layout.journal.join(format!("{}.tmp", record_name(record.seq)));
    fs.remove_any(STEP, &tmp).map_err(|e| io_err("remove", &tmp, e))?;
    fs.write_new(STEP, &tmp, &mut record.encode().as_slice(), Some(0o600))
        .map_err(|e| io_err("write record", &tmp, e))?;
    fs.rename(STEP, &tmp, &path)
        .map_err(|e| io_err("rename record to", &path, e))?;
    fs.fsync_dir(STEP, &layout.journal)
        .map_err(|e| io_err("fsync", &layout.journal, e))
}

/// Commits mutation `seq`: removes its `active` record and fsyncs the
/// journal folder. Once that is durable the tree is final; before, the
/// record (still on disk) has it rolled back.
pub(crate) fn commit_point(fs: &Fs, layout: &Layout, seq: u64) -> Result<()> {
    const STEP: &str = "record";
    let path = layout.record(seq);
    fs.unlink(STEP, &path).map_err(|e| io_err("remove record", &path, e))?;
    fs.fsync_dir(STEP, &layout.journal)
        .map_err(|e| io_err("fsync", &layout.journal, e))
}

/// Removes what a finished mutation leaves: its backups, staging and trash
/// folders, then its record. A crash in between leaves either a terminal
/// record (discarded next time) or orphan folders (reaped next time).
pub(crate) fn cleanup(fs: &Fs, layout: &Layout, seq: u64) -> Result<()> {
    for dir in layout.per_mutation_dirs() {
        remove(fs, &dir.join(seq.to_string()))?;
    }
    let record = record_name(seq);
    for name in list(fs, &layout.journal)? {
        if name != record && seq_of(&name) == Some(seq) {
            remove(fs, &layout.journal.join(name))?;
        }
    }
    remove(fs, &layout.record(seq))
}

fn combine(seq: u64, errors: Vec<Error>) -> Error {
    let kind = errors[0].kind();
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Error::new(
        kind,
        format!(
            "rollback of mutation {seq} did not finish ({} failures): {}",
            all.len(),
            all.join("; ")
        ),
    )
}

fn list(fs: &Fs, dir: &Path) -> Result<Vec<String>> {
    let names = fs.read_dir(STEP, dir).map_err(|e| io_err("list", dir, e))?;
    Ok(names
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .collect())
}

fn remove(fs: &Fs, path: &Path) -> Result<()> {
    fs.remove_any(STEP, path).map_err(|e| io_err("remove", path, e))
}

fn rename(fs: &Fs, from: &Path, to: &Path) -> Result<()> {
    fs.rename(STEP, from, to)
        .map_err(|e| io_err(&format!("move {} to", from.display()), to, e))
}

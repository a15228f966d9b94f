//! Format markers and upgrades for keel's LMDB files.
//!
//! Every part that keeps data in an LMDB file (the drive, operations and
//! jobs) stamps it with a marker — magic bytes and a big-endian `u32`
//! version — under the key `format` of a meta database of its own, so one
//! file may hold several parts, each with its own version. [`ensure`] is what
//! every part calls on open:
//!
//! - **No marker**: the part's `init` runs and the current version is
//!   stamped, in one transaction.
//! - **The current version**: nothing to do (one read transaction).
//! - **A newer version**: refused with
//!   [`Unsupported`](crate::ErrorKind::Unsupported) naming both versions; the
//!   file is not touched.
//! - **An older version**: a consistent, compacted backup copy is written
//!   beside the file ([`backup_path`]: `<file>.<part>-format-<N>.backup`),
//!   then every [`UpgradeStep`] from that version to the current one runs,
//!   and the marker is rewritten, all in **one** write transaction: either
//!   the file is at the current version with every step applied, or (a step
//!   failed, the process died) it is exactly as it was, and the error names
//!   the step.
//!
//! Cost: one read transaction on every open; an upgrade costs a full copy
//! of the file plus the steps' own work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmdb::{Database, RwTransaction, Transaction, WriteFlags};

use super::{map_err, Env};
use crate::{Error, Result};

/// The key of the marker in a part's meta database.
const MARKER_KEY: &[u8] = b"format";

/// One part's stored format: where its marker lives, which version this
/// build writes, and how to bring older versions up to it.
#[derive(Debug, Clone, Copy)]
pub struct FileFormat {
    /// What the file holds, for messages and backup names (`"drive"`).
    pub part: &'static str,
    /// The named database holding the marker (`"drive.meta"`).
    pub meta_db: &'static str,
    /// The bytes before the version in the marker (`b"keel-drive"`).
    pub magic: &'static [u8],
    /// The version this build reads and writes.
    pub current: u32,
    /// The upgrade steps, one per version from the oldest upgradable one
    /// to `current - 1`, in order.
    pub steps: &'static [UpgradeStep],
}

/// Brings a file from format `from` to `from + 1`. Runs inside the upgrade's
/// single write transaction; an error aborts the whole upgrade. It may run
/// more than once (if the map fills, the transaction is retried), so it must
/// only change the transaction.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeStep {
    /// The version the step upgrades from.
    pub from: u32,
    /// What the step does, for logs and errors.
    pub what: &'static str,
    /// The named databases the step uses; they are opened (created empty if
    /// missing) before the transaction begins and handed to `run` by name.
    pub databases: &'static [&'static str],
    /// The step itself.
    pub run: fn(&mut RwTransaction<'_>, &StepDatabases) -> Result<()>,
}

/// The databases an [`UpgradeStep`] declared, by name.
#[derive(Debug, Default)]
pub struct StepDatabases {
    handles: HashMap<&'static str, Database>,
}

impl StepDatabases {
    /// The handle of a database the step declared; an undeclared name is a
    /// bug in the step, reported as an error rather than a panic.
    pub fn get(&self, name: &str) -> Result<Database> {
        self.handles
            .get(name)
            .copied()
            .ok_or_else(|| Error::invalid_argument(format!("upgrade step uses database {name:?} it did not declare")))
    }
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The version the file had (`None` for a new file, now stamped).
    pub found: Option<u32>,
    /// The backup written before an upgrade, if one ran.
    pub backup: Option<PathBuf>,
}

/// Checks, stamps or upgrades `env`'s `format` (see the module docs).
/// `init` runs only for a file without a marker, in the transaction that
/// stamps it; it may refuse (e.g. data present but no marker).
pub fn ensure(
    env: &Env,
    format: &FileFormat,
    init: impl FnMut(&mut RwTransaction<'_>) -> Result<()> + Send,
) -> Result<Opened> {
    let meta = env.database(format.meta_db)?;
    match read_marker(env, format, meta)? {
        None => {
            stamp_new(env, format, meta, init)?;
            Ok(Opened {
                found: None,
                backup: None,
            })
        }
        Some(found) if found == format.current => Ok(Opened {
            found: Some(found),
            backup: None,
        }),
        Some(found) if found > format.current => Err(newer_error(env, format, found)),
        Some(found) => upgrade(env, format, meta, found).map(|backup| Opened {
            found: Some(found),
            backup: Some(backup),
        }),
    }
}

/// Stamps `version` on a file that holds `format`'s part but no marker (it
/// was written before markers existed, at that version), so [`ensure`]
/// then upgrades it like any other older file. Does nothing if a marker is
/// there (another opener stamped it); returns whether it stamped.
pub fn stamp_unmarked(env: &Env, format: &FileFormat, version: u32) -> Result<bool> {
    let meta = env.database(format.meta_db)?;
    env.write(|txn| match marker_in(txn, env, format, meta)? {
        Some(_) => Ok(false),
        None => txn
            .put(meta, &MARKER_KEY, &marker(format, version), WriteFlags::empty())
            .map(|()| true)
            .map_err(|err| map_err(format!("write the {} format of {}", format.part, shown(env)), err)),
    })
}

/// Where the backup taken before upgrading `file`'s `part` from format
/// `from` goes: beside the file, named so an operator finds it next to it.
pub fn backup_path(file: impl AsRef<Path>, part: &str, from: u32) -> PathBuf {
    let file = file.as_ref();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!("{name}.{part}-format-{from}.backup"))
}

/// The version of `format` stamped in `env`, if the file holds that part;
/// reads only, and creates nothing (works on a read-only environment).
pub fn found_version(env: &Env, format: &FileFormat) -> Result<Option<u32>> {
    match env.existing_database(format.meta_db)? {
        Some(meta) => read_marker(env, format, meta),
        None => Ok(None),
    }
}

/// The marker bytes for `version`.
pub fn marker(format: &FileFormat, version: u32) -> Vec<u8> {
    let mut bytes = format.magic.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes
}

fn read_marker(env: &Env, format: &FileFormat, meta: Database) -> Result<Option<u32>> {
    env.read(|txn| marker_in(txn, env, format, meta))
}

fn marker_in(txn: &impl Transaction, env: &Env, format: &FileFormat, meta: Database) -> Result<Option<u32>> {
    let bytes = match txn.get(meta, &MARKER_KEY) {
        Ok(bytes) => bytes,
        Err(lmdb::Error::NotFound) => return Ok(None),
        Err(err) => {
            return Err(map_err(
                format!("read the {} format of {}", format.part, shown(env)),
                err,
            ))
        }
    };
    bytes
        .strip_prefix(format.magic)
        .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
        .map(|version| Some(u32::from_be_bytes(version)))
        .ok_or_else(|| Error::corrupt(format!("{} {} has a malformed format marker", format.part, shown(env))))
}

fn put_marker(txn: &mut RwTransaction<'_>, env: &Env, format: &FileFormat, meta: Database) -> Result<()> {
    txn.put(meta, &MARKER_KEY, &marker(format, format.current), WriteFlags::empty())
        .map_err(|err| map_err(format!("write the {} format of {}", format.part, shown(env)), err))
}

/// Runs `init` and stamps the current version. Another process may have
/// stamped the file since the marker was read: then its marker is checked.
fn stamp_new(
    env: &Env,
    format: &FileFormat,
    meta: Database,
    mut init: impl FnMut(&mut RwTransaction<'_>) -> Result<()> + Send,
) -> Result<()> {
    env.write(|txn| match marker_in(txn, env, format, meta)? {
        None => {
            init(txn)?;
            put_marker(txn, env, format, meta)
        }
        Some(found) => check_stamped_meanwhile(env, format, found),
    })
}

/// Backs the file up, then runs every step from `found` and restamps, in
/// one write transaction. Returns the backup's path.
fn upgrade(env: &Env, format: &FileFormat, meta: Database, found: u32) -> Result<PathBuf> {
    let steps = steps_from(env, format, found)?;
    let databases = open_step_databases(env, &steps)?;
    let backup = unused_backup_path(env.path(), format.part, found);
    env.backup(&backup)
        .map_err(|err| err.context(format!("back up {} before upgrading it", shown(env))))?;
    env.write(|txn| {
        match marker_in(txn, env, format, meta)? {
            Some(now) if now == found => {}
            Some(now) => return check_stamped_meanwhile(env, format, now),
            None => {
                return Err(Error::conflict(format!(
                    "{} lost its format marker while opening",
                    shown(env)
                )))
            }
        }
        for step in &steps {
            (step.run)(txn, &databases).map_err(|err| {
                err.context(format!(
                    "upgrade {} {} from format {} ({})",
                    format.part,
                    shown(env),
                    step.from,
                    step.what
                ))
            })?;
        }
        put_marker(txn, env, format, meta)
    })?;
    log::info!(
        target: "keel::lmdb",
        "format upgraded: path={} part={} from={found} to={} backup={}",
        shown(env),
        format.part,
        format.current,
        backup.display()
    );
    Ok(backup)
}

/// The steps from `found` up to the current version, in order; refuses a
/// version older than every step.
fn steps_from(env: &Env, format: &FileFormat, found: u32) -> Result<Vec<UpgradeStep>> {
    (found..format.current)
        .map(|from| {
            format
                .steps
                .iter()
                .find(|step| step.from == from)
                .copied()
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "{} {} has format {found}; this build reads format {} and has no upgrade from format {from}",
                        format.part,
                        shown(env),
                        format.current
                    ))
                })
        })
        .collect()
}

fn open_step_databases(env: &Env, steps: &[UpgradeStep]) -> Result<StepDatabases> {
    let mut databases = StepDatabases::default();
    for name in steps.iter().flat_map(|step| step.databases) {
        databases.handles.insert(name, env.database(name)?);
    }
    Ok(databases)
}

/// The marker another process wrote after ours was read: fine if current.
fn check_stamped_meanwhile(env: &Env, format: &FileFormat, found: u32) -> Result<()> {
    if found > format.current {
        return Err(newer_error(env, format, found));
    }
    if found < format.current {
        return Err(Error::conflict(format!(
            "{} {} changed to format {found} while opening; open it again",
            format.part,
            shown(env)
        )));
    }
    Ok(())
}

fn newer_error(env: &Env, format: &FileFormat, found: u32) -> Error {
    Error::unsupported(format!(
        "{} {} has format {found}, newer than this build reads (format {}); open it with a newer keel",
        format.part,
        shown(env),
        format.current
    ))
}

/// [`backup_path`], or with `.1`, `.2`, ... appended when an earlier backup
/// is there (never overwritten: it may be the only copy of the old format).
fn unused_backup_path(file: &Path, part: &str, from: u32) -> PathBuf {
    let first = backup_path(file, part, from);
    (1..)
        .map(|n| match n {
            1 => first.clone(),
            n => PathBuf::from(format!("{}.{}", first.display(), n - 1)),
        })
        .find(|candidate| std::fs::symlink_metadata(candidate).is_err())
        .expect("an unused name exists")
}

fn shown(env: &Env) -> std::path::Display<'_> {
    env.path().display()
}

// ---- helpers for upgrade steps ---------------------------------------------------

/// Every entry of `db` (called `name` in errors), copied out, in key order.
pub fn entries(txn: &impl Transaction, db: Database, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use lmdb::Cursor;
    let mut cursor = txn.open_ro_cursor(db).map_err(|e| map_err(format!("read {name}"), e))?;
    cursor
        .iter_start()
        .map(|entry| {
            let (key, value) = entry.map_err(|e| map_err(format!("read {name}"), e))?;
            Ok((key.to_vec(), value.to_vec()))
        })
        .collect()
}

/// Rewrites every value of `db` (called `name` in errors) sealed with its
/// key (see [`seal`](super::seal)), except the entries `skip` names; each
/// entry is first passed to `check`, whose error (naming what is wrong)
/// aborts the upgrade, so damage already there is reported instead of being
/// sealed in as if it were sound.
pub fn seal_all(
    txn: &mut RwTransaction<'_>,
    db: Database,
    name: &str,
    skip: &[&[u8]],
    check: impl Fn(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    for (key, value) in entries(txn, db, name)? {
        if skip.contains(&key.as_slice()) {
            continue;
        }
        check(&key, &value).map_err(|e| e.context(format!("{name} key {key:02x?}")))?;
        txn.put(db, &key, &super::seal(&key, &value), WriteFlags::empty())
            .map_err(|e| map_err(format!("rewrite {name}"), e))?;
    }
    Ok(())
}

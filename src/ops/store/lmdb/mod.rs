//! [`LmdbStore`]: operations and jobs in named databases of an LMDB file,
//! one group-committed durable transaction per call.
//!
//! Databases (all prefixed `keel.`): the records (`op.records`,
//! `jobs.records`), indexes kept in the same transaction as every record
//! change (`op.ready`, `op.working`, `jobs.available`, `jobs.running`,
//! `jobs.finished`, `jobs.unique`), the per-kind counters (`jobs.counts`),
//! the lapsed claims in a row per operation record (`op.lapses`, beside the
//! records so their layout is unchanged; a build that predates it ignores
//! it) and the id/token counters and the file's format marker (`ops.meta`).
//! `LmdbStore::write_op` and
//! `LmdbStore::write_job` are the only places that touch the indexes: they
//! remove the old record's entries and add the new one's, so an index can
//! never disagree with its record.

use std::path::Path;

use ::lmdb::{Cursor, Database, RwTransaction, Transaction, WriteFlags};

mod keys;
use crate::lmdb::format::{self, FileFormat};
use crate::lmdb::{map_err, Env, EnvOptions};
use crate::{Error, Result};

mod jobs;
mod operations;

/// How many expired leases one `dequeue` resets before claiming (the rest
/// wait for the next call); keeps a dequeue after an outage short.
const RESETS_PER_DEQUEUE: usize = 64;
/// How many expired leases one `reset_expired` transaction handles.
const RESETS_PER_PASS: usize = 1_000;

/// The operations-and-jobs format marker (`"format"` in `keel.ops.meta`:
/// `keel-ops` and the version, the same number every record starts with)
/// and its upgrade steps (none yet: version 1 is the first).
pub const FILE_FORMAT: FileFormat = FileFormat {
    part: "operations and jobs",
    meta_db: "keel.ops.meta",
    magic: b"keel-ops",
    current: crate::ops::records::FORMAT_VERSION as u32,
    steps: &[],
};

const NEXT_JOB_ID: &[u8] = b"next_job_id";
const NEXT_TOKEN: &[u8] = b"next_token";

/// Operations and jobs stored in an LMDB environment.
///
/// Guarantees: each trait call is one write (or read) transaction, durable
/// when it returns under the environment's default durability, and combined
/// with concurrent callers' writes into one fsync (group commit). Several
/// processes may share the file; LMDB serialises their writers. Cost: one
/// commit per call; a dequeue is a few cursor seeks per kind.
#[derive(Clone)]
pub struct LmdbStore {
    env: Env,
    dbs: Dbs,
}

#[derive(Clone, Copy)]
struct Dbs {
    op_records: Database,
    op_ready: Database,
    op_working: Database,
    op_lapses: Database,
    jobs: Database,
    available: Database,
    running: Database,
    finished: Database,
    unique: Database,
    counts: Database,
    meta: Database,
}

impl LmdbStore {
    /// A store in its own LMDB file at `path` (created if missing), durable
    /// by default.
    pub fn open(path: impl AsRef<Path>) -> Result<LmdbStore> {
        LmdbStore::with_env(&Env::open(path, &EnvOptions::default())?)
    }

    /// A store in `env` (for example a drive's), in 11 named databases of
    /// its own. Stamps a new store with [`FILE_FORMAT`]; a store of a newer
    /// format is refused with [`Unsupported`](crate::ErrorKind::Unsupported)
    /// naming both versions, an older one upgraded. A store written before
    /// markers existed holds format-1 records and is stamped as format 1.
    pub fn with_env(env: &Env) -> Result<LmdbStore> {
        // The format first: a newer file is refused before any database of
        // this build (one it may lack) is created in it.
        format::ensure(env, &FILE_FORMAT, |_| Ok(()))?;
        let db = |name: &str| env.database(&format!("keel.{name}"));
        let dbs = Dbs {
            op_records: db("op.records")?,
            op_ready: db("op.ready")?,
            op_working: db("op.working")?,
            op_lapses: db("op.lapses")?,
            jobs: db("jobs.records")?,
            available: db("jobs.available")?,
            running: db("jobs.running")?,
            finished: db("jobs.finished")?,
            unique: db("jobs.unique")?,
            counts: db("jobs.counts")?,
            meta: db("ops.meta")?,
        };
        Ok(LmdbStore { env: env.clone(), dbs })
    }

    /// The environment the store lives in.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The file's path, for stats.
    fn path_shown(&self) -> String {
        self.env.path().display().to_string()
    }

    fn context(&self) -> String {
        format!("ops store {}", self.env.path().display())
    }
}

// ---- small transaction helpers ------------------------------------------------

fn get<'t>(txn: &'t impl Transaction, db: Database, key: &[u8], what: &dyn Fn() -> String) -> Result<Option<&'t [u8]>> {
    match txn.get(db, &key) {
        Ok(value) => Ok(Some(value)),
        Err(::lmdb::Error::NotFound) => Ok(None),
        Err(err) => Err(map_err(what(), err)),
    }
}

fn put(txn: &mut RwTransaction<'_>, db: Database, key: &[u8], value: &[u8], what: &dyn Fn() -> String) -> Result<()> {
    txn.put(db, &key, &value, WriteFlags::empty())
        .map_err(|err| map_err(what(), err))
}

/// Deletes an index entry that must exist; a missing one means the index
/// and its record disagree.
fn del(txn: &mut RwTransaction<'_>, db: Database, key: &[u8], what: &dyn Fn() -> String) -> Result<()> {
    match txn.del(db, &key, None) {
        Ok(()) => Ok(()),
        Err(::lmdb::Error::NotFound) => Err(Error::corrupt(format!("{}: index entry missing", what()))),
        Err(err) => Err(map_err(what(), err)),
    }
}

/// Up to `limit` keys from `start` on that begin with `prefix` and satisfy
/// `keep` (the scan stops at the first that does not).
fn scan_keys(
    txn: &impl Transaction,
    db: Database,
    start: &[u8],
    prefix: &[u8],
    limit: usize,
    mut keep: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<Vec<Vec<u8>>> {
    let mut cursor = txn.open_ro_cursor(db).map_err(|err| map_err("open cursor", err))?;
    let mut found = Vec::new();
    // LMDB refuses an empty key to seek to; an empty start means the first.
    let entries = if start.is_empty() {
        cursor.iter_start()
    } else {
        cursor.iter_from(start)
    };
    for entry in entries {
        let (key, _) = entry.map_err(|err| map_err("scan index", err))?;
        if found.len() >= limit || !key.starts_with(prefix) || !keep(key)? {
            break;
        }
        found.push(key.to_vec());
    }
    Ok(found)
}

/// Reads and increments a counter in `meta`, starting at 1.
fn next_counter(txn: &mut RwTransaction<'_>, meta: Database, name: &[u8]) -> Result<u64> {
    let what = || format!("counter {}", String::from_utf8_lossy(name));
    let current = match get(txn, meta, name, &what)? {
        Some(value) => keys::parse_u64(value, &what())?,
        None => 1,
    };
    put(txn, meta, name, &(current + 1).to_be_bytes(), &what)?;
    Ok(current)
}

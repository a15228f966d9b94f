//! [`LmdbStore`]: operations and jobs in named databases of an LMDB file,
//! one group-committed durable transaction per call.
//!
//! Databases (all prefixed `keel.`, listed with their keys in
//! `tables.rs`): the records (`op.records`, `jobs.records`), indexes kept
//! in the same transaction as every record change (`op.ready`,
//! `op.working`, `jobs.available`, `jobs.running`, `jobs.finished`,
//! `jobs.unique`), the per-kind counters (`jobs.counts`), the lapsed claims
//! in a row per operation record (`op.lapses`) and the id/token counters
//! and the file's format marker (`ops.meta`). Every value is checksummed
//! (format 2 on). `LmdbStore::write_op` and `LmdbStore::write_job` are the
//! only places that touch the indexes: they remove the old record's entries
//! and add the new one's, so an index can never disagree with its record.

use std::path::Path;

use ::lmdb::RwTransaction;

use crate::lmdb::format::{self, FileFormat};
use crate::lmdb::{Env, EnvOptions};
use crate::{Error, Result};

mod jobs;
mod operations;
pub(crate) mod tables;
mod upgrade;
// Run by `keel::drive::verify_file`, which verifies every keel LMDB file.
#[cfg(feature = "drive")]
mod verify;

#[cfg(feature = "drive")]
pub(crate) use verify::check as verify_check;

use tables::Tables;

/// How many expired leases one `dequeue` resets before claiming (the rest
/// wait for the next call); keeps a dequeue after an outage short.
const RESETS_PER_DEQUEUE: usize = 64;
/// How many expired leases one `reset_expired` transaction handles.
const RESETS_PER_PASS: usize = 1_000;

/// The stored layout of operations and jobs this build reads and writes:
/// 2 (every value checksummed). Format-1 files (and files written before
/// format markers, which hold format 1) are upgraded on open, after a
/// backup beside the file.
pub const FORMAT_VERSION: u32 = 2;

/// The operations-and-jobs format marker (`"format"` in `keel.ops.meta`:
/// `keel-ops` and the version) and its upgrade steps.
pub const FILE_FORMAT: FileFormat = FileFormat {
    part: "operations and jobs",
    meta_db: tables::META,
    magic: b"keel-ops",
    current: FORMAT_VERSION,
    steps: upgrade::STEPS,
};

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
    t: Tables,
}

impl LmdbStore {
    /// A store in its own LMDB file at `path` (created if missing), durable
    /// by default.
    /// A path that reads as a URL (`postgresql://db/app`) is refused, never
    /// taken for a folder named `postgresql:`: open it with
    /// [`Queue::open_at`](crate::ops::Queue::open_at) or
    /// [`Operations::open_at`](crate::ops::Operations::open_at).
    pub fn open(path: impl AsRef<Path>) -> Result<LmdbStore> {
        let path = path.as_ref();
        if !matches!(
            crate::location::Location::from_path(path),
            Ok(crate::location::Location::Path(_))
        ) {
            return Err(Error::invalid_argument(format!(
                "{} is a URL, not a file path: open it with open_at(&Location::parse(..)) (Queue, Operations)",
                path.display()
            )));
        }
        LmdbStore::with_env(&Env::open(path, &EnvOptions::default())?)
    }

    /// A store in `env` (for example a drive's), in 11 named databases of
    /// its own. Stamps a new store with [`FILE_FORMAT`]; a store of a newer
    /// format is refused with [`Unsupported`](crate::ErrorKind::Unsupported)
    /// naming both versions, an older one upgraded (see
    /// [`crate::lmdb::format`]). A store written before markers existed
    /// holds format-1 records: it is stamped as format 1, then upgraded.
    pub fn with_env(env: &Env) -> Result<LmdbStore> {
        if format::found_version(env, &FILE_FORMAT)?.is_none() && holds_unmarked_store(env)? {
            format::stamp_unmarked(env, &FILE_FORMAT, 1)?;
        }
        // The format first: a newer file is refused before any database of
        // this build (one it may lack) is created in it.
        format::ensure(env, &FILE_FORMAT, |_| Ok(()))?;
        Ok(LmdbStore {
            env: env.clone(),
            t: Tables::open(env)?,
        })
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

/// Whether `env` holds operations or jobs tables (so, without a marker, a
/// store written before markers existed).
fn holds_unmarked_store(env: &Env) -> Result<bool> {
    let names = env.database_names()?;
    Ok(names
        .iter()
        .any(|name| name.as_str() != tables::META && tables::ALL.contains(&name.as_str())))
}

/// Reads and increments a counter in `keel.ops.meta`, starting at 1.
fn next_counter(txn: &mut RwTransaction<'_>, t: &Tables, name: &str) -> Result<u64> {
    let key = name.to_owned();
    let current = t.meta.get(txn, &key)?.unwrap_or(1);
    t.meta.put(txn, &key, &(current + 1))?;
    Ok(current)
}

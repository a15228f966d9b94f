//! [`PgStore`]: operations and jobs in PostgreSQL, for services whose
//! workers run on many hosts.
//!
//! Each trait call is one transaction (or one self-committing statement)
//! under READ COMMITTED. Claims lock their rows with `FOR UPDATE SKIP
//! LOCKED`, so concurrent claimers never wait on each other and never take
//! the same row; every other change locks the one row it moves with `FOR
//! UPDATE` and applies the shared state machine of
//! [`transitions`](crate::ops::transitions) to it, so the rules are the LMDB
//! store's, word for word. The hot path — a dequeue's reset and claim, a
//! completion — states those same rules in SQL instead (the schema's
//! `claim_jobs`, one `UPDATE`), so each is one round trip; the conformance
//! suite holds both stores to them. Tables, indexes and the SQL entry
//! points are in `crate::postgres::schema`.
//!
//! Time is the database's `now()` unless the store was opened with
//! [`TimeSource::Caller`] (tests): times the caller computed from its own
//! clock (run-at, lease ends, cleanup cut-offs) are moved by the difference
//! between its clock and the database's, so hosts whose clocks disagree
//! still agree on when a lease ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ::postgres::Row;

use crate::ops::clock::Millis;
use crate::postgres::{Announcer, Conn, PgDatabase, PgOptions, Session, TimeSource};
use crate::Result;

mod jobs;
mod open;
mod operations;

pub use jobs::enqueue_in;

/// How many expired leases one `dequeue` resets before claiming.
const RESETS_PER_DEQUEUE: i64 = 64;
/// How many expired leases one `reset_expired` transaction handles.
const RESETS_PER_PASS: i64 = 1_000;
/// Every this many job writes, the count deltas are folded into the counts.
const FOLD_EVERY: u64 = 1_024;

/// Operations and jobs stored in a PostgreSQL schema.
///
/// Guarantees: each call is atomic and durable when it returns (as durable
/// as the server's `synchronous_commit`); claims and dequeues hand each row
/// to exactly one caller across processes and hosts; a stale token changes
/// nothing. Cost: one round trip per hot call — an enqueue is one
/// statement, a dequeue (or `dequeue_many`) one call of the schema's
/// `claim_jobs`, a completion (or a `finish_many`'s completions together)
/// one `UPDATE`; counts read a small table, never the jobs. Cloning shares
/// the pool.
#[derive(Clone)]
pub struct PgStore {
    db: PgDatabase,
    writes: Arc<AtomicU64>,
    /// Sends the `NOTIFY` of each enqueue after it commits (made on the
    /// first enqueue).
    announcer: Arc<OnceLock<Announcer>>,
}

/// The time of one transaction: `now` on the store's clock, and how far the
/// caller's clock is behind it.
#[derive(Debug, Clone, Copy)]
struct Times {
    now: Millis,
    skew: i64,
}

impl Times {
    /// A time the caller computed on its clock, on the store's (0 stays 0:
    /// it means "none" in records).
    fn shift(self, at: Millis) -> Millis {
        if at == 0 || self.skew == 0 {
            return at;
        }
        let shifted = i128::from(at) + i128::from(self.skew);
        shifted.clamp(0, i128::from(i64::MAX)) as Millis
    }
}

impl PgStore {
    /// A store at `url` (see [`crate::postgres`] for the forms) in the
    /// `keel` schema, timed by the database.
    pub fn open(url: &str) -> Result<PgStore> {
        PgStore::open_with(url, &PgOptions::default())
    }

    /// A store at `url` with `options` (schema, pool size, time source).
    pub fn open_with(url: &str, options: &PgOptions) -> Result<PgStore> {
        Ok(PgStore::with_database(PgDatabase::open(url, options)?))
    }

    /// A store in an open database (shared with keyed locks, say).
    pub fn with_database(db: PgDatabase) -> PgStore {
        PgStore {
            db,
            writes: Default::default(),
            announcer: Default::default(),
        }
    }

    /// The database the store lives in.
    pub fn database(&self) -> &PgDatabase {
        &self.db
    }

    fn conn(&self) -> Result<Conn> {
        self.db.conn()
    }

    fn context(&self) -> String {
        format!("ops store {}", self.db.location())
    }

    /// `template` with `{s}` replaced by the schema name.
    fn sql(&self, template: &str) -> String {
        template.replace("{s}", self.db.schema())
    }

    /// The time of the transaction `session` runs, given the caller's `now`.
    fn times(&self, session: &mut Session<'_>, caller_now: Millis) -> Result<Times> {
        match self.db.time() {
            TimeSource::Caller => Ok(Times {
                now: caller_now,
                skew: 0,
            }),
            TimeSource::Database => {
                let row = session.query_opt(&self.sql("SELECT {s}.now_ms()"), &[])?;
                let db_now: i64 = row.map(|row| row.get(0)).unwrap_or(0);
                Ok(Times {
                    now: db_now.max(0) as Millis,
                    skew: db_now.saturating_sub(to_sql_time(caller_now)),
                })
            }
        }
    }

    /// Whether statements should take the caller's time (`$n` flags in SQL
    /// that computes its own time).
    fn caller_time(&self) -> bool {
        self.db.time() == TimeSource::Caller
    }

    /// Wakes idle workers of every host for a new job of `kind`, just after
    /// its enqueue committed (see [`Announcer`] for why not in it).
    fn announce(&self, kind: &str) {
        self.announcer
            .get_or_init(|| Announcer::new(self.db.clone()))
            .announce(kind);
    }

    /// Counts one job write; every [`FOLD_EVERY`] writes, folds the count
    /// deltas so their table stays small.
    fn note_write(&self) {
        self.note_writes(1);
    }

    /// Counts `n` job writes, folding as [`note_write`](Self::note_write).
    fn note_writes(&self, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.writes.fetch_add(n, Ordering::Relaxed);
        if before / FOLD_EVERY != (before + n) / FOLD_EVERY {
            // Best effort: counts stay right without it, only slower to read.
            let _ = self.fold_counts();
        }
    }

    /// Moves the count deltas into the counts table, unless another caller
    /// is doing it right now.
    fn fold_counts(&self) -> Result<()> {
        let context = self.context();
        let lock = crate::postgres::locks::key_hash(&format!("keel counts {}", self.db.schema()));
        let fold = self.sql("SELECT {s}.fold_counts()");
        self.conn()?.transact(&context, |s| {
            let got: bool = s
                .query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&lock])?
                .is_some_and(|row| row.get(0));
            if got {
                s.query(&fold, &[])?;
            }
            Ok(())
        })
    }
}

/// A time as stored (bigint), saturating.
fn to_sql_time(at: Millis) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

fn from_sql_time(at: i64) -> Millis {
    at.max(0) as Millis
}

fn to_sql_u32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn from_sql_u32(n: i32) -> u32 {
    n.max(0) as u32
}

/// The first column of the first row, or `default`.
fn scalar<T: for<'a> ::postgres::types::FromSql<'a>>(rows: &[Row], default: T) -> T {
    rows.first().map_or(default, |row| row.get(0))
}

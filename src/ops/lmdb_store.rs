//! [`LmdbStore`]: operations and jobs in named databases of an LMDB file,
//! one group-committed durable transaction per call.
//!
//! Databases (all prefixed `keel.`): the records (`op.records`,
//! `jobs.records`), indexes kept in the same transaction as every record
//! change (`op.ready`, `op.working`, `jobs.available`, `jobs.running`,
//! `jobs.finished`, `jobs.unique`), the per-kind counters (`jobs.counts`)
//! and the id/token counters (`ops.meta`). `LmdbStore::write_op` and
//! `LmdbStore::write_job` are the only places that touch the indexes: they
//! remove the old record's entries and add the new one's, so an index can
//! never disagree with its record.

use std::path::Path;

use ::lmdb::{Cursor, Database, RwTransaction, Transaction, WriteFlags};

use super::clock::Millis;
use super::lmdb_keys::{self as keys, Slot};
use super::records::{JobId, JobRecord, JobState, OpClaim, OpRecord, OpState, Token};
use super::store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, OperationStore, ResetReport};
use super::transitions::{self as t, JobPolicy};
use crate::lmdb::{map_err, Env, EnvOptions};
use crate::{Error, Result};

/// How many expired leases one `dequeue` resets before claiming (the rest
/// wait for the next call); keeps a dequeue after an outage short.
const RESETS_PER_DEQUEUE: usize = 64;
/// How many expired leases one `reset_expired` transaction handles.
const RESETS_PER_PASS: usize = 1_000;

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
    pub fn open(path: &Path) -> Result<LmdbStore> {
        LmdbStore::with_env(&Env::open(path, &EnvOptions::default())?)
    }

    /// A store in `env` (for example a drive's), in 10 named databases of
    /// its own.
    pub fn with_env(env: &Env) -> Result<LmdbStore> {
        let db = |name: &str| env.database(&format!("keel.{name}"));
        let dbs = Dbs {
            op_records: db("op.records")?,
            op_ready: db("op.ready")?,
            op_working: db("op.working")?,
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

// ---- operations -------------------------------------------------------------------

impl LmdbStore {
    fn load_op(&self, txn: &impl Transaction, item: &str, op: &str) -> Result<Option<OpRecord>> {
        let what = || format!("{}: operation {op:?} of item {item:?}", self.context());
        get(txn, self.dbs.op_records, &keys::op_record(item, op), &what)?
            .map(|value| OpRecord::decode_value(item, op, value))
            .transpose()
    }

    /// Stores `new` in place of `old`, moving its index entries.
    fn write_op(&self, txn: &mut RwTransaction<'_>, old: Option<&OpRecord>, new: &OpRecord) -> Result<()> {
        let what = || format!("{}: operation {:?} of item {:?}", self.context(), new.op, new.item);
        if let Some(old) = old {
            if let Some((db, key)) = self.op_index_entry(old) {
                del(txn, db, &key, &what)?;
            }
        }
        if let Some((db, key)) = self.op_index_entry(new) {
            put(txn, db, &key, &[], &what)?;
        }
        put(
            txn,
            self.dbs.op_records,
            &keys::op_record(&new.item, &new.op),
            &new.encode_value(),
            &what,
        )
    }

    fn op_index_entry(&self, record: &OpRecord) -> Option<(Database, Vec<u8>)> {
        match record.state {
            OpState::Ready => Some((
                self.dbs.op_ready,
                keys::op_index(&record.op, record.ready_at, &record.item),
            )),
            OpState::Working => Some((
                self.dbs.op_working,
                keys::op_index(&record.op, record.lease_until, &record.item),
            )),
            OpState::Ok | OpState::Failed => None,
        }
    }

    fn make_ready(&self, txn: &mut RwTransaction<'_>, item: &str, op: &str, now: Millis) -> Result<OpRecord> {
        let old = self.load_op(txn, item, op)?;
        let new = t::op_ready(old.clone(), item, op, now);
        self.write_op(txn, old.as_ref(), &new)?;
        Ok(new)
    }

    /// The items of `op` to claim: expired WORKING first, then READY oldest first.
    fn claimable_items(&self, txn: &impl Transaction, op: &str, limit: usize, now: Millis) -> Result<Vec<String>> {
        let prefix = keys::prefix(op);
        let expired = scan_keys(txn, self.dbs.op_working, &prefix, &prefix, limit, |key| {
            Ok(keys::parse_op_index(key)?.0 <= now)
        })?;
        let ready = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, limit - expired.len(), |_| {
            Ok(true)
        })?;
        expired
            .iter()
            .chain(&ready)
            .map(|key| keys::parse_op_index(key).map(|(_, item)| item))
            .collect()
    }
}

impl OperationStore for LmdbStore {
    fn ready(&self, item: &str, ops: &[&str], now: Millis) -> Result<Vec<OpRecord>> {
        self.env
            .write(|txn| ops.iter().map(|op| self.make_ready(txn, item, op, now)).collect())
    }

    fn next(&self, op: &str, limit: usize) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(op);
            let found = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, limit, |_| Ok(true))?;
            found
                .iter()
                .map(|key| {
                    let (_, item) = keys::parse_op_index(key)?;
                    self.load_op(txn, &item, op)?.ok_or_else(|| {
                        Error::corrupt(format!("{}: READY index names missing item {item:?}", self.context()))
                    })
                })
                .collect()
        })
    }

    fn claim(&self, op: &str, limit: usize, request: ClaimRequest<'_>) -> Result<Vec<OpClaim>> {
        self.env.write(|txn| {
            let items = self.claimable_items(txn, op, limit, request.now)?;
            let mut claims = Vec::with_capacity(items.len());
            for item in items {
                let old = self
                    .load_op(txn, &item, op)?
                    .ok_or_else(|| Error::corrupt(format!("{}: index names missing item {item:?}", self.context())))?;
                if !t::op_claimable(&old, request.now) {
                    return Err(Error::corrupt(format!(
                        "{}: index lists unclaimable item {item:?}",
                        self.context()
                    )));
                }
                let token = next_counter(txn, self.dbs.meta, NEXT_TOKEN)?;
                let new = t::op_claim(old.clone(), request.worker, token, request.lease_until, request.now);
                self.write_op(txn, Some(&old), &new)?;
                claims.push(OpClaim {
                    item,
                    op: op.to_owned(),
                    token,
                    lease_until: new.lease_until,
                    attempt: new.attempts,
                });
            }
            Ok(claims)
        })
    }

    fn update(
        &self,
        item: &str,
        op: &str,
        token: Option<Token>,
        state: OpState,
        message: &str,
        enable: &[&str],
        now: Millis,
    ) -> Result<OpRecord> {
        self.env.write(|txn| {
            let old = self.load_op(txn, item, op)?;
            let new = t::op_update(old.clone(), item, op, token, state, message, now)?;
            self.write_op(txn, old.as_ref(), &new)?;
            for downstream in enable {
                self.make_ready(txn, item, downstream, now)?;
            }
            Ok(new)
        })
    }

    fn states(&self, item: &str) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(item);
            let mut cursor = txn
                .open_ro_cursor(self.dbs.op_records)
                .map_err(|err| map_err(self.context(), err))?;
            let mut records = Vec::new();
            for entry in cursor.iter_from(&prefix) {
                let (key, value) = entry.map_err(|err| map_err(self.context(), err))?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let (item, op) = keys::parse_op_record(key)?;
                records.push(OpRecord::decode_value(&item, &op, value)?);
            }
            Ok(records)
        })
    }
}

// ---- jobs -------------------------------------------------------------------------

impl LmdbStore {
    fn load_job(&self, txn: &impl Transaction, id: JobId) -> Result<JobRecord> {
        let what = || format!("{}: job {id}", self.context());
        match get(txn, self.dbs.jobs, &keys::job(id), &what)? {
            Some(value) => JobRecord::decode_value(id, value),
            None => Err(Error::not_found(format!("{}: no job {id}", self.context()))),
        }
    }

    /// Stores `new` in place of `old` (deleting the job when `new` is None),
    /// moving its index entries and counts.
    fn write_job(&self, txn: &mut RwTransaction<'_>, old: Option<&JobRecord>, new: Option<&JobRecord>) -> Result<()> {
        let id = new.or(old).map_or(0, |job| job.id);
        let what = || format!("{}: job {id}", self.context());
        if let Some(old) = old {
            for (db, key) in self.job_index_entries(old) {
                del(txn, db, &key, &what)?;
            }
            self.add_count(txn, &old.kind, old.state, -1)?;
        }
        match new {
            Some(new) => {
                for (db, key) in self.job_index_entries(new) {
                    let value = if db == self.dbs.unique {
                        keys::job(new.id).to_vec()
                    } else {
                        Vec::new()
                    };
                    put(txn, db, &key, &value, &what)?;
                }
                self.add_count(txn, &new.kind, new.state, 1)?;
                put(txn, self.dbs.jobs, &keys::job(new.id), &new.encode_value(), &what)
            }
            None => del(txn, self.dbs.jobs, &keys::job(id), &what),
        }
    }

    /// The index entries a job in its state has.
    fn job_index_entries(&self, job: &JobRecord) -> Vec<(Database, Vec<u8>)> {
        let mut entries = Vec::with_capacity(2);
        let slot = Slot {
            priority: job.priority,
            run_at: job.run_at,
            id: job.id,
        };
        match job.state {
            JobState::Queued | JobState::Retrying => {
                entries.push((self.dbs.available, keys::available(&job.kind, slot)))
            }
            JobState::Running => entries.push((self.dbs.running, keys::timed(job.lease_until, job.id))),
            JobState::Completed | JobState::Dead | JobState::Cancelled => {
                entries.push((self.dbs.finished, keys::timed(job.finished_at, job.id)))
            }
        }
        if let (Some(unique), false) = (&job.unique_key, job.state.is_finished()) {
            entries.push((self.dbs.unique, keys::unique(&job.kind, unique)));
        }
        entries
    }

    fn add_count(&self, txn: &mut RwTransaction<'_>, kind: &str, state: JobState, delta: i64) -> Result<()> {
        let key = keys::count(kind, state);
        let what = || format!("{}: count of {kind} {state}", self.context());
        let current = match get(txn, self.dbs.counts, &key, &what)? {
            Some(value) => keys::parse_u64(value, &what())?,
            None => 0,
        };
        let next = current
            .checked_add_signed(delta)
            .ok_or_else(|| Error::corrupt(format!("{}: count below zero", what())))?;
        if next == 0 {
            del(txn, self.dbs.counts, &key, &what)
        } else {
            put(txn, self.dbs.counts, &key, &next.to_be_bytes(), &what)
        }
    }

    /// The live job holding `unique` for `kind`, if any.
    fn unique_holder(&self, txn: &impl Transaction, kind: &str, unique: &str) -> Result<Option<JobRecord>> {
        let what = || format!("{}: unique key {unique:?} of {kind}", self.context());
        let Some(value) = get(txn, self.dbs.unique, &keys::unique(kind, unique), &what)? else {
            return Ok(None);
        };
        let id = keys::parse_job(value)?;
        self.load_job(txn, id).map(Some)
    }

    /// The best ready slot of `kind`: for each priority in turn, its earliest
    /// entry, taken if its run-at has come.
    fn best_slot(&self, txn: &impl Transaction, kind: &str, now: Millis) -> Result<Option<Slot>> {
        let prefix = keys::prefix(kind);
        let mut cursor = txn
            .open_ro_cursor(self.dbs.available)
            .map_err(|err| map_err(self.context(), err))?;
        let mut seek = prefix.clone();
        loop {
            let Some(entry) = cursor.iter_from(&seek).next() else {
                return Ok(None);
            };
            let (key, _) = entry.map_err(|err| map_err(self.context(), err))?;
            if !key.starts_with(&prefix) {
                return Ok(None);
            }
            let slot = keys::parse_available(key)?;
            if slot.run_at <= now {
                return Ok(Some(slot));
            }
            // Everything left at this priority is scheduled later still.
            match slot.priority.checked_add(1) {
                Some(next) => seek = keys::available_from(kind, next),
                None => return Ok(None),
            }
        }
    }

    fn reset_in(
        &self,
        txn: &mut RwTransaction<'_>,
        policy: &JobPolicy,
        now: Millis,
        limit: usize,
    ) -> Result<ResetReport> {
        let expired = scan_keys(txn, self.dbs.running, &[], &[], limit, |key| {
            Ok(keys::parse_timed(key)?.0 <= now)
        })?;
        let mut report = ResetReport::default();
        for key in expired {
            let (_, id) = keys::parse_timed(&key)?;
            let old = self.load_job(txn, id)?;
            if !t::job_lease_expired(&old, now) {
                return Err(Error::corrupt(format!(
                    "{}: running index disagrees with job {id}",
                    self.context()
                )));
            }
            let new = t::job_reset(old.clone(), policy.max_resets, now);
            match new.state {
                JobState::Dead => report.dead += 1,
                _ => report.requeued += 1,
            }
            self.write_job(txn, Some(&old), Some(&new))?;
        }
        Ok(report)
    }
}

impl JobStore for LmdbStore {
    fn enqueue(&self, job: NewJob, now: Millis) -> Result<Enqueued> {
        self.env.write(|txn| {
            if let Some(unique) = &job.unique_key {
                if let Some(existing) = self.unique_holder(txn, &job.kind, unique)? {
                    return Ok(Enqueued {
                        job: existing,
                        created: false,
                    });
                }
            }
            let record = JobRecord {
                id: next_counter(txn, self.dbs.meta, NEXT_JOB_ID)?,
                kind: job.kind.clone(),
                payload: job.payload.clone(),
                state: JobState::Queued,
                priority: job.priority,
                run_at: job.run_at,
                attempts: 0,
                failures: 0,
                max_attempts: job.max_attempts,
                resets: 0,
                token: 0,
                worker: String::new(),
                lease_until: 0,
                unique_key: job.unique_key.clone(),
                last_error: String::new(),
                result: String::new(),
                created_at: now,
                updated_at: now,
                finished_at: 0,
            };
            self.write_job(txn, None, Some(&record))?;
            Ok(Enqueued {
                job: record,
                created: true,
            })
        })
    }

    fn dequeue(&self, kinds: &[&str], request: ClaimRequest<'_>, policy: &JobPolicy) -> Result<Option<JobRecord>> {
        self.env.write(|txn| {
            self.reset_in(txn, policy, request.now, RESETS_PER_DEQUEUE)?;
            let mut best: Option<Slot> = None;
            for kind in kinds {
                if let Some(slot) = self.best_slot(txn, kind, request.now)? {
                    best = Some(best.map_or(slot, |current| current.min(slot)));
                }
            }
            let Some(slot) = best else {
                return Ok(None);
            };
            let old = self.load_job(txn, slot.id)?;
            if !t::job_ready(&old, request.now) {
                return Err(Error::corrupt(format!(
                    "{}: available index disagrees with job {}",
                    self.context(),
                    old.id
                )));
            }
            let token = next_counter(txn, self.dbs.meta, NEXT_TOKEN)?;
            let new = t::job_claim(old.clone(), request.worker, token, request.lease_until, request.now);
            self.write_job(txn, Some(&old), Some(&new))?;
            Ok(Some(new))
        })
    }

    fn heartbeat(&self, leases: &[(JobId, Token)], lease_until: Millis, now: Millis) -> Result<Vec<Result<()>>> {
        self.env.write(|txn| {
            let mut results = Vec::with_capacity(leases.len());
            for &(id, token) in leases {
                let outcome = self.load_job(txn, id).and_then(|old| {
                    let new = t::job_heartbeat(old.clone(), token, lease_until, now)?;
                    Ok((old, new))
                });
                results.push(match outcome {
                    Ok((old, new)) => {
                        self.write_job(txn, Some(&old), Some(&new))?;
                        Ok(())
                    }
                    Err(err) => Err(err),
                });
            }
            Ok(results)
        })
    }

    fn finish(
        &self,
        id: JobId,
        token: Token,
        finish: Finish<'_>,
        policy: &JobPolicy,
        now: Millis,
    ) -> Result<JobRecord> {
        self.env.write(|txn| {
            let old = self.load_job(txn, id)?;
            let new = match finish {
                Finish::Complete { result } => t::job_complete(old.clone(), token, result, now)?,
                Finish::Fail { error, retryable } => {
                    t::job_fail(old.clone(), token, error, retryable, &policy.backoff, now)?
                }
                Finish::Release => t::job_release(old.clone(), token, now)?,
            };
            self.write_job(txn, Some(&old), Some(&new))?;
            Ok(new)
        })
    }

    fn cancel(&self, id: JobId, reason: &str, now: Millis) -> Result<JobRecord> {
        self.env.write(|txn| {
            let old = self.load_job(txn, id)?;
            let new = t::job_cancel(old.clone(), reason, now)?;
            self.write_job(txn, Some(&old), Some(&new))?;
            Ok(new)
        })
    }

    fn get(&self, id: JobId) -> Result<JobRecord> {
        self.env.read(|txn| self.load_job(txn, id))
    }

    fn reset_expired(&self, policy: &JobPolicy, now: Millis) -> Result<ResetReport> {
        let mut total = ResetReport::default();
        loop {
            let report = self.env.write(|txn| self.reset_in(txn, policy, now, RESETS_PER_PASS))?;
            total.requeued += report.requeued;
            total.dead += report.dead;
            if report.requeued + report.dead < RESETS_PER_PASS as u64 {
                return Ok(total);
            }
        }
    }

    fn cleanup(&self, before: Millis, limit: usize) -> Result<u64> {
        self.env.write(|txn| {
            let old_keys = scan_keys(txn, self.dbs.finished, &[], &[], limit, |key| {
                Ok(keys::parse_timed(key)?.0 < before)
            })?;
            for key in &old_keys {
                let (_, id) = keys::parse_timed(key)?;
                let old = self.load_job(txn, id)?;
                self.write_job(txn, Some(&old), None)?;
            }
            Ok(old_keys.len() as u64)
        })
    }

    fn counts(&self) -> Result<Vec<KindCount>> {
        self.env.read(|txn| {
            let mut cursor = txn
                .open_ro_cursor(self.dbs.counts)
                .map_err(|err| map_err(self.context(), err))?;
            let mut counts = Vec::new();
            for entry in cursor.iter_start() {
                let (key, value) = entry.map_err(|err| map_err(self.context(), err))?;
                let (kind, state) = keys::parse_count(key)?;
                let count = keys::parse_u64(value, "job count")?;
                counts.push(KindCount { kind, state, count });
            }
            Ok(counts)
        })
    }

    fn list(&self, kind: &str, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>> {
        self.env.read(|txn| {
            let mut cursor = txn
                .open_ro_cursor(self.dbs.jobs)
                .map_err(|err| map_err(self.context(), err))?;
            let mut jobs = Vec::new();
            for entry in cursor.iter_start() {
                if jobs.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(|err| map_err(self.context(), err))?;
                let job = JobRecord::decode_value(keys::parse_job(key)?, value)?;
                if job.kind == kind && (state.is_none() || state == Some(job.state)) {
                    jobs.push(job);
                }
            }
            Ok(jobs)
        })
    }
}

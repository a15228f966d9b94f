//! The job records, their indexes (available, running, finished, unique)
//! and the per-kind counts.

use ::lmdb::{Cursor, Database, RwTransaction, Transaction};

use super::keys::{self, Slot};
use super::{
    del, get, next_counter, put, scan_keys, LmdbStore, NEXT_JOB_ID, NEXT_TOKEN, RESETS_PER_DEQUEUE, RESETS_PER_PASS,
};
use crate::lmdb::map_err;
use crate::ops::clock::Millis;
use crate::ops::events;
use crate::ops::records::{JobId, JobRecord, JobState, Token};
use crate::ops::store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, ResetReport};
use crate::ops::transitions::{self as t, JobPolicy};
use crate::{Error, Result};

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

    fn enqueue_in(&self, txn: &mut RwTransaction<'_>, job: &NewJob, now: Millis) -> Result<Enqueued> {
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
    }

    /// Claims the best ready job of `kinds` in `txn`, if any.
    fn claim_best(
        &self,
        txn: &mut RwTransaction<'_>,
        kinds: &[&str],
        request: ClaimRequest<'_>,
    ) -> Result<Option<JobRecord>> {
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
        self.env.write(|txn| self.enqueue_in(txn, &job, now))
    }

    fn enqueue_many(&self, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Enqueued>> {
        self.env
            .write(|txn| jobs.iter().map(|job| self.enqueue_in(txn, job, now)).collect())
    }

    fn dequeue(&self, kinds: &[&str], request: ClaimRequest<'_>, policy: &JobPolicy) -> Result<Option<JobRecord>> {
        Ok(self.dequeue_many(kinds, 1, request, policy)?.pop())
    }

    fn dequeue_many(
        &self,
        kinds: &[&str],
        limit: usize,
        request: ClaimRequest<'_>,
        policy: &JobPolicy,
    ) -> Result<Vec<JobRecord>> {
        // Reported once committed: the closure may run again if the map grows.
        let mut reset = ResetReport::default();
        let claimed = self.env.write(|txn| {
            reset = self.reset_in(txn, policy, request.now, RESETS_PER_DEQUEUE)?;
            let mut claimed = Vec::new();
            while claimed.len() < limit {
                match self.claim_best(txn, kinds, request)? {
                    Some(job) => claimed.push(job),
                    None => break,
                }
            }
            Ok(claimed)
        })?;
        events::leases_reset(reset.requeued, reset.dead, "dequeue");
        Ok(claimed)
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
            let new = finished(old.clone(), token, finish, policy, now)?;
            self.write_job(txn, Some(&old), Some(&new))?;
            Ok(new)
        })
    }

    fn finish_many(
        &self,
        finishes: &[(JobId, Token, Finish<'_>)],
        policy: &JobPolicy,
        now: Millis,
    ) -> Result<Vec<Result<JobRecord>>> {
        self.env.write(|txn| {
            let mut results = Vec::with_capacity(finishes.len());
            for &(id, token, finish) in finishes {
                let outcome = self.load_job(txn, id).and_then(|old| {
                    let new = finished(old.clone(), token, finish, policy, now)?;
                    Ok((old, new))
                });
                results.push(match outcome {
                    Ok((old, new)) => {
                        self.write_job(txn, Some(&old), Some(&new))?;
                        Ok(new)
                    }
                    Err(err) => Err(err),
                });
            }
            Ok(results)
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

    fn retry(&self, id: JobId, now: Millis) -> Result<JobRecord> {
        self.env.write(|txn| {
            let old = self.load_job(txn, id)?;
            let new = t::job_retry(old.clone(), now)?;
            // Its unique key may have gone to a newer live job meanwhile.
            if let Some(unique) = &new.unique_key {
                if let Some(holder) = self.unique_holder(txn, &new.kind, unique)? {
                    return Err(Error::conflict(format!(
                        "job {id} ({}): its unique key {unique:?} is held by live job {}",
                        new.kind, holder.id
                    )));
                }
            }
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

    /// One seek per priority in use: the first entry at each priority is its
    /// earliest run-at.
    fn oldest_ready(&self, kind: &str, now: Millis) -> Result<Option<Millis>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(kind);
            let mut cursor = txn
                .open_ro_cursor(self.dbs.available)
                .map_err(|err| map_err(self.context(), err))?;
            let mut seek = prefix.clone();
            let mut oldest: Option<Millis> = None;
            loop {
                let Some(entry) = cursor.iter_from(&seek).next() else {
                    return Ok(oldest);
                };
                let (key, _) = entry.map_err(|err| map_err(self.context(), err))?;
                if !key.starts_with(&prefix) {
                    return Ok(oldest);
                }
                let slot = keys::parse_available(key)?;
                if slot.run_at <= now {
                    oldest = Some(oldest.map_or(slot.run_at, |known| known.min(slot.run_at)));
                }
                match slot.priority.checked_add(1) {
                    Some(next) => seek = keys::available_from(kind, next),
                    None => return Ok(oldest),
                }
            }
        })
    }

    fn location(&self) -> String {
        self.path_shown()
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

/// `old` after `finish` by the holder of `token` (Conflict when stale).
fn finished(old: JobRecord, token: Token, finish: Finish<'_>, policy: &JobPolicy, now: Millis) -> Result<JobRecord> {
    match finish {
        Finish::Complete { result } => t::job_complete(old, token, result, now),
        Finish::Fail { error, retryable } => t::job_fail(old, token, error, retryable, &policy.backoff, now),
        Finish::Release => t::job_release(old, token, now),
    }
}

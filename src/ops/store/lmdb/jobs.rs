//! The job records, their indexes (available, running, finished, unique)
//! and the per-kind counts.

use ::lmdb::{RwTransaction, Transaction};

use super::tables::{self, AvailableKey, CountKey, Slot, TimedKey, UniqueKey, NEXT_JOB_ID, NEXT_TOKEN};
use super::{next_counter, LmdbStore, RESETS_PER_DEQUEUE, RESETS_PER_PASS};
use crate::ops::clock::Millis;
use crate::ops::events;
use crate::ops::records::{JobId, JobRecord, JobState, Token};
use crate::ops::store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, ResetReport};
use crate::ops::transitions::{self as t, JobPolicy};
use crate::{Error, Result};

/// One index entry of a job in its state.
enum Entry {
    Available(AvailableKey),
    Running(TimedKey),
    Finished(TimedKey),
    Unique(UniqueKey),
}

impl LmdbStore {
    /// Job `id`, NotFound if there is none.
    fn load_job(&self, txn: &impl Transaction, id: JobId) -> Result<JobRecord> {
        match self.t.jobs.get(txn, &id)? {
            Some(job) => Ok(JobRecord { id, ..job }),
            None => Err(Error::not_found(format!("{}: no job {id}", self.context()))),
        }
    }

    /// Job `id`, which the index `index` lists: a missing one is Corrupt
    /// (the index and the records disagree).
    fn indexed_job(&self, txn: &impl Transaction, id: JobId, index: &str) -> Result<JobRecord> {
        match self.t.jobs.get(txn, &id)? {
            Some(job) => Ok(JobRecord { id, ..job }),
            None => Err(Error::corrupt(format!(
                "{}: {index} lists job {id}, which {} does not hold",
                self.context(),
                tables::JOBS
            ))),
        }
    }

    /// Stores `new` in place of `old` (deleting the job when `new` is None),
    /// moving its index entries and counts.
    fn write_job(&self, txn: &mut RwTransaction<'_>, old: Option<&JobRecord>, new: Option<&JobRecord>) -> Result<()> {
        if let Some(old) = old {
            for entry in job_index_entries(old) {
                match entry {
                    Entry::Available(key) => self.t.available.delete_existing(txn, &key)?,
                    Entry::Running(key) => self.t.running.delete_existing(txn, &key)?,
                    Entry::Finished(key) => self.t.finished.delete_existing(txn, &key)?,
                    Entry::Unique(key) => self.t.unique.delete_existing(txn, &key)?,
                }
            }
            self.add_count(txn, &old.kind, old.state, -1)?;
        }
        match new {
            Some(new) => {
                for entry in job_index_entries(new) {
                    match entry {
                        Entry::Available(key) => self.t.available.put(txn, &key, &())?,
                        Entry::Running(key) => self.t.running.put(txn, &key, &())?,
                        Entry::Finished(key) => self.t.finished.put(txn, &key, &())?,
                        Entry::Unique(key) => self.t.unique.put(txn, &key, &new.id)?,
                    }
                }
                self.add_count(txn, &new.kind, new.state, 1)?;
                self.t.jobs.put(txn, &new.id, new)
            }
            None => match old {
                Some(old) => self.t.jobs.delete_existing(txn, &old.id),
                None => Ok(()),
            },
        }
    }

    fn add_count(&self, txn: &mut RwTransaction<'_>, kind: &str, state: JobState, delta: i64) -> Result<()> {
        let key = CountKey {
            kind: kind.to_owned(),
            state,
        };
        let current = self.t.counts.get(txn, &key)?.unwrap_or(0);
        let next = current.checked_add_signed(delta).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: {} count of {kind} {state} would leave 0..=u64::MAX",
                self.context(),
                tables::COUNTS
            ))
        })?;
        if next == 0 {
            self.t.counts.delete(txn, &key).map(drop)
        } else {
            self.t.counts.put(txn, &key, &next)
        }
    }

    /// The live job holding `unique` for `kind`, if any.
    fn unique_holder(&self, txn: &impl Transaction, kind: &str, unique: &str) -> Result<Option<JobRecord>> {
        let key = UniqueKey {
            kind: kind.to_owned(),
            unique: unique.to_owned(),
        };
        match self.t.unique.get(txn, &key)? {
            Some(id) => self.indexed_job(txn, id, tables::UNIQUE).map(Some),
            None => Ok(None),
        }
    }

    /// The first `jobs.available` entry of `kind` at `priority` or after.
    fn first_available(&self, txn: &impl Transaction, kind: &str, priority: u8) -> Result<Option<Slot>> {
        let seek = AvailableKey::from_priority(kind, priority);
        let found = self.t.available.range(txn, &tables::prefix(kind), &seek, 1)?;
        Ok(found.into_iter().next().map(|(key, ())| key.slot))
    }

    /// The best ready slot of `kind`: for each priority in turn, its earliest
    /// entry, taken if its run-at has come.
    fn best_slot(&self, txn: &impl Transaction, kind: &str, now: Millis) -> Result<Option<Slot>> {
        let mut priority = 0;
        while let Some(slot) = self.first_available(txn, kind, priority)? {
            if slot.run_at <= now {
                return Ok(Some(slot));
            }
            // Everything left at this priority is scheduled later still.
            match slot.priority.checked_add(1) {
                Some(next) => priority = next,
                None => return Ok(None),
            }
        }
        Ok(None)
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
            id: next_counter(txn, &self.t, NEXT_JOB_ID)?,
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
        let old = self.indexed_job(txn, slot.id, tables::AVAILABLE)?;
        if !t::job_ready(&old, request.now) {
            return Err(Error::corrupt(format!(
                "{}: {} disagrees with job {}",
                self.context(),
                tables::AVAILABLE,
                old.id
            )));
        }
        let token = next_counter(txn, &self.t, NEXT_TOKEN)?;
        let new = t::job_claim(old.clone(), request.worker, token, request.lease_until, request.now);
        self.write_job(txn, Some(&old), Some(&new))?;
        Ok(Some(new))
    }

    /// Up to `limit` keys of a time index, oldest first, while `keep` holds.
    fn timed_keys(
        &self,
        txn: &impl Transaction,
        index: &crate::lmdb::Table<TimedKey, ()>,
        limit: usize,
        keep: impl Fn(&TimedKey) -> bool,
    ) -> Result<Vec<TimedKey>> {
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        index.scan(txn, &[], &[], |key, ()| {
            if !keep(&key) {
                return Ok(false);
            }
            found.push(key);
            Ok(found.len() < limit)
        })?;
        Ok(found)
    }

    fn reset_in(
        &self,
        txn: &mut RwTransaction<'_>,
        policy: &JobPolicy,
        now: Millis,
        limit: usize,
    ) -> Result<ResetReport> {
        let expired = self.timed_keys(txn, &self.t.running, limit, |key| key.at <= now)?;
        let mut report = ResetReport::default();
        for key in expired {
            let old = self.indexed_job(txn, key.id, tables::RUNNING)?;
            if !t::job_lease_expired(&old, now) {
                return Err(Error::corrupt(format!(
                    "{}: {} disagrees with job {}",
                    self.context(),
                    tables::RUNNING,
                    key.id
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

/// The index entries a job in its state has.
fn job_index_entries(job: &JobRecord) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(2);
    match job.state {
        JobState::Queued | JobState::Retrying => entries.push(Entry::Available(AvailableKey {
            kind: job.kind.clone(),
            slot: Slot {
                priority: job.priority,
                run_at: job.run_at,
                id: job.id,
            },
        })),
        JobState::Running => entries.push(Entry::Running(TimedKey {
            at: job.lease_until,
            id: job.id,
        })),
        JobState::Completed | JobState::Dead | JobState::Cancelled => entries.push(Entry::Finished(TimedKey {
            at: job.finished_at,
            id: job.id,
        })),
    }
    if let (Some(unique), false) = (&job.unique_key, job.state.is_finished()) {
        entries.push(Entry::Unique(UniqueKey {
            kind: job.kind.clone(),
            unique: unique.clone(),
        }));
    }
    entries
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
            let old_keys = self.timed_keys(txn, &self.t.finished, limit, |key| key.at < before)?;
            for key in &old_keys {
                let old = self.indexed_job(txn, key.id, tables::FINISHED)?;
                self.write_job(txn, Some(&old), None)?;
            }
            Ok(old_keys.len() as u64)
        })
    }

    /// One seek per priority in use: the first entry at each priority is its
    /// earliest run-at.
    fn oldest_ready(&self, kind: &str, now: Millis) -> Result<Option<Millis>> {
        self.env.read(|txn| {
            let mut oldest: Option<Millis> = None;
            let mut priority = 0;
            while let Some(slot) = self.first_available(txn, kind, priority)? {
                if slot.run_at <= now {
                    oldest = Some(oldest.map_or(slot.run_at, |known| known.min(slot.run_at)));
                }
                match slot.priority.checked_add(1) {
                    Some(next) => priority = next,
                    None => break,
                }
            }
            Ok(oldest)
        })
    }

    fn location(&self) -> String {
        self.path_shown()
    }

    fn counts(&self) -> Result<Vec<KindCount>> {
        self.env.read(|txn| {
            let mut counts = Vec::new();
            self.t.counts.scan(txn, &[], &[], |key, count| {
                counts.push(KindCount {
                    kind: key.kind,
                    state: key.state,
                    count,
                });
                Ok(true)
            })?;
            Ok(counts)
        })
    }

    fn list(&self, kind: &str, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>> {
        self.env.read(|txn| {
            let mut jobs = Vec::new();
            if limit == 0 {
                return Ok(jobs);
            }
            self.t.jobs.scan(txn, &[], &[], |id, job| {
                if job.kind == kind && (state.is_none() || state == Some(job.state)) {
                    jobs.push(JobRecord { id, ..job });
                }
                Ok(jobs.len() < limit)
            })?;
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

//! The storage seam of operations and jobs.
//!
//! [`OperationStore`] and [`JobStore`] name what must be atomic — each
//! method is one transaction, durable when it returns — and nothing about how.
//! LMDB ([`LmdbStore`](super::LmdbStore)) is the embedded default; a
//! PostgreSQL store can implement the same traits with `FOR UPDATE SKIP
//! LOCKED`, which is why no LMDB type appears here. The rules of each move
//! live in [`transitions`](super::transitions), shared by every store.

pub mod lmdb;
#[cfg(feature = "postgres")]
pub mod postgres;

use crate::ops::clock::Millis;
use crate::ops::records::{JobId, JobRecord, JobState, OpClaim, OpRecord, OpState, Token};
use crate::ops::transitions::{JobPolicy, OpPolicy};
use crate::{Error, Result};

/// A claim request: who asks, until when the claim holds, and the time now.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub worker: &'a str,
    pub lease_until: Millis,
    pub now: Millis,
}

/// The order [`OperationStore::next_in`] lists records in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NextOrder {
    /// Oldest READY first (by the time each became READY): the order
    /// `claim` takes them in. The default.
    #[default]
    Oldest,
    /// By item key, byte order (Pbench lists datasets by name).
    Item,
}

/// What one reset pass over operation claims did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpResetReport {
    /// Records whose claim lapsed, READY again.
    pub ready: u64,
    /// Records whose claim lapsed once too often, now FAILED.
    pub failed: u64,
}

/// Durable per-item operation states.
///
/// Methods added after the first stores were written have default
/// implementations in terms of the others, so a store keeps compiling; the
/// LMDB store overrides them all.
pub trait OperationStore: Send + Sync + 'static {
    /// Makes each of `ops` READY for `item` (creating missing records).
    fn ready(&self, item: &str, ops: &[&str], now: Millis) -> Result<Vec<OpRecord>>;

    /// Where the records are kept (a file path, a database URL without
    /// secrets), to tell stores apart in stats.
    fn location(&self) -> String;

    /// Up to `limit` READY records of `op`, oldest first; claims nothing.
    fn next(&self, op: &str, limit: usize) -> Result<Vec<OpRecord>>;

    /// Atomically moves up to `limit` claimable records of `op` (READY, or
    /// WORKING with an expired lease; expired ones first, then oldest READY)
    /// to WORKING under `request`, each with a fresh token. No record is
    /// handed to two claimers whose leases overlap.
    fn claim(&self, op: &str, limit: usize, request: ClaimRequest<'_>) -> Result<Vec<OpClaim>>;

    /// Moves `op` of `item` to `state` and makes each of `enable` READY, all
    /// or nothing. With `token`, refused (Conflict) unless it is the current
    /// claim's; without, refused while someone holds a live claim.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        item: &str,
        op: &str,
        token: Option<Token>,
        state: OpState,
        message: &str,
        enable: &[&str],
        now: Millis,
    ) -> Result<OpRecord>;

    /// Every operation record of `item`, by operation name.
    fn states(&self, item: &str) -> Result<Vec<OpRecord>>;

    /// Up to `limit` records of `op` a claim could take at `now` — READY,
    /// and WORKING under a lease that ended — in `order`; claims nothing.
    ///
    /// Default: `next` (READY only), sorted by item for [`NextOrder::Item`]
    /// after reading every READY record of `op`.
    fn next_in(&self, op: &str, limit: usize, order: NextOrder, now: Millis) -> Result<Vec<OpRecord>> {
        let _ = now;
        match order {
            NextOrder::Oldest => self.next(op, limit),
            NextOrder::Item => {
                let mut records = self.next(op, usize::MAX)?;
                records.sort_by(|a, b| a.item.cmp(&b.item));
                records.truncate(limit);
                Ok(records)
            }
        }
    }

    /// `claim`, counting each lapsed claim it finds on `op` (a WORKING
    /// record whose lease ended) against `policy`: a lapse makes the record
    /// READY again, or FAILED past `policy.max_lapses`, before claiming.
    ///
    /// Default: `claim`, which takes lapsed records without counting.
    fn claim_with(&self, op: &str, limit: usize, request: ClaimRequest<'_>, policy: &OpPolicy) -> Result<Vec<OpClaim>> {
        let _ = policy;
        self.claim(op, limit, request)
    }

    /// Up to `limit` records of `op` (in `state`, if given) by item key,
    /// byte order; claims and changes nothing.
    ///
    /// Default: Unsupported (the other methods cannot list OK or FAILED
    /// records).
    fn list(&self, op: &str, state: Option<OpState>, limit: usize) -> Result<Vec<OpRecord>> {
        let _ = (op, state, limit);
        Err(Error::unsupported(format!(
            "operations store {}: no listing by state",
            self.location()
        )))
    }

    /// The reset pass: every WORKING record (of any operation) whose lease
    /// ended by `now` becomes READY again, or FAILED with a message once
    /// its claims lapsed more than `policy.max_lapses` times in a row.
    ///
    /// Default: Unsupported (the other methods cannot find lapsed claims).
    fn reset_expired(&self, policy: &OpPolicy, now: Millis) -> Result<OpResetReport> {
        let _ = (policy, now);
        Err(Error::unsupported(format!(
            "operations store {}: no reset pass",
            self.location()
        )))
    }
}

/// What `enqueue` stores, before the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: String,
    pub priority: u8,
    pub run_at: Millis,
    pub max_attempts: u32,
    pub unique_key: Option<String>,
}

/// The outcome of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub job: JobRecord,
    /// False when a live job with the same unique key was returned instead.
    pub created: bool,
}

/// How an attempt (or a job) ends.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// The attempt succeeded, with a JSON result (may be empty).
    Complete { result: &'a str },
    /// The attempt failed; retried after a backoff unless not `retryable` or
    /// out of attempts.
    Fail { error: &'a str, retryable: bool },
    /// The attempt is handed back unfinished (no failure counted).
    Release,
}

/// What one pass of the resetter did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Jobs whose lease expired and that were queued again.
    pub requeued: u64,
    /// Jobs that used up their resets and are now dead.
    pub dead: u64,
}

/// How many jobs of one kind are in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCount {
    pub kind: String,
    pub state: JobState,
    pub count: u64,
}

/// A durable job queue with leases and fencing.
///
/// The batch methods (`enqueue_many`, `dequeue_many`, `finish_many`) were
/// added later and default to looping their single form (one transaction
/// each); a store overrides them to do the batch in one transaction, as the
/// LMDB store does.
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job, or returns the live job holding its unique key.
    fn enqueue(&self, job: NewJob, now: Millis) -> Result<Enqueued>;

    /// `enqueue` for each of `jobs`, in order; a later job whose unique key
    /// an earlier one of the batch took returns that one. All or nothing
    /// where the store can (one transaction); the default loops `enqueue`.
    fn enqueue_many(&self, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Enqueued>> {
        jobs.into_iter().map(|job| self.enqueue(job, now)).collect()
    }

    /// Up to `limit` jobs claimed as by `dequeue`, best first, each with a
    /// fresh token; fewer (or none) when fewer are ready. The default loops
    /// `dequeue`.
    fn dequeue_many(
        &self,
        kinds: &[&str],
        limit: usize,
        request: ClaimRequest<'_>,
        policy: &JobPolicy,
    ) -> Result<Vec<JobRecord>> {
        let mut claimed = Vec::new();
        while claimed.len() < limit {
            match self.dequeue(kinds, request, policy)? {
                Some(job) => claimed.push(job),
                None => break,
            }
        }
        Ok(claimed)
    }

    /// `finish` for each entry, each succeeding or failing on its own (a
    /// stale token fails only its entry); the outer error is the store's.
    /// The default loops `finish`.
    fn finish_many(
        &self,
        finishes: &[(JobId, Token, Finish<'_>)],
        policy: &JobPolicy,
        now: Millis,
    ) -> Result<Vec<Result<JobRecord>>> {
        Ok(finishes
            .iter()
            .map(|&(id, token, finish)| self.finish(id, token, finish, policy, now))
            .collect())
    }

    /// Atomically claims the best ready job of `kinds` — lowest priority
    /// number, then earliest run-at, then lowest id — as a new attempt with a
    /// fresh token. Jobs whose lease expired are reset first (per `policy`),
    /// so no deployment can forget the resetter.
    fn dequeue(&self, kinds: &[&str], request: ClaimRequest<'_>, policy: &JobPolicy) -> Result<Option<JobRecord>>;

    /// Extends the leases of running attempts, each all-or-nothing on its
    /// own: a stale token fails only its own entry.
    fn heartbeat(&self, leases: &[(JobId, Token)], lease_until: Millis, now: Millis) -> Result<Vec<Result<()>>>;

    /// Ends the attempt holding `token` (Conflict when stale).
    fn finish(&self, id: JobId, token: Token, finish: Finish<'_>, policy: &JobPolicy, now: Millis)
        -> Result<JobRecord>;

    /// Cancels a job that has not finished; a running attempt is fenced off.
    fn cancel(&self, id: JobId, reason: &str, now: Millis) -> Result<JobRecord>;

    /// Queues a dead or cancelled job again with fresh attempts (Conflict
    /// for any other state, or when a live job now holds its unique key).
    fn retry(&self, id: JobId, now: Millis) -> Result<JobRecord>;

    /// The job with `id` (NotFound when there is none).
    fn get(&self, id: JobId) -> Result<JobRecord>;

    /// Requeues (or kills, past `policy.max_resets`) running jobs whose lease
    /// ended by `now`.
    fn reset_expired(&self, policy: &JobPolicy, now: Millis) -> Result<ResetReport>;

    /// Deletes up to `limit` finished jobs that finished before `before`;
    /// returns how many.
    fn cleanup(&self, before: Millis, limit: usize) -> Result<u64>;

    /// The number of jobs per kind and state (kept up to date on every move,
    /// so reading it does not scan jobs). Zero counts are left out.
    fn counts(&self) -> Result<Vec<KindCount>>;

    /// The earliest run-at among `kind`'s jobs that are ready at `now`
    /// (queued or retrying, run-at come), `None` when none is: how long the
    /// queue has kept a job waiting. For stats, so it must not scan jobs.
    fn oldest_ready(&self, kind: &str, now: Millis) -> Result<Option<Millis>>;

    /// Where the jobs are kept (a file path, a database URL without
    /// secrets), to tell queues apart in stats.
    fn location(&self) -> String;

    /// Jobs of `kind` in `state`, oldest first, at most `limit` (for
    /// inspection; may scan).
    fn list(&self, kind: &str, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>>;
}

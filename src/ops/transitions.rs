//! The state machines of operations and jobs, as pure functions from a
//! record (and the time) to the next record.
//!
//! Every store applies these inside its own transaction, so the rules —
//! who may move a record where, and when a token is stale — are written once
//! and hold for LMDB and any later store alike.

use super::clock::Millis;
use super::records::{JobRecord, JobState, OpRecord, OpState, Token};
use crate::ops::jobs::backoff::Backoff;
use crate::{Error, Result};

/// Limits applied when jobs fail or lose their lease.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobPolicy {
    /// The delay before each retry.
    pub backoff: Backoff,
    /// How many lease expiries a job survives; the next one makes it dead
    /// ("its processor kept dying").
    pub max_resets: u32,
}

impl Default for JobPolicy {
    fn default() -> JobPolicy {
        JobPolicy {
            backoff: Backoff::default(),
            max_resets: 5,
        }
    }
}

/// Limits applied when operation claims lapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpPolicy {
    /// How many lapsed claims (leases that ended without an update) a record
    /// survives in a row; the next one makes it FAILED ("its claimers kept
    /// dying"). A holder's update clears the count.
    pub max_lapses: u32,
}

impl Default for OpPolicy {
    fn default() -> OpPolicy {
        OpPolicy { max_lapses: 5 }
    }
}

// ---- operations ------------------------------------------------------------

/// `existing` (or a new record) made READY now; any claim on it is dropped,
/// so its holder's later update is refused.
pub fn op_ready(existing: Option<OpRecord>, item: &str, op: &str, now: Millis) -> OpRecord {
    let mut record = existing.unwrap_or_else(|| OpRecord::new_ready(item, op, now));
    record.state = OpState::Ready;
    record.token = 0;
    record.lease_until = 0;
    record.ready_at = now;
    record.updated_at = now;
    record
}

/// Whether a claimer may take `record` now: READY, or WORKING under a lease
/// that has ended.
pub fn op_claimable(record: &OpRecord, now: Millis) -> bool {
    match record.state {
        OpState::Ready => true,
        OpState::Working => record.lease_until <= now,
        OpState::Ok | OpState::Failed => false,
    }
}

/// Whether `record` is WORKING under a lease that has ended by `now`: its
/// claim no longer guards the item.
pub fn op_expired(record: &OpRecord, now: Millis) -> bool {
    record.state == OpState::Working && record.lease_until <= now
}

/// `record`, whose claim lapsed for the `lapses`-th time in a row, made
/// READY again in its old place — or FAILED, saying why, once `lapses` exceeds
/// `policy.max_lapses`. Either way the lapsed holder's token is refused.
pub fn op_lapse(mut record: OpRecord, lapses: u32, policy: &OpPolicy, now: Millis) -> OpRecord {
    if lapses > policy.max_lapses {
        record.message = format!(
            "its claimers kept dying: the claim lapsed {lapses} times (max lapses {}), last held by {:?}",
            policy.max_lapses, record.worker
        );
        record.state = OpState::Failed;
        record.token = 0;
        record.lease_until = 0;
        record.updated_at = now;
        return record;
    }
    // It keeps its `ready_at`, so it goes back to its place among the READY
    // records rather than to the end.
    record.state = OpState::Ready;
    record.token = 0;
    record.lease_until = 0;
    record.updated_at = now;
    record
}

/// `record` claimed by `worker` with a fresh `token` until `lease_until`.
pub fn op_claim(mut record: OpRecord, worker: &str, token: Token, lease_until: Millis, now: Millis) -> OpRecord {
    record.state = OpState::Working;
    record.token = token;
    record.worker = worker.to_owned();
    record.lease_until = lease_until;
    record.attempts = record.attempts.saturating_add(1);
    record.updated_at = now;
    record
}

/// `existing` moved to `state` with `message` by the holder of `token`
/// (`None`: by someone holding no claim, refused while a live claim exists).
pub fn op_update(
    existing: Option<OpRecord>,
    item: &str,
    op: &str,
    token: Option<Token>,
    state: OpState,
    message: &str,
    now: Millis,
) -> Result<OpRecord> {
    if state == OpState::Working {
        return Err(Error::invalid_argument(format!(
            "operation {op:?} of item {item:?}: WORKING is entered by claim, not update"
        )));
    }
    check_op_token(existing.as_ref(), item, op, token, now)?;
    let mut record = existing.unwrap_or_else(|| OpRecord::new_ready(item, op, now));
    if state == OpState::Ready {
        record = op_ready(Some(record), item, op, now);
    }
    record.state = state;
    record.message = message.to_owned();
    record.token = 0;
    record.lease_until = 0;
    record.updated_at = now;
    Ok(record)
}

fn check_op_token(existing: Option<&OpRecord>, item: &str, op: &str, token: Option<Token>, now: Millis) -> Result<()> {
    let what = || format!("operation {op:?} of item {item:?}");
    match (existing, token) {
        (Some(record), Some(token)) if record.state == OpState::Working && record.token == token => Ok(()),
        (Some(record), Some(token)) => Err(Error::conflict(format!(
            "{}: claim token {token} is stale (the record is {} with token {})",
            what(),
            record.state,
            record.token
        ))),
        (None, Some(token)) => Err(Error::conflict(format!(
            "{}: claim token {token} is stale (no record)",
            what()
        ))),
        (Some(record), None) if record.state == OpState::Working && record.lease_until > now => {
            Err(Error::conflict(format!(
                "{}: claimed by {:?} until {}; update with its token",
                what(),
                record.worker,
                record.lease_until
            )))
        }
        _ => Ok(()),
    }
}

// ---- jobs ------------------------------------------------------------------

/// Refuses a finish call whose token is not the running attempt's.
pub fn fence(job: &JobRecord, token: Token) -> Result<()> {
    if job.state == JobState::Running && job.token == token {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "job {} ({}): attempt token {token} is stale (the job is {}{})",
        job.id,
        job.kind,
        job.state,
        if job.state == JobState::Running {
            format!(" under token {}", job.token)
        } else {
            String::new()
        }
    )))
}

/// Whether a worker may dequeue `job` now.
pub fn job_ready(job: &JobRecord, now: Millis) -> bool {
    job.state.is_available() && job.run_at <= now
}

/// `job` dequeued by `worker`: a new attempt with a fresh token.
pub fn job_claim(mut job: JobRecord, worker: &str, token: Token, lease_until: Millis, now: Millis) -> JobRecord {
    job.state = JobState::Running;
    job.attempts = job.attempts.saturating_add(1);
    job.token = token;
    job.worker = worker.to_owned();
    job.lease_until = lease_until;
    job.updated_at = now;
    job
}

/// `job`'s lease extended to `lease_until` by the holder of `token`.
pub fn job_heartbeat(mut job: JobRecord, token: Token, lease_until: Millis, now: Millis) -> Result<JobRecord> {
    fence(&job, token)?;
    job.lease_until = job.lease_until.max(lease_until);
    job.updated_at = now;
    Ok(job)
}

/// `job` completed by the holder of `token`.
pub fn job_complete(mut job: JobRecord, token: Token, result: &str, now: Millis) -> Result<JobRecord> {
    fence(&job, token)?;
    job.result = result.to_owned();
    Ok(finish(job, JobState::Completed, now))
}

/// `job`'s attempt failed: retried after a backoff, or dead when the failure
/// is not retryable or the attempts are used up.
pub fn job_fail(
    mut job: JobRecord,
    token: Token,
    error: &str,
    retryable: bool,
    backoff: &Backoff,
    now: Millis,
) -> Result<JobRecord> {
    fence(&job, token)?;
    job.failures = job.failures.saturating_add(1);
    job.last_error = error.to_owned();
    if !retryable || job.failures >= job.max_attempts {
        return Ok(finish(job, JobState::Dead, now));
    }
    job.state = JobState::Retrying;
    job.run_at = now.saturating_add(backoff.delay(job.id, job.failures));
    Ok(clear_attempt(job, now))
}

/// `job` handed back unfinished by the holder of `token` (a graceful stop):
/// queued again at once, its failure count untouched.
pub fn job_release(mut job: JobRecord, token: Token, now: Millis) -> Result<JobRecord> {
    fence(&job, token)?;
    job.state = JobState::Queued;
    job.run_at = now;
    Ok(clear_attempt(job, now))
}

/// `job` cancelled; a running attempt's later finish is refused.
pub fn job_cancel(mut job: JobRecord, reason: &str, now: Millis) -> Result<JobRecord> {
    if job.state.is_finished() {
        return Err(Error::conflict(format!(
            "job {} ({}): already {}",
            job.id, job.kind, job.state
        )));
    }
    job.last_error = reason.to_owned();
    Ok(finish(job, JobState::Cancelled, now))
}

/// `job`, dead or cancelled, queued again by an operator: a fresh set of
/// attempts and resets, its last error kept for the record.
pub fn job_retry(mut job: JobRecord, now: Millis) -> Result<JobRecord> {
    if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
        return Err(Error::conflict(format!(
            "job {} ({}): only dead or cancelled jobs are retried; it is {}",
            job.id, job.kind, job.state
        )));
    }
    job.state = JobState::Queued;
    job.attempts = 0;
    job.failures = 0;
    job.resets = 0;
    job.finished_at = 0;
    job.run_at = now;
    Ok(clear_attempt(job, now))
}

/// Whether `job` is running under a lease that has ended.
pub fn job_lease_expired(job: &JobRecord, now: Millis) -> bool {
    job.state == JobState::Running && job.lease_until <= now
}

/// `job`, whose lease expired, requeued — or dead once it used up
/// `max_resets`, since its processor kept dying.
pub fn job_reset(mut job: JobRecord, max_resets: u32, now: Millis) -> JobRecord {
    job.resets = job.resets.saturating_add(1);
    if job.resets > max_resets {
        job.last_error = format!(
            "its processor kept dying: the lease expired {} times (max resets {max_resets}), last held by {:?}",
            job.resets, job.worker
        );
        return finish(job, JobState::Dead, now);
    }
    job.state = JobState::Queued;
    job.run_at = now;
    clear_attempt(job, now)
}

fn clear_attempt(mut job: JobRecord, now: Millis) -> JobRecord {
    job.token = 0;
    job.lease_until = 0;
    job.updated_at = now;
    job
}

fn finish(mut job: JobRecord, state: JobState, now: Millis) -> JobRecord {
    job.state = state;
    job.finished_at = now;
    clear_attempt(job, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::time::Duration;

    fn queued_job() -> JobRecord {
        JobRecord {
            id: 1,
            kind: "k".into(),
            payload: "{}".into(),
            state: JobState::Queued,
            priority: 0,
            run_at: 0,
            attempts: 0,
            failures: 0,
            max_attempts: 3,
            resets: 0,
            token: 0,
            worker: String::new(),
            lease_until: 0,
            unique_key: None,
            last_error: String::new(),
            result: String::new(),
            created_at: 0,
            updated_at: 0,
            finished_at: 0,
        }
    }

    fn no_jitter() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(100),
            jitter: 0.0,
        }
    }

    #[test]
    fn a_stale_token_cannot_finish_heartbeat_or_release_a_job() {
        let job = job_claim(queued_job(), "w", 7, 100, 0);
        for result in [
            job_complete(job.clone(), 8, "", 1),
            job_fail(job.clone(), 8, "x", true, &no_jitter(), 1),
            job_heartbeat(job.clone(), 8, 200, 1),
            job_release(job.clone(), 8, 1),
        ] {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::Conflict);
        }
        assert_eq!(job_complete(job, 7, "{}", 1).unwrap().state, JobState::Completed);
    }

    #[test]
    fn a_reset_fences_the_attempt_that_lost_its_lease() {
        let job = job_claim(queued_job(), "w", 7, 100, 0);
        assert!(!job_lease_expired(&job, 99));
        assert!(job_lease_expired(&job, 100));
        let reset = job_reset(job, 5, 100);
        assert_eq!(reset.state, JobState::Queued);
        assert_eq!(reset.resets, 1);
        assert_eq!(job_complete(reset, 7, "", 101).unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[test]
    fn failures_back_off_and_then_the_job_is_dead() {
        let mut job = queued_job();
        let mut now = 0;
        for attempt in 1..=3u32 {
            assert!(job_ready(&job, now));
            job = job_claim(job, "w", u64::from(attempt), now + 10, now);
            job = job_fail(job, u64::from(attempt), "boom", true, &no_jitter(), now).unwrap();
            if attempt < 3 {
                assert_eq!(job.state, JobState::Retrying);
                assert_eq!(job.run_at - now, 1_000 << (attempt - 1));
                assert!(!job_ready(&job, job.run_at - 1));
                now = job.run_at;
            }
        }
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.failures, 3);
        assert_eq!(job.attempts, 3);
    }

    #[test]
    fn a_non_retryable_failure_is_dead_at_once() {
        let job = job_claim(queued_job(), "w", 1, 10, 0);
        let dead = job_fail(job, 1, "bad payload", false, &no_jitter(), 0).unwrap();
        assert_eq!(dead.state, JobState::Dead);
        assert_eq!(dead.last_error, "bad payload");
    }

    #[test]
    fn past_max_resets_the_job_dies_saying_its_processor_kept_dying() {
        let mut job = queued_job();
        for reset in 1..=3u64 {
            job = job_claim(job, "w", reset, 10, 0);
            job = job_reset(job, 2, 10);
        }
        assert_eq!(job.state, JobState::Dead);
        assert!(job.last_error.contains("processor kept dying"), "{}", job.last_error);
    }

    #[test]
    fn retry_requeues_only_dead_or_cancelled_jobs_with_fresh_attempts() {
        let mut job = queued_job();
        job.state = JobState::Dead;
        job.attempts = 5;
        job.last_error = "kept dying".into();
        let again = job_retry(job.clone(), 99).unwrap();
        assert_eq!((again.state, again.attempts, again.run_at), (JobState::Queued, 0, 99));
        assert_eq!(again.last_error, "kept dying");
        job.state = JobState::Completed;
        assert_eq!(job_retry(job, 99).unwrap_err().kind(), crate::ErrorKind::Conflict);
    }

    #[test]
    fn cancel_refuses_finished_jobs() {
        let done = job_complete(job_claim(queued_job(), "w", 1, 10, 0), 1, "", 0).unwrap();
        assert_eq!(job_cancel(done, "no", 1).unwrap_err().kind(), ErrorKind::Conflict);
        let running = job_claim(queued_job(), "w", 1, 10, 0);
        let cancelled = job_cancel(running, "user", 1).unwrap();
        assert_eq!(
            job_complete(cancelled, 1, "", 2).unwrap_err().kind(),
            ErrorKind::Conflict
        );
    }

    #[test]
    fn op_updates_are_fenced_by_the_claim_token() {
        let ready = op_ready(None, "ds", "unpack", 0);
        assert!(op_claimable(&ready, 0));
        let working = op_claim(ready, "w1", 5, 100, 0);
        assert!(!op_claimable(&working, 99));
        let stale = op_update(Some(working.clone()), "ds", "unpack", Some(4), OpState::Ok, "", 1);
        assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
        let unclaimed = op_update(Some(working.clone()), "ds", "unpack", None, OpState::Ok, "", 1);
        assert_eq!(unclaimed.unwrap_err().kind(), ErrorKind::Conflict);
        let done = op_update(Some(working.clone()), "ds", "unpack", Some(5), OpState::Ok, "fine", 1).unwrap();
        assert_eq!((done.state, done.token), (OpState::Ok, 0));
        assert!(op_claimable(&working, 100), "an expired lease is claimable again");
        let to_working = op_update(None, "ds", "unpack", None, OpState::Working, "", 1);
        assert_eq!(to_working.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn a_lapsed_claim_is_ready_again_until_it_lapsed_too_often() {
        let policy = OpPolicy { max_lapses: 2 };
        let working = op_claim(op_ready(None, "ds", "unpack", 0), "w1", 5, 100, 0);
        assert!(!op_expired(&working, 99));
        assert!(op_expired(&working, 100));
        let again = op_lapse(working.clone(), 2, &policy, 100);
        assert_eq!((again.state, again.token, again.ready_at), (OpState::Ready, 0, 0));
        let failed = op_lapse(working, 3, &policy, 100);
        assert_eq!(failed.state, OpState::Failed);
        assert!(failed.message.contains("lapsed 3 times"), "{}", failed.message);
        let late = op_update(Some(failed), "ds", "unpack", Some(5), OpState::Ok, "", 101);
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    }
}

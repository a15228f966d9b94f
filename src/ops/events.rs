//! The events of operations and jobs, under the target `keel::ops`: claims,
//! finishes, retries and resets, each with the time its transaction took.
//! Nothing is formatted or timed when the level is off.

use crate::events::{micros, Level, Stopwatch};

use super::clock::Millis;
use super::records::{JobRecord, JobState, OpClaim, OpRecord};

pub(crate) const LOG_TARGET: &str = "keel::ops";

/// Starts timing a call whose event is a debug one.
pub(crate) fn watch() -> Stopwatch {
    Stopwatch::start(LOG_TARGET, Level::Debug)
}

/// `job enqueued: id=.. kind=.. priority=.. created=.. elapsed_us=..`.
pub(crate) fn job_enqueued(watch: Stopwatch, job: &JobRecord, created: bool) {
    if let Some(elapsed) = watch.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "job enqueued: id={} kind={} priority={} created={created} elapsed_us={}",
            job.id,
            job.kind,
            job.priority,
            micros(elapsed)
        );
    }
}

/// `jobs enqueued: count=.. created=.. elapsed_us=..` (one batch).
pub(crate) fn jobs_enqueued(watch: Stopwatch, enqueued: &[crate::ops::store::Enqueued]) {
    if let Some(elapsed) = watch.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "jobs enqueued: count={} created={} elapsed_us={}",
            enqueued.len(),
            enqueued.iter().filter(|e| e.created).count(),
            micros(elapsed)
        );
    }
}

/// `job claimed: id=.. kind=.. attempt=.. worker=.. ready_for_ms=.. elapsed_us=..`
/// (`ready_for_ms`: how long the job waited past its run-at time).
pub(crate) fn job_claimed(watch: Stopwatch, job: &JobRecord, run_at: Millis, now: Millis) {
    if let Some(elapsed) = watch.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "job claimed: id={} kind={} attempt={} worker={:?} ready_for_ms={} elapsed_us={}",
            job.id,
            job.kind,
            job.attempts,
            job.worker,
            now.saturating_sub(run_at),
            micros(elapsed)
        );
    }
}

/// The end of an attempt (or a cancel): a debug event, `job retry
/// scheduled` when it will run again after a backoff, and a warning when
/// the job is dead.
pub(crate) fn job_finished(watch: Stopwatch, how: &str, job: &JobRecord, now: Millis) {
    if job.state == JobState::Dead {
        log::warn!(
            target: LOG_TARGET,
            "job dead: id={} kind={} attempts={} failures={} resets={} error={:?}",
            job.id,
            job.kind,
            job.attempts,
            job.failures,
            job.resets,
            job.last_error
        );
        return;
    }
    let Some(elapsed) = watch.elapsed() else { return };
    if job.state == JobState::Retrying {
        log::debug!(
            target: LOG_TARGET,
            "job retry scheduled: id={} kind={} attempts={} failures={} max_attempts={} backoff_ms={} elapsed_us={}",
            job.id,
            job.kind,
            job.attempts,
            job.failures,
            job.max_attempts,
            job.run_at.saturating_sub(now),
            micros(elapsed)
        );
    } else {
        log::debug!(
            target: LOG_TARGET,
            "job {how}: id={} kind={} state={} attempts={} elapsed_us={}",
            job.id,
            job.kind,
            job.state,
            job.attempts,
            micros(elapsed)
        );
    }
}

/// An operator's retry of a dead or cancelled job: rare and notable.
pub(crate) fn job_retried(job: &JobRecord) {
    log::info!(
        target: LOG_TARGET,
        "job retried by operator: id={} kind={} max_attempts={}",
        job.id,
        job.kind,
        job.max_attempts
    );
}

/// Jobs whose lease expired, requeued (or killed past their resets):
/// their workers died or hung, so a warning.
pub(crate) fn leases_reset(requeued: u64, dead: u64, during: &str) {
    if requeued + dead > 0 {
        log::warn!(
            target: LOG_TARGET,
            "expired leases reset: requeued={requeued} dead={dead} during={during}"
        );
    }
}

/// A warning when a reset pass found lapsed operation claims.
pub(crate) fn ops_reset(ready: u64, failed: u64) {
    if ready + failed > 0 {
        log::warn!(target: LOG_TARGET, "lapsed operation claims reset: ready={ready} failed={failed}");
    }
}

/// `operations claimed: op=.. claimed=.. limit=.. worker=.. elapsed_us=..`.
pub(crate) fn ops_claimed(watch: Stopwatch, op: &str, limit: usize, worker: &str, claims: &[OpClaim]) {
    if let Some(elapsed) = watch.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "operations claimed: op={op} claimed={} limit={limit} worker={worker:?} elapsed_us={}",
            claims.len(),
            micros(elapsed)
        );
    }
}

/// `operation updated: item=.. op=.. state=.. attempts=.. enabled=.. elapsed_us=..`.
pub(crate) fn op_updated(watch: Stopwatch, record: &OpRecord, enabled: usize) {
    if let Some(elapsed) = watch.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "operation updated: item={:?} op={} state={} attempts={} enabled={enabled} elapsed_us={}",
            record.item,
            record.op,
            record.state,
            record.attempts,
            micros(elapsed)
        );
    }
}

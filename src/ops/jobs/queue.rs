//! [`Queue`]: a durable job queue with priorities, scheduling, unique keys,
//! leases, fencing tokens, retries with backoff, a resetter and retention.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::lmdb::Env;
use crate::ops::clock::{millis, Clock, Millis, SystemClock};
use crate::ops::events;
use crate::ops::jobs::queue_stats::QueueStats;
use crate::ops::names::{check_json, check_key, check_name};
use crate::ops::operations::check_lease;
use crate::ops::records::{JobId, JobRecord, JobState, Token};
use crate::ops::store::lmdb::LmdbStore;
use crate::ops::store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, ResetReport};
use crate::ops::transitions::JobPolicy;
use crate::{Error, Result};

/// The lowest (most urgent) priority number.
pub const PRIORITY_MAX_URGENCY: u8 = 0;
/// The highest (least urgent) priority number.
pub const PRIORITY_MIN_URGENCY: u8 = 9;
/// How many jobs one cleanup transaction deletes at most.
const CLEANUP_BATCH: usize = 1_000;

/// How to enqueue a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// 0 (runs first) to 9 (runs last); default 5.
    pub priority: u8,
    /// Not run before this time (ms since the epoch); default now.
    pub run_at: Option<Millis>,
    /// Not run before this long from now, read on the queue's clock (so a
    /// test's manual clock schedules it too); give `run_at` or `delay`, not
    /// both.
    pub delay: Option<Duration>,
    /// Failed attempts allowed before the job is dead; default 20.
    pub max_attempts: u32,
    /// While a job with this key (and kind) has not finished, enqueueing
    /// another returns it instead.
    pub unique_key: Option<String>,
}

impl Default for EnqueueOptions {
    fn default() -> EnqueueOptions {
        EnqueueOptions {
            priority: 5,
            run_at: None,
            delay: None,
            max_attempts: 20,
            unique_key: None,
        }
    }
}

/// A durable job queue.
///
/// Guarantees: every call is one transaction, durable when it returns;
/// concurrent callers share fsyncs through group commit. `dequeue` gives each
/// ready job to exactly one worker (across threads and processes) as an
/// attempt with a fresh token, and finishing calls with any other token are
/// refused ([`Conflict`](crate::ErrorKind::Conflict)) — so a worker whose
/// lease expired cannot complete the attempt that replaced it. Jobs whose
/// lease expired are reset by every `dequeue` (and by
/// [`reset_expired`](Queue::reset_expired)); past `max_resets` they die with
/// a reason saying their processor kept dying. Cost: one durable commit per
/// call; `counts` reads a small per-kind table, not the jobs.
///
/// ```
/// use std::time::Duration;
/// use keel::ops::{EnqueueOptions, JobState, Queue};
/// # let dir = std::env::temp_dir().join(format!("keel-doc-queue-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let queue = Queue::open(&dir.join("jobs.lmdb"))?;
/// queue.enqueue("mail", r#"{"to":"ann@example.org"}"#, &EnqueueOptions::default())?;
/// let job = queue.dequeue(&["mail"], "worker-1", Duration::from_secs(30))?.expect("a ready job");
/// assert_eq!(queue.complete(job.id, job.token, "")?.state, JobState::Completed);
/// // The attempt is over: its token finishes nothing any more.
/// assert!(queue.fail(job.id, job.token, "late", true).is_err());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    policy: JobPolicy,
    wakeup: Arc<Wakeup>,
    /// Its entry in `keel::stats`, listed while a clone lives.
    _stats: Arc<QueueStats>,
}

impl Queue {
    /// A queue in its own LMDB file at `path` (created if missing), with the
    /// system clock and default policy.
    pub fn open(path: impl AsRef<Path>) -> Result<Queue> {
        Ok(Queue::with_store(Arc::new(LmdbStore::open(path)?)))
    }

    /// A queue in named databases of `env` (a drive's, for example).
    pub fn with_env(env: &Env) -> Result<Queue> {
        Ok(Queue::with_store(Arc::new(LmdbStore::with_env(env)?)))
    }

    /// A queue kept in `store`, with the system clock and default policy.
    pub fn with_store(store: Arc<dyn JobStore>) -> Queue {
        Queue::with_parts(store, Arc::new(SystemClock), JobPolicy::default())
    }

    /// A queue kept in `store`, timed by `clock`, retrying per `policy`.
    pub fn with_parts(store: Arc<dyn JobStore>, clock: Arc<dyn Clock>, policy: JobPolicy) -> Queue {
        let stats = Arc::new(QueueStats {
            store: store.clone(),
            clock: clock.clone(),
        });
        crate::stats::register("queue", &stats);
        Queue {
            store,
            clock,
            policy,
            wakeup: Arc::new(Wakeup::default()),
            _stats: stats,
        }
    }

    /// The clock this queue reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The retry and reset policy.
    pub fn policy(&self) -> &JobPolicy {
        &self.policy
    }

    /// Enqueues a job of `kind` with a JSON `payload`. With a unique key
    /// held by a job that has not finished, returns that job
    /// (`created == false`) and stores nothing.
    pub fn enqueue(&self, kind: &str, payload: &str, options: &EnqueueOptions) -> Result<Enqueued> {
        let job = self.new_job(kind, payload, options)?;
        let watch = events::watch();
        let enqueued = self.store.enqueue(job, self.clock.now())?;
        events::job_enqueued(watch, &enqueued.job, enqueued.created);
        if enqueued.created {
            self.wakeup.notify();
        }
        Ok(enqueued)
    }

    /// Enqueues every `(kind, payload, options)` of `jobs` in one
    /// transaction (one commit for all, all or nothing), in order: what
    /// `enqueue` would return for each. A job whose unique key an earlier
    /// one of the batch took returns that one (`created == false`). Every
    /// job is checked before anything is stored.
    pub fn enqueue_many<K: AsRef<str>, P: AsRef<str>>(&self, jobs: &[(K, P, EnqueueOptions)]) -> Result<Vec<Enqueued>> {
        let new: Vec<NewJob> = jobs
            .iter()
            .map(|(kind, payload, options)| self.new_job(kind.as_ref(), payload.as_ref(), options))
            .collect::<Result<_>>()?;
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let watch = events::watch();
        let enqueued = self.store.enqueue_many(new, self.clock.now())?;
        events::jobs_enqueued(watch, &enqueued);
        if enqueued.iter().any(|e| e.created) {
            self.wakeup.notify();
        }
        Ok(enqueued)
    }

    fn new_job(&self, kind: &str, payload: &str, options: &EnqueueOptions) -> Result<NewJob> {
        check_name("job kind", kind)?;
        check_json("payload", payload)?;
        if options.priority > PRIORITY_MIN_URGENCY {
            return Err(Error::invalid_argument(format!(
                "priority {}: must be {PRIORITY_MAX_URGENCY} to {PRIORITY_MIN_URGENCY}",
                options.priority
            )));
        }
        if options.max_attempts == 0 {
            return Err(Error::invalid_argument("max_attempts: must be at least 1"));
        }
        if let Some(key) = &options.unique_key {
            check_key("unique key", key)?;
        }
        let run_at = match (options.run_at, options.delay) {
            (Some(_), Some(_)) => return Err(Error::invalid_argument("give run_at or delay, not both")),
            (Some(at), None) => at,
            (None, Some(delay)) => self.clock.now().saturating_add(millis(delay)),
            (None, None) => self.clock.now(),
        };
        Ok(NewJob {
            kind: kind.to_owned(),
            payload: payload.to_owned(),
            priority: options.priority,
            run_at,
            max_attempts: options.max_attempts,
            unique_key: options.unique_key.clone(),
        })
    }

    /// Claims the best ready job of `kinds` (lowest priority number, then
    /// earliest run-at) for `worker` until `lease` from now, or `None` when
    /// none is ready. The record's `token` fences the attempt.
    pub fn dequeue(&self, kinds: &[&str], worker: &str, lease: Duration) -> Result<Option<JobRecord>> {
        if kinds.is_empty() {
            return Err(Error::invalid_argument("dequeue: name at least one job kind"));
        }
        kinds.iter().try_for_each(|kind| check_name("job kind", kind))?;
        check_key("worker", worker)?;
        check_lease(lease)?;
        let now = self.clock.now();
        let request = ClaimRequest {
            worker,
            lease_until: now.saturating_add(millis(lease)),
            now,
        };
        let watch = events::watch();
        let claimed = self.store.dequeue(kinds, request, &self.policy)?;
        if let Some(job) = &claimed {
            // The claim keeps the run-at it was ready at.
            events::job_claimed(watch, job, job.run_at, now);
        }
        Ok(claimed)
    }

    /// Claims up to `limit` ready jobs of `kinds` in one transaction, best
    /// first (as `dequeue` would one by one), each with its own token.
    pub fn dequeue_many(&self, kinds: &[&str], limit: usize, worker: &str, lease: Duration) -> Result<Vec<JobRecord>> {
        if kinds.is_empty() {
            return Err(Error::invalid_argument("dequeue: name at least one job kind"));
        }
        if limit == 0 {
            return Err(Error::invalid_argument("dequeue_many: limit must be at least 1"));
        }
        kinds.iter().try_for_each(|kind| check_name("job kind", kind))?;
        check_key("worker", worker)?;
        check_lease(lease)?;
        let now = self.clock.now();
        let request = ClaimRequest {
            worker,
            lease_until: now.saturating_add(millis(lease)),
            now,
        };
        let watch = events::watch();
        let claimed = self.store.dequeue_many(kinds, limit, request, &self.policy)?;
        for job in &claimed {
            events::job_claimed(watch, job, job.run_at, now);
        }
        Ok(claimed)
    }

    /// Extends the lease of attempt `token` of job `id` to `lease` from now;
    /// returns the new end. Conflict when the attempt is no longer current.
    pub fn heartbeat(&self, id: JobId, token: Token, lease: Duration) -> Result<Millis> {
        check_lease(lease)?;
        let now = self.clock.now();
        let until = now.saturating_add(millis(lease));
        let mut results = self.store.heartbeat(&[(id, token)], until, now)?;
        results.pop().unwrap_or(Ok(())).map(|()| until)
    }

    /// Extends several attempts' leases in one commit; each entry succeeds or
    /// fails on its own, so one lost lease never affects the others.
    pub fn heartbeat_many(&self, leases: &[(JobId, Token)], lease: Duration) -> Result<Vec<Result<()>>> {
        check_lease(lease)?;
        let now = self.clock.now();
        self.store.heartbeat(leases, now.saturating_add(millis(lease)), now)
    }

    /// Completes attempt `token` of job `id` with a JSON `result` (or "").
    pub fn complete(&self, id: JobId, token: Token, result: &str) -> Result<JobRecord> {
        if !result.is_empty() {
            check_json("result", result)?;
        }
        self.finish(id, token, Finish::Complete { result })
    }

    /// Fails attempt `token` of job `id`: retried after an exponential
    /// backoff with jitter, unless not `retryable` or out of attempts, in
    /// which case the job is dead.
    pub fn fail(&self, id: JobId, token: Token, error: &str, retryable: bool) -> Result<JobRecord> {
        self.finish(id, token, Finish::Fail { error, retryable })
    }

    /// Hands attempt `token` of job `id` back unfinished: queued again at
    /// once, no failure counted.
    pub fn release(&self, id: JobId, token: Token) -> Result<JobRecord> {
        self.finish(id, token, Finish::Release)
    }

    /// Ends several attempts in one transaction (one commit); each entry
    /// succeeds or fails on its own (a stale token is a Conflict for its
    /// entry only). Results are checked as by `complete`.
    pub fn finish_many(&self, finishes: &[(JobId, Token, Finish<'_>)]) -> Result<Vec<Result<JobRecord>>> {
        for (_, _, finish) in finishes {
            if let Finish::Complete { result } = finish {
                if !result.is_empty() {
                    check_json("result", result)?;
                }
            }
        }
        let watch = events::watch();
        let now = self.clock.now();
        let results = self.store.finish_many(finishes, &self.policy, now)?;
        let mut requeued = false;
        for ((_, _, finish), record) in finishes.iter().zip(&results) {
            if let Ok(record) = record {
                events::job_finished(watch, finish_name(finish), record, now);
                requeued |= record.state.is_available();
            }
        }
        if requeued {
            self.wakeup.notify();
        }
        Ok(results)
    }

    fn finish(&self, id: JobId, token: Token, finish: Finish<'_>) -> Result<JobRecord> {
        let how = finish_name(&finish);
        let watch = events::watch();
        let now = self.clock.now();
        let record = self.store.finish(id, token, finish, &self.policy, now)?;
        events::job_finished(watch, how, &record, now);
        if record.state.is_available() {
            self.wakeup.notify();
        }
        Ok(record)
    }

    /// Cancels job `id` unless it has finished; a running attempt's later
    /// finish is refused.
    pub fn cancel(&self, id: JobId, reason: &str) -> Result<JobRecord> {
        let watch = events::watch();
        let now = self.clock.now();
        let record = self.store.cancel(id, reason, now)?;
        events::job_finished(watch, "cancelled", &record, now);
        Ok(record)
    }

    /// Queues dead or cancelled job `id` again, with fresh attempts: the
    /// operator's retry once the cause of its failures is fixed.
    pub fn retry(&self, id: JobId) -> Result<JobRecord> {
        let record = self.store.retry(id, self.clock.now())?;
        events::job_retried(&record);
        self.wakeup.notify();
        Ok(record)
    }

    /// The job with `id`.
    pub fn get(&self, id: JobId) -> Result<JobRecord> {
        self.store.get(id)
    }

    /// Jobs of `kind` (in `state`, if given), oldest first, at most `limit`.
    pub fn list(&self, kind: &str, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>> {
        check_name("job kind", kind)?;
        self.store.list(kind, state, limit)
    }

    /// Requeues jobs whose lease expired (or kills those past `max_resets`).
    pub fn reset_expired(&self) -> Result<ResetReport> {
        let report = self.store.reset_expired(&self.policy, self.clock.now())?;
        events::leases_reset(report.requeued, report.dead, "reset_expired");
        if report.requeued > 0 {
            self.wakeup.notify();
        }
        Ok(report)
    }

    /// Deletes finished jobs (completed, dead, cancelled) that finished more
    /// than `retention` ago; returns how many.
    pub fn cleanup(&self, retention: Duration) -> Result<u64> {
        let before = self.clock.now().saturating_sub(millis(retention));
        let mut total = 0;
        loop {
            let deleted = self.store.cleanup(before, CLEANUP_BATCH)?;
            total += deleted;
            if deleted < CLEANUP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// How many jobs each kind has in each state (zeros left out).
    pub fn counts(&self) -> Result<Vec<KindCount>> {
        self.store.counts()
    }

    /// How many jobs of `kind` are in `state`.
    pub fn count(&self, kind: &str, state: JobState) -> Result<u64> {
        let counts = self.store.counts()?;
        Ok(counts
            .iter()
            .find(|entry| entry.kind == kind && entry.state == state)
            .map_or(0, |entry| entry.count))
    }

    /// Waits until this queue (or a clone) enqueues or requeues a job, or
    /// `timeout` passes. Jobs from other processes are only seen by polling,
    /// so workers call this with their poll interval.
    pub fn wait_for_work(&self, timeout: Duration) {
        self.wakeup.wait(timeout);
    }

    pub(crate) fn wakeup(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }
}

fn finish_name(finish: &Finish<'_>) -> &'static str {
    match finish {
        Finish::Complete { .. } => "completed",
        Finish::Fail { .. } => "failed",
        Finish::Release => "released",
    }
}

/// A generation counter to wake idle workers without polling the store.
#[derive(Default)]
pub(crate) struct Wakeup {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wakeup {
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    /// The current generation; pass it to `wait_since` so a notify between
    /// reading it and waiting is not missed.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Waits for the next notify or `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) {
        let seen = self.generation();
        self.wait_since(seen, timeout);
    }

    /// Waits until the generation moves past `seen`, or `timeout`.
    pub(crate) fn wait_since(&self, seen: u64, timeout: Duration) {
        let mut generation = self.generation.lock();
        let deadline = std::time::Instant::now() + timeout;
        while *generation == seen {
            if self.changed.wait_until(&mut generation, deadline).timed_out() {
                return;
            }
        }
    }
}

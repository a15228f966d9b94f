//! A handler slot's loop: take a claimed job (claiming for every free slot
//! of its kind at once), run it on the kind's pool, hand the outcome to the
//! completer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::completer::Done;
use super::state::{spawn_named, Counters, InFlight, KindSlots, Shared};
use super::TARGET;
use crate::ops::jobs::handler::{Handler, HandlerError, HandlerResult, JobContext};
use crate::ops::names::check_json;
use crate::ops::records::{JobId, JobRecord, Token};
use crate::pool::{BatchOptions, Outcome, SyncPool, TaskContext};
use crate::{ErrorKind, Result};

/// An empty result, or JSON (what `Queue::complete` accepts).
fn check_result(result: &str) -> Result<()> {
    if result.is_empty() {
        return Ok(());
    }
    check_json("result", result)
}

/// Starts one handler slot of `kind`: it dequeues only when free, so a busy
/// kind does not poll the store.
pub(super) fn spawn_slot(
    shared: &Arc<Shared>,
    kind: &Arc<KindSlots>,
    handler: Handler,
    pool: &Arc<SyncPool<String>>,
    slot: usize,
) -> Result<JoinHandle<()>> {
    *shared.live_threads.lock() += 1;
    let name = format!("keel-job-{}-{slot}", kind.kind);
    let body = {
        let shared = shared.clone();
        let kind = kind.clone();
        let pool = pool.clone();
        move || {
            shared.slot_loop(&kind, &handler, &pool);
            *shared.live_threads.lock() -= 1;
            shared.thread_exited.notify_all();
        }
    };
    spawn_named(&name, body).inspect_err(|_| *shared.live_threads.lock() -= 1)
}

impl Shared {
    /// One handler slot: take a claimed job when free, run it, hand its
    /// outcome to the completer; wait when idle.
    pub(super) fn slot_loop(&self, kind: &KindSlots, handler: &Handler, pool: &SyncPool<String>) {
        while !self.stopping() {
            let seen = self.queue.wakeup().generation();
            match self.next_job(kind) {
                Ok(Some(job)) => {
                    if !self.run(job, kind, handler, pool) {
                        // The pool refused the job (too many abandoned
                        // handler threads): back off instead of spinning.
                        self.queue.wakeup().wait_since(seen, self.options.poll_interval);
                    }
                }
                Ok(None) => self.queue.wakeup().wait_since(seen, self.options.poll_interval),
                // The store failed (full disk, I/O): say so, and wait a poll
                // interval rather than spin.
                Err(err) => {
                    log::warn!(target: TARGET, "dequeue failed: kind={} error={}", kind.kind, err.report());
                    self.queue.wakeup().wait_since(seen, self.options.poll_interval);
                }
            }
        }
    }

    /// A job for a free slot: one claimed earlier for the kind, or a fresh
    /// claim of as many jobs as the kind has free slots, in one transaction
    /// (the others wait in the kind's buffer for the slots woken to take
    /// them). Claimed jobs are in the running set at once, so they are
    /// heartbeaten, and released by a stop, while they wait.
    fn next_job(&self, kind: &KindSlots) -> Result<Option<JobRecord>> {
        if let Some(job) = kind.buffer.lock().pop_front() {
            return Ok(Some(job));
        }
        // One claimer per kind at a time, so two free slots do not both
        // claim for every free slot.
        let _claiming = kind.claiming.lock();
        if let Some(job) = kind.buffer.lock().pop_front() {
            return Ok(Some(job));
        }
        let free = kind.concurrency.saturating_sub(kind.busy.load(Ordering::SeqCst)).max(1);
        let mut claimed =
            self.queue
                .dequeue_many(&[kind.kind.as_str()], free, &self.options.name, self.options.lease)?;
        {
            let mut inflight = self.inflight.lock();
            if self.stopping() {
                drop(inflight);
                for job in &claimed {
                    self.release(job.id, job.token);
                }
                return Ok(None);
            }
            for job in &claimed {
                inflight.insert(
                    job.id,
                    InFlight {
                        token: job.token,
                        lease_lost: Arc::new(AtomicBool::new(false)),
                    },
                );
            }
        }
        if claimed.is_empty() {
            return Ok(None);
        }
        let first = claimed.remove(0);
        if !claimed.is_empty() {
            kind.buffer.lock().extend(claimed);
            self.queue.wakeup().notify();
        }
        Ok(Some(first))
    }

    /// Runs one claimed job on the kind's pool and hands its outcome to the
    /// completer; false when the pool refused to start it (the job is
    /// released).
    pub(super) fn run(&self, job: JobRecord, kind: &KindSlots, handler: &Handler, pool: &SyncPool<String>) -> bool {
        let (id, token) = (job.id, job.token);
        // A stop (or a refused heartbeat) may have taken it while it waited.
        let lease_lost = match self.inflight.lock().get(&id) {
            Some(entry) if entry.token == token => entry.lease_lost.clone(),
            _ => return true,
        };
        kind.busy.fetch_add(1, Ordering::SeqCst);
        let context = JobContext::new(job, self.stopping.clone(), lease_lost);
        let task = {
            let handler = handler.clone();
            move |_: &TaskContext| -> Result<HandlerResult> { Ok(handler(&context)) }
        };
        let outcome = pool
            .run_unkeyed(std::iter::once(task), BatchOptions::new())
            .pop()
            .unwrap_or(Outcome::Cancelled);
        kind.busy.fetch_sub(1, Ordering::SeqCst);
        // Whoever removes the entry decides the job's fate: if the stop sweep
        // took it, the job was released and this result must not be stored.
        if self.inflight.lock().remove(&id).is_none() {
            return true;
        }
        match outcome {
            Outcome::Refused(_) | Outcome::Cancelled | Outcome::Skipped { .. } => {
                self.release(id, token);
                false
            }
            other => {
                self.finish(id, token, other);
                true
            }
        }
    }

    /// Turns a handler's outcome into the finish to store, counting it, and
    /// hands it to the completer (which stores it with others in one commit).
    pub(super) fn finish(&self, id: JobId, token: Token, outcome: Outcome<HandlerResult>) {
        let finish = match outcome {
            Outcome::TimedOut => {
                Counters::bump(&self.stats.timed_out);
                let limit = self.options.job_timeout.unwrap_or_default();
                let message = format!("the handler ran past the job timeout of {limit:?}; its thread was abandoned");
                log::warn!(target: TARGET, "job timed out: id={id} {message}");
                Done::Fail(message, true)
            }
            Outcome::Error(err) => Done::Fail(err.report().to_string(), true),
            Outcome::Refused(_) | Outcome::Cancelled | Outcome::Skipped { .. } => Done::Release,
            Outcome::Value(Ok(result)) => match check_result(&result) {
                Ok(()) => Done::Complete(result),
                Err(err) => Done::Fail(format!("handler returned an invalid result: {err}"), false),
            },
            Outcome::Value(Err(HandlerError { message, retryable })) => {
                Counters::bump(&self.stats.failed);
                log::info!(target: TARGET, "job failed: id={id} retryable={retryable} error={message:?}");
                Done::Fail(message, retryable)
            }
            Outcome::Panicked(panic) => {
                Counters::bump(&self.stats.panicked);
                let message = format!("handler panicked: {panic}");
                log::error!(target: TARGET, "job handler panicked: id={id} {message}");
                Done::Fail(message, true)
            }
        };
        self.completer.submit(self, id, token, finish);
    }

    /// What the completer learnt of one stored (or refused) finish.
    pub(super) fn stored(&self, id: JobId, finish: &Done, stored: Result<JobRecord>) {
        match stored {
            Ok(_) => {
                if matches!(finish, Done::Complete(_)) {
                    Counters::bump(&self.stats.completed);
                }
            }
            Err(err) => {
                if err.kind() == ErrorKind::Conflict {
                    Counters::bump(&self.stats.refused);
                }
                log::warn!(target: TARGET, "job result not stored: id={id} error={}", err.report());
                // Any other failure to store leaves the job running under a
                // lease that will expire; the resetter then requeues it.
            }
        }
    }

    pub(super) fn release(&self, id: JobId, token: Token) {
        if self.queue.release(id, token).is_ok() {
            Counters::bump(&self.stats.released);
        }
    }
}

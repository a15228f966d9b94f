//! What a worker's threads share, and the loops they run.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::completer::{Completer, Done};
use super::{WorkerOptions, WorkerStats, TARGET};
use crate::ops::jobs::handler::{Handler, HandlerError, HandlerResult, JobContext};
use crate::ops::jobs::queue::Queue;
use crate::ops::names::check_json;
use crate::ops::records::{JobId, JobRecord, Token};
use crate::pool::{BatchOptions, Outcome, PoolConfig, SyncPool, TaskContext};
use crate::{Error, ErrorKind, Result};

pub(super) struct InFlight {
    token: Token,
    lease_lost: Arc<AtomicBool>,
}

pub(crate) struct Shared {
    /// One pool per kind, sized to its concurrency; shut down by `stop` so
    /// slots waiting on abandoned handlers return at once.
    pub(super) pools: Mutex<Vec<Arc<SyncPool<String>>>>,
    pub(super) kinds: Vec<String>,
    pub(super) queue: Queue,
    pub(super) options: WorkerOptions,
    pub(super) heartbeat: Duration,
    pub(super) stopping: Arc<AtomicBool>,
    /// Running jobs. `stopping` is set under this lock, so a slot either
    /// registers its job before the stop sweep sees the map, or sees
    /// `stopping` and releases the job itself.
    pub(super) inflight: Mutex<HashMap<JobId, InFlight>>,
    pub(super) live_threads: Mutex<usize>,
    pub(super) thread_exited: Condvar,
    pub(super) stop_signal: Mutex<bool>,
    pub(super) stop_changed: Condvar,
    pub(super) stats: Counters,
    /// Stores finished jobs' outcomes, several per commit.
    pub(super) completer: Completer,
}

/// One kind's handler slots: jobs claimed for them and not yet taken, and
/// how many are running a handler (so a claim asks for the free ones).
pub(crate) struct KindSlots {
    pub(super) kind: String,
    pub(super) concurrency: usize,
    pub(super) buffer: Mutex<VecDeque<JobRecord>>,
    pub(super) claiming: Mutex<()>,
    pub(super) busy: AtomicUsize,
}

impl KindSlots {
    pub(super) fn new(kind: &str, concurrency: usize) -> KindSlots {
        KindSlots {
            kind: kind.to_owned(),
            concurrency,
            buffer: Mutex::new(VecDeque::new()),
            claiming: Mutex::new(()),
            busy: AtomicUsize::new(0),
        }
    }
}

/// An empty result, or JSON (what `Queue::complete` accepts).
fn check_result(result: &str) -> Result<()> {
    if result.is_empty() {
        return Ok(());
    }
    check_json("result", result)
}

#[derive(Default)]
pub(super) struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    refused: AtomicU64,
    released: AtomicU64,
    timed_out: AtomicU64,
    lost: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> WorkerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        WorkerStats {
            completed: load(&self.completed),
            failed: load(&self.failed),
            panicked: load(&self.panicked),
            refused: load(&self.refused),
            released: load(&self.released),
            timed_out: load(&self.timed_out),
            lost: load(&self.lost),
            running: 0,
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

pub(super) fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|err| Error::io(format!("spawn thread {name}"), err))
}

/// The pool a kind's handlers run on: its concurrency, the job timeout.
pub(super) fn kind_pool(options: &WorkerOptions, kind: &str, concurrency: usize) -> SyncPool<String> {
    let mut config = PoolConfig::new(concurrency).name(format!("worker {} kind {kind}", options.name));
    if let Some(timeout) = options.job_timeout {
        config = config.task_timeout(timeout);
    }
    SyncPool::new(config)
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
    pub(super) fn new(queue: Queue, options: WorkerOptions, heartbeat: Duration, kinds: Vec<String>) -> Shared {
        Shared {
            pools: Mutex::new(Vec::new()),
            kinds,
            queue,
            options,
            heartbeat,
            stopping: Arc::new(AtomicBool::new(false)),
            inflight: Mutex::new(HashMap::new()),
            live_threads: Mutex::new(0),
            thread_exited: Condvar::new(),
            stop_signal: Mutex::new(false),
            stop_changed: Condvar::new(),
            stats: Counters::default(),
            completer: Completer::default(),
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

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
                    log::warn!(target: TARGET, "dequeue failed: kind={} error={err}", kind.kind);
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
            Outcome::Refused(_) | Outcome::Cancelled => {
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
            Outcome::Error(err) => Done::Fail(err.to_string(), true),
            Outcome::Refused(_) | Outcome::Cancelled => Done::Release,
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
                log::warn!(target: TARGET, "job result not stored: id={id} error={err}");
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

    /// Waits until every handler slot has exited or `deadline` passes.
    /// Waits until every slot thread has exited (true) or `deadline` (false).
    pub(super) fn wait_for_slots(&self, deadline: Instant) -> bool {
        let mut live = self.live_threads.lock();
        while *live > 0 {
            if self.thread_exited.wait_until(&mut live, deadline).timed_out() {
                return *live == 0;
            }
        }
        true
    }

    /// Releases every job still running; returns how many.
    pub(super) fn release_unfinished(&self) -> u64 {
        let unfinished: Vec<(JobId, Token)> = self
            .inflight
            .lock()
            .drain()
            .map(|(id, entry)| {
                entry.lease_lost.store(true, Ordering::SeqCst);
                (id, entry.token)
            })
            .collect();
        for (id, token) in &unfinished {
            self.release(*id, *token);
        }
        unfinished.len() as u64
    }

    /// Extends running jobs' leases every heartbeat interval and runs the
    /// resetter and retention cleanup every maintenance interval, until stop.
    pub(super) fn heartbeat_loop(&self) {
        let mut next_beat = Instant::now() + self.heartbeat;
        let mut next_maintenance = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_maintenance {
                self.maintain();
                next_maintenance = now + self.options.maintenance_interval;
            }
            if now >= next_beat {
                self.heartbeat_running();
                next_beat = now + self.heartbeat;
            }
            let mut stop = self.stop_signal.lock();
            if !*stop {
                self.stop_changed.wait_until(&mut stop, next_beat.min(next_maintenance));
            }
            if *stop {
                return;
            }
        }
    }

    pub(super) fn heartbeat_running(&self) {
        let running: Vec<(JobId, Token, Arc<AtomicBool>)> = self
            .inflight
            .lock()
            .iter()
            .filter(|(_, entry)| !entry.lease_lost.load(Ordering::SeqCst))
            .map(|(id, entry)| (*id, entry.token, entry.lease_lost.clone()))
            .collect();
        if running.is_empty() {
            return;
        }
        let leases: Vec<(JobId, Token)> = running.iter().map(|(id, token, _)| (*id, *token)).collect();
        // A failed call (I/O) changes nothing: the next beat tries again, and
        // no job is flagged for a failure that was not its own.
        let Ok(results) = self.queue.heartbeat_many(&leases, self.options.lease) else {
            return;
        };
        for ((id, token, lost), result) in running.iter().zip(results) {
            if let Err(err) = result {
                // Out of the running set (and counted) before the handler
                // can see the flag.
                self.drop_lost(*id, *token, &err);
                lost.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Takes a job whose heartbeat was refused (cancelled, reset, deleted)
    /// out of the running set: it is not heartbeaten again, its result is
    /// not stored, and its handler sees `lease_lost`. Logged once.
    fn drop_lost(&self, id: JobId, token: Token, err: &Error) {
        let removed = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&id) {
                Some(entry) if entry.token == token => inflight.remove(&id).is_some(),
                _ => false,
            }
        };
        if removed {
            Counters::bump(&self.stats.lost);
            log::warn!(
                target: TARGET,
                "job lost: id={id} token={token} error={err}; its handler is told to stop and its result will not be stored"
            );
        }
    }

    pub(super) fn maintain(&self) {
        let _ = self.queue.reset_expired();
        if let Some(retention) = self.options.retention {
            let _ = self.queue.cleanup(retention);
        }
    }
}

impl Shared {
    /// The counters now, with the jobs running at this moment (a short
    /// internal lock, never the worker's stop).
    pub(super) fn stats_now(&self) -> WorkerStats {
        WorkerStats {
            running: self.inflight.lock().len(),
            ..self.stats.snapshot()
        }
    }
}

impl crate::stats::StatsSource for Shared {
    fn stats_json(&self) -> serde_json::Value {
        let identity = serde_json::json!({ "worker": self.options.name, "kinds": self.kinds });
        crate::stats::entry(identity, &self.stats_now())
    }
}

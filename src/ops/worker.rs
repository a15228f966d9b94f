//! [`Worker`]: runs registered handlers for a chosen set of job kinds, each
//! kind with its own concurrency, heartbeating their leases while they run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::handler::{Handler, HandlerError, HandlerResult, JobContext};
use super::names::{check_key, check_name};
use super::queue::Queue;
use super::records::{JobId, JobRecord, Token};
use crate::pool::{BatchOptions, Outcome, PoolConfig, SyncPool, TaskContext};
use crate::{Error, ErrorKind, Result};

const TARGET: &str = "keel::ops";

/// How long `stop` waits for slots to leave once their pools are shut down
/// (they return at once; this bounds a pathological scheduler).
const SLOT_EXIT_GRACE: Duration = Duration::from_secs(5);

/// The most handlers one kind may run at once.
pub const MAX_CONCURRENCY: usize = 1024;

/// How a worker claims and keeps its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Who claims the jobs (recorded on each attempt).
    pub name: String,
    /// How long a claim holds without a heartbeat; default 30 s.
    pub lease: Duration,
    /// How often running jobs' leases are extended; default a third of the
    /// lease (so two heartbeats may be missed before the lease ends).
    pub heartbeat_interval: Option<Duration>,
    /// How long an idle handler slot waits before asking the store again
    /// (enqueues through this process's queue wake it sooner); default 1 s.
    pub poll_interval: Duration,
    /// How often the resetter runs (besides every dequeue); default 5 s.
    pub maintenance_interval: Duration,
    /// Finished jobs older than this are deleted by the maintenance pass;
    /// `None` (the default) keeps them.
    pub retention: Option<Duration>,
    /// A handler running longer than this fails its attempt (retried after
    /// a backoff) and its thread is abandoned by the pool, never killed; its
    /// late result is refused. `None` (the default): no limit.
    pub job_timeout: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            name: format!("worker-{}", std::process::id()),
            lease: Duration::from_secs(30),
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(1),
            maintenance_interval: Duration::from_secs(5),
            retention: None,
            job_timeout: None,
        }
    }
}

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs whose handler succeeded and whose completion was stored.
    pub completed: u64,
    /// Attempts whose handler returned an error (stored as failures).
    pub failed: u64,
    /// Attempts whose handler panicked (stored as failures).
    pub panicked: u64,
    /// Finishes refused because the attempt was no longer current (its
    /// lease expired and it was reset, or it was cancelled).
    pub refused: u64,
    /// Unfinished jobs handed back by a graceful stop, or because the pool
    /// refused to start them (too many abandoned handler threads).
    pub released: u64,
    /// Attempts whose handler ran past the job timeout (stored as failures).
    pub timed_out: u64,
}

/// What a graceful stop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Jobs still running at the deadline, released back to the queue.
    pub released: u64,
    /// Handler slots still waiting at the deadline; they are left to
    /// return on their own and their results will be refused.
    pub detached: u64,
}

/// Builds a [`Worker`]: register handlers, choose kinds, then `start`.
pub struct WorkerBuilder {
    queue: Queue,
    options: WorkerOptions,
    handlers: BTreeMap<String, (Handler, usize)>,
    allow: Option<Vec<String>>,
    block: Vec<String>,
}

impl WorkerBuilder {
    /// Registers `handler` for `kind`, running at most `concurrency` at once.
    pub fn handler(
        mut self,
        kind: &str,
        concurrency: usize,
        handler: impl Fn(&JobContext) -> HandlerResult + Send + Sync + 'static,
    ) -> WorkerBuilder {
        self.handlers.insert(kind.to_owned(), (Arc::new(handler), concurrency));
        self
    }

    /// Registers an already shared handler (the C and Python surfaces use it).
    pub fn shared_handler(mut self, kind: &str, concurrency: usize, handler: Handler) -> WorkerBuilder {
        self.handlers.insert(kind.to_owned(), (handler, concurrency));
        self
    }

    /// Runs only these kinds (default: every registered kind).
    pub fn allow<S: AsRef<str>>(mut self, kinds: impl IntoIterator<Item = S>) -> WorkerBuilder {
        self.allow = Some(kinds.into_iter().map(|kind| kind.as_ref().to_owned()).collect());
        self
    }

    /// Never runs these kinds, even when allowed.
    pub fn block<S: AsRef<str>>(mut self, kinds: impl IntoIterator<Item = S>) -> WorkerBuilder {
        self.block = kinds.into_iter().map(|kind| kind.as_ref().to_owned()).collect();
        self
    }

    /// Replaces the options.
    pub fn options(mut self, options: WorkerOptions) -> WorkerBuilder {
        self.options = options;
        self
    }

    /// Changes some options in place.
    pub fn map_options(mut self, change: impl FnOnce(&mut WorkerOptions)) -> WorkerBuilder {
        change(&mut self.options);
        self
    }

    /// Checks the configuration and starts the handler, heartbeat and
    /// maintenance threads. A kind in the allow- or block-list with no
    /// handler is an error (InvalidArgument), not silently ignored.
    pub fn start(self) -> Result<Worker> {
        let heartbeat = self.check()?;
        let kinds = self.selected_kinds()?;
        let shared = Arc::new(Shared {
            pools: Mutex::new(Vec::new()),
            kinds: kinds.clone(),
            queue: self.queue,
            options: self.options,
            heartbeat,
            stopping: Arc::new(AtomicBool::new(false)),
            inflight: Mutex::new(HashMap::new()),
            live_threads: Mutex::new(0),
            thread_exited: Condvar::new(),
            stop_signal: Mutex::new(false),
            stop_changed: Condvar::new(),
            stats: Counters::default(),
        });
        let mut threads = Vec::new();
        for kind in &kinds {
            let (handler, concurrency) = &self.handlers[kind];
            let pool = Arc::new(kind_pool(&shared.options, kind, *concurrency));
            shared.pools.lock().push(pool.clone());
            for slot in 0..*concurrency {
                threads.push(spawn_slot(&shared, kind, handler.clone(), &pool, slot)?);
            }
        }
        crate::stats::register("ops", &shared);
        log::info!(target: TARGET, "worker started: name={} kinds={:?}", shared.options.name, kinds);
        let maintenance = spawn_named("keel-worker-heartbeat", {
            let shared = shared.clone();
            move || shared.heartbeat_loop()
        })?;
        Ok(Worker {
            shared,
            kinds,
            threads,
            maintenance: Some(maintenance),
            stopped: false,
        })
    }

    fn check(&self) -> Result<Duration> {
        check_key("worker name", &self.options.name)?;
        let lease = self.options.lease;
        if lease < Duration::from_millis(3) {
            return Err(Error::invalid_argument("worker lease: must be at least 3 ms"));
        }
        let heartbeat = self.options.heartbeat_interval.unwrap_or(lease / 3);
        if heartbeat.is_zero() || heartbeat >= lease {
            return Err(Error::invalid_argument(format!(
                "worker heartbeat interval {heartbeat:?}: must be above zero and shorter than the lease {lease:?}"
            )));
        }
        for (kind, (_, concurrency)) in &self.handlers {
            check_name("job kind", kind)?;
            if *concurrency == 0 || *concurrency > MAX_CONCURRENCY {
                return Err(Error::invalid_argument(format!(
                    "job kind {kind:?}: concurrency {concurrency} must be 1 to {MAX_CONCURRENCY}"
                )));
            }
        }
        Ok(heartbeat)
    }

    /// The allowed kinds (default all) minus the blocked ones.
    fn selected_kinds(&self) -> Result<Vec<String>> {
        let known = |kind: &String| {
            if self.handlers.contains_key(kind) {
                Ok(())
            } else {
                let registered: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
                Err(Error::invalid_argument(format!(
                    "job kind {kind:?} has no handler in this worker (registered: {registered:?})"
                )))
            }
        };
        self.allow.iter().flatten().chain(&self.block).try_for_each(known)?;
        let allowed: Vec<String> = match &self.allow {
            Some(allow) => allow.clone(),
            None => self.handlers.keys().cloned().collect(),
        };
        let mut kinds: Vec<String> = allowed.into_iter().filter(|kind| !self.block.contains(kind)).collect();
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            return Err(Error::invalid_argument("worker: no job kinds left to run"));
        }
        Ok(kinds)
    }
}

/// Runs handlers for a chosen set of job kinds.
///
/// Guarantees: each kind runs at most its concurrency of handlers at once,
/// on a [`SyncPool`] of its own, so a slow or stuck kind never starves
/// another; a handler's error or panic fails only its own job; with a job
/// timeout, a handler that runs past it fails its attempt and its thread is
/// abandoned (never killed) while the slot moves on; leases of running jobs
/// are extended every heartbeat interval, and a refused heartbeat flags only
/// its own job ([`JobContext::lease_lost`]); every dequeue (and a periodic
/// pass) resets jobs whose lease expired. A slot asks the store for work only
/// when it is free, so a busy worker does not poll. [`stop`](Worker::stop) is
/// graceful: no new dequeues, running jobs get until the deadline, and the
/// leases of those still running are released so other workers can take them
/// at once. Cost: per slot one waiting thread, plus a pool thread per running
/// handler and one heartbeat thread.
pub struct Worker {
    shared: Arc<Shared>,
    kinds: Vec<String>,
    threads: Vec<JoinHandle<()>>,
    maintenance: Option<JoinHandle<()>>,
    stopped: bool,
}

impl Worker {
    /// A builder for a worker taking jobs from `queue`.
    pub fn builder(queue: &Queue) -> WorkerBuilder {
        WorkerBuilder {
            queue: queue.clone(),
            options: WorkerOptions::default(),
            handlers: BTreeMap::new(),
            allow: None,
            block: Vec::new(),
        }
    }

    /// The kinds this worker runs.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats.snapshot()
    }

    /// How many jobs are running right now.
    pub fn running(&self) -> usize {
        self.shared.inflight.lock().len()
    }

    /// Stops gracefully: no new dequeues; running handlers get until
    /// `deadline`; jobs still running then are released to the queue (their
    /// handlers' later results are refused). Idempotent.
    pub fn stop(&mut self, deadline: Duration) -> StopReport {
        if self.stopped {
            return StopReport::default();
        }
        self.stopped = true;
        let shared = &self.shared;
        {
            let _inflight = shared.inflight.lock();
            shared.stopping.store(true, Ordering::SeqCst);
        }
        shared.queue.wakeup().notify();
        shared.wait_for_slots(Instant::now() + deadline);
        let released = shared.release_unfinished();
        for pool in shared.pools.lock().iter() {
            pool.shutdown();
        }
        // A shut-down pool hands every waiting slot `Cancelled` at once (the
        // hung handler threads stay abandoned), so the slots exit now.
        shared.wait_for_slots(Instant::now() + SLOT_EXIT_GRACE);
        *shared.stop_signal.lock() = true;
        shared.stop_changed.notify_all();
        if let Some(maintenance) = self.maintenance.take() {
            let _ = maintenance.join();
        }
        // Slots count themselves out just before their threads end, so the
        // count (not `is_finished`, which may lag) says who is still inside.
        let detached = *shared.live_threads.lock() as u64;
        for thread in self.threads.drain(..) {
            if detached == 0 || thread.is_finished() {
                let _ = thread.join();
            }
        }
        log::info!(
            target: TARGET,
            "worker stopped: name={} released={released} detached={detached}",
            shared.options.name
        );
        StopReport { released, detached }
    }
}

impl Drop for Worker {
    /// Stops with a zero deadline: running jobs are released at once.
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

struct InFlight {
    token: Token,
    lease_lost: Arc<AtomicBool>,
}

struct Shared {
    /// One pool per kind, sized to its concurrency; shut down by `stop` so
    /// slots waiting on abandoned handlers return at once.
    pools: Mutex<Vec<Arc<SyncPool<String>>>>,
    kinds: Vec<String>,
    queue: Queue,
    options: WorkerOptions,
    heartbeat: Duration,
    stopping: Arc<AtomicBool>,
    /// Running jobs. `stopping` is set under this lock, so a slot either
    /// registers its job before the stop sweep sees the map, or sees
    /// `stopping` and releases the job itself.
    inflight: Mutex<HashMap<JobId, InFlight>>,
    live_threads: Mutex<usize>,
    thread_exited: Condvar,
    stop_signal: Mutex<bool>,
    stop_changed: Condvar,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    refused: AtomicU64,
    released: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        WorkerStats {
            completed: load(&self.completed),
            failed: load(&self.failed),
            panicked: load(&self.panicked),
            refused: load(&self.refused),
            released: load(&self.released),
            timed_out: load(&self.timed_out),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|err| Error::io(format!("spawn thread {name}"), err))
}

/// The pool a kind's handlers run on: its concurrency, the job timeout.
fn kind_pool(options: &WorkerOptions, kind: &str, concurrency: usize) -> SyncPool<String> {
    let mut config = PoolConfig::new(concurrency).name(format!("worker {} kind {kind}", options.name));
    if let Some(timeout) = options.job_timeout {
        config = config.task_timeout(timeout);
    }
    SyncPool::new(config)
}

/// Starts one handler slot of `kind`: it dequeues only when free, so a busy
/// kind does not poll the store.
fn spawn_slot(
    shared: &Arc<Shared>,
    kind: &str,
    handler: Handler,
    pool: &Arc<SyncPool<String>>,
    slot: usize,
) -> Result<JoinHandle<()>> {
    *shared.live_threads.lock() += 1;
    let body = {
        let shared = shared.clone();
        let kind = kind.to_owned();
        let pool = pool.clone();
        move || {
            shared.slot_loop(&kind, &handler, &pool);
            *shared.live_threads.lock() -= 1;
            shared.thread_exited.notify_all();
        }
    };
    spawn_named(&format!("keel-job-{kind}-{slot}"), body).inspect_err(|_| *shared.live_threads.lock() -= 1)
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// One handler slot: dequeue when free, run, finish; wait when idle.
    fn slot_loop(&self, kind: &str, handler: &Handler, pool: &SyncPool<String>) {
        while !self.stopping() {
            let seen = self.queue.wakeup().generation();
            match self.queue.dequeue(&[kind], &self.options.name, self.options.lease) {
                Ok(Some(job)) => {
                    if !self.run(job, handler, pool) {
                        // The pool refused the job (too many abandoned
                        // handler threads): back off instead of spinning.
                        self.queue.wakeup().wait_since(seen, self.options.poll_interval);
                    }
                }
                // Nothing ready, or the store failed (full disk, I/O): wait a
                // poll interval either way rather than spin.
                Ok(None) | Err(_) => self.queue.wakeup().wait_since(seen, self.options.poll_interval),
            }
        }
    }

    /// Runs one job on the kind's pool and stores its outcome; false when
    /// the pool refused to start it (the job is released).
    fn run(&self, job: JobRecord, handler: &Handler, pool: &SyncPool<String>) -> bool {
        let (id, token) = (job.id, job.token);
        let lease_lost = Arc::new(AtomicBool::new(false));
        {
            let mut inflight = self.inflight.lock();
            if self.stopping() {
                drop(inflight);
                self.release(id, token);
                return true;
            }
            inflight.insert(
                id,
                InFlight {
                    token,
                    lease_lost: lease_lost.clone(),
                },
            );
        }
        let context = JobContext::new(job, self.stopping.clone(), lease_lost);
        let task = {
            let handler = handler.clone();
            move |_: &TaskContext| -> Result<HandlerResult> { Ok(handler(&context)) }
        };
        let outcome = pool
            .run_unkeyed(std::iter::once(task), BatchOptions::new())
            .pop()
            .unwrap_or(Outcome::Cancelled);
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

    fn finish(&self, id: JobId, token: Token, outcome: Outcome<HandlerResult>) {
        let stored = match outcome {
            Outcome::TimedOut => {
                Counters::bump(&self.stats.timed_out);
                let limit = self.options.job_timeout.unwrap_or_default();
                let message = format!("the handler ran past the job timeout of {limit:?}; its thread was abandoned");
                log::warn!(target: TARGET, "job timed out: id={id} {message}");
                self.queue.fail(id, token, &message, true)
            }
            Outcome::Error(err) => self.queue.fail(id, token, &err.to_string(), true),
            Outcome::Refused(_) | Outcome::Cancelled => self.queue.release(id, token),
            Outcome::Value(Ok(result)) => match self.queue.complete(id, token, &result) {
                Err(err) if err.kind() == ErrorKind::InvalidArgument => {
                    self.queue
                        .fail(id, token, &format!("handler returned an invalid result: {err}"), false)
                }
                other => other.inspect(|_| Counters::bump(&self.stats.completed)),
            },
            Outcome::Value(Err(HandlerError { message, retryable })) => {
                Counters::bump(&self.stats.failed);
                log::info!(target: TARGET, "job failed: id={id} retryable={retryable} error={message:?}");
                self.queue.fail(id, token, &message, retryable)
            }
            Outcome::Panicked(panic) => {
                Counters::bump(&self.stats.panicked);
                let message = format!("handler panicked: {panic}");
                log::error!(target: TARGET, "job handler panicked: id={id} {message}");
                self.queue.fail(id, token, &message, true)
            }
        };
        if let Err(err) = stored {
            if err.kind() == ErrorKind::Conflict {
                Counters::bump(&self.stats.refused);
            }
            log::warn!(target: TARGET, "job result not stored: id={id} error={err}");
            // Any other failure to store leaves the job running under a
            // lease that will expire; the resetter then requeues it.
        }
    }

    fn release(&self, id: JobId, token: Token) {
        if self.queue.release(id, token).is_ok() {
            Counters::bump(&self.stats.released);
        }
    }

    /// Waits until every handler slot has exited or `deadline` passes.
    fn wait_for_slots(&self, deadline: Instant) {
        let mut live = self.live_threads.lock();
        while *live > 0 {
            if self.thread_exited.wait_until(&mut live, deadline).timed_out() {
                return;
            }
        }
    }

    /// Releases every job still running; returns how many.
    fn release_unfinished(&self) -> u64 {
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
    fn heartbeat_loop(&self) {
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

    fn heartbeat_running(&self) {
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
        for ((_, _, lost), result) in running.iter().zip(results) {
            if result.is_err() {
                lost.store(true, Ordering::SeqCst);
            }
        }
    }

    fn maintain(&self) {
        let _ = self.queue.reset_expired();
        if let Some(retention) = self.options.retention {
            let _ = self.queue.cleanup(retention);
        }
    }
}

impl crate::stats::StatsSource for Shared {
    fn stats_json(&self) -> serde_json::Value {
        let stats = self.stats.snapshot();
        serde_json::json!({
            "worker": self.options.name,
            "kinds": self.kinds,
            "running": self.inflight.lock().len(),
            "completed": stats.completed,
            "failed": stats.failed,
            "panicked": stats.panicked,
            "refused": stats.refused,
            "released": stats.released,
            "timed_out": stats.timed_out,
        })
    }
}

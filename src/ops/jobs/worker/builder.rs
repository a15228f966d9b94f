//! Configuring and starting a [`Worker`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::slot::spawn_slot;
use super::state::{kind_pool, spawn_named, KindSlots, Shared};
use super::{Worker, TARGET};
use crate::ops::jobs::handler::{Handler, HandlerResult, JobContext};
use crate::ops::jobs::queue::Queue;
use crate::ops::names::{check_key, check_name};
use crate::{Error, Result};

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

impl WorkerOptions {
    /// Checks the options as [`WorkerBuilder::start`] does, and returns the
    /// heartbeat interval they give; a binding calls it where its caller
    /// hands the options over, so a bad number is refused there.
    pub fn check(&self) -> Result<Duration> {
        check_key("worker name", &self.name)?;
        let lease = self.lease;
        if lease < Duration::from_millis(3) {
            return Err(Error::invalid_argument("worker lease: must be at least 3 ms"));
        }
        let heartbeat = self.heartbeat_interval.unwrap_or(lease / 3);
        if heartbeat.is_zero() || heartbeat >= lease {
            return Err(Error::invalid_argument(format!(
                "worker heartbeat interval {heartbeat:?}: must be above zero and shorter than the lease {lease:?}"
            )));
        }
        // A zero interval would make an idle slot (or the heartbeat thread)
        // spin on the store.
        for (what, interval) in [
            ("poll interval", self.poll_interval),
            ("maintenance interval", self.maintenance_interval),
        ] {
            if interval.is_zero() {
                return Err(Error::invalid_argument(format!("worker {what}: must be above zero")));
            }
        }
        Ok(heartbeat)
    }
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
    pub(super) fn new(queue: &Queue) -> WorkerBuilder {
        WorkerBuilder {
            queue: queue.clone(),
            options: WorkerOptions::default(),
            handlers: BTreeMap::new(),
            allow: None,
            block: Vec::new(),
        }
    }

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
        let shared = Arc::new(Shared::new(self.queue, self.options, heartbeat, kinds.clone()));
        let mut threads = Vec::new();
        for kind in &kinds {
            let (handler, concurrency) = &self.handlers[kind];
            let pool = Arc::new(kind_pool(&shared.options, kind, *concurrency));
            shared.pools.lock().push(pool.clone());
            let slots = Arc::new(KindSlots::new(kind, *concurrency));
            for slot in 0..*concurrency {
                threads.push(spawn_slot(&shared, &slots, handler.clone(), &pool, slot)?);
            }
        }
        crate::stats::register("workers", &shared);
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
        let heartbeat = self.options.check()?;
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

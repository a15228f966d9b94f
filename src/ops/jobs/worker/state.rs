//! What a worker's threads share: the options, the running set, each
//! kind's claimed-but-not-started jobs, the counters and the completer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::completer::Completer;
use super::{WorkerOptions, WorkerStats};
use crate::ops::jobs::queue::Queue;
use crate::ops::records::{JobId, JobRecord, Token};
use crate::pool::{PoolConfig, SyncPool};
use crate::{Error, Result};

pub(super) struct InFlight {
    pub(super) token: Token,
    pub(super) lease_lost: Arc<AtomicBool>,
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

#[derive(Default)]
pub(super) struct Counters {
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) panicked: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) timed_out: AtomicU64,
    pub(super) lost: AtomicU64,
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

    pub(super) fn bump(counter: &AtomicU64) {
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
    let mut config = PoolConfig::new(concurrency).with_name(format!("worker {} kind {kind}", options.name));
    if let Some(timeout) = options.job_timeout {
        config = config.with_task_timeout(timeout);
    }
    SyncPool::new(config)
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

//! [`Worker`]: runs registered handlers for a chosen set of job kinds, each
//! kind with its own concurrency, heartbeating their leases while they run.
//!
//! `builder.rs` checks the configuration and starts the threads;
//! `state.rs` holds what they share; `slot.rs` is a handler slot's loop
//! (claim for the free slots, run on the kind's pool); `completer.rs`
//! stores outcomes several to a commit; `leases.rs` heartbeats running jobs,
//! drops lost ones, runs maintenance and releases what a stop leaves.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::state::Shared;
use crate::ops::jobs::queue::Queue;

mod builder;
mod completer;
mod leases;
mod slot;
mod state;

pub use builder::{WorkerBuilder, WorkerOptions, MAX_CONCURRENCY};

const TARGET: &str = "keel::ops";

/// How long `stop` waits for slots to leave once their pools are shut down
/// (they return at once; this bounds a pathological scheduler).
const SLOT_EXIT_GRACE: Duration = Duration::from_secs(5);
/// How often a stop asks whether it was interrupted ([`Worker::stop_unless`]).
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
// repr(C): the C surface hands this struct out as it is (keel.h names it
// keel_*_stats), so its counters are defined once for every surface.
#[repr(C)]
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
    /// Running jobs whose heartbeat was refused (cancelled, reset or
    /// deleted meanwhile): dropped from the running set, their handler told
    /// through `lease_lost`, their result not stored.
    pub lost: u64,
    /// Jobs running at the moment of the snapshot.
    pub running: usize,
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

/// Runs handlers for a chosen set of job kinds.
///
/// Guarantees: each kind runs at most its concurrency of handlers at once,
/// on a [`SyncPool`](crate::pool::SyncPool) of its own, so a slow or stuck kind never starves
/// another; a handler's error or panic fails only its own job; with a job
/// timeout, a handler that runs past it fails its attempt and its thread is
/// abandoned (never killed) while the slot moves on; leases of running jobs
/// are extended every heartbeat interval, and a refused heartbeat (the job was
/// cancelled, reset or deleted) drops only its own job from the running set
/// and tells its handler ([`JobContext::lease_lost`](crate::ops::JobContext::lease_lost)),
/// so a cancelled job's handler learns it within one heartbeat interval; every dequeue (and a periodic
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
        WorkerBuilder::new(queue)
    }

    /// The kinds this worker runs.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats_now()
    }

    /// A handle reading this worker's stats that never waits on the worker
    /// itself, so a binding may read them while another thread runs `stop`.
    pub fn monitor(&self) -> WorkerMonitor {
        WorkerMonitor {
            shared: self.shared.clone(),
        }
    }

    /// How many jobs are running right now.
    pub fn running(&self) -> usize {
        self.shared.inflight.lock().len()
    }

    /// Stops gracefully: no new dequeues; running handlers get until
    /// `deadline`; jobs still running then are released to the queue (their
    /// handlers' later results are refused). Idempotent.
    pub fn stop(&mut self, deadline: Duration) -> StopReport {
        self.stop_unless(deadline, || false)
    }

    /// [`stop`](Self::stop), asking `interrupted` between waits of at most
    /// 100 ms whether to cut the deadline short: once it says yes, running
    /// jobs are released at once, as if the deadline had passed (a host's
    /// Ctrl-C during a graceful stop).
    pub fn stop_unless(&mut self, deadline: Duration, mut interrupted: impl FnMut() -> bool) -> StopReport {
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
        let until = Instant::now() + deadline;
        while !shared.wait_for_slots((Instant::now() + INTERRUPT_CHECK).min(until))
            && Instant::now() < until
            && !interrupted()
        {}
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

/// Reads a worker's stats and running count; cheap to clone, outlives the
/// worker harmlessly (it then reads the final counts).
#[derive(Clone)]
pub struct WorkerMonitor {
    shared: Arc<Shared>,
}

impl WorkerMonitor {
    /// What the worker has done so far (atomic counters, no lock).
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats_now()
    }

    /// How many jobs are running right now (a short internal lock).
    pub fn running(&self) -> usize {
        self.shared.inflight.lock().len()
    }
}

impl Drop for Worker {
    /// Stops with a zero deadline: running jobs are released at once.
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

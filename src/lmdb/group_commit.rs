//! Group commit: the queue and leader hand-off that lets many writers share
//! one write transaction and one fsync.
//!
//! The first writer to arrive when no batch is running becomes the *leader*:
//! it takes every queued job, runs the batch (through the `run` callback the
//! environment supplies), then wakes each job's owner. Writers arriving while
//! a batch runs queue up; when the batch is done the oldest of them is woken
//! as the next leader and takes them all. So under load each fsync carries
//! every write that arrived during the previous one, and nobody spins.
//!
//! Writers released together come back together, so without care they
//! split into two groups that alternate (one queues while the other's batch
//! commits), halving what each fsync carries. So a leader that finds fewer
//! writers queued than its previous batch carried waits a little for the
//! rest: at most an eighth of the previous batch's time (`linger`), so
//! the commit rate loses at most a ninth, while each commit carries about
//! every writer. A lone writer never waits (its previous batch was itself).
//!
//! A *hold* ([`GroupCommit::hold`]) takes the leader's place for a while
//! without running a batch: an open batch on its caller's thread keeps the
//! write transaction between calls. Holders queue apart from writers; when a
//! batch ends a waiting holder goes next, when a hold ends the queued
//! writers do, so neither starves the other.
//!
//! Jobs live on their owners' stacks. The leader reaches them through a
//! lifetime-erased pointer, which is sound because an owner never returns (so
//! never frees its job) until the leader has signalled it `Done`, and the
//! leader never touches a job after signalling it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::events::{Level, Stopwatch};
use crate::Error;

pub(crate) const LOG_TARGET: &str = "keel::lmdb";

/// Runs one batch: the jobs, and how long its oldest writer waited in the
/// queue (`None` when the batch event is off). Returns the batch's event,
/// when on, for the leader to log once its writers are released.
pub(crate) type BatchRunner<'a> = dyn Fn(&mut [&mut dyn Work], Option<std::time::Duration>) -> Option<BatchEvent> + 'a;

/// What one batch did, for its debug event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEvent {
    pub(crate) writes: usize,
    /// Writers whose closure failed (their changes aborted).
    pub(crate) failed_writes: u32,
    /// Attempts: more than one when the map filled and grew.
    pub(crate) attempts: u32,
    pub(crate) wait_us: u128,
    pub(crate) run_us: u128,
    /// The last commit: writing the pages and, when durable, the fsync.
    pub(crate) commit_us: u128,
    pub(crate) outcome: &'static str,
}

/// What the leader runs for one queued writer. Implemented by the typed job in
/// `env.rs`; erased here so one batch can hold writers of different types.
pub(crate) trait Work: Send {
    /// Runs the writer's closure in `txn` (its own nested transaction) and
    /// records the result; says how it went.
    fn run(&mut self, txn: &mut lmdb::RwTransaction<'_>) -> Outcome;
    /// The writer's work could not be committed: its result becomes `err`,
    /// unless it already failed on its own.
    fn fail(&mut self, err: Error);
}

/// How one writer's closure went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It succeeded; its nested transaction should be committed.
    Ok,
    /// It failed; its nested transaction is aborted, the batch goes on.
    Failed,
    /// It ran out of map space; the whole batch must be retried after growth.
    MapFull,
}

/// The queue of writers and who leads. Shared by all clones of one `Env`.
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Signalled when a writer queues while a leader lingers for it.
    arrived: Condvar,
    batches: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
}

struct Queue {
    pending: Vec<Pending>,
    /// Threads waiting to hold the leader's place (open batches), oldest first.
    holders: std::collections::VecDeque<Arc<Signal>>,
    leader_active: bool,
    /// Writers the previous batch carried: how many to wait for.
    last_batch: usize,
    /// How long a leader may wait for them (see `linger`).
    linger: Duration,
    /// A leader is waiting for writers (so arrivals signal `arrived`).
    lingering: bool,
}

/// The longest a leader waits for its previous batch's writers to queue
/// again: an eighth of that batch's time (its fsync, mostly), capped.
fn linger(batch_time: Duration) -> Duration {
    (batch_time / 8).min(Duration::from_millis(5))
}

impl Queue {
    /// Gives the leader's place to the next in line, or frees it. After a
    /// hold, queued writers go first; after a batch, a waiting holder does.
    fn hand_off(&mut self, after_hold: bool) {
        let holder_next = !self.holders.is_empty() && (!after_hold || self.pending.is_empty());
        if holder_next {
            if let Some(holder) = self.holders.pop_front() {
                holder.set(State::Lead);
            }
        } else if let Some(next) = self.pending.first() {
            next.signal.set(State::Lead);
        } else {
            self.leader_active = false;
        }
    }
}

struct Pending {
    work: *mut (dyn Work + 'static),
    signal: Arc<Signal>,
    /// When it was queued, only read when the batch event is on.
    queued: Stopwatch,
}

// SAFETY: the pointee is `Send` (the `Work` bound) and is used by one thread
// at a time: the leader while the owner waits, the owner after `Done`.
unsafe impl Send for Pending {}

impl GroupCommit {
    pub(crate) fn new() -> GroupCommit {
        GroupCommit {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                holders: std::collections::VecDeque::new(),
                leader_active: false,
                last_batch: 0,
                linger: Duration::ZERO,
                lingering: false,
            }),
            arrived: Condvar::new(),
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
        }
    }

    /// Queues `work` and returns once a batch containing it has run (by this
    /// thread as leader, or by another). `run` executes one batch; it must
    /// give every job a result.
    /// Returns the batch's event if this thread led it and the event is on.
    pub(crate) fn submit(&self, work: &mut (dyn Work + '_), run: &BatchRunner<'_>) -> Option<BatchEvent> {
        let signal = Arc::new(Signal::new());
        // SAFETY: only the lifetime is erased. This function does not return
        // before `signal` says Done, after which the leader no longer holds
        // the pointer (see the module docs).
        let work: *mut (dyn Work + 'static) =
            unsafe { std::mem::transmute::<*mut (dyn Work + '_), *mut (dyn Work + 'static)>(work) };
        let queued = Stopwatch::start(LOG_TARGET, Level::Debug);
        let lead_now = {
            let mut queue = self.queue.lock();
            queue.pending.push(Pending {
                work,
                signal: signal.clone(),
                queued,
            });
            if queue.lingering {
                self.arrived.notify_one();
            }
            !std::mem::replace(&mut queue.leader_active, true)
        };
        let event = if lead_now || signal.wait() == State::Lead {
            self.lead(run)
        } else {
            None
        };
        debug_assert_eq!(signal.wait(), State::Done);
        event
    }

    /// Runs one batch of everything queued, releases its owners, and hands
    /// leadership to the oldest writer that queued meanwhile.
    fn lead(&self, run: &BatchRunner<'_>) -> Option<BatchEvent> {
        let _leading = Leading::mark();
        let batch = self.take_batch();
        let started = Instant::now();
        self.record(batch.len());
        // The oldest writer's wait: the batch's, as every writer queued
        // while the previous batch ran. `None` when the event is off.
        let waited = batch.first().and_then(|pending| pending.queued.elapsed());
        let event = {
            // SAFETY: each owner is blocked in `submit` until signalled below.
            let mut jobs: Vec<&mut dyn Work> = batch.iter().map(|p| unsafe { &mut *p.work }).collect();
            match catch_unwind(AssertUnwindSafe(|| run(&mut jobs, waited))) {
                Ok(event) => event,
                Err(payload) => {
                    // A bug in the batch runner, not in a writer's closure
                    // (those are caught one by one): no one may be left waiting.
                    let err = Error::from_panic(payload).context("group commit");
                    for job in jobs.iter_mut() {
                        job.fail(err.clone());
                    }
                    None
                }
            }
        };
        let took = started.elapsed();
        for pending in &batch {
            pending.signal.set(State::Done);
        }
        let mut queue = self.queue.lock();
        queue.last_batch = batch.len();
        queue.linger = linger(took);
        queue.hand_off(false);
        event
    }

    /// Everything queued, once the previous batch's writers are back or the
    /// linger is over (see the module docs).
    fn take_batch(&self) -> Vec<Pending> {
        let mut queue = self.queue.lock();
        if queue.pending.len() < queue.last_batch && !queue.linger.is_zero() {
            let deadline = Instant::now() + queue.linger;
            queue.lingering = true;
            while queue.pending.len() < queue.last_batch {
                if self.arrived.wait_until(&mut queue, deadline).timed_out() {
                    break;
                }
            }
            queue.lingering = false;
        }
        std::mem::take(&mut queue.pending)
    }

    /// Blocks until this thread holds the leader's place: no batch runs
    /// until [`release_hold`](GroupCommit::release_hold). The caller then
    /// owns the file's write transaction (an open batch).
    pub(crate) fn hold(&self) {
        let signal = {
            let mut queue = self.queue.lock();
            if !std::mem::replace(&mut queue.leader_active, true) {
                return;
            }
            let signal = Arc::new(Signal::new());
            queue.holders.push_back(signal.clone());
            signal
        };
        let state = signal.wait();
        debug_assert_eq!(state, State::Lead);
    }

    /// Ends a [`hold`](GroupCommit::hold); `committed` counts it as one
    /// batch of one write.
    pub(crate) fn release_hold(&self, committed: bool) {
        if committed {
            self.record(1);
        }
        self.queue.lock().hand_off(true);
    }

    fn record(&self, batch_len: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(batch_len as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(batch_len as u64, Ordering::Relaxed);
    }

    /// Writers queued for the next batch right now.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().pending.len()
    }

    /// (batches run, writes run, largest batch) since the environment opened.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.largest_batch.load(Ordering::Relaxed),
        )
    }
}

thread_local! {
    static LEADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as running a batch while alive.
struct Leading;

impl Leading {
    fn mark() -> Leading {
        LEADING.with(|leading| leading.set(true));
        Leading
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        LEADING.with(|leading| leading.set(false));
    }
}

/// Whether this thread is running a write batch right now: a write from
/// here (say, from inside a write closure) would wait for itself.
pub(crate) fn leading_here() -> bool {
    LEADING.with(|leading| leading.get())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    /// The job ran; its result is in place.
    Done,
    /// The job has not run; its owner is to lead the next batch.
    Lead,
}

/// One writer's wake-up: a state and a condvar to wait on it.
struct Signal {
    state: Mutex<State>,
    changed: Condvar,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            state: Mutex::new(State::Waiting),
            changed: Condvar::new(),
        }
    }

    fn set(&self, state: State) {
        *self.state.lock() = state;
        self.changed.notify_one();
    }

    /// Blocks until the state is no longer `Waiting`; returns it.
    fn wait(&self) -> State {
        let mut state = self.state.lock();
        while *state == State::Waiting {
            self.changed.wait(&mut state);
        }
        *state
    }
}

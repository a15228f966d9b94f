//! The part every driver (batch, pipeline) shares: self-scheduling worker
//! threads, deadlines, and abandoning threads that do not come back.
//!
//! A run's schedule (its [`Plan`]) lives under one mutex. Workers take their
//! next task from it and report outcomes to it directly, so the calling
//! thread is not on the path of every task: it sleeps until a worker wakes
//! it (the plan asked for it, or a new deadline is nearest), a deadline
//! passes, or the run is stopped. A worker holds one of the pool's slots
//! (shared by all its runs) from taking a task until the task is decided,
//! which is what bounds the concurrency across runs.
//!
//! # Why threads are abandoned, not killed
//! A thread cannot be killed. A task past its deadline (counted from when a
//! worker picked it up) is reported timed out at once and its worker is
//! replaced; the old thread keeps the task's key locked until the task
//! really returns, then exits. Who decides a task's fate (the worker by
//! finishing, the caller by abandoning) is settled by one compare-and-swap
//! on the task's state, so a task is never reported twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{panic_message, Error, Result};
use crate::events::{micros, Level, Stopwatch};
use crate::pool::config::RetryPolicy;
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::outcome::Outcome;
use crate::pool::Shared;

const LOG_TARGET: &str = "keel::pool";

/// Where a task handed to a worker is in its life.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    /// A worker took it and waits for its key.
    Picked = 0,
    /// Holds its key and runs.
    Running = 1,
    /// Returned; the worker reports the outcome.
    Finished = 2,
    /// Given up on by the caller (timed out, cancelled).
    Abandoned = 3,
}

/// A task handed to a worker, as its worker and the caller both see it:
/// its state, moved by compare-and-swap so its fate is decided once, and
/// the cancellation token its context hands out.
struct TaskCell {
    state: AtomicU8,
    token: CancellationToken,
}

impl TaskCell {
    fn new() -> Arc<Self> {
        Arc::new(TaskCell {
            state: AtomicU8::new(TaskState::Picked as u8),
            token: CancellationToken::new(),
        })
    }

    /// Moves `from` to `to`; false if the task was elsewhere.
    fn transition(&self, from: TaskState, to: TaskState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Abandons the task if it is picked or running; its state before.
    fn abandon(&self) -> Option<TaskState> {
        [TaskState::Picked, TaskState::Running]
            .into_iter()
            .find(|&from| self.transition(from, TaskState::Abandoned))
    }
}

/// Why a task is not started.
pub(crate) enum Refusal {
    /// Refused: shut down, at the abandoned-thread cap, key hung, nested run.
    Refused(Error),
    /// Its key is paused by the failure backoff.
    Skipped { retry_in: Duration, failures: u32 },
}

impl Refusal {
    pub(crate) fn into_outcome<T>(self) -> Outcome<T> {
        match self {
            Refusal::Refused(err) => Outcome::Refused(err),
            Refusal::Skipped { retry_in, failures } => Outcome::Skipped { retry_in, failures },
        }
    }
}

/// The schedule of one run: which task goes next and what happens when one
/// is decided. Always called with the run locked.
pub(crate) trait Plan: Send + 'static {
    type Task: FnOnce(&TaskContext) -> Result<Self::Output> + Send + 'static;
    type Output: Send + 'static;

    /// The next task that may start now, as `(index, first_of_key, task)`.
    /// `refusal(index)` says why a task must not start; the plan decides
    /// such tasks `Refused` itself and looks further.
    fn next_task(&mut self, refusal: &mut dyn FnMut(usize) -> Option<Refusal>) -> Option<(usize, bool, Self::Task)>;

    /// Records how task `index` ended.
    fn decide(&mut self, index: usize, outcome: Outcome<Self::Output>);

    /// True (once) if something happened that the calling thread must look
    /// at: a decision it reports or commits, the end of the run.
    fn take_wake(&mut self) -> bool;

    /// True once no task can become ready any more: idle workers may leave.
    fn exhausted(&self) -> bool;

    /// Decides every task not handed to a worker yet as `Cancelled`.
    fn cancel_rest(&mut self);
}

/// A run's state under its mutex.
pub(crate) struct RunState<P> {
    pub(crate) plan: P,
    /// Tasks handed to a worker and not decided.
    running: HashMap<usize, Arc<TaskCell>, BuildHasherDefault<IndexHasher>>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Workers not abandoned and not gone.
    live_workers: usize,
    /// The run was stopped: workers take no more tasks.
    stopped: bool,
}

/// What the workers of one run share with the calling thread.
struct Run<K, P> {
    state: Mutex<RunState<P>>,
    /// `state.stopped`, readable without the lock (by workers waiting for a slot).
    stopped: std::sync::atomic::AtomicBool,
    /// Workers wait here for a task to become ready.
    task_ready: Condvar,
    /// Wakes the calling thread; one pending wake is enough.
    wake: Sender<()>,
    shared: Arc<Shared<K>>,
    keys: Arc<Vec<K>>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    /// Paused keys run anyway (an explicit retry).
    bypass_backoff: bool,
}

/// Drives one run from the calling thread.
pub(crate) struct Engine<K, P> {
    run: Arc<Run<K, P>>,
    woken: Receiver<()>,
    stop_rx: Receiver<()>,
    cancel_rx: Receiver<()>,
    /// Set once the run is stopped, so the stop signals are not seen again.
    stop_seen: std::cell::Cell<bool>,
    limit: usize,
}

impl<K, P> Engine<K, P>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Plan,
{
    /// Starts `workers` threads (at most the pool's limit) on `plan`.
    /// `keys[index]` is task `index`'s key; empty `keys` means unkeyed tasks.
    pub(crate) fn start(
        shared: Arc<Shared<K>>,
        keys: Arc<Vec<K>>,
        plan: P,
        workers: usize,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
        bypass_backoff: bool,
    ) -> Self {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let limit = shared.config.max_concurrency();
        let engine = Engine {
            stop_rx: shared.shutdown.receiver(),
            cancel_rx: cancel.map_or_else(crossbeam_channel::never, CancellationToken::receiver),
            stop_seen: std::cell::Cell::new(false),
            limit,
            woken,
            run: Arc::new(Run {
                state: Mutex::new(RunState {
                    plan,
                    running: HashMap::default(),
                    deadlines: BinaryHeap::new(),
                    live_workers: 0,
                    stopped: false,
                }),
                stopped: std::sync::atomic::AtomicBool::new(false),
                task_ready: Condvar::new(),
                wake,
                retry: shared.config.retry.clone(),
                shared,
                keys,
                timeout,
                bypass_backoff,
            }),
        };
        let mut state = engine.run.state.lock();
        if is_worker_of(&engine.run.shared) {
            // A task waiting for a batch of its own pool holds a slot that
            // batch may need: with every slot so held, nothing could run.
            let err = Error::would_deadlock(
                "a task of this pool ran a batch or pipeline on its own pool and would wait for it; \
                 use a second pool for nested work",
            );
            let handed = state.plan.next_task(&mut |_| Some(Refusal::Refused(err.clone())));
            debug_assert!(handed.is_none(), "a task was handed out despite a refusal");
        } else if engine.run.shared.shutdown.is_cancelled() {
            engine.refuse_ready(&mut state);
        } else {
            engine.add_workers(&mut state, workers.min(limit));
        }
        drop(state);
        engine
    }

    /// Locks the run, to look at or change its plan.
    pub(crate) fn lock(&self) -> MutexGuard<'_, RunState<P>> {
        self.run.state.lock()
    }

    /// Tells waiting workers the plan may have a task for them now (or, if
    /// no worker is left, refuses what is ready).
    pub(crate) fn notify_workers(&self) {
        let mut state = self.lock();
        if state.live_workers == 0 {
            self.refuse_ready(&mut state);
        }
        drop(state);
        self.run.task_ready.notify_all();
    }

    /// With no worker left (shut down, at the abandoned-thread cap, no
    /// thread could be spawned), the caller refuses the ready tasks itself:
    /// no worker may ever come to do it.
    fn refuse_ready(&self, state: &mut RunState<P>) {
        let run = &self.run;
        let mut refuse = |index| {
            Some(
                refusal(run, index)
                    .unwrap_or_else(|| Refusal::Refused(Error::busy(format!("task {index} refused: no worker left")))),
            )
        };
        let handed = state.plan.next_task(&mut refuse);
        debug_assert!(handed.is_none(), "a task was handed out despite a refusal");
    }

    /// Sleeps until a worker wakes the caller, a deadline passes (the task
    /// is abandoned and decided `TimedOut`), or the run is stopped (every
    /// task is decided `Cancelled` or by its worker). The caller then looks
    /// at the plan.
    pub(crate) fn wait(&self) {
        self.wait_until(None);
    }

    /// [`wait`](Self::wait), returning by `wake_by` at the latest.
    pub(crate) fn wait_until(&self, wake_by: Option<Instant>) {
        let nearest = self.lock().deadlines.peek().map(|Reverse((deadline, _))| *deadline);
        let nearest = match (nearest, wake_by) {
            (Some(deadline), Some(wake_by)) => Some(deadline.min(wake_by)),
            (deadline, wake_by) => deadline.or(wake_by),
        };
        let timer = nearest.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        let (stop_rx, cancel_rx) = if self.stop_seen.get() {
            (crossbeam_channel::never(), crossbeam_channel::never())
        } else {
            (self.stop_rx.clone(), self.cancel_rx.clone())
        };
        select! {
            recv(self.woken) -> _ => {}
            recv(stop_rx) -> _ => self.stop(),
            recv(cancel_rx) -> _ => self.stop(),
            recv(timer) -> _ => self.expire_due(),
        }
    }

    /// Cancels the token of every running task without giving up on it, and
    /// cancels the tasks not started.
    pub(crate) fn cancel_running(&self) {
        let mut state = self.lock();
        mark_stopped(&self.run, &mut state);
        state.plan.cancel_rest();
        for task in state.running.values() {
            task.token.cancel();
        }
        drop(state);
        self.notify_workers();
    }

    fn add_workers(&self, state: &mut RunState<P>, count: usize) {
        for _ in 0..count {
            let run = Arc::clone(&self.run);
            let spawned = std::thread::Builder::new()
                .name("keel-pool".into())
                .spawn(move || worker_loop(&run));
            match spawned {
                Ok(_) => state.live_workers += 1,
                Err(err) if state.live_workers == 0 => {
                    // No thread to run anything: every waiting task fails.
                    let err = Error::io("spawn a pool worker thread", err);
                    let handed = state.plan.next_task(&mut |_| Some(Refusal::Refused(err.clone())));
                    debug_assert!(handed.is_none(), "a task was handed out despite a refusal");
                    return;
                }
                // Fewer workers than wanted still run everything.
                Err(_) => return,
            }
        }
    }

    /// Abandons every task past its deadline that has not finished, and
    /// replaces its worker; at the abandoned-thread cap, what waits is refused.
    fn expire_due(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut timed_out = Vec::new();
        while let Some(&Reverse((deadline, index))) = state.deadlines.peek() {
            if deadline > now {
                break;
            }
            state.deadlines.pop();
            // Skips tasks that finished (or are finishing) in time.
            if self.abandon(&mut state, index) {
                record_backoff(&self.run, index, &Outcome::<()>::TimedOut);
                state.plan.decide(index, Outcome::TimedOut);
                timed_out.push(index);
            }
        }
        if !timed_out.is_empty() {
            self.replace_workers(&mut state);
        }
        // Logged with the run unlocked: a C log callback may call into keel.
        drop(state);
        for index in timed_out {
            log::warn!(
                target: LOG_TARGET,
                "task timed out: pool={:?} index={index} timeout_ms={} abandoned_threads={}",
                self.run.shared.config.name.as_deref().unwrap_or(""),
                self.run.timeout.map_or(0, |timeout| timeout.as_millis()),
                self.run.shared.counters.abandoned_now()
            );
        }
    }

    /// After workers were abandoned: new ones take their place. At the cap
    /// none are added, and if no worker is left, the caller refuses what is
    /// ready.
    fn replace_workers(&self, state: &mut RunState<P>) {
        let shared = &self.run.shared;
        let cap_reached = shared.config.at_abandoned_cap(shared.counters.abandoned_now());
        if !cap_reached && !state.stopped && !state.plan.exhausted() {
            let missing = self.limit.saturating_sub(state.live_workers);
            self.add_workers(state, missing);
        }
        if state.live_workers == 0 {
            self.refuse_ready(state);
        }
        self.run.task_ready.notify_all();
    }

    /// Gives up on running task `index`: cancels its token and leaves its
    /// thread to exit when the task returns. False if it finished first.
    fn abandon(&self, state: &mut RunState<P>, index: usize) -> bool {
        let Some(task) = state.running.get(&index).cloned() else {
            return false;
        };
        let shared = &self.run.shared;
        {
            // Abandoned threads report their return under this lock, so the
            // count and the hung key are in place before they can be undone.
            let mut hung = shared.hung_keys.lock();
            match task.abandon() {
                None => return false,
                Some(TaskState::Running) => {
                    if let Some(key) = self.run.keys.get(index) {
                        hung.insert(key.clone());
                        shared.hung_count.store(hung.len(), Ordering::SeqCst);
                    }
                }
                Some(_) => {}
            }
            shared.counters.thread_abandoned();
            // The hung thread never gives its slot back: we do, for it.
            shared.slots.release();
        }
        task.token.cancel();
        state.running.remove(&index);
        state.live_workers -= 1;
        true
    }

    /// The batch was cancelled or the pool shut down: running tasks are
    /// abandoned and decided `Cancelled` (unless they finished first), and
    /// tasks not started are decided `Cancelled`.
    pub(crate) fn stop(&self) {
        self.stop_seen.set(true);
        let mut state = self.lock();
        mark_stopped(&self.run, &mut state);
        state.plan.cancel_rest();
        let running: Vec<usize> = state.running.keys().copied().collect();
        let mut abandoned = Vec::new();
        for index in running {
            if self.abandon(&mut state, index) {
                state.plan.decide(index, Outcome::Cancelled);
                abandoned.push(index);
            }
        }
        drop(state);
        for index in abandoned {
            log::warn!(
                target: LOG_TARGET,
                "task abandoned: pool={:?} index={index} reason=cancelled abandoned_threads={}",
                self.run.shared.config.name.as_deref().unwrap_or(""),
                self.run.shared.counters.abandoned_now()
            );
        }
        self.notify_workers();
    }
}

impl<K, P> Drop for Engine<K, P> {
    fn drop(&mut self) {
        // Idle workers leave; busy ones leave after their task.
        let mut state = self.run.state.lock();
        mark_stopped(&self.run, &mut state);
        drop(state);
        self.run.task_ready.notify_all();
    }
}

thread_local! {
    /// The pool (its shared state's address) this thread works for, if any.
    static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn pool_id<K>(shared: &Arc<Shared<K>>) -> usize {
    Arc::as_ptr(shared) as usize
}

fn is_worker_of<K>(shared: &Arc<Shared<K>>) -> bool {
    WORKER_OF.with(|of| of.get() == pool_id(shared))
}

/// Marks the run stopped, for workers with or without its lock, and wakes
/// its workers sleeping for a slot.
fn mark_stopped<K, P>(run: &Run<K, P>, state: &mut RunState<P>) {
    state.stopped = true;
    run.stopped.store(true, Ordering::SeqCst);
    run.shared.slots.wake_all();
}

/// Why task `index` must not start now, if it must not.
fn refusal<K: Hash + Eq + Clone, P>(run: &Run<K, P>, index: usize) -> Option<Refusal> {
    refused(run, index).map(Refusal::Refused).or_else(|| {
        let backoff = run.shared.backoff.as_ref().filter(|_| !run.bypass_backoff)?;
        let (retry_in, failures) = backoff.paused(run.keys.get(index)?)?;
        Some(Refusal::Skipped { retry_in, failures })
    })
}

/// Counts a decided task's outcome against its key's failure backoff.
fn record_backoff<K: Hash + Eq + Clone, P, T>(run: &Run<K, P>, index: usize, outcome: &Outcome<T>) {
    if let (Some(backoff), Some(key)) = (&run.shared.backoff, run.keys.get(index)) {
        backoff.record(key, outcome);
    }
}

fn refused<K: Hash + Eq, P>(run: &Run<K, P>, index: usize) -> Option<Error> {
    let shared = &run.shared;
    if shared.shutdown.is_cancelled() {
        return Some(Error::closed(format!("task {index} refused: the pool is shut down")));
    }
    let abandoned = shared.counters.abandoned_now();
    if let Some(cap) = shared
        .config
        .max_abandoned()
        .filter(|_| shared.config.at_abandoned_cap(abandoned))
    {
        log::warn!(target: LOG_TARGET, "task refused: index={index} abandoned_threads={abandoned} cap={cap}");
        return Some(Error::busy(format!(
            "task {index} refused: the pool has {abandoned} abandoned threads still running, at its cap of {cap}"
        )));
    }
    let key = run.keys.get(index)?;
    if shared.hung_count.load(Ordering::SeqCst) > 0 && shared.hung_keys.lock().contains(key) {
        return Some(Error::busy(format!(
            "task {index} refused: its key is still busy with a timed-out run that has not returned"
        )));
    }
    None
}

fn worker_loop<K, P>(run: &Run<K, P>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Plan,
{
    WORKER_OF.with(|of| of.set(pool_id(&run.shared)));
    let slots = &run.shared.slots;
    let mut state = run.state.lock();
    loop {
        if state.stopped {
            break;
        }
        // A pool-wide slot first: cheaply if one is free, else sleeping for
        // one without holding the run.
        if !slots.try_take() {
            let taken = MutexGuard::unlocked(&mut state, || slots.take(|| run.stopped.load(Ordering::SeqCst)));
            if !taken {
                break;
            }
            if state.stopped {
                slots.release();
                break;
            }
        }
        let next = state.plan.next_task(&mut |index| refusal(run, index));
        if state.plan.take_wake() {
            let _ = run.wake.try_send(());
        }
        let Some((index, first_of_key, task)) = next else {
            slots.release();
            if state.plan.exhausted() {
                break;
            }
            run.task_ready.wait(&mut state);
            continue;
        };
        let cell = TaskCell::new();
        state.running.insert(index, Arc::clone(&cell));
        let deadline = run.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        if let Some(deadline) = deadline {
            state.deadlines.push(Reverse((deadline, index)));
            if state
                .deadlines
                .peek()
                .is_some_and(|Reverse((_, first))| *first == index)
            {
                // The caller's timer must move up to this deadline.
                let _ = run.wake.try_send(());
            }
        }
        let ctx = TaskContext::new(index, first_of_key, deadline, cell.token.clone(), run.retry.clone());
        let reported = MutexGuard::unlocked(&mut state, || run_task(run, &cell, &ctx, task));
        let Some((outcome, guard)) = reported else {
            return; // abandoned while waiting for the key
        };
        if !cell.transition(TaskState::Running, TaskState::Finished) {
            // Reported timed out or cancelled already; this thread was
            // replaced. The key stops being "hung" before it is unlocked.
            drop(state);
            abandoned_thread_returns(&run.shared, run.keys.get(index));
            drop(guard);
            return;
        }
        slots.release();
        // Free the key before the next task of the key can be handed out.
        drop(guard);
        state.running.remove(&index);
        // Before the decision releases the key's next task, so a follower
        // of a failing key is already skipped: duplicates cost one attempt.
        record_backoff(run, index, &outcome);
        state.plan.decide(index, outcome);
        if state.plan.take_wake() {
            let _ = run.wake.try_send(());
        }
    }
    state.live_workers -= 1;
    drop(state);
    run.task_ready.notify_all();
    // The caller may be waiting for the last worker's outcome.
    let _ = run.wake.try_send(());
}

type Held<K> = Option<crate::locks::KeyGuard<K>>;

/// Takes the task's key and runs it. `None` if the task was abandoned while
/// waiting for its key (it never ran).
fn run_task<K, P>(
    run: &Run<K, P>,
    cell: &TaskCell,
    ctx: &TaskContext,
    task: P::Task,
) -> Option<(Outcome<P::Output>, Held<K>)>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Plan,
{
    let index = ctx.index();
    let key = run.keys.get(index);
    let key_wait = Stopwatch::start(LOG_TARGET, Level::Debug);
    let guard = key.map(|key| run.shared.locks.lock(key)).transpose();
    if !cell.transition(TaskState::Picked, TaskState::Running) {
        drop(guard);
        abandoned_thread_returns(&run.shared, None);
        return None;
    }
    run.shared.slots.task_started();
    if let Some(waited) = key_wait.elapsed() {
        log::debug!(
            target: LOG_TARGET,
            "task started: index={index} first_of_key={} key_wait_us={}",
            ctx.is_first_of_key(),
            micros(waited)
        );
    }
    match guard {
        Ok(guard) => {
            let watch = Stopwatch::start(LOG_TARGET, Level::Debug);
            let outcome = match catch_unwind(AssertUnwindSafe(|| task(ctx))) {
                Ok(Ok(value)) => Outcome::Value(value),
                Ok(Err(err)) => Outcome::Error(err),
                Err(payload) => Outcome::Panicked(panic_message(&*payload)),
            };
            if let Some(elapsed) = watch.elapsed() {
                log::debug!(
                    target: LOG_TARGET,
                    "task finished: index={index} first_of_key={} outcome={} elapsed_us={}",
                    ctx.is_first_of_key(),
                    outcome.name(),
                    micros(elapsed)
                );
            }
            Some((outcome, guard))
        }
        Err(err) => Some((Outcome::Error(err.context(format!("task {index}"))), None)),
    }
}

fn abandoned_thread_returns<K: Hash + Eq>(shared: &Shared<K>, hung_key: Option<&K>) {
    let mut hung = shared.hung_keys.lock();
    if let Some(key) = hung_key {
        hung.remove(key);
        shared.hung_count.store(hung.len(), Ordering::SeqCst);
    }
    shared.counters.abandoned_thread_returned();
    drop(hung);
    log::info!(
        target: LOG_TARGET,
        "abandoned thread returned: held_key={} abandoned_threads={}",
        hung_key.is_some(),
        shared.counters.abandoned_now()
    );
}

/// Task indices are small distinct integers chosen by keel, not by callers:
/// they need no hashing to spread, nor protection against chosen collisions.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        // Spread the low bits into the high ones hashbrown uses for its tags.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_usize(&mut self, index: usize) {
        self.0 = index as u64;
    }
}

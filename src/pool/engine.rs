//! The part every driver (batch, pipeline) shares: worker threads, the
//! running set, deadlines, and abandoning threads that do not come back.
//!
//! The engine runs on the calling thread and never blocks a worker on the
//! coordinator: a driver starts a task only when a slot is free, and the
//! engine reports completions, timeouts and stop requests as events.
//!
//! # Why threads are abandoned, not killed
//! A thread cannot be killed. A task past its deadline is reported timed out
//! at once and its slot is freed (a new worker is spawned when the next task
//! needs one); the old thread keeps the task's key locked until the task
//! really returns, then exits. Who decides a task's fate (the worker by
//! finishing, the engine by abandoning) is settled by one compare-and-swap
//! on the task's state, so a task is never reported twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::error::{panic_message, Error, Result};
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::outcome::Outcome;
use crate::pool::Shared;

/// Handed to a worker, waiting for its key.
const QUEUED: u8 = 0;
/// Holds its key and runs.
const RUNNING: u8 = 1;
/// Returned; the worker reports the outcome.
const FINISHED: u8 = 2;
/// Given up on by the engine (timed out or cancelled); the worker exits
/// when the task returns.
const ABANDONED: u8 = 3;

/// The state one task's worker and the engine race on.
struct TaskCell {
    state: AtomicU8,
    token: CancellationToken,
}

impl TaskCell {
    /// Worker: the key is held; run unless abandoned meanwhile.
    fn start(&self) -> bool {
        self.transition(QUEUED, RUNNING)
    }

    /// Worker: the task returned; report it unless abandoned meanwhile.
    fn finish(&self) -> bool {
        self.transition(RUNNING, FINISHED)
    }

    /// Engine: give up on the task. Returns the state it was in, or `None`
    /// if it has finished already (its outcome is on its way).
    fn abandon(&self) -> Option<u8> {
        self.state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |state| {
                matches!(state, QUEUED | RUNNING).then_some(ABANDONED)
            })
            .ok()
    }

    fn transition(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

struct Job<F> {
    index: usize,
    run: F,
    cell: Arc<TaskCell>,
    ctx: TaskContext,
}

struct Done<T> {
    index: usize,
    outcome: Outcome<T>,
}

struct Running {
    cell: Arc<TaskCell>,
}

/// What the engine saw while waiting.
pub(crate) enum Event<T> {
    /// Task `index` is decided: it returned, or timed out (abandoned).
    Finished(usize, Outcome<T>),
    /// The batch was cancelled or the pool shut down.
    Stopped,
}

/// Runs tasks of type `F` on up to `limit` worker threads of its own.
/// `keys[index]` is task `index`'s key; an empty `keys` means unkeyed tasks.
pub(crate) struct Engine<K, F, T> {
    shared: Arc<Shared<K>>,
    keys: Arc<Vec<K>>,
    limit: usize,
    timeout: Option<Duration>,
    jobs_tx: Sender<Job<F>>,
    jobs_rx: Receiver<Job<F>>,
    done_tx: Sender<Done<T>>,
    done_rx: Receiver<Done<T>>,
    stop_rx: Receiver<()>,
    cancel_rx: Receiver<()>,
    running: HashMap<usize, Running>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Workers that are not abandoned: each is running a task or idle.
    live_workers: usize,
}

impl<K, F, T> Engine<K, F, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    pub(crate) fn new(
        shared: Arc<Shared<K>>,
        keys: Arc<Vec<K>>,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
    ) -> Self {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let stop_rx = shared.shutdown.receiver();
        let cancel_rx = cancel.map_or_else(crossbeam_channel::never, CancellationToken::receiver);
        Engine {
            limit: shared.config.concurrency(),
            shared,
            keys,
            timeout,
            jobs_tx,
            jobs_rx,
            done_tx,
            done_rx,
            stop_rx,
            cancel_rx,
            running: HashMap::new(),
            deadlines: BinaryHeap::new(),
            live_workers: 0,
        }
    }

    /// True while fewer than the limit of tasks hold a slot.
    pub(crate) fn has_slot(&self) -> bool {
        self.running.len() < self.limit
    }

    /// True when nothing is running.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Why task `index` must not start now, if it must not.
    pub(crate) fn refusal(&self, index: usize) -> Option<Error> {
        if self.shared.shutdown.is_cancelled() {
            return Some(Error::closed(format!("task {index} refused: the pool is shut down")));
        }
        let abandoned = self.shared.counters.abandoned_now();
        let cap = self.shared.config.abandoned_cap();
        if abandoned >= cap {
            return Some(Error::busy(format!(
                "task {index} refused: the pool has {abandoned} abandoned threads still running, at its cap of {cap}"
            )));
        }
        let key = self.keys.get(index)?;
        if self.shared.hung_keys.lock().contains(key) {
            return Some(Error::busy(format!(
                "task {index} refused: its key is still busy with a timed-out run that has not returned"
            )));
        }
        None
    }

    /// Hands task `index` to a worker, spawning one if none is idle.
    pub(crate) fn start(&mut self, index: usize, first_of_key: bool, run: F) -> Result<()> {
        debug_assert!(self.has_slot());
        if self.live_workers == self.running.len() {
            self.spawn_worker()?;
        }
        let cell = Arc::new(TaskCell {
            state: AtomicU8::new(QUEUED),
            token: CancellationToken::new(),
        });
        let deadline = self.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let retry = self.shared.config.retry.clone();
        let ctx = TaskContext::new(index, first_of_key, deadline, cell.token.clone(), retry);
        self.running.insert(
            index,
            Running {
                cell: Arc::clone(&cell),
            },
        );
        if let Some(deadline) = deadline {
            self.deadlines.push(Reverse((deadline, index)));
        }
        let job = Job { index, run, cell, ctx };
        self.jobs_tx.send(job).expect("the engine holds a receiver");
        Ok(())
    }

    fn spawn_worker(&mut self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let keys = Arc::clone(&self.keys);
        let jobs = self.jobs_rx.clone();
        let done = self.done_tx.clone();
        std::thread::Builder::new()
            .name("keel-pool".into())
            .spawn(move || worker_loop(&shared, &keys, &jobs, &done))
            .map_err(|err| Error::io("spawn a pool worker thread", err))?;
        self.live_workers += 1;
        Ok(())
    }

    /// Waits for the next event; `None` when nothing is running.
    pub(crate) fn next_event(&mut self) -> Option<Event<T>> {
        loop {
            if self.running.is_empty() {
                self.deadlines.clear();
                return None;
            }
            let timer = match self.deadlines.peek() {
                Some(Reverse((deadline, _))) => crossbeam_channel::at(*deadline),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(self.done_rx) -> done => {
                    let done = done.expect("the engine holds a sender");
                    self.running.remove(&done.index);
                    return Some(Event::Finished(done.index, done.outcome));
                }
                recv(self.stop_rx) -> _ => return Some(Event::Stopped),
                recv(self.cancel_rx) -> _ => return Some(Event::Stopped),
                recv(timer) -> _ => {
                    if let Some(index) = self.expire_one() {
                        return Some(Event::Finished(index, Outcome::TimedOut));
                    }
                }
            }
        }
    }

    /// Abandons the first task past its deadline that has not finished.
    fn expire_one(&mut self) -> Option<usize> {
        let now = Instant::now();
        while let Some(&Reverse((deadline, index))) = self.deadlines.peek() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop();
            // A stale entry (the task finished) or a task that finished just
            // now (its outcome is on its way) is skipped.
            if self.running.contains_key(&index) && self.abandon(index) {
                return Some(index);
            }
        }
        None
    }

    /// Gives up on running task `index`: cancels its token, frees its slot,
    /// and leaves its thread to exit when the task returns. False if the
    /// task finished first.
    fn abandon(&mut self, index: usize) -> bool {
        let counters = &self.shared.counters;
        let cell = Arc::clone(&self.running[&index].cell);
        // Counted before the swap, so the worker's decrement can never come first.
        counters.thread_abandoned();
        {
            // The worker removes the key after its own swap fails, so the
            // insert must happen under the same lock as our swap.
            let mut hung = self.shared.hung_keys.lock();
            match cell.abandon() {
                Some(RUNNING) => {
                    if let Some(key) = self.keys.get(index) {
                        hung.insert(key.clone());
                    }
                    counters.task_left_slot();
                }
                Some(_) => {}
                None => {
                    counters.abandoned_thread_returned();
                    counters.abandoned_total.fetch_sub(1, Ordering::SeqCst);
                    return false;
                }
            }
        }
        cell.token.cancel();
        self.running.remove(&index);
        self.live_workers -= 1;
        true
    }

    /// Tells every running task to stop, without giving up on it.
    pub(crate) fn cancel_running(&self) {
        for running in self.running.values() {
            running.cell.token.cancel();
        }
    }

    /// Abandons every running task at once (batch cancelled, pool shut
    /// down): each is decided `Cancelled`, except tasks that finished first,
    /// whose real outcome is returned.
    pub(crate) fn abandon_all(&mut self) -> Vec<(usize, Outcome<T>)> {
        let indices: Vec<usize> = self.running.keys().copied().collect();
        let mut decided = Vec::with_capacity(indices.len());
        for index in indices {
            if self.abandon(index) {
                decided.push((index, Outcome::Cancelled));
            }
        }
        // The rest finished before we could abandon them; their outcomes are
        // past user code and about to be sent.
        while !self.running.is_empty() {
            let done = self.done_rx.recv().expect("the engine holds a sender");
            self.running.remove(&done.index);
            decided.push((done.index, done.outcome));
        }
        self.deadlines.clear();
        decided
    }
}

fn worker_loop<K, F, T>(shared: &Shared<K>, keys: &[K], jobs: &Receiver<Job<F>>, done: &Sender<Done<T>>)
where
    K: Hash + Eq + Clone,
    F: FnOnce(&TaskContext) -> Result<T>,
{
    // Ends when the batch drops its sender, or when this thread was abandoned.
    for job in jobs.iter() {
        if !run_job(shared, keys.get(job.index), job, done) {
            return;
        }
    }
}

/// Runs one job under its key. False if the engine abandoned it: this
/// thread's slot has a replacement, so the thread must exit.
fn run_job<K, F, T>(shared: &Shared<K>, key: Option<&K>, job: Job<F>, done: &Sender<Done<T>>) -> bool
where
    K: Hash + Eq + Clone,
    F: FnOnce(&TaskContext) -> Result<T>,
{
    let Job { index, run, cell, ctx } = job;
    let guard = match key.map(|key| shared.locks.lock(key)).transpose() {
        Ok(guard) => guard,
        Err(err) => {
            if !cell.start() || !cell.finish() {
                shared.counters.abandoned_thread_returned();
                return false;
            }
            let outcome = Outcome::Error(err.context(format!("task {index}")));
            let _ = done.send(Done { index, outcome });
            return true;
        }
    };
    if !cell.start() {
        // Abandoned while waiting for the key; it never ran.
        drop(guard);
        shared.counters.abandoned_thread_returned();
        return false;
    }
    shared.counters.task_started();
    let outcome = match catch_unwind(AssertUnwindSafe(|| run(&ctx))) {
        Ok(Ok(value)) => Outcome::Value(value),
        Ok(Err(err)) => Outcome::Error(err),
        Err(payload) => Outcome::Panicked(panic_message(&*payload)),
    };
    if cell.finish() {
        shared.counters.task_left_slot();
        // Free the key before reporting, so the next task of the key finds it free.
        drop(guard);
        // The batch may be gone (its caller panicked); nobody is left to tell.
        let _ = done.send(Done { index, outcome });
        true
    } else {
        // Reported timed out or cancelled already. The key stops being "hung"
        // before it is unlocked, so nobody is refused for a free key.
        if let Some(key) = key {
            shared.hung_keys.lock().remove(key);
        }
        drop(guard);
        shared.counters.abandoned_thread_returned();
        false
    }
}

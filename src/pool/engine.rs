//! The part every driver (batch, pipeline) shares: worker threads, the
//! dispatched set, deadlines, and abandoning threads that do not come back.
//!
//! The engine runs on the calling thread. A driver dispatches a task when
//! [`Engine::has_slot`]; up to `limit` more tasks than there are workers wait
//! in the job channel, so a worker that finishes picks its next task without
//! waiting for the coordinator. At most `limit` workers exist (abandoned ones
//! aside), which is what bounds the concurrency.
//!
//! # Why threads are abandoned, not killed
//! A thread cannot be killed. A task past its deadline (counted from when a
//! worker picked it up) is reported timed out at once and its worker is
//! replaced; the old thread keeps the task's key locked until the task
//! really returns, then exits. Who decides a task's fate (the worker by
//! finishing, the engine by abandoning) is settled by one compare-and-swap
//! on the task's state, so a task is never reported twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::error::{panic_message, Error, Result};
use crate::pool::config::RetryPolicy;
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::outcome::Outcome;
use crate::pool::Shared;

/// In the job channel, not picked up yet.
const QUEUED: u8 = 0;
/// A worker picked it up and waits for its key.
const PICKED: u8 = 1;
/// Holds its key and runs.
const RUNNING: u8 = 2;
/// Returned; the worker reports the outcome.
const FINISHED: u8 = 3;
/// Given up on by the engine (timed out, cancelled, revoked).
const ABANDONED: u8 = 4;

fn transition(token: &CancellationToken, from: u8, to: u8) -> bool {
    token
        .task_state()
        .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

struct Job<F> {
    index: usize,
    first_of_key: bool,
    run: F,
    token: CancellationToken,
}

enum Message<T> {
    /// A worker picked task `index` up; it times out at `deadline`.
    Started { index: usize, deadline: Instant },
    /// Task `index` returned.
    Done { index: usize, outcome: Outcome<T> },
}

/// What the engine saw while waiting.
pub(crate) enum Event<T> {
    /// Task `index` is decided: it returned, timed out, or was revoked.
    Finished(usize, Outcome<T>),
    /// The batch was cancelled or the pool shut down.
    Stopped,
}

/// What a worker needs besides its jobs.
struct WorkerSetup<K, T> {
    shared: Arc<Shared<K>>,
    keys: Arc<Vec<K>>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    messages: Sender<Message<T>>,
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
    messages_tx: Sender<Message<T>>,
    messages_rx: Receiver<Message<T>>,
    stop_rx: Receiver<()>,
    cancel_rx: Receiver<()>,
    /// Tasks dispatched and not decided, by index.
    dispatched: HashMap<usize, CancellationToken, BuildHasherDefault<IndexHasher>>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Decided while handling something else; handed out first.
    pending: VecDeque<Event<T>>,
    /// Workers that are not abandoned: each runs a task or takes the next.
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
        let (messages_tx, messages_rx) = crossbeam_channel::unbounded();
        let stop_rx = shared.shutdown.receiver();
        let cancel_rx = cancel.map_or_else(crossbeam_channel::never, CancellationToken::receiver);
        Engine {
            limit: shared.config.concurrency(),
            shared,
            keys,
            timeout,
            jobs_tx,
            jobs_rx,
            messages_tx,
            messages_rx,
            stop_rx,
            cancel_rx,
            dispatched: HashMap::default(),
            deadlines: BinaryHeap::new(),
            pending: VecDeque::new(),
            live_workers: 0,
        }
    }

    /// True while the driver may dispatch another task: fewer than `limit`
    /// are running and fewer than `limit` wait for a worker.
    pub(crate) fn has_slot(&self) -> bool {
        self.dispatched.len() < 2 * self.limit
    }

    /// True when nothing is dispatched and nothing is left to report.
    pub(crate) fn is_idle(&self) -> bool {
        self.dispatched.is_empty() && self.pending.is_empty()
    }

    /// Why task `index` must not start now, if it must not.
    pub(crate) fn refusal(&self, index: usize) -> Option<Error> {
        if self.shared.shutdown.is_cancelled() {
            return Some(Error::closed(format!("task {index} refused: the pool is shut down")));
        }
        if let Some(refusal) = self.cap_refusal(index) {
            return Some(refusal);
        }
        let key = self.keys.get(index)?;
        if self.shared.hung_keys.lock().contains(key) {
            return Some(Error::busy(format!(
                "task {index} refused: its key is still busy with a timed-out run that has not returned"
            )));
        }
        None
    }

    fn cap_refusal(&self, index: usize) -> Option<Error> {
        let abandoned = self.shared.counters.abandoned_now();
        let cap = self.shared.config.abandoned_cap();
        (abandoned >= cap).then(|| {
            Error::busy(format!(
                "task {index} refused: the pool has {abandoned} abandoned threads still running, at its cap of {cap}"
            ))
        })
    }

    /// Queues task `index` for the workers, spawning one if needed.
    pub(crate) fn start(&mut self, index: usize, first_of_key: bool, run: F) -> Result<()> {
        debug_assert!(self.has_slot());
        if let Err(err) = self.ensure_workers(self.dispatched.len() + 1) {
            if self.live_workers == 0 {
                return Err(err);
            }
        }
        let token = CancellationToken::new();
        self.dispatched.insert(index, token.clone());
        let job = Job {
            index,
            first_of_key,
            run,
            token,
        };
        self.jobs_tx.send(job).expect("the engine holds a receiver");
        Ok(())
    }

    /// Spawns workers until there is one per task (up to the limit).
    fn ensure_workers(&mut self, tasks: usize) -> Result<()> {
        while self.live_workers < tasks.min(self.limit) {
            self.spawn_worker()?;
        }
        Ok(())
    }

    fn spawn_worker(&mut self) -> Result<()> {
        let setup = WorkerSetup {
            shared: Arc::clone(&self.shared),
            keys: Arc::clone(&self.keys),
            timeout: self.timeout,
            retry: self.shared.config.retry.clone(),
            messages: self.messages_tx.clone(),
        };
        let jobs = self.jobs_rx.clone();
        std::thread::Builder::new()
            .name("keel-pool".into())
            .spawn(move || worker_loop(&setup, &jobs))
            .map_err(|err| Error::io("spawn a pool worker thread", err))?;
        self.live_workers += 1;
        Ok(())
    }

    /// Waits for the next event; `None` when nothing is dispatched.
    pub(crate) fn next_event(&mut self) -> Option<Event<T>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.dispatched.is_empty() {
                self.deadlines.clear();
                return None;
            }
            if let Ok(message) = self.messages_rx.try_recv() {
                if let Some(event) = self.handle(message) {
                    return Some(event);
                }
                continue;
            }
            let timer = match self.deadlines.peek() {
                Some(Reverse((deadline, _))) => crossbeam_channel::at(*deadline),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(self.messages_rx) -> message => {
                    if let Some(event) = self.handle(message.expect("the engine holds a sender")) {
                        return Some(event);
                    }
                }
                recv(self.stop_rx) -> _ => return Some(Event::Stopped),
                recv(self.cancel_rx) -> _ => return Some(Event::Stopped),
                recv(timer) -> _ => self.expire_due(),
            }
        }
    }

    fn handle(&mut self, message: Message<T>) -> Option<Event<T>> {
        match message {
            Message::Started { index, deadline } => {
                if self.dispatched.contains_key(&index) {
                    self.deadlines.push(Reverse((deadline, index)));
                }
                None
            }
            Message::Done { index, outcome } => {
                self.dispatched.remove(&index);
                Some(Event::Finished(index, outcome))
            }
        }
    }

    /// Abandons every task past its deadline that has not finished, and
    /// replaces their workers (or, at the cap, revokes what waits for one).
    fn expire_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((deadline, index))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // Skips stale entries and tasks that finished just now (their
            // outcome is on its way).
            if self.dispatched.contains_key(&index) && self.abandon(index) {
                self.pending.push_back(Event::Finished(index, Outcome::TimedOut));
            }
        }
        if self.cap_refusal(0).is_some() {
            self.revoke_queued();
        } else {
            // A failure here leaves fewer workers, never none while tasks
            // wait: the driver's next start retries.
            let _ = self.ensure_workers(self.dispatched.len());
        }
    }

    /// At the abandoned-thread cap: tasks still waiting for a worker are
    /// refused rather than left waiting for one that may never come.
    fn revoke_queued(&mut self) {
        let queued: Vec<usize> = self
            .dispatched
            .iter()
            .filter(|(_, token)| transition(token, QUEUED, ABANDONED))
            .map(|(&index, _)| index)
            .collect();
        for index in queued {
            self.dispatched.remove(&index);
            let refusal = self.cap_refusal(index).expect("at the cap");
            self.pending
                .push_back(Event::Finished(index, Outcome::Refused(refusal)));
        }
    }

    /// Gives up on dispatched task `index`: cancels its token, frees its
    /// slot, and leaves its thread (if it had one) to exit when the task
    /// returns. False if the task finished first.
    fn abandon(&mut self, index: usize) -> bool {
        let token = self.dispatched[&index].clone();
        {
            // Abandoned threads report their return under this lock, so the
            // count and the hung key are in place before they can be undone.
            let mut hung = self.shared.hung_keys.lock();
            let prior = token
                .task_state()
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |state| {
                    matches!(state, QUEUED | PICKED | RUNNING).then_some(ABANDONED)
                });
            match prior {
                Err(_) => return false,
                Ok(QUEUED) => {}
                Ok(state) => {
                    self.shared.counters.thread_abandoned();
                    self.live_workers -= 1;
                    if state == RUNNING {
                        if let Some(key) = self.keys.get(index) {
                            hung.insert(key.clone());
                        }
                        self.shared.counters.task_left_slot();
                    }
                }
            }
        }
        token.cancel();
        self.dispatched.remove(&index);
        true
    }

    /// Tells every dispatched task to stop, without giving up on it; tasks
    /// not picked up yet are revoked and decided `Cancelled`.
    pub(crate) fn cancel_dispatched(&mut self) {
        let indices: Vec<usize> = self.dispatched.keys().copied().collect();
        for index in indices {
            let token = &self.dispatched[&index];
            token.cancel();
            if transition(token, QUEUED, ABANDONED) {
                self.dispatched.remove(&index);
                self.pending.push_back(Event::Finished(index, Outcome::Cancelled));
            }
        }
    }

    /// Abandons every dispatched task at once (batch cancelled, pool shut
    /// down): each is decided `Cancelled`, except tasks that finished first,
    /// whose real outcome is returned.
    pub(crate) fn abandon_all(&mut self) -> Vec<(usize, Outcome<T>)> {
        let mut decided: Vec<(usize, Outcome<T>)> = self
            .pending
            .drain(..)
            .filter_map(|event| match event {
                Event::Finished(index, outcome) => Some((index, outcome)),
                Event::Stopped => None,
            })
            .collect();
        let indices: Vec<usize> = self.dispatched.keys().copied().collect();
        for index in indices {
            if self.abandon(index) {
                decided.push((index, Outcome::Cancelled));
            }
        }
        // The rest finished before they could be abandoned: their outcomes
        // are past user code and about to be sent.
        while !self.dispatched.is_empty() {
            if let Message::Done { index, outcome } = self.messages_rx.recv().expect("the engine holds a sender") {
                self.dispatched.remove(&index);
                decided.push((index, outcome));
            }
        }
        self.deadlines.clear();
        decided
    }
}

fn worker_loop<K, F, T>(setup: &WorkerSetup<K, T>, jobs: &Receiver<Job<F>>)
where
    K: Hash + Eq + Clone,
    F: FnOnce(&TaskContext) -> Result<T>,
{
    // Ends when the batch drops its sender, or when this thread was abandoned.
    for job in jobs.iter() {
        if !transition(&job.token, QUEUED, PICKED) {
            continue; // revoked before anyone picked it up
        }
        if !run_job(setup, job) {
            return;
        }
    }
}

/// Runs one picked-up job under its key. False if the engine abandoned it:
/// this thread has been replaced, so it must exit.
fn run_job<K, F, T>(setup: &WorkerSetup<K, T>, job: Job<F>) -> bool
where
    K: Hash + Eq + Clone,
    F: FnOnce(&TaskContext) -> Result<T>,
{
    let Job {
        index,
        first_of_key,
        run,
        token,
    } = job;
    let shared = &setup.shared;
    let deadline = setup.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    if let Some(deadline) = deadline {
        let _ = setup.messages.send(Message::Started { index, deadline });
    }
    let key = setup.keys.get(index);
    let guard = key.map(|key| shared.locks.lock(key)).transpose();
    if !transition(&token, PICKED, RUNNING) {
        // Abandoned while waiting for the key; it never ran.
        drop(guard);
        abandoned_thread_returns(shared, None);
        return false;
    }
    shared.counters.task_started();
    let ctx = TaskContext::new(index, first_of_key, deadline, token.clone(), setup.retry.clone());
    let outcome = match guard {
        Ok(_) => match catch_unwind(AssertUnwindSafe(|| run(&ctx))) {
            Ok(Ok(value)) => Outcome::Value(value),
            Ok(Err(err)) => Outcome::Error(err),
            Err(payload) => Outcome::Panicked(panic_message(&*payload)),
        },
        Err(ref err) => Outcome::Error(err.clone().context(format!("task {index}"))),
    };
    if transition(&token, RUNNING, FINISHED) {
        shared.counters.task_left_slot();
        // Free the key before reporting, so the next task of the key finds it free.
        drop(guard);
        // The batch may be gone (its caller panicked); nobody is left to tell.
        let _ = setup.messages.send(Message::Done { index, outcome });
        true
    } else {
        // Reported timed out or cancelled already. The key stops being
        // "hung" before it is unlocked, so nobody is refused for a free key.
        abandoned_thread_returns(shared, key);
        drop(guard);
        false
    }
}

fn abandoned_thread_returns<K: Hash + Eq>(shared: &Shared<K>, hung_key: Option<&K>) {
    let mut hung = shared.hung_keys.lock();
    if let Some(key) = hung_key {
        hung.remove(key);
    }
    shared.counters.abandoned_thread_returned();
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

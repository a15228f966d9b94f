//! `pipeline`: prepare in parallel on the pool, commit serialized, in input
//! order, on the calling thread (OpenKB's concurrent `add`).
//!
//! Item `i` is committed as soon as it is prepared and item `i - 1` is
//! committed. At most `window` items are dispatched but not yet committed,
//! so prepared outputs waiting for a slow earlier item never pile up.

use std::collections::VecDeque;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{panic_message, Result};
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::engine::{Engine, Event};
use crate::pool::outcome::Outcome;
use crate::pool::Shared;

/// Options of a [`pipeline`](super::SyncPool::pipeline) run.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    window: Option<usize>,
    stop_at_first_commit_failure: bool,
    timeout: Option<Option<Duration>>,
    cancel: Option<CancellationToken>,
}

impl PipelineOptions {
    /// Twice the pool's concurrency as the window; failures do not stop the run.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `window` items prepared (or preparing) but not committed;
    /// values below 1 mean 1. A window below the pool's concurrency limits
    /// the parallelism to the window.
    pub fn window(mut self, window: usize) -> Self {
        self.window = Some(window.max(1));
        self
    }

    /// After the first failed commit, later items are not committed: they
    /// are reported `Cancelled`, and running prepares are told to stop.
    pub fn stop_at_first_commit_failure(mut self, stop: bool) -> Self {
        self.stop_at_first_commit_failure = stop;
        self
    }

    /// Each prepare times out after `timeout` (`None`: never), overriding the pool's.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Cancelling `token` ends the run at once, as for a batch.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }
}

pub(crate) fn run<K, I, P, C, Prep, Com>(
    shared: &Arc<Shared<K>>,
    items: impl IntoIterator<Item = I>,
    prepare: Prep,
    commit: Com,
    options: PipelineOptions,
) -> Vec<Outcome<C>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    I: Send + 'static,
    P: Send + 'static,
    Prep: Fn(I, &TaskContext) -> Result<P> + Send + Sync + 'static,
    Com: FnMut(usize, P) -> Result<C>,
{
    let prepare = Arc::new(prepare);
    // One closure type for every item: the batch needs no boxing.
    let jobs: Vec<_> = items
        .into_iter()
        .map(|item| {
            let prepare = Arc::clone(&prepare);
            move |ctx: &TaskContext| prepare(item, ctx)
        })
        .collect();
    let timeout = options.timeout.unwrap_or(shared.config.timeout());
    let window = options.window.unwrap_or(2 * shared.config.concurrency());
    let engine = Engine::new(
        Arc::clone(shared),
        Arc::new(Vec::new()),
        timeout,
        options.cancel.as_ref(),
    );
    let mut run = Pipeline {
        shared,
        total: jobs.len(),
        jobs: jobs.into_iter().map(Some).collect(),
        outcomes: Vec::with_capacity(0),
        window,
        prepared: VecDeque::new(),
        next_commit: 0,
        stopping: false,
        stop_on_failure: options.stop_at_first_commit_failure,
        commit,
        engine,
    };
    run.drive();
    run.outcomes
}

struct Pipeline<'s, K, F, P, C, Com> {
    shared: &'s Shared<K>,
    total: usize,
    jobs: Vec<Option<F>>,
    outcomes: Vec<Outcome<C>>,
    window: usize,
    /// Items `next_commit..` that were dispatched: `None` until prepared.
    prepared: VecDeque<Option<Outcome<P>>>,
    next_commit: usize,
    /// A commit failed (and the options say stop) or the run was cancelled.
    stopping: bool,
    stop_on_failure: bool,
    commit: Com,
    engine: Engine<K, F, P>,
}

impl<K, F, P, C, Com> Pipeline<'_, K, F, P, C, Com>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<P> + Send + 'static,
    P: Send + 'static,
    Com: FnMut(usize, P) -> Result<C>,
{
    fn drive(&mut self) {
        loop {
            self.dispatch();
            self.commit_ready();
            if self.next_commit == self.total {
                return;
            }
            match self.engine.next_event() {
                Some(Event::Finished(index, outcome)) => self.prepared[index - self.next_commit] = Some(outcome),
                Some(Event::Stopped) => self.cancel(),
                // Nothing running: the window's items were decided without running.
                None => {}
            }
        }
    }

    fn dispatched(&self) -> usize {
        self.next_commit + self.prepared.len()
    }

    /// Starts items while a slot is free and the window has room.
    fn dispatch(&mut self) {
        while !self.stopping
            && self.engine.has_slot()
            && self.dispatched() < self.total
            && self.prepared.len() < self.window
        {
            let index = self.dispatched();
            let job = self.jobs[index].take().expect("an item is prepared once");
            let decided = match self.engine.refusal(index) {
                Some(refusal) => Some(Outcome::Refused(refusal)),
                None => self.engine.start(index, true, job).err().map(Outcome::Error),
            };
            self.prepared.push_back(decided);
        }
    }

    /// Commits every prepared item at the head of the window, in order.
    fn commit_ready(&mut self) {
        while let Some(Some(_)) = self.prepared.front() {
            let prepared = self.prepared.pop_front().flatten().expect("checked above");
            let index = self.next_commit;
            let outcome = if self.stopping {
                Outcome::Cancelled
            } else {
                self.commit_one(index, prepared)
            };
            self.shared.counters.record(&outcome);
            self.outcomes.push(outcome);
            self.next_commit += 1;
        }
        if self.stopping && self.engine.is_idle() {
            // Nothing left that could still be prepared: the rest never ran.
            self.prepared.clear();
            while self.outcomes.len() < self.total {
                self.shared.counters.record(&Outcome::<C>::Cancelled);
                self.outcomes.push(Outcome::Cancelled);
            }
            self.next_commit = self.total;
        }
    }

    fn commit_one(&mut self, index: usize, prepared: Outcome<P>) -> Outcome<C> {
        let value = match prepared {
            Outcome::Value(value) => value,
            Outcome::Error(err) => return Outcome::Error(err.context(format!("prepare item {index}"))),
            Outcome::Panicked(message) => return Outcome::Panicked(format!("prepare item {index}: {message}")),
            other => return other.map(|_| unreachable!("values are handled above")),
        };
        let commit = &mut self.commit;
        let outcome = match catch_unwind(AssertUnwindSafe(|| commit(index, value))) {
            Ok(Ok(committed)) => Outcome::Value(committed),
            Ok(Err(err)) => Outcome::Error(err.context(format!("commit item {index}"))),
            Err(payload) => Outcome::Panicked(format!("commit item {index}: {}", panic_message(&*payload))),
        };
        if self.stop_on_failure && !outcome.is_value() {
            self.stop_preparing();
        }
        outcome
    }

    /// No more items start; running prepares are told to stop and awaited.
    fn stop_preparing(&mut self) {
        self.stopping = true;
        self.engine.cancel_running();
    }

    /// The run was cancelled or the pool shut down: running prepares are
    /// abandoned, nothing more is committed.
    fn cancel(&mut self) {
        self.stopping = true;
        for (index, _) in self.engine.abandon_all() {
            self.prepared[index - self.next_commit] = Some(Outcome::Cancelled);
        }
    }
}

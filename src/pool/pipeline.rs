//! `pipeline`: prepare in parallel on the pool, commit serialized, in input
//! order, on the calling thread (OpenKB's concurrent `add`).
//!
//! Item `i` is committed as soon as it is prepared and item `i - 1` is
//! committed. At most `window` items are handed out but not yet committed,
//! so prepared outputs waiting for a slow earlier item never pile up.

use std::collections::VecDeque;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{panic_message, Result};
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::engine::{Engine, Plan, Refusal};
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

/// The schedule of one pipeline, kept under the run's lock.
struct PipelinePlan<F, P> {
    jobs: Vec<Option<F>>,
    /// Items handed out (or decided without running) so far: `0..next`.
    next: usize,
    /// Items committed (or given up) by the caller so far.
    committed: usize,
    window: usize,
    /// Items `taken..next`: `None` until prepared.
    prepared: VecDeque<Option<Outcome<P>>>,
    /// Items the caller has taken for commit.
    taken: usize,
    stopping: bool,
    /// The head of the window became ready: the caller can commit.
    wake: bool,
}

impl<F, P> PipelinePlan<F, P> {
    /// The next item in order, if it is prepared.
    fn take_head(&mut self) -> Option<Outcome<P>> {
        if !matches!(self.prepared.front(), Some(Some(_))) {
            return None;
        }
        self.taken += 1;
        self.prepared.pop_front().flatten()
    }
}

impl<F, P> Plan for PipelinePlan<F, P>
where
    F: FnOnce(&TaskContext) -> Result<P> + Send + 'static,
    P: Send + 'static,
{
    type Task = F;
    type Output = P;

    fn next_task(&mut self, refusal: &mut dyn FnMut(usize) -> Option<Refusal>) -> Option<(usize, bool, F)> {
        while !self.stopping && self.next < self.jobs.len() && self.next < self.committed + self.window {
            let index = self.next;
            self.next += 1;
            let job = self.jobs[index].take().expect("an item is handed out once");
            if let Some(refusal) = refusal(index) {
                self.wake |= index == self.taken;
                self.prepared.push_back(Some(refusal.into_outcome()));
                continue;
            }
            self.prepared.push_back(None);
            return Some((index, true, job));
        }
        None
    }

    fn decide(&mut self, index: usize, outcome: Outcome<P>) {
        self.prepared[index - self.taken] = Some(outcome);
        // The caller has something to commit only when the head is ready.
        self.wake |= index == self.taken;
    }

    fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    fn exhausted(&self) -> bool {
        self.stopping || self.next == self.jobs.len()
    }

    fn cancel_rest(&mut self) {
        self.stopping = true;
        for job in &mut self.jobs[self.next..] {
            *job = None;
            self.prepared.push_back(Some(Outcome::Cancelled));
        }
        self.next = self.jobs.len();
        self.wake = true;
    }
}

pub(crate) fn run<K, I, P, C, Prep, Com>(
    shared: &Arc<Shared<K>>,
    items: impl IntoIterator<Item = I>,
    prepare: Prep,
    mut commit: Com,
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
    // One closure type for every item: the run needs no boxing.
    let jobs: Vec<_> = items
        .into_iter()
        .map(|item| {
            let prepare = Arc::clone(&prepare);
            Some(move |ctx: &TaskContext| prepare(item, ctx))
        })
        .collect();
    let total = jobs.len();
    let window = options.window.unwrap_or(2 * shared.config.max_concurrency());
    let plan = PipelinePlan {
        jobs,
        next: 0,
        committed: 0,
        window,
        prepared: VecDeque::new(),
        taken: 0,
        stopping: false,
        wake: false,
    };
    let timeout = options.timeout.unwrap_or(shared.config.task_timeout());
    let no_keys = Arc::new(Vec::new());
    let engine = Engine::start(
        Arc::clone(shared),
        no_keys,
        plan,
        total.min(window),
        timeout,
        options.cancel.as_ref(),
        false,
    );
    let mut outcomes = Vec::with_capacity(total);
    while outcomes.len() < total {
        let (head, stopping) = {
            let mut state = engine.lock();
            let head = state.plan.take_head();
            (head, state.plan.stopping)
        };
        let Some(prepared) = head else {
            engine.wait();
            continue;
        };
        let index = outcomes.len();
        let outcome = if stopping {
            Outcome::Cancelled
        } else {
            commit_one(&mut commit, index, prepared)
        };
        shared.counters.record(&outcome);
        if options.stop_at_first_commit_failure && !outcome.is_value() && !stopping {
            engine.cancel_running();
        }
        outcomes.push(outcome);
        engine.lock().plan.committed += 1;
        // The window moved: a worker may take the next item.
        engine.notify_workers();
    }
    outcomes
}

fn commit_one<P, C>(commit: &mut impl FnMut(usize, P) -> Result<C>, index: usize, prepared: Outcome<P>) -> Outcome<C> {
    let value = match prepared {
        Outcome::Value(value) => value,
        Outcome::Error(err) => return Outcome::Error(err.context(format!("prepare item {index}"))),
        Outcome::Panicked(message) => return Outcome::Panicked(format!("prepare item {index}: {message}")),
        other => return other.map(|_| unreachable!("values are handled above")),
    };
    match catch_unwind(AssertUnwindSafe(|| commit(index, value))) {
        Ok(Ok(committed)) => Outcome::Value(committed),
        Ok(Err(err)) => Outcome::Error(err.context(format!("commit item {index}"))),
        Err(payload) => Outcome::Panicked(format!("commit item {index}: {}", panic_message(&*payload))),
    }
}

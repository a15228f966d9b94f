//! `run_batch`: keyed tasks, N at a time, one outcome per task in input order.
//!
//! Scheduling is key-aware: a task is handed to a worker only when every
//! earlier task of its key is decided, so a follower never occupies a worker
//! while it waits for its leader. Among the tasks that may run, the earliest
//! in input order goes first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::engine::{Engine, Plan, Refusal};
use crate::pool::outcome::{Outcome, Progress, Task};
use crate::pool::Shared;

/// A callback told of every decided outcome, on the calling thread.
pub type ProgressFn<'a, K, T> = Box<dyn FnMut(Progress<'_, K, T>) + 'a>;

/// Singleflight's copy of a leader's outcome for a follower.
pub(crate) type ShareFn<T> = fn(&Outcome<T>) -> Outcome<T>;

/// Per-batch options: a timeout that overrides the pool's, a cancellation
/// token, a progress callback.
pub struct BatchOptions<'a, K, T> {
    timeout: Option<Option<Duration>>,
    cancel: Option<CancellationToken>,
    progress: Option<ProgressFn<'a, K, T>>,
    poll: Option<(Duration, PollFn<'a>)>,
    bypass_backoff: bool,
}

/// A check the calling thread runs while it waits; `false` cancels the batch.
pub type PollFn<'a> = Box<dyn FnMut() -> bool + 'a>;

impl<K, T> Default for BatchOptions<'_, K, T> {
    fn default() -> Self {
        BatchOptions {
            timeout: None,
            cancel: None,
            progress: None,
            poll: None,
            bypass_backoff: false,
        }
    }
}

impl<'a, K, T> BatchOptions<'a, K, T> {
    /// The pool's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each task of this batch times out after `timeout` (`None`: never).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Cancelling `token` ends the batch at once: tasks not started are
    /// `Cancelled`, running ones are told to stop, reported `Cancelled` and
    /// their threads abandoned.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Calls `keep_going` on the calling thread at least every `interval`
    /// while the batch runs, outside every lock of the pool; once it returns
    /// false the batch is cancelled as by its token (tasks not started are
    /// `Cancelled`, running ones told to stop and abandoned). For a host
    /// that must look at something while it waits (Python's signals).
    pub fn poll_every(mut self, interval: Duration, keep_going: impl FnMut() -> bool + 'a) -> Self {
        self.poll = Some((interval, Box::new(keep_going)));
        self
    }

    /// Runs the tasks of keys paused by the pool's
    /// [`FailureBackoff`](super::FailureBackoff) anyway (an explicit retry).
    /// Their outcomes still count: a success clears the key.
    pub fn bypass_backoff(mut self, bypass: bool) -> Self {
        self.bypass_backoff = bypass;
        self
    }

    /// Calls `progress` for every decided outcome, on the calling thread,
    /// in the order they were decided. It runs outside every lock of the
    /// pool: workers go on meanwhile, and it may call keel, even run another
    /// batch on the same pool.
    pub fn on_progress(mut self, progress: impl FnMut(Progress<'_, K, T>) + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }
}

/// How the tasks of one key chain: `next[i]` is the next task with task
/// `i`'s key, and `first[i]` says whether `i` is the first of its key.
struct KeyChains {
    next: Vec<Option<usize>>,
    first: Vec<bool>,
}

impl KeyChains {
    fn build<K: Hash + Eq>(keys: &[K]) -> Self {
        let mut last_of_key: HashMap<&K, usize> = HashMap::with_capacity(keys.len());
        let mut next = vec![None; keys.len()];
        let mut first = vec![false; keys.len()];
        for (index, key) in keys.iter().enumerate() {
            match last_of_key.insert(key, index) {
                Some(previous) => next[previous] = Some(index),
                None => first[index] = true,
            }
        }
        KeyChains { next, first }
    }

    /// The tasks after `index` with its key, in input order.
    fn followers(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.next[index], move |&i| self.next[i])
    }
}

/// The ready set: leaders are known up front and already sorted, so only
/// released followers need a heap.
#[derive(Default)]
struct Ready {
    leaders: VecDeque<usize>,
    followers: BinaryHeap<Reverse<usize>>,
}

impl Ready {
    fn pop(&mut self) -> Option<usize> {
        match (self.leaders.front(), self.followers.peek()) {
            (Some(&leader), Some(&Reverse(follower))) if follower < leader => self.followers.pop().map(|r| r.0),
            (Some(_), _) => self.leaders.pop_front(),
            (None, _) => self.followers.pop().map(|r| r.0),
        }
    }
}

/// The schedule of one batch, kept under the run's lock.
struct BatchPlan<K, F, T> {
    shared: Arc<Shared<K>>,
    chains: KeyChains,
    /// Each task's closure until it is handed out or decided.
    runs: Vec<Option<F>>,
    outcomes: Vec<Option<Outcome<T>>>,
    decided: usize,
    /// Tasks neither handed out nor decided.
    waiting: usize,
    ready: Ready,
    share: Option<ShareFn<T>>,
    /// Decided indices the caller has not reported yet (only with progress).
    unreported: Option<Vec<usize>>,
    wake: bool,
}

impl<K, F, T> BatchPlan<K, F, T> {
    fn record(&mut self, index: usize, outcome: Outcome<T>) {
        if self.runs[index].take().is_some() {
            self.waiting -= 1;
        }
        self.shared.counters.record(&outcome);
        self.outcomes[index] = Some(outcome);
        self.decided += 1;
        if let Some(unreported) = &mut self.unreported {
            unreported.push(index);
            self.wake = true;
        }
        if self.is_finished() {
            self.wake = true;
        }
    }

    fn is_finished(&self) -> bool {
        self.decided == self.outcomes.len()
    }
}

impl<K, F, T> Plan for BatchPlan<K, F, T>
where
    K: Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    type Task = F;
    type Output = T;

    fn next_task(&mut self, refusal: &mut dyn FnMut(usize) -> Option<Refusal>) -> Option<(usize, bool, F)> {
        while let Some(index) = self.ready.pop() {
            if let Some(refusal) = refusal(index) {
                self.decide(index, refusal.into_outcome());
                continue;
            }
            let run = self.runs[index].take().expect("a ready task has its closure");
            self.waiting -= 1;
            return Some((index, self.chains.first[index], run));
        }
        None
    }

    /// Records the outcome and lets the key's next task go (or, in
    /// singleflight mode, hands the outcome to every follower).
    fn decide(&mut self, index: usize, outcome: Outcome<T>) {
        match self.share {
            Some(share) if self.chains.first[index] => {
                let copies: Vec<_> = self.chains.followers(index).map(|f| (f, share(&outcome))).collect();
                self.record(index, outcome);
                for (follower, copy) in copies {
                    self.record(follower, copy);
                }
            }
            _ => {
                if let Some(next) = self.chains.next[index] {
                    self.ready.followers.push(Reverse(next));
                }
                self.record(index, outcome);
            }
        }
    }

    fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    fn exhausted(&self) -> bool {
        self.waiting == 0
    }

    fn cancel_rest(&mut self) {
        self.ready = Ready::default();
        for index in 0..self.runs.len() {
            if self.runs[index].is_some() {
                self.record(index, Outcome::Cancelled);
            }
        }
    }
}

/// Runs one batch, waiting on the calling thread. `share` is set in
/// singleflight mode: followers do not run and receive `share(leader's outcome)`.
pub(crate) fn run<K, F, T>(
    shared: &Arc<Shared<K>>,
    tasks: impl IntoIterator<Item = Task<K, F>>,
    options: BatchOptions<'_, K, T>,
    share: Option<ShareFn<T>>,
) -> Vec<Outcome<T>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (keys, runs): (Vec<K>, Vec<Option<F>>) = tasks.into_iter().map(|task| (task.key, Some(task.run))).unzip();
    let chains = KeyChains::build(&keys);
    run_plan(shared, keys, chains, runs, options, share)
}

/// Runs tasks without keys: each is first of its own (absent) key.
pub(crate) fn run_unkeyed<K, F, T>(
    shared: &Arc<Shared<K>>,
    tasks: impl IntoIterator<Item = F>,
    options: BatchOptions<'_, K, T>,
) -> Vec<Outcome<T>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let runs: Vec<Option<F>> = tasks.into_iter().map(Some).collect();
    let chains = KeyChains {
        next: vec![None; runs.len()],
        first: vec![true; runs.len()],
    };
    run_plan(shared, Vec::new(), chains, runs, options, None)
}

fn run_plan<K, F, T>(
    shared: &Arc<Shared<K>>,
    keys: Vec<K>,
    chains: KeyChains,
    runs: Vec<Option<F>>,
    options: BatchOptions<'_, K, T>,
    share: Option<ShareFn<T>>,
) -> Vec<Outcome<T>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let total = runs.len();
    let leaders: VecDeque<usize> = (0..total).filter(|&index| chains.first[index]).collect();
    let workers = leaders.len();
    let mut progress = options.progress;
    let mut poll = options.poll;
    let mut next_poll = poll
        .as_ref()
        .and_then(|(interval, _)| Instant::now().checked_add(*interval));
    let plan = BatchPlan {
        shared: Arc::clone(shared),
        chains,
        runs,
        outcomes: std::iter::repeat_with(|| None).take(total).collect(),
        decided: 0,
        waiting: total,
        ready: Ready {
            leaders,
            followers: BinaryHeap::new(),
        },
        share,
        unreported: progress.as_ref().map(|_| Vec::new()),
        wake: false,
    };
    let keys = Arc::new(keys);
    let timeout = options.timeout.unwrap_or(shared.config.task_timeout());
    let engine = Engine::start(
        Arc::clone(shared),
        Arc::clone(&keys),
        plan,
        workers,
        timeout,
        options.cancel.as_ref(),
        options.bypass_backoff,
    );
    // Outcomes already reported to the progress callback, moved out of the
    // plan so the callback runs with the run unlocked: workers keep
    // reporting meanwhile, and the callback may call keel (even run another
    // batch on this pool) without anyone waiting on it.
    let mut reported: Vec<Option<Outcome<T>>> = Vec::new();
    let mut batch: Vec<(usize, usize)> = Vec::new();
    loop {
        let mut state = engine.lock();
        let plan = &mut state.plan;
        if let Some(unreported) = plan.unreported.as_mut() {
            let first_done = plan.decided - unreported.len() + 1;
            batch.extend((first_done..).zip(unreported.drain(..)));
            if reported.is_empty() && !batch.is_empty() {
                reported = std::iter::repeat_with(|| None).take(total).collect();
            }
            for &(_, index) in &batch {
                reported[index] = plan.outcomes[index].take();
            }
        }
        let finished = plan.is_finished();
        let outcomes = if finished {
            std::mem::take(&mut plan.outcomes)
        } else {
            Vec::new()
        };
        drop(state);
        if let Some(progress) = progress.as_mut() {
            for (done, index) in batch.drain(..) {
                progress(Progress {
                    done,
                    total,
                    index,
                    key: keys.get(index),
                    outcome: reported[index].as_ref().expect("reported outcomes are decided"),
                });
            }
        }
        if finished {
            return outcomes
                .into_iter()
                .enumerate()
                .map(|(index, outcome)| {
                    outcome
                        .or_else(|| reported.get_mut(index).and_then(Option::take))
                        .expect("every task is decided")
                })
                .collect();
        }
        if let (Some((interval, keep_going)), Some(due)) = (poll.as_mut(), next_poll) {
            if Instant::now() >= due {
                if !keep_going() {
                    engine.stop();
                    next_poll = None;
                    continue;
                }
                next_poll = Instant::now().checked_add(*interval);
            }
        }
        engine.wait_until(next_poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_chains_link_tasks_of_one_key_in_input_order() {
        let chains = KeyChains::build(&["a", "b", "a", "c", "a", "b"]);
        assert_eq!(chains.first, [true, true, false, true, false, false]);
        assert_eq!(chains.followers(0).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(chains.followers(1).collect::<Vec<_>>(), [5]);
        assert_eq!(chains.followers(3).count(), 0);
    }

    #[test]
    fn released_followers_go_before_later_leaders() {
        let mut ready = Ready {
            leaders: VecDeque::from([3, 5]),
            followers: BinaryHeap::new(),
        };
        ready.followers.push(Reverse(4));
        ready.followers.push(Reverse(1));
        let order: Vec<_> = std::iter::from_fn(|| ready.pop()).collect();
        assert_eq!(order, [1, 3, 4, 5]);
    }
}

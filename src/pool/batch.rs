//! `run_batch`: keyed tasks, N at a time, one outcome per task in input order.
//!
//! Scheduling is key-aware: a task is handed to a worker only when no earlier
//! task of its key is pending or running, so a follower never occupies a slot
//! while it waits for its leader. Among the tasks that may run, the earliest
//! in input order goes first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::pool::context::{CancellationToken, TaskContext};
use crate::pool::engine::{Engine, Event};
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
}

impl<K, T> Default for BatchOptions<'_, K, T> {
    fn default() -> Self {
        BatchOptions {
            timeout: None,
            cancel: None,
            progress: None,
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

    /// Calls `progress` for every decided outcome, on the calling thread.
    pub fn on_progress(mut self, progress: impl FnMut(Progress<'_, K, T>) + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    pub(crate) fn resolved_timeout(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(default)
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

/// Runs one batch on the calling thread. `share` is set in singleflight
/// mode: followers do not run and receive `share(leader's outcome)`.
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
    let keys = Arc::new(keys);
    let timeout = options.resolved_timeout(shared.config.timeout());
    let engine = Engine::new(Arc::clone(shared), Arc::clone(&keys), timeout, options.cancel.as_ref());
    let chains = KeyChains::build(&keys);
    let mut batch = Batch {
        shared,
        keys: &keys,
        chains: &chains,
        runs,
        outcomes: Vec::new(),
        done: 0,
        ready: BinaryHeap::new(),
        share,
        progress: options.progress,
        engine,
    };
    batch.outcomes.resize_with(keys.len(), || None);
    let leaders = (0..keys.len()).filter(|&index| chains.first[index]);
    batch.ready.extend(leaders.map(Reverse));
    batch.drive(options.cancel.as_ref());
    batch
        .outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every task is decided before the batch returns"))
        .collect()
}

struct Batch<'b, 'p, K, F, T> {
    shared: &'b Shared<K>,
    keys: &'b [K],
    chains: &'b KeyChains,
    runs: Vec<Option<F>>,
    outcomes: Vec<Option<Outcome<T>>>,
    done: usize,
    /// Tasks that may start now (no earlier task of their key is undecided),
    /// earliest first.
    ready: BinaryHeap<Reverse<usize>>,
    share: Option<ShareFn<T>>,
    progress: Option<ProgressFn<'p, K, T>>,
    engine: Engine<K, F, T>,
}

impl<K, F, T> Batch<'_, '_, K, F, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: FnOnce(&TaskContext) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn drive(&mut self, cancel: Option<&CancellationToken>) {
        loop {
            if cancel.is_some_and(CancellationToken::is_cancelled) {
                return self.stop();
            }
            self.fill_slots();
            match self.engine.next_event() {
                Some(Event::Finished(index, outcome)) => self.decide(index, outcome),
                Some(Event::Stopped) => return self.stop(),
                None if self.ready.is_empty() => return,
                // Everything ready was refused without running; go on.
                None => {}
            }
        }
    }

    /// Starts ready tasks while slots are free; refusals are decided on the spot.
    fn fill_slots(&mut self) {
        while self.engine.has_slot() {
            let Some(Reverse(index)) = self.ready.pop() else {
                return;
            };
            if let Some(refusal) = self.engine.refusal(index) {
                self.decide(index, Outcome::Refused(refusal));
                continue;
            }
            let run = self.runs[index].take().expect("a task starts once");
            if let Err(err) = self.engine.start(index, self.chains.first[index], run) {
                self.decide(index, Outcome::Error(err));
            }
        }
    }

    /// Records task `index`'s outcome and lets its key's next task go (or,
    /// in singleflight mode, hands the outcome to every follower).
    fn decide(&mut self, index: usize, outcome: Outcome<T>) {
        match self.share {
            Some(share) if self.chains.first[index] => {
                let shared: Vec<_> = self.chains.followers(index).map(|f| (f, share(&outcome))).collect();
                self.record(index, outcome);
                for (follower, copy) in shared {
                    self.runs[follower] = None;
                    self.record(follower, copy);
                }
            }
            _ => {
                if let Some(next) = self.chains.next[index] {
                    self.ready.push(Reverse(next));
                }
                self.record(index, outcome);
            }
        }
    }

    fn record(&mut self, index: usize, outcome: Outcome<T>) {
        self.shared.counters.record(&outcome);
        self.done += 1;
        if let Some(progress) = self.progress.as_mut() {
            progress(Progress {
                done: self.done,
                total: self.keys.len(),
                index,
                key: &self.keys[index],
                outcome: &outcome,
            });
        }
        self.outcomes[index] = Some(outcome);
    }

    /// The batch was cancelled or the pool shut down: running tasks are
    /// abandoned, the rest cancelled without running.
    fn stop(&mut self) {
        for (index, outcome) in self.engine.abandon_all() {
            self.decide(index, outcome);
        }
        for index in 0..self.outcomes.len() {
            if self.outcomes[index].is_none() {
                self.runs[index] = None;
                self.record(index, Outcome::Cancelled);
            }
        }
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
}

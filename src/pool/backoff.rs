//! Per-key failure backoff (OPAL's backoff per dead source).
//!
//! After `n` consecutive failures of a key (an error, a panic or a
//! timeout), tasks of that key are not started until `base * 2^(n-1)`
//! (capped at `max`) has passed since the last failure, on the monotonic
//! clock: they are reported [`Outcome::Skipped`](super::Outcome::Skipped)
//! with the time left. A success clears the key. Within one batch the
//! followers of a failing key are skipped too, so many scopes on one dead
//! source cost one attempt. A batch may bypass it
//! ([`BatchOptions::bypass_backoff`](super::BatchOptions::bypass_backoff)).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::pool::outcome::Outcome;

/// How long a failing key is skipped: `base * 2^(failures - 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBackoff {
    base: Duration,
    max: Duration,
}

impl FailureBackoff {
    /// Skips a key for `base` after one failure, doubling per further
    /// consecutive failure, never more than `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        FailureBackoff {
            base,
            max: max.max(base),
        }
    }

    /// The first pause.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest pause.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The pause after `failures` consecutive failures.
    pub fn pause(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        self.base
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .map_or(self.max, |pause| pause.min(self.max))
    }
}

/// The failing keys of one pool.
pub(crate) struct Backoffs<K> {
    policy: FailureBackoff,
    failing: Mutex<HashMap<K, Failing>>,
}

struct Failing {
    failures: u32,
    until: Instant,
}

/// Past this many failing keys, those whose pause ended long ago are
/// forgotten, so the table cannot grow without bound.
const PRUNE_ABOVE: usize = 1024;

impl<K: Hash + Eq + Clone> Backoffs<K> {
    pub(crate) fn new(policy: FailureBackoff) -> Self {
        Backoffs {
            policy,
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// The time left before `key` may run again, if it is paused.
    pub(crate) fn paused(&self, key: &K) -> Option<(Duration, u32)> {
        let failing = self.failing.lock();
        let entry = failing.get(key)?;
        let left = entry.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some((left, entry.failures))
    }

    /// Counts how a task of `key` ended: a success clears the key, a
    /// failure pauses it longer; other outcomes (refused, cancelled) say
    /// nothing about the key.
    pub(crate) fn record<T>(&self, key: &K, outcome: &Outcome<T>) {
        match outcome {
            Outcome::Value(_) => {
                let mut failing = self.failing.lock();
                if !failing.is_empty() {
                    failing.remove(key);
                }
            }
            Outcome::Error(_) | Outcome::Panicked(_) | Outcome::TimedOut => self.failed(key),
            Outcome::Cancelled | Outcome::Refused(_) | Outcome::Skipped { .. } => {}
        }
    }

    fn failed(&self, key: &K) {
        let now = Instant::now();
        let mut failing = self.failing.lock();
        if failing.len() > PRUNE_ABOVE {
            let forget_before = now.checked_sub(self.policy.max).unwrap_or(now);
            failing.retain(|_, entry| entry.until > forget_before);
        }
        let entry = failing.entry(key.clone()).or_insert(Failing {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.until = now + self.policy.pause(entry.failures);
    }

    /// Keys paused now.
    pub(crate) fn paused_keys(&self) -> usize {
        let now = Instant::now();
        self.failing.lock().values().filter(|entry| entry.until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_per_failure_up_to_the_cap() {
        let policy = FailureBackoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let pauses: Vec<u64> = (1..=5).map(|n| policy.pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        assert_eq!(policy.pause(200), Duration::from_secs(5));
    }
}

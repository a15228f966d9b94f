//! Retries with exponential backoff and jitter, inside a task's own slot.
//!
//! Tasks are `FnOnce`, so the pool cannot rerun one; a task retries its own
//! steps through [`TaskContext::retry`](super::TaskContext::retry), which
//! sleeps on the task's cancellation token, so a timeout or a shutdown ends
//! the backoff at once.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::pool::context::TaskContext;

/// How often and how patiently a failing step is retried.
///
/// Attempt `n` (from 1) that fails with a retryable error is followed by a
/// pause of `initial_backoff * multiplier^(n-1)`, capped at `max_backoff`;
/// with jitter the pause is drawn uniformly from its upper half, so many
/// tasks failing together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// The pause after the first failure.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How much each pause grows.
    pub multiplier: f64,
    /// Randomize each pause within its upper half.
    pub jitter: bool,
    /// Which failures are worth another attempt.
    pub retry_on: fn(&Error) -> bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms doubling up to 5 s, with jitter, on transient kinds.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
            retry_on: is_transient,
        }
    }
}

/// The default retry predicate: I/O failures, timeouts and busy resources.
pub fn is_transient(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Io | ErrorKind::Timeout | ErrorKind::Busy)
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.saturating_sub(1) as i32);
        let pause = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(pause.min(self.max_backoff.as_secs_f64()))
    }

    pub(crate) fn run<T>(&self, ctx: &TaskContext, mut attempt: impl FnMut(&TaskContext) -> Result<T>) -> Result<T> {
        let max_attempts = self.max_attempts.max(1);
        let mut number = 1;
        loop {
            let err = match attempt(ctx) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if number >= max_attempts || !(self.retry_on)(&err) {
                return Err(with_attempts(err, number));
            }
            let pause = self.jittered(self.backoff(number));
            if ctx.remaining().is_some_and(|left| left <= pause) {
                // The deadline would pass during the pause: give up now.
                return Err(with_attempts(err, number));
            }
            ctx.sleep(pause)?;
            number += 1;
        }
    }

    fn jittered(&self, pause: Duration) -> Duration {
        if !self.jitter {
            return pause;
        }
        let half = pause / 2;
        half + half.mul_f64(random_unit())
    }
}

fn with_attempts(err: Error, attempts: u32) -> Error {
    if attempts > 1 {
        err.context(format!("after {attempts} attempts"))
    } else {
        err
    }
}

/// A number in `[0, 1)` from a per-thread xorshift generator; jitter needs
/// spread, not cryptographic quality.
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::context::CancellationToken;

    fn ctx(policy: RetryPolicy) -> TaskContext {
        TaskContext::new(0, true, None, CancellationToken::new(), Some(policy))
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_micros(10),
            max_backoff: Duration::from_micros(40),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(30), Duration::from_secs(5));
        for _ in 0..100 {
            let pause = policy.jittered(Duration::from_millis(100));
            assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
        }
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let mut calls = 0;
        let value = ctx(quick()).retry(|_| {
            calls += 1;
            if calls < 3 {
                Err(Error::busy("not yet"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(value.unwrap(), 3);
    }

    #[test]
    fn permanent_failures_and_exhaustion_stop_retrying() {
        let mut calls = 0;
        let err = ctx(quick())
            .retry(|_| -> Result<()> {
                calls += 1;
                Err(Error::invalid_argument("bad"))
            })
            .unwrap_err();
        assert_eq!((calls, err.kind()), (1, ErrorKind::InvalidArgument));

        let mut calls = 0;
        let err = ctx(quick())
            .retry(|_| -> Result<()> {
                calls += 1;
                Err(Error::busy("still busy"))
            })
            .unwrap_err();
        assert_eq!(calls, 3);
        assert!(err.message().starts_with("after 3 attempts"), "{err}");
    }

    #[test]
    fn a_cancelled_task_stops_backing_off() {
        let context = ctx(RetryPolicy {
            initial_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            ..RetryPolicy::default()
        });
        context.cancellation().cancel();
        let err = context.retry(|_| -> Result<()> { Err(Error::busy("x")) }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
}

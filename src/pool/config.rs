//! How a [`SyncPool`](super::SyncPool) is sized and bounded.

use std::time::Duration;

pub use super::backoff::FailureBackoff;
pub use super::retry::RetryPolicy;
use crate::error::{Error, Result};

/// The limits of a pool. Built with chained `with_*` setters from
/// [`PoolConfig::new`]; each setting is read back by the getter of its name.
///
/// ```
/// use std::time::Duration;
/// use keel::pool::PoolConfig;
///
/// let config = PoolConfig::new(10)
///     .with_task_timeout(Duration::from_secs(30))
///     .with_max_abandoned(64);
/// assert_eq!(config.max_concurrency(), 10);
/// assert_eq!(config.task_timeout(), Some(Duration::from_secs(30)));
/// assert_eq!(PoolConfig::new(0).max_concurrency(), 1); // never a deadlock
/// ```
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub(crate) max_concurrency: usize,
    pub(crate) task_timeout: Option<Duration>,
    /// `None`: no cap.
    pub(crate) max_abandoned: Option<usize>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) backoff: Option<FailureBackoff>,
    pub(crate) name: Option<String>,
}

impl Default for PoolConfig {
    /// Ten at a time (OPAL's default), no timeout, at most 64 abandoned threads.
    fn default() -> Self {
        PoolConfig::new(10)
    }
}

// Not in the C header (which parses this crate for its stats structs):
// keel_pool_options_default gives these to C.
/// cbindgen:ignore
impl PoolConfig {
    /// The default abandoned-thread cap.
    pub const DEFAULT_MAX_ABANDONED: usize = 64;
    /// The largest concurrency limit [`checked`](Self::checked) accepts: one
    /// thread per slot, so more is a mistake, not a wish.
    pub const MAX_CONCURRENCY: usize = 65_536;
}

impl PoolConfig {
    /// At most `max_concurrency` tasks at a time; values below 1 mean 1.
    pub fn new(max_concurrency: usize) -> Self {
        PoolConfig {
            max_concurrency: max_concurrency.max(1),
            task_timeout: None,
            max_abandoned: Some(Self::DEFAULT_MAX_ABANDONED),
            retry: None,
            backoff: None,
            name: None,
        }
    }

    /// Reports a task timed out once it has held its slot this long
    /// (waiting for its key included), and gives the slot to the next task.
    pub fn with_task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// While this many abandoned (timed-out or cancelled, still running)
    /// threads are alive, new tasks are refused instead of started. 0 means
    /// no cap (refusing everything is never what a zero asks for).
    pub fn with_max_abandoned(mut self, cap: usize) -> Self {
        self.max_abandoned = (cap > 0).then_some(cap);
        self
    }

    /// The policy [`TaskContext::retry`](super::TaskContext::retry) applies.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Pauses a key after consecutive failures (off by default): see
    /// [`FailureBackoff`].
    pub fn with_failure_backoff(mut self, backoff: FailureBackoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Names the pool in its stats and events (`"scopes"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The concurrency limit, at least 1.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The per-task timeout, if any.
    pub fn task_timeout(&self) -> Option<Duration> {
        self.task_timeout
    }

    /// The abandoned-thread cap; `None` for no cap.
    pub fn max_abandoned(&self) -> Option<usize> {
        self.max_abandoned
    }

    /// The retry policy, if any.
    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The failure backoff, if any.
    pub fn failure_backoff(&self) -> Option<FailureBackoff> {
        self.backoff
    }

    /// The pool's name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// True once `abandoned` threads reach the cap.
    pub(crate) fn at_abandoned_cap(&self, abandoned: usize) -> bool {
        self.max_abandoned.is_some_and(|cap| abandoned >= cap)
    }

    /// A configuration from the numbers a C or Python host passes, checked:
    /// `max_concurrency` in `0..=MAX_CONCURRENCY` (0 means 1, as for
    /// [`new`](Self::new)) and `max_abandoned >= 0` (0: no cap). Anything
    /// else is [`InvalidArgument`](crate::ErrorKind::InvalidArgument), never
    /// silently clamped.
    pub fn checked(max_concurrency: i64, max_abandoned: i64) -> Result<PoolConfig> {
        let concurrency = usize::try_from(max_concurrency)
            .ok()
            .filter(|&n| n <= Self::MAX_CONCURRENCY)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "max_concurrency {max_concurrency} is out of range: 0..={} (0 means 1)",
                    Self::MAX_CONCURRENCY
                ))
            })?;
        let cap = usize::try_from(max_abandoned).map_err(|_| {
            Error::invalid_argument(format!("max_abandoned {max_abandoned} is negative (0 means no cap)"))
        })?;
        Ok(PoolConfig::new(concurrency).with_max_abandoned(cap))
    }
}

//! How a [`SyncPool`](super::SyncPool) is sized and bounded.

use std::time::Duration;

pub use super::retry::RetryPolicy;

/// The limits of a pool. Built with chained setters from [`PoolConfig::new`].
///
/// ```
/// use std::time::Duration;
/// use keel::pool::PoolConfig;
///
/// let config = PoolConfig::new(10)
///     .task_timeout(Duration::from_secs(30))
///     .max_abandoned(64);
/// assert_eq!(config.concurrency(), 10);
/// assert_eq!(PoolConfig::new(0).concurrency(), 1); // never a deadlock
/// ```
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub(crate) max_concurrency: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) max_abandoned: usize,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) name: Option<String>,
}

impl Default for PoolConfig {
    /// Ten at a time (OPAL's default), no timeout, at most 64 abandoned threads.
    fn default() -> Self {
        PoolConfig::new(10)
    }
}

impl PoolConfig {
    /// The default abandoned-thread cap.
    pub const DEFAULT_MAX_ABANDONED: usize = 64;

    /// At most `max_concurrency` tasks at a time; values below 1 mean 1.
    pub fn new(max_concurrency: usize) -> Self {
        PoolConfig {
            max_concurrency: max_concurrency.max(1),
            task_timeout: None,
            max_abandoned: Self::DEFAULT_MAX_ABANDONED,
            retry: None,
            name: None,
        }
    }

    /// Reports a task timed out once it has held its slot this long
    /// (waiting for its key included), and gives the slot to the next task.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// While this many abandoned (timed-out or cancelled, still running)
    /// threads are alive, new tasks are refused instead of started.
    pub fn max_abandoned(mut self, cap: usize) -> Self {
        self.max_abandoned = cap;
        self
    }

    /// The policy [`TaskContext::retry`](super::TaskContext::retry) applies.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Names the pool in its stats and events (`"scopes"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The pool's name, if it has one.
    pub fn pool_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The concurrency limit, at least 1.
    pub fn concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The per-task timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.task_timeout
    }

    /// The abandoned-thread cap.
    pub fn abandoned_cap(&self) -> usize {
        self.max_abandoned
    }
}

//! What a batch hands in ([`Task`]) and hands back ([`Outcome`], [`Progress`]).

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// One unit of work: the key it serializes on, and the closure to run.
///
/// Tasks of one key never run at the same time; distinct keys run in
/// parallel. Closures built at one place in the source share one type, so a
/// batch of them needs no boxing.
#[derive(Debug, Clone)]
pub struct Task<K, F> {
    /// The resource the task works on (OPAL's source).
    pub key: K,
    /// The work, `FnOnce(&TaskContext) -> keel::Result<T>`.
    pub run: F,
}

impl<K, F> Task<K, F> {
    /// A task running `run` under `key`.
    pub fn new(key: K, run: F) -> Self {
        Task { key, run }
    }
}

/// How one task ended. A batch returns one per task, in input order.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// The task returned `Ok`.
    Value(T),
    /// The task returned `Err`.
    Error(Error),
    /// The task panicked; the panic was caught and this is its message.
    Panicked(String),
    /// The task ran past its timeout. Its thread was abandoned and its key
    /// stays busy until the thread really returns.
    TimedOut,
    /// The task was not run to completion: its batch was cancelled, the pool
    /// shut down, or a pipeline stopped before it.
    Cancelled,
    /// The task was not started: the pool is at its abandoned-thread cap, the
    /// key is still busy with a hung run, or the pool is shut down.
    Refused(Error),
    /// The task was not started: its key failed too often lately and is
    /// paused by the pool's [`FailureBackoff`](super::FailureBackoff) for
    /// `retry_in` more.
    Skipped {
        /// The time left before the key may run again.
        retry_in: Duration,
        /// The key's consecutive failures.
        failures: u32,
    },
}

impl<T> Outcome<T> {
    /// True for [`Outcome::Value`].
    pub fn is_value(&self) -> bool {
        matches!(self, Outcome::Value(_))
    }

    /// The value, if the task returned one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Outcome::Value(value) => Some(value),
            _ => None,
        }
    }

    /// The short name of the variant (`"value"`, `"timed_out"`, ...), as the
    /// C and Python surfaces spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Value(_) => "value",
            Outcome::Error(_) => "error",
            Outcome::Panicked(_) => "panicked",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused(_) => "refused",
            Outcome::Skipped { .. } => "skipped",
        }
    }

    /// The outcome as a `Result`; every non-value becomes a typed error
    /// naming task `index`.
    pub fn into_result(self, index: usize) -> Result<T> {
        match self {
            Outcome::Value(value) => Ok(value),
            Outcome::Error(err) => Err(err),
            Outcome::Panicked(message) => Err(Error::new(
                ErrorKind::Panic,
                format!("task {index} panicked: {message}"),
            )),
            Outcome::TimedOut => Err(Error::timeout(format!("task {index} timed out"))),
            Outcome::Cancelled => Err(Error::cancelled(format!("task {index} was cancelled"))),
            Outcome::Refused(err) => Err(err),
            Outcome::Skipped { retry_in, failures } => Err(Error::busy(format!(
                "task {index} skipped: its key failed {failures} times in a row; retry in {} ms",
                retry_in.as_millis()
            ))),
        }
    }

    /// Maps the value, keeping every other outcome.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Value(value) => Outcome::Value(f(value)),
            Outcome::Error(err) => Outcome::Error(err),
            Outcome::Panicked(message) => Outcome::Panicked(message),
            Outcome::TimedOut => Outcome::TimedOut,
            Outcome::Cancelled => Outcome::Cancelled,
            Outcome::Refused(err) => Outcome::Refused(err),
            Outcome::Skipped { retry_in, failures } => Outcome::Skipped { retry_in, failures },
        }
    }
}

/// One completion, as a progress bar wants it. Handed to the progress
/// callback on the thread that called the batch, in completion order.
#[derive(Debug)]
pub struct Progress<'a, K, T> {
    /// Outcomes decided so far, this one included.
    pub done: usize,
    /// Tasks in the batch.
    pub total: usize,
    /// The task's input index.
    pub index: usize,
    /// The task's key (`None` for [`run_unkeyed`](super::SyncPool::run_unkeyed)).
    pub key: Option<&'a K>,
    /// How it ended.
    pub outcome: &'a Outcome<T>,
}

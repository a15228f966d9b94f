//! What a job handler sees and returns.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::ops::records::JobRecord;

/// A job handler: given the running attempt, returns the JSON result (or
/// an empty string) or the reason it failed. Called on the worker's handler
/// threads, several at once up to the kind's concurrency.
pub type Handler = Arc<dyn Fn(&JobContext) -> HandlerResult + Send + Sync + 'static>;

/// What a handler returns: a JSON result ("" for none) or why it failed.
pub type HandlerResult = std::result::Result<String, HandlerError>;

/// A handler's failure: retried after a backoff when `retryable`, otherwise
/// the job is dead at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying (a timeout, a busy service).
    pub fn retry(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix (a malformed payload): the job is dead.
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for HandlerError {
    /// keel errors are retried: most (busy, timeout, I/O) are transient.
    fn from(err: crate::Error) -> HandlerError {
        HandlerError::retry(err.report().to_string())
    }
}

/// The running attempt handed to a handler.
///
/// Long handlers should check [`should_stop`](JobContext::should_stop) now
/// and then: it turns true when the worker is stopping or this attempt's
/// lease was lost (another worker may be running the job by now, and this
/// attempt's result will be refused). Clones share the flags.
#[derive(Clone)]
pub struct JobContext {
    job: JobRecord,
    stopping: Arc<AtomicBool>,
    lease_lost: Arc<AtomicBool>,
}

impl JobContext {
    pub(crate) fn new(job: JobRecord, stopping: Arc<AtomicBool>, lease_lost: Arc<AtomicBool>) -> JobContext {
        JobContext {
            job,
            stopping,
            lease_lost,
        }
    }

    /// The job as dequeued: id, kind, payload, attempt number, token.
    pub fn job(&self) -> &JobRecord {
        &self.job
    }

    /// The JSON payload.
    pub fn payload(&self) -> &str {
        &self.job.payload
    }

    /// Whether this attempt's lease was lost: a heartbeat was refused (the
    /// job was cancelled, reset or deleted), or a stop released the job.
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::SeqCst)
    }

    /// Whether the handler should wrap up: the worker is stopping or the
    /// lease was lost.
    pub fn should_stop(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || self.lease_lost()
    }
}

//! The worker's completer: stores finished jobs' outcomes several to a
//! commit, the way River's completer does.
//!
//! A slot whose handler returned hands the outcome over and takes its next
//! job at once. Whichever slot finds no flush running becomes the flusher:
//! it stores everything pending in one `finish_many` transaction, and again
//! while more arrived meanwhile, so under load one commit carries the
//! outcomes of every slot that finished during the previous one. A slot
//! exits only after any flush it leads is done, so `stop`'s wait for the
//! slots also waits for every outcome to be stored.
//!
//! Durability: an outcome is durable once its flush commits, shortly after
//! the handler returned; until then the job is still running under its lease
//! (a crash before the commit lets the resetter requeue it, like a crash
//! during the handler). The explicit `Queue` calls are unaffected: each is
//! durable when it returns.

use parking_lot::Mutex;

use super::slots::Shared;
use crate::ops::records::{JobId, Token};
use crate::ops::store::Finish;

/// A finished attempt's outcome, owned until it is stored.
#[derive(Debug, Clone)]
pub(crate) enum Done {
    Complete(String),
    Fail(String, bool),
    Release,
}

impl Done {
    fn as_finish(&self) -> Finish<'_> {
        match self {
            Done::Complete(result) => Finish::Complete { result },
            Done::Fail(error, retryable) => Finish::Fail {
                error,
                retryable: *retryable,
            },
            Done::Release => Finish::Release,
        }
    }
}

#[derive(Default)]
struct Pending {
    outcomes: Vec<(JobId, Token, Done)>,
    flushing: bool,
}

/// Outcomes waiting for a commit, and whether a slot is committing.
#[derive(Default)]
pub(crate) struct Completer {
    pending: Mutex<Pending>,
}

impl Completer {
    /// Queues an outcome; flushes unless another slot already is (it will
    /// pick this one up before it stops flushing).
    pub(super) fn submit(&self, shared: &Shared, id: JobId, token: Token, done: Done) {
        {
            let mut pending = self.pending.lock();
            pending.outcomes.push((id, token, done));
            if pending.flushing {
                return;
            }
            pending.flushing = true;
        }
        self.flush(shared);
    }

    fn flush(&self, shared: &Shared) {
        loop {
            let batch = {
                let mut pending = self.pending.lock();
                if pending.outcomes.is_empty() {
                    pending.flushing = false;
                    return;
                }
                std::mem::take(&mut pending.outcomes)
            };
            let finishes: Vec<(JobId, Token, Finish<'_>)> = batch
                .iter()
                .map(|(id, token, done)| (*id, *token, done.as_finish()))
                .collect();
            match shared.queue.finish_many(&finishes) {
                Ok(results) => {
                    for ((id, _, done), result) in batch.iter().zip(results) {
                        shared.stored(*id, done, result);
                    }
                }
                Err(err) => {
                    for (id, _, done) in &batch {
                        shared.stored(*id, done, Err(err.clone()));
                    }
                }
            }
        }
    }
}

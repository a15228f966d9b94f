//! What a running task knows about itself: its place in the batch, its
//! deadline, and a [`CancellationToken`] it can check or wait on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::pool::config::RetryPolicy;

/// A flag that says "stop", which any number of threads can check or wait on.
///
/// Cancelling is one-way and idempotent. Checking costs one atomic load;
/// waiting costs a channel the first time anyone waits, and nothing spins:
/// a waiter sleeps until the token is cancelled or its wait runs out.
/// Cloning is cheap and shares the flag.
#[derive(Clone, Default)]
pub struct CancellationToken {
    inner: Arc<TokenInner>,
}

#[derive(Default)]
struct TokenInner {
    cancelled: AtomicBool,
    signal: Mutex<Signal>,
}

/// How a cancellation reaches those waiting for it.
#[derive(Default)]
struct Signal {
    /// Made when the first channel waiter arrives; cancelling drops the
    /// sender, which wakes every receiver at once (they see the channel
    /// disconnect).
    channel: Option<(Sender<()>, Receiver<()>)>,
    /// Called once on cancellation, outside the token's lock: waits that
    /// park elsewhere (a lock waiter on its own condition variable) register
    /// here to be woken.
    wakers: Vec<(u64, Arc<dyn Fn() + Send + Sync>)>,
    next_waker: u64,
}

impl CancellationToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token and wakes everyone waiting on it.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let mut signal = self.inner.signal.lock();
        // Dropping the sender disconnects the channel: every waiter wakes.
        signal.channel.take();
        let wakers = std::mem::take(&mut signal.wakers);
        drop(signal);
        // Outside the lock: a waker takes locks of its own.
        for (_, wake) in wakers {
            wake();
        }
    }

    /// Calls `wake` once when the token is cancelled, on the cancelling
    /// thread. `None` (and `wake` is not kept) if it is cancelled already.
    /// Undo with [`forget_waker`](Self::forget_waker).
    pub(crate) fn add_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) -> Option<u64> {
        let mut signal = self.inner.signal.lock();
        if self.is_cancelled() {
            return None;
        }
        let id = signal.next_waker;
        signal.next_waker += 1;
        signal.wakers.push((id, wake));
        Some(id)
    }

    /// Drops the waker `id` registered by [`add_waker`](Self::add_waker).
    pub(crate) fn forget_waker(&self, id: u64) {
        self.inner.signal.lock().wakers.retain(|(waker, _)| *waker != id);
    }

    /// True once [`cancel`](Self::cancel) has been called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until the token is cancelled or `timeout` passes; true if cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match self.receiver().recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => self.is_cancelled(),
            _ => true,
        }
    }

    /// Waits until the token is cancelled.
    pub fn wait(&self) {
        // Nothing is ever sent: recv returns only when the channel disconnects.
        let _ = self.receiver().recv();
    }

    /// A receiver that becomes ready (disconnected) when the token is
    /// cancelled, for use in a `crossbeam_channel::select!`.
    pub fn receiver(&self) -> Receiver<()> {
        let mut signal = self.inner.signal.lock();
        if self.is_cancelled() {
            // Already cancelled: a receiver whose sender is gone is ready now.
            return crossbeam_channel::bounded(0).1;
        }
        let (_, receiver) = signal.channel.get_or_insert_with(|| crossbeam_channel::bounded(0));
        receiver.clone()
    }
}

impl std::fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancellationToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The context handed to every task: whether it is the first of its key in
/// the batch, its deadline, and its cancellation token.
///
/// The token is cancelled when the task times out, when its batch is
/// cancelled, and when the pool shuts down. Threads cannot be killed, so a
/// task that wants to stop early checks [`is_cancelled`](Self::is_cancelled)
/// or [`check`](Self::check) between steps, or waits with
/// [`sleep`](Self::sleep), which wakes on cancellation.
#[derive(Debug)]
pub struct TaskContext {
    index: usize,
    first_of_key: bool,
    deadline: Option<Instant>,
    token: CancellationToken,
    retry: Option<RetryPolicy>,
}

impl TaskContext {
    pub(crate) fn new(
        index: usize,
        first_of_key: bool,
        deadline: Option<Instant>,
        token: CancellationToken,
        retry: Option<RetryPolicy>,
    ) -> Self {
        TaskContext {
            index,
            first_of_key,
            deadline,
            token,
            retry,
        }
    }

    /// The task's position in its batch (its input index).
    pub fn index(&self) -> usize {
        self.index
    }

    /// True for the first task of its key in this batch (OPAL's pass 1: the
    /// one forced fetch per source). Followers run after it has finished.
    pub fn is_first_of_key(&self) -> bool {
        self.first_of_key
    }

    /// When the pool stops waiting for this task, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once past it), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The task's cancellation token.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.token
    }

    /// True once the task has been cancelled (timed out, batch cancelled,
    /// pool shut down).
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// `Ok` while the task should go on; a [`Cancelled`](crate::ErrorKind::Cancelled)
    /// or [`Timeout`](crate::ErrorKind::Timeout) error once it should stop.
    pub fn check(&self) -> Result<()> {
        if self.token.is_cancelled() {
            return Err(Error::cancelled(format!("task {} was cancelled", self.index)));
        }
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(Error::timeout(format!("task {} ran past its deadline", self.index)));
        }
        Ok(())
    }

    /// Sleeps for `duration`, waking early if the task is cancelled; then
    /// [`check`](Self::check)s. Use it for backoff and polling intervals.
    pub fn sleep(&self, duration: Duration) -> Result<()> {
        let duration = match self.remaining() {
            Some(remaining) => duration.min(remaining),
            None => duration,
        };
        self.token.wait_timeout(duration);
        self.check()
    }

    /// Runs `attempt` under the pool's [`RetryPolicy`] (just once if the
    /// pool has none): failures the policy calls transient are retried with
    /// exponential backoff and jitter, as long as the deadline and the
    /// cancellation token allow.
    pub fn retry<T>(&self, attempt: impl FnMut(&TaskContext) -> Result<T>) -> Result<T> {
        match &self.retry {
            Some(policy) => policy.run(self, attempt),
            None => {
                let mut attempt = attempt;
                attempt(self)
            }
        }
    }
}

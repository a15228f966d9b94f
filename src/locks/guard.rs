//! What an acquisition hands back: a [`KeyGuard`] (one key), a
//! [`MultiKeyGuard`] (a set), or a [`LockRequest`] still in the queue.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{WaitCell, WaitEnd};
use super::{LockMode, Place, Registry};
use crate::error::{Error, Result};

/// Holds one key until dropped (or [`release`](KeyGuard::release)d), on any thread.
#[must_use = "the key is released as soon as the guard is dropped"]
pub struct KeyGuard<K, S = RandomState> {
    registry: Arc<Registry<K, S>>,
    place: Place,
}

impl<K, S> KeyGuard<K, S> {
    pub(super) fn new(registry: Arc<Registry<K, S>>, place: Place) -> Self {
        KeyGuard { registry, place }
    }

    /// The mode the key is held in.
    pub fn mode(&self) -> LockMode {
        self.place.mode
    }

    /// Releases the key now (dropping the guard does the same).
    pub fn release(self) {}
}

impl<K, S> Drop for KeyGuard<K, S> {
    fn drop(&mut self) {
        self.registry.release(self.place);
    }
}

impl<K, S> fmt::Debug for KeyGuard<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("mode", &self.place.mode)
            .finish_non_exhaustive()
    }
}

/// Holds several keys, taken in canonical order; releases them all when dropped.
#[must_use = "the keys are released as soon as the guard is dropped"]
pub struct MultiKeyGuard<K, S = RandomState> {
    guards: Vec<KeyGuard<K, S>>,
}

impl<K, S> MultiKeyGuard<K, S> {
    pub(super) fn new(guards: Vec<KeyGuard<K, S>>) -> Self {
        MultiKeyGuard { guards }
    }

    /// How many distinct keys are held.
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// True for a guard over an empty set of keys.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Releases every key now (dropping the guard does the same).
    pub fn release(self) {}
}

/// One key is a set of one: lets a host keep single and multiple holds alike.
impl<K, S> From<KeyGuard<K, S>> for MultiKeyGuard<K, S> {
    fn from(guard: KeyGuard<K, S>) -> Self {
        MultiKeyGuard { guards: vec![guard] }
    }
}

impl<K, S> fmt::Debug for MultiKeyGuard<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiKeyGuard")
            .field("keys", &self.guards.len())
            .finish()
    }
}

/// A place in a key's queue, from [`KeyedLocks::request`](super::KeyedLocks::request).
///
/// It keeps its place while its owner waits in slices with
/// [`wait_timeout`](Self::wait_timeout), so a host can poll for signals
/// between slices without losing its turn. Dropping it (or
/// [`cancel`](Self::cancel)) withdraws it and lets in whoever it blocked; a
/// key granted but not taken yet is released.
#[must_use = "the request is withdrawn as soon as it is dropped"]
pub struct LockRequest<K, S = RandomState> {
    state: RequestState<K, S>,
}

enum RequestState<K, S> {
    /// Granted; the guard waits to be taken.
    Granted(KeyGuard<K, S>),
    Queued {
        registry: Arc<Registry<K, S>>,
        place: Place,
        waiter: u64,
        cell: Arc<WaitCell>,
    },
    /// The guard was taken or the request withdrawn.
    Done,
}

impl<K, S> LockRequest<K, S> {
    pub(super) fn granted(guard: KeyGuard<K, S>) -> Self {
        LockRequest {
            state: RequestState::Granted(guard),
        }
    }

    pub(super) fn queued(registry: Arc<Registry<K, S>>, place: Place, waiter: u64, cell: Arc<WaitCell>) -> Self {
        LockRequest {
            state: RequestState::Queued {
                registry,
                place,
                waiter,
                cell,
            },
        }
    }

    /// The mode asked for.
    pub fn mode(&self) -> Option<LockMode> {
        match &self.state {
            RequestState::Granted(guard) => Some(guard.mode()),
            RequestState::Queued { place, .. } => Some(place.mode),
            RequestState::Done => None,
        }
    }

    /// Waits at most `slice` for the key: `Some(guard)` once granted,
    /// `None` if the slice ran out (the request keeps its place).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if
    /// the guard was taken already.
    pub fn wait_timeout(&mut self, slice: Duration) -> Result<Option<KeyGuard<K, S>>> {
        let deadline = Instant::now().checked_add(slice);
        let granted = match &self.state {
            RequestState::Granted(_) => true,
            RequestState::Queued { cell, .. } => cell.wait(deadline) == WaitEnd::Granted,
            RequestState::Done => return Err(Error::invalid_argument("the lock request's guard was taken already")),
        };
        Ok(granted.then(|| self.take()))
    }

    /// Waits as long as it takes for the key.
    pub fn wait(mut self) -> Result<KeyGuard<K, S>> {
        loop {
            if let Some(guard) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(guard);
            }
        }
    }

    /// Withdraws the request now (dropping it does the same).
    pub fn cancel(self) {}

    fn take(&mut self) -> KeyGuard<K, S> {
        match std::mem::replace(&mut self.state, RequestState::Done) {
            RequestState::Granted(guard) => guard,
            RequestState::Queued { registry, place, .. } => KeyGuard::new(registry, place),
            RequestState::Done => unreachable!("take is called on a granted request"),
        }
    }
}

impl<K, S> Drop for LockRequest<K, S> {
    fn drop(&mut self) {
        if let RequestState::Queued {
            registry,
            place,
            waiter,
            cell,
        } = std::mem::replace(&mut self.state, RequestState::Done)
        {
            if registry.withdraw(place, waiter, &cell) {
                // Granted as it left: give the key to the next in line.
                registry.release(place);
            }
        }
    }
}

impl<K, S> fmt::Debug for LockRequest<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            RequestState::Granted(_) => "granted",
            RequestState::Queued { .. } => "queued",
            RequestState::Done => "done",
        };
        f.debug_struct("LockRequest").field("state", &state).finish()
    }
}

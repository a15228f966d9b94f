//! [`KeyedLocks`]: one lock per key, fair hand-off, and nothing left behind.
//!
//! # Guarantees
//! - While anyone holds or waits for a key, every caller locking that key
//!   contends on the same lock; distinct keys never block each other.
//! - A key has an entry in the registry only while it is held or waited for.
//!   Once the last holder releases it and no one waits, the entry is removed,
//!   so a registry used with ten thousand keys holds zero entries at rest —
//!   the leak of OPAL's `source_id -> lock` map cannot happen here. The
//!   shard tables shrink when mostly empty, so memory is given back too.
//! - Fair: waiters for one key are granted it in arrival order (FIFO). A
//!   writer gets it alone; readers queued together (with no writer between
//!   them) are admitted together. A newcomer never overtakes a waiter, so
//!   neither readers nor writers can starve.
//! - Locks are not reentrant. A thread asking for a key it already holds (or
//!   waits for) gets [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock)
//!   instead of hanging. The holder is the thread that asked.
//! - Guards are `Send`: a guard may be released on another thread than the
//!   one that took it, as C and Python hosts do.
//! - Timed-out, cancelled and refused attempts leave nothing behind: the
//!   waiter leaves the queue, and whoever it was blocking is let in.
//!
//! # Waiting
//! [`lock_with`](KeyedLocks::lock_with) waits with an optional timeout and an
//! optional [`CancellationToken`]: cancelling the token withdraws the waiter
//! at once. [`request`](KeyedLocks::request) queues a [`LockRequest`] that
//! keeps its place while its owner waits in slices (to poll for signals,
//! say); dropping it withdraws it.
//!
//! # Cost
//! An uncontended lock and unlock is one hash of the key and two short
//! critical sections on one of 64 shard mutexes, each with one table
//! lookup: the last few idle entries of a shard are kept for reuse (at most
//! 4 per shard, never counted as entries), so locking a key again finds its
//! entry instead of inserting it. No allocation beyond storing a new key;
//! waiting allocates one small wait cell per waiter.
//!
//! ```
//! use keel::KeyedLocks;
//!
//! let locks: KeyedLocks<String> = KeyedLocks::new();
//! {
//!     let _guard = locks.lock("source-1")?;
//!     // Another thread cannot take it while the guard lives.
//!     std::thread::scope(|s| {
//!         let other = s.spawn(|| locks.try_lock("source-1").map(|g| g.is_none()));
//!         assert!(other.join().unwrap().unwrap());
//!     });
//!     assert_eq!(locks.len(), 1);
//! }
//! assert_eq!(locks.len(), 0); // nothing left behind
//! # Ok::<(), keel::Error>(())
//! ```

mod guard;
mod queue;
mod shard;

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use guard::{KeyGuard, LockRequest, MultiKeyGuard};

use crate::error::{Error, Result};
use crate::events::{micros, Level, Stopwatch};
use crate::pool::CancellationToken;
use queue::{WaitCell, WaitEnd};
use shard::Shard;

const LOG_TARGET: &str = "keel::locks";

const SHARD_COUNT: usize = 64;

/// How a key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// One holder, nobody else.
    Exclusive,
    /// Any number of holders, no exclusive one.
    Shared,
}

impl LockMode {
    /// `"exclusive"` or `"shared"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }
}

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the key is granted.
    Forever,
    /// At most this long; then [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    For(Duration),
    /// Not at all: the key is granted now or the call returns `None`.
    Never,
}

/// A snapshot of a registry's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
// repr(C): the C surface hands this struct out as it is (keel.h names it
// keel_*_stats), so its counters are defined once for every surface.
#[repr(C)]
pub struct LockStats {
    /// Keys with an entry: each is held or waited for.
    pub entries: usize,
    /// Guards alive (a shared key counts each reader).
    pub holders: usize,
    /// Threads waiting for a key.
    pub waiters: usize,
}

/// A registry of per-key locks. Cloning is cheap and shares the registry.
pub struct KeyedLocks<K, S = RandomState> {
    registry: Arc<Registry<K, S>>,
}

pub(crate) struct Registry<K, S> {
    /// Names the registry in error messages (`locks "sources": ...`).
    name: Option<String>,
    hasher: S,
    shards: Box<[Mutex<Shard<K>>]>,
}

/// Where a held key's entry is, for its release.
#[derive(Clone, Copy)]
struct Place {
    hash: u64,
    slot_id: u64,
    holder: u64,
    mode: LockMode,
}

/// The first step of an acquisition, under the shard's lock.
enum Ticket {
    /// The key is held by the caller now.
    Granted(Place),
    /// The key is busy and the caller did not want to wait.
    Busy,
    /// The caller is at the back of the key's queue.
    Queued(Place, u64, Arc<WaitCell>),
}

impl<K, S> Clone for KeyedLocks<K, S> {
    fn clone(&self) -> Self {
        KeyedLocks {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<K: Hash + Eq + Send + 'static> Default for KeyedLocks<K, RandomState> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Send + 'static> KeyedLocks<K, RandomState> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }

    /// An empty registry whose errors name it (`locks "sources": timed out ...`).
    pub fn named(name: impl Into<String>) -> Self {
        Self::build(Some(name.into()), RandomState::new())
    }
}

/// Keys are `Send + 'static` so the registry can be listed in
/// [`stats::gather`](crate::stats::gather) and shared across threads.
impl<K: Hash + Eq + Send + 'static, S: BuildHasher + Send + Sync + 'static> KeyedLocks<K, S> {
    /// An empty registry hashing keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::build(None, hasher)
    }

    fn build(name: Option<String>, hasher: S) -> Self {
        let shards = (0..SHARD_COUNT).map(|_| Mutex::new(Shard::new())).collect();
        let registry = Arc::new(Registry { name, hasher, shards });
        crate::stats::register("locks", &registry);
        KeyedLocks { registry }
    }

    /// The name given to [`named`](KeyedLocks::named), if any.
    pub fn name(&self) -> Option<&str> {
        self.registry.name.as_deref()
    }

    /// Takes `key` exclusively, waiting as long as it takes.
    pub fn lock<Q>(&self, key: &Q) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.lock_with(key, LockMode::Exclusive, None, None)
    }

    /// Takes `key` shared, waiting as long as it takes.
    pub fn lock_shared<Q>(&self, key: &Q) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.lock_with(key, LockMode::Shared, None, None)
    }

    /// Takes `key` in `mode`, waiting at most `timeout`.
    pub fn lock_timeout<Q>(&self, key: &Q, mode: LockMode, timeout: Duration) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.lock_with(key, mode, Some(timeout), None)
    }

    /// Takes `key` in `mode`, waiting at most `timeout` (`None`: as long as
    /// it takes) and until `cancel` is cancelled, whichever comes first.
    ///
    /// # Errors
    /// [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) if this
    /// thread holds or waits for `key` already;
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when `timeout` runs
    /// out; [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) when
    /// `cancel` is cancelled first. Either way the waiter is withdrawn.
    pub fn lock_with<Q>(
        &self,
        key: &Q,
        mode: LockMode,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
    ) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        match self.enqueue(key, mode, true)? {
            Ticket::Granted(place) => Ok(self.guard(place)),
            Ticket::Busy => unreachable!("a waiting acquisition queues"),
            Ticket::Queued(place, waiter, cell) => self.wait_queued(place, waiter, &cell, deadline, cancel),
        }
    }

    /// Takes `key` exclusively if nobody holds or waits for it; `None` if
    /// someone does.
    pub fn try_lock<Q>(&self, key: &Q) -> Result<Option<KeyGuard<K, S>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire(key, LockMode::Exclusive, Wait::Never)
    }

    /// Takes `key` in `mode`, waiting as `wait` allows.
    ///
    /// Returns `Ok(None)` only for [`Wait::Never`] when the key is busy.
    ///
    /// # Errors
    /// As [`lock_with`](Self::lock_with).
    pub fn acquire<Q>(&self, key: &Q, mode: LockMode, wait: Wait) -> Result<Option<KeyGuard<K, S>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match wait {
            Wait::Forever => self.lock_with(key, mode, None, None).map(Some),
            Wait::For(timeout) => self.lock_with(key, mode, Some(timeout), None).map(Some),
            Wait::Never => match self.enqueue(key, mode, false)? {
                Ticket::Granted(place) => Ok(Some(self.guard(place))),
                Ticket::Busy => Ok(None),
                Ticket::Queued(..) => unreachable!("a try does not queue"),
            },
        }
    }

    /// Queues for `key` in `mode` and returns at once with a request that
    /// keeps its place in the queue. Wait for it in slices with
    /// [`LockRequest::wait_timeout`] (polling for signals in between, say);
    /// dropping it withdraws it.
    ///
    /// # Errors
    /// [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) if this
    /// thread holds or waits for `key` already.
    pub fn request<Q>(&self, key: &Q, mode: LockMode) -> Result<LockRequest<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        Ok(match self.enqueue(key, mode, true)? {
            Ticket::Granted(place) => LockRequest::granted(self.guard(place)),
            Ticket::Busy => unreachable!("a waiting request queues"),
            Ticket::Queued(place, waiter, cell) => LockRequest::queued(Arc::clone(&self.registry), place, waiter, cell),
        })
    }

    /// Takes every key of `keys` in `mode`, all or none.
    ///
    /// Keys are taken in their sorted order (duplicates once), so any number
    /// of threads calling `lock_many` on overlapping sets cannot deadlock.
    /// On a timeout or a refusal the keys already taken are released.
    pub fn lock_many<Q>(&self, keys: &[&Q], mode: LockMode, wait: Wait) -> Result<Option<MultiKeyGuard<K, S>>>
    where
        K: Borrow<Q>,
        Q: Hash + Ord + ToOwned<Owned = K> + ?Sized,
    {
        match wait {
            Wait::Never => {
                let mut guards = Vec::with_capacity(keys.len());
                for key in sorted_unique(keys) {
                    match self.acquire(key, mode, Wait::Never)? {
                        Some(guard) => guards.push(guard),
                        None => return Ok(None),
                    }
                }
                Ok(Some(MultiKeyGuard::new(guards)))
            }
            Wait::Forever => self.lock_many_with(keys, mode, None, None).map(Some),
            Wait::For(timeout) => self.lock_many_with(keys, mode, Some(timeout), None).map(Some),
        }
    }

    /// [`lock_many`](Self::lock_many) that waits: at most `timeout` for the
    /// whole set (`None`: as long as it takes), and until `cancel` is
    /// cancelled. Errors as [`lock_with`](Self::lock_with); on any error no
    /// key is held.
    pub fn lock_many_with<Q>(
        &self,
        keys: &[&Q],
        mode: LockMode,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
    ) -> Result<MultiKeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Ord + ToOwned<Owned = K> + ?Sized,
    {
        // One deadline for the whole set, not one per key.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut guards = Vec::with_capacity(keys.len());
        for key in sorted_unique(keys) {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            guards.push(self.lock_with(key, mode, left, cancel)?);
        }
        Ok(MultiKeyGuard::new(guards))
    }

    /// The number of keys with an entry (held or waited for).
    pub fn len(&self) -> usize {
        self.stats().entries
    }

    /// True when no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts entries, holders and waiters, one shard at a time.
    pub fn stats(&self) -> LockStats {
        self.registry.stats()
    }

    /// How many entries the shard tables have room for, all together: what
    /// the registry's memory at rest is proportional to.
    pub fn capacity(&self) -> usize {
        self.registry.shards.iter().map(|shard| shard.lock().capacity()).sum()
    }

    /// Finds or makes the key's entry and takes it, queues for it, or (with
    /// `queue` false) says it is busy.
    fn enqueue<Q>(&self, key: &Q, mode: LockMode, queue: bool) -> Result<Ticket>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.registry.hasher.hash_one(key);
        let holder = thread_token();
        let mut shard = self.registry.shard(hash).lock();
        let slot = shard.find_or_insert(hash, key);
        let place = Place {
            hash,
            slot_id: slot.id,
            holder,
            mode,
        };
        if slot.state.involves(holder) {
            return Err(self.registry.named_error(Error::would_deadlock(
                "this thread already holds the key it is asking for; keel's locks are not reentrant",
            )));
        }
        if slot.state.can_grant_now(mode) {
            slot.state.grant(mode, holder);
            return Ok(Ticket::Granted(place));
        }
        if !queue {
            return Ok(Ticket::Busy);
        }
        let waiter = shard.next_id();
        let cell = shard.slot_mut(hash, place.slot_id).state.enqueue(waiter, mode, holder);
        Ok(Ticket::Queued(place, waiter, cell))
    }

    /// Waits for a queued ticket until it is granted, `deadline` passes or
    /// `cancel` is cancelled; withdraws it unless granted.
    fn wait_queued(
        &self,
        place: Place,
        waiter: u64,
        cell: &Arc<WaitCell>,
        deadline: Option<Instant>,
        cancel: Option<&CancellationToken>,
    ) -> Result<KeyGuard<K, S>> {
        let stopwatch = Stopwatch::start(LOG_TARGET, Level::Debug);
        let waker = cancel.map(|token| {
            let wakes = Arc::clone(cell);
            let id = token.add_waker(Arc::new(move || wakes.cancel()));
            if id.is_none() {
                cell.cancel(); // cancelled before we got here
            }
            (token, id)
        });
        let end = cell.wait(deadline);
        if let Some((token, Some(id))) = waker {
            token.forget_waker(id);
        }
        let end = match end {
            WaitEnd::Granted => WaitEnd::Granted,
            gave_up if self.registry.withdraw(place, waiter, cell) => match gave_up {
                // Granted as the wait ran out: it was in time after all.
                WaitEnd::TimedOut => WaitEnd::Granted,
                _ => {
                    self.registry.release(place);
                    WaitEnd::Cancelled
                }
            },
            gave_up => gave_up,
        };
        if let Some(waited) = stopwatch.elapsed() {
            log::debug!(
                target: LOG_TARGET,
                "lock wait: registry={:?} mode={} waited_us={} outcome={}",
                self.registry.name.as_deref().unwrap_or(""),
                place.mode.as_str(),
                micros(waited),
                end.as_str(),
            );
        }
        match end {
            WaitEnd::Granted => Ok(self.guard(place)),
            WaitEnd::TimedOut => Err(self.registry.named_error(Error::timeout(format!(
                "timed out waiting for a {} lock",
                place.mode.as_str()
            )))),
            WaitEnd::Cancelled => Err(self.registry.named_error(Error::cancelled(format!(
                "the wait for a {} lock was cancelled",
                place.mode.as_str()
            )))),
        }
    }

    fn guard(&self, place: Place) -> KeyGuard<K, S> {
        KeyGuard::new(Arc::clone(&self.registry), place)
    }
}

/// `keys` sorted, each once: the canonical order that keeps `lock_many`
/// callers from deadlocking each other.
fn sorted_unique<'k, Q: Ord + ?Sized>(keys: &[&'k Q]) -> Vec<&'k Q> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}

impl<K, S> Registry<K, S> {
    fn stats(&self) -> LockStats {
        let mut stats = LockStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            // Idle entries kept for reuse are nobody's: not counted.
            for slot in shard.slots().filter(|slot| !slot.state.is_idle()) {
                stats.entries += 1;
                stats.holders += slot.state.holders();
                stats.waiters += slot.state.waiters();
            }
        }
        stats
    }

    fn named_error(&self, err: Error) -> Error {
        match &self.name {
            Some(name) => err.context(format_args!("locks {name:?}")),
            None => err,
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        // Bits 32.. pick the shard: the inner maps use the low bits for their
        // buckets and the top seven for their tags, so neither loses entropy.
        &self.shards[(hash >> 32) as usize % SHARD_COUNT]
    }

    /// Releases a held key and hands it to the head of its queue.
    fn release(&self, place: Place) {
        let mut shard = self.shard(place.hash).lock();
        shard.release_and_remove_if_idle(place.hash, place.slot_id, |state| {
            state.revoke(place.mode, place.holder);
            state.admit();
        });
    }

    /// Takes waiter `waiter` out of the queue. True if it was granted the
    /// key before it could leave: the caller holds it then.
    fn withdraw(&self, place: Place, waiter: u64, cell: &WaitCell) -> bool {
        let mut shard = self.shard(place.hash).lock();
        if cell.is_granted() {
            return true;
        }
        shard.slot_mut(place.hash, place.slot_id).state.withdraw(waiter);
        shard.remove_if_idle(place.hash, place.slot_id);
        false
    }
}

impl<K: Send, S: Send + Sync> crate::stats::StatsSource for Registry<K, S> {
    fn stats_json(&self) -> serde_json::Value {
        crate::stats::entry(serde_json::json!({ "name": self.name }), &self.stats())
    }
}

impl<K, S> std::fmt::Debug for KeyedLocks<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLocks")
            .field("stats", &self.registry.stats())
            .finish()
    }
}

/// A small number naming the current thread, cheaper to read than a `ThreadId`.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|token| *token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::hash::Hasher;

    /// Every key hashes to 7: all keys collide, exercising the `Many` buckets.
    #[derive(Default, Clone)]
    struct Colliding;
    impl BuildHasher for Colliding {
        type Hasher = ConstHasher;
        fn build_hasher(&self) -> ConstHasher {
            ConstHasher
        }
    }
    struct ConstHasher;
    impl Hasher for ConstHasher {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn colliding_keys_stay_distinct_and_are_removed() {
        let locks: KeyedLocks<String, Colliding> = KeyedLocks::with_hasher(Colliding);
        let a = locks.lock("a").unwrap();
        let b = locks.try_lock("b").unwrap().expect("b is a different key");
        assert!(std::thread::scope(|s| s
            .spawn(|| locks.try_lock("a").unwrap().is_none())
            .join()
            .unwrap()));
        assert_eq!(locks.len(), 2);
        drop(a);
        assert_eq!(locks.len(), 1);
        drop(b);
        assert_eq!(locks.len(), 0);
    }

    fn raw_entries<K, S>(locks: &KeyedLocks<K, S>) -> usize {
        locks
            .registry
            .shards
            .iter()
            .map(|shard| shard.lock().slots().count())
            .sum()
    }

    #[test]
    fn idle_entries_kept_for_reuse_are_bounded_and_uncounted() {
        let locks: KeyedLocks<u64> = KeyedLocks::new();
        // A key locked again and again keeps its one entry.
        for _ in 0..10 {
            drop(locks.lock(&7).unwrap());
        }
        assert_eq!((locks.len(), raw_entries(&locks)), (0, 1));
        for key in 0..10_000u64 {
            drop(locks.lock(&key).unwrap());
        }
        assert_eq!(locks.len(), 0);
        assert!(raw_entries(&locks) <= 4 * SHARD_COUNT, "{}", raw_entries(&locks));
    }

    #[test]
    fn reentry_is_refused_not_hung() {
        let locks: KeyedLocks<String> = KeyedLocks::new();
        let _held = locks.lock_shared("k").unwrap();
        let err = locks.lock("k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
        assert_eq!(
            locks.stats(),
            LockStats {
                entries: 1,
                holders: 1,
                waiters: 0
            }
        );
    }
}

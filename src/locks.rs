//! [`KeyedLocks`]: one lock per key, and no entry left behind.
//!
//! # Guarantees
//! - While anyone holds or waits for a key, every caller locking that key
//!   contends on the same lock; distinct keys never block each other.
//! - A key has an entry in the registry only while it is held or waited for.
//!   Once the last holder releases it and no one waits, the entry is removed,
//!   so a registry used with ten thousand keys holds zero entries at rest —
//!   the leak of OPAL's `source_id -> lock` map cannot happen here.
//! - Exclusive and shared modes: readers share, a writer excludes everyone.
//!   Writers are preferred: once a writer waits, new readers queue behind it,
//!   so a stream of readers cannot starve it.
//! - Locks are not reentrant. A thread asking for a key it already holds gets
//!   [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) instead of
//!   hanging. The holder is the thread that acquired the guard.
//! - Guards are `Send`: a guard may be released on another thread than the
//!   one that took it, as C and Python hosts do.
//! - Timed-out and refused attempts leave nothing behind.
//!
//! # Cost
//! An uncontended lock and unlock is one hash of the key, two short critical
//! sections on one of 64 shard mutexes, and no allocation beyond storing the
//! key. Waiting allocates one condition variable per contended key.
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

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::events::{micros, Level, Stopwatch};

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

struct Registry<K, S> {
    /// Names the registry in error messages (`locks "sources": ...`).
    name: Option<String>,
    hasher: S,
    shards: Box<[Mutex<Shard<K>>]>,
}

/// The entries of one shard, by the full 64-bit hash of their key.
struct Shard<K> {
    buckets: HashMap<u64, Bucket<K>, BuildHasherDefault<PrehashedHasher>>,
    next_slot_id: u64,
    /// Keys of removed entries, kept only as buffers: the next new entry
    /// copies its key into one (`clone_into`) instead of allocating.
    spare_keys: Vec<K>,
}

/// How many spare key buffers a shard keeps (see `Shard::spare_keys`).
const SPARE_KEYS_PER_SHARD: usize = 4;

/// The keys sharing one 64-bit hash: nearly always exactly one.
enum Bucket<K> {
    One(Slot<K>),
    Many(Vec<Slot<K>>),
}

struct Slot<K> {
    key: K,
    /// Names this entry for its guards, so release needs neither the key
    /// nor a comparison of keys.
    id: u64,
    state: SlotState,
}

#[derive(Default)]
struct SlotState {
    /// The thread token of the exclusive holder.
    writer: Option<u64>,
    /// The thread tokens of the shared holders (one per guard).
    readers: Vec<u64>,
    waiting_writers: usize,
    waiting_readers: usize,
    /// Made when the first waiter arrives; lives as long as the entry.
    wakeup: Option<Arc<Condvar>>,
}

/// Holds one key until dropped (or [`unlock`](KeyGuard::unlock)ed), on any thread.
#[must_use = "the key is released as soon as the guard is dropped"]
pub struct KeyGuard<K, S = RandomState> {
    registry: Arc<Registry<K, S>>,
    hash: u64,
    slot_id: u64,
    holder: u64,
    mode: LockMode,
}

/// Holds several keys, taken in canonical order; releases them all when dropped.
#[must_use = "the keys are released as soon as the guard is dropped"]
pub struct MultiKeyGuard<K, S = RandomState> {
    guards: Vec<KeyGuard<K, S>>,
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
        self.acquire_waiting(key, LockMode::Exclusive, Wait::Forever)
    }

    /// Takes `key` shared, waiting as long as it takes.
    pub fn lock_shared<Q>(&self, key: &Q) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_waiting(key, LockMode::Shared, Wait::Forever)
    }

    /// Takes `key` in `mode`, waiting at most `timeout`.
    pub fn lock_timeout<Q>(&self, key: &Q, mode: LockMode, timeout: Duration) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_waiting(key, mode, Wait::For(timeout))
    }

    /// Takes `key` exclusively if nobody holds it; `None` if someone does.
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
    /// [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) if this
    /// thread holds `key` already; [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
    /// if a [`Wait::For`] runs out.
    pub fn acquire<Q>(&self, key: &Q, mode: LockMode, wait: Wait) -> Result<Option<KeyGuard<K, S>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let deadline = match wait {
            Wait::Forever => None,
            Wait::For(timeout) => Instant::now().checked_add(timeout),
            Wait::Never => None,
        };
        let hash = self.registry.hasher.hash_one(key);
        let holder = thread_token();
        let mut shard = self.registry.shard(hash).lock();
        let slot = shard.find_or_insert(hash, key);
        let slot_id = slot.id;
        if slot.state.is_held_by(holder) {
            return Err(self.registry.named_error(Error::would_deadlock(
                "this thread already holds the key it is asking for; keel's locks are not reentrant",
            )));
        }
        if slot.state.can_grant(mode) {
            slot.state.grant(mode, holder);
            return Ok(Some(self.guard(hash, slot_id, holder, mode)));
        }
        if wait == Wait::Never {
            return Ok(None);
        }
        let stopwatch = Stopwatch::start(LOG_TARGET, Level::Debug);
        let granted = wait_for_grant(&mut shard, hash, slot_id, mode, holder, deadline);
        drop(shard);
        if let Some(waited) = stopwatch.elapsed() {
            let outcome = if granted.is_ok() { "granted" } else { "timed_out" };
            log::debug!(
                target: LOG_TARGET,
                "lock wait: registry={:?} mode={} waited_us={} outcome={outcome}",
                self.registry.name.as_deref().unwrap_or(""),
                mode.as_str(),
                micros(waited),
            );
        }
        match granted {
            Ok(()) => Ok(Some(self.guard(hash, slot_id, holder, mode))),
            Err(err) => Err(self.registry.named_error(err)),
        }
    }

    fn acquire_waiting<Q>(&self, key: &Q, mode: LockMode, wait: Wait) -> Result<KeyGuard<K, S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let guard = self.acquire(key, mode, wait)?;
        Ok(guard.expect("a waiting acquisition returns a guard or an error"))
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
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        // One deadline for the whole set, not one per key.
        let deadline = match wait {
            Wait::For(timeout) => Instant::now().checked_add(timeout),
            _ => None,
        };
        let mut guards = Vec::with_capacity(keys.len());
        for key in &keys {
            let wait_now = match (wait, deadline) {
                (Wait::For(_), Some(deadline)) => Wait::For(deadline.saturating_duration_since(Instant::now())),
                (other, _) => other,
            };
            match self.acquire(*key, mode, wait_now)? {
                Some(guard) => guards.push(guard),
                None => return Ok(None),
            }
        }
        Ok(Some(MultiKeyGuard { guards }))
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

    fn guard(&self, hash: u64, slot_id: u64, holder: u64, mode: LockMode) -> KeyGuard<K, S> {
        KeyGuard {
            registry: Arc::clone(&self.registry),
            hash,
            slot_id,
            holder,
            mode,
        }
    }
}

/// Waits on the entry's condition variable until `mode` can be granted or the
/// deadline passes. Called with the shard locked; returns with it locked.
fn wait_for_grant<K>(
    shard: &mut MutexGuard<'_, Shard<K>>,
    hash: u64,
    slot_id: u64,
    mode: LockMode,
    holder: u64,
    deadline: Option<Instant>,
) -> Result<()> {
    let wakeup = {
        let state = &mut shard.slot_mut(hash, slot_id).state;
        state.add_waiter(mode);
        Arc::clone(state.wakeup.get_or_insert_with(Default::default))
    };
    loop {
        let timed_out = match deadline {
            Some(deadline) => wakeup.wait_until(shard, deadline).timed_out(),
            None => {
                wakeup.wait(shard);
                false
            }
        };
        // The entry cannot have gone: it had a waiter (us) all along.
        let state = &mut shard.slot_mut(hash, slot_id).state;
        state.remove_waiter(mode);
        if state.can_grant(mode) {
            state.grant(mode, holder);
            return Ok(());
        }
        if timed_out {
            // Readers queued behind a waiting writer may go now that it gave up.
            state.notify_waiters();
            shard.remove_if_idle(hash, slot_id);
            return Err(Error::timeout(format!(
                "timed out waiting for a {} lock",
                mode.as_str()
            )));
        }
        state.add_waiter(mode);
    }
}

impl<K, S> Registry<K, S> {
    fn stats(&self) -> LockStats {
        let mut stats = LockStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for slot in shard.buckets.values().flat_map(Bucket::slots) {
                stats.entries += 1;
                stats.holders += slot.state.readers.len() + usize::from(slot.state.writer.is_some());
                stats.waiters += slot.state.waiting_readers + slot.state.waiting_writers;
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

    fn release(&self, hash: u64, slot_id: u64, holder: u64, mode: LockMode) {
        let mut shard = self.shard(hash).lock();
        let Some(bucket) = shard.buckets.get_mut(&hash) else {
            unreachable!("a held key keeps its entry")
        };
        // The common case, one key for this hash: release and remove with a
        // single lookup, as this is on every unlock's path.
        if let Bucket::One(slot) = bucket {
            slot.state.revoke(mode, holder);
            if slot.state.is_idle() {
                if let Some(Bucket::One(slot)) = shard.buckets.remove(&hash) {
                    shard.keep_spare_key(slot.key);
                }
            } else {
                slot.state.notify_waiters();
            }
            return;
        }
        let state = &mut shard.slot_mut(hash, slot_id).state;
        state.revoke(mode, holder);
        state.notify_waiters();
        shard.remove_if_idle(hash, slot_id);
    }
}

impl<K: Send, S: Send + Sync> crate::stats::StatsSource for Registry<K, S> {
    fn stats_json(&self) -> serde_json::Value {
        crate::stats::entry(serde_json::json!({ "name": self.name }), &self.stats())
    }
}

impl<K> Shard<K> {
    fn new() -> Self {
        Shard {
            buckets: HashMap::default(),
            next_slot_id: 0,
            spare_keys: Vec::new(),
        }
    }

    fn find_or_insert<Q>(&mut self, hash: u64, key: &Q) -> &mut Slot<K>
    where
        K: Borrow<Q>,
        Q: Eq + ToOwned<Owned = K> + ?Sized,
    {
        let id = self.next_slot_id;
        let spare_keys = &mut self.spare_keys;
        let mut new_slot = || Slot {
            key: match spare_keys.pop() {
                Some(mut spare) => {
                    key.clone_into(&mut spare);
                    spare
                }
                None => key.to_owned(),
            },
            id,
            state: SlotState::default(),
        };
        let bucket = self.buckets.entry(hash).or_insert_with(|| Bucket::One(new_slot()));
        let slot = bucket.find_or_push(key, new_slot);
        if slot.id == id {
            self.next_slot_id += 1;
        }
        slot
    }

    fn slot_mut(&mut self, hash: u64, slot_id: u64) -> &mut Slot<K> {
        self.buckets
            .get_mut(&hash)
            .and_then(|bucket| bucket.slots_mut().find(|slot| slot.id == slot_id))
            .expect("a held or awaited key keeps its entry")
    }

    fn keep_spare_key(&mut self, key: K) {
        if self.spare_keys.len() < SPARE_KEYS_PER_SHARD {
            self.spare_keys.push(key);
        }
    }

    fn remove_if_idle(&mut self, hash: u64, slot_id: u64) {
        let Some(bucket) = self.buckets.get_mut(&hash) else {
            return;
        };
        match bucket {
            Bucket::One(slot) if slot.id == slot_id && slot.state.is_idle() => {
                if let Some(Bucket::One(slot)) = self.buckets.remove(&hash) {
                    self.keep_spare_key(slot.key);
                }
            }
            Bucket::One(_) => {}
            Bucket::Many(slots) => {
                slots.retain(|slot| slot.id != slot_id || !slot.state.is_idle());
                if slots.len() == 1 {
                    let last = slots.pop().expect("one slot left");
                    *bucket = Bucket::One(last);
                }
            }
        }
    }
}

impl<K> Bucket<K> {
    fn slots(&self) -> impl Iterator<Item = &Slot<K>> {
        match self {
            Bucket::One(slot) => std::slice::from_ref(slot).iter(),
            Bucket::Many(slots) => slots.iter(),
        }
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot<K>> {
        match self {
            Bucket::One(slot) => std::slice::from_mut(slot).iter_mut(),
            Bucket::Many(slots) => slots.iter_mut(),
        }
    }

    /// The slot of `key`, made with `new_slot` if this 64-bit hash is shared
    /// by a different key (a collision).
    fn find_or_push<Q>(&mut self, key: &Q, new_slot: impl FnOnce() -> Slot<K>) -> &mut Slot<K>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let found = self.slots().position(|slot| slot.key.borrow() == key);
        if let Some(index) = found {
            return self.slots_mut().nth(index).expect("position is in range");
        }
        let slots = match std::mem::replace(self, Bucket::Many(Vec::with_capacity(2))) {
            Bucket::One(only) => vec![only],
            Bucket::Many(slots) => slots,
        };
        *self = Bucket::Many(slots);
        let Bucket::Many(slots) = self else { unreachable!() };
        slots.push(new_slot());
        slots.last_mut().expect("just pushed")
    }
}

impl SlotState {
    fn is_held_by(&self, holder: u64) -> bool {
        self.writer == Some(holder) || self.readers.contains(&holder)
    }

    fn can_grant(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.writer.is_none() && self.readers.is_empty(),
            LockMode::Shared => self.writer.is_none() && self.waiting_writers == 0,
        }
    }

    fn grant(&mut self, mode: LockMode, holder: u64) {
        match mode {
            LockMode::Exclusive => self.writer = Some(holder),
            LockMode::Shared => self.readers.push(holder),
        }
    }

    fn revoke(&mut self, mode: LockMode, holder: u64) {
        match mode {
            LockMode::Exclusive => self.writer = None,
            LockMode::Shared => {
                let index = self.readers.iter().position(|&reader| reader == holder);
                self.readers
                    .swap_remove(index.expect("a shared guard is among the readers"));
            }
        }
    }

    fn add_waiter(&mut self, mode: LockMode) {
        match mode {
            LockMode::Exclusive => self.waiting_writers += 1,
            LockMode::Shared => self.waiting_readers += 1,
        }
    }

    fn remove_waiter(&mut self, mode: LockMode) {
        match mode {
            LockMode::Exclusive => self.waiting_writers -= 1,
            LockMode::Shared => self.waiting_readers -= 1,
        }
    }

    fn notify_waiters(&self) {
        if self.waiting_writers + self.waiting_readers > 0 {
            if let Some(wakeup) = &self.wakeup {
                wakeup.notify_all();
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty() && self.waiting_writers == 0 && self.waiting_readers == 0
    }
}

impl<K, S> KeyGuard<K, S> {
    /// The mode the key is held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Releases the key now (dropping the guard does the same).
    pub fn unlock(self) {}
}

impl<K, S> Drop for KeyGuard<K, S> {
    fn drop(&mut self) {
        self.registry.release(self.hash, self.slot_id, self.holder, self.mode);
    }
}

impl<K, S> fmt::Debug for KeyGuard<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<K, S> MultiKeyGuard<K, S> {
    /// How many distinct keys are held.
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// True for a guard over an empty set of keys.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Releases every key now.
    pub fn unlock(self) {}
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

impl<K, S> fmt::Debug for KeyedLocks<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The inner maps are keyed by a hash computed once per call; hashing it
/// again would only cost time.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

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

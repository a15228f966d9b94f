//! One of the registry's shards: the entries of the keys hashing to it.
//!
//! An entry counts only while its key is held or waited for; the table
//! shrinks when it is mostly empty, so a burst of a million keys leaves
//! neither entries nor their memory behind.
//!
//! The last few entries to go idle stay in the table, uncounted, so a key
//! locked again and again (the common case) finds its entry instead of
//! inserting and removing it on every cycle. At most `IDLE_CACHE` idle
//! entries per shard are kept: a bounded cache, not a leak.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::queue::SlotState;

/// The entries of one shard, by the full 64-bit hash of their key.
pub(super) struct Shard<K> {
    buckets: HashMap<u64, Bucket<K>, BuildHasherDefault<PrehashedHasher>>,
    /// Names entries and waiters, so release and withdrawal need neither
    /// the key nor a comparison of keys.
    next_id: u64,
    /// Keys of removed entries, kept only as buffers: the next new entry
    /// copies its key into one (`clone_into`) instead of allocating.
    spare_keys: Vec<K>,
    /// `(hash, slot id)` of entries that went idle lately, oldest first.
    /// A record may be stale (the entry was reused or removed since); the
    /// latest record of every idle entry is here, so idle entries are at
    /// most `IDLE_CACHE`.
    idle: VecDeque<(u64, u64)>,
}

/// How many idle entries a shard keeps (see `Shard::idle`).
const IDLE_CACHE: usize = 4;

/// How many spare key buffers a shard keeps (see `Shard::spare_keys`).
const SPARE_KEYS_PER_SHARD: usize = 4;

/// A table keeps at least this much room: shrinking below it saves little
/// and would make a shard with a handful of keys rehash often.
const MIN_RETAINED_CAPACITY: usize = 32;

/// The keys sharing one 64-bit hash: nearly always exactly one.
enum Bucket<K> {
    One(Slot<K>),
    Many(Vec<Slot<K>>),
}

pub(super) struct Slot<K> {
    key: K,
    pub(super) id: u64,
    pub(super) state: SlotState,
}

impl<K> Shard<K> {
    pub(super) fn new() -> Self {
        Shard {
            buckets: HashMap::default(),
            next_id: 0,
            spare_keys: Vec::new(),
            idle: VecDeque::with_capacity(IDLE_CACHE + 1),
        }
    }

    /// A fresh id for a waiter.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn find_or_insert<Q>(&mut self, hash: u64, key: &Q) -> &mut Slot<K>
    where
        K: Borrow<Q>,
        Q: Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.next_id += 1;
        let id = self.next_id;
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
        bucket.find_or_push(key, new_slot)
    }

    pub(super) fn slot_mut(&mut self, hash: u64, slot_id: u64) -> &mut Slot<K> {
        self.buckets
            .get_mut(&hash)
            .and_then(|bucket| bucket.slots_mut().find(|slot| slot.id == slot_id))
            .expect("a held or awaited key keeps its entry")
    }

    /// Applies `release` to a held key's state and removes the entry if that
    /// left it idle. The common case, one key for this hash, needs a single
    /// lookup for both, as this is on every unlock's path.
    pub(super) fn release_and_remove_if_idle(&mut self, hash: u64, slot_id: u64, release: impl FnOnce(&mut SlotState)) {
        let Some(bucket) = self.buckets.get_mut(&hash) else {
            unreachable!("a held key keeps its entry")
        };
        if let Bucket::One(slot) = bucket {
            release(&mut slot.state);
            if slot.state.is_idle() {
                let id = slot.id;
                self.cache_idle(hash, id);
            }
            return;
        }
        release(&mut self.slot_mut(hash, slot_id).state);
        self.remove_if_idle(hash, slot_id);
    }

    /// Keeps the idle entry `(hash, id)` for reuse, evicting the oldest
    /// idle entry past the cache's size.
    fn cache_idle(&mut self, hash: u64, id: u64) {
        // A key locked again and again must not evict itself: one record
        // per entry is enough (it is that entry's latest).
        if self.idle.contains(&(hash, id)) {
            return;
        }
        self.idle.push_back((hash, id));
        if self.idle.len() > IDLE_CACHE {
            let (old_hash, old_id) = self.idle.pop_front().expect("the cache is over its size");
            self.remove_if_idle(old_hash, old_id);
        }
    }

    fn keep_spare_key(&mut self, key: K) {
        if self.spare_keys.len() < SPARE_KEYS_PER_SHARD {
            self.spare_keys.push(key);
        }
    }

    pub(super) fn remove_if_idle(&mut self, hash: u64, slot_id: u64) {
        let Some(bucket) = self.buckets.get_mut(&hash) else {
            return;
        };
        match bucket {
            Bucket::One(slot) if slot.id == slot_id && slot.state.is_idle() => {
                if let Some(Bucket::One(slot)) = self.buckets.remove(&hash) {
                    self.keep_spare_key(slot.key);
                }
                self.shrink_if_sparse();
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

    /// Gives memory back once the table is less than an eighth full. It
    /// shrinks to twice what it holds, so it must lose half its entries
    /// again before the next shrink and gain them back before it grows:
    /// each entry pays for its share of a rehash once, whatever the pattern.
    fn shrink_if_sparse(&mut self) {
        let capacity = self.buckets.capacity();
        if capacity > MIN_RETAINED_CAPACITY && self.buckets.len() * 8 < capacity {
            let target = (self.buckets.len() * 2).max(MIN_RETAINED_CAPACITY / 2);
            self.buckets.shrink_to(target);
        }
    }

    /// How many entries the table has room for.
    pub(super) fn capacity(&self) -> usize {
        self.buckets.capacity()
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = &Slot<K>> {
        self.buckets.values().flat_map(Bucket::slots)
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

/// The inner maps are keyed by a hash computed once per call; hashing it
/// again would only cost time.
#[derive(Default)]
pub(super) struct PrehashedHasher(u64);

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

//! One place to read every live keel object's counters.
//!
//! Each part registers its objects here when they are made (a weak
//! reference: registering never keeps anything alive) and [`gather`] reads
//! them all into one JSON document, grouped by part:
//!
//! ```json
//! {"locks": [{"name": "sources", "entries": 0, "holders": 0, "waiters": 0}],
//!  "pool": [...], "journal": [...], "drive": [...], "queue": [...],
//!  "operations": [...], "workers": [...]}
//! ```
//!
//! Each entry is the object's identity (`name`, `path`, `root`, `store` or
//! `worker`, and for a pool its `max_concurrency`) followed by the fields of
//! the part's stats struct ([`LockStats`](crate::LockStats),
//! [`PoolStats`](crate::pool::PoolStats),
//! [`JournalStats`](crate::journal::JournalStats),
//! [`EnvStats`](crate::lmdb::EnvStats),
//! [`WorkerStats`](crate::ops::WorkerStats)), serialized by [`entry`]: the
//! same structs the parts' `stats()` methods return and the Python and C
//! surfaces serialize, so the keys cannot drift apart. The fields per part:
//! - `locks`: `entries`, `holders`, `waiters`;
//! - `pool`: `in_flight`, `peak_concurrency`, `abandoned`, `timed_out`, ...;
//! - `journal`: `mutations`, `committed`, `rolled_back`, `recoveries`,
//!   `recovered`, `quarantined`, `fsyncs`, `bytes_written`, ...;
//! - `drive`: `map_size`, `used`, `readers`, `batches` (commits), `writes`,
//!   `largest_batch`, `queued_writes`, ...;
//! - `queue`: `counts` (kind → state → jobs) and `oldest_ready_age_ms`
//!   (kind → how long its longest-ready job has waited);
//! - `operations`: `claims`, `claimed`, `updates`, `conflicts`;
//! - `workers`: a worker's `running`, `completed`, `failed`, `timed_out`, ...
//!
//! Each snapshot is cheap (counters and gauges, no scan of stored data; a
//! queue reads its per-kind counts table and one index entry per priority in
//! use), so a host can export `gather()` to its metrics system on every
//! scrape.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

/// Something with counters to report.
pub trait StatsSource: Send + Sync {
    /// The counters now, as a JSON object.
    fn stats_json(&self) -> Value;
}

/// One object's entry: its `identity` fields (a JSON object) followed by
/// every field of its `stats` struct.
pub fn entry(identity: Value, stats: &impl Serialize) -> Value {
    let mut fields = match identity {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    // A stats struct always serializes to an object; anything else is a bug
    // in its derive, shown rather than hidden.
    match serde_json::to_value(stats) {
        Ok(Value::Object(counters)) => fields.extend(counters),
        other => {
            fields.insert(
                "error".to_owned(),
                format!("stats did not serialize to an object: {other:?}").into(),
            );
        }
    }
    Value::Object(fields)
}

struct Entry {
    part: &'static str,
    source: Weak<dyn StatsSource>,
}

static SOURCES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Lists `source` under `part` for as long as it lives.
pub fn register<T: StatsSource + 'static>(part: &'static str, source: &Arc<T>) {
    let weak: Weak<dyn StatsSource> = Arc::downgrade(source) as Weak<dyn StatsSource>;
    let mut sources = SOURCES.lock();
    // Dropped objects leave dead entries: sweep them here, so the list is
    // bounded by the live objects rather than by every object ever made.
    sources.retain(|entry| entry.source.strong_count() > 0);
    sources.push(Entry { part, source: weak });
}

/// Every live object's counters, grouped by part.
///
/// A snapshot holds each object while it reads it: an object whose last
/// owner drops it during a snapshot is freed when that snapshot returns.
pub fn gather() -> Value {
    let live: Vec<(&'static str, Arc<dyn StatsSource>)> = SOURCES
        .lock()
        .iter()
        .filter_map(|entry| entry.source.upgrade().map(|source| (entry.part, source)))
        .collect();
    // Read outside the list's lock: a snapshot may take a part's own locks.
    let mut parts = Map::new();
    for (part, source) in live {
        let list = parts.entry(part).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(source.stats_json());
        }
    }
    Value::Object(parts)
}

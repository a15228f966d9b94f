//! A queue's entry in [`keel::stats`](crate::stats): its job counts per
//! kind and state, and per kind how long the longest-ready job has waited.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::ops::clock::Clock;
use crate::ops::records::JobState;
use crate::ops::store::JobStore;

/// Reads a queue's counters for `stats::gather`; lives as long as the
/// queue's clones. Cost per snapshot: the per-kind counts table and a few
/// index seeks per kind with ready jobs, never a scan of the jobs.
pub(crate) struct QueueStats {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl crate::stats::StatsSource for QueueStats {
    fn stats_json(&self) -> Value {
        let now = self.clock.now();
        let mut counts: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut ready_kinds = Vec::new();
        let listed = self.store.counts();
        for entry in listed.iter().flatten() {
            if matches!(entry.state, JobState::Queued | JobState::Retrying) && !ready_kinds.contains(&entry.kind) {
                ready_kinds.push(entry.kind.clone());
            }
            counts
                .entry(entry.kind.clone())
                .or_default()
                .insert(entry.state.name().to_owned(), entry.count.into());
        }
        let mut oldest = Map::new();
        for kind in ready_kinds {
            if let Ok(Some(run_at)) = self.store.oldest_ready(&kind, now) {
                oldest.insert(kind, now.saturating_sub(run_at).into());
            }
        }
        json!({
            "store": self.store.location(),
            "counts": counts,
            "oldest_ready_age_ms": oldest,
            "error": listed.err().map(|err| err.report().to_string()),
        })
    }
}

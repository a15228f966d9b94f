//! The journal's counters (for `keel::stats::gather` and `Journal::stats`)
//! and its events, logged under the target `keel::journal`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::events::{micros, Level, Stopwatch};

pub(crate) const LOG_TARGET: &str = "keel::journal";

/// What one journal handle (and its clones) has done so far.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) committed: AtomicU64,
    pub(crate) rolled_back: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) recovery_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Starts timing a mutation's end, if its event is on.
pub(crate) fn stopwatch() -> Stopwatch {
    Stopwatch::start(LOG_TARGET, Level::Info)
}

/// `mutation committed: seq=.. operation=.. entries=.. elapsed_us=..` and the
/// rollback counterpart.
pub(crate) fn mutation_ended(what: &str, seq: u64, operation: &str, entries: usize, elapsed: Option<Duration>) {
    if let Some(elapsed) = elapsed {
        log::info!(
            target: LOG_TARGET,
            "mutation {what}: seq={seq} operation={operation:?} entries={entries} elapsed_us={}",
            micros(elapsed)
        );
    }
}

/// Counts a recovery's outcome and logs what it did (a warning: a crash
/// happened) or why it failed (an error: mutations are refused).
pub(crate) fn recovery_ended(counters: &Counters, root: &str, result: &crate::Result<super::RecoveryReport>) {
    match result {
        Ok(report) => {
            Counters::add(&counters.recovered, report.rolled_back.len() as u64);
            Counters::add(&counters.quarantined, report.quarantined.len() as u64);
            if report.rolled_back.len() + report.quarantined.len() + report.reaped > 0 {
                let quarantined: Vec<_> = report.quarantined.iter().map(|q| (&q.name, &q.reason)).collect();
                log::warn!(
                    target: LOG_TARGET,
                    "recovered: root={root:?} rolled_back={:?} discarded={:?} quarantined={quarantined:?} reaped={}",
                    report.rolled_back,
                    report.discarded,
                    report.reaped
                );
            }
        }
        Err(err) => {
            Counters::add(&counters.recovery_failures, 1);
            log::error!(target: LOG_TARGET, "recovery failed: root={root:?} error={err}");
        }
    }
}

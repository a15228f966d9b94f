//! The journal's counters (for `keel::stats::gather` and `Journal::stats`)
//! and its events, logged under the target `keel::journal`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::fs::{Fs, Io};
use crate::events::{micros, Level, Stopwatch};

pub(crate) const LOG_TARGET: &str = "keel::journal";

/// What one journal handle (and its clones) has done so far.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Mutations begun.
    pub(crate) begun: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) rolled_back: AtomicU64,
    pub(crate) recovered: AtomicU64,
    /// Recoveries that finished (whether or not they found anything).
    pub(crate) recoveries: AtomicU64,
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

/// Times one journal step and counts its I/O, only if its event is on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepWatch {
    clock: Stopwatch,
    io: Io,
}

impl StepWatch {
    /// Starts watching a step whose event is logged at `level`.
    pub(crate) fn start(fs: &Fs, level: Level) -> StepWatch {
        let clock = Stopwatch::start(LOG_TARGET, level);
        let io = if clock.elapsed().is_some() {
            fs.io()
        } else {
            Io::default()
        };
        StepWatch { clock, io }
    }

    /// The step's duration and I/O so far, or `None` when its event is off.
    pub(crate) fn read(&self, fs: &Fs) -> Option<(u128, Io)> {
        let elapsed = self.clock.elapsed()?;
        Some((micros(elapsed), fs.io().since(self.io)))
    }
}

/// `mutation committed: seq=.. operation=.. entries=.. files=.. bytes=..
/// links=.. fsyncs=.. elapsed_us=.. total_us=..` (and the rollback
/// counterpart): the I/O and `total_us` cover the whole mutation,
/// `elapsed_us` the commit (or rollback) itself.
pub(crate) fn mutation_ended(
    what: &str,
    seq: u64,
    operation: &str,
    entries: usize,
    step: Option<u128>,
    whole: Option<(u128, Io)>,
) {
    if let (Some(elapsed), Some((total, io))) = (step, whole) {
        log::debug!(
            target: LOG_TARGET,
            "mutation {what}: seq={seq} operation={operation:?} entries={entries} {io} elapsed_us={elapsed} total_us={total}"
        );
    }
}

/// Counts a recovery's outcome and logs it: an info event when it rolled
/// back or cleaned up what a crash left, a warning per quarantined record,
/// an error when it failed (mutations are then refused); a debug event when
/// there was nothing to do.
pub(crate) fn recovery_ended(
    counters: &Counters,
    root: &str,
    result: &crate::Result<super::RecoveryReport>,
    watch: Option<(u128, Io)>,
) {
    let Ok(report) = result else {
        Counters::add(&counters.recovery_failures, 1);
        if let Err(err) = result {
            log::error!(target: LOG_TARGET, "recovery failed: root={root:?} error={}", err.report());
        }
        return;
    };
    Counters::add(&counters.recoveries, 1);
    Counters::add(&counters.recovered, report.rolled_back.len() as u64);
    Counters::add(&counters.quarantined, report.quarantined.len() as u64);
    for quarantined in &report.quarantined {
        log::warn!(
            target: LOG_TARGET,
            "record quarantined: root={root:?} record={:?} folder={:?} reason={:?}",
            quarantined.name,
            quarantined.folder,
            quarantined.reason
        );
    }
    let (elapsed, io) = watch.unwrap_or_default();
    if report.rolled_back.len() + report.discarded.len() + report.quarantined.len() + report.reaped > 0 {
        log::info!(
            target: LOG_TARGET,
            "recovery ran: root={root:?} rolled_back={:?} discarded={:?} quarantined={} reaped={} {io} elapsed_us={elapsed}",
            report.rolled_back,
            report.discarded,
            report.quarantined.len(),
            report.reaped
        );
    } else if watch.is_some() {
        log::debug!(target: LOG_TARGET, "recovery checked: root={root:?} nothing_to_do=true elapsed_us={elapsed}");
    }
}

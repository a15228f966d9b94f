//! Structured events with timings, through the [`log`] facade.
//!
//! Every part logs under the target `keel::<part>` (`keel::locks`,
//! `keel::pool`, `keel::journal`, `keel::drive`, `keel::lmdb`, `keel::ops`),
//! one event per meaningful step, its fields as `key=value` pairs after a
//! short phrase: `lock wait: mode=exclusive waited_us=1530 outcome=granted`.
//!
//! Levels say how often and how bad:
//! - `Trace`: every drive read;
//! - `Debug`: one event per meaningful step, with its duration (`*_us`) —
//!   lock waits, pool tasks started and finished, journal snapshots,
//!   publishes, commits and rollbacks (with files, bytes, links and fsyncs),
//!   drive write transactions, LMDB group-commit batches (writes, queue wait,
//!   commit time including the fsync), job enqueues, claims, finishes and
//!   scheduled retries, operation claims and updates;
//! - `Info`: rare, notable steps — a recovery that found something, a map
//!   that grew, a worker started or stopped, an operator's job retry;
//! - `Warn`: trouble keel handled — a task timed out or abandoned, a journal
//!   record quarantined, expired leases reset, a job dead;
//! - `Error`: what keel could not handle — a failed recovery or rollback.
//!
//! Nothing is timed or formatted when the level is off: a [`Stopwatch`] reads
//! the clock only if its event would be logged, and the `log` macros check the
//! level before formatting (`benches/events.rs` measures what remains: one
//! atomic load per event site). Events are logged after keel's own locks are
//! released where the step allows, since a C log callback may call into keel.

use std::time::{Duration, Instant};

pub use log::Level;

/// The targets keel logs under, one per part.
pub const TARGETS: [&str; 6] = [
    "keel::locks",
    "keel::pool",
    "keel::journal",
    "keel::drive",
    "keel::lmdb",
    "keel::ops",
];

/// Measures a step only when its event will be logged.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Option<Instant>);

impl Stopwatch {
    /// Starts timing if an event at `level` for `target` would be logged.
    #[inline]
    pub fn start(target: &str, level: Level) -> Stopwatch {
        Stopwatch(log::log_enabled!(target: target, level).then(Instant::now))
    }

    /// The time since `start`, or `None` when the event is off.
    #[inline]
    pub fn elapsed(&self) -> Option<Duration> {
        self.0.map(|started| started.elapsed())
    }
}

/// Microseconds, the unit of every `*_us` field.
pub fn micros(duration: Duration) -> u128 {
    duration.as_micros()
}

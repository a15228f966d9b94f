//! Structured events with timings, through the [`log`] facade.
//!
//! Every part logs under the target `keel::<part>` (`keel::locks`,
//! `keel::pool`, `keel::journal`, `keel::drive`, `keel::lmdb`, `keel::ops`),
//! one event per meaningful step, its fields as `key=value` pairs after a
//! short phrase: `lock wait: mode=exclusive waited_us=1530 outcome=granted`.
//!
//! Nothing is timed or formatted when the level is off: a [`Stopwatch`] reads
//! the clock only if its event would be logged, and the `log` macros check the
//! level before formatting.

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

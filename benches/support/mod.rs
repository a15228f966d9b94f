//! One reporting convention for every benchmark, so verdicts compare.
//!
//! - A **ratio** is always keel's speed over the baseline's speed (throughput
//!   over throughput, or baseline time over keel time): above 1 means keel is
//!   faster. A target "keel at most 3x the baseline's cost" is written as
//!   [`Target::AtLeast`]`(1.0 / 3.0)`.
//! - Rounds interleave keel and the baseline (ABAB...), so a drifting machine
//!   moves both; the ratio is the median of per-round ratios, with its spread
//!   (min..max) over at least three rounds.
//! - Each row prints its target and `met` / `NOT MET`.
//!
//! Included by each bench with `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// What a row must reach; the ratio is keel's speed over the baseline's.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// A row that is reported only.
    None,
}

impl Target {
    fn verdict(self, ratio: f64) -> String {
        match self {
            Target::AtLeast(floor) if ratio >= floor => format!("target >= {floor:.2}: met"),
            Target::AtLeast(floor) => format!("target >= {floor:.2}: NOT MET"),
            Target::None => String::new(),
        }
    }
}

/// Median, min and max of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        assert!(!samples.is_empty(), "a spread needs at least one sample");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 0 {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Per-round costs (any unit where lower is better, e.g. ns/op) of the
/// baseline and of keel, measured interleaved.
#[derive(Default, Debug)]
pub struct Rounds {
    pub baseline: Vec<f64>,
    pub keel: Vec<f64>,
}

impl Rounds {
    /// Runs `rounds` interleaved rounds; each closure returns its cost.
    pub fn run(rounds: usize, mut baseline: impl FnMut() -> f64, mut keel: impl FnMut() -> f64) -> Rounds {
        let mut out = Rounds::default();
        for _ in 0..rounds {
            out.baseline.push(baseline());
            out.keel.push(keel());
        }
        out
    }

    /// Per-round ratios, keel's speed over the baseline's (cost over cost).
    pub fn ratios(&self) -> Vec<f64> {
        self.baseline.iter().zip(&self.keel).map(|(b, k)| b / k).collect()
    }

    /// Prints one row: both costs (median and spread), the ratio, the verdict.
    pub fn report(&self, name: &str, unit: &str, target: Target) {
        report_row(
            name,
            unit,
            Spread::of(&self.baseline),
            Spread::of(&self.keel),
            &self.ratios(),
            target,
        );
    }
}

/// Prints one row from costs already measured.
pub fn report_row(name: &str, unit: &str, baseline: Spread, keel: Spread, ratios: &[f64], target: Target) {
    let ratio = Spread::of(ratios);
    println!(
        "{name:<40} baseline {:>10.1} {unit} ({:.1}..{:.1})  keel {:>10.1} {unit} ({:.1}..{:.1})  ratio {:>5.2} ({:.2}..{:.2})  {}",
        baseline.median,
        baseline.min,
        baseline.max,
        keel.median,
        keel.min,
        keel.max,
        ratio.median,
        ratio.min,
        ratio.max,
        target.verdict(ratio.median)
    );
}

/// Nanoseconds per operation of `ops` operations timed by `run`.
pub fn ns_per_op(ops: usize, run: impl FnOnce() -> Duration) -> f64 {
    run().as_nanos() as f64 / ops as f64
}

/// Times `body`.
pub fn timed(body: impl FnOnce()) -> Duration {
    let start = Instant::now();
    body();
    start.elapsed()
}

/// The header line every bench prints first.
pub fn header(title: &str) {
    println!("{title}");
    println!(
        "ratio = keel's speed / the baseline's (above 1: keel is faster); median (min..max) of interleaved rounds"
    );
}

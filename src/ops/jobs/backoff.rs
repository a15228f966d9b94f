//! Retry delays: exponential in the number of failures, capped, with jitter
//! so jobs that failed together do not retry together.

use std::time::Duration;

use crate::ops::clock::{millis, Millis};

/// How long a failed job waits before its next attempt.
///
/// The delay after failure `n` (1-based) is `base * 2^(n-1)`, capped at
/// `max`, then shortened by a random fraction of at most `jitter` (0..=1/3).
/// Keeping the jitter below a third means the delays still strictly grow
/// until the cap: the shortest possible delay `n+1` (`2d * (1 - 1/3)`) is
/// longer than the longest delay `n` (`d`). The randomness is derived from
/// the job id and failure count, so it differs across jobs yet a test can
/// predict it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The largest fraction the jitter may take off a delay (0 to 1/3).
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 1 hour, up to 25 % jitter.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.25,
        }
    }
}

/// The largest jitter that keeps delays strictly growing.
pub const MAX_JITTER: f64 = 1.0 / 3.0;

impl Backoff {
    /// The delay in milliseconds after failure number `failures` (1-based) of
    /// job `job_id`.
    pub fn delay(&self, job_id: u64, failures: u32) -> Millis {
        let exponent = failures.saturating_sub(1).min(62);
        let full = millis(self.base).saturating_mul(1u64 << exponent).min(millis(self.max));
        let jitter = self.jitter.clamp(0.0, MAX_JITTER);
        let fraction = unit_interval(splitmix64(job_id ^ (u64::from(failures) << 48)));
        let cut = (full as f64 * jitter * fraction) as Millis;
        full - cut.min(full)
    }
}

/// A well-mixed 64-bit hash of `seed` (SplitMix64's finalizer).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `bits` as a number in `[0, 1)`.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(1_000),
            max: Duration::from_secs(60),
            jitter: 0.25,
        }
    }

    #[test]
    fn delays_grow_strictly_until_the_cap_for_every_job() {
        for job in 0..500 {
            let delays: Vec<Millis> = (1..=6).map(|n| backoff().delay(job, n)).collect();
            for pair in delays.windows(2) {
                assert!(pair[1] > pair[0], "job {job}: {delays:?} does not grow");
            }
        }
    }

    #[test]
    fn delays_stay_within_jitter_of_the_exponential_and_under_the_cap() {
        for job in 0..500 {
            for n in 1..=20 {
                let full = (1_000u64 << (n - 1).min(62)).min(60_000);
                let delay = backoff().delay(job, n);
                assert!(delay <= full, "job {job} failure {n}: {delay} > {full}");
                assert!(delay as f64 >= full as f64 * 0.75, "job {job} failure {n}: {delay}");
            }
        }
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together() {
        let delays: std::collections::HashSet<Millis> = (0..100).map(|job| backoff().delay(job, 3)).collect();
        assert!(delays.len() > 50, "only {} distinct delays", delays.len());
    }

    #[test]
    fn a_huge_failure_count_saturates_at_the_cap() {
        assert!(backoff().delay(7, u32::MAX) <= 60_000);
        let no_jitter = Backoff {
            jitter: 0.0,
            ..backoff()
        };
        assert_eq!(no_jitter.delay(7, u32::MAX), 60_000);
        assert_eq!(no_jitter.delay(7, 1), 1_000);
    }
}

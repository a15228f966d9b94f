//! SyncPool's per-key failure backoff: a failing key is paused, doubling
//! per consecutive failure, cleared by a success, bypassable on request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::pool::{BatchOptions, FailureBackoff, Outcome, PoolConfig, SyncPool, Task, TaskContext};
use keel::{Error, ErrorKind};

const HOUR: Duration = Duration::from_secs(3600);

/// A pool whose failing keys pause for an hour, then two, ... at most four.
fn pool() -> SyncPool<&'static str> {
    SyncPool::new(PoolConfig::new(4).with_failure_backoff(FailureBackoff::new(HOUR, 4 * HOUR)))
}

/// Tasks of `keys`; a task of "dead" fails, any other returns its key.
/// `attempts` counts the tasks that ran.
fn tasks(
    keys: &[&'static str],
    attempts: &Arc<AtomicUsize>,
) -> Vec<Task<&'static str, impl FnOnce(&TaskContext) -> keel::Result<&'static str> + Send + 'static>> {
    keys.iter()
        .map(|&key| {
            let attempts = Arc::clone(attempts);
            Task::new(key, move |_: &TaskContext| {
                attempts.fetch_add(1, Ordering::SeqCst);
                if key == "dead" {
                    Err(Error::io("fetch", std::io::Error::other("unreachable")))
                } else {
                    Ok(key)
                }
            })
        })
        .collect()
}

fn retry_in<T>(outcome: &Outcome<T>) -> Duration {
    match outcome {
        Outcome::Skipped { retry_in, .. } => *retry_in,
        other => panic!("expected a skip, got {}", other.name()),
    }
}

#[test]
fn duplicates_of_a_failing_key_in_one_batch_cost_one_attempt() {
    let pool = pool();
    let attempts = Arc::new(AtomicUsize::new(0));
    let outcomes = pool.run_batch(tasks(&["dead", "live", "dead", "dead"], &attempts));
    assert!(matches!(outcomes[0], Outcome::Error(_)));
    assert_eq!(outcomes[1].value(), Some(&"live"));
    assert!(retry_in(&outcomes[2]) <= HOUR && retry_in(&outcomes[3]) > Duration::ZERO);
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "one attempt for dead, one for live");
    let stats = pool.stats();
    assert_eq!((stats.skipped, stats.paused_keys), (2, 1));
}

#[test]
fn a_paused_key_is_skipped_in_later_batches_with_the_time_left() {
    let pool = pool();
    let attempts = Arc::new(AtomicUsize::new(0));
    pool.run_batch(tasks(&["dead"], &attempts));
    let outcomes = pool.run_batch(tasks(&["dead", "live"], &attempts));
    let left = retry_in(&outcomes[0]);
    assert!(left > HOUR / 2 && left <= HOUR, "{left:?}");
    assert_eq!(outcomes[1].value(), Some(&"live"));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The skip reads as a typed error naming the time left.
    let err = outcomes.into_iter().next().unwrap().into_result(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(
        err.message().contains("skipped") && err.message().contains("retry in"),
        "{err}"
    );
}

#[test]
fn consecutive_failures_double_the_pause_up_to_the_cap() {
    let pool = pool();
    let attempts = Arc::new(AtomicUsize::new(0));
    let bypass = || BatchOptions::new().bypass_backoff(true);
    let mut pauses = Vec::new();
    for _ in 0..4 {
        pool.run_batch_with(tasks(&["dead"], &attempts), bypass());
        pauses.push(retry_in(&pool.run_batch(tasks(&["dead"], &attempts))[0]));
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "the bypass ran every time, the skips never"
    );
    let hours: Vec<u64> = pauses.iter().map(|pause| (pause.as_secs() + 60) / 3600).collect();
    assert_eq!(hours, [1, 2, 4, 4]);
}

#[test]
fn a_success_clears_the_key() {
    let pool: SyncPool<&'static str> =
        SyncPool::new(PoolConfig::new(2).with_failure_backoff(FailureBackoff::new(HOUR, HOUR)));
    let fail_once = Arc::new(AtomicUsize::new(0));
    let run = |options: BatchOptions<'static, &'static str, ()>| {
        let fail_once = Arc::clone(&fail_once);
        pool.run_batch_with(
            vec![Task::new("flaky", move |_: &TaskContext| {
                if fail_once.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Error::io("fetch", std::io::Error::other("once")))
                } else {
                    Ok(())
                }
            })],
            options,
        )
    };
    assert!(matches!(run(BatchOptions::new())[0], Outcome::Error(_)));
    assert!(matches!(run(BatchOptions::new())[0], Outcome::Skipped { .. }));
    assert!(run(BatchOptions::new().bypass_backoff(true))[0].is_value());
    assert!(run(BatchOptions::new())[0].is_value(), "the success cleared the pause");
    assert_eq!(pool.stats().paused_keys, 0);
}

#[test]
fn a_pause_ends_on_the_monotonic_clock() {
    let short = Duration::from_millis(5);
    let pool: SyncPool<&str> =
        SyncPool::new(PoolConfig::new(1).with_failure_backoff(FailureBackoff::new(short, short)));
    let attempts = Arc::new(AtomicUsize::new(0));
    pool.run_batch(tasks(&["dead"], &attempts));
    let give_up = Instant::now() + Duration::from_secs(20);
    // Skipped until the pause is over, then attempted again.
    while attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < give_up, "the pause never ended");
        let outcome = &pool.run_batch(tasks(&["dead"], &attempts))[0];
        assert!(matches!(outcome, Outcome::Skipped { .. } | Outcome::Error(_)));
    }
}

#[test]
fn without_a_backoff_a_failing_key_runs_every_time() {
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(2));
    assert!(pool.config().failure_backoff().is_none());
    let attempts = Arc::new(AtomicUsize::new(0));
    pool.run_batch(tasks(&["dead", "dead"], &attempts));
    pool.run_batch(tasks(&["dead"], &attempts));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

//! SyncPool batches: what must and must never happen, from Rust.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::pool::{BatchOptions, Outcome, PoolConfig, SyncPool, Task, TaskContext};
use keel::{Error, ErrorKind};

/// How long a test waits for something that must happen before declaring
/// it did not; never an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(20);

/// Counts how many tasks run at once, overall and per key.
#[derive(Default)]
struct Occupancy {
    now: AtomicUsize,
    peak: AtomicUsize,
    per_key: Mutex<HashMap<String, usize>>,
    overlaps_of_one_key: AtomicUsize,
}

impl Occupancy {
    fn enter(&self, key: &str) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let mut per_key = self.per_key.lock().unwrap();
        let holders = per_key.entry(key.to_owned()).or_default();
        *holders += 1;
        if *holders > 1 {
            self.overlaps_of_one_key.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn leave(&self, key: &str) {
        *self.per_key.lock().unwrap().get_mut(key).unwrap() -= 1;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn values<T: std::fmt::Debug>(outcomes: Vec<Outcome<T>>) -> Vec<T> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| outcome.into_result(index).unwrap())
        .collect()
}

#[test]
fn tasks_of_one_key_never_overlap_and_distinct_keys_run_in_parallel() {
    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(8));
    let occupancy = Arc::new(Occupancy::default());
    let tasks = (0..400).map(|i| {
        let key = format!("source-{}", i % 5);
        let occupancy = Arc::clone(&occupancy);
        Task::new(key.clone(), move |_: &TaskContext| {
            occupancy.enter(&key);
            for _ in 0..200 {
                std::thread::yield_now();
            }
            occupancy.leave(&key);
            Ok(i)
        })
    });
    let outcomes = pool.run_batch(tasks);
    assert_eq!(
        values(outcomes),
        (0..400).collect::<Vec<_>>(),
        "results come back in input order"
    );
    assert_eq!(occupancy.overlaps_of_one_key.load(Ordering::SeqCst), 0);
    assert!(occupancy.peak.load(Ordering::SeqCst) <= 5, "only 5 keys exist");
    assert_eq!(pool.locks().len(), 0, "no lock entry is left behind");
}

#[test]
fn two_batches_and_host_code_share_the_per_key_exclusion() {
    let pool: Arc<SyncPool<String>> = Arc::new(SyncPool::new(PoolConfig::new(4)));
    let occupancy = Arc::new(Occupancy::default());
    let make_batch = |tag: usize| {
        let occupancy = Arc::clone(&occupancy);
        (0..100).map(move |i| {
            let key = format!("k{}", i % 3);
            let occupancy = Arc::clone(&occupancy);
            Task::new(key.clone(), move |_: &TaskContext| {
                occupancy.enter(&key);
                std::thread::yield_now();
                occupancy.leave(&key);
                Ok(tag)
            })
        })
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| pool.run_batch(make_batch(1)));
        let b = s.spawn(|| pool.run_batch(make_batch(2)));
        // Host code taking a key through the pool's registry excludes tasks too.
        for _ in 0..50 {
            let _guard = pool.locks().lock("k0").unwrap();
            occupancy.enter("k0");
            std::thread::yield_now();
            occupancy.leave("k0");
        }
        assert!(a.join().unwrap().iter().all(|o| o.value() == Some(&1)));
        assert!(b.join().unwrap().iter().all(|o| o.value() == Some(&2)));
    });
    assert_eq!(occupancy.overlaps_of_one_key.load(Ordering::SeqCst), 0);
}

/// Tasks that hold their slot until `n` of them are inside at once (or
/// PATIENCE passes, so a pool that never reaches `n` fails instead of hanging).
struct Rendezvous {
    inside: Mutex<usize>,
    all_in: std::sync::Condvar,
    n: usize,
    patience: Duration,
}

impl Rendezvous {
    fn new(n: usize) -> Arc<Self> {
        Self::with_patience(n, PATIENCE)
    }

    fn with_patience(n: usize, patience: Duration) -> Arc<Self> {
        Arc::new(Rendezvous {
            inside: Mutex::new(0),
            all_in: std::sync::Condvar::new(),
            n,
            patience,
        })
    }

    /// Returns whether `n` tasks were inside together.
    fn meet(&self) -> bool {
        let mut inside = self.inside.lock().unwrap();
        *inside += 1;
        self.all_in.notify_all();
        let (inside, _) = self
            .all_in
            .wait_timeout_while(inside, self.patience, |inside| *inside < self.n)
            .unwrap();
        *inside >= self.n
    }
}

#[test]
fn concurrency_reaches_the_limit_and_never_exceeds_it() {
    let limit = 4;
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(limit));
    let occupancy = Arc::new(Occupancy::default());
    let rendezvous = Rendezvous::new(limit);
    let tasks = (0..3 * limit).map(|i| {
        let occupancy = Arc::clone(&occupancy);
        let rendezvous = Arc::clone(&rendezvous);
        Task::new(i, move |_: &TaskContext| {
            occupancy.enter(&i.to_string());
            let met = rendezvous.meet();
            occupancy.leave(&i.to_string());
            Ok(met)
        })
    });
    let met = values(pool.run_batch(tasks));
    assert!(met[..limit].iter().all(|&m| m), "the first {limit} tasks ran together");
    assert_eq!(occupancy.peak.load(Ordering::SeqCst), limit);
    assert_eq!(pool.stats().peak_concurrency, limit);
    assert_eq!(pool.stats().in_flight, 0);
    assert_eq!(pool.stats().completed, 3 * limit);
}

#[test]
fn a_limit_of_zero_means_one_and_still_finishes() {
    let pool: SyncPool<u32> = SyncPool::new(PoolConfig::new(0));
    let occupancy = Arc::new(Occupancy::default());
    let tasks = (0..20u32).map(|i| {
        let occupancy = Arc::clone(&occupancy);
        Task::new(i, move |_: &TaskContext| {
            occupancy.enter("any");
            std::thread::yield_now();
            occupancy.leave("any");
            Ok(i)
        })
    });
    assert_eq!(values(pool.run_batch(tasks)), (0..20).collect::<Vec<_>>());
    assert_eq!(occupancy.peak.load(Ordering::SeqCst), 1);
}

#[test]
fn the_first_task_of_each_key_runs_before_its_followers() {
    let pool: SyncPool<&'static str> = SyncPool::new(PoolConfig::new(4));
    let log = Arc::new(Mutex::new(Vec::new()));
    let keys = ["a", "b", "a", "c", "a", "b"];
    let tasks = keys.iter().enumerate().map(|(i, &key)| {
        let log = Arc::clone(&log);
        Task::new(key, move |ctx: &TaskContext| {
            log.lock().unwrap().push((key, i, "start"));
            log.lock().unwrap().push((key, i, "end"));
            Ok((ctx.index(), ctx.is_first_of_key()))
        })
    });
    let flags = values(pool.run_batch(tasks));
    let expected = [true, true, false, true, false, false];
    assert_eq!(
        flags,
        expected.iter().enumerate().map(|(i, &f)| (i, f)).collect::<Vec<_>>()
    );
    // Per key, runs happen one after another, in input order.
    let log = log.lock().unwrap();
    for key in ["a", "b", "c"] {
        let of_key: Vec<_> = log
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, i, e)| (*i, *e))
            .collect();
        let in_input_order: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == key)
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<_> = in_input_order
            .iter()
            .flat_map(|&i| [(i, "start"), (i, "end")])
            .collect();
        assert_eq!(of_key, expected, "key {key}");
    }
}

#[test]
fn singleflight_runs_each_key_once_and_shares_its_outcome() {
    let pool: SyncPool<&'static str> = SyncPool::new(PoolConfig::new(4));
    let runs = Arc::new(Mutex::new(HashMap::<&str, usize>::new()));
    let keys = ["ok", "bad", "ok", "ok", "bad", "alone"];
    let tasks = keys.iter().enumerate().map(|(i, &key)| {
        let runs = Arc::clone(&runs);
        Task::new(key, move |_: &TaskContext| {
            *runs.lock().unwrap().entry(key).or_default() += 1;
            match key {
                "bad" => Err(Error::not_found(format!("source {key} is gone"))),
                _ => Ok(format!("{key} fetched by task {i}")),
            }
        })
    });
    let mut shared_progress = 0;
    let outcomes = pool.run_singleflight(
        tasks,
        BatchOptions::new().on_progress(|progress| {
            assert_eq!(progress.total, 6);
            shared_progress = progress.done;
        }),
    );
    assert_eq!(shared_progress, 6, "every task, followers included, is reported");
    assert_eq!(
        *runs.lock().unwrap(),
        HashMap::from([("ok", 1), ("bad", 1), ("alone", 1)])
    );
    for (index, outcome) in outcomes.iter().enumerate() {
        match keys[index] {
            "ok" => assert_eq!(outcome.value().unwrap(), "ok fetched by task 0"),
            "bad" => assert!(matches!(outcome, Outcome::Error(e) if e.kind() == ErrorKind::NotFound)),
            _ => assert_eq!(outcome.value().unwrap(), "alone fetched by task 5"),
        }
    }
}

#[test]
fn errors_and_panics_are_isolated_to_their_task() {
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(3));
    let tasks = (0..30).map(|i| {
        Task::new(i % 4, move |ctx: &TaskContext| {
            assert!(!ctx.is_cancelled(), "a failing sibling never cancels a running task");
            match i % 5 {
                1 => Err(Error::conflict(format!("task {i} conflicts"))),
                2 => panic!("task {i} blew up"),
                _ => Ok(i),
            }
        })
    });
    let outcomes = pool.run_batch(tasks);
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i % 5, outcome) {
            (1, Outcome::Error(err)) => assert_eq!(err.message(), format!("task {i} conflicts")),
            (2, Outcome::Panicked(message)) => assert_eq!(message, &format!("task {i} blew up")),
            (_, Outcome::Value(v)) => assert_eq!(*v, i),
            (_, other) => panic!("task {i}: unexpected {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.failed), (18, 12));
}

#[test]
fn progress_reports_every_completion_with_its_key() {
    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(2));
    let mut seen = Vec::new();
    let tasks = (0..10).map(|i| Task::new(format!("k{}", i % 3), move |_: &TaskContext| Ok(i * 10)));
    let outcomes = pool.run_batch_with(
        tasks,
        BatchOptions::<String, usize>::new().on_progress(|p| {
            seen.push((
                p.done,
                p.total,
                p.index,
                p.key.cloned().unwrap(),
                *p.outcome.value().unwrap(),
            ))
        }),
    );
    assert_eq!(outcomes.len(), 10);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    seen.sort_by_key(|s| s.2);
    for (i, (_, total, index, key, value)) in seen.into_iter().enumerate() {
        assert_eq!((total, index, key, value), (10, i, format!("k{}", i % 3), i * 10));
    }
}

#[test]
fn an_empty_batch_returns_nothing() {
    let pool: SyncPool<u8> = SyncPool::new(PoolConfig::default());
    type Noop = fn(&TaskContext) -> keel::Result<()>;
    let tasks: Vec<Task<u8, Noop>> = Vec::new();
    assert!(pool.run_batch(tasks).is_empty());
}

#[test]
fn unkeyed_tasks_lock_nothing_and_all_run_first() {
    let pool: SyncPool<Vec<u8>> = SyncPool::new(PoolConfig::new(3).with_name("unkeyed"));
    let outcomes = pool.run_unkeyed(
        (0..50).map(|i| {
            move |ctx: &TaskContext| {
                assert!(ctx.is_first_of_key());
                Ok(i)
            }
        }),
        BatchOptions::new(),
    );
    assert_eq!(values(outcomes), (0..50).collect::<Vec<_>>());
    assert_eq!(pool.locks().len(), 0);
    let all = keel::stats::gather();
    let listed = all["pool"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "unkeyed")
        .unwrap();
    assert_eq!(listed["completed"], 50);
    assert_eq!(listed["max_concurrency"], 3);
}

#[test]
fn the_limit_holds_across_batches_run_at_once() {
    let limit = 2;
    let pool: Arc<SyncPool<usize>> = Arc::new(SyncPool::new(PoolConfig::new(limit)));
    let occupancy = Arc::new(Occupancy::default());
    // Tasks try to gather limit + 1 at once: they can only if the two batches
    // together exceed the limit. They give up after a while (no assertion on it).
    let rendezvous = Rendezvous::with_patience(limit + 1, Duration::from_millis(200));
    let batch = |offset: usize| {
        let occupancy = Arc::clone(&occupancy);
        let rendezvous = Arc::clone(&rendezvous);
        (0..2 * limit).map(move |i| {
            let occupancy = Arc::clone(&occupancy);
            let rendezvous = Arc::clone(&rendezvous);
            Task::new(offset + i, move |_: &TaskContext| {
                occupancy.enter(&(offset + i).to_string());
                rendezvous.meet();
                occupancy.leave(&(offset + i).to_string());
                Ok(())
            })
        })
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| pool.run_batch(batch(0)));
        let b = s.spawn(|| pool.run_batch(batch(100)));
        assert!(a.join().unwrap().iter().all(Outcome::is_value));
        assert!(b.join().unwrap().iter().all(Outcome::is_value));
    });
    assert!(occupancy.peak.load(Ordering::SeqCst) <= limit);
    assert!(pool.stats().peak_concurrency <= limit);
}

#[test]
fn a_task_running_a_batch_on_its_own_pool_is_refused_not_deadlocked() {
    let pool: Arc<SyncPool<u8>> = Arc::new(SyncPool::new(PoolConfig::new(1)));
    let inner_pool = Arc::clone(&pool);
    let outcomes = pool.run_batch(vec![Task::new(0u8, move |_: &TaskContext| {
        let nested = inner_pool.run_batch(vec![Task::new(1u8, |_: &TaskContext| Ok(()))]);
        Ok(nested.into_iter().next().unwrap())
    })]);
    match outcomes[0].value() {
        Some(Outcome::Refused(err)) => assert_eq!(err.kind(), ErrorKind::WouldDeadlock),
        other => panic!("expected a WouldDeadlock refusal, got {other:?}"),
    }
    // A second pool is fine.
    let other: SyncPool<u8> = SyncPool::new(PoolConfig::new(1));
    let outcomes = pool.run_batch(vec![Task::new(0u8, move |_: &TaskContext| {
        other
            .run_batch(vec![Task::new(1u8, |_: &TaskContext| Ok(7))])
            .remove(0)
            .into_result(0)
    })]);
    assert_eq!(outcomes[0].value(), Some(&7));
}

#[test]
fn tasks_retry_transient_failures_under_the_pool_policy() {
    let policy = keel::pool::RetryPolicy {
        initial_backoff: Duration::from_micros(50),
        max_backoff: Duration::from_micros(200),
        ..keel::pool::RetryPolicy::default()
    };
    let pool: SyncPool<u8> = SyncPool::new(PoolConfig::new(2).with_retry(policy));
    let outcomes = pool.run_batch((0..4u8).map(|key| {
        Task::new(key, move |ctx: &TaskContext| {
            let mut attempts = 0;
            ctx.retry(|_| {
                attempts += 1;
                match (key, attempts) {
                    (0, 1..=2) => Err(Error::busy("source busy")),
                    (1, _) => Err(Error::invalid_argument("bad scope")),
                    _ => Ok(attempts),
                }
            })
        })
    }));
    assert_eq!(outcomes[0].value(), Some(&3), "two transient failures, then success");
    assert!(matches!(&outcomes[1], Outcome::Error(e) if e.kind() == ErrorKind::InvalidArgument));
    assert_eq!(outcomes[2].value(), Some(&1));
}

#[test]
fn a_progress_callback_may_run_another_batch_on_the_same_pool() {
    let pool: SyncPool<String> = SyncPool::new(PoolConfig::new(2));
    let mut inner_results = Vec::new();
    let tasks = (0..4).map(|i| Task::new(format!("outer-{i}"), move |_: &TaskContext| Ok(i)));
    let options = BatchOptions::new().on_progress(|_| {
        // Runs outside every lock of the pool: the outer workers go on.
        let inner = pool.run_batch((0..2).map(|i| Task::new(format!("inner-{i}"), move |_: &TaskContext| Ok(10 + i))));
        inner_results.push(values(inner));
    });
    let outer = pool.run_batch_with(tasks, options);
    assert_eq!(values(outer), [0, 1, 2, 3]);
    assert_eq!(inner_results, vec![vec![10, 11]; 4]);
}

#[test]
fn out_of_range_numbers_from_a_host_are_invalid_not_clamped() {
    for (concurrency, abandoned) in [(-5, 64), (i64::MAX, 64), (4, -1)] {
        let err = PoolConfig::checked(concurrency, abandoned).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{concurrency}, {abandoned}");
    }
    let config = PoolConfig::checked(0, 0).unwrap();
    assert_eq!((config.max_concurrency(), config.max_abandoned()), (1, None));
}

//! SyncPool timeouts, hung threads, the abandoned-thread cap, cancellation
//! and shutdown. Hung tasks block forever on a channel receive; each test
//! releases them at its end.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use keel::pool::{BatchOptions, CancellationToken, Outcome, PoolConfig, SyncPool, Task, TaskContext};
use keel::ErrorKind;

const PATIENCE: Duration = Duration::from_secs(20);
/// Short so tests finish quickly, long enough that a task has surely started
/// by then (a task timed out before it started never took its key).
const TIMEOUT: Duration = Duration::from_millis(200);

/// A task body that either hangs until `release` is dropped, or returns.
#[derive(Clone)]
enum Work {
    Hang {
        release: Receiver<()>,
        started: Sender<usize>,
    },
    Return(usize),
}

impl Work {
    fn run(self, ctx: &TaskContext) -> keel::Result<usize> {
        match self {
            Work::Hang { release, started } => {
                let _ = started.send(ctx.index());
                let _ = release.recv(); // forever, until the test drops the sender
                Ok(usize::MAX)
            }
            Work::Return(value) => Ok(value),
        }
    }
}

/// Hangs tasks until dropped; `started` tells when each hung task is running.
struct Hangs {
    release: Option<Sender<()>>,
    release_rx: Receiver<()>,
    started_tx: Sender<usize>,
    started: Receiver<usize>,
}

impl Hangs {
    fn new() -> Self {
        let (release, release_rx) = crossbeam_channel::unbounded();
        let (started_tx, started) = crossbeam_channel::unbounded();
        Hangs {
            release: Some(release),
            release_rx,
            started_tx,
            started,
        }
    }

    fn hang(&self) -> Work {
        Work::Hang {
            release: self.release_rx.clone(),
            started: self.started_tx.clone(),
        }
    }

    fn wait_started(&self, count: usize) {
        for _ in 0..count {
            self.started.recv_timeout(PATIENCE).expect("a hung task started");
        }
    }

    fn release(&mut self) {
        self.release.take();
    }
}

fn task<K>(key: K, work: Work) -> Task<K, impl FnOnce(&TaskContext) -> keel::Result<usize> + Send + 'static> {
    Task::new(key, move |ctx: &TaskContext| work.run(ctx))
}

#[test]
fn a_hung_task_times_out_and_its_slot_goes_to_the_next_task() {
    // One slot: if the hung task kept it, nothing after it could ever run.
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(1).with_task_timeout(TIMEOUT));
    let mut hangs = Hangs::new();
    let tasks = vec![
        task("dead", hangs.hang()),
        task("a", Work::Return(1)),
        task("b", Work::Return(2)),
    ];
    let outcomes = pool.run_batch(tasks);
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    assert_eq!(outcomes[1].value(), Some(&1));
    assert_eq!(outcomes[2].value(), Some(&2));
    let stats = pool.stats();
    assert_eq!(
        (stats.timed_out, stats.abandoned, stats.abandoned_total, stats.in_flight),
        (1, 1, 1, 0)
    );
    assert_eq!(stats.locked_keys, 1, "the hung thread still holds its key");
    hangs.release();
    // The key becomes free once the hung thread really returns.
    drop(pool.locks().lock(&"dead").unwrap());
}

#[test]
fn a_key_stays_busy_while_its_hung_run_lives() {
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(4).with_task_timeout(TIMEOUT));
    let mut hangs = Hangs::new();
    let tasks = vec![
        task("dead", hangs.hang()),
        task("dead", Work::Return(1)),
        task("live", Work::Return(2)),
    ];
    let outcomes = pool.run_batch(tasks);
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    match &outcomes[1] {
        Outcome::Refused(err) => {
            assert_eq!(err.kind(), ErrorKind::Busy);
            assert!(err.message().contains("still busy"), "{err}");
        }
        other => panic!("the follower of a hung key must be refused, got {other:?}"),
    }
    assert_eq!(outcomes[2].value(), Some(&2));
    // A later batch is refused for that key too, never run beside the hung thread.
    let again = pool.run_batch(vec![task("dead", Work::Return(3))]);
    assert!(matches!(&again[0], Outcome::Refused(e) if e.kind() == ErrorKind::Busy));
    hangs.release();
    let _key = pool.locks().lock(&"dead").unwrap();
    assert_eq!(pool.stats().refused, 2);
}

#[test]
fn the_timeout_cancels_the_task_token_so_cooperative_code_stops() {
    let pool: SyncPool<u8> = SyncPool::new(PoolConfig::new(2).with_task_timeout(TIMEOUT));
    let (saw_cancel_tx, saw_cancel) = crossbeam_channel::bounded(1);
    let outcomes = pool.run_batch(vec![Task::new(0u8, move |ctx: &TaskContext| {
        assert!(ctx.deadline().is_some());
        ctx.cancellation().wait(); // returns only when cancelled
        saw_cancel_tx.send(ctx.check().unwrap_err().kind()).unwrap();
        Ok(())
    })]);
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    assert_eq!(saw_cancel.recv_timeout(PATIENCE).unwrap(), ErrorKind::Cancelled);
}

#[test]
fn past_the_abandoned_thread_cap_tasks_are_refused() {
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(1).with_task_timeout(TIMEOUT).with_max_abandoned(1));
    let mut hangs = Hangs::new();
    let outcomes = pool.run_batch(vec![
        task("dead", hangs.hang()),
        task("a", Work::Return(1)),
        task("b", Work::Return(2)),
    ]);
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    for outcome in &outcomes[1..] {
        match outcome {
            Outcome::Refused(err) => {
                assert_eq!(err.kind(), ErrorKind::Busy);
                assert!(err.message().contains("at its cap of 1"), "{err}");
            }
            other => panic!("expected a refusal at the cap, got {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!((stats.abandoned, stats.refused, stats.completed), (1, 2, 0));
    hangs.release();
    let _ = pool.locks().lock(&"dead").unwrap();
}

#[test]
fn shutdown_returns_at_once_while_hung_threads_live() {
    let pool: Arc<SyncPool<usize>> = Arc::new(SyncPool::new(PoolConfig::new(3))); // no timeout at all
    let mut hangs = Hangs::new();
    let tasks: Vec<_> = (0..3)
        .map(|i| task(i, hangs.hang()))
        .chain((3..6).map(|i| task(i, Work::Return(i))))
        .collect();
    let batch = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || pool.run_batch(tasks))
    };
    hangs.wait_started(3);
    pool.shutdown(); // must not join anything
    let outcomes = batch.join().unwrap();
    assert!(
        outcomes[..3].iter().all(|o| matches!(o, Outcome::Cancelled)),
        "{outcomes:?}"
    );
    assert!(
        outcomes[3..].iter().all(|o| matches!(o, Outcome::Cancelled)),
        "{outcomes:?}"
    );
    assert_eq!(pool.stats().abandoned, 3, "the hung threads are alive and counted");
    // A shut-down pool refuses new work with a typed error.
    let later = pool.run_batch(vec![task(9, Work::Return(9))]);
    assert!(matches!(&later[0], Outcome::Refused(e) if e.kind() == ErrorKind::Closed));
    // Dropping the pool with hung threads alive returns too.
    drop(pool);
    hangs.release();
}

#[test]
fn cancelling_a_batch_decides_every_task_at_once() {
    let pool: SyncPool<usize> = SyncPool::new(PoolConfig::new(2));
    let mut hangs = Hangs::new();
    let token = CancellationToken::new();
    let tasks: Vec<_> = (0..2)
        .map(|i| task(i, hangs.hang()))
        .chain([task(2, Work::Return(2))])
        .collect();
    let outcomes = std::thread::scope(|s| {
        let cancel = token.clone();
        let started = hangs.started.clone();
        s.spawn(move || {
            for _ in 0..2 {
                started.recv_timeout(PATIENCE).unwrap();
            }
            cancel.cancel();
        });
        pool.run_batch_with(tasks, BatchOptions::new().cancel_token(token.clone()))
    });
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Cancelled)), "{outcomes:?}");
    assert_eq!(pool.stats().cancelled, 3);
    // The pool itself goes on.
    assert_eq!(pool.run_batch(vec![task(7, Work::Return(7))])[0].value(), Some(&7));
    hangs.release();
}

#[test]
fn a_batch_timeout_overrides_the_pool_default() {
    let pool: SyncPool<u8> = SyncPool::new(PoolConfig::new(1)); // no default timeout
    let mut hangs = Hangs::new();
    let outcomes = pool.run_batch_with(
        vec![task(0u8, hangs.hang()), task(1u8, Work::Return(1))],
        BatchOptions::new().timeout(Some(TIMEOUT)),
    );
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    assert_eq!(outcomes[1].value(), Some(&1));
    hangs.release();
}

#[test]
fn a_slot_freed_by_a_timeout_goes_to_the_longest_waiter() {
    // Two slots, four hung tasks: when the first two time out, one freed
    // slot must go to the healthy task of the other batch, which was waiting,
    // not to both workers replacing the hung ones.
    let pool: Arc<SyncPool<String>> = Arc::new(SyncPool::new(PoolConfig::new(2)));
    let mut hangs = Hangs::new();
    let hung_batch = {
        let pool = Arc::clone(&pool);
        let tasks: Vec<_> = (0..4).map(|i| task(format!("dead-{i}"), hangs.hang())).collect();
        // Long enough that the healthy batch is surely queued before it runs out.
        let timeout = Some(Duration::from_secs(1));
        std::thread::spawn(move || pool.run_batch_with(tasks, BatchOptions::new().timeout(timeout)))
    };
    hangs.wait_started(2);
    let later_hung_starts = hangs.started.clone();
    let healthy = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            pool.run_batch(vec![Task::new("healthy".to_owned(), move |_: &TaskContext| {
                Ok(later_hung_starts.len())
            })])
        })
    };
    while pool.stats().slot_waiters == 0 {
        std::thread::yield_now();
    }
    let outcomes = healthy.join().unwrap();
    let hung_started_first = *outcomes[0].value().expect("the healthy task ran");
    assert!(
        hung_started_first <= 1,
        "{hung_started_first} replacement workers of the hung batch took a slot before the waiter"
    );
    hangs.release();
    let hung = hung_batch.join().unwrap();
    // The first timeout freed the waiter's slot; later hung tasks may have
    // been released before their own deadline.
    assert!(hung.iter().any(|o| matches!(o, Outcome::TimedOut)));
}

#[test]
fn max_abandoned_zero_means_no_cap() {
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(1).with_task_timeout(TIMEOUT).with_max_abandoned(0));
    assert_eq!(pool.config().max_abandoned(), None);
    let mut hangs = Hangs::new();
    let outcomes = pool.run_batch(vec![
        task("dead-1", hangs.hang()),
        task("dead-2", hangs.hang()),
        task("a", Work::Return(1)),
    ]);
    assert!(matches!(outcomes[0], Outcome::TimedOut));
    assert!(matches!(outcomes[1], Outcome::TimedOut));
    assert_eq!(outcomes[2].value(), Some(&1), "nothing is refused without a cap");
    hangs.release();
}

#[test]
fn a_poll_that_says_stop_cancels_the_batch_from_the_calling_thread() {
    // No timeout: only the poll can end this batch.
    let pool: SyncPool<&str> = SyncPool::new(PoolConfig::new(1));
    let mut hangs = Hangs::new();
    let started = hangs.started.clone();
    let mut polls = 0;
    let options = BatchOptions::new().poll_every(Duration::from_millis(5), || {
        polls += 1;
        // Keep going until the hung task is surely running, then stop.
        started.try_recv().is_err()
    });
    let outcomes = pool.run_batch_with(vec![task("dead", hangs.hang()), task("a", Work::Return(1))], options);
    assert!(matches!(outcomes[0], Outcome::Cancelled));
    assert!(matches!(outcomes[1], Outcome::Cancelled));
    assert!(polls >= 1);
    hangs.release();
}

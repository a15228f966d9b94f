//! SyncPool::pipeline: prepare in parallel, commit in input order on the
//! calling thread, within a bounded window.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use keel::pool::{Outcome, PipelineOptions, PoolConfig, SyncPool, TaskContext};
use keel::{Error, ErrorKind};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn commits_run_in_input_order_on_the_calling_thread_even_when_prepares_finish_out_of_order() {
    let pool: SyncPool<()> = SyncPool::new(PoolConfig::new(4));
    // Item 0's prepare cannot finish before item 3's has: prepares finish out of order.
    let (three_done_tx, three_done) = crossbeam_channel::bounded::<()>(1);
    let caller = std::thread::current().id();
    let mut commits: Vec<(usize, ThreadId)> = Vec::new();
    let outcomes = pool.pipeline(
        0..20usize,
        move |item, ctx: &TaskContext| {
            assert_eq!(item, ctx.index());
            match item {
                0 => three_done
                    .recv_timeout(PATIENCE)
                    .map_err(|_| Error::timeout("item 3 never prepared"))?,
                3 => three_done_tx.send(()).unwrap(),
                _ => {}
            }
            Ok(item * 2)
        },
        |index, prepared| {
            commits.push((index, std::thread::current().id()));
            Ok(prepared + 1)
        },
        PipelineOptions::new(),
    );
    let committed: Vec<usize> = outcomes.iter().map(|o| *o.value().unwrap()).collect();
    assert_eq!(committed, (0..20).map(|i| i * 2 + 1).collect::<Vec<_>>());
    assert_eq!(
        commits.iter().map(|c| c.0).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(
        commits.iter().all(|c| c.1 == caller),
        "commit runs on the calling thread"
    );
}

#[test]
fn failing_prepares_and_commits_are_reported_per_item_and_the_rest_go_on() {
    let pool: SyncPool<()> = SyncPool::new(PoolConfig::new(3));
    let outcomes = pool.pipeline(
        0..10usize,
        |item, _: &TaskContext| match item {
            2 => Err(Error::corrupt("unreadable file")),
            4 => panic!("converter crashed"),
            _ => Ok(item),
        },
        |index, item| match index {
            6 => Err(Error::conflict("registry changed")),
            _ => Ok(item),
        },
        PipelineOptions::new(),
    );
    for (index, outcome) in outcomes.iter().enumerate() {
        match (index, outcome) {
            (2, Outcome::Error(err)) => {
                assert_eq!(err.kind(), ErrorKind::Corrupt);
                assert!(err.message().starts_with("prepare item 2:"), "{err}");
            }
            (4, Outcome::Panicked(message)) => assert!(message.contains("converter crashed"), "{message}"),
            (6, Outcome::Error(err)) => {
                assert_eq!(err.kind(), ErrorKind::Conflict);
                assert!(err.message().starts_with("commit item 6:"), "{err}");
            }
            (_, Outcome::Value(value)) => assert_eq!(*value, index),
            (_, other) => panic!("item {index}: unexpected {other:?}"),
        }
    }
}

#[test]
fn stop_at_first_commit_failure_commits_nothing_after_it() {
    let pool: SyncPool<()> = SyncPool::new(PoolConfig::new(2));
    let mut committed = Vec::new();
    let outcomes = pool.pipeline(
        0..12usize,
        |item, _: &TaskContext| Ok(item),
        |index, item| {
            committed.push(index);
            if index == 3 {
                Err(Error::storage_full("disk full"))
            } else {
                Ok(item)
            }
        },
        PipelineOptions::new().stop_at_first_commit_failure(true),
    );
    assert_eq!(committed, [0, 1, 2, 3]);
    assert!(outcomes[..3].iter().all(Outcome::is_value));
    assert!(matches!(&outcomes[3], Outcome::Error(e) if e.kind() == ErrorKind::StorageFull));
    assert!(
        outcomes[4..].iter().all(|o| matches!(o, Outcome::Cancelled)),
        "{outcomes:?}"
    );
}

#[test]
fn prepared_but_uncommitted_items_never_exceed_the_window() {
    let window = 5;
    let pool: SyncPool<()> = SyncPool::new(PoolConfig::new(8));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    // Item 0 is slow: it waits until the rest of the window is prepared, so
    // the window fills up behind it.
    let (prepared_tx, prepared_rx) = crossbeam_channel::unbounded::<usize>();
    let outcomes = {
        let in_prepare = Arc::clone(&outstanding);
        let peak = Arc::clone(&peak);
        pool.pipeline(
            0..40usize,
            move |item, _: &TaskContext| {
                let now = in_prepare.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                if item == 0 {
                    for _ in 1..window {
                        prepared_rx
                            .recv_timeout(PATIENCE)
                            .expect("the window fills behind item 0");
                    }
                } else {
                    prepared_tx.send(item).unwrap();
                }
                Ok(item)
            },
            |_, item| {
                outstanding.fetch_sub(1, Ordering::SeqCst);
                Ok(item)
            },
            PipelineOptions::new().window(window),
        )
    };
    assert!(outcomes.iter().all(Outcome::is_value));
    assert_eq!(
        peak.load(Ordering::SeqCst),
        window,
        "the window fills, and never overflows"
    );
}

#[test]
fn a_hung_prepare_times_out_and_the_pipeline_goes_on() {
    let pool: SyncPool<()> = SyncPool::new(PoolConfig::new(2).with_task_timeout(Duration::from_millis(100)));
    let (release, hang) = crossbeam_channel::bounded::<()>(0);
    let outcomes = pool.pipeline(
        0..6usize,
        move |item, _: &TaskContext| {
            if item == 1 {
                let _ = hang.recv();
            }
            Ok(item)
        },
        |_, item| Ok(item),
        PipelineOptions::new(),
    );
    assert!(matches!(outcomes[1], Outcome::TimedOut));
    for index in [0, 2, 3, 4, 5] {
        assert_eq!(outcomes[index].value(), Some(&index));
    }
    drop(release);
}

#[test]
fn shutting_the_pool_down_stops_a_pipeline_at_once() {
    let pool: Arc<SyncPool<()>> = Arc::new(SyncPool::new(PoolConfig::new(2)));
    let (started_tx, started) = crossbeam_channel::unbounded::<usize>();
    let (_never_tx, never) = crossbeam_channel::bounded::<()>(0);
    let mut committed = Vec::new();
    let outcomes = std::thread::scope(|s| {
        let stopper = Arc::clone(&pool);
        s.spawn(move || {
            // Items 0 and 1 hang in prepare; once both run, shut down.
            for _ in 0..2 {
                started.recv_timeout(PATIENCE).unwrap();
            }
            stopper.shutdown();
        });
        pool.pipeline(
            0..6usize,
            move |item, _: &TaskContext| {
                started_tx.send(item).unwrap();
                let _ = never.recv(); // returns only when the test ends
                Ok(item)
            },
            |index, item| {
                committed.push(index);
                Ok(item)
            },
            PipelineOptions::new(),
        )
    });
    assert!(committed.is_empty());
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Cancelled)), "{outcomes:?}");
    assert_eq!(pool.stats().abandoned, 2);
}

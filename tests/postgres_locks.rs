//! Cross-host keyed locks on PostgreSQL advisory locks: exclusive and
//! shared, timeouts, all-or-none `lock_many`, nothing left behind, a lost
//! session reported to its holder, and fencing tokens.
#![cfg(feature = "postgres")]

#[path = "conformance/mod.rs"]
#[allow(dead_code)]
mod conformance;

use std::thread;
use std::time::{Duration, Instant};

use conformance::postgres::{fresh_schema, url};
use keel::pool::CancellationToken;
use keel::postgres::client::{Client, NoTls};
use keel::postgres::{PgKeyedLocks, PgLocksOptions, PgOptions};
use keel::{ErrorKind, LockMode, LockStats, Wait};

/// Two lock handles on one schema, as two hosts would have.
fn two_hosts(name: &str) -> (PgKeyedLocks, PgKeyedLocks) {
    let options = PgLocksOptions {
        database: PgOptions {
            schema: fresh_schema(name),
            pool_size: 1,
            ..PgOptions::default()
        },
    };
    (
        PgKeyedLocks::open_with(&url(), &options).unwrap(),
        PgKeyedLocks::open_with(&url(), &options).unwrap(),
    )
}

/// How many advisory locks on `keys` the server holds or queues for anyone.
fn advisory_locks(locks: &PgKeyedLocks, keys: &[&str]) -> i64 {
    let ids: Vec<i64> = keys.iter().map(|key| locks.advisory_key(key)).collect();
    let mut client = Client::connect(&url(), NoTls).unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND ((classid::bigint << 32) | objid::bigint) = ANY($1)",
            &[&ids],
        )
        .unwrap()
        .get(0)
}

const SHORT: Wait = Wait::For(Duration::from_millis(200));

#[test]
fn an_exclusive_holder_excludes_everyone_and_shared_holders_share() {
    let (a, b) = two_hosts("locks-modes");
    let held = a.lock("repo-1").unwrap();
    assert!(b.acquire("repo-1", LockMode::Exclusive, Wait::Never).unwrap().is_none());
    assert!(b.acquire("repo-1", LockMode::Shared, Wait::Never).unwrap().is_none());
    assert!(b.acquire("repo-2", LockMode::Exclusive, Wait::Never).unwrap().is_some());
    let err = b.acquire("repo-1", LockMode::Exclusive, SHORT).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    drop(held);
    let one = a.acquire("repo-1", LockMode::Shared, Wait::Never).unwrap().unwrap();
    let two = b.acquire("repo-1", LockMode::Shared, Wait::Never).unwrap().unwrap();
    assert!(a.acquire("repo-1", LockMode::Exclusive, Wait::Never).unwrap().is_none());
    assert_eq!((one.mode(), two.mode()), (LockMode::Shared, LockMode::Shared));
}

#[test]
fn lock_many_takes_all_keys_or_none() {
    let (a, b) = two_hosts("locks-many");
    let middle = a.lock("b").unwrap();
    let err = b.lock_many(&["c", "a", "b"], LockMode::Exclusive, SHORT).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    // None of the other keys stayed held by the failed call.
    assert!(a.acquire("a", LockMode::Exclusive, Wait::Never).unwrap().is_some());
    assert!(a.acquire("c", LockMode::Exclusive, Wait::Never).unwrap().is_some());
    assert!(b
        .lock_many(&["a", "b"], LockMode::Exclusive, Wait::Never)
        .unwrap()
        .is_none());
    drop(middle);
    let all = b
        .lock_many(&["c", "a", "b", "a"], LockMode::Exclusive, Wait::Never)
        .unwrap()
        .unwrap();
    assert_eq!(all.keys(), ["a", "b", "c"]);
}

#[test]
fn nothing_is_left_behind_when_no_one_holds_or_waits() {
    let (a, b) = two_hosts("locks-leftovers");
    let keys = ["k1", "k2", "k3"];
    {
        let _one = a.lock("k1").unwrap();
        let _many = b
            .lock_many(&["k2", "k3"], LockMode::Shared, Wait::Forever)
            .unwrap()
            .unwrap();
        assert_eq!(advisory_locks(&a, &keys), 3);
        let _ = b.acquire("k1", LockMode::Exclusive, SHORT);
        assert_eq!(advisory_locks(&a, &keys), 3, "a timed-out waiter leaves nothing");
    }
    assert_eq!(advisory_locks(&a, &keys), 0);
}

#[test]
fn a_holder_whose_session_is_lost_is_told_and_fenced_off() {
    let (a, b) = two_hosts("locks-lost");
    let mut first = a.lock("shard-7").unwrap();
    first.check().unwrap();
    // The server ends the holder's session (a network cut, a failover).
    let mut admin = Client::connect(&url(), NoTls).unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first.session_pid()])
        .unwrap();
    let second = b
        .acquire("shard-7", LockMode::Exclusive, Wait::For(Duration::from_secs(10)))
        .unwrap()
        .expect("granted once the lost session is gone");
    assert_eq!(first.check().unwrap_err().kind(), ErrorKind::Closed);
    assert!(second.token() > first.token(), "a later holder carries a larger token");
}

/// Waits until someone waits on the server for one of `keys` (a lock not
/// yet granted), for at most 10 s.
fn until_someone_waits(locks: &PgKeyedLocks, keys: &[&str]) {
    let ids: Vec<i64> = keys.iter().map(|key| locks.advisory_key(key)).collect();
    let mut client = Client::connect(&url(), NoTls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND ((classid::bigint << 32) | objid::bigint) = ANY($1)",
                &[&ids],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "nobody started waiting for {keys:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_cancelled_wait_ends_at_once_holding_none_of_its_keys() {
    let (a, b) = two_hosts("locks-cancel");
    let held = a.lock("k").unwrap();
    let token = CancellationToken::new();
    let waiter = {
        let (b, token) = (b.clone(), token.clone());
        thread::spawn(move || {
            b.lock_many_with(&["j", "k"], LockMode::Exclusive, Wait::Forever, Some(&token))
                .map(|guard| guard.is_some())
        })
    };
    until_someone_waits(&a, &["k"]);
    assert_eq!(b.stats().waiters, 1);
    let cancelled_at = Instant::now();
    token.cancel();
    let err = waiter.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "the wait ended on the cancel"
    );
    assert_eq!(
        advisory_locks(&a, &["j", "k"]),
        1,
        "only the first holder's lock is left"
    );
    assert_eq!(b.stats(), LockStats::default());
    // A cancelled token refuses before waiting, too.
    let err = b
        .lock_many_with(&["k"], LockMode::Exclusive, Wait::Forever, Some(&token))
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    drop(held);
    assert!(b
        .lock_many_with(&["j", "k"], LockMode::Exclusive, SHORT, Some(&CancellationToken::new()))
        .unwrap()
        .is_some());
}

#[test]
fn stats_count_what_this_handle_holds_and_waits_for() {
    let (a, b) = two_hosts("locks-stats");
    assert_eq!(a.stats(), LockStats::default());
    let one = a.lock("x").unwrap();
    let many = a
        .lock_many(&["y", "z"], LockMode::Shared, Wait::Never)
        .unwrap()
        .unwrap();
    let also = a.acquire("y", LockMode::Shared, Wait::Never).unwrap().unwrap();
    assert_eq!(
        a.stats(),
        LockStats {
            entries: 3,
            holders: 3,
            waiters: 0
        }
    );
    assert_eq!(
        b.stats(),
        LockStats::default(),
        "another handle's locks are not counted"
    );
    drop((one, many, also));
    assert_eq!(a.stats(), LockStats::default());
}

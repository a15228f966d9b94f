//! One conformance suite for every store of operations and jobs: each test
//! takes a [`Backend`] that opens a fresh queue or operations on its store,
//! timed by a [`ManualClock`]. `tests/store_conformance.rs` runs every test
//! on LMDB and, with the `postgres` feature, on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use keel::ops::{Backoff, JobPolicy, LmdbStore, ManualClock, Operations, Queue};

pub mod jobs;
pub mod operations;
#[cfg(feature = "postgres")]
pub mod postgres;

pub const START: u64 = 1_700_000_000_000;
pub const LEASE: Duration = Duration::from_secs(30);

/// Opens fresh stores of one kind, one per test name.
pub trait Backend {
    fn queue(&self, name: &str) -> (Queue, ManualClock);
    fn operations(&self, name: &str) -> (Operations, ManualClock);
}

pub fn policy() -> JobPolicy {
    JobPolicy {
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.25,
        },
        max_resets: 2,
    }
}

/// A store in a fresh LMDB file per test.
pub struct Lmdb;

impl Lmdb {
    fn store(&self, name: &str) -> Arc<LmdbStore> {
        let dir = std::env::temp_dir().join(format!("keel-conformance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Arc::new(LmdbStore::open(dir.join("ops.lmdb")).unwrap())
    }
}

impl Backend for Lmdb {
    fn queue(&self, name: &str) -> (Queue, ManualClock) {
        let clock = ManualClock::new(START);
        (
            Queue::with_parts(self.store(name), Arc::new(clock.clone()), policy()),
            clock,
        )
    }

    fn operations(&self, name: &str) -> (Operations, ManualClock) {
        let clock = ManualClock::new(START);
        (Operations::with_clock(self.store(name), Arc::new(clock.clone())), clock)
    }
}

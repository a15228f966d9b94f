//! The PostgreSQL side of the suite: a fresh schema per test in the server
//! named by `KEEL_TEST_PG_URL` (scripts/test starts one with scripts/pg).

use std::sync::Arc;

use keel::ops::{ManualClock, Operations, PgStore, Queue};
use keel::postgres::{PgOptions, TimeSource};

use super::{policy, Backend, START};

/// The test server's URL; fails the test, saying how to get one, when unset.
pub fn url() -> String {
    match std::env::var("KEEL_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "KEEL_TEST_PG_URL is not set, so the PostgreSQL tests cannot run. \
             Start a throwaway server with `scripts/pg start` and export \
             KEEL_TEST_PG_URL=\"$(scripts/pg url)\" (scripts/test does both); \
             if scripts/pg finds no server binaries, install them with \
             `apt-get install postgresql`."
        ),
    }
}

/// A fresh schema named after `name` (dropped first if a run left it).
pub fn fresh_schema(name: &str) -> String {
    let schema = format!("t_{}", name.replace('-', "_")).to_ascii_lowercase();
    let mut client = keel::postgres::client::Client::connect(&url(), keel::postgres::client::NoTls)
        .unwrap_or_else(|err| panic!("cannot reach the test server at KEEL_TEST_PG_URL: {err}"));
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    schema
}

/// A store in a fresh schema, on `time`.
pub fn store(name: &str, time: TimeSource) -> PgStore {
    let options = PgOptions {
        schema: fresh_schema(name),
        pool_size: 4,
        time,
        ..PgOptions::default()
    };
    PgStore::open_with(&url(), &options).unwrap()
}

/// Stores in fresh schemas, timed by the test's clock.
pub struct Pg;

impl Backend for Pg {
    fn queue(&self, name: &str) -> (Queue, ManualClock) {
        let clock = ManualClock::new(START);
        let queue = store(&format!("q-{name}"), TimeSource::Caller).queue(Arc::new(clock.clone()), policy());
        (queue, clock)
    }

    fn operations(&self, name: &str) -> (Operations, ManualClock) {
        let clock = ManualClock::new(START);
        let store = Arc::new(store(&format!("o-{name}"), TimeSource::Caller));
        (Operations::with_clock(store, Arc::new(clock.clone())), clock)
    }
}

//! Operations in LMDB: a race of 8 threads in each of 2 processes over 100
//! READY items in one file, and lapsed claims. The store-level behaviours
//! shared by every store run in `tests/store_conformance.rs`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use keel::ops::{LmdbStore, ManualClock, OpState, Operations};
use keel::ErrorKind;

const START: u64 = 1_700_000_000_000;

const LEASE: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "KEEL_OPS_RACE_CHILD";

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-operations-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("ops.lmdb")
}

fn operations(name: &str) -> (Operations, ManualClock) {
    let clock = ManualClock::new(START);
    let store = Arc::new(LmdbStore::open(&temp_path(name)).unwrap());
    (Operations::with_clock(store, Arc::new(clock.clone())), clock)
}

fn items(records: &[keel::ops::OpRecord]) -> Vec<&str> {
    records.iter().map(|record| record.item.as_str()).collect()
}

/// Claims `op` one or two at a time on `threads` threads until none is left;
/// returns every item claimed, with repeats if any item was claimed twice.
fn claim_all(path: &Path, op: &str, who: &str, threads: usize, start: &Barrier) -> Vec<String> {
    let ops = Operations::open(path).unwrap();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let ops = ops.clone();
                let worker = format!("{who}-{n}");
                scope.spawn(move || {
                    start.wait();
                    let mut mine = Vec::new();
                    loop {
                        let claims = ops.claim(op, 1 + n % 2, &worker, LEASE).unwrap();
                        if claims.is_empty() {
                            return mine;
                        }
                        mine.extend(claims.into_iter().map(|claim| claim.item));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
    })
}

#[test]
fn eight_threads_in_two_processes_claim_each_of_100_items_exactly_once() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // The child: say we are ready, wait for the go line, race, report.
        // Written to the stdout handle, not println!, which the test
        // harness may capture; READY may share a line with the harness's
        // "test ... " prefix.
        let start = Barrier::new(8);
        let mut out = std::io::stdout();
        writeln!(out, "READY").unwrap();
        out.flush().unwrap();
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        for item in claim_all(Path::new(&path), "unpack", "child", 8, &start) {
            writeln!(out, "CLAIMED {item}").unwrap();
        }
        writeln!(out, "DONE").unwrap();
        out.flush().unwrap();
        return;
    }
    let path = temp_path("race");
    let ops = Operations::open(&path).unwrap();
    let expected: BTreeSet<String> = (0..100).map(|n| format!("dataset-{n:03}")).collect();
    for item in &expected {
        ops.ready(item, &["unpack"]).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "eight_threads_in_two_processes_claim_each_of_100_items_exactly_once",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.by_ref().any(|line| line.unwrap().ends_with("READY")),
        "child never got ready"
    );
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let start = Barrier::new(8);
    let mut claimed = claim_all(&path, "unpack", "parent", 8, &start);
    let parent_count = claimed.len();
    // Read to the end: the child still writes the harness's summary.
    let mut done = false;
    for line in lines {
        let line = line.unwrap();
        done |= line == "DONE";
        if !done {
            claimed.extend(line.strip_prefix("CLAIMED ").map(str::to_owned));
        }
    }
    assert!(done, "the child did not finish");
    assert!(child.wait().unwrap().success(), "the child failed");
    eprintln!("parent claimed {parent_count}, child {}", claimed.len() - parent_count);
    let unique: BTreeSet<String> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        100,
        "parent {parent_count}, child {}",
        claimed.len() - parent_count
    );
    assert_eq!(unique, expected, "some item claimed twice or never");
    assert!(ops.next("unpack", 100).unwrap().is_empty());
}

#[test]
fn an_expired_claim_reads_as_expired_and_is_listed_by_next() {
    let (ops, clock) = operations("expired");
    ops.ready("ds", &["index"]).unwrap();
    ops.claim("index", 1, "dead-worker", LEASE).unwrap();
    let live = &ops.states("ds").unwrap()[0];
    assert_eq!((live.state, live.expired), (OpState::Working, false));
    assert!(
        ops.next("index", 10).unwrap().is_empty(),
        "a live claim guards the item"
    );
    clock.advance(LEASE);
    let lapsed = &ops.states("ds").unwrap()[0];
    assert_eq!((lapsed.state, lapsed.expired), (OpState::Working, true));
    assert_eq!(lapsed.to_json()["expired"], true);
    let listed = ops.next("index", 10).unwrap();
    assert_eq!((items(&listed), listed[0].expired), (vec!["ds"], true));
    // It no longer guards the item: an update without a token goes through.
    let failed = ops.error("ds", "index", None, "given up by hand").unwrap();
    assert_eq!((failed.state, failed.expired), (OpState::Failed, false));
}

#[test]
fn the_reset_pass_requeues_lapsed_claims_and_fails_them_past_max_lapses() {
    let (ops, clock) = operations("lapses");
    let ops = ops.with_policy(keel::ops::OpPolicy { max_lapses: 2 });
    ops.ready("old", &["index"]).unwrap();
    clock.advance(Duration::from_millis(1));
    ops.ready("young", &["index"]).unwrap();
    for lapse in 1..=2 {
        let claims = ops.claim("index", 1, "dying", LEASE).unwrap();
        assert_eq!(claims[0].item, "old", "a lapsed claim keeps its place (lapse {lapse})");
        clock.advance(LEASE);
        let report = ops.reset_expired().unwrap();
        assert_eq!((report.ready, report.failed), (1, 0));
        let record = &ops.states("old").unwrap()[0];
        assert_eq!((record.state, record.expired), (OpState::Ready, false));
        let late = ops.update("old", "index", Some(claims[0].token), OpState::Ok, "late", &[]);
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    }
    ops.claim("index", 1, "dying", LEASE).unwrap();
    clock.advance(LEASE);
    // claim counts the lapse itself: the third one fails the record.
    let next = ops.claim("index", 1, "w", LEASE).unwrap();
    assert_eq!(next[0].item, "young");
    let record = &ops.states("old").unwrap()[0];
    assert_eq!(record.state, OpState::Failed);
    assert!(record.message.contains("lapsed 3 times"), "{}", record.message);
    assert_eq!(ops.reset_expired().unwrap(), keel::ops::OpResetReport::default());
}

#[test]
fn an_update_by_the_holder_clears_the_lapse_count() {
    let (ops, clock) = operations("lapse-clear");
    let ops = ops.with_policy(keel::ops::OpPolicy { max_lapses: 1 });
    ops.ready("ds", &["unpack"]).unwrap();
    for _ in 0..3 {
        ops.claim("unpack", 1, "dying", LEASE).unwrap();
        clock.advance(LEASE);
        assert_eq!(ops.reset_expired().unwrap().ready, 1);
        let claim = ops.claim("unpack", 1, "w", LEASE).unwrap().remove(0);
        ops.update("ds", "unpack", Some(claim.token), OpState::Ready, "again", &[])
            .unwrap();
    }
    assert_eq!(ops.states("ds").unwrap()[0].state, OpState::Ready);
}

#[test]
fn next_lists_by_item_key_when_asked_and_oldest_first_by_default() {
    let (ops, clock) = operations("next-order");
    for item in ["ds-c", "ds-a", "ds-d", "ds-b"] {
        ops.ready(item, &["unpack"]).unwrap();
        clock.advance(Duration::from_millis(5));
    }
    ops.claim("unpack", 1, "dead", LEASE).unwrap(); // ds-c, lapsing below
    clock.advance(LEASE);
    let by_item = ops.next_in("unpack", 3, keel::ops::NextOrder::Item).unwrap();
    assert_eq!(items(&by_item), ["ds-a", "ds-b", "ds-c"]);
    assert!(by_item[2].expired);
    assert_eq!(
        items(&ops.next("unpack", 10).unwrap()),
        ["ds-c", "ds-a", "ds-d", "ds-b"]
    );
    assert_eq!(
        items(&ops.next_in("unpack", 10, keel::ops::NextOrder::Oldest).unwrap()),
        ["ds-c", "ds-a", "ds-d", "ds-b"]
    );
}

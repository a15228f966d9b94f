//! Operations across processes: a race of 8 threads in each of 2 processes
//! over 100 READY items in one LMDB file. The store-level behaviours run on
//! every store in `tests/store_conformance.rs`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use keel::ops::Operations;

const LEASE: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "KEEL_OPS_RACE_CHILD";

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-ops-operations-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("ops.lmdb")
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

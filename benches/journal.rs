//! Journal benchmark: a mutation that writes 3 files into trees of 1,000
//! and 20,000 files, and into 1,000 files plus one 100 MB file in a
//! declared (hardlinked) folder. Prints snapshot+commit and
//! snapshot+rollback times, the bare cost of the same 3 atomic writes
//! without a journal (the physical baseline), keel's ratio to it, the
//! 20,000 : 1,000 ratio (target <= 1.2), and fsyncs per commit.
//!
//! Run with `cargo bench --bench journal`. Trees live under the target
//! folder (a real disk, real fsyncs).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel::Journal;

const ROUNDS: usize = 15;

fn main() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-journal");
    let _ = fs::remove_dir_all(&base);
    println!("journal benchmark: median of {ROUNDS} rounds, 3 files written per mutation\n");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8}",
        "tree", "baseline", "commit", "rollback", "commit/b", "rollb/b", "fsyncs"
    );
    let small = run_case(&base.join("t1k"), 1_000, None);
    let large = run_case(&base.join("t20k"), 20_000, None);
    let declared = run_case(&base.join("t1k-big"), 1_000, Some(100 << 20));
    println!();
    println!(
        "20,000 : 1,000 ratio (changes through the mutation, target <= 1.2): commit {:.2}, rollback {:.2}",
        ratio(large.commit, small.commit),
        ratio(large.rollback, small.rollback)
    );
    println!(
        "declared folder with a 100 MB file vs plain 1,000 tree: commit {:.2}x, rollback {:.2}x",
        ratio(declared.commit, small.commit),
        ratio(declared.rollback, small.rollback)
    );
    let _ = fs::remove_dir_all(&base);
}

struct Figures {
    commit: Duration,
    rollback: Duration,
}

fn run_case(root: &Path, files: usize, big_file: Option<u64>) -> Figures {
    build_tree(root, files, big_file);
    let declared = big_file.map(|_| "big");
    let targets = ["d0/f0.txt", "d1/f1.txt", "d2/f2.txt"];
    let targets: Vec<String> = match declared {
        Some(folder) => targets
            .iter()
            .map(|t| format!("{folder}/{}", t.replace('/', "-")))
            .collect(),
        None => targets.iter().map(|t| t.to_string()).collect(),
    };

    let journal = Journal::open(root).unwrap();
    let mut fsyncs = 0;
    let baseline_round = |round: usize| {
        for target in &targets {
            atomic_write(&root.join(target), format!("baseline {round}").as_bytes());
        }
    };
    let mut commit_round = |round: usize| {
        let start_fsyncs = journal.stats().fsyncs;
        let mut m = journal.begin("bench", "commit").unwrap();
        if let Some(folder) = declared {
            m.declare(&[folder]).unwrap();
        }
        for target in &targets {
            m.write(target, format!("commit {round}").as_bytes()).unwrap();
        }
        m.commit().unwrap();
        fsyncs = journal.stats().fsyncs - start_fsyncs;
    };
    let rollback_round = |round: usize| {
        let mut m = journal.begin("bench", "rollback").unwrap();
        if let Some(folder) = declared {
            m.declare(&[folder]).unwrap();
        }
        for target in &targets {
            m.write(target, format!("rollback {round}").as_bytes()).unwrap();
        }
        m.rollback().unwrap();
    };
    // Rounds are interleaved so the baseline and keel see the same disk.
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        let start = Instant::now();
        baseline_round(round);
        let baseline = start.elapsed();
        let start = Instant::now();
        commit_round(round);
        let commit = start.elapsed();
        let start = Instant::now();
        rollback_round(round);
        let rollback = start.elapsed();
        if round > 0 {
            for (list, time) in times.iter_mut().zip([baseline, commit, rollback]) {
                list.push(time);
            }
        }
    }
    let [baseline, commit, rollback] = times.map(median);
    let label = match big_file {
        Some(size) => format!("{files} + {} MB (declared)", size >> 20),
        None => format!("{files} files"),
    };
    println!(
        "{label:<28} {:>12} {:>12} {:>12} {:>8.2}x {:>8.2}x {:>8}",
        ms(baseline),
        ms(commit),
        ms(rollback),
        ratio(commit, baseline),
        ratio(rollback, baseline),
        fsyncs
    );
    Figures { commit, rollback }
}

/// `files` small files in folders of 100, plus a declared folder `big/`
/// holding the 100 MB file and 100 small ones when `big_file` is set.
fn build_tree(root: &Path, files: usize, big_file: Option<u64>) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n").repeat(8)).unwrap();
    }
    if let Some(size) = big_file {
        let big = root.join("big");
        fs::create_dir_all(&big).unwrap();
        let mut file = File::create(big.join("blob.bin")).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        for _ in 0..(size >> 20) {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
        for i in 0..100 {
            fs::write(big.join(format!("p{i}.md")), b"page").unwrap();
        }
    }
    // Start from a quiet disk: the writeback of a freshly built tree would
    // otherwise land in the first fsyncs measured.
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
}

/// The physical baseline: temp file, fsync, rename, fsync the folder.
fn atomic_write(target: &Path, bytes: &[u8]) {
    let tmp = target.with_extension("baseline-tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
    fs::rename(&tmp, target).unwrap();
    File::open(target.parent().unwrap()).unwrap().sync_all().unwrap();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

//! Journal benchmark: a mutation that writes 3 files, in trees of 1,000,
//! 20,000 and 100,000 files, measured round by round with the trees
//! interleaved (each round visits every tree), so the disk's state moves
//! every row alike.
//!
//! Rows (ratio = keel's speed over the baseline's, see benches/support):
//! - 3-file commit vs 3 bare atomic writes (temp, fsync, rename, fsync
//!   folder): target keel at most 2x the cost (ratio >= 0.5), for the files
//!   written one by one (`write`) and in one batch (`write_many`);
//! - at 20,000 files, 3-file commit vs a hardlink snapshot of the whole
//!   tree plus the same writes (OpenKB's way): target ratio >= 50, both ways;
//! - rollback vs the bare writes, reported;
//! - fsyncs per commit beside the baseline's (6), target <= 8, both ways.
//!
//! The 3 files are in 3 different folders (`d0`, `d1`, `d2`), so no folder
//! fsync is shared; each exists from the first round on (round 0 creates
//! two of them and is not recorded).
//!
//! Run with `cargo bench --bench journal`. Trees live under the target
//! folder (a real disk, real fsyncs) and are kept for the next run: building
//! 121,000 files and writing them back costs minutes on a busy shared disk,
//! far more than the measurement (delete `target/bench-journal` to rebuild).
//! The bench prints how long setup and rounds took.

#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use keel::Journal;
use support::{header, timed, Rounds, Target};

const ROUNDS: usize = 11;
const SIZES: [usize; 3] = [1_000, 20_000, 100_000];
const TARGETS: [&str; 3] = ["d0/f0.txt", "d1/f1.txt", "d2/f2.txt"];
/// fsyncs of the baseline: temp file and folder, per file.
const BASELINE_FSYNCS: u64 = 2 * TARGETS.len() as u64;

struct Case {
    files: usize,
    root: PathBuf,
    journal: Journal,
    commit: Rounds,
    batch: Rounds,
    rollback: Rounds,
    snapshot: Rounds,
    batch_snapshot: Rounds,
    fsyncs: Vec<u64>,
    batch_fsyncs: Vec<u64>,
}

fn main() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-journal");
    let started = std::time::Instant::now();
    header("journal: a mutation writing 3 files, trees interleaved round by round");
    let mut cases: Vec<Case> = SIZES
        .iter()
        .map(|&files| {
            let root = base.join(format!("t{files}"));
            let built = base.join(format!("t{files}.built"));
            if !built.exists() {
                let _ = fs::remove_dir_all(&root);
                build_tree(&root, files);
                fs::write(&built, b"").unwrap();
            }
            // A snapshot left by an interrupted run.
            let _ = fs::remove_dir_all(root.with_extension("snapshot"));
            Case {
                files,
                journal: Journal::open(&root).unwrap(),
                root,
                commit: Rounds::default(),
                batch: Rounds::default(),
                rollback: Rounds::default(),
                snapshot: Rounds::default(),
                batch_snapshot: Rounds::default(),
                fsyncs: Vec::new(),
                batch_fsyncs: Vec::new(),
            }
        })
        .collect();
    // Start from a quiet disk: the writeback of the fresh trees would
    // otherwise land in the first fsyncs measured.
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
    let setup = started.elapsed();
    for round in 0..=ROUNDS {
        for case in &mut cases {
            one_round(case, round, round > 0);
        }
    }
    for case in &cases {
        let name = format!("{} files", case.files);
        case.commit.report(
            &format!("{name}: commit vs 3 atomic writes"),
            "ms",
            Target::AtLeast(0.5),
        );
        case.batch.report(
            &format!("{name}: write_many commit vs 3 atomic writes"),
            "ms",
            Target::AtLeast(0.5),
        );
        case.rollback
            .report(&format!("{name}: rollback vs 3 atomic writes"), "ms", Target::None);
        if case.files == 20_000 {
            case.snapshot.report(
                &format!("{name}: commit vs hardlink snapshot of the tree"),
                "ms",
                Target::AtLeast(50.0),
            );
            case.batch_snapshot.report(
                &format!("{name}: write_many commit vs hardlink snapshot"),
                "ms",
                Target::AtLeast(50.0),
            );
        }
        for (how, counts) in [("write", &case.fsyncs), ("write_many", &case.batch_fsyncs)] {
            let fsyncs = median(counts);
            println!(
                "{name}: fsyncs per commit ({how}): keel {fsyncs}, baseline {BASELINE_FSYNCS}  target <= 8: {}",
                if fsyncs <= 8 { "met" } else { "NOT MET" }
            );
        }
    }
    let flat = support::Spread::of(
        &cases[2]
            .commit
            .keel
            .iter()
            .zip(&cases[0].commit.keel)
            .map(|(large, small)| large / small)
            .collect::<Vec<_>>(),
    );
    println!(
        "commit cost 100,000 : 1,000 files: {:.2} ({:.2}..{:.2}), flat in the untouched tree when near 1",
        flat.median, flat.min, flat.max
    );
    println!(
        "run time: setup {:.1} s, rounds {:.1} s",
        setup.as_secs_f64(),
        (started.elapsed() - setup).as_secs_f64()
    );
}

/// One round of every measurement on one tree (recorded unless warming up).
fn one_round(case: &mut Case, round: usize, record: bool) {
    let root = case.root.clone();
    let baseline = timed(|| {
        for target in TARGETS {
            atomic_write(&root.join(target), format!("baseline {round}").as_bytes());
        }
    });
    let before = case.journal.stats().fsyncs;
    let commit = timed(|| {
        let mut m = case.journal.begin("bench", "commit").unwrap();
        for target in TARGETS {
            m.write(target, format!("commit {round}").as_bytes()).unwrap();
        }
        m.commit().unwrap();
    });
    let fsyncs = case.journal.stats().fsyncs - before;
    let before = case.journal.stats().fsyncs;
    let batch = timed(|| {
        let mut m = case.journal.begin("bench", "batch").unwrap();
        let bytes = format!("batch {round}");
        let files: Vec<(&str, &[u8])> = TARGETS.iter().map(|t| (*t, bytes.as_bytes())).collect();
        m.write_many(&files).unwrap();
        m.commit().unwrap();
    });
    let batch_fsyncs = case.journal.stats().fsyncs - before;
    let rollback = timed(|| {
        let mut m = case.journal.begin("bench", "rollback").unwrap();
        for target in TARGETS {
            m.write(target, format!("rollback {round}").as_bytes()).unwrap();
        }
        m.rollback().unwrap();
    });
    let snapshot = (case.files == 20_000).then(|| {
        let backup = root.with_extension("snapshot");
        let _ = fs::remove_dir_all(&backup);
        let cost = timed(|| {
            hardlink_tree(&root, &backup);
            for target in TARGETS {
                atomic_write(&root.join(target), format!("snapshot {round}").as_bytes());
            }
        });
        let _ = fs::remove_dir_all(&backup);
        cost
    });
    if !record {
        return;
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    case.commit.baseline.push(ms(baseline));
    case.commit.keel.push(ms(commit));
    case.batch.baseline.push(ms(baseline));
    case.batch.keel.push(ms(batch));
    case.rollback.baseline.push(ms(baseline));
    case.rollback.keel.push(ms(rollback));
    if let Some(snapshot) = snapshot {
        case.snapshot.baseline.push(ms(snapshot));
        case.snapshot.keel.push(ms(commit));
        case.batch_snapshot.baseline.push(ms(snapshot));
        case.batch_snapshot.keel.push(ms(batch));
    }
    case.fsyncs.push(fsyncs);
    case.batch_fsyncs.push(batch_fsyncs);
}

/// `files` small files in folders of 100.
fn build_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n").repeat(8)).unwrap();
    }
}

/// A snapshot of the whole tree as OpenKB took it: every file hardlinked
/// into a backup folder (`.keel` left out), every folder made and fsynced.
fn hardlink_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".keel" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            hardlink_tree(&src, &dst);
        } else {
            fs::hard_link(&src, &dst).unwrap();
        }
    }
    File::open(to).unwrap().sync_all().unwrap();
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

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

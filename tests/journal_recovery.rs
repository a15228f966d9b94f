//! Recovery and bad input: tampered records, copied trees, a full disk,
//! ordering, operator resolution, and several processes on one root.

mod journal_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use journal_support::*;
use keel::journal::{FaultPlan, MutationStatus};
use keel::{ErrorKind, Journal};

/// Leaves an `active` record behind: the mutation's commit and rollback
/// both fail (every step from the commit on fails with `errno`).
fn crash_mutation(journal: &Journal, writes: &[(&str, &[u8])], errno: i32) -> u64 {
    let mut m = journal.begin("add", "doc").unwrap();
    for (path, bytes) in writes {
        m.write(path, bytes).unwrap();
    }
    let seq = m.seq();
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(0, errno))));
    assert!(m.commit().is_err());
    journal.set_fault_plan(None);
    seq
}

fn record_path(root: &Path, seq: u64) -> PathBuf {
    root.join(".keel/journal").join(format!("{seq:020}.json"))
}

fn backup_path(root: &Path, seq: u64, index: usize) -> PathBuf {
    root.join(".keel/journal").join(format!("{seq:020}.{index}"))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Rewrites a record's JSON body with `edit` and a valid checksum, as a
/// tamperer who knows the format would.
fn forge(root: &Path, seq: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = record_path(root, seq);
    let text = fs::read_to_string(&path).unwrap();
    let body = text.trim_end().rsplit_once('\n').unwrap().0;
    let mut value: serde_json::Value = serde_json::from_str(body).unwrap();
    edit(&mut value);
    let body = serde_json::to_string(&value).unwrap();
    fs::write(&path, format!("{body}\nfnv1a64:{:016x}\n", fnv1a64(body.as_bytes()))).unwrap();
}

fn seeded(tag: &str) -> (TempDir, Journal) {
    let dir = TempDir::new(tag);
    seed_tree(dir.path());
    let journal = Journal::open(dir.path()).unwrap();
    (dir, journal)
}

#[test]
fn an_interrupted_mutation_is_rolled_back_on_the_next_begin() {
    let (dir, journal) = seeded("rb-begin");
    let before = capture(dir.path());
    crash_mutation(&journal, &[("readme.txt", b"v1"), ("n/new.txt", b"n")], libc::EIO);
    assert_ne!(capture(dir.path()), before);
    journal.begin("next", "").unwrap().commit().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());
}

#[test]
fn a_record_with_a_bad_checksum_is_quarantined_not_applied() {
    let (dir, journal) = seeded("checksum");
    let seq = crash_mutation(&journal, &[("readme.txt", b"v1")], libc::EIO);
    let path = record_path(dir.path(), seq);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    let report = journal.recover().unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert!(
        report.quarantined[0].reason.contains("checksum"),
        "{:?}",
        report.quarantined
    );
    assert_eq!(
        fs::read(dir.path().join("readme.txt")).unwrap(),
        b"v1",
        "an untrusted record is never applied"
    );
    let kept = dir.path().join(".keel/quarantine").join(&report.quarantined[0].folder);
    assert!(
        kept.join(format!("{seq:020}.0")).is_file(),
        "the backup is kept with the record"
    );
    assert_eq!(journal.status().unwrap().quarantined.len(), 1);
    journal.begin("next", "").unwrap().commit().unwrap();
}

#[test]
fn malformed_or_stray_records_never_brick_the_journal() {
    let (dir, journal) = seeded("garbage");
    let journal_dir = dir.path().join(".keel/journal");
    fs::write(journal_dir.join(format!("{:020}.json", 5)), b"{\"trunc").unwrap();
    fs::write(journal_dir.join(format!("{:020}.json", 6)), b"").unwrap();
    fs::write(journal_dir.join("notes.txt"), b"hello").unwrap();
    let report = journal.recover().unwrap();
    assert_eq!(report.quarantined.len(), 3);
    let mut m = journal.begin("next", "").unwrap();
    m.write("readme.txt", b"ok").unwrap();
    m.commit().unwrap();
}

#[test]
fn a_newer_format_record_blocks_mutations_until_resolved_and_is_never_touched() {
    let (dir, journal) = seeded("version");
    let seq = crash_mutation(&journal, &[("readme.txt", b"v1")], libc::EIO);
    forge(dir.path(), seq, |v| v["format"] = 99.into());
    let record = fs::read(record_path(dir.path(), seq)).unwrap();
    let err = journal.recover().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message().contains("format 99")
            && err
                .message()
                .contains(&format!("format {}", keel::journal::FORMAT_VERSION)),
        "{err}"
    );
    let begin = journal.begin("next", "").map(|_| ()).unwrap_err();
    assert_eq!(begin.kind(), ErrorKind::Unsupported, "{begin}");
    assert_eq!(journal.read().map(|_| ()).unwrap_err().kind(), ErrorKind::Unsupported);
    // Neither applied nor removed nor moved.
    assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"v1");
    assert_eq!(fs::read(record_path(dir.path(), seq)).unwrap(), record);
    assert!(backup_path(dir.path(), seq, 0).is_file());
    assert!(journal.status().unwrap().quarantined.is_empty());
    // An operator sets it aside; the tree stays as the newer build left it.
    journal.resolve(seq).unwrap();
    journal.begin("next", "").unwrap().commit().unwrap();
    assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"v1");
}

#[test]
fn forged_paths_outside_the_root_are_never_touched() {
    let outside = TempDir::new("victim");
    let victim = outside.path().join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let escapes = [
        format!(
            "../{}",
            victim.strip_prefix(outside.path().parent().unwrap()).unwrap().display()
        ),
        victim.display().to_string(),
        "a/../../victim.txt".to_owned(),
    ];
    for escape in escapes {
        let (dir, journal) = seeded("forged");
        let seq = crash_mutation(&journal, &[("n/new.txt", b"n")], libc::EIO);
        forge(dir.path(), seq, |v| v["entries"][0]["path"] = escape.clone().into());
        let report = journal.recover().unwrap();
        assert_eq!(report.quarantined.len(), 1, "{escape}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{escape}");
    }
}

#[test]
fn recovery_never_follows_a_symlink_out_of_the_root() {
    let outside = TempDir::new("victim-dir");
    fs::write(outside.path().join("x"), b"precious").unwrap();
    let (dir, journal) = seeded("through-link");
    let seq = crash_mutation(&journal, &[("n/x", b"n")], libc::EIO);
    // The record now says "remove link/x", and `link` points outside.
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    forge(dir.path(), seq, |v| v["entries"][0]["path"] = "link/x".into());
    journal.recover().unwrap();
    assert_eq!(fs::read(outside.path().join("x")).unwrap(), b"precious");
}

#[test]
fn a_copied_or_moved_trees_records_are_recovered_in_place() {
    let (dir, journal) = seeded("copied");
    let before = capture(dir.path());
    crash_mutation(&journal, &[("readme.txt", b"v1"), ("new/file", b"n")], libc::EIO);
    let copy = TempDir::new("copied-copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(copy.path())
        .status();
    assert!(status.unwrap().success());
    let copied = Journal::open(copy.path()).unwrap();
    let status = copied.status().unwrap();
    assert!(status.pending.is_empty() && status.quarantined.is_empty(), "{status:?}");
    assert_eq!(copied.last_recovery().unwrap().rolled_back.len(), 1);
    assert_eq!(capture(copy.path()), before, "the copy is rolled back where it is");
    assert_eq!(
        fs::read(dir.path().join("readme.txt")).unwrap(),
        b"v1",
        "the original is untouched by the copy's recovery"
    );
    // Moved: the original, renamed, recovers in place too.
    let moved = TempDir::new("copied-moved");
    fs::remove_dir(moved.path()).unwrap();
    drop(journal);
    fs::rename(dir.path(), moved.path()).unwrap();
    let journal = Journal::open(moved.path()).unwrap();
    assert_eq!(journal.last_recovery().unwrap().rolled_back.len(), 1);
    assert_eq!(capture(moved.path()), before);
    journal.begin("next", "").unwrap().commit().unwrap();
}

#[test]
fn a_full_disk_during_recovery_deletes_nothing_and_refuses_mutations() {
    let (dir, journal) = seeded("enospc");
    let before = capture(dir.path());
    let seq = crash_mutation(&journal, &[("readme.txt", b"v1"), ("bin/tool", b"v1")], libc::ENOSPC);
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(0, libc::ENOSPC))));
    let err = journal.recover().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    // The disk is still full when the next mutation's recovery restores.
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching_all(&[
        ("restore/link", libc::ENOSPC),
        ("restore/create", libc::ENOSPC),
    ]))));
    assert_eq!(journal.begin("next", "").unwrap_err().kind(), ErrorKind::Conflict);
    journal.set_fault_plan(None);
    assert!(record_path(dir.path(), seq).exists(), "the record is kept");
    assert!(backup_path(dir.path(), seq, 0).exists(), "the backup is kept");
    let status = journal.status().unwrap();
    assert!(status.last_recovery_error.is_some());
    assert_eq!(status.pending[0].status, MutationStatus::Active);
    let report = journal.recover().unwrap();
    assert_eq!(report.rolled_back, [seq]);
    assert_eq!(capture(dir.path()), before);
    assert!(journal.status().unwrap().last_recovery_error.is_none());
}

#[test]
fn a_failed_rollback_reports_every_failing_path_and_keeps_going() {
    let (dir, journal) = seeded("all-failures");
    let mut m = journal.begin("edit", "").unwrap();
    m.write("readme.txt", b"v1").unwrap();
    m.write("bin/tool", b"v1").unwrap();
    m.write("secret/key", b"v1").unwrap();
    // Remove two backups: those entries cannot be restored, the third can.
    let seq = m.seq();
    fs::remove_file(backup_path(dir.path(), seq, 0)).unwrap();
    fs::remove_file(backup_path(dir.path(), seq, 2)).unwrap();
    let err = m.rollback().unwrap_err();
    assert!(
        err.message().contains("readme.txt") && err.message().contains("secret/key"),
        "{err}"
    );
    assert_eq!(
        fs::read(dir.path().join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert!(record_path(dir.path(), seq).exists());
    assert_eq!(journal.begin("next", "").unwrap_err().kind(), ErrorKind::Conflict);
    let moved = journal.resolve(seq).unwrap();
    assert!(moved.reason.contains("operator"));
    journal.begin("next", "").unwrap().commit().unwrap();
    assert_eq!(
        fs::read(dir.path().join("readme.txt")).unwrap(),
        b"v1",
        "resolve leaves the tree as it is"
    );
}

#[test]
fn active_records_are_rolled_back_newest_first() {
    let (dir, journal) = seeded("order");
    let keel = dir.path().join(".keel");
    let aside = TempDir::new("order-aside");
    let first = crash_mutation(&journal, &[("readme.txt", b"v1")], libc::EIO);
    fs::rename(keel.join("journal"), aside.path().join("journal")).unwrap();
    fs::create_dir(keel.join("journal")).unwrap();
    let second = crash_mutation(&journal, &[("readme.txt", b"v2")], libc::EIO);
    assert!(second > first);
    for entry in fs::read_dir(aside.path().join("journal")).unwrap() {
        let entry = entry.unwrap();
        fs::rename(entry.path(), keel.join("journal").join(entry.file_name())).unwrap();
    }
    let report = journal.recover().unwrap();
    assert_eq!(report.rolled_back, [second, first]);
    assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"hello");
}

#[test]
fn orphan_staging_and_backup_folders_are_reaped() {
    let (dir, journal) = seeded("orphans");
    let keel = dir.path().join(".keel");
    fs::create_dir_all(keel.join("staging/123/sub")).unwrap();
    fs::write(keel.join("staging/123/sub/f"), b"x").unwrap();
    fs::create_dir_all(keel.join("journal").join(format!("{:020}.0", 77))).unwrap();
    fs::write(keel.join("journal").join(format!("{:020}.1", 77)), b"orphan backup").unwrap();
    fs::create_dir_all(keel.join("trash/78")).unwrap();
    let report = journal.recover().unwrap();
    assert_eq!(report.reaped, 4);
    assert_state_clean(dir.path());
}

/// The child side of the multi-process test: increments a counter file.
#[test]
fn counter_child() {
    let Ok(root) = std::env::var("KEEL_COUNTER_ROOT") else {
        return;
    };
    let journal = Journal::open(&root).unwrap();
    for _ in 0..15 {
        let mut m = journal.begin("count", "").unwrap();
        let n: u64 = fs::read_to_string(Path::new(&root).join("count"))
            .map(|s| s.parse().unwrap())
            .unwrap_or(0);
        m.write("count", (n + 1).to_string().as_bytes()).unwrap();
        m.commit().unwrap();
    }
}

#[test]
fn processes_never_mutate_one_root_at_once() {
    let dir = TempDir::new("processes");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "counter_child", "--test-threads=1"])
                .env("KEEL_COUNTER_ROOT", dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap(), "45");
    assert_state_clean(dir.path());
}

/// The child side of the try_begin test: holds a mutation until stdin closes.
#[test]
fn holder_child() {
    let Ok(root) = std::env::var("KEEL_HOLDER_ROOT") else {
        return;
    };
    let journal = Journal::open(&root).unwrap();
    let mut m = journal.begin("hold", "").unwrap();
    m.write("held.txt", b"held").unwrap();
    println!("HELD");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest).unwrap();
    m.commit().unwrap();
}

#[test]
fn try_begin_returns_none_while_another_process_or_thread_holds_the_root() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("try-begin");
    let journal = Journal::open(dir.path()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder_child", "--nocapture", "--test-threads=1"])
        .env("KEEL_HOLDER_ROOT", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|line| line.unwrap().contains("HELD")));
    assert!(
        journal.try_begin("mine", "").unwrap().is_none(),
        "another process holds the root"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let m = journal.try_begin("mine", "").unwrap().expect("free now");
    assert_eq!(fs::read(dir.path().join("held.txt")).unwrap(), b"held");
    let other = journal.clone();
    let from_thread = std::thread::spawn(move || other.try_begin("theirs", "").unwrap().is_none());
    assert!(from_thread.join().unwrap(), "another thread holds the root");
    assert_eq!(
        journal.try_begin("again", "").unwrap_err().kind(),
        ErrorKind::WouldDeadlock
    );
    m.commit().unwrap();
}

#[test]
fn a_reader_recovers_an_interrupted_mutation_before_reading() {
    let (dir, journal) = seeded("reader-recovers");
    let before = capture(dir.path());
    crash_mutation(&journal, &[("readme.txt", b"uncommitted")], libc::EIO);
    let _guard = journal.read().unwrap();
    assert_eq!(capture(dir.path()), before);
}

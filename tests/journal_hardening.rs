//! Recovery never makes things worse: forked children, tampered state,
//! refused removals, in-place edits, unknown records, modes and links.

mod journal_support;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use journal_support::*;
use keel::journal::FaultPlan;
use keel::{ErrorKind, Journal};

fn seeded(tag: &str) -> (TempDir, Journal) {
    let dir = TempDir::new(tag);
    seed_tree(dir.path());
    let journal = Journal::open(dir.path()).unwrap();
    (dir, journal)
}

fn journal_dir(root: &Path) -> PathBuf {
    root.join(".keel/journal")
}

fn backup_path(root: &Path, seq: u64, index: usize) -> PathBuf {
    journal_dir(root).join(format!("{seq:020}.{index}"))
}

fn record_path(root: &Path, seq: u64) -> PathBuf {
    journal_dir(root).join(format!("{seq:020}.json"))
}

/// Whether another open file description can take the root's lock now.
fn lock_is_free(root: &Path) -> bool {
    let file = fs::File::open(root.join(".keel/lock")).unwrap();
    // SAFETY: the descriptor is open for the call; flock has no other preconditions.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

// ---- only the owner process ends a mutation --------------------------------

#[test]
fn a_forked_child_dropping_or_ending_a_mutation_leaves_the_tree_and_the_lock_alone() {
    let (dir, journal) = seeded("fork");
    let mut m = journal.begin("ingest", "").unwrap();
    m.write("readme.txt", b"parent v1").unwrap();
    let mut slot = Some(m);
    for how in ["drop", "rollback", "commit"] {
        // SAFETY: the child only ends its copy of the mutation and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let copy = slot.take().unwrap();
            let code = match how {
                "drop" => {
                    drop(copy);
                    0
                }
                "rollback" => i32::from(copy.rollback().map_err(|e| e.kind()) != Err(ErrorKind::Closed)),
                _ => i32::from(copy.commit().map_err(|e| e.kind()) != Err(ErrorKind::Closed)),
            };
            // SAFETY: ends the child at once, running no parent destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{how}: {status}"
        );
        assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"parent v1", "{how}");
        assert!(!lock_is_free(dir.path()), "{how}: the child released the parent's lock");
    }
    let mut m = slot.take().unwrap();
    m.write("bin/tool", b"parent v2").unwrap();
    m.commit().unwrap();
    assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"parent v1");
    assert_eq!(fs::read(dir.path().join("bin/tool")).unwrap(), b"parent v2");
    assert!(lock_is_free(dir.path()));
}

// ---- nothing under .keel is trusted blindly --------------------------------

/// What is planted.
#[derive(Debug, Clone, Copy)]
enum Plant {
    /// A symlink to something outside the root.
    Symlink,
    Fifo,
    /// A regular file keel did not write: a hardlink to an outside file.
    Foreign,
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

fn plant(path: &Path, what: Plant, outside: &Path) {
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path).unwrap();
    } else if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).unwrap();
    }
    match what {
        Plant::Symlink => symlink(outside, path).unwrap(),
        Plant::Fifo => mkfifo(path),
        Plant::Foreign => fs::hard_link(outside.join("victim.txt"), path).unwrap(),
    }
}

/// An interrupted mutation: readme.txt rewritten (file backup 0) and a
/// declared folder wiki/pages changed (folder backup 1), record active.
fn interrupt(journal: &Journal) -> u64 {
    let mut m = journal.begin("ingest", "").unwrap();
    m.write("readme.txt", b"v1").unwrap();
    m.declare(&["wiki/pages"]).unwrap();
    let pages = journal.root().join("wiki/pages");
    fs::write(pages.join(".t"), b"# A v1").unwrap();
    fs::rename(pages.join(".t"), pages.join("a.md")).unwrap();
    let seq = m.seq();
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(0, libc::EIO))));
    assert!(m.commit().is_err());
    journal.set_fault_plan(None);
    seq
}

#[test]
fn tampered_state_blocks_recovery_with_a_clear_error_and_touches_nothing() {
    let mut checked = 0;
    for live in ["interrupted", "idle"] {
        for location in [
            "record",
            "file backup",
            "folder backup entry",
            "trash",
            "staging",
            "temp record",
        ] {
            if live == "idle" && location.contains("backup") {
                continue;
            }
            for what in [Plant::Symlink, Plant::Fifo, Plant::Foreign] {
                let context = format!("{live} / {location} / {what:?}");
                let (dir, journal) = seeded("tamper");
                let outside = TempDir::new("tamper-outside");
                fs::write(outside.path().join("victim.txt"), b"outside").unwrap();
                let seq = if live == "interrupted" {
                    interrupt(&journal)
                } else {
                    4242
                };
                drop(journal);
                let keel = dir.path().join(".keel");
                let spot = match location {
                    "record" => record_path(dir.path(), seq),
                    "file backup" => backup_path(dir.path(), seq, 0),
                    "folder backup entry" => backup_path(dir.path(), seq, 1).join("a.md"),
                    "trash" => keel.join("trash").join(seq.to_string()),
                    "staging" => keel.join("staging").join(seq.to_string()),
                    _ => journal_dir(dir.path()).join(format!("{seq:020}.json.tmp")),
                };
                // A foreign regular file is a record or temp record keel
                // quarantines or removes as damage; elsewhere it is planted.
                if matches!(what, Plant::Foreign) && matches!(location, "record" | "temp record") {
                    continue;
                }
                plant(&spot, what, outside.path());
                let tree = capture(dir.path());
                let outside_before = capture(outside.path());
                // Opening, status and begin never hang, never follow, and
                // refuse with a clear error while the plant is there.
                let journal = Journal::open(dir.path()).unwrap();
                let status = journal.status().unwrap();
                assert!(
                    !status.problems.is_empty() || status.last_recovery_error.is_some(),
                    "{context}: {status:?}"
                );
                let err = journal.begin("next", "").map(|_| ()).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Conflict, "{context}: {err}");
                assert!(err.message().contains("nothing touched"), "{context}: {err}");
                assert!(journal.recover().is_err(), "{context}");
                assert_eq!(capture(dir.path()), tree, "{context}: the tree was touched");
                assert_eq!(
                    capture(outside.path()),
                    outside_before,
                    "{context}: outside was touched"
                );
                assert!(fs::symlink_metadata(&spot).is_ok(), "{context}: the plant was removed");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn a_fifo_or_symlink_as_the_lock_file_is_refused_without_hanging() {
    for what in [Plant::Fifo, Plant::Symlink] {
        let (dir, journal) = seeded("tamper-lock");
        drop(journal);
        let outside = TempDir::new("tamper-lock-outside");
        fs::write(outside.path().join("victim.txt"), b"outside").unwrap();
        let lock = dir.path().join(".keel/lock");
        fs::remove_file(&lock).unwrap();
        plant(&lock, what, &outside.path().join("victim.txt"));
        let err = Journal::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what:?}: {err}");
    }
}

// ---- one refused removal does not wedge the journal ------------------------

#[test]
fn a_refused_removal_whose_rollback_cannot_rewrite_the_folder_still_finishes() {
    let (dir, journal) = seeded("eacces");
    let before = capture(dir.path());
    // The hardlink snapshot is refused (so the backup is a copy), the
    // removal is refused, and so is every write in the file's folder.
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching_all(&[
        ("snapshot/link", libc::EACCES),
        ("mutate/unlink", libc::EACCES),
        ("restore/link", libc::EACCES),
        ("restore/create", libc::EACCES),
        ("restore/rename", libc::EACCES),
    ]))));
    let mut m = journal.begin("remove", "").unwrap();
    let err = m.remove("readme.txt").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    m.rollback().unwrap();
    journal.set_fault_plan(None);
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());
    journal.begin("next", "").unwrap().commit().unwrap();
}

// ---- tampered backups -----------------------------------------------------

#[test]
fn a_backup_replaced_by_a_same_sized_file_is_refused_by_its_checksum() {
    let (dir, journal) = seeded("tamper-crc");
    let seq = interrupt(&journal);
    fs::remove_file(backup_path(dir.path(), seq, 0)).unwrap();
    fs::write(backup_path(dir.path(), seq, 0), b"HELLO").unwrap();
    let tree = capture(dir.path());
    let err = journal.recover().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.message().contains("checksum"), "{err}");
    assert_eq!(capture(dir.path()), tree);
    assert!(journal.status().unwrap().last_recovery_error.is_some());
    assert_eq!(
        journal.begin("x", "").map(|_| ()).unwrap_err().kind(),
        ErrorKind::Conflict
    );
}

// ---- unknown record values block like a newer format ------------------------

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn an_unknown_status_or_kind_blocks_and_is_never_quarantined() {
    for (field, value) in [("status", "paused"), ("kind", "reflink")] {
        let (dir, journal) = seeded("unknown");
        let seq = interrupt(&journal);
        let path = record_path(dir.path(), seq);
        let text = fs::read_to_string(&path).unwrap();
        let body = text.trim_end().rsplit_once('\n').unwrap().0;
        let mut json: serde_json::Value = serde_json::from_str(body).unwrap();
        match field {
            "status" => json["status"] = value.into(),
            _ => json["entries"][0]["kind"] = value.into(),
        }
        let body = serde_json::to_string(&json).unwrap();
        fs::write(&path, format!("{body}\nfnv1a64:{:016x}\n", fnv1a64(body.as_bytes()))).unwrap();
        let written = fs::read(&path).unwrap();
        let tree = capture(dir.path());
        assert_eq!(journal.recover().unwrap_err().kind(), ErrorKind::Unsupported, "{field}");
        assert_eq!(
            journal.begin("x", "").map(|_| ()).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(fs::read(&path).unwrap(), written, "{field}: kept as written");
        assert_eq!(capture(dir.path()), tree);
        assert!(journal.status().unwrap().quarantined.is_empty());
    }
}

// ---- declared folders are durable before the commit point -------------------

#[test]
fn files_the_caller_wrote_in_a_declared_folder_are_fsynced_before_commit() {
    let (dir, journal) = seeded("declared-sync");
    let before = capture(dir.path());
    let mut m = journal.begin("edit", "").unwrap();
    m.declare(&["wiki/pages"]).unwrap();
    fs::write(dir.path().join("wiki/pages/added.md"), b"added").unwrap();
    // If the caller's file cannot be made durable, the commit fails and
    // rolls back: it never claims a commit that a power loss could undo.
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching("mutate/fsync", libc::EIO))));
    let err = m.commit().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    journal.set_fault_plan(None);
    assert_eq!(capture(dir.path()), before);
    // And only what changed is fsynced: the untouched files are skipped.
    let mut m = journal.begin("edit", "").unwrap();
    m.declare(&["wiki/pages"]).unwrap();
    fs::write(dir.path().join("wiki/pages/added.md"), b"added").unwrap();
    let plan = Arc::new(FaultPlan::count());
    journal.set_fault_plan(Some(Arc::clone(&plan)));
    m.commit().unwrap();
    let file_syncs = plan.steps().iter().filter(|s| s.name == "mutate/fsync").count();
    assert_eq!(file_syncs, 1, "{:?}", plan.steps());
}

// ---- in-place edits that keep size and mtime --------------------------------

#[test]
fn an_in_place_edit_keeping_size_and_mtime_is_detected_on_rollback() {
    let (dir, journal) = seeded("same-size");
    let mut m = journal.begin("edit", "").unwrap();
    m.declare(&["wiki/pages"]).unwrap();
    let page = dir.path().join("wiki/pages/a.md");
    let mtime = fs::metadata(&page).unwrap().modified().unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(&page).unwrap();
    std::io::Write::write_all(&mut file, b"# X").unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_eq!(fs::metadata(&page).unwrap().len(), 3);
    let err = m.rollback().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.message().contains("a.md"), "{err}");
}

// ---- publish keeps modes; every "cannot link here" falls back to a copy -------

#[test]
fn a_published_file_keeps_the_mode_of_the_file_it_replaces() {
    let (dir, journal) = seeded("publish-mode");
    let mut m = journal.begin("publish", "").unwrap();
    let staging = m.staging_dir().unwrap();
    fs::write(staging.join("tool"), b"#!/bin/sh\necho v2\n").unwrap();
    fs::set_permissions(staging.join("tool"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(staging.join("new"), b"n").unwrap();
    fs::set_permissions(staging.join("new"), fs::Permissions::from_mode(0o640)).unwrap();
    m.publish("bin").unwrap();
    m.commit().unwrap();
    let mode = |p: &str| fs::metadata(dir.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o755);
    assert_eq!(mode("bin/new"), 0o640, "a new file keeps its staged mode");
}

#[test]
fn einval_from_link_falls_back_to_a_copy() {
    let (dir, journal) = seeded("einval");
    let before = capture(dir.path());
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching("snapshot/link", libc::EINVAL))));
    let mut m = journal.begin("remove", "").unwrap();
    m.remove("wiki/pages").unwrap();
    m.write("readme.txt", b"v2").unwrap();
    m.rollback().unwrap();
    journal.set_fault_plan(None);
    assert_eq!(capture(dir.path()), before);
}

// ---- opening never hides what it did ---------------------------------------

#[test]
fn the_recovery_report_of_an_open_is_kept() {
    let (dir, journal) = seeded("report");
    let seq = interrupt(&journal);
    drop(journal);
    let journal = Journal::open(dir.path()).unwrap();
    let report = journal.last_recovery().expect("open ran a recovery");
    assert_eq!(report.rolled_back, [seq]);
    assert_eq!(journal.status().unwrap().last_recovery, Some(report));
}

#[test]
fn a_state_folder_replaced_by_a_symlink_fifo_or_file_is_refused_and_inspect_never_hangs() {
    let mut checked = 0;
    for folder in ["", "journal", "staging", "trash", "quarantine"] {
        for what in [Plant::Symlink, Plant::Fifo, Plant::Foreign] {
            let context = format!(".keel/{folder} / {what:?}");
            let (dir, journal) = seeded("tamper-dirs");
            drop(journal);
            let outside = TempDir::new("tamper-dirs-outside");
            fs::write(outside.path().join("victim.txt"), b"outside").unwrap();
            let spot = match folder {
                "" => dir.path().join(".keel"),
                folder => dir.path().join(".keel").join(folder),
            };
            plant(&spot, what, outside.path());
            let tree = capture(dir.path());
            let err = Journal::open(dir.path()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{context}: {err}");
            let status = Journal::inspect(dir.path()).unwrap();
            assert!(!status.problems.is_empty(), "{context}: {status:?}");
            assert_eq!(capture(dir.path()), tree, "{context}");
            assert_eq!(fs::read(outside.path().join("victim.txt")).unwrap(), b"outside");
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

#[test]
fn inspect_changes_nothing_and_shows_an_interrupted_mutation() {
    let (dir, journal) = seeded("inspect");
    let seq = interrupt(&journal);
    drop(journal);
    let state = |root: &Path| {
        let mut all = capture(&root.join(".keel"));
        all.extend(capture(root));
        all
    };
    let before = state(dir.path());
    let status = Journal::inspect(dir.path()).unwrap();
    assert_eq!(status.pending.len(), 1);
    assert_eq!(status.pending[0].seq, seq);
    assert_eq!(status.pending[0].status, keel::journal::MutationStatus::Active);
    assert!(status.problems.is_empty(), "{:?}", status.problems);
    assert_eq!(state(dir.path()), before, "inspect wrote something");
    let fresh = TempDir::new("inspect-fresh");
    assert_eq!(
        Journal::inspect(fresh.path()).unwrap(),
        keel::journal::JournalStatus::default()
    );
    assert!(!fresh.path().join(".keel").exists(), "inspect created .keel");
}

#[test]
fn a_state_folder_swapped_for_a_symlink_after_open_refuses_the_next_mutation() {
    for folder in ["journal", "trash", "staging"] {
        let (dir, journal) = seeded("swap-after-open");
        let outside = TempDir::new("swap-after-open-outside");
        let spot = dir.path().join(".keel").join(folder);
        fs::remove_dir(&spot).unwrap();
        symlink(outside.path(), &spot).unwrap();
        let err = journal.begin("next", "").map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{folder}: {err}");
        assert!(err.message().contains("symlink"), "{folder}: {err}");
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{folder}: wrote outside"
        );
    }
}

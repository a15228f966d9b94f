//! The journal's protocol, one behaviour per test.

mod journal_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use journal_support::*;
use keel::journal::MutationStatus;
use keel::{ErrorKind, Journal};

fn seeded(tag: &str) -> (TempDir, Journal) {
    let dir = TempDir::new(tag);
    seed_tree(dir.path());
    let journal = Journal::open(dir.path()).unwrap();
    (dir, journal)
}

/// Applies the standard set of changes through a mutation.
fn change_everything(m: &mut keel::Mutation) {
    m.write("readme.txt", b"changed").unwrap();
    m.write("new/deep/file.txt", b"new file").unwrap();
    m.remove("bin/tool").unwrap();
    m.rename("wiki/pages/b.md", "wiki/b-moved.md").unwrap();
    m.symlink("wiki/latest", "pages/deep/c.md").unwrap();
    m.create_dir("made/here").unwrap();
    m.remove("wiki/pages/deep").unwrap();
    m.write("outside", b"replaces the symlink, not /etc/hostname").unwrap();
}

#[test]
fn commit_applies_every_change_and_leaves_no_state() {
    let (dir, journal) = seeded("commit");
    let mut m = journal.begin("edit", "all kinds").unwrap();
    change_everything(&mut m);
    m.commit().unwrap();
    let tree = capture(dir.path());
    assert_eq!(
        tree["readme.txt"],
        Node::File {
            mode: 0o644,
            bytes: b"changed".to_vec()
        }
    );
    assert!(!tree.contains_key("bin/tool"));
    assert!(tree.contains_key("wiki/b-moved.md"));
    assert!(!tree.contains_key("wiki/pages/deep/c.md"));
    assert_eq!(tree["wiki/latest"], Node::Symlink("pages/deep/c.md".into()));
    assert!(matches!(tree["made/here"], Node::Dir { .. }));
    assert!(matches!(tree["outside"], Node::File { .. }));
    assert_ne!(
        fs::read("/etc/hostname").ok(),
        Some(b"replaces the symlink, not /etc/hostname".to_vec())
    );
    assert_state_clean(dir.path());
}

#[test]
fn rollback_and_drop_restore_the_exact_tree() {
    let (dir, journal) = seeded("rollback");
    let before = capture(dir.path());
    let mut m = journal.begin("edit", "").unwrap();
    change_everything(&mut m);
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());

    let mut m = journal.begin("edit", "").unwrap();
    change_everything(&mut m);
    drop(m);
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());
}

#[test]
fn new_files_get_the_umask_mode_and_replaced_files_keep_theirs() {
    let (dir, journal) = seeded("modes");
    let mut m = journal.begin("modes", "").unwrap();
    m.write("bin/tool", b"v2").unwrap();
    m.write("secret/key", b"v2").unwrap();
    m.write("fresh.txt", b"new").unwrap();
    m.commit().unwrap();
    let mode = |rel: &str| fs::metadata(dir.path().join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o755);
    assert_eq!(mode("secret/key"), 0o600);
    // SAFETY: umask only reads and sets the process mask; restored at once.
    let umask = unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    };
    assert_eq!(mode("fresh.txt"), 0o666 & !(umask as u32));
}

#[test]
fn snapshots_cover_only_what_is_touched() {
    let (_dir, journal) = seeded("lazy");
    let mut m = journal.begin("edit", "").unwrap();
    m.write("wiki/pages/a.md", b"x").unwrap();
    m.write("wiki/pages/a.md", b"y").unwrap();
    m.write("n1/n2/n3.txt", b"z").unwrap();
    m.write("n1/other.txt", b"z").unwrap();
    assert_eq!(m.touched(), ["wiki/pages/a.md", "n1"]);
    m.commit().unwrap();
}

#[test]
fn bad_paths_are_refused_and_change_nothing() {
    let (dir, journal) = seeded("badpaths");
    let before = capture(dir.path());
    let mut m = journal.begin("edit", "").unwrap();
    for bad in [
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a\0b",
        "",
        ".keel/lock",
        "a//b",
    ] {
        assert_eq!(
            m.write(bad, b"x").unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    // Through a symlinked folder: refused, never followed.
    fs::create_dir(dir.path().join("realdir")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("realdir"), dir.path().join("linkdir")).unwrap();
    let before_links = capture(dir.path());
    assert_eq!(
        m.write("linkdir/x", b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(m.remove("readme.txt/x").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(m.remove("missing").unwrap_err().kind(), ErrorKind::NotFound);
    // Argument errors leave the mutation usable.
    m.write("ok.txt", b"ok").unwrap();
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before_links);
    assert_ne!(before, before_links);
}

#[test]
fn a_declared_folder_is_hardlinked_and_restored_by_inode_diff() {
    let (dir, journal) = seeded("declared");
    let pages = dir.path().join("wiki/pages");
    let ino = |rel: &str| fs::symlink_metadata(pages.join(rel)).unwrap().ino();
    let untouched = ino("deep/c.md");
    let before = capture(dir.path());
    let mut m = journal.begin("compile", "").unwrap();
    m.declare(&["wiki/pages", "wiki/index.md", "not/yet"]).unwrap();
    // The caller changes the folder itself, replacing files (new inodes).
    let replace = |rel: &str, bytes: &[u8]| {
        let tmp = pages.join("tmp");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, pages.join(rel)).unwrap();
    };
    replace("a.md", b"# A v2");
    replace("new.md", b"# new");
    fs::remove_file(pages.join("b.md")).unwrap();
    fs::set_permissions(&pages, fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(dir.path().join("wiki/index.md"), b"index v2").unwrap();
    fs::create_dir_all(dir.path().join("not/yet")).unwrap();
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_eq!(ino("deep/c.md"), untouched, "an untouched file must not be rewritten");
    assert_state_clean(dir.path());
}

#[test]
fn staged_files_are_published_by_rename() {
    let (dir, journal) = seeded("publish");
    let before = capture(dir.path());
    let mut m = journal.begin("add", "doc").unwrap();
    let staging = m.staging_dir().unwrap();
    assert!(staging.starts_with(dir.path().join(".keel/staging")));
    fs::create_dir_all(staging.join("pages/sub")).unwrap();
    fs::write(staging.join("pages/a.md"), b"# A staged").unwrap();
    fs::write(staging.join("pages/sub/s.md"), b"# S").unwrap();
    fs::write(staging.join("index.md"), b"index staged").unwrap();
    m.publish("wiki").unwrap();
    let after = capture(dir.path());
    assert_eq!(
        after["wiki/pages/a.md"],
        Node::File {
            mode: 0o644,
            bytes: b"# A staged".to_vec()
        }
    );
    assert!(after.contains_key("wiki/pages/sub/s.md"));
    assert!(
        after.contains_key("wiki/pages/b.md"),
        "publish merges into existing folders"
    );
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());
}

#[test]
fn a_symlinked_state_folder_is_refused() {
    let dir = TempDir::new("symkeel");
    let elsewhere = TempDir::new("symkeel-target");
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(".keel")).unwrap();
    assert_eq!(
        Journal::open(dir.path()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    let dir = TempDir::new("symlock");
    Journal::open(dir.path()).unwrap();
    let lock = dir.path().join(".keel/lock");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("victim"), &lock).unwrap();
    assert!(
        Journal::open(dir.path()).is_err(),
        "a symlinked lock file must be refused"
    );
}

#[test]
fn threads_never_hold_a_mutation_at_once() {
    let (dir, journal) = seeded("threads");
    let journal = Arc::new(journal);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let mut m = journal.begin("count", "").unwrap();
                    let path = m.touched().len(); // nothing touched yet
                    assert_eq!(path, 0);
                    let root = journal.root().to_path_buf();
                    let n: u64 = fs::read_to_string(root.join("count"))
                        .map(|s| s.parse().unwrap())
                        .unwrap_or(0);
                    m.write("count", (n + 1).to_string().as_bytes()).unwrap();
                    m.commit().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap(), "40");
}

#[test]
fn a_second_handle_in_the_same_process_is_serialized_too() {
    let (dir, journal) = seeded("handles");
    let other = Journal::open(dir.path()).unwrap();
    let m = journal.begin("first", "").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let m2 = other.begin("second", "").unwrap();
        tx.send(()).unwrap();
        m2.commit().unwrap();
    });
    assert!(rx.try_recv().is_err(), "second begin must wait for the first mutation");
    m.commit().unwrap();
    rx.recv().unwrap();
    waiter.join().unwrap();
}

#[test]
fn readers_see_only_committed_states() {
    let (dir, journal) = seeded("readers");
    let mut m = journal.begin("edit", "").unwrap();
    m.write("readme.txt", b"uncommitted").unwrap();
    let reader_journal = journal.clone();
    let root = dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let _guard = reader_journal.read().unwrap();
        fs::read(root.join("readme.txt")).unwrap()
    });
    m.rollback().unwrap();
    assert_eq!(reader.join().unwrap(), b"hello");
}

#[test]
fn status_lists_an_active_mutation() {
    let (_dir, journal) = seeded("status");
    let mut m = journal.begin("add", "doc.pdf").unwrap();
    m.write("readme.txt", b"x").unwrap();
    let status = journal.status().unwrap();
    assert_eq!(status.pending.len(), 1);
    assert_eq!(status.pending[0].status, MutationStatus::Active);
    assert_eq!(status.pending[0].operation, "add");
    assert_eq!(status.pending[0].paths, ["readme.txt"]);
    m.commit().unwrap();
    assert!(journal.status().unwrap().pending.is_empty());
}

#[test]
fn an_in_place_edit_of_a_hardlinked_file_is_reported_not_hidden() {
    let (dir, journal) = seeded("inplace");
    let pages = dir.path().join("wiki/pages");
    let mut m = journal.begin("compile", "").unwrap();
    m.declare(&["wiki/pages"]).unwrap();
    // In place: same inode, so the hardlinked backup changes too.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(pages.join("a.md"))
        .unwrap();
    std::io::Write::write_all(&mut file, b"# edited in place, longer").unwrap();
    drop(file);
    fs::write(pages.join("added.md"), b"new").unwrap();
    let seq = m.seq();
    let err = m.rollback().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.message().contains("wiki/pages/a.md") && err.message().contains("in place"),
        "{err}"
    );
    // Everything else was still restored, and the record stays for an operator.
    assert!(!pages.join("added.md").exists());
    assert_eq!(journal.status().unwrap().pending[0].seq, seq);
    journal.resolve(seq).unwrap();
    journal.begin("next", "").unwrap().commit().unwrap();
}

#[test]
fn asking_again_on_the_holding_thread_is_would_deadlock_not_a_hang() {
    let (dir, journal) = seeded("reentrant");
    let m = journal.begin("first", "").unwrap();
    assert_eq!(
        journal.begin("second", "").unwrap_err().kind(),
        ErrorKind::WouldDeadlock
    );
    assert_eq!(journal.read().unwrap_err().kind(), ErrorKind::WouldDeadlock);
    // Another handle of the same root in this thread: the same lock.
    let other = Journal::open(dir.path()).unwrap();
    assert_eq!(other.begin("third", "").unwrap_err().kind(), ErrorKind::WouldDeadlock);
    m.commit().unwrap();
    let guard = journal.read().unwrap();
    assert_eq!(
        journal.begin("fourth", "").unwrap_err().kind(),
        ErrorKind::WouldDeadlock
    );
    drop(guard);
    journal.begin("fifth", "").unwrap().commit().unwrap();
}

#[test]
fn folders_with_non_utf8_names_are_restored() {
    use std::os::unix::ffi::OsStrExt;
    let (dir, journal) = seeded("non-utf8");
    let odd = dir
        .path()
        .join("wiki/pages")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.md"));
    fs::write(&odd, b"latin-1 name").unwrap();
    let before = capture(dir.path());
    let mut m = journal.begin("edit", "").unwrap();
    m.remove("wiki/pages").unwrap();
    m.write("wiki/pages/new.md", b"new").unwrap();
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
}

#[test]
fn publish_falls_back_to_an_fsynced_copy_across_devices() {
    use keel::journal::FaultPlan;
    let (dir, journal) = seeded("exdev");
    let mut m = journal.begin("add", "").unwrap();
    let staging = m.staging_dir().unwrap();
    fs::create_dir_all(staging.join("pages/new")).unwrap();
    fs::write(staging.join("pages/a.md"), b"# A staged").unwrap();
    fs::write(staging.join("pages/new/n.md"), b"# N").unwrap();
    // Every rename of a staged item fails as if it crossed devices.
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching("publish/rename", libc::EXDEV))));
    m.publish("wiki").unwrap();
    journal.set_fault_plan(None);
    m.commit().unwrap();
    let tree = capture(dir.path());
    assert_eq!(
        tree["wiki/pages/a.md"],
        Node::File {
            mode: 0o644,
            bytes: b"# A staged".to_vec()
        }
    );
    assert!(tree.contains_key("wiki/pages/new/n.md"));
    assert!(!tree.keys().any(|k| k.contains("keel-tmp")), "no temp file is left");
    assert_state_clean(dir.path());
}

#[test]
fn a_folder_that_cannot_be_hardlinked_is_copied_and_restored_by_content() {
    use keel::journal::FaultPlan;
    for errno in [
        libc::EXDEV,
        libc::EPERM,
        libc::EACCES,
        libc::EMLINK,
        libc::EOPNOTSUPP,
        libc::ENOSYS,
    ] {
        let (dir, journal) = seeded("nolink");
        let pages = dir.path().join("wiki/pages");
        let before = capture(dir.path());
        let mut m = journal.begin("compile", "").unwrap();
        journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching("snapshot/link", errno))));
        m.declare(&["wiki/pages"]).unwrap();
        journal.set_fault_plan(None);
        // With a copy, even in-place edits are safe.
        fs::write(pages.join("a.md"), b"edited in place").unwrap();
        fs::remove_file(pages.join("b.md")).unwrap();
        m.rollback().unwrap();
        assert_eq!(capture(dir.path()), before, "errno {errno}");
    }
}

#[test]
fn other_hardlink_errors_fail_the_snapshot_and_change_nothing() {
    use keel::journal::FaultPlan;
    let (dir, journal) = seeded("linkerr");
    let before = capture(dir.path());
    let mut m = journal.begin("compile", "").unwrap();
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_matching("snapshot/link", libc::EIO))));
    assert_eq!(m.declare(&["wiki/pages"]).unwrap_err().kind(), ErrorKind::Io);
    journal.set_fault_plan(None);
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());
}

#[test]
fn counters_count_what_happened_and_show_in_the_stats_registry() {
    let (dir, journal) = seeded("counters");
    let mut m = journal.begin("add", "").unwrap();
    m.write("readme.txt", b"v2").unwrap();
    m.commit().unwrap();
    let mut m = journal.begin("add", "").unwrap();
    m.write("readme.txt", b"v3").unwrap();
    drop(m);
    let stats = journal.stats();
    assert_eq!((stats.committed, stats.rolled_back, stats.recovery_failures), (1, 1, 0));
    assert!(stats.fsyncs > 0);
    let root = journal.root().to_string_lossy().into_owned();
    let all = keel::stats::gather();
    let mine = all["journal"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["root"] == root.as_str())
        .unwrap();
    assert_eq!(mine["committed"], 1);
    assert_eq!(mine["blocked"], false);
    drop(dir);
}

#[test]
fn timed_begin_and_read_give_up_when_the_root_stays_held() {
    let (dir, journal) = seeded("timed");
    let other = Journal::open(dir.path()).unwrap();
    let (taken, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let m = other.begin("hold", "").unwrap();
            taken.wait();
            release.wait();
            m.rollback().unwrap();
        });
        taken.wait();
        let slice = std::time::Duration::from_millis(20);
        assert!(journal.begin_timeout("wait", "", slice).unwrap().is_none());
        assert!(journal.read_timeout(slice).unwrap().is_none());
        assert!(journal.read_timeout(std::time::Duration::ZERO).unwrap().is_none());
        release.wait();
    });
    let m = journal
        .begin_timeout("after", "", std::time::Duration::from_secs(30))
        .unwrap()
        .expect("the root is free again");
    m.commit().unwrap();
    assert!(journal.read_timeout(std::time::Duration::ZERO).unwrap().is_some());
}

/// fsyncs of one committed mutation writing `files` through `write` each.
fn fsyncs_of(journal: &Journal, change: impl FnOnce(&mut keel::Mutation)) -> u64 {
    let before = journal.stats().fsyncs;
    let mut m = journal.begin("count", "").unwrap();
    change(&mut m);
    m.commit().unwrap();
    journal.stats().fsyncs - before
}

#[test]
fn fsyncs_per_commit_are_what_the_protocol_needs() {
    let (_dir, journal) = seeded("fsyncs");
    let three = [("bin/tool", b"v2"), ("secret/key", b"v2"), ("wiki/index.md", b"v2")];
    // One by one, per file: the record rewritten (its file and the journal
    // folder); then, together, each new file and each changed folder; then
    // the commit point.
    let single = fsyncs_of(&journal, |m| {
        for (path, bytes) in three {
            m.write(path, bytes).unwrap();
        }
    });
    assert_eq!(single, 3 * 2 + 3 + 3 + 1);
    let single = fsyncs_of(&journal, |m| {
        for (path, bytes) in [("wiki/a", b"1"), ("wiki/b", b"2"), ("wiki/index.md", b"3")] {
            m.write(path, bytes).unwrap();
        }
    });
    assert_eq!(single, 3 * 2 + 3 + 1 + 1);
    // In one batch: one record write, the 3 files, their 3 folders, the commit.
    let batch = fsyncs_of(&journal, |m| m.write_many(&three).unwrap());
    assert_eq!(batch, 2 + 3 + 3 + 1);
    // Three files of one folder: that folder once.
    let one_folder = [("wiki/a", b"1"), ("wiki/b", b"2"), ("wiki/index.md", b"3")];
    let batch = fsyncs_of(&journal, |m| m.write_many(&one_folder).unwrap());
    assert_eq!(batch, 2 + 3 + 1 + 1);
}

#[test]
fn write_many_writes_like_write_and_rolls_back_exactly() {
    let (dir, journal) = seeded("write_many");
    let before = capture(dir.path());
    let files: [(&str, &[u8]); 5] = [
        ("bin/tool", b"v2"),
        ("new/deep/file.txt", b"new"),
        ("new/deep/other.txt", b"other"),
        ("wiki/latest", b"a file where a symlink was"),
        ("bin/tool", b"v3"),
    ];
    let mut m = journal.begin("batch", "").unwrap();
    m.write_many(&files).unwrap();
    assert_eq!(m.touched(), ["bin/tool", "new", "wiki/latest"]);
    m.rollback().unwrap();
    assert_eq!(capture(dir.path()), before);
    assert_state_clean(dir.path());

    let mut m = journal.begin("batch", "").unwrap();
    m.write_many(&files).unwrap();
    m.commit().unwrap();
    let tree = capture(dir.path());
    assert_eq!(
        tree["bin/tool"],
        Node::File {
            mode: 0o755,
            bytes: b"v3".to_vec()
        }
    );
    assert!(matches!(&tree["new/deep/other.txt"], Node::File { bytes, .. } if bytes == b"other"));
    assert!(matches!(&tree["wiki/latest"], Node::File { .. }));
    assert_state_clean(dir.path());
}

#[test]
fn write_many_refuses_a_bad_batch_before_changing_anything() {
    let (dir, journal) = seeded("write_many_bad");
    let before = capture(dir.path());
    let mut m = journal.begin("batch", "").unwrap();
    let bad: [&[(&str, &[u8])]; 4] = [
        &[("readme.txt", b"x"), ("wiki/pages", b"a folder")],
        &[("readme.txt", b"x"), ("outside/x", b"through a symlink")],
        &[("readme.txt", b"x"), ("readme.txt/x", b"inside a file")],
        &[("n/a", b"x"), ("n", b"an ancestor of another path")],
    ];
    for batch in bad {
        let err = m.write_many(batch).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{batch:?}");
        assert_eq!(capture(dir.path()), before);
        assert!(m.touched().is_empty());
    }
    // Still usable: argument errors do not fail the mutation.
    m.write_many(&[("readme.txt", b"ok")]).unwrap();
    m.commit().unwrap();
    assert_eq!(fs::read(dir.path().join("readme.txt")).unwrap(), b"ok");
}

//! Open batches (calls arriving one at a time, as from a host language's
//! `with` block): commit, abort, isolation, atomic calls, no self-deadlock.

use std::thread;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::ErrorKind;

fn open(name: &str) -> Drive {
    let dir = std::env::temp_dir().join(format!("keel-drive-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Drive::open(&dir.join("drive.lmdb"), &DriveOptions::default()).unwrap()
}

#[test]
fn an_open_batch_commits_everything_at_once() {
    let drive = open("commit");
    let batch = drive.begin_batch().unwrap();
    let a = batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("a"))).unwrap();
    let a_id = a.id;
    batch.run(move |b| b.create(a_id, &NewItem::named("b"))).unwrap();
    assert_eq!(
        batch.run(|b| b.resolve("a/b")).unwrap().len(),
        2,
        "the batch sees its own writes"
    );
    assert!(drive.resolve("a").is_err(), "others do not, before commit");
    batch.commit().unwrap();
    assert_eq!(drive.resolve("a/b").unwrap().len(), 2);
    assert_eq!(drive.get(a.id).unwrap().children, 1);
}

#[test]
fn aborting_or_dropping_an_open_batch_writes_nothing() {
    let drive = open("abort");
    let batch = drive.begin_batch().unwrap();
    batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("a"))).unwrap();
    batch.abort();
    let dropped = drive.begin_batch().unwrap();
    dropped.run(|b| b.create(ItemId::ROOT, &NewItem::named("b"))).unwrap();
    drop(dropped);
    assert!(drive.children(ItemId::ROOT, None, 10).unwrap().is_empty());
    // The drive is writable again afterwards, from this thread.
    drive.create(ItemId::ROOT, &NewItem::named("c")).unwrap();
}

#[test]
fn a_failed_call_leaves_nothing_half_done_and_the_batch_goes_on() {
    let drive = open("atomic-call");
    drive.make_path("a/b").unwrap();
    let batch = drive.begin_batch().unwrap();
    // Moving `a` under its own child fails after nothing, or after some
    // checks; either way the batch must hold no trace of it.
    let err = batch
        .run(|b| {
            let steps = b.resolve("a/b")?;
            b.move_item(steps[0].id, steps[1].id, None)
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("c"))).unwrap();
    batch.commit().unwrap();
    assert_eq!(drive.path_of(drive.resolve("a/b").unwrap()[1].id).unwrap(), "a/b");
    assert!(drive.resolve("c").is_ok());
}

#[test]
fn a_plain_write_beside_an_open_batch_on_the_same_thread_is_would_deadlock() {
    let drive = open("deadlock");
    let batch = drive.begin_batch().unwrap();
    let err = drive.create(ItemId::ROOT, &NewItem::named("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock);
    assert_eq!(drive.begin_batch().unwrap_err().kind(), ErrorKind::WouldDeadlock);
    // Reads are fine (they see the last commit).
    assert!(drive.children(ItemId::ROOT, None, 10).unwrap().is_empty());
    // Another thread's write waits for the batch and then succeeds.
    let other = {
        let drive = drive.clone();
        thread::spawn(move || drive.create(ItemId::ROOT, &NewItem::named("from-other")).map(|i| i.id))
    };
    batch
        .run(|b| b.create(ItemId::ROOT, &NewItem::named("in-batch")))
        .unwrap();
    batch.commit().unwrap();
    other.join().unwrap().unwrap();
    assert_eq!(drive.children(ItemId::ROOT, None, 10).unwrap().len(), 2);
    drive.create(ItemId::ROOT, &NewItem::named("after")).unwrap();
}

#[test]
fn a_checked_open_batch_enforces_levels() {
    let drive = open("checked");
    let view = drive.as_user("nobody", &[]);
    let batch = view.begin_batch().unwrap();
    let err = batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("x"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    batch.commit().unwrap();
    assert!(drive.children(ItemId::ROOT, None, 10).unwrap().is_empty());
}

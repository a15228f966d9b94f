//! Open batches (calls arriving one at a time, as from a host language's
//! `with` block): commit, abort, isolation, atomic calls, no self-deadlock.

use std::thread;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::ErrorKind;

fn open(name: &str) -> Drive {
    let dir = std::env::temp_dir().join(format!("keel-drive-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap()
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
    batch.abort().unwrap();
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

#[test]
fn an_open_batch_is_used_only_by_the_thread_that_opened_it() {
    let drive = open("thread");
    let batch = drive.begin_batch().unwrap();
    batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("mine"))).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let call = batch.run(|b| b.create(ItemId::ROOT, &NewItem::named("theirs")));
            assert_eq!(call.unwrap_err().kind(), ErrorKind::WouldDeadlock);
            assert_eq!(batch.commit().unwrap_err().kind(), ErrorKind::WouldDeadlock);
            assert_eq!(batch.abort().unwrap_err().kind(), ErrorKind::WouldDeadlock);
        });
    });
    // Refused calls left it open and as it was.
    assert!(batch.is_open());
    batch.commit().unwrap();
    let names: Vec<String> = drive
        .children(ItemId::ROOT, None, 10)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(batch.commit().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn writers_queued_behind_an_open_batch_share_one_commit_after_it() {
    let drive = open("queued");
    let batch = drive.begin_batch().unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let drive = drive.clone();
            thread::spawn(move || drive.create(ItemId::ROOT, &NewItem::named(format!("w{t}"))).map(|_| ()))
        })
        .collect();
    // Wait until all four are queued behind the batch (no sleeps: poll the
    // queue the stats report).
    while drive.env().stats().queued_writes < 4 {
        thread::yield_now();
    }
    batch.commit().unwrap();
    for writer in writers {
        writer.join().unwrap().unwrap();
    }
    let stats = drive.env().stats();
    assert_eq!(stats.largest_batch, 4, "the queued writers went in one batch");
    assert_eq!(drive.children(ItemId::ROOT, None, 10).unwrap().len(), 4);
}

#[test]
fn apply_writes_everything_in_one_transaction_or_nothing() {
    use keel::drive::{Write, Written};
    let drive = open("apply");
    let folder = drive.create(ItemId::ROOT, &NewItem::named("f")).unwrap();
    let creates: Vec<Write> = (0..100)
        .map(|i| Write::Create {
            parent: folder.id,
            new: NewItem::typed(format!("n{i}"), "note"),
        })
        .collect();
    let before = drive.env().stats().batches;
    let written = drive.apply(&creates).unwrap();
    assert_eq!(drive.env().stats().batches, before + 1, "one commit for 100 writes");
    assert_eq!(written.len(), 100);
    let Written::Item(first) = &written[0] else {
        panic!("create gives an item")
    };
    assert_eq!(drive.get(folder.id).unwrap().children, 100);
    // A failing write (a duplicate name) undoes the ones before it.
    let failing = [
        Write::SetData {
            id: first.id,
            data: serde_json::json!({"v": 1}),
            version: None,
        },
        Write::Create {
            parent: folder.id,
            new: NewItem::named("N0"),
        },
    ];
    let err = drive.apply(&failing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.message().contains("write 1 (create)"), "{err}");
    assert_eq!(drive.get(first.id).unwrap().version, None, "the first write was undone");
    // In an open batch, apply is part of the batch.
    let batch = drive.begin_batch().unwrap();
    batch.apply(&failing[..1]).unwrap();
    batch.abort().unwrap();
    assert_eq!(drive.get(first.id).unwrap().version, None);
}

#[test]
fn an_open_batch_that_outgrows_the_map_fails_and_runs_again_after_growth() {
    let dir = std::env::temp_dir().join(format!("keel-drive-batch-grow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let options = DriveOptions {
        initial_map_size: 1 << 20,
        ..DriveOptions::default()
    };
    let drive = Drive::open(dir.join("drive.lmdb"), &options).unwrap();
    let note = drive.create(ItemId::ROOT, &NewItem::typed("n", "note")).unwrap();
    let big = serde_json::json!({"text": "x".repeat(100_000)});
    let fill = |batch: &keel::drive::OpenBatch| -> keel::Result<()> {
        for _ in 0..40 {
            batch.set_data(note.id, &big, None)?;
        }
        Ok(())
    };
    let batch = drive.begin_batch().unwrap();
    assert_eq!(fill(&batch).unwrap_err().kind(), ErrorKind::StorageFull);
    assert_eq!(batch.commit().unwrap_err().kind(), ErrorKind::StorageFull);
    assert!(drive.env().stats().map_growths >= 1);
    assert_eq!(drive.get(note.id).unwrap().version, None, "nothing was written");
    // The map keeps growing with each attempt until the batch fits.
    let mut attempts = 1;
    loop {
        let batch = drive.begin_batch().unwrap();
        match fill(&batch).and_then(|()| batch.commit()) {
            Ok(()) => break,
            Err(err) if err.kind() == ErrorKind::StorageFull && attempts < 10 => attempts += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert_eq!(drive.versions(note.id).unwrap().len(), 40);
    std::fs::remove_dir_all(&dir).ok();
}

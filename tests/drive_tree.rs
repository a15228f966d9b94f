//! Drive items, names and paths: what must and must never happen.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem, WalkOrder};
use keel::lmdb::{Env, EnvOptions, WriteFlags};
use keel::ErrorKind;
use serde_json::json;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-drive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(name: &str) -> Drive {
    Drive::open(temp_dir(name).join("drive.lmdb"), &DriveOptions::default()).unwrap()
}

fn names(items: &[keel::drive::Item]) -> Vec<&str> {
    items.iter().map(|item| item.name.as_str()).collect()
}

#[test]
fn items_are_created_found_by_id_and_by_path_ignoring_case() {
    let drive = open("basics");
    let users = drive.create(ItemId::ROOT, &NewItem::named("Users")).unwrap();
    assert_eq!(users.name, "Users", "the name keeps its case");
    assert_eq!(users.parent, ItemId::ROOT);
    let ann = drive.create_at("USERS", &NewItem::typed("Ann", "person")).unwrap();
    assert_eq!(ann.kind.as_deref(), Some("person"));
    let steps = drive.resolve(" /users/ANN/ ").unwrap();
    assert_eq!(steps.iter().map(|i| i.id).collect::<Vec<_>>(), [users.id, ann.id]);
    assert_eq!(drive.path_of(ann.id).unwrap(), "Users/Ann");
    assert_eq!(drive.get(ann.id).unwrap(), ann);
    assert_eq!(drive.get(users.id).unwrap().children, 1);
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 1);
    assert_eq!(drive.at_path("").unwrap().id, ItemId::ROOT);
}

#[test]
fn names_are_unique_within_a_parent_ignoring_case() {
    let drive = open("unique");
    let a = drive.create(ItemId::ROOT, &NewItem::named("Docs")).unwrap();
    let err = drive.create(ItemId::ROOT, &NewItem::named("DOCS")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.message().contains("DOCS"), "{err}");
    // Same name under another parent is fine.
    drive.create(a.id, &NewItem::named("docs")).unwrap();
    // make_path reuses existing steps whatever their case.
    let steps = drive.make_path("docs/DOCS/new").unwrap();
    assert_eq!(names(&steps), ["Docs", "docs", "new"]);
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 1);
}

#[test]
fn getting_with_the_wrong_type_is_a_conflict() {
    let drive = open("typed");
    let item = drive.create(ItemId::ROOT, &NewItem::typed("n", "note")).unwrap();
    assert_eq!(drive.get_typed(item.id, "note").unwrap().id, item.id);
    assert_eq!(
        drive.get_typed(item.id, "other").unwrap_err().kind(),
        ErrorKind::Conflict
    );
}

#[test]
fn missing_parents_and_steps_are_not_found_and_named() {
    let drive = open("missing");
    let ghost = ItemId::random().unwrap();
    let err = drive.create(ghost, &NewItem::named("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains(&ghost.to_string()));
    drive.make_path("a/b").unwrap();
    let err = drive.resolve("a/b/c/d").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.message().contains("step 3") && err.message().contains("\"c\""),
        "{err}"
    );
    let err = drive.create_at("a/nope", &NewItem::named("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("nope"), "{err}");
    assert_eq!(drive.get(ghost).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn bad_names_are_refused_up_front_and_store_nothing() {
    let drive = open("badnames");
    let wide = "𝔸".repeat(128); // 128 valid characters, 512 bytes: over LMDB's key limit
    for bad in ["", ".", "..", "a/b", " a", "a\0b", "a\nb", &"x".repeat(129), &wide] {
        let err = drive.create(ItemId::ROOT, &NewItem::named(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    for bad in ["a//b", "a/../b", "a\0"] {
        assert_eq!(
            drive.resolve(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        drive
            .create(ItemId::ROOT, &NewItem::typed("ok", "bad type"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 0);
    assert!(drive.children(ItemId::ROOT, None, 100).unwrap().is_empty());
    // The longest name that fits is accepted.
    let longest = "a".repeat(128);
    drive.create(ItemId::ROOT, &NewItem::named(longest.as_str())).unwrap();
}

#[test]
fn children_list_in_name_order_with_pagination() {
    let drive = open("children");
    for name in ["delta", "Alpha", "charlie", "Bravo", "echo"] {
        drive.create(ItemId::ROOT, &NewItem::named(name)).unwrap();
    }
    let all = drive.children(ItemId::ROOT, None, 100).unwrap();
    assert_eq!(names(&all), ["Alpha", "Bravo", "charlie", "delta", "echo"]);
    let page = drive.children(ItemId::ROOT, Some("bravo"), 2).unwrap();
    assert_eq!(names(&page), ["charlie", "delta"]);
    let last = drive.children(ItemId::ROOT, Some("DELTA"), 2).unwrap();
    assert_eq!(names(&last), ["echo"]);
    assert!(drive.children(ItemId::ROOT, Some("echo"), 2).unwrap().is_empty());
    assert!(drive.children(ItemId::ROOT, None, 0).unwrap().is_empty());
}

#[test]
fn walks_visit_children_before_parents_or_the_reverse() {
    let drive = open("walk");
    drive.make_path("a/b/c").unwrap();
    drive.make_path("a/d").unwrap();
    let a = drive.at_path("a").unwrap();
    let post = drive.walk(a.id, WalkOrder::ChildrenFirst).unwrap();
    assert_eq!(names(&post), ["c", "b", "d", "a"]);
    let pre = drive.walk(a.id, WalkOrder::ParentsFirst).unwrap();
    assert_eq!(names(&pre), ["a", "b", "c", "d"]);
    let everything = drive.walk(ItemId::ROOT, WalkOrder::ParentsFirst).unwrap();
    assert_eq!(everything.len(), 4, "the root itself is not an item of the walk");
}

#[test]
fn items_by_type_list_with_pagination_and_forget_deleted_items() {
    let drive = open("bytype");
    let mut ids: Vec<ItemId> = (0..5)
        .map(|i| {
            drive
                .create(ItemId::ROOT, &NewItem::typed(format!("n{i}"), "note"))
                .unwrap()
                .id
        })
        .collect();
    drive.create(ItemId::ROOT, &NewItem::typed("other", "image")).unwrap();
    ids.sort();
    let listed: Vec<ItemId> = drive.by_type("note", None, 100).unwrap().iter().map(|i| i.id).collect();
    assert_eq!(listed, ids);
    let page: Vec<ItemId> = drive
        .by_type("note", Some(ids[1]), 2)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(page, ids[2..4]);
    drive.delete(ids[0]).unwrap();
    assert_eq!(drive.by_type("note", None, 100).unwrap().len(), 4);
    assert!(drive.by_type("nothing", None, 100).unwrap().is_empty());
}

#[test]
fn move_and_rename_happen_in_one_call_and_keep_counts_exact() {
    let drive = open("move");
    let a = drive.create(ItemId::ROOT, &NewItem::named("a")).unwrap();
    let b = drive.create(ItemId::ROOT, &NewItem::named("b")).unwrap();
    let x = drive.create(a.id, &NewItem::named("x")).unwrap();
    let moved = drive.move_item(x.id, b.id, Some("Y")).unwrap();
    assert_eq!((moved.parent, moved.name.as_str()), (b.id, "Y"));
    assert_eq!(drive.get(a.id).unwrap().children, 0);
    assert_eq!(drive.get(b.id).unwrap().children, 1);
    assert_eq!(drive.resolve("b/y").unwrap()[1].id, x.id);
    assert_eq!(drive.resolve("a/x").unwrap_err().kind(), ErrorKind::NotFound);
    // Renaming within a folder (even just the case) never changes the count.
    drive.rename(x.id, "y").unwrap();
    drive.rename(x.id, "z").unwrap();
    assert_eq!(drive.get(b.id).unwrap().children, 1);
    assert_eq!(drive.path_of(x.id).unwrap(), "b/z");
    // A name taken in the target: refused, nothing moved.
    drive.create(a.id, &NewItem::named("Z")).unwrap();
    assert_eq!(
        drive.move_item(x.id, a.id, None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(drive.get(x.id).unwrap().parent, b.id);
    assert_eq!(drive.get(a.id).unwrap().children, 1);
    assert_eq!(drive.get(b.id).unwrap().children, 1);
}

#[test]
fn moving_an_item_under_itself_or_its_descendant_is_refused() {
    let drive = open("cycle");
    let steps = drive.make_path("a/b/c").unwrap();
    let (a, c) = (steps[0].id, steps[2].id);
    for target in [a, c] {
        let err = drive.move_item(a, target, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    assert_eq!(drive.path_of(c).unwrap(), "a/b/c", "nothing moved");
    assert_eq!(
        drive.move_item(ItemId::ROOT, a, None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // A move to a missing parent is NotFound.
    let ghost = ItemId::random().unwrap();
    assert_eq!(drive.move_item(c, ghost, None).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn delete_is_recursive_and_cleans_every_index() {
    let drive = open("delete");
    let steps = drive.make_path("a/b").unwrap();
    let note = drive.create(steps[1].id, &NewItem::typed("n", "note")).unwrap();
    drive.set_data(note.id, &json!({"v": 1}), None).unwrap();
    drive.create(ItemId::ROOT, &NewItem::named("keep")).unwrap();
    assert_eq!(drive.delete(steps[0].id).unwrap(), 3);
    assert_eq!(drive.get(note.id).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(drive.get_data(note.id, None).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(drive.by_type("note", None, 10).unwrap().is_empty());
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 1);
    // The name is free again.
    drive.create(ItemId::ROOT, &NewItem::named("A")).unwrap();
    assert_eq!(
        drive.delete(ItemId::ROOT).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(drive.delete(note.id).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_batch_is_all_or_nothing() {
    let drive = open("batch");
    let result: keel::Result<()> = drive.batch(|b| {
        let a = b.create(ItemId::ROOT, &NewItem::named("a"))?;
        b.create(a.id, &NewItem::named("b"))?;
        assert_eq!(b.resolve("a/b")?.len(), 2, "a batch sees its own writes");
        b.create(ItemId::ROOT, &NewItem::named("A"))?; // collides: undoes all
        Ok(())
    });
    assert_eq!(result.unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert!(drive.children(ItemId::ROOT, None, 10).unwrap().is_empty());
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 0);
    let made = drive
        .batch(|b| {
            let a = b.create(ItemId::ROOT, &NewItem::named("a"))?;
            b.create(a.id, &NewItem::named("b"))?;
            Ok(a.id)
        })
        .unwrap();
    assert_eq!(drive.get(made).unwrap().children, 1);
}

#[test]
fn concurrent_creators_share_commits_and_counts_stay_exact() {
    let drive = open("concurrent");
    let folder = drive.create(ItemId::ROOT, &NewItem::named("f")).unwrap();
    let start = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let (drive, start) = (drive.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for i in 0..25 {
                    drive.create(folder.id, &NewItem::named(format!("t{t}-{i}"))).unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(drive.get(folder.id).unwrap().children, 400);
    assert_eq!(drive.children(folder.id, None, 1000).unwrap().len(), 400);
    let stats = drive.env().stats();
    assert!(stats.batches < stats.writes, "{stats:?}");
}

#[test]
fn two_drives_of_one_file_share_the_environment() {
    let dir = temp_dir("shared");
    let a = Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap();
    let b = Drive::open(dir.join("./drive.lmdb"), &DriveOptions::default()).unwrap();
    assert!(a.env().same_as(b.env()));
    let item = a.create(ItemId::ROOT, &NewItem::named("x")).unwrap();
    assert_eq!(b.get(item.id).unwrap().name, "x");
}

#[test]
fn a_file_that_is_not_a_drive_is_corrupt_and_left_alone() {
    let dir = temp_dir("notadrive");
    let garbage = dir.join("garbage.lmdb");
    std::fs::write(&garbage, b"definitely not LMDB".repeat(1000)).unwrap();
    assert_eq!(
        Drive::open(&garbage, &DriveOptions::default()).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let other = dir.join("other.lmdb");
    {
        let env = Env::open(&other, &EnvOptions::default()).unwrap();
        let db = env.database("queue.jobs").unwrap();
        env.write(|txn| {
            txn.put(db, b"k", b"v", WriteFlags::empty())
                .map_err(|e| keel::lmdb::map_err("put", e))
        })
        .unwrap();
    }
    let err = Drive::open(&other, &DriveOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.message().contains("queue.jobs"), "{err}");
    let env = Env::open(&other, &EnvOptions::default()).unwrap();
    assert_eq!(
        env.database_names().unwrap(),
        ["queue.jobs"],
        "no drive tables were added"
    );
}

#[test]
fn a_backup_taken_in_use_opens_as_a_drive() {
    let dir = temp_dir("backup");
    let drive = Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap();
    let note = drive.create(ItemId::ROOT, &NewItem::typed("n", "note")).unwrap();
    drive.set_data(note.id, &json!({"a": 1}), None).unwrap();
    drive.backup(dir.join("copy.lmdb")).unwrap();
    let copy = Drive::open(dir.join("copy.lmdb"), &DriveOptions::default()).unwrap();
    assert_eq!(copy.get_data(note.id, None).unwrap().1, json!({"a": 1}));
    assert_eq!(copy.resolve("N").unwrap()[0].id, note.id);
}

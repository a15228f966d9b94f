//! The drive is correct where Synapse's was not: counts returned are the
//! counts stored, history is never overwritten by accident, names compare as
//! people expect them to, types need a schema when the drive says so, and
//! damaged values or counters are `Corrupt`, never a wrong answer or a panic.

use std::path::PathBuf;

use keel::drive::{Drive, DriveOptions, Item, ItemId, NewItem, Version};
use keel::lmdb::{map_err, seal, Codec, WriteFlags};
use keel::ErrorKind;
use serde_json::json;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-drive-correct-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open_with(name: &str, options: &DriveOptions) -> Drive {
    Drive::open(temp_dir(name).join("drive.lmdb"), options).unwrap()
}

fn open(name: &str) -> Drive {
    open_with(name, &DriveOptions::default())
}

/// Overwrites the raw stored bytes at `key` of `table` (damage, or a value
/// some other writer put there).
fn put_raw(drive: &Drive, table: &str, key: &[u8], value: &[u8]) {
    let db = drive.env().database(table).unwrap();
    drive
        .env()
        .write(|txn| {
            txn.put(db, &key, &value, WriteFlags::empty())
                .map_err(|e| map_err("put", e))
        })
        .unwrap();
}

#[test]
fn make_path_returns_the_child_counts_resolve_returns() {
    let drive = open("make-path-counts");
    let made = drive.make_path("a/b/c").unwrap();
    let resolved = drive.resolve("a/b/c").unwrap();
    assert_eq!(made, resolved);
    assert_eq!(made.iter().map(|item| item.children).collect::<Vec<_>>(), [1, 1, 0]);
    // Part of the path already there: the same holds.
    let made = drive.make_path("a/x/y").unwrap();
    assert_eq!(made, drive.resolve("a/x/y").unwrap());
    assert_eq!(made[0].children, 2);
}

#[test]
fn writing_a_stored_version_is_refused_unless_replaced() {
    let drive = open("no-overwrite");
    let note = drive.create(ItemId::ROOT, &NewItem::typed("n", "note")).unwrap();
    let v1 = Version::new(1, 0, 0);
    drive.set_data(note.id, &json!({"body": "first"}), Some(v1)).unwrap();
    let err = drive
        .set_data(note.id, &json!({"body": "lost?"}), Some(v1))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.message().contains("1.0.0"), "{err}");
    assert_eq!(drive.get_data(note.id, Some(v1)).unwrap().1, json!({"body": "first"}));
    // In a batch too.
    let err = drive
        .batch(|b| b.set_data(note.id, &json!({"body": "lost?"}), Some(v1)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    // Saying so replaces it.
    drive.replace_data(note.id, &json!({"body": "second"}), v1).unwrap();
    assert_eq!(drive.get_data(note.id, Some(v1)).unwrap().1, json!({"body": "second"}));
    assert_eq!(drive.versions(note.id).unwrap().len(), 1);
    // An older version that is not stored is still welcome (history filled in).
    drive
        .set_data(note.id, &json!({"body": "older"}), Some(Version::new(0, 9, 0)))
        .unwrap();
    assert_eq!(drive.get(note.id).unwrap().version, Some(v1));
}

#[test]
fn a_decomposed_name_is_its_composed_form() {
    let drive = open("nfc");
    let made = drive.create(ItemId::ROOT, &NewItem::named("Cafe\u{301}")).unwrap();
    assert_eq!(made.name, "Café", "stored composed");
    assert_eq!(drive.at_path("café").unwrap().id, made.id);
    assert_eq!(drive.at_path("CAFE\u{301}").unwrap().id, made.id);
    let err = drive.create(ItemId::ROOT, &NewItem::named("café")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn names_compare_with_full_case_folding() {
    let drive = open("casefold");
    let street = drive.create(ItemId::ROOT, &NewItem::named("Straße")).unwrap();
    assert_eq!(drive.at_path("STRASSE").unwrap().id, street.id);
    let err = drive.create(ItemId::ROOT, &NewItem::named("strasse")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "ß and ss are one name");
    let sisyphus = drive.create(ItemId::ROOT, &NewItem::named("Σίσυφος")).unwrap();
    assert_eq!(drive.at_path("ΣΊΣΥΦΟΣ").unwrap().id, sisyphus.id);
    assert_eq!(drive.at_path("σίσυφοσ").unwrap().id, sisyphus.id, "final sigma");
    // Renaming to a case variant of itself is fine; children stay ordered.
    drive.rename(street.id, "STRASSE").unwrap();
    assert_eq!(drive.get(ItemId::ROOT).unwrap().children, 2);
}

#[test]
fn names_allow_spaces_and_punctuation_people_use() {
    let drive = open("punctuation");
    let folder = drive
        .create(ItemId::ROOT, &NewItem::named("Q3 Reports (draft)"))
        .unwrap();
    let file = drive
        .create(
            folder.id,
            &NewItem::typed("Tom & Jerry's notes; v2, final+1: ok", "file"),
        )
        .unwrap();
    let found = drive
        .at_path("q3 reports (draft)/TOM & JERRY'S NOTES; V2, FINAL+1: OK")
        .unwrap();
    assert_eq!(found.id, file.id);
    assert_eq!(
        drive.path_of(file.id).unwrap(),
        "Q3 Reports (draft)/Tom & Jerry's notes; v2, final+1: ok"
    );
    for bad in [" lead", "trail ", "tab\there", "a/b", ".", ".."] {
        let err = drive.create(ItemId::ROOT, &NewItem::named(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn types_without_a_schema_are_allowed_by_default_and_refused_when_asked() {
    let lax = open("lax-types");
    lax.create(ItemId::ROOT, &NewItem::typed("x", "anything")).unwrap();

    let strict = open_with(
        "strict-types",
        &DriveOptions {
            allow_types_without_schema: false,
            ..DriveOptions::default()
        },
    );
    let err = strict.create(ItemId::ROOT, &NewItem::typed("x", "nots")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.message().contains("\"nots\"") && err.message().contains("schema"),
        "{err}"
    );
    assert!(strict.children(ItemId::ROOT, None, 10).unwrap().is_empty());
    strict.set_schema("note", &json!({"type": "object"}), 1, None).unwrap();
    strict.create(ItemId::ROOT, &NewItem::typed("x", "note")).unwrap();
    strict
        .create(ItemId::ROOT, &NewItem::named("untyped folders need none"))
        .unwrap();
}

#[test]
fn a_damaged_value_is_corrupt_naming_the_file_and_key() {
    let drive = open("checksum");
    let item = drive.create(ItemId::ROOT, &NewItem::named("victim")).unwrap();
    let key = item.id.as_bytes().to_vec();
    let db = drive.env().database("drive.items").unwrap();
    let mut stored = drive
        .env()
        .read(|txn| Ok(keel::lmdb::Transaction::get(txn, db, &key).unwrap().to_vec()))
        .unwrap();
    stored[5] ^= 0x01; // one bit of the record, which still decodes
    put_raw(&drive, "drive.items", &key, &stored);
    let err = drive.get(item.id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let message = err.message();
    assert!(message.contains(&drive.path().display().to_string()), "{err}");
    assert!(
        message.contains(&item.id.to_string()) && message.contains("checksum"),
        "{err}"
    );
    // Listing the parent meets it too: Corrupt, never a wrong item.
    assert_eq!(
        drive.children(ItemId::ROOT, None, 10).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn a_child_count_at_its_limit_is_corrupt_not_a_wrap_or_panic() {
    let drive = open("count-overflow");
    let folder = drive.create(ItemId::ROOT, &NewItem::named("f")).unwrap();
    let damaged = Item {
        children: u64::MAX,
        ..drive.get(folder.id).unwrap()
    };
    let key = folder.id.as_bytes().to_vec();
    put_raw(&drive, "drive.items", &key, &seal(&key, &damaged.to_bytes()));
    let err = drive.create(folder.id, &NewItem::named("one more")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.message().contains("child count"), "{err}");
    assert!(
        drive.children(folder.id, None, 10).unwrap().is_empty(),
        "nothing half-done"
    );
    // A count of 0 with a child to remove is damage too.
    let other = drive.create(ItemId::ROOT, &NewItem::named("g")).unwrap();
    let kid = drive.create(other.id, &NewItem::named("kid")).unwrap();
    let zeroed = Item {
        children: 0,
        ..drive.get(other.id).unwrap()
    };
    let key = other.id.as_bytes().to_vec();
    put_raw(&drive, "drive.items", &key, &seal(&key, &zeroed.to_bytes()));
    assert_eq!(drive.delete(kid.id).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn a_batch_that_outgrew_the_map_succeeds_when_run_again() {
    let drive = open_with(
        "batch-map-full",
        &DriveOptions {
            initial_map_size: 1 << 16,
            ..DriveOptions::default()
        },
    );
    let big = json!({"body": "x".repeat(4000)});
    let fill = |batch: &keel::drive::OpenBatch| -> keel::Result<()> {
        for n in 0..64 {
            let big = big.clone();
            batch.run(move |b| {
                let item = b.create(ItemId::ROOT, &NewItem::typed(format!("n{n}"), "note"))?;
                b.set_data(item.id, &big, None).map(|_| ())
            })?;
        }
        Ok(())
    };
    // As a `with` block does: a call fails, the block ends by aborting.
    let batch = drive.begin_batch().unwrap();
    let err = fill(&batch).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    batch.abort().unwrap();
    assert!(drive.children(ItemId::ROOT, None, 100).unwrap().is_empty());
    // Run again, it fits (the map grew, as often as it takes).
    let mut tries = 0;
    loop {
        tries += 1;
        let batch = drive.begin_batch().unwrap();
        match fill(&batch) {
            Ok(()) => break batch.commit().unwrap(),
            Err(err) if err.kind() == ErrorKind::StorageFull && tries < 10 => batch.abort().unwrap(),
            Err(err) => panic!("retry {tries}: {err}"),
        }
    }
    assert_eq!(drive.children(ItemId::ROOT, None, 100).unwrap().len(), 64);
}

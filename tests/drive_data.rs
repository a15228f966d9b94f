//! Typed, versioned data, schemas and migrations.

use keel::drive::{Drive, DriveOptions, Item, ItemId, Migration, NewItem, Version};
use keel::{Error, ErrorKind};
use serde_json::{json, Value};

fn open(name: &str) -> Drive {
    let dir = std::env::temp_dir().join(format!("keel-drive-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Drive::open(dir.join("drive.lmdb"), &DriveOptions::default()).unwrap()
}

fn note(drive: &Drive, name: &str) -> Item {
    drive.create(ItemId::ROOT, &NewItem::typed(name, "note")).unwrap()
}

const V: fn(u32, u32, u32) -> Version = Version::new;

#[test]
fn versions_default_to_the_next_patch_and_the_highest_is_current() {
    let drive = open("versions");
    let n = note(&drive, "n");
    assert_eq!(drive.set_data(n.id, &json!({"a": 1}), None).unwrap(), V(0, 0, 1));
    assert_eq!(drive.set_data(n.id, &json!({"a": 2}), None).unwrap(), V(0, 0, 2));
    assert_eq!(
        drive.set_data(n.id, &json!({"a": 3}), Some(V(1, 0, 0))).unwrap(),
        V(1, 0, 0)
    );
    // An older version written later does not become current.
    drive.set_data(n.id, &json!({"a": "old"}), Some(V(0, 5, 0))).unwrap();
    let item = drive.get(n.id).unwrap();
    assert_eq!(item.version, Some(V(1, 0, 0)));
    assert_eq!(item.data_size, json!({"a": 3}).to_string().len() as u64);
    assert_eq!(drive.get_data(n.id, None).unwrap(), (V(1, 0, 0), json!({"a": 3})));
    assert_eq!(drive.get_data(n.id, Some(V(0, 0, 1))).unwrap().1, json!({"a": 1}));
    assert_eq!(drive.set_data(n.id, &json!({"a": 4}), None).unwrap(), V(1, 0, 1));
    let (version, text) = drive.get_data_text(n.id, Some(V(0, 0, 2))).unwrap();
    assert_eq!(
        (version, serde_json::from_str::<Value>(&text).unwrap()),
        (V(0, 0, 2), json!({"a": 2}))
    );
    let listed: Vec<Version> = drive.versions(n.id).unwrap().iter().map(|v| v.version).collect();
    assert_eq!(
        listed,
        [V(1, 0, 1), V(1, 0, 0), V(0, 5, 0), V(0, 0, 2), V(0, 0, 1)],
        "newest first"
    );
}

#[test]
fn deleting_the_current_version_falls_back_to_the_highest_remaining() {
    let drive = open("fallback");
    let n = note(&drive, "n");
    for (i, version) in [V(0, 0, 1), V(0, 2, 0), V(0, 1, 0)].into_iter().enumerate() {
        drive.set_data(n.id, &json!({"i": i}), Some(version)).unwrap();
    }
    assert_eq!(drive.delete_data(n.id, V(0, 2, 0)).unwrap(), Some(V(0, 1, 0)));
    assert_eq!(drive.get_data(n.id, None).unwrap(), (V(0, 1, 0), json!({"i": 2})));
    assert_eq!(
        drive.get(n.id).unwrap().data_size,
        json!({"i": 2}).to_string().len() as u64
    );
    // Deleting an older one leaves the current alone.
    assert_eq!(drive.delete_data(n.id, V(0, 0, 1)).unwrap(), Some(V(0, 1, 0)));
    assert_eq!(drive.delete_data(n.id, V(0, 1, 0)).unwrap(), None);
    let item = drive.get(n.id).unwrap();
    assert_eq!((item.version, item.data_size), (None, 0));
    assert_eq!(drive.get_data(n.id, None).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        drive.delete_data(n.id, V(0, 1, 0)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The next default version starts over.
    assert_eq!(drive.set_data(n.id, &json!(1), None).unwrap(), V(0, 0, 1));
}

#[test]
fn untyped_items_carry_no_data() {
    let drive = open("untyped");
    let folder = drive.create(ItemId::ROOT, &NewItem::named("f")).unwrap();
    let err = drive.set_data(folder.id, &json!({}), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("no type"), "{err}");
    assert_eq!(drive.get_data(folder.id, None).unwrap_err().kind(), ErrorKind::NotFound);
    let ghost = ItemId::random().unwrap();
    assert_eq!(
        drive.set_data(ghost, &json!({}), None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

fn schema_v1() -> Value {
    json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]})
}

fn schema_v2() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}, "rev": {"type": "integer"}},
           "required": ["name", "rev"], "additionalProperties": false})
}

#[test]
fn schemas_check_every_write_with_an_error_naming_what_failed() {
    let drive = open("schema");
    assert!(drive.set_schema("note", &schema_v1(), 1, None).unwrap());
    let n = note(&drive, "n");
    drive.set_data(n.id, &json!({"title": "ok"}), None).unwrap();
    let err = drive.set_data(n.id, &json!({"title": 5}), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("/title"), "names the field: {err}");
    assert!(err.message().contains(&n.id.to_string()), "names the item: {err}");
    assert_eq!(drive.versions(n.id).unwrap().len(), 1, "nothing stored");
    // Other types are unconstrained.
    let other = drive.create(ItemId::ROOT, &NewItem::typed("o", "other")).unwrap();
    drive.set_data(other.id, &json!([1, 2]), None).unwrap();
    assert_eq!(drive.schema("note").unwrap(), Some((1, schema_v1())));
    assert_eq!(drive.schema("other").unwrap(), None);
}

#[test]
fn registering_the_same_version_is_a_no_op_and_a_lower_one_a_conflict() {
    let drive = open("schema-versions");
    assert!(drive.set_schema("note", &schema_v1(), 2, None).unwrap());
    assert!(
        !drive.set_schema("note", &schema_v2(), 2, None).unwrap(),
        "same version: no-op"
    );
    assert_eq!(drive.schema("note").unwrap(), Some((2, schema_v1())));
    let err = drive.set_schema("note", &schema_v2(), 1, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = drive.set_schema("note", &json!({"type": 12}), 3, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "not a valid JSON Schema: {err}");
    assert_eq!(drive.schema("note").unwrap().unwrap().0, 2);
}

fn migrate_v1_to_v2(step: &Migration<'_>, data: Value) -> keel::Result<Value> {
    let title = data["title"]
        .as_str()
        .ok_or_else(|| Error::invalid_argument("no title"))?;
    Ok(json!({"name": title, "rev": step.version.patch}))
}

#[test]
fn a_higher_schema_version_migrates_every_version_of_every_item() {
    let drive = open("migrate");
    drive.set_schema("note", &schema_v1(), 1, None).unwrap();
    let notes: Vec<Item> = (0..3).map(|i| note(&drive, &format!("n{i}"))).collect();
    for n in &notes {
        drive.set_data(n.id, &json!({"title": "first"}), None).unwrap();
        drive.set_data(n.id, &json!({"title": "second, longer"}), None).unwrap();
    }
    let mut calls = Vec::new();
    let mut migrate = |step: &Migration<'_>, data: Value| {
        assert_eq!((step.from_schema, step.to_schema), (Some(1), 2));
        calls.push((step.item.id, step.version));
        migrate_v1_to_v2(step, data)
    };
    assert!(drive.set_schema("note", &schema_v2(), 2, Some(&mut migrate)).unwrap());
    assert_eq!(calls.len(), 6, "every stored version of every item");
    for n in &notes {
        assert_eq!(
            drive.get_data(n.id, Some(V(0, 0, 1))).unwrap().1,
            json!({"name": "first", "rev": 1})
        );
        let (current, value) = drive.get_data(n.id, None).unwrap();
        assert_eq!(
            (current, &value),
            (V(0, 0, 2), &json!({"name": "second, longer", "rev": 2}))
        );
        assert_eq!(drive.get(n.id).unwrap().data_size, value.to_string().len() as u64);
    }
    // The new schema now checks writes.
    assert_eq!(
        drive
            .set_data(notes[0].id, &json!({"title": "x"}), None)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn a_failing_migration_changes_nothing_and_names_the_item_and_version() {
    let drive = open("migrate-fail");
    drive.set_schema("note", &schema_v1(), 1, None).unwrap();
    let good = note(&drive, "good");
    drive.set_data(good.id, &json!({"title": "fine"}), None).unwrap();
    let bad = note(&drive, "bad");
    drive.set_data(bad.id, &json!({"title": "fine"}), None).unwrap();
    drive
        .set_data(bad.id, &json!({"title": "poison"}), Some(V(0, 3, 0)))
        .unwrap();
    let before: Vec<_> = [good.id, bad.id]
        .iter()
        .map(|id| (drive.versions(*id).unwrap(), drive.get(*id).unwrap()))
        .collect();

    // 1: the callback fails.
    let mut failing = |step: &Migration<'_>, data: Value| {
        if data["title"] == "poison" {
            return Err(Error::invalid_argument("cannot convert poison"));
        }
        migrate_v1_to_v2(step, data)
    };
    let err = drive
        .set_schema("note", &schema_v2(), 2, Some(&mut failing))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.message().contains(&bad.id.to_string()) && err.message().contains("0.3.0"),
        "{err}"
    );
    assert!(err.message().contains("cannot convert poison"), "{err}");

    // 2: the callback's output fails the new schema.
    let mut sloppy = |_: &Migration<'_>, data: Value| Ok(data);
    let err = drive
        .set_schema("note", &schema_v2(), 2, Some(&mut sloppy))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("version 0.0.1"), "{err}");

    // Nothing changed: schema, data, sizes.
    assert_eq!(drive.schema("note").unwrap(), Some((1, schema_v1())));
    let after: Vec<_> = [good.id, bad.id]
        .iter()
        .map(|id| (drive.versions(*id).unwrap(), drive.get(*id).unwrap()))
        .collect();
    assert_eq!(before, after);
    assert_eq!(drive.get_data(good.id, None).unwrap().1, json!({"title": "fine"}));
    drive
        .set_data(good.id, &json!({"title": "v1 still checks"}), None)
        .unwrap();
}

#[test]
fn registering_without_a_migration_still_validates_stored_data() {
    let drive = open("migrate-none");
    let n = note(&drive, "n");
    drive.set_data(n.id, &json!({"title": "t"}), None).unwrap();
    let err = drive.set_schema("note", &schema_v2(), 1, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(drive.schema("note").unwrap(), None);
    assert!(drive.set_schema("note", &schema_v1(), 1, None).unwrap());
}

#[test]
fn data_and_schemas_in_a_batch_are_all_or_nothing() {
    let drive = open("batch");
    let n = note(&drive, "n");
    let result: keel::Result<()> = drive.batch(|b| {
        b.set_schema("note", &schema_v1(), 1, None)?;
        b.set_data(n.id, &json!({"title": "in batch"}), None)?;
        b.set_data(n.id, &json!({"bad": true}), None)?; // fails the schema set above
        Ok(())
    });
    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(drive.schema("note").unwrap(), None);
    assert!(drive.versions(n.id).unwrap().is_empty());
    // The uncommitted schema must not linger in any cache.
    drive.set_data(n.id, &json!({"bad": true}), None).unwrap();
}

//! A catalogue of documents in a drive: typed items with versioned data,
//! a schema upgrade that migrates every item in one transaction, and a
//! checked view that enforces permissions.

use std::collections::BTreeMap;

use keel::drive::{Drive, DriveOptions, ItemId, Level, NewItem, Permissions};
use keel::ErrorKind;
use serde_json::{json, Value};

fn main() -> keel::Result<()> {
    let dir = std::env::temp_dir().join(format!("keel-example-drive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| keel::Error::io("create the example's folder", e))?;
    let drive = Drive::open(dir.join("catalogue.drive"), &DriveOptions::default())?;

    let v1 = json!({"type": "object", "required": ["title", "words"]});
    drive.set_schema("document", &v1, 1, None)?;
    let docs = drive.create(ItemId::ROOT, &NewItem::named("Docs"))?;
    for (name, words) in [("intro", 120), ("design", 800)] {
        let item = drive.create_at("docs", &NewItem::typed(name, "document"))?;
        drive.set_data(item.id, &json!({"title": name, "words": words}), None)?;
        drive.set_data(item.id, &json!({"title": name, "words": words + 5}), None)?;
        // a second version
    }
    // A schema upgrade: every stored version of every document, in one transaction.
    let v2 = json!({"type": "object", "required": ["title", "word_count"]});
    let mut upgrade = |_: &keel::drive::Migration<'_>, data: Value| -> keel::Result<Value> {
        Ok(json!({"title": data["title"], "word_count": data["words"]}))
    };
    drive.set_schema("document", &v2, 2, Some(&mut upgrade))?;
    let design = drive.resolve("docs/DESIGN")?.pop().expect("the path has steps");
    let (version, data) = drive.get_data(design.id, None)?;
    println!("docs/design @ {version}: {data}");

    // Only editors may change documents: a reader's view refuses it.
    let permissions = Permissions {
        default: Some(Level::Read),
        users: BTreeMap::from([("ada".to_owned(), Level::Edit)]),
        roles: BTreeMap::new(),
    };
    drive.set_permissions(docs.id, &permissions)?;
    let reader = drive.as_user("bob", &[]);
    let refused = reader.set_data(design.id, &json!({"title": "x", "word_count": 1}), None);
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::PermissionDenied);
    drive
        .as_user("ada", &[])
        .set_data(design.id, &json!({"title": "design", "word_count": 900}), None)?;
    println!(
        "bob was refused, ada edited; {} children under docs",
        drive.get(docs.id)?.children
    );

    drive.backup(dir.join("catalogue.backup"))?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

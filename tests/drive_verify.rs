//! Verifying drive and operations files: a healthy file reports no problem,
//! damage is listed naming the table and key, and damage that would crash
//! LMDB ends the child doing the reading, never the caller.

use std::path::{Path, PathBuf};

use keel::drive::{self, Drive, DriveOptions, Item, NewItem};
use keel::lmdb::{map_err, seal, Codec, Transaction, WriteFlags};
use serde_json::json;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-drive-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(name: &str) -> Drive {
    let drive = Drive::open(temp_dir(name).join("drive.lmdb"), &DriveOptions::default()).unwrap();
    drive.set_schema("note", &json!({"type": "object"}), 1, None).unwrap();
    let docs = drive.make_path("Docs/2024").unwrap();
    for n in 0..20 {
        let note = drive
            .create(docs[1].id, &NewItem::typed(format!("note {n}"), "note"))
            .unwrap();
        drive
            .set_data(note.id, &json!({"n": n, "body": "x".repeat(n * 100)}), None)
            .unwrap();
    }
    drive
}

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
fn a_healthy_drive_verifies_with_every_table_walked() {
    let drive = sample("healthy");
    let report = drive.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.tables["drive.items"], 23, "root, two folders, 20 notes");
    assert_eq!(report.tables["drive.data"], 20);
    assert_eq!(report.tables["drive.schemas"], 1);
}

#[test]
fn a_value_that_fails_its_checksum_is_reported_by_table_and_key() {
    let drive = sample("checksum");
    let note = drive.at_path("docs/2024/note 3").unwrap();
    let key = note.id.as_bytes().to_vec();
    let db = drive.env().database("drive.items").unwrap();
    let mut stored = drive.env().read(|txn| Ok(txn.get(db, &key).unwrap().to_vec())).unwrap();
    stored[20] ^= 0x40;
    put_raw(&drive, "drive.items", &key, &stored);
    let report = drive.verify().unwrap();
    assert!(!report.is_ok());
    let listed = report.problems.join("\n");
    assert!(
        listed.contains("drive.items") && listed.contains("checksum"),
        "{listed}"
    );
}

#[test]
fn indexes_that_disagree_with_their_items_are_reported() {
    let drive = sample("indexes");
    let folder = drive.at_path("docs").unwrap();
    let wrong = Item {
        children: 7,
        ..folder.clone()
    };
    let key = folder.id.as_bytes().to_vec();
    put_raw(&drive, "drive.items", &key, &seal(&key, &wrong.to_bytes()));
    let report = drive.verify().unwrap();
    let listed = report.problems.join("\n");
    assert!(
        listed.contains(&format!("item {}: child count 7, but 1 children", folder.id)),
        "{listed}"
    );
    assert_eq!(report.problems.len(), 1, "{listed}");
}

#[test]
fn an_operations_file_is_walked_too() {
    let dir = temp_dir("ops");
    let path = dir.join("ops.lmdb");
    let queue = keel::ops::Queue::open(&path).unwrap();
    queue.enqueue("k", "{}", &Default::default()).unwrap();
    let report = drive::verify_file(&path).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report.tables.keys().any(|name| name.starts_with("keel.")),
        "{:?}",
        report.tables
    );
}

#[test]
fn a_check_that_crashes_ends_the_child_and_is_reported() {
    let drive = sample("crash");
    fn crash(
        _: &keel::lmdb::RoTransaction<'_>,
        _: &std::collections::BTreeMap<String, keel::lmdb::Database>,
        _: &'static Path,
        _: &mut keel::lmdb::verify::Report,
    ) {
        // What LMDB does on a page pointing outside the map: the process
        // dies of SIGSEGV (std's handler only catches stack overflows).
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
    }
    let report = keel::lmdb::verify::verify(drive.path(), &[crash]).unwrap();
    assert!(!report.is_ok());
    assert!(report.problems[0].contains("SIGSEGV"), "{:?}", report.problems);
    // The child died holding a reader slot; it is cleared, not left to pin pages.
    assert_eq!(drive.env().clear_stale_readers().unwrap(), 1);
    // And this process goes on.
    assert!(drive.verify().unwrap().is_ok());
}

/// Scribbles over pages of a copy of the file, again and again: each time
/// verification returns a report (never a crash here), and a healthy copy
/// is never reported damaged.
#[test]
fn scribbled_pages_give_a_report_never_a_crash() {
    let drive = sample("scribble");
    let dir = temp_dir("scribble-copies");
    let clean = dir.join("clean.lmdb");
    drive.backup(&clean).unwrap();
    assert!(drive::verify_file(&clean).unwrap().is_ok());
    let bytes = std::fs::read(&clean).unwrap();
    let pages = bytes.len() / 4096;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut found, mut crashed) = (0, 0);
    for round in 0..24 {
        let mut damaged = bytes.clone();
        // Leave the two meta pages: damage there is refused at open.
        let page = 2 + (next() as usize) % (pages - 2);
        for _ in 0..8 {
            let at = page * 4096 + (next() as usize) % 4096;
            damaged[at] = next() as u8;
        }
        let path = dir.join(format!("damaged-{round}.lmdb"));
        std::fs::write(&path, &damaged).unwrap();
        let report = drive::verify_file(&path).unwrap();
        found += usize::from(!report.is_ok());
        crashed += usize::from(report.problems.iter().any(|p| p.contains("crashed")));
        let _ = std::fs::remove_file(&path);
    }
    eprintln!("scribbled 24 copies: {found} reported damaged, {crashed} of them by crashing the verifier");
    assert!(found > 0, "some damage was found");
}

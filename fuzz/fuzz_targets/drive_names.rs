//! Drive names and paths from arbitrary text, against a real drive: no
//! panic; every error is a typed one; a name that is accepted is found again
//! by its path (and by its NFC and NFD forms), and its path reads back as
//! its stored name.
#![no_main]

use std::sync::OnceLock;

use keel_core as keel;
use keel_core::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel_core::lmdb::Durability;
use keel_core::ErrorKind;
use libfuzzer_sys::fuzz_target;

fn drive() -> &'static Drive {
    static DRIVE: OnceLock<Drive> = OnceLock::new();
    DRIVE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keel-fuzz-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = DriveOptions {
            durability: Durability::NoSyncRisksLastCommits,
            ..DriveOptions::default()
        };
        Drive::open(&dir.join("drive.lmdb"), &options).expect("open the fuzz drive")
    })
}

fn typed(err: &keel::Error) {
    assert_ne!(err.kind(), ErrorKind::Panic, "{err}");
    assert_ne!(err.kind(), ErrorKind::Io, "bad input must not be an I/O error: {err}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let drive = drive();
    if let Err(err) = drive.resolve(text) {
        typed(&err);
    }
    match drive.create(ItemId::ROOT, &NewItem::named(text)) {
        Ok(item) => {
            assert_eq!(drive.at_path(&item.name).expect("found by its stored name").id, item.id);
            assert_eq!(drive.at_path(text).expect("found by the name given").id, item.id);
            assert_eq!(drive.path_of(item.id).unwrap(), item.name);
            let err = drive.create(ItemId::ROOT, &NewItem::named(text)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
            drive.delete(item.id).unwrap();
        }
        Err(err) => typed(&err),
    }
    match drive.make_path(text) {
        Ok(steps) => {
            let resolved = drive.resolve(text).expect("a made path resolves");
            assert_eq!(steps, resolved, "make_path returns what resolve sees");
            if let Some(first) = steps.first() {
                drive.delete(first.id).unwrap();
            }
        }
        Err(err) => typed(&err),
    }
});

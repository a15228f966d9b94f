//! A full disk is `StorageFull`, never `IoError`, and loses nothing that was
//! committed: tested on a small tmpfs mounted for the test (needs root, as
//! the test machines run; elsewhere the test says so and checks nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use keel::drive::{Drive, DriveOptions, ItemId, NewItem};
use keel::ErrorKind;
use serde_json::json;

/// A tmpfs of `size` mounted at a fresh folder; unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("keel-small-disk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("cannot mount a tmpfs here (not root?): the full-disk test checks nothing");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_full_disk_is_storage_full_and_loses_nothing_committed() {
    let Some(disk) = SmallDisk::mount("full", "2m") else {
        return;
    };
    let path = disk.path().join("drive.lmdb");
    // A map far larger than the disk, so the disk fills first.
    let options = DriveOptions {
        initial_map_size: 64 << 20,
        ..DriveOptions::default()
    };
    let drive = Drive::open(&path, &options).unwrap();
    let body = "x".repeat(40_000);
    let mut written = Vec::new();
    let err = loop {
        let n = written.len();
        let result = drive
            .create(ItemId::ROOT, &NewItem::typed(format!("n{n}"), "note"))
            .and_then(|item| {
                drive
                    .set_data(item.id, &json!({"body": body, "n": n}), None)
                    .map(|_| item)
            });
        match result {
            Ok(item) => written.push(item.id),
            Err(err) => break err,
        }
        assert!(n < 10_000, "a 2 MiB disk never filled");
    };
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    assert!(written.len() > 5, "some writes fit first");
    // Everything committed before is there and reads back.
    for (n, id) in written.iter().enumerate() {
        assert_eq!(drive.get_data(*id, None).unwrap().1["n"], n);
    }
    drop(drive);
    let reopened = Drive::open(&path, &options).unwrap();
    assert!(reopened.children(ItemId::ROOT, None, 100_000).unwrap().len() >= written.len());
}

//! Journal recovery over arbitrary state in a root: the input is a small
//! archive of files (records, backups, trash, tree files, symlinks) laid
//! into a fresh root beside a folder outside it; then the journal is opened,
//! its status read, and a mutation begun and committed if allowed. What must
//! hold: no panic, and nothing outside the root is touched.
//!
//! Input: one flags byte (bit 0: append a valid checksum line to records,
//! so recovery itself is explored, not only the checksum check), then
//! entries of `[slot: u8][len: u16 little-endian][bytes]`. A record's text may say
//! `@ROOT@`, replaced by the root's canonical path, and `@OUT@`, by the
//! outside folder's.
#![no_main]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use keel_core as keel;
use libfuzzer_sys::fuzz_target;

/// Where each slot's bytes go: (path under the root, how).
const SLOTS: &[(&str, Kind)] = &[
    (".keel/journal/00000000000000000001.json", Kind::Record),
    (".keel/journal/00000000000000000001.0", Kind::File),
    (".keel/journal/00000000000000000001.1", Kind::File),
    (".keel/journal/00000000000000000002.json", Kind::Record),
    ("readme.txt", Kind::File),
    ("docs/old.txt", Kind::File),
    ("docs/latest", Kind::Symlink),
    (".keel/journal/00000000000000000001.0", Kind::Symlink),
    (".keel/trash/1", Kind::Symlink),
    (".keel/trash/1/docs/old.txt", Kind::File),
    (".keel/staging/1", Kind::Symlink),
    (".keel/journal", Kind::Symlink),
];

#[derive(Clone, Copy)]
enum Kind {
    Record,
    File,
    Symlink,
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Scene {
    root: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let base = std::env::temp_dir().join(format!("keel-fuzz-journal-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (root, outside) = (base.join("root"), base.join("outside"));
    fs::create_dir_all(root.join(".keel/journal")).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("canary"), b"outside the root").unwrap();
    fs::write(outside.join("sub/old.txt"), b"also outside").unwrap();
    Scene {
        root: fs::canonicalize(root).unwrap(),
        outside: fs::canonicalize(outside).unwrap(),
    }
}

/// Every path under `dir` with its kind and content (symlinks by target).
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()
            } else if meta.is_dir() {
                stack.push(path.clone());
                b"<dir>".to_vec()
            } else {
                fs::read(&path).unwrap()
            };
            found.push((path, content));
        }
    }
    found.sort();
    found
}

fn lay_out(scene: &Scene, data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    while let [slot, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        let (rel, kind) = SLOTS[usize::from(*slot) % SLOTS.len()];
        let path = scene.root.join(rel);
        if let Some(parent) = path.parent() {
            if fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        let _ = fs::remove_file(&path);
        let _ = match kind {
            Kind::File => fs::write(&path, bytes),
            Kind::Symlink => symlink(expand(scene, bytes), &path),
            Kind::Record => {
                let body = expand(scene, bytes);
                let mut text = body.clone().into_bytes();
                if flags & 1 == 1 {
                    text.extend_from_slice(format!("\nfnv1a64:{:016x}\n", fnv1a64(body.as_bytes())).as_bytes());
                }
                fs::write(&path, text)
            }
        };
    }
}

fn expand(scene: &Scene, bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("@ROOT@", &scene.root.to_string_lossy())
        .replace("@OUT@", &scene.outside.to_string_lossy())
}

fuzz_target!(|data: &[u8]| {
    let scene = scene();
    lay_out(&scene, data);
    let outside_before = listing(&scene.outside);
    if let Ok(journal) = keel::Journal::open(&scene.root) {
        let _ = journal.status();
        if let Ok(mut mutation) = journal.begin("fuzz", "") {
            let _ = mutation.write("readme.txt", b"fuzzed");
            let _ = mutation.commit();
        }
    }
    assert_eq!(
        listing(&scene.outside),
        outside_before,
        "recovery touched a path outside the root"
    );
});

//! Every call that takes a file-system path takes `impl AsRef<Path>`: a
//! `&str`, a `String`, a `&Path` or a `PathBuf`, as std's own calls do. A
//! path inside a journal's root must be UTF-8 (records store text), so
//! anything else is refused before the tree is touched.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use keel::drive::{Drive, DriveOptions};
use keel::journal::Journal;
use keel::ops::{Operations, Queue};
use keel::ErrorKind;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-paths-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn stores_open_from_every_kind_of_path() {
    let dir = temp_dir("stores");
    let drive_file: PathBuf = dir.join("drive.lmdb");
    let drive = Drive::open(&drive_file, &DriveOptions::default()).unwrap();
    drive.backup(dir.join("drive.backup")).unwrap();
    drop(drive);
    let as_text: String = drive_file.to_str().unwrap().to_owned();
    drop(Drive::open(as_text.as_str(), &DriveOptions::default()).unwrap());
    drop(Drive::open(as_text, &DriveOptions::default()).unwrap());
    assert!(keel::drive::verify_file(dir.join("drive.backup")).unwrap().is_ok());

    drop(Queue::open(dir.join("jobs.lmdb")).unwrap());
    drop(Operations::open(dir.join("ops.lmdb").as_path()).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mutation_takes_paths_and_refuses_those_that_are_not_utf8() {
    let dir = temp_dir("journal");
    let journal = Journal::open(&dir).unwrap();
    let mut mutation = journal.begin("paths", "").unwrap();
    mutation.create_dir(Path::new("docs")).unwrap();
    mutation.write(PathBuf::from("docs/a.txt"), b"a").unwrap();
    mutation.rename("docs/a.txt", Path::new("docs/b.txt")).unwrap();
    let not_utf8 = Path::new(OsStr::from_bytes(b"docs/\xff.txt"));
    let refused = mutation.write(not_utf8, b"x").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    assert!(refused.to_string().contains("not UTF-8"), "{refused}");
    assert_eq!(
        mutation.remove(not_utf8).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    mutation.commit().unwrap();
    assert_eq!(std::fs::read(dir.join("docs/b.txt")).unwrap(), b"a");
    assert!(!dir.join("docs/a.txt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_url_given_as_a_path_is_refused_not_made_a_folder() {
    let dir = temp_dir("url");
    let here = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let queue = Queue::open("postgresql://db.internal/app");
    let ops = Operations::open("mysql://db/app");
    std::env::set_current_dir(here).unwrap();
    for refused in [queue.err().unwrap(), ops.err().unwrap()] {
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing was created");
    std::fs::remove_dir_all(&dir).unwrap();
}

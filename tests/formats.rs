//! On-disk formats: this build opens every released format's fixture
//! (`tests/fixtures/formats/v<N>/`, written by
//! `cargo run --example make_format_fixtures`) and reads back exactly what
//! the generator wrote; refuses files of a newer format with `Unsupported`
//! naming both versions, touching nothing; and upgrades older LMDB files in
//! one transaction after a backup (proved with the drive's real format-1
//! upgrade, and with test-only formats past the current one).
//!
//! Every test works on a temporary copy; the fixtures are never written.

mod formats_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use formats_support as fixture;
use keel::drive::{Drive, DriveOptions};
use keel::lmdb::format::{self, backup_path, FileFormat, StepDatabases, UpgradeStep};
use keel::lmdb::{map_err, Env, EnvOptions, RwTransaction, Transaction, WriteFlags};
use keel::ops::{Operations, Queue};
use keel::{ErrorKind, Journal};

/// Every released set of formats (`v<N>`: v1 the first; v2 drive format 2;
/// v3 operations-and-jobs format 2); add each new one here with its
/// fixture folder.
const RELEASED: [u32; 3] = [1, 2, 3];

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/formats/v{version}"))
}

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-formats-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// What this build's generator writes, generated once per test run.
fn fresh() -> &'static Path {
    static FRESH: OnceLock<PathBuf> = OnceLock::new();
    FRESH.get_or_init(|| {
        let dir = scratch("fresh").join("v-current");
        fixture::write_fixtures(&dir);
        dir
    })
}

/// Copies a fixture file into `dir`.
fn copy_file(from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    fs::copy(from, &to).unwrap();
    to
}

/// Copies a fixture journal root into `dir`, keeping symlinks. Git keeps
/// no modes but the executable bit, so every file gets 0644 as the
/// generator gave it (whatever the umask of the checkout).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source).unwrap(), &dest).unwrap();
        } else if kind.is_dir() {
            copy_tree(&source, &dest);
        } else {
            fs::copy(&source, &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The record files of a journal root.
fn records(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(root.join(".keel/journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    found.sort();
    found
}

/// Records are bound to their root's canonical path (a copied tree's are
/// quarantined, never applied), so a copied fixture's records are re-bound
/// to the copy: only `root` (and, when asked, `format`) change, and the
/// checksum is recomputed.
fn rebind_records(root: &Path, format: Option<u64>) {
    let canonical = fs::canonicalize(root).unwrap().to_string_lossy().into_owned();
    for path in records(root) {
        let text = fs::read_to_string(&path).unwrap();
        let body = text.trim_end().rsplit_once('\n').unwrap().0;
        let mut value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["root"] = canonical.clone().into();
        if let Some(format) = format {
            value["format"] = format.into();
        }
        let body = serde_json::to_string(&value).unwrap();
        fs::write(&path, format!("{body}\nfnv1a64:{:016x}\n", fnv1a64(body.as_bytes()))).unwrap();
    }
}

/// Overwrites a part's format marker with `version`, as a build writing
/// that version would have.
fn stamp(path: &Path, format: &FileFormat, version: u32) {
    let env = Env::open(path, &EnvOptions::default()).unwrap();
    let meta = env.database(format.meta_db).unwrap();
    let marker = format::marker(format, version);
    env.write(|txn| {
        txn.put(meta, b"format", &marker, WriteFlags::empty())
            .map_err(|e| map_err("stamp", e))
    })
    .unwrap();
}

fn assert_names_both(err: &keel::Error, found: u32, current: u32) {
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let message = err.message();
    assert!(
        message.contains(&format!("format {found}")) && message.contains(&format!("format {current}")),
        "{err}"
    );
}

// ---- every released fixture opens and reads back what was written --------------

#[test]
fn every_released_drive_fixture_opens_with_identical_data() {
    for version in RELEASED {
        let dir = scratch(&format!("drive-v{version}"));
        let path = copy_file(&fixture::drive_file(&fixture_dir(version)), &dir);
        let drive = Drive::open(&path, &DriveOptions::default()).unwrap();
        let expected = Drive::open(fixture::drive_file(fresh()), &DriveOptions::default()).unwrap();
        assert_eq!(
            fixture::drive_snapshot(&drive),
            fixture::drive_snapshot(&expected),
            "v{version}"
        );
        // Not two empty snapshots agreeing: the content is there.
        let note = drive.at_path("docs/notes").unwrap();
        let (latest, value) = drive.get_data(note.id, None).unwrap();
        assert_eq!(latest.to_string(), "2.0.0");
        assert_eq!(value["body"], "ünïcode ✓");
        assert_eq!(drive.versions(note.id).unwrap().len(), 3);
    }
}

#[test]
fn every_released_ops_fixture_opens_with_identical_records() {
    for version in RELEASED {
        let dir = scratch(&format!("ops-v{version}"));
        let path = copy_file(&fixture::ops_file(&fixture_dir(version)), &dir);
        let (records, jobs) = fixture::ops_snapshot(&path);
        let (expected_records, expected_jobs) = fixture::ops_snapshot(&fixture::ops_file(fresh()));
        assert_eq!(records, expected_records, "v{version}");
        assert_eq!(jobs, expected_jobs, "v{version}");
        assert_eq!(records.len(), 5);
        assert_eq!(jobs.len() as u64, fixture::JOBS);
        // The file still works: the running index job's lease (from 2023)
        // has expired, so it is reset and, at priority 1, claimed again.
        let queue = Queue::open(&path).unwrap();
        let next = queue
            .dequeue(&["index"], "w", std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!((next.payload.as_str(), next.attempts), (r#"{"item":"ds-1"}"#, 2));
    }
}

#[test]
fn every_released_journal_fixture_recovers_to_the_exact_before_state() {
    for version in RELEASED {
        let root = scratch(&format!("journal-v{version}")).join("root");
        copy_tree(&fixture::journal_root(&fixture_dir(version)), &root);
        assert_eq!(records(&root).len(), 1, "the fixture holds one interrupted mutation");
        assert_ne!(fixture::journal_tree(&root), fixture::journal_before_tree());
        rebind_records(&root, None);
        let journal = Journal::open(&root).unwrap();
        assert_eq!(
            fixture::journal_tree(&root),
            fixture::journal_before_tree(),
            "v{version}"
        );
        let stats = journal.stats();
        assert_eq!((stats.recovered, stats.quarantined), (1, 0));
        assert!(records(&root).is_empty());
        journal.begin("next", "").unwrap().commit().unwrap();
    }
}

// ---- a newer format is refused, naming both versions, touching nothing ---------

#[test]
fn a_drive_of_a_newer_format_is_refused_and_left_untouched() {
    let dir = scratch("drive-newer");
    let path = copy_file(&fixture::drive_file(&fixture_dir(1)), &dir);
    let current = keel::drive::FORMAT_VERSION;
    stamp(&path, &keel::drive::FILE_FORMAT, current + 1);
    let before = fs::read(&path).unwrap();
    let err = Drive::open(&path, &DriveOptions::default()).unwrap_err();
    assert_names_both(&err, current + 1, current);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn an_ops_file_of_a_newer_format_is_refused_and_left_untouched() {
    let dir = scratch("ops-newer");
    let path = copy_file(&fixture::ops_file(&fixture_dir(1)), &dir);
    let format = keel::ops::store::lmdb::FILE_FORMAT;
    stamp(&path, &format, format.current + 1);
    let before = fs::read(&path).unwrap();
    assert_names_both(&Queue::open(&path).err().unwrap(), format.current + 1, format.current);
    assert_names_both(
        &Operations::open(&path).err().unwrap(),
        format.current + 1,
        format.current,
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn a_journal_record_of_a_newer_format_blocks_mutations_and_is_kept() {
    let root = scratch("journal-newer").join("root");
    copy_tree(&fixture::journal_root(&fixture_dir(1)), &root);
    let current = keel::journal::FORMAT_VERSION;
    rebind_records(&root, Some(u64::from(current) + 1));
    let tree = fixture::journal_tree(&root);
    let record = fs::read(&records(&root)[0]).unwrap();
    let journal = Journal::open(&root).unwrap();
    let err = journal.begin("next", "").map(|_| ()).unwrap_err();
    assert_names_both(&err, current + 1, current);
    assert_eq!(fixture::journal_tree(&root), tree, "neither applied nor undone");
    assert_eq!(fs::read(&records(&root)[0]).unwrap(), record, "kept as written");
    assert!(journal.status().unwrap().quarantined.is_empty());
}

#[test]
fn a_format_older_than_any_upgrade_is_refused() {
    let dir = scratch("drive-older");
    let path = copy_file(&fixture::drive_file(&fixture_dir(1)), &dir);
    stamp(&path, &keel::drive::FILE_FORMAT, 0);
    let err = Drive::open(&path, &DriveOptions::default()).unwrap_err();
    assert_names_both(&err, 0, keel::drive::FORMAT_VERSION);
}

// ---- upgrades: one transaction, after a backup, all or nothing -----------------

static MARKS: AtomicUsize = AtomicUsize::new(0);

/// The drive format this build writes.
const CUR: u32 = keel::drive::FORMAT_VERSION;

/// A copy, in `dir`, of a drive of the current format written by this build.
fn current_drive(dir: &Path) -> PathBuf {
    copy_file(&fixture::drive_file(fresh()), dir)
}

/// A test-only step CUR -> CUR + 1: adds a key to `drive.meta` and counts its runs.
fn mark_upgraded(txn: &mut RwTransaction<'_>, dbs: &StepDatabases) -> keel::Result<()> {
    MARKS.fetch_add(1, Ordering::SeqCst);
    put_mark(txn, dbs)
}

fn put_mark(txn: &mut RwTransaction<'_>, dbs: &StepDatabases) -> keel::Result<()> {
    txn.put(dbs.get("drive.meta")?, b"upgraded", b"yes", WriteFlags::empty())
        .map_err(|e| map_err("mark", e))
}

fn fail_step(_: &mut RwTransaction<'_>, _: &StepDatabases) -> keel::Result<()> {
    Err(keel::Error::invalid_argument("this step always fails"))
}

const MARK: UpgradeStep = UpgradeStep {
    from: CUR,
    what: "mark the drive upgraded",
    databases: &["drive.meta"],
    run: mark_upgraded,
};

fn has_mark(env: &Env) -> bool {
    let meta = env.database("drive.meta").unwrap();
    env.read(|txn| Ok(txn.get(meta, b"upgraded").is_ok())).unwrap()
}

#[test]
fn an_upgrade_runs_once_in_one_transaction_after_a_backup() {
    let dir = scratch("upgrade");
    let path = current_drive(&dir);
    let v2 = FileFormat {
        current: CUR + 1,
        steps: &[MARK],
        ..keel::drive::FILE_FORMAT
    };
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let writes = env.stats().writes;
    let opened = format::ensure(&env, &v2, |_| unreachable!("not a new file")).unwrap();
    assert_eq!(
        env.stats().writes - writes,
        1,
        "the whole upgrade is one write transaction"
    );
    assert_eq!(MARKS.load(Ordering::SeqCst), 1);
    assert!(has_mark(&env));
    let backup = backup_path(env.path(), "drive", CUR);
    assert_eq!(opened.found, Some(CUR));
    assert_eq!(opened.backup.as_deref(), Some(backup.as_path()));
    // Opening again finds the new format: nothing runs, no new backup.
    let again = format::ensure(&env, &v2, |_| unreachable!()).unwrap();
    assert_eq!((again.found, again.backup), (Some(CUR + 1), None));
    assert_eq!(MARKS.load(Ordering::SeqCst), 1, "an upgrade runs once");
    // This build now refuses the upgraded file...
    assert_names_both(&Drive::open(&path, &DriveOptions::default()).unwrap_err(), CUR + 1, CUR);
    // ...and the backup beside it is the current-format drive, data intact.
    let old = Drive::open(&backup, &DriveOptions::default()).unwrap();
    let expected = Drive::open(fixture::drive_file(fresh()), &DriveOptions::default()).unwrap();
    assert_eq!(fixture::drive_snapshot(&old), fixture::drive_snapshot(&expected));
    assert!(!has_mark(old.env()));
}

#[test]
fn a_failing_upgrade_step_changes_nothing() {
    let dir = scratch("upgrade-fails");
    let path = current_drive(&dir);
    let v3 = FileFormat {
        current: CUR + 2,
        steps: &[
            UpgradeStep {
                from: CUR,
                what: "mark the drive upgraded",
                databases: &["drive.meta"],
                run: put_mark,
            },
            UpgradeStep {
                from: CUR + 1,
                what: "a step that fails",
                databases: &[],
                run: fail_step,
            },
        ],
        ..keel::drive::FILE_FORMAT
    };
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let err = format::ensure(&env, &v3, |_| unreachable!()).unwrap_err();
    assert!(err.message().contains("a step that fails"), "{err}");
    assert!(
        !has_mark(&env),
        "the first step's change is undone with the second's failure"
    );
    drop(env);
    let drive = Drive::open(&path, &DriveOptions::default()).expect("still a current-format drive");
    let expected = Drive::open(fixture::drive_file(fresh()), &DriveOptions::default()).unwrap();
    assert_eq!(fixture::drive_snapshot(&drive), fixture::drive_snapshot(&expected));
    assert!(backup_path(drive.path(), "drive", CUR).is_file());
}

#[test]
fn an_upgrade_never_overwrites_an_earlier_backup() {
    let dir = scratch("upgrade-backup-kept");
    let path = current_drive(&dir);
    let earlier = backup_path(fs::canonicalize(&path).unwrap(), "drive", CUR);
    fs::write(&earlier, b"an earlier backup").unwrap();
    let v2 = FileFormat {
        current: CUR + 1,
        steps: &[UpgradeStep {
            from: CUR,
            what: "mark the drive upgraded",
            databases: &["drive.meta"],
            run: put_mark,
        }],
        ..keel::drive::FILE_FORMAT
    };
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let opened = format::ensure(&env, &v2, |_| unreachable!()).unwrap();
    assert_eq!(fs::read(&earlier).unwrap(), b"an earlier backup");
    let second = PathBuf::from(format!("{}.1", earlier.display()));
    assert_eq!(opened.backup, Some(second.clone()));
    assert!(second.is_file());
}

#[test]
fn an_ops_store_written_before_markers_is_stamped_as_format_1_and_upgraded() {
    let dir = scratch("ops-unmarked");
    let path = copy_file(&fixture::ops_file(&fixture_dir(1)), &dir);
    let format = keel::ops::store::lmdb::FILE_FORMAT;
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let meta = env.database(format.meta_db).unwrap();
    env.write(|txn| txn.del(meta, b"format", None).map_err(|e| map_err("unstamp", e)))
        .unwrap();
    drop(env);
    let (records, jobs) = fixture::ops_snapshot(&path);
    assert_eq!((records.len(), jobs.len() as u64), (5, fixture::JOBS));
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let meta = env.database(format.meta_db).unwrap();
    let marker = env
        .read(|txn| Ok(txn.get(meta, b"format").map(<[u8]>::to_vec).ok()))
        .unwrap();
    assert_eq!(marker, Some(format::marker(&format, keel::ops::FORMAT_VERSION)));
    assert!(backup_path(env.path(), format.part, 1).is_file(), "upgraded from 1");
}

// ---- operations and jobs format 1 -> 2: checksums ------------------------------

/// Flips one bit of the last byte of the value at `key` in `table`.
fn flip_value(env: &Env, table: &str, key: &[u8]) {
    let db = env.database(table).unwrap();
    env.write(|txn| {
        let mut stored = txn.get(db, &key).map_err(|e| map_err("get", e))?.to_vec();
        *stored.last_mut().unwrap() ^= 1;
        txn.put(db, &key, &stored, WriteFlags::empty())
            .map_err(|e| map_err("put", e))
    })
    .unwrap();
}

#[test]
fn a_format_1_ops_file_upgrades_to_checksummed_values() {
    for version in [1, 2] {
        let dir = scratch(&format!("ops-v{version}-upgrade"));
        let path = copy_file(&fixture::ops_file(&fixture_dir(version)), &dir);
        let queue = Queue::open(&path).unwrap();
        let format = keel::ops::store::lmdb::FILE_FORMAT;
        let env = Env::open(&path, &EnvOptions::default()).unwrap();
        assert!(backup_path(env.path(), format.part, 1).is_file(), "v{version}");
        // The backup is the format-1 file as it was.
        let backup = Env::open(backup_path(env.path(), format.part, 1), &EnvOptions::default()).unwrap();
        assert_eq!(format::found_version(&backup, &format).unwrap(), Some(1));
        // Sealed: one flipped bit in a job record is Corrupt naming the table.
        flip_value(&env, "keel.jobs.records", &1u64.to_be_bytes());
        let err = queue.get(1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.message().contains("keel.jobs.records"), "{err}");
        assert_eq!(queue.get(2).unwrap().id, 2, "the others read as before");
    }
}

#[test]
fn a_format_1_ops_file_with_a_malformed_record_is_refused_untouched() {
    let dir = scratch("ops-v1-malformed");
    let path = copy_file(&fixture::ops_file(&fixture_dir(1)), &dir);
    {
        let env = Env::open(&path, &EnvOptions::default()).unwrap();
        let db = env.database("keel.jobs.records").unwrap();
        env.write(|txn| {
            txn.put(db, &3u64.to_be_bytes(), b"\x01garbage", WriteFlags::empty())
                .map_err(|e| map_err("put", e))
        })
        .unwrap();
    }
    let raw_job_1 = |path: &Path| {
        let env = Env::open(path, &EnvOptions::default()).unwrap();
        let db = env.database("keel.jobs.records").unwrap();
        env.read(|txn| Ok(txn.get(db, &1u64.to_be_bytes()).unwrap().to_vec()))
            .unwrap()
    };
    let before = raw_job_1(&path);
    let err = Queue::open(&path).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.message().contains("keel.jobs.records") && err.message().contains("checksum every value"),
        "{err}"
    );
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let format = keel::ops::store::lmdb::FILE_FORMAT;
    assert_eq!(format::found_version(&env, &format).unwrap(), Some(1), "still format 1");
    assert_eq!(raw_job_1(&path), before, "no value sealed");
}

// ---- drive format 1 -> 2: checksums and full case folding ---------------------

/// A format-1 drive's raw bytes: its values unsealed, children keyed by
/// `to_lowercase`.
fn put_v1_item(env: &Env, name: &str) {
    use keel::drive::{Item, ItemId};
    use keel::lmdb::Codec;
    let id = ItemId::random().unwrap();
    let item = Item {
        id,
        parent: ItemId::ROOT,
        name: name.to_owned(),
        kind: None,
        created: 0,
        creator: String::new(),
        children: 0,
        data_size: 0,
        version: None,
        updated: 0,
        updater: String::new(),
        permissions: Default::default(),
    };
    let (items, children) = (
        env.database("drive.items").unwrap(),
        env.database("drive.children").unwrap(),
    );
    let mut child_key = ItemId::ROOT.as_bytes().to_vec();
    child_key.extend_from_slice(name.to_lowercase().as_bytes());
    env.write(|txn| {
        txn.put(items, id.as_bytes(), &item.to_bytes(), WriteFlags::empty())
            .map_err(|e| map_err("put item", e))?;
        txn.put(children, &child_key, id.as_bytes(), WriteFlags::empty())
            .map_err(|e| map_err("put child", e))
    })
    .unwrap();
}

#[test]
fn a_format_1_drive_upgrades_to_checksummed_values_and_case_folded_names() {
    let dir = scratch("drive-v1-upgrade");
    let path = copy_file(&fixture::drive_file(&fixture_dir(1)), &dir);
    let drive = Drive::open(&path, &DriveOptions::default()).unwrap();
    assert!(backup_path(drive.path(), "drive", 1).is_file());
    // Folded keys: the name found by its full case folding.
    let docs = drive.at_path("DOCS/NOTES").unwrap();
    // Sealed values: one flipped bit is Corrupt, not a wrong answer.
    let db = drive.env().database("drive.items").unwrap();
    let key = docs.id.as_bytes().to_vec();
    let mut stored = drive.env().read(|txn| Ok(txn.get(db, &key).unwrap().to_vec())).unwrap();
    let last = stored.len() - 1;
    stored[last] ^= 1;
    drive
        .env()
        .write(|txn| {
            txn.put(db, &key, &stored, WriteFlags::empty())
                .map_err(|e| map_err("put", e))
        })
        .unwrap();
    assert_eq!(drive.get(docs.id).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn a_format_1_drive_whose_names_collide_under_case_folding_is_refused_untouched() {
    let dir = scratch("drive-v1-collide");
    let path = copy_file(&fixture::drive_file(&fixture_dir(1)), &dir);
    {
        let env = Env::open(&path, &EnvOptions::default()).unwrap();
        put_v1_item(&env, "Straße");
        put_v1_item(&env, "STRASSE");
    }
    let before = fs::read(&path).unwrap();
    let err = Drive::open(&path, &DriveOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("case folding"), "{err}");
    let env = Env::open(&path, &EnvOptions::default()).unwrap();
    let meta = env.database("drive.meta").unwrap();
    let marker = env.read(|txn| Ok(txn.get(meta, b"format").unwrap().to_vec())).unwrap();
    assert_eq!(marker, format::marker(&keel::drive::FILE_FORMAT, 1), "still format 1");
    drop(env);
    assert_eq!(fs::read(&path).unwrap().len(), before.len());
}

//! What the format fixtures hold: the generator (`examples/rust/
//! make_format_fixtures.rs`, which includes this file) writes it, and
//! `tests/formats.rs` re-runs the same logic into a fresh folder and
//! compares what this build reads from the checked-in fixture with it.
//!
//! Everything written here is deterministic except what cannot be (drive
//! item ids and times, journal sequence numbers): the snapshots below leave
//! those out and keep everything else.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel::drive::{Drive, DriveOptions, ItemId, Level, NewItem, Permissions, Version, WalkOrder};
use keel::journal::FaultPlan;
use keel::ops::{EnqueueOptions, JobPolicy, JobRecord, LmdbStore, ManualClock, OpRecord, OpState, Operations, Queue};
use keel::Journal;
use serde_json::{json, Value};

/// The ops clock's fixed start, so every stored time is the same on each run.
pub const START: u64 = 1_700_000_000_000;
/// The items whose operations the ops fixture holds.
pub const OP_ITEMS: [&str; 3] = ["ds-1", "ds-2", "ds-3"];
/// How many jobs the ops fixture holds (ids 1..=JOBS).
pub const JOBS: u64 = 5;

/// The fixture files inside a fixture folder.
pub fn drive_file(dir: &Path) -> PathBuf {
    dir.join("drive.lmdb")
}
pub fn ops_file(dir: &Path) -> PathBuf {
    dir.join("ops.lmdb")
}
pub fn journal_root(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// Writes all three fixtures into `dir` (which must not hold them yet);
/// LMDB files are compacted copies, without lock files.
pub fn write_fixtures(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let scratch = dir.join(".scratch");
    fs::create_dir_all(&scratch).unwrap();
    write_drive(&scratch.join("drive.lmdb"))
        .backup(drive_file(dir))
        .unwrap();
    write_ops(&scratch.join("ops.lmdb"))
        .env()
        .backup(ops_file(dir))
        .unwrap();
    fs::remove_dir_all(&scratch).unwrap();
    write_interrupted_journal(&journal_root(dir));
}

// ---- drive ------------------------------------------------------------------

fn write_drive(path: &Path) -> Drive {
    let drive = Drive::open(path, &DriveOptions::default()).unwrap();
    let docs_perms = Permissions {
        default: Some(Level::Read),
        users: [("alice".to_owned(), Level::Admin)].into(),
        roles: [("editors".to_owned(), Level::Edit)].into(),
    };
    let as_bob = drive.attributed_to("bob");
    let docs = as_bob
        .create(ItemId::ROOT, &NewItem::named("Docs").with_permissions(docs_perms))
        .unwrap();
    let schema = json!({"type": "object", "required": ["body"]});
    drive.set_schema("note", &schema, 1, None).unwrap();
    let note = as_bob.create(docs.id, &NewItem::typed("Notes", "note")).unwrap();
    for (version, body) in [((1, 0, 0), "first"), ((1, 0, 1), "second"), ((2, 0, 0), "ünïcode ✓")] {
        let value = json!({"body": body, "tags": ["a", "b"], "n": 1.5});
        let version = Version::new(version.0, version.1, version.2);
        as_bob.set_data(note.id, &value, Some(version)).unwrap();
    }
    drive.make_path("Archive/2024").unwrap();
    let report = drive
        .create_at("archive/2024", &NewItem::typed("report-1", "file"))
        .unwrap();
    drive.set_data(report.id, &json!({"size": 42}), None).unwrap();
    drive.create_at("Docs", &NewItem::typed("Readme.md", "file")).unwrap();
    drive
}

/// Everything a drive holds except item ids and times, in walk order.
pub fn drive_snapshot(drive: &Drive) -> Value {
    let mut items = Vec::new();
    for item in drive.walk(ItemId::ROOT, WalkOrder::ParentsFirst).unwrap() {
        let versions: Vec<Value> = drive
            .versions(item.id)
            .unwrap_or_default()
            .into_iter()
            .map(|info| {
                let (_, value) = drive.get_data(item.id, Some(info.version)).unwrap();
                json!([info.version.to_string(), info.updater, info.size, value])
            })
            .collect();
        items.push(json!({
            "path": drive.path_of(item.id).unwrap(),
            "name": item.name,
            "kind": item.kind,
            "creator": item.creator,
            "updater": item.updater,
            "children": item.children,
            "data_size": item.data_size,
            "version": item.version.map(|v| v.to_string()),
            "permissions": format!("{:?}", item.permissions),
            "versions": versions,
        }));
    }
    let schemas = ["note", "file"].map(|kind| json!(drive.schema(kind).unwrap()));
    json!({"items": items, "schemas": schemas, "files": drive.by_type("file", None, 100).unwrap().len()})
}

// ---- operations and jobs ----------------------------------------------------

fn write_ops(path: &Path) -> LmdbStore {
    let store = Arc::new(LmdbStore::open(path).unwrap());
    let clock = ManualClock::new(START);
    let ops = Operations::with_clock(store.clone(), Arc::new(clock.clone()));
    let queue = Queue::with_parts(store.clone(), Arc::new(clock.clone()), JobPolicy::default());
    let lease = Duration::from_secs(60);

    ops.ready("ds-1", &["unpack", "index"]).unwrap();
    clock.advance(Duration::from_millis(10));
    ops.ready("ds-2", &["unpack"]).unwrap();
    ops.ready("ds-3", &["unpack"]).unwrap();
    let claims = ops.claim("unpack", 2, "worker-1", lease).unwrap();
    clock.advance(Duration::from_secs(1));
    ops.update(
        "ds-1",
        "unpack",
        Some(claims[0].token),
        OpState::Ok,
        "unpacked",
        &["report"],
    )
    .unwrap();
    ops.error("ds-2", "unpack", Some(claims[1].token), "bad archive")
        .unwrap();

    let unique = EnqueueOptions {
        unique_key: Some("welcome-alice".into()),
        run_at: Some(START + 3_600_000),
        ..EnqueueOptions::default()
    };
    queue.enqueue("email", r#"{"to":"alice"}"#, &unique).unwrap();
    let urgent = EnqueueOptions {
        priority: 1,
        ..EnqueueOptions::default()
    };
    queue.enqueue("index", r#"{"item":"ds-1"}"#, &urgent).unwrap();
    queue
        .enqueue("thumb", r#"{"item":"ds-1","size":128}"#, &EnqueueOptions::default())
        .unwrap();
    queue
        .enqueue("thumb", r#"{"item":"ds-2"}"#, &EnqueueOptions::default())
        .unwrap();
    queue
        .enqueue("index", r#"{"item":"ds-3"}"#, &EnqueueOptions::default())
        .unwrap();
    let running = queue.dequeue(&["index"], "worker-1", lease).unwrap().unwrap();
    let done = queue.dequeue(&["thumb"], "worker-2", lease).unwrap().unwrap();
    clock.advance(Duration::from_secs(2));
    queue.complete(done.id, done.token, r#"{"ok":true}"#).unwrap();
    let failed = queue.dequeue(&["thumb"], "worker-2", lease).unwrap().unwrap();
    queue.fail(failed.id, failed.token, "decoder crashed", false).unwrap();
    assert_ne!(running.id, done.id);
    LmdbStore::clone(&store)
}

/// Every operation of [`OP_ITEMS`] and every job, as stored.
pub fn ops_snapshot(path: &Path) -> (Vec<OpRecord>, Vec<JobRecord>) {
    let store = Arc::new(LmdbStore::open(path).unwrap());
    let ops = Operations::with_store(store.clone());
    let queue = Queue::with_store(store);
    let records = OP_ITEMS.iter().flat_map(|item| ops.states(item).unwrap()).collect();
    let jobs = (1..=JOBS).map(|id| queue.get(id).unwrap()).collect();
    (records, jobs)
}

// ---- journal ------------------------------------------------------------------

/// One path of a journal root: a file (contents, mode) or a symlink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    File(Vec<u8>, u32),
    Symlink(PathBuf),
}

/// The journal root before the interrupted mutation: what recovery must
/// restore. No empty folders and every file 0644: git keeps neither empty
/// folders nor modes (but the executable bit), and a restored file takes
/// its backup's mode.
pub fn journal_before() -> Vec<(&'static str, Node)> {
    vec![
        ("readme.txt", Node::File(b"the original readme\n".to_vec(), 0o644)),
        ("docs/old.txt", Node::File(b"to be removed".to_vec(), 0o644)),
        ("docs/keep.md", Node::File(b"# untouched".to_vec(), 0o644)),
        ("docs/latest", Node::Symlink(PathBuf::from("keep.md"))),
    ]
}

/// Sets up [`journal_before`] under `root` and leaves a mutation of it
/// interrupted: its record `active`, its backups beside it, its changes on
/// disk (commit and rollback both failed, as after a crash).
fn write_interrupted_journal(root: &Path) {
    for (path, node) in journal_before() {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match node {
            Node::File(bytes, mode) => {
                fs::write(&path, bytes).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        }
    }
    let journal = Journal::open(root).unwrap();
    let mut m = journal.begin("ingest", "fixture v1").unwrap();
    m.write("readme.txt", b"the new readme\n").unwrap();
    m.remove("docs/old.txt").unwrap();
    m.symlink("docs/latest", "old.txt").unwrap();
    m.write("added/new.txt", b"added by the mutation").unwrap();
    journal.set_fault_plan(Some(Arc::new(FaultPlan::fail_from(0, libc::EIO))));
    assert!(m.commit().is_err(), "the commit must be cut short");
    journal.set_fault_plan(None);
    drop(journal);
    fs::remove_file(root.join(".keel/lock")).unwrap();
}

/// The tree under `root` (leaving out `.keel`), as path and node.
pub fn journal_tree(root: &Path) -> Vec<(String, Node)> {
    let mut tree = Vec::new();
    walk(root, root, &mut tree);
    tree.sort();
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Vec<(String, Node)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&path).unwrap();
        if rel == ".keel" {
            continue;
        } else if meta.file_type().is_symlink() {
            tree.push((rel, Node::Symlink(fs::read_link(&path).unwrap())));
        } else if meta.is_dir() {
            walk(root, &path, tree);
        } else {
            tree.push((
                rel,
                Node::File(fs::read(&path).unwrap(), meta.permissions().mode() & 0o7777),
            ));
        }
    }
}

/// [`journal_before`] in the form [`journal_tree`] gives.
pub fn journal_before_tree() -> Vec<(String, Node)> {
    let mut tree: Vec<_> = journal_before()
        .into_iter()
        .map(|(path, node)| (path.to_owned(), node))
        .collect();
    tree.sort();
    tree
}

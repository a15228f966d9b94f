//! Helpers shared by the journal tests: building trees and capturing them
//! whole (bytes, modes, symlinks) for before/after comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One path of a captured tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, bytes: Vec<u8> },
    Symlink(PathBuf),
    Dir { mode: u32 },
}

/// A whole tree, `.keel` excluded, keyed by relative path.
pub type Tree = BTreeMap<String, Node>;

pub fn capture(root: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".keel" {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            tree.insert(rel, Node::Symlink(fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            tree.insert(rel, Node::Dir { mode });
            walk(root, &path, tree);
        } else {
            tree.insert(
                rel,
                Node::File {
                    mode,
                    bytes: fs::read(&path).unwrap(),
                },
            );
        }
    }
}

/// A fresh empty folder under the target directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// On tmpfs when there is one: fsync is free there, which keeps the
    /// suites fast; the power-loss mode simulates durability itself.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.join("keel-tests")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        };
        let dir = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn write_file(root: &Path, rel: &str, bytes: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn make_symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

/// The standard starting tree: files with unusual modes, nested folders,
/// symlinks (one pointing outside the root), a folder with its own mode.
pub fn seed_tree(root: &Path) {
    write_file(root, "readme.txt", b"hello", 0o644);
    write_file(root, "bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    write_file(root, "secret/key", b"k3y", 0o600);
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    write_file(root, "wiki/pages/a.md", b"# A", 0o644);
    write_file(root, "wiki/pages/b.md", b"# B", 0o640);
    write_file(root, "wiki/pages/deep/c.md", b"# C", 0o644);
    write_file(root, "wiki/index.md", b"index", 0o644);
    make_symlink(root, "wiki/latest", "pages/a.md");
    make_symlink(root, "outside", "/etc/hostname");
}

/// Which of `before` / `after` the tree equals; panics with a diff if neither.
pub fn which(now: &Tree, before: &Tree, after: &Tree, context: &str) -> &'static str {
    if now == before {
        "before"
    } else if now == after {
        "after"
    } else {
        panic!(
            "{context}: tree is neither before nor after\n{}",
            diff(now, before, after)
        );
    }
}

fn diff(now: &Tree, before: &Tree, after: &Tree) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<_> = now.keys().chain(before.keys()).chain(after.keys()).collect();
    for key in keys {
        let (n, b, a) = (now.get(key), before.get(key), after.get(key));
        if n != b || n != a {
            out.push_str(&format!(
                "  {key}: now={} before={} after={}\n",
                short(n),
                short(b),
                short(a)
            ));
        }
    }
    out
}

fn short(node: Option<&Node>) -> String {
    match node {
        None => "-".into(),
        Some(Node::File { mode, bytes }) => format!(
            "file({mode:o},{:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(24)])
        ),
        Some(Node::Symlink(t)) => format!("link({})", t.display()),
        Some(Node::Dir { mode }) => format!("dir({mode:o})"),
    }
}

/// Asserts `.keel` holds nothing but its empty folders, the lock and the
/// quarantine.
pub fn assert_state_clean(root: &Path) {
    for dir in ["journal", "staging", "trash"] {
        let left: Vec<_> = fs::read_dir(root.join(".keel").join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), ".keel/{dir} not empty: {left:?}");
    }
}

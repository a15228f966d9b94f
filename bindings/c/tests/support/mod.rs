//! What the C and C++ program tests share: where the repository and the
//! freshly built libkeel are, and which test sources there are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The folder holding libkeel.so: beside this test binary's `deps/`.
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        profile_dir.join("libkeel.so").exists() || profile_dir.join("libkeel.dylib").exists(),
        "libkeel is not built in {}; run `cargo build -p keel-c` first",
        profile_dir.display()
    );
    profile_dir
}

/// `tests/c/*.<extension>`, sorted; fails if there are none.
pub fn test_sources(extension: &str) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/c"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no tests/c/*.{extension} found");
    sources
}

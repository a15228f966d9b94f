//! Builds `tests/c/*.cpp` as C++17 programs against `include/keel.h` with
//! every warning an error (`-Wall -Wextra -pedantic -Werror`), links them to
//! the libkeel cargo just built, and runs them: the header is C++-clean.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The folder holding libkeel.so: beside this test binary's `deps/`.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.join("libkeel.so").exists(),
        "libkeel is not built in {}; run `cargo build -p keel-c` first",
        dir.display()
    );
    dir
}

#[test]
fn cpp17_programs_build_warning_free_and_pass() {
    let root = repo_root();
    let lib_dir = library_dir();
    let out_dir = lib_dir.join("cpp-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("tests/c"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cpp"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no C++ tests found");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    for source in &sources {
        let binary = out_dir.join(source.file_stem().unwrap());
        let status = Command::new(&compiler)
            .args(["-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror", "-pthread"])
            .arg("-I")
            .arg(root.join("include"))
            .arg(source)
            .arg("-o")
            .arg(&binary)
            .arg("-L")
            .arg(&lib_dir)
            .arg("-lkeel")
            .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
            .status()
            .expect("a C++ compiler (c++) is installed");
        assert!(status.success(), "compiling {} failed", source.display());
        let output = Command::new(&binary).output().unwrap();
        println!(
            "{}: {}",
            source.display(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
        assert!(
            output.status.success(),
            "{} failed: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

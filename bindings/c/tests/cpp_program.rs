//! Builds `tests/c/*.cpp` as C++17 programs against `include/keel.h` with
//! every warning an error (`-Wall -Wextra -pedantic -Werror`), links them to
//! the libkeel cargo just built, and runs them: the header is C++-clean.

use std::process::Command;

mod support;

use support::{library_dir, repo_root, test_sources};

#[test]
fn cpp17_programs_build_warning_free_and_pass() {
    let root = repo_root();
    let lib_dir = library_dir();
    let out_dir = lib_dir.join("cpp-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let sources = test_sources("cpp");
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

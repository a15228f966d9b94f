//! Builds every `tests/c/*.c` as a real C program against `include/keel.h`,
//! links it to the libkeel cargo just built, and runs it.

use std::path::Path;
use std::process::Command;

mod support;

use support::{library_dir, repo_root, test_sources};

fn compile(source: &Path, output: &Path, lib_dir: &Path) {
    let root = repo_root();
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(compiler)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-g"])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("tests/c"))
        .arg(source)
        .arg("-o")
        .arg(output)
        .arg("-L")
        .arg(lib_dir)
        .arg("-lkeel")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "compiling {} failed", source.display());
}

#[test]
fn c_programs_pass() {
    let lib_dir = library_dir();
    let out_dir = lib_dir.join("c-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let sources = test_sources("c");
    let mut failed = Vec::new();
    for source in &sources {
        let binary = out_dir.join(source.file_stem().unwrap());
        compile(source, &binary, &lib_dir);
        let output = Command::new(&binary).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{}: {}", source.display(), stdout.trim());
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            failed.push(source.display().to_string());
        }
    }
    assert!(failed.is_empty(), "C tests failed: {failed:?}");
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let header = std::fs::read_to_string(repo_root().join("include/keel.h")).unwrap();
    for (name, expected) in [
        ("KEEL_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("KEEL_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("KEEL_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let define = format!("#define {name} {expected}\n");
        assert!(header.contains(&define), "include/keel.h lacks `{}`", define.trim());
    }
}

/// Every type in keel.h has a tag of its own name, so a C++ header can
/// forward-declare it (`struct keel_pool;`) before including keel.h; the
/// header also compiles as C++.
#[test]
fn the_header_compiles_as_cpp_after_forward_declarations() {
    let root = repo_root();
    let dir = std::env::temp_dir().join(format!("keel-cpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("forward.cpp");
    std::fs::write(
        &source,
        "struct keel_pool;\nstruct keel_job;\nstruct keel_pool_stats;\n\
         static void use(keel_pool *pool, keel_job *job, keel_pool_stats *stats);\n\
         #include \"keel.h\"\n\
         static void use(keel_pool *pool, keel_job *job, keel_pool_stats *stats) { (void)pool; (void)job; (void)stats; }\n\
         int main() { use(nullptr, nullptr, nullptr); return 0; }\n",
    )
    .unwrap();
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    let status = Command::new(compiler)
        .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
        .arg(root.join("include"))
        .arg(&source)
        .status()
        .expect("a C++ compiler (c++) is installed");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "keel.h does not compile as C++ after forward declarations"
    );
}

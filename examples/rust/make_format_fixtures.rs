//! Writes the on-disk format fixtures with this build: a drive file, an
//! operations-and-jobs file and a journal root with an interrupted mutation.
//!
//! ```text
//! cargo run --example make_format_fixtures -- tests/fixtures/formats/v<N>
//! ```
//!
//! Run it once per released format version, into a new folder, and check the
//! folder in: `tests/formats.rs` proves every later build still opens it and
//! reads back what the generator wrote (the content is shared through
//! `tests/formats_support/mod.rs`). Without an argument (as CI runs every
//! example) it writes into a temporary folder, lists it and removes it.

#[path = "../../tests/formats_support/mod.rs"]
mod formats_support;

use std::path::{Path, PathBuf};

fn main() {
    match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => write_into(&dir),
        None => {
            let dir = std::env::temp_dir().join(format!("keel-format-fixtures-{}", std::process::id()));
            write_into(&dir);
            std::fs::remove_dir_all(&dir).expect("remove the temporary fixtures");
        }
    }
}

fn write_into(dir: &Path) {
    if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        eprintln!(
            "{} is not empty; fixtures of a released format are never rewritten",
            dir.display()
        );
        std::process::exit(1);
    }
    formats_support::write_fixtures(dir);
    for file in [formats_support::drive_file(dir), formats_support::ops_file(dir)] {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!("{} ({size} bytes)", file.display());
    }
    println!(
        "{} (a journal root with an interrupted mutation)",
        formats_support::journal_root(dir).display()
    );
}

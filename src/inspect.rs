//! Looking at a keel file without changing it: which of keel's parts it
//! holds, by their format markers, read through a read-only LMDB
//! environment. The keel command runs this before every inspection, so
//! `keel drive ls` on a jobs file (or an empty one) refuses, naming what it
//! found, instead of adding a drive's tables to it.

use std::path::{Path, PathBuf};

use crate::lmdb::format::{self, FileFormat};
use crate::lmdb::{Env, EnvOptions};
use crate::{Error, Result};

/// The parts that keep their data in LMDB files, by the name the report
/// uses for them.
const PARTS: [(&str, &FileFormat); 2] = [
    ("drive", &crate::drive::FILE_FORMAT),
    ("ops", &crate::ops::store::lmdb::FILE_FORMAT),
];

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The path as given.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Each keel part found, by its format marker: (`"drive"` or `"ops"`
    /// (operations and jobs share a store), its format version).
    pub parts: Vec<(&'static str, u32)>,
    /// The named databases in the file (empty for an empty file).
    pub databases: Vec<String>,
}

impl FileReport {
    /// True if the file holds `part` (`"drive"`, `"ops"`).
    pub fn holds(&self, part: &str) -> bool {
        self.parts.iter().any(|(found, _)| *found == part)
    }

    /// In words: "a drive (format 1)", "an empty file", ...
    pub fn describe(&self) -> String {
        if self.bytes == 0 {
            return "an empty file".into();
        }
        if self.parts.is_empty() {
            return match self.databases.len() {
                0 => "an LMDB file holding nothing of keel's".into(),
                n => format!("an LMDB file holding {n} databases, none of them keel's"),
            };
        }
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(part, version)| format!("{} (format {version})", long_name(part)))
            .collect();
        parts.join(" and ")
    }

    /// Ok if the file holds `part`; else [`InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// saying what it holds instead.
    pub fn require(&self, part: &str) -> Result<()> {
        if self.holds(part) {
            return Ok(());
        }
        Err(Error::invalid_argument(format!(
            "{} is not {}: it is {}",
            self.path.display(),
            long_name(part),
            self.describe()
        )))
    }
}

fn long_name(part: &str) -> &'static str {
    match part {
        "drive" => "a drive",
        "ops" => "an operations and jobs store",
        _ => "a keel file",
    }
}

/// Reports what the LMDB file at `path` holds, reading only: the file, its
/// databases and its bytes are left as they were. A missing file is
/// [`NotFound`](crate::ErrorKind::NotFound); a file that is not LMDB is
/// [`Corrupt`](crate::ErrorKind::Corrupt).
pub fn lmdb_file(path: impl AsRef<Path>) -> Result<FileReport> {
    let path = path.as_ref();
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!("{shown}: no such file")),
        _ => Error::io(format!("stat {shown}"), e),
    })?;
    if meta.is_dir() {
        return Err(Error::invalid_argument(format!("{shown} is a folder, not a file")));
    }
    let mut report = FileReport {
        path: path.to_path_buf(),
        bytes: meta.len(),
        parts: Vec::new(),
        databases: Vec::new(),
    };
    if report.bytes == 0 {
        return Ok(report);
    }
    let env = Env::open_read_only(path, &EnvOptions::default())?;
    report.databases = env.database_names()?;
    for (part, file_format) in PARTS {
        if let Some(version) = format::found_version(&env, file_format)? {
            report.parts.push((part, version));
        }
    }
    Ok(report)
}

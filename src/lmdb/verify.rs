//! Verifying a keel LMDB file: every table walked, every value checked, in a
//! child process, so a damaged file gives a report and never a crash of the
//! caller.
//!
//! LMDB checks no page contents: a scribbled page can make it read out of
//! bounds and kill the process (SIGSEGV, SIGBUS) instead of returning an
//! error. So [`verify`] forks; the child opens the file read-only on its own
//! (a fresh LMDB environment, never one of the parent's), walks every named
//! database with a cursor (touching every leaf and overflow page) and runs
//! the part's own checks (for a drive: checksums, decoding and every index
//! against its items), then writes a JSON report to a pipe and exits. If the
//! child dies, the report says by which signal: the file is damaged where
//! LMDB does not look.
//!
//! The child runs only LMDB, keel's decoders and allocation (glibc's malloc
//! is fork-safe); it takes none of keel's locks and logs nothing, so
//! another thread of the parent holding one at the fork cannot block it.
//!
//! Cost: one fork and a full read of the file.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction};
use serde_json::{json, Value};

use super::map_err;
use crate::{Error, Result};

/// Problems past this many are counted, not listed.
const MAX_LISTED: usize = 1000;

/// What verifying a file found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The file verified.
    pub file: PathBuf,
    /// Entries read per named database.
    pub tables: BTreeMap<String, u64>,
    /// What is wrong, each naming the table and key (empty: nothing found).
    pub problems: Vec<String>,
    /// Problems found beyond those listed.
    pub more_problems: u64,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Notes a problem.
    pub fn problem(&mut self, what: impl Into<String>) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(what.into());
        } else {
            self.more_problems += 1;
        }
    }

    /// The report as JSON: `{"file", "ok", "tables", "problems", "more_problems"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "file": self.file.display().to_string(),
            "ok": self.is_ok(),
            "tables": self.tables,
            "problems": self.problems,
            "more_problems": self.more_problems,
        })
    }

    fn from_json(file: &Path, value: &Value) -> Option<Report> {
        let tables = value["tables"]
            .as_object()?
            .iter()
            .map(|(name, count)| Some((name.clone(), count.as_u64()?)))
            .collect::<Option<_>>()?;
        let problems = value["problems"]
            .as_array()?
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        Some(Report {
            file: file.to_path_buf(),
            tables,
            problems,
            more_problems: value["more_problems"].as_u64()?,
        })
    }
}

/// A part's own checks over the opened file (run in the child): `dbs` maps
/// every named database to its handle.
pub type PartCheck = fn(&lmdb::RoTransaction<'_>, &BTreeMap<String, Database>, &'static Path, &mut Report);

/// Verifies the LMDB file at `path` in a child process (see the module
/// docs), running `checks` after the walk of every table. Errors only when
/// the check itself could not run (the file is missing, fork failed); a
/// damaged file is a report with problems.
pub fn verify(path: impl AsRef<Path>, checks: &[PartCheck]) -> Result<Report> {
    let path = path.as_ref();
    let file = std::fs::canonicalize(path).map_err(|e| Error::io(format!("verify {}", path.display()), e))?;
    let meta = std::fs::metadata(&file).map_err(|e| Error::io(format!("stat {}", file.display()), e))?;
    if !meta.is_file() {
        return Err(Error::invalid_argument(format!("{} is not a file", file.display())));
    }
    let (read_end, write_end) = pipe()?;
    // SAFETY: fork has no memory-safety preconditions. The child runs only
    // `child_main` (see the module docs for why that is safe after a fork
    // in a threaded process) and ends with `_exit`, never returning here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::io("fork a verifier", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read_end);
        child_main(&file, checks, write_end);
    }
    drop(write_end);
    let mut output = Vec::new();
    let read = std::fs::File::from(read_end).read_to_end(&mut output);
    let status = wait(pid)?;
    read.map_err(|e| Error::io("read the verifier's report", e))?;
    Ok(parent_report(&file, &output, status))
}

/// Turns what the child wrote and how it ended into a report.
fn parent_report(file: &Path, output: &[u8], status: libc::c_int) -> Report {
    let parsed = serde_json::from_slice::<Value>(output)
        .ok()
        .and_then(|value| Report::from_json(file, &value));
    match parsed {
        Some(report) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => report,
        _ => {
            let mut report = Report {
                file: file.to_path_buf(),
                ..Report::default()
            };
            let how = if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                format!("crashed with signal {signal} ({})", signal_name(signal))
            } else {
                format!("ended with status {}", libc::WEXITSTATUS(status))
            };
            report.problem(format!(
                "reading the file {how}: it is damaged in a way LMDB does not detect (a page points outside the file \
                 or is scribbled); restore it from a backup"
            ));
            report
        }
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        _ => "signal",
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io(
            "make a pipe for the verifier",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn wait(pid: libc::pid_t) -> Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io("wait for the verifier", err));
        }
    }
}

/// The child: walk, report, `_exit`. Never returns.
fn child_main(file: &Path, checks: &[PartCheck], out: OwnedFd) -> ! {
    let report = std::panic::catch_unwind(|| walk_file(file, checks)).unwrap_or_else(|_| {
        let mut report = Report {
            file: file.to_path_buf(),
            ..Report::default()
        };
        report.problem("the verifier panicked (a bug in keel's checks, please report it)");
        report
    });
    let bytes = report.to_json().to_string().into_bytes();
    let mut written = 0;
    while written < bytes.len() {
        // SAFETY: `out` is open; the range is within `bytes`.
        let rc = unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&out),
                bytes[written..].as_ptr().cast(),
                bytes.len() - written,
            )
        };
        if rc <= 0 {
            break;
        }
        written += rc as usize;
    }
    // SAFETY: ends the child at once: no destructors or atexit handlers of
    // the parent's state run here.
    unsafe { libc::_exit(0) }
}

/// Opens `file` read-only in a fresh environment and walks it.
pub fn walk_file(file: impl AsRef<Path>, checks: &[PartCheck]) -> Report {
    let file = file.as_ref();
    let mut report = Report {
        file: file.to_path_buf(),
        ..Report::default()
    };
    if let Err(err) = walk(file, checks, &mut report) {
        report.problem(err.report().to_string());
    }
    report
}

fn walk(file: &Path, checks: &[PartCheck], report: &mut Report) -> Result<()> {
    let shown = file.display();
    let env = Environment::new()
        .set_flags(EnvironmentFlags::NO_SUB_DIR | EnvironmentFlags::NO_TLS | EnvironmentFlags::READ_ONLY)
        .set_max_dbs(256)
        .open(file)
        .map_err(|e| map_err(format!("open {shown}"), e))?;
    super::env::check_not_truncated(&env, file)?;
    let names = database_names(&env)?;
    let mut dbs = BTreeMap::new();
    for name in names {
        let db = env
            .open_db(Some(&name))
            .map_err(|e| map_err(format!("open table {name:?}"), e))?;
        dbs.insert(name, db);
    }
    let txn = env.begin_ro_txn().map_err(|e| map_err(format!("read {shown}"), e))?;
    for (name, db) in &dbs {
        let entries = count_entries(&txn, *db, name, report);
        report.tables.insert(name.clone(), entries);
    }
    let file: &'static Path = Box::leak(file.to_path_buf().into_boxed_path());
    for check in checks {
        check(&txn, &dbs, file, report);
    }
    Ok(())
}

fn database_names(env: &Environment) -> Result<Vec<String>> {
    let main = env.open_db(None).map_err(|e| map_err("open the main table", e))?;
    let txn = env.begin_ro_txn().map_err(|e| map_err("list tables", e))?;
    let mut cursor = txn.open_ro_cursor(main).map_err(|e| map_err("list tables", e))?;
    let mut names = Vec::new();
    for entry in cursor.iter_start() {
        let (key, _) = entry.map_err(|e| map_err("list tables", e))?;
        names.push(String::from_utf8_lossy(key).into_owned());
    }
    Ok(names)
}

/// Reads every entry of `db` (keys and values), counting them; an LMDB
/// error on the way is a problem.
fn count_entries(txn: &impl Transaction, db: Database, name: &str, report: &mut Report) -> u64 {
    let mut count = 0;
    let mut cursor = match txn.open_ro_cursor(db) {
        Ok(cursor) => cursor,
        Err(e) => {
            report.problem(format!("table {name}: {e}"));
            return 0;
        }
    };
    let mut sum = 0u8;
    for entry in cursor.iter_start() {
        match entry {
            Ok((key, value)) => {
                // Touch every byte, so a page past the file's end is met here.
                sum = key.iter().chain(value).fold(sum, |s, b| s ^ b);
                count += 1;
            }
            Err(e) => {
                report.problem(format!("table {name}, after {count} entries: {e}"));
                break;
            }
        }
    }
    std::hint::black_box(sum);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dying_child_is_a_problem_naming_the_signal() {
        let report = parent_report(Path::new("/f"), b"", libc::SIGSEGV);
        assert!(!report.is_ok());
        assert!(report.problems[0].contains("SIGSEGV"), "{report:?}");
    }

    #[test]
    fn reports_round_trip_through_json() {
        let mut report = Report {
            file: "/f".into(),
            ..Report::default()
        };
        report.tables.insert("t".into(), 3);
        report.problem("p");
        assert_eq!(Report::from_json(Path::new("/f"), &report.to_json()), Some(report));
    }
}

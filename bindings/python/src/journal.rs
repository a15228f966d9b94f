//! `keel.Journal`, `keel.Mutation` and `keel.ReadGuard`.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use keel::journal::{ReadGuard, SharedMutation};
use keel::{Error, Journal, Mutation};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString, PyTuple};

use crate::errors::to_pyerr;
use crate::held::Held;
use crate::json::to_py_serialized;
use crate::run::{blocking, quick};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJournal>()?;
    m.add_class::<PyMutation>()?;
    m.add_class::<PyReadGuard>()?;
    Ok(())
}

/// A managed directory tree whose changes are made through mutations that
/// end exactly as before or exactly as after, whatever happens: an
/// exception, a crash, a full disk. State lives in `root/.keel/`.
///
/// `close()` (or the end of `with keel.Journal(root) as journal:`) releases
/// the journal: every later call raises keel.Closed. A mutation or read
/// guard already begun keeps its own hold and ends as it would have
/// (committed, rolled back, released).
#[pyclass(name = "Journal", module = "keel", frozen)]
pub struct PyJournal {
    inner: Held<Journal>,
    root: std::path::PathBuf,
}

/// One mutation, holding the root's exclusive lock. Use it as a context
/// manager: it commits when the block succeeds and rolls back when it
/// raises. An unfinished mutation that is garbage-collected rolls back.
///
/// Every call waits for the mutation with the GIL released; `seq` and
/// `active` never wait. A file-like object's `read()` that uses the
/// mutation again gets `keel.WouldDeadlock` instead of hanging.
#[pyclass(name = "Mutation", module = "keel", frozen)]
pub struct PyMutation {
    inner: SharedMutation,
    /// The operation it was begun for, for its repr.
    operation: String,
}

impl PyMutation {
    fn wrap(mutation: Mutation, operation: &str) -> PyMutation {
        PyMutation {
            inner: SharedMutation::new(mutation),
            operation: operation.to_owned(),
        }
    }
}

/// The shared lock of a root: no mutation runs while it is held.
#[pyclass(name = "ReadGuard", module = "keel", frozen)]
pub struct PyReadGuard {
    held: Mutex<Option<ReadGuard>>,
}

#[pymethods]
impl PyJournal {
    /// Opens the journal of the existing folder `root`, recovering what a
    /// crash left.
    #[new]
    fn new(py: Python<'_>, root: std::path::PathBuf) -> PyResult<Self> {
        let inner =
            blocking(py, || Journal::open(&root)).map_err(|err| crate::errors::with_filename(py, err, &root))?;
        let root = inner.root().to_path_buf();
        let inner = Held::new(inner, format!("the Journal {root:?}"));
        Ok(PyJournal { inner, root })
    }

    /// The canonical root folder (also once closed).
    #[getter]
    fn root(&self) -> std::path::PathBuf {
        self.root.clone()
    }

    /// Releases the journal (see the class). Closing twice is harmless.
    fn close(&self, py: Python<'_>) {
        self.inner.close(py)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the journal.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py)
    }

    /// Starts a mutation: waits for the lock with the GIL released, in
    /// short slices so Ctrl-C interrupts it; `timeout` (seconds) raises
    /// keel.Timeout once elapsed.
    #[pyo3(signature = (operation, details="", *, timeout=None))]
    fn begin(&self, py: Python<'_>, operation: &str, details: &str, timeout: Option<f64>) -> PyResult<PyMutation> {
        let mutation = wait_in_slices(py, timeout, "begin a mutation", |slice| {
            self.inner.get()?.begin_timeout(operation, details, slice)
        })?;
        Ok(PyMutation::wrap(mutation, operation))
    }

    /// `begin` without waiting: None when another thread or process holds
    /// the root.
    #[pyo3(signature = (operation, details=""))]
    fn try_begin(&self, py: Python<'_>, operation: &str, details: &str) -> PyResult<Option<PyMutation>> {
        let mutation = blocking(py, || self.inner.get()?.try_begin(operation, details))?;
        Ok(mutation.map(|mutation| PyMutation::wrap(mutation, operation)))
    }

    /// The same as `begin`, named for `with journal.mutation(...) as m:`.
    #[pyo3(signature = (operation, details="", *, timeout=None))]
    fn mutation(&self, py: Python<'_>, operation: &str, details: &str, timeout: Option<f64>) -> PyResult<PyMutation> {
        self.begin(py, operation, details, timeout)
    }

    /// Takes the shared lock (a context manager): readers see only
    /// committed states. Waits like `begin` (Ctrl-C interrupts it;
    /// `timeout` in seconds).
    #[pyo3(signature = (*, timeout=None))]
    fn read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyReadGuard> {
        let guard = wait_in_slices(py, timeout, "read the journal", |slice| {
            self.inner.get()?.read_timeout(slice)
        })?;
        Ok(PyReadGuard {
            held: Mutex::new(Some(guard)),
        })
    }

    /// Runs recovery now; returns what it did as a dict.
    fn recover<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let report = blocking(py, || self.inner.get()?.recover())?;
        to_py_serialized(py, &report)
    }

    /// What the last recovery of this handle did (the one opening ran
    /// first), as a dict like `recover()`'s, or None if none ran.
    fn last_recovery<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        quick(py, || self.inner.get())?
            .last_recovery()
            .map(|report| to_py_serialized(py, &report))
            .transpose()
    }

    /// What the journal of `root` holds, without opening it: nothing is
    /// created, locked, recovered or written. An interrupted mutation shows
    /// as a pending "active" record that `recover()` would roll back.
    #[staticmethod]
    fn inspect<'py>(py: Python<'py>, root: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let status = blocking(py, || Journal::inspect(&root))?;
        to_py_serialized(py, &status)
    }

    /// Records, unreadable records, quarantine and the last recovery error.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let status = blocking(py, || self.inner.get()?.status())?;
        to_py_serialized(py, &status)
    }

    /// For operators: gives up on rolling back mutation `seq`; its record
    /// and backups move to `.keel/quarantine/`, the tree stays as it is.
    fn resolve(&self, py: Python<'_>, seq: u64) -> PyResult<String> {
        let moved = blocking(py, || self.inner.get()?.resolve(seq))?;
        Ok(moved.folder)
    }

    /// Counters: fsyncs, committed, rolled_back, recovered, quarantined,
    /// recovery_failures.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::json::to_py_serialized(py, &quick(py, || self.inner.get())?.stats())
    }

    fn __repr__(&self) -> String {
        format!("<keel.Journal {:?}{}>", self.root, self.inner.closed_note())
    }
}

impl PyMutation {
    /// Runs `op` on the live mutation with the GIL released (waiting for the
    /// mutation happens there too).
    fn with<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&mut Mutation) -> keel::Result<T> + Send) -> PyResult<T> {
        blocking(py, || self.inner.with(op))
    }
}

#[pymethods]
impl PyMutation {
    /// The sequence number of the mutation's record.
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.seq()
    }

    /// The paths snapshotted so far.
    #[getter]
    fn touched(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |m| Ok(m.touched()))
    }

    /// Writes `data` — bytes, bytearray, str (UTF-8) or a binary/text
    /// file-like object (streamed) — to the file `path`, durably. Returns
    /// the number of bytes written.
    fn write(&self, py: Python<'_>, path: &str, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        match Data::from_py(data)? {
            Data::Bytes(bytes) => self.with(py, |m| m.write(path, &bytes).map(|_| bytes.len() as u64)),
            Data::Reader(reader) => {
                let mut reader = PyReader {
                    source: reader,
                    pending: Vec::new(),
                };
                self.with(py, |m| m.write_from(path, &mut reader))
            }
        }
    }

    /// Writes several files at once, cheaper than `write` per file: one
    /// record write for all their snapshots, each changed folder fsynced
    /// once. `files` maps paths to bytes (a dict, or (path, bytes) pairs);
    /// nothing is changed unless every path is valid, and a path given
    /// twice ends with its last bytes.
    fn write_many(&self, py: Python<'_>, files: &Bound<'_, PyAny>) -> PyResult<()> {
        let pairs = match files.cast::<pyo3::types::PyDict>() {
            Ok(dict) => dict.items().into_any(),
            Err(_) => files.clone(),
        };
        // Held, not copied: bytes stay the caller's objects while the GIL is
        // released for the writes.
        let mut held: Vec<(String, pyo3::pybacked::PyBackedBytes)> = Vec::new();
        for pair in pairs.try_iter()? {
            held.push(pair?.extract()?);
        }
        let files: Vec<(&str, &[u8])> = held.iter().map(|(path, data)| (path.as_str(), &data[..])).collect();
        self.with(py, |m| m.write_many(&files))
    }

    /// Makes `path` a symlink to `target` (never followed).
    fn symlink(&self, py: Python<'_>, path: &str, target: &str) -> PyResult<()> {
        self.with(py, |m| m.symlink(path, target))
    }

    /// Removes the file, symlink or folder `path`.
    fn remove(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        self.with(py, |m| m.remove(path))
    }

    /// Renames `source` to `target`.
    fn rename(&self, py: Python<'_>, source: &str, target: &str) -> PyResult<()> {
        self.with(py, |m| m.rename(source, target))
    }

    /// Creates the folder `path` and missing parents.
    fn create_dir(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        self.with(py, |m| m.create_dir(path))
    }

    /// Snapshots paths you will change yourself (folders are hardlinked:
    /// replace files in them, never edit in place; an in-place edit is
    /// reported by the rollback as keel.Corrupt).
    /// With `copy=True` folders are copied whole instead, so their files
    /// may be edited in place (costs their bytes).
    #[pyo3(signature = (paths, *, copy=false))]
    fn declare(&self, py: Python<'_>, paths: Vec<String>, copy: bool) -> PyResult<()> {
        match copy {
            true => self.with(py, |m| m.declare_copy(&paths)),
            false => self.with(py, |m| m.declare(&paths)),
        }
    }

    /// A private folder on the root's file system to prepare files in.
    fn staging_dir(&self, py: Python<'_>) -> PyResult<std::path::PathBuf> {
        self.with(py, |m| m.staging_dir())
    }

    /// Moves the staging folder's contents into the folder `into` ("" is the root).
    #[pyo3(signature = (into=""))]
    fn publish(&self, py: Python<'_>, into: &str) -> PyResult<()> {
        self.with(py, |m| m.publish(into))
    }

    /// Makes the mutation durable and final (rolls back and raises on failure).
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        blocking(py, || self.inner.commit())
    }

    /// Undoes every change.
    fn rollback(&self, py: Python<'_>) -> PyResult<()> {
        blocking(py, || self.inner.rollback())
    }

    /// True until committed or rolled back.
    #[getter]
    fn active(&self) -> bool {
        self.inner.is_active()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits when the block succeeded, rolls back when it raised (the
    /// exception then propagates). Ending the mutation inside the block is fine.
    #[pyo3(signature = (exc_type, _exc, _tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !self.inner.is_active() {
            return Ok(());
        }
        if exc_type.is_none() {
            self.commit(py)?;
        } else {
            // The block's exception matters more than a rollback failure,
            // which leaves the record for the next recovery anyway.
            let _ = self.rollback(py);
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_active() { "active" } else { "ended" };
        format!("<keel.Mutation {:?} seq={} {state}>", self.operation, self.inner.seq())
    }
}

#[pymethods]
impl PyReadGuard {
    /// Releases the shared lock. Releasing twice is harmless.
    fn release(&self) {
        let held = self.held.lock().take();
        drop(held);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
        self.release();
    }

    fn __repr__(&self) -> String {
        // try_lock: a repr never waits (release() holds the lock briefly).
        let state = match self.held.try_lock() {
            Some(held) if held.is_some() => "held",
            Some(_) => "released",
            None => "releasing",
        };
        format!("<keel.ReadGuard {state}>")
    }
}

/// How long one wait lasts before Python gets to run its signal handlers.
const SLICE: Duration = Duration::from_millis(100);

/// Runs a timed core wait (`attempt`, given the slice to wait) in slices,
/// with the GIL released during each and Python's signal handlers run
/// between them (so Ctrl-C raises KeyboardInterrupt promptly, nothing
/// taken); keel.Timeout once `timeout` seconds have passed.
fn wait_in_slices<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    what: &str,
    attempt: impl Fn(Duration) -> keel::Result<Option<T>> + Sync,
) -> PyResult<T> {
    let deadline = match timeout {
        None => None,
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Some(Instant::now() + Duration::from_secs_f64(seconds))
        }
        Some(seconds) => {
            return Err(to_pyerr(
                py,
                Error::invalid_argument(format!("timeout {seconds} is not a number of seconds >= 0")),
            ))
        }
    };
    loop {
        let slice = deadline.map_or(SLICE, |at| at.saturating_duration_since(Instant::now()).min(SLICE));
        if let Some(value) = blocking(py, || attempt(slice))? {
            return Ok(value);
        }
        py.check_signals()?;
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Err(to_pyerr(
                py,
                Error::timeout(format!("could not {what} within {} s", timeout.unwrap_or_default())),
            ));
        }
    }
}

/// What `Mutation.write` was given.
enum Data {
    Bytes(Vec<u8>),
    Reader(Py<PyAny>),
}

impl Data {
    fn from_py(data: &Bound<'_, PyAny>) -> PyResult<Data> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return Ok(Data::Bytes(bytes.as_bytes().to_vec()));
        }
        if let Ok(array) = data.cast::<PyByteArray>() {
            return Ok(Data::Bytes(array.to_vec()));
        }
        if let Ok(text) = data.cast::<PyString>() {
            return match text.to_cow() {
                Ok(text) => Ok(Data::Bytes(text.as_bytes().to_vec())),
                Err(_) => Err(to_pyerr(
                    data.py(),
                    Error::invalid_argument("data is a str that is not valid UTF-8"),
                )),
            };
        }
        if data.hasattr("read")? {
            return Ok(Data::Reader(data.clone().unbind()));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "data is bytes, bytearray, str or a file-like object, not {}",
            data.get_type().name()?
        )))
    }
}

/// Streams a Python file-like object into the core, taking the GIL only for
/// each `read()` call.
struct PyReader {
    source: Py<PyAny>,
    /// Bytes of a text chunk that did not fit the caller's buffer.
    pending: Vec<u8>,
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            self.pending = Python::attach(|py| read_chunk(self.source.bind(py), buf.len()))
                .map_err(|err| io::Error::other(format!("reading the Python file object failed: {err}")))?;
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

fn read_chunk(source: &Bound<'_, PyAny>, size: usize) -> PyResult<Vec<u8>> {
    let chunk = source.call_method1("read", (size.max(1),))?;
    if let Ok(bytes) = chunk.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = chunk.cast::<PyString>() {
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    if chunk.is_none() {
        return Ok(Vec::new());
    }
    chunk.extract::<Vec<u8>>()
}

//! `keel.Journal`, `keel.Mutation` and `keel.ReadGuard`.

use std::io::{self, Read};

use keel::journal::{JournalStatus, ReadGuard, RecoveryReport};
use keel::{Error, Journal, Mutation};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::errors::to_pyerr;
use crate::run::{abandonable, blocking, quick};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJournal>()?;
    m.add_class::<PyMutation>()?;
    m.add_class::<PyReadGuard>()?;
    Ok(())
}

/// A managed directory tree whose changes are made through mutations that
/// end exactly as before or exactly as after, whatever happens: an
/// exception, a crash, a full disk. State lives in `root/.keel/`.
#[pyclass(name = "Journal", module = "keel", frozen)]
pub struct PyJournal {
    inner: Journal,
}

/// One mutation, holding the root's exclusive lock. Use it as a context
/// manager: it commits when the block succeeds and rolls back when it
/// raises. An unfinished mutation that is garbage-collected rolls back.
#[pyclass(name = "Mutation", module = "keel", frozen)]
pub struct PyMutation {
    inner: Mutex<Option<Mutation>>,
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
        Ok(PyJournal { inner })
    }

    /// The canonical root folder.
    #[getter]
    fn root(&self) -> std::path::PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Starts a mutation (waits for the lock with the GIL released).
    #[pyo3(signature = (operation, details=""))]
    fn begin(&self, py: Python<'_>, operation: &str, details: &str) -> PyResult<PyMutation> {
        // Without a wait on this thread if the root is free (and this
        // thread's own hold is refused here); else the wait runs where
        // Ctrl-C can interrupt it.
        let mutation = match blocking(py, || self.inner.try_begin(operation, details))? {
            Some(mutation) => mutation,
            None => {
                let (journal, operation, details) = (self.inner.clone(), operation.to_owned(), details.to_owned());
                abandonable(py, move || journal.begin(&operation, &details))?
            }
        };
        Ok(PyMutation {
            inner: Mutex::new(Some(mutation)),
        })
    }

    /// `begin` without waiting: None when another thread or process holds
    /// the root.
    #[pyo3(signature = (operation, details=""))]
    fn try_begin(&self, py: Python<'_>, operation: &str, details: &str) -> PyResult<Option<PyMutation>> {
        let mutation = blocking(py, || self.inner.try_begin(operation, details))?;
        Ok(mutation.map(|mutation| PyMutation {
            inner: Mutex::new(Some(mutation)),
        }))
    }

    /// The same as `begin`, named for `with journal.mutation(...) as m:`.
    #[pyo3(signature = (operation, details=""))]
    fn mutation(&self, py: Python<'_>, operation: &str, details: &str) -> PyResult<PyMutation> {
        self.begin(py, operation, details)
    }

    /// Takes the shared lock (a context manager): readers see only
    /// committed states.
    fn read(&self, py: Python<'_>) -> PyResult<PyReadGuard> {
        let guard = blocking(py, || self.inner.read())?;
        Ok(PyReadGuard {
            held: Mutex::new(Some(guard)),
        })
    }

    /// Runs recovery now; returns what it did as a dict.
    fn recover<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = blocking(py, || self.inner.recover())?;
        report_dict(py, &report)
    }

    /// Records, unreadable records, quarantine and the last recovery error.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = blocking(py, || self.inner.status())?;
        status_dict(py, &status)
    }

    /// For operators: gives up on rolling back mutation `seq`; its record
    /// and backups move to `.keel/quarantine/`, the tree stays as it is.
    fn resolve(&self, py: Python<'_>, seq: u64) -> PyResult<String> {
        let moved = blocking(py, || self.inner.resolve(seq))?;
        Ok(moved.folder)
    }

    /// Counters: fsyncs, committed, rolled_back, recovered, quarantined,
    /// recovery_failures.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.stats();
        let dict = PyDict::new(py);
        dict.set_item("fsyncs", stats.fsyncs)?;
        dict.set_item("committed", stats.committed)?;
        dict.set_item("rolled_back", stats.rolled_back)?;
        dict.set_item("recovered", stats.recovered)?;
        dict.set_item("quarantined", stats.quarantined)?;
        dict.set_item("recovery_failures", stats.recovery_failures)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!("<keel.Journal {:?}>", self.inner.root())
    }
}

impl PyMutation {
    /// Runs `op` on the live mutation with the GIL released.
    fn with<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&mut Mutation) -> keel::Result<T> + Send) -> PyResult<T> {
        blocking(py, || {
            let mut slot = self.inner.lock();
            let live = slot.as_mut().ok_or_else(|| Error::closed("the mutation has ended"))?;
            op(live)
        })
    }

    fn finish(&self, py: Python<'_>, op: impl FnOnce(Mutation) -> keel::Result<()> + Send) -> PyResult<()> {
        blocking(py, || {
            let live = self
                .inner
                .lock()
                .take()
                .ok_or_else(|| Error::closed("the mutation has ended"))?;
            op(live)
        })
    }
}

#[pymethods]
impl PyMutation {
    /// The sequence number of the mutation's record.
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |m| Ok(m.seq()))
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
        self.finish(py, Mutation::commit)
    }

    /// Undoes every change.
    fn rollback(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, Mutation::rollback)
    }

    /// True until committed or rolled back.
    #[getter]
    fn active(&self) -> bool {
        self.inner.lock().is_some()
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
    ) -> PyResult<bool> {
        if self.inner.lock().is_none() {
            return Ok(false);
        }
        if exc_type.is_none() {
            self.commit(py)?;
        } else {
            // The block's exception matters more than a rollback failure,
            // which leaves the record for the next recovery anyway.
            let _ = self.rollback(py);
        }
        Ok(false)
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
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.release();
        false
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

fn report_dict<'py>(py: Python<'py>, report: &RecoveryReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("rolled_back", report.rolled_back.clone())?;
    dict.set_item("discarded", report.discarded.clone())?;
    let quarantined = PyList::empty(py);
    for item in &report.quarantined {
        let entry = PyDict::new(py);
        entry.set_item("name", &item.name)?;
        entry.set_item("folder", &item.folder)?;
        entry.set_item("reason", &item.reason)?;
        quarantined.append(entry)?;
    }
    dict.set_item("quarantined", quarantined)?;
    dict.set_item("reaped", report.reaped)?;
    Ok(dict)
}

fn status_dict<'py>(py: Python<'py>, status: &JournalStatus) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let pending = PyList::empty(py);
    for record in &status.pending {
        let entry = PyDict::new(py);
        entry.set_item("seq", record.seq)?;
        entry.set_item("operation", &record.operation)?;
        entry.set_item("details", &record.details)?;
        entry.set_item("status", record.status.as_str())?;
        entry.set_item("paths", record.paths.clone())?;
        pending.append(entry)?;
    }
    dict.set_item("pending", pending)?;
    dict.set_item("unreadable", status.unreadable.clone())?;
    dict.set_item("quarantined", status.quarantined.clone())?;
    dict.set_item("last_recovery_error", status.last_recovery_error.clone())?;
    quick(py, || Ok(dict))
}

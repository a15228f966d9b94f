//! `keel.KeyedLocks` and `keel.LockGuard`.

use keel::{Error, KeyedLocks, LockMode, MultiKeyGuard, Wait};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert;
use crate::errors::to_pyerr;
use crate::pool::PyCancellationToken;
use crate::run::{in_slices, quick};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKeyedLocks>()?;
    m.add_class::<PyLockGuard>()?;
    Ok(())
}

/// A key from Python: `str` (its UTF-8 bytes) or `bytes`.
pub fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(text) = key.cast::<PyString>() {
        // A str with lone surrogates has no UTF-8 form: a bad argument, said so.
        return match text.to_cow() {
            Ok(text) => Ok(text.as_bytes().to_vec()),
            Err(_) => Err(to_pyerr(
                key.py(),
                Error::invalid_argument("the key is a str that is not valid UTF-8"),
            )),
        };
    }
    if let Ok(bytes) = key.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "a key is str or bytes, not {}",
        key.get_type().name()?
    )))
}

/// One slice of [`in_slices`] as the timeout `lock_with` takes.
fn slice_timeout(slice: Wait) -> Option<std::time::Duration> {
    match slice {
        Wait::For(limit) => Some(limit),
        Wait::Never => Some(std::time::Duration::ZERO),
        Wait::Forever => None,
    }
}

fn mode(shared: bool) -> LockMode {
    if shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    }
}

/// One lock per key while anyone holds or waits for it, and no entry left
/// behind when nobody does. Keys are str or bytes.
#[pyclass(name = "KeyedLocks", module = "keel", frozen)]
pub struct PyKeyedLocks {
    inner: KeyedLocks<Vec<u8>>,
}

/// A held key (or set of keys). Release it with `release()` or a `with`
/// block; any thread may release it.
#[pyclass(name = "LockGuard", module = "keel", frozen)]
pub struct PyLockGuard {
    held: Mutex<Option<MultiKeyGuard<Vec<u8>>>>,
}

impl PyLockGuard {
    fn new(held: MultiKeyGuard<Vec<u8>>) -> Self {
        PyLockGuard {
            held: Mutex::new(Some(held)),
        }
    }
}

#[pymethods]
impl PyKeyedLocks {
    #[new]
    #[pyo3(signature = (name=None))]
    fn new(name: Option<String>) -> Self {
        let inner = match name {
            Some(name) => KeyedLocks::named(name),
            None => KeyedLocks::new(),
        };
        PyKeyedLocks { inner }
    }

    /// Takes `key`, waiting at most `timeout` seconds (None: no limit) with
    /// the GIL released, and until `cancel` (a CancellationToken) is
    /// cancelled. Raises keel.Timeout, keel.Cancelled (the waiter is
    /// withdrawn either way), or keel.WouldDeadlock when this thread holds
    /// the key already.
    #[pyo3(signature = (key, *, timeout=None, shared=false, cancel=None))]
    fn lock(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        shared: bool,
        cancel: Option<PyRef<'_, PyCancellationToken>>,
    ) -> PyResult<PyLockGuard> {
        let key = key_bytes(key)?;
        let wait = quick(py, || convert::optional_duration(timeout, "timeout"))?.map_or(Wait::Forever, Wait::For);
        let cancel = cancel.map(|token| token.inner.clone());
        // In slices, so Ctrl-C interrupts the wait (taking nothing).
        let guard = in_slices(py, wait, |slice| {
            self.inner
                .lock_with(key.as_slice(), mode(shared), slice_timeout(slice), cancel.as_ref())
                .map(Some)
        })?;
        Ok(PyLockGuard::new(
            guard.expect("a waiting acquisition returns a guard").into(),
        ))
    }

    /// Takes `key` if that needs no wait; None if someone holds it.
    #[pyo3(signature = (key, *, shared=false))]
    fn try_lock(&self, py: Python<'_>, key: &Bound<'_, PyAny>, shared: bool) -> PyResult<Option<PyLockGuard>> {
        let key = key_bytes(key)?;
        let guard = quick(py, || self.inner.acquire(key.as_slice(), mode(shared), Wait::Never))?;
        Ok(guard.map(|guard| PyLockGuard::new(guard.into())))
    }

    /// Takes every key, all or none, in a canonical order (no deadlock
    /// between callers), waiting at most `timeout` seconds in all, and until
    /// `cancel` is cancelled.
    #[pyo3(signature = (keys, *, timeout=None, shared=false, cancel=None))]
    fn lock_many(
        &self,
        py: Python<'_>,
        keys: Vec<Bound<'_, PyAny>>,
        timeout: Option<f64>,
        shared: bool,
        cancel: Option<PyRef<'_, PyCancellationToken>>,
    ) -> PyResult<PyLockGuard> {
        let keys = keys.iter().map(key_bytes).collect::<PyResult<Vec<_>>>()?;
        let wait = quick(py, || convert::optional_duration(timeout, "timeout"))?.map_or(Wait::Forever, Wait::For);
        let cancel = cancel.map(|token| token.inner.clone());
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        // In slices, so Ctrl-C interrupts the wait (taking none of the keys).
        let guard = in_slices(py, wait, |slice| {
            self.inner
                .lock_many_with(&keys, mode(shared), slice_timeout(slice), cancel.as_ref())
                .map(Some)
        })?;
        Ok(PyLockGuard::new(guard.expect("a waiting acquisition returns a guard")))
    }

    /// Entries, holders and waiters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::stats::to_dict(py, &self.inner.stats())
    }

    /// The number of keys held or waited for.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        let stats = self.inner.stats();
        let name = self.inner.name().map(|name| format!("{name:?}, ")).unwrap_or_default();
        format!(
            "<keel.KeyedLocks {name}entries={} holders={} waiters={}>",
            stats.entries, stats.holders, stats.waiters
        )
    }
}

#[pymethods]
impl PyLockGuard {
    /// Releases the key(s). Releasing twice is harmless.
    fn release(&self) {
        let held = self.held.lock().take();
        drop(held);
    }

    /// True until released.
    #[getter]
    fn locked(&self) -> bool {
        self.held.lock().is_some()
    }

    fn __repr__(&self) -> String {
        match &*self.held.lock() {
            Some(held) => format!("<keel.LockGuard keys={} held>", held.len()),
            None => "<keel.LockGuard released>".to_owned(),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }
}

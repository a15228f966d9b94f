//! `keel.KeyedLocks` and `keel.LockGuard`: in this process, or across
//! processes and hosts on PostgreSQL (`KeyedLocks("postgresql://...")`).

use keel::location::Location;
use keel::pool::CancellationToken;
use keel::postgres::{PgKeyGuard, PgKeyedLocks};
use keel::{Error, ErrorKind, KeyedLocks, LockMode, MultiKeyGuard, Wait};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert;
use crate::errors::to_pyerr;
use crate::pool::PyCancellationToken;
use crate::run::{blocking, in_slices, interruptible, quick};

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

/// A PostgreSQL key: the key's text (bytes must be UTF-8).
fn pg_key(py: Python<'_>, key: Vec<u8>) -> PyResult<String> {
    String::from_utf8(key).map_err(|_| {
        to_pyerr(
            py,
            Error::invalid_argument("a PostgreSQL lock key is a str, or bytes that are UTF-8"),
        )
    })
}

/// Makes `target` cancelled when `source` is, until dropped.
struct Relay {
    done: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(source: CancellationToken, target: CancellationToken) -> keel::Result<Relay> {
        let (done, finished) = crossbeam_channel::bounded::<()>(0);
        let cancelled = source.receiver();
        let thread = std::thread::Builder::new()
            .name("keel-lock-cancel".into())
            .spawn(move || {
                // Both wake by disconnecting: the token's on cancel, ours on drop.
                crossbeam_channel::select! {
                    recv(cancelled) -> _ => {},
                    recv(finished) -> _ => {},
                }
                if source.is_cancelled() {
                    target.cancel();
                }
            })
            .map_err(|err| Error::io("start a thread for a lock's cancellation", err))?;
        Ok(Relay {
            done: Some(done),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.done.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits on the server for `keys` with the GIL released, until granted,
/// `wait` runs out, `cancel` is cancelled, or Ctrl-C (then the waiting
/// statement is cancelled on the server and nothing is held).
fn pg_wait(
    py: Python<'_>,
    locks: &PgKeyedLocks,
    keys: Vec<String>,
    mode: LockMode,
    wait: Wait,
    cancel: Option<CancellationToken>,
) -> PyResult<PgKeyGuard> {
    let stop = CancellationToken::new();
    let this_call = stop.clone();
    let guard = interruptible(
        py,
        move || stop.cancel(),
        move |_| {
            let _relay = cancel.map(|user| Relay::start(user, this_call.clone())).transpose()?;
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            locks.lock_many_with(&keys, mode, wait, Some(&this_call))
        },
    )?;
    Ok(guard.expect("a waiting acquisition returns a guard"))
}

/// Where the keys live.
enum Registry {
    /// This process.
    Local(KeyedLocks<Vec<u8>>),
    /// A PostgreSQL database: every process and host that opens it.
    Pg(PgKeyedLocks),
}

/// What a guard holds.
enum Held {
    Local(MultiKeyGuard<Vec<u8>>),
    Pg(Box<PgKeyGuard>),
}

/// One lock per key while anyone holds or waits for it, and no entry left
/// behind when nobody does. Keys are str or bytes. `KeyedLocks(url)` with a
/// `postgresql://` URL: the same locks across processes and hosts, on the
/// database's advisory locks (keys are str, or UTF-8 bytes).
#[pyclass(name = "KeyedLocks", module = "keel", frozen)]
pub struct PyKeyedLocks {
    inner: Registry,
}

/// A held key (or set of keys). Release it with `release()` or a `with`
/// block; any thread may release it.
#[pyclass(name = "LockGuard", module = "keel", frozen)]
pub struct PyLockGuard {
    held: Mutex<Option<Held>>,
    token: Option<u64>,
}

impl PyLockGuard {
    fn new(held: MultiKeyGuard<Vec<u8>>) -> Self {
        PyLockGuard {
            held: Mutex::new(Some(Held::Local(held))),
            token: None,
        }
    }

    fn pg(held: PgKeyGuard) -> Self {
        PyLockGuard {
            token: Some(held.token()),
            held: Mutex::new(Some(Held::Pg(Box::new(held)))),
        }
    }
}

#[pymethods]
impl PyKeyedLocks {
    /// `name` names an in-process registry in error messages; a
    /// `postgresql://` URL (libpq conventions, the `keel` schema) opens the
    /// cross-host locks there instead; another `scheme://` is refused.
    #[new]
    #[pyo3(signature = (name=None))]
    fn new(py: Python<'_>, name: Option<String>) -> PyResult<Self> {
        let inner = match name {
            None => Registry::Local(KeyedLocks::new()),
            Some(name) => match quick(py, || Location::parse(&name))? {
                Location::Postgres(url) => Registry::Pg(blocking(py, || PgKeyedLocks::open(&url))?),
                Location::Path(_) => Registry::Local(KeyedLocks::named(name)),
            },
        };
        Ok(PyKeyedLocks { inner })
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
        let locks = match &self.inner {
            Registry::Local(locks) => locks,
            Registry::Pg(locks) => {
                let key = pg_key(py, key)?;
                return Ok(PyLockGuard::pg(pg_wait(
                    py,
                    locks,
                    vec![key],
                    mode(shared),
                    wait,
                    cancel,
                )?));
            }
        };
        // In slices, so Ctrl-C interrupts the wait (taking nothing).
        let guard = in_slices(py, wait, |slice| {
            locks
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
        match &self.inner {
            Registry::Local(locks) => {
                let guard = quick(py, || locks.acquire(key.as_slice(), mode(shared), Wait::Never))?;
                Ok(guard.map(|guard| PyLockGuard::new(guard.into())))
            }
            Registry::Pg(locks) => {
                let key = pg_key(py, key)?;
                let guard = blocking(py, || locks.acquire(&key, mode(shared), Wait::Never))?;
                Ok(guard.map(PyLockGuard::pg))
            }
        }
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
        let locks = match &self.inner {
            Registry::Local(locks) => locks,
            Registry::Pg(locks) => {
                let keys = keys
                    .into_iter()
                    .map(|key| pg_key(py, key))
                    .collect::<PyResult<Vec<_>>>()?;
                return Ok(PyLockGuard::pg(pg_wait(py, locks, keys, mode(shared), wait, cancel)?));
            }
        };
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        // In slices, so Ctrl-C interrupts the wait (taking none of the keys).
        let guard = in_slices(py, wait, |slice| {
            locks
                .lock_many_with(&keys, mode(shared), slice_timeout(slice), cancel.as_ref())
                .map(Some)
        })?;
        Ok(PyLockGuard::new(guard.expect("a waiting acquisition returns a guard")))
    }

    /// Entries, holders and waiters, as a dict (on PostgreSQL: those of this
    /// object, not other processes').
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::json::to_py_serialized(py, &self.stats_now())
    }

    /// The number of keys held or waited for (on PostgreSQL: through this
    /// object).
    fn __len__(&self) -> usize {
        match &self.inner {
            Registry::Local(locks) => locks.len(),
            Registry::Pg(locks) => locks.stats().entries,
        }
    }

    fn __repr__(&self) -> String {
        let stats = self.stats_now();
        let name = match &self.inner {
            Registry::Local(locks) => locks.name().map(|name| format!("{name:?}, ")).unwrap_or_default(),
            // The location never carries a password.
            Registry::Pg(locks) => format!("{}, ", locks.location()),
        };
        format!(
            "<keel.KeyedLocks {name}entries={} holders={} waiters={}>",
            stats.entries, stats.holders, stats.waiters
        )
    }
}

impl PyKeyedLocks {
    fn stats_now(&self) -> keel::LockStats {
        match &self.inner {
            Registry::Local(locks) => locks.stats(),
            Registry::Pg(locks) => locks.stats(),
        }
    }
}

#[pymethods]
impl PyLockGuard {
    /// Releases the key(s). Releasing twice is harmless.
    fn release(&self, py: Python<'_>) {
        let held = self.held.lock().take();
        match held {
            // Unlocking on the server is a round trip: without the GIL.
            Some(Held::Pg(guard)) => py.detach(move || drop(guard)),
            other => drop(other),
        }
    }

    /// True until released.
    #[getter]
    fn locked(&self) -> bool {
        self.held.lock().is_some()
    }

    /// The fencing token of PostgreSQL locks: larger for every later
    /// acquisition, so the protected resource can refuse a holder whose
    /// session was lost. None for in-process locks.
    #[getter]
    fn token(&self) -> Option<u64> {
        self.token
    }

    /// Returns while the keys are held; raises keel.Closed once released or,
    /// on PostgreSQL, once the session holding them was lost (the server
    /// released them, and someone else may hold them now). Asks the server
    /// (a round trip, GIL released).
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        let mut held = self.held.lock();
        match &mut *held {
            None => Err(to_pyerr(
                py,
                Error::new(ErrorKind::Closed, "the lock guard was released"),
            )),
            Some(Held::Local(_)) => Ok(()),
            Some(Held::Pg(guard)) => blocking(py, || guard.check()),
        }
    }

    fn __repr__(&self) -> String {
        match &*self.held.lock() {
            Some(Held::Local(held)) => format!("<keel.LockGuard keys={} held>", held.len()),
            Some(Held::Pg(held)) => format!(
                "<keel.LockGuard keys={} held token={}>",
                held.keys().len(),
                held.token()
            ),
            None => "<keel.LockGuard released>".to_owned(),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release(py);
        false
    }
}

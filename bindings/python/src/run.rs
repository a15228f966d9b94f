//! Running core calls from Python: with the GIL released where they may
//! block, and with panics turned into `keel.Panic` instead of crossing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use keel::{Error, Result};
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// Runs `body` without the GIL (it may block), containing panics.
pub fn blocking<T: Send>(py: Python<'_>, body: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    crate::logging::refresh_if_stale(py);
    py.detach(|| contained(body)).map_err(|err| to_pyerr(py, err))
}

/// Runs a short `body` with the GIL held, containing panics.
pub fn quick<T>(py: Python<'_>, body: impl FnOnce() -> Result<T>) -> PyResult<T> {
    crate::logging::refresh_if_stale(py);
    contained(body).map_err(|err| to_pyerr(py, err))
}

fn contained<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(payload)))
}

/// For tests of the panic boundary only: panics inside keel; raises keel.Panic.
#[pyfunction]
pub fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    blocking(py, || -> Result<()> { panic!("keel._keel._debug_panic was called") })
}

/// keel threads inside a Python call now, and whether the interpreter is
/// exiting (then no keel thread attaches again).
struct Attached {
    inside: usize,
    exiting: bool,
}

static ATTACHED: Mutex<Attached> = Mutex::new(Attached {
    inside: 0,
    exiting: false,
});
static DETACHED: Condvar = Condvar::new();

/// How long interpreter exit waits for keel threads still inside Python calls.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Runs `body` attached to the interpreter from one of keel's own threads
/// (pool workers, job handlers, migrations, the log emitter). `None` when the
/// interpreter is exiting or gone: the caller reports that, nothing crashes.
///
/// Why the bookkeeping: a thread that attaches *during* finalization is
/// ended by CPython (< 3.14) with pthread_exit, whose forced unwind through a
/// Rust frame aborts the process. The exit hook ([`_wait_for_keel_threads`],
/// registered with atexit) stops new attachments and waits for current ones.
pub fn attached<R>(body: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    {
        let mut state = ATTACHED.lock();
        if state.exiting {
            return None;
        }
        state.inside += 1;
    }
    let result = Python::try_attach(body);
    let mut state = ATTACHED.lock();
    state.inside -= 1;
    DETACHED.notify_all();
    result
}

/// Runs at interpreter exit (atexit), before finalization: no keel thread
/// attaches from now on, and those inside a Python call get up to a second
/// (with the GIL released) to return. One that stays hung is harmless: the
/// process exits around it.
#[pyfunction]
pub fn _wait_for_keel_threads(py: Python<'_>) {
    py.detach(|| {
        let deadline = Instant::now() + EXIT_GRACE;
        let mut state = ATTACHED.lock();
        state.exiting = true;
        while state.inside > 0 && !DETACHED.wait_until(&mut state, deadline).timed_out() {}
    });
}

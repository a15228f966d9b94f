//! Running core calls from Python: with the GIL released where they may
//! block, and with panics turned into `keel.Panic` instead of crossing.

use std::panic::{catch_unwind, AssertUnwindSafe};

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

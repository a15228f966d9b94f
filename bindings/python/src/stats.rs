//! `keel.stats()`: every live keel object's counters, as a dict.

use pyo3::prelude::*;

use crate::run::quick;

/// Every live keel object's counters, grouped by part:
/// `{"locks": [{"name": ..., "entries": 0, ...}], "pool": [...], ...}`.
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let gathered = quick(py, || Ok(keel::stats::gather()))?;
    crate::json::to_py(py, &gathered)
}

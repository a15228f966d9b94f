//! `keel.stats()`: every live keel object's counters, as a dict.

use pyo3::prelude::*;

use crate::run::quick;

/// Every live keel object's counters, grouped by part:
/// `{"locks": [{"name": ..., "entries": 0, ...}], "pool": [...], ...}`.
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let text = quick(py, || Ok(keel::stats::gather().to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

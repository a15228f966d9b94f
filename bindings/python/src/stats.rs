//! `keel.stats()`: every live keel object's counters, as a dict. Each
//! object's `stats()` method serializes its core stats struct with
//! `json::to_py_serialized`, so Python's keys are the core's
//! (tests/python/test_stats_keys.py).

use pyo3::prelude::*;

use crate::run::quick;

/// Every live keel object's counters, grouped by part:
/// `{"locks": [{"name": ..., "entries": 0, ...}], "pool": [...], ...}`,
/// times in seconds (see `times`).
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let gathered = quick(py, || Ok(keel::stats::gather()))?;
    crate::json::to_py(py, &crate::times::stats_in_seconds(gathered))
}

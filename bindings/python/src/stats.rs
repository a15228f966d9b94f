//! `keel.stats()`: every live keel object's counters, as a dict; and the one
//! way each object's `stats()` method turns its core stats struct into a
//! dict, so Python's keys are the core's (tests/python/test_stats_keys.py).

use pyo3::prelude::*;
use serde::Serialize;

use crate::run::quick;

/// Every live keel object's counters, grouped by part:
/// `{"locks": [{"name": ..., "entries": 0, ...}], "pool": [...], ...}`,
/// times in seconds (see `times`).
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let gathered = quick(py, || Ok(keel::stats::gather()))?;
    crate::json::to_py(py, &crate::times::stats_in_seconds(gathered))
}

/// A core stats struct (`LockStats`, `PoolStats`, ...) as a dict with its
/// field names as keys: what every `stats()` method returns.
pub fn to_dict<'py>(py: Python<'py>, stats: &impl Serialize) -> PyResult<Bound<'py, PyAny>> {
    crate::json::to_py_serialized(py, stats)
}

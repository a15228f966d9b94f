//! `keel._keel.inspect_file`: what an LMDB file holds, read only (the keel
//! command checks it before every inspection).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::run::blocking;

/// ``{"path", "bytes", "parts": {"drive": 1, ...}, "databases": [...],
/// "description"}`` for the LMDB file at ``path``, without changing it.
#[pyfunction]
pub fn inspect_file<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let report = blocking(py, || keel::inspect::lmdb_file(&path))?;
    let dict = PyDict::new(py);
    dict.set_item("path", &report.path)?;
    dict.set_item("bytes", report.bytes)?;
    let parts = PyDict::new(py);
    for (part, version) in &report.parts {
        parts.set_item(part, version)?;
    }
    dict.set_item("parts", parts)?;
    dict.set_item("databases", &report.databases)?;
    dict.set_item("description", report.describe())?;
    Ok(dict)
}

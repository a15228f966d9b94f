//! The Python module `keel._keel`. Thin: convert arguments, call the core
//! with the GIL released, convert results and errors.

use pyo3::prelude::*;

mod errors;
mod journal;
mod locks;
mod run;

#[pymodule]
fn _keel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", keel::VERSION)?;
    errors::register(m)?;
    locks::register(m)?;
    journal::register(m)?;
    m.add_function(wrap_pyfunction!(run::_debug_panic, m)?)?;
    Ok(())
}

//! The Python module `keel._keel`. Thin: convert arguments, call the core
//! with the GIL released, convert results and errors.

use pyo3::prelude::*;

mod convert;
mod drive;
mod errors;
mod held;
mod inspect;
mod journal;
mod json;
mod locks;
mod logging;
mod ops;
mod pool;
mod run;
mod stats;
mod times;

#[pymodule]
fn _keel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", keel::VERSION)?;
    run::note_main_thread(m.py())?;
    errors::register(m)?;
    locks::register(m)?;
    pool::register(m)?;
    drive::register(m)?;
    journal::register(m)?;
    ops::register(m)?;
    m.add_function(wrap_pyfunction!(run::_debug_panic, m)?)?;
    let exit_hook = wrap_pyfunction!(run::_wait_for_keel_threads, m)?;
    m.add_function(exit_hook.clone())?;
    m.py().import("atexit")?.call_method1("register", (exit_hook,))?;
    m.add_function(wrap_pyfunction!(logging::flush_logs, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_refresh_log_levels, m)?)?;
    m.add_function(wrap_pyfunction!(stats::stats, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_file, m)?)?;
    logging::install(m.py())?;
    Ok(())
}

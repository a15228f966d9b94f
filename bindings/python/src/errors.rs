//! `keel.KeelError` and one subclass per error kind, each also deriving from
//! the matching builtin so host code's `except LookupError` keeps working.
//! The classes are made once, here, and every error is mapped by [`to_pyerr`].

use keel::{Error, ErrorKind};
use pyo3::exceptions::{
    PyException, PyLookupError, PyOSError, PyPermissionError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

struct ErrorClasses {
    base: Py<PyType>,
    by_kind: Vec<(ErrorKind, Py<PyType>)>,
}

static CLASSES: PyOnceLock<ErrorClasses> = PyOnceLock::new();

/// The builtin each kind also derives from, where one fits.
fn builtin_base(py: Python<'_>, kind: ErrorKind) -> Option<Bound<'_, PyType>> {
    match kind {
        ErrorKind::InvalidArgument => Some(py.get_type::<PyValueError>()),
        ErrorKind::NotFound => Some(py.get_type::<PyLookupError>()),
        ErrorKind::Timeout => Some(py.get_type::<PyTimeoutError>()),
        ErrorKind::PermissionDenied => Some(py.get_type::<PyPermissionError>()),
        ErrorKind::Io | ErrorKind::StorageFull => Some(py.get_type::<PyOSError>()),
        ErrorKind::WouldDeadlock => Some(py.get_type::<PyRuntimeError>()),
        _ => None,
    }
}

fn make_class<'py>(py: Python<'py>, name: &str, bases: Bound<'py, PyTuple>, doc: &str) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "keel")?;
    namespace.set_item("__doc__", doc)?;
    let class = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

fn make_classes(py: Python<'_>) -> PyResult<ErrorClasses> {
    let base = make_class(
        py,
        "KeelError",
        PyTuple::new(py, [py.get_type::<PyException>()])?,
        "The base of every keel error. `.code` is the stable number of its kind.",
    )?;
    let mut by_kind = Vec::new();
    for kind in ErrorKind::ALL {
        let mut bases = vec![base.bind(py).clone()];
        bases.extend(builtin_base(py, kind));
        let doc = format!("keel error kind {} (code {}).", kind.name(), kind.code());
        let class = make_class(py, kind.name(), PyTuple::new(py, bases)?, &doc)?;
        class.bind(py).setattr("code", kind.code())?;
        by_kind.push((kind, class));
    }
    base.bind(py).setattr("code", 0)?;
    Ok(ErrorClasses { base, by_kind })
}

fn classes(py: Python<'_>) -> PyResult<&ErrorClasses> {
    CLASSES.get_or_try_init(py, || make_classes(py))
}

/// Adds the classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = classes(py)?;
    m.add("KeelError", classes.base.bind(py))?;
    for (kind, class) in &classes.by_kind {
        m.add(kind.name(), class.bind(py))?;
    }
    Ok(())
}

/// The Python exception for a keel error.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let classes = classes(py)?;
        let class = classes
            .by_kind
            .iter()
            .find(|(kind, _)| *kind == err.kind())
            .map_or(&classes.base, |(_, class)| class);
        let value = class.bind(py).call1((err.message(),))?;
        Ok(PyErr::from_value(value))
    };
    make().unwrap_or_else(|failure| failure)
}

//! `keel.KeelError` and one subclass per error kind, each also deriving from
//! the matching builtin so host code's `except LookupError` keeps working.
//! The classes are made once, here, and every error is mapped by [`to_pyerr`].

use keel::{Error, ErrorKind};
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyLookupError, PyOSError, PyPermissionError, PyRuntimeError, PyTimeoutError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

struct ErrorClasses {
    base: Py<PyType>,
    by_kind: Vec<(ErrorKind, Py<PyType>)>,
    /// `keel.FileNotFound`: a `NotFound` that is also a `FileNotFoundError`
    /// (a missing file or folder), so `except FileNotFoundError` works.
    file_not_found: Py<PyType>,
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
    let not_found = by_kind
        .iter()
        .find(|(kind, _)| *kind == ErrorKind::NotFound)
        .map(|(_, class)| class.bind(py).clone())
        .expect("every kind has a class");
    let file_not_found = make_class(
        py,
        "FileNotFound",
        PyTuple::new(py, [not_found, py.get_type::<PyFileNotFoundError>()])?,
        "A missing file or folder: a keel.NotFound that is also a FileNotFoundError, with errno and filename.",
    )?;
    Ok(ErrorClasses {
        base,
        by_kind,
        file_not_found,
    })
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
    m.add("FileNotFound", classes.file_not_found.bind(py))?;
    Ok(())
}

/// The OS error under a keel error, if an I/O call failed.
fn os_error(err: &Error) -> Option<&std::io::Error> {
    err.cause()?.downcast_ref::<std::io::Error>()
}

/// The Python exception for a keel error.
pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let classes = classes(py)?;
        let os = os_error(&err);
        let class = match (err.kind(), os) {
            (ErrorKind::NotFound, Some(_)) => &classes.file_not_found,
            _ => classes
                .by_kind
                .iter()
                .find(|(kind, _)| *kind == err.kind())
                .map_or(&classes.base, |(_, class)| class),
        };
        let message = err.report().to_string();
        let value = class.bind(py).call1((message.as_str(),))?;
        // An OSError subclass gets the OS error's number, as open() gives;
        // its text stays keel's report (the message, then the OS error).
        if let Some(code) = os.and_then(std::io::Error::raw_os_error) {
            if value.is_instance_of::<PyOSError>() {
                value.setattr("errno", code)?;
                value.setattr("strerror", message.as_str())?;
            }
        }
        Ok(PyErr::from_value(value))
    };
    make().unwrap_or_else(|failure| failure)
}

/// `err` with `filename` set to `path` if it is an OSError without one
/// (opening a missing file raises what `open()` would).
pub fn with_filename(py: Python<'_>, err: PyErr, path: &std::path::Path) -> PyErr {
    let value = err.value(py);
    if value.is_instance_of::<PyOSError>() && value.getattr("filename").is_ok_and(|name| name.is_none()) {
        let _ = value.setattr("filename", path);
    }
    err
}

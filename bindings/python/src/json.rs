//! JSON values between Python and the core: dicts, lists, str, int, float,
//! bool and None, converted directly (no text round trip).

use keel::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// A Python object as a JSON value; anything JSON cannot hold (a set, a
/// non-str key, NaN, an int past 64 bits) is InvalidArgument.
pub fn from_py(value: &Bound<'_, PyAny>) -> keel::Result<Value> {
    from_py_at(value, 0)
}

fn from_py_at(value: &Bound<'_, PyAny>, depth: usize) -> keel::Result<Value> {
    if depth > 256 {
        return Err(Error::invalid_argument("JSON value nested more than 256 deep"));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(Value::Bool(flag.is_true()));
    }
    if let Ok(int) = value.cast::<PyInt>() {
        if let Ok(n) = int.extract::<i64>() {
            return Ok(Value::from(n));
        }
        if let Ok(n) = int.extract::<u64>() {
            return Ok(Value::from(n));
        }
        return Err(Error::invalid_argument("an int in JSON data must fit in 64 bits"));
    }
    if let Ok(float) = value.cast::<PyFloat>() {
        return Number::from_f64(float.value())
            .map(Value::Number)
            .ok_or_else(|| Error::invalid_argument("NaN and infinity cannot be stored as JSON"));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return text
            .to_cow()
            .map(|text| Value::String(text.into_owned()))
            .map_err(|_| Error::invalid_argument("a str in JSON data is not valid UTF-8"));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (key, item) in dict.iter() {
            let key = key
                .cast::<PyString>()
                .map_err(|_| Error::invalid_argument("JSON object keys must be str"))?
                .to_cow()
                .map_err(|_| Error::invalid_argument("a dict key is not valid UTF-8"))?
                .into_owned();
            map.insert(key, from_py_at(&item, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = value.cast::<PyList>() {
        return list.iter().map(|item| from_py_at(&item, depth + 1)).collect();
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return tuple.iter().map(|item| from_py_at(&item, depth + 1)).collect();
    }
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(Error::invalid_argument(format!(
        "a value of type {type_name} cannot be stored as JSON"
    )))
}

/// A JSON value as Python objects.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A core value that serializes (a stats struct, a journal's status, a
/// recovery report) as the Python value of its JSON: the one way the
/// binding turns core structs into dicts, so their keys are the core's.
pub fn to_py_serialized<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|err| pyo3::exceptions::PyRuntimeError::new_err(format!("did not serialize: {err}")))?;
    to_py(py, &value)
}

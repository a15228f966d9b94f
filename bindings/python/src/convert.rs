//! Argument conversions every Python class shares: seconds as durations and
//! waits, JSON values to and from text.

use std::time::Duration;

use keel::Error;
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// `seconds` (a float >= 0) as a duration; `what` names it in the error.
pub fn duration(seconds: f64, what: &str) -> keel::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Error::invalid_argument(format!("{what} {seconds} is not a number of seconds >= 0")))
}

/// An optional number of seconds (None: no limit) as a duration.
pub fn optional_duration(seconds: Option<f64>, what: &str) -> keel::Result<Option<Duration>> {
    seconds.map(|seconds| duration(seconds, what)).transpose()
}

/// A Python value as JSON text (InvalidArgument for what JSON cannot hold).
pub fn json_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    crate::json::from_py(value)
        .map(|json| json.to_string())
        .map_err(|err| to_pyerr(value.py(), err))
}

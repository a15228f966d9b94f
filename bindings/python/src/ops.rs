//! `keel.Operations`, `keel.Queue` and `keel.Worker`. Records come back as
//! dicts (from the core's JSON forms); payloads and results are any
//! JSON-serialisable Python value.

use std::path::PathBuf;
use std::sync::Arc;

use keel::location::Location;
use keel::ops::{
    json::counts_to_json, EnqueueOptions, HandlerError, HandlerResult, JobContext, JobPolicy, JobState, NextOrder,
    OpPolicy, OpState, Operations, Queue, Worker, WorkerMonitor, WorkerOptions,
};
use keel::Error;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert;
use crate::held::Held;
use crate::json::to_py;
use crate::run::{attached, blocking, quick, Interrupt};
use crate::times::{in_seconds, seconds};

/// A record's JSON form as Python gets it (times in seconds).
fn record_py<'py>(py: Python<'py>, record: serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &in_seconds(record))
}

/// A list of records' JSON forms as Python gets them.
fn records_py<'py>(py: Python<'py>, records: impl Iterator<Item = serde_json::Value>) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &records.map(in_seconds).collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyOperations>()?;
    m.add_class::<PyQueue>()?;
    m.add_class::<PyWorker>()?;
    m.add_class::<PyJobContext>()?;
    Ok(())
}

/// An integer argument for an unsigned parameter: a negative or too large
/// value is keel.InvalidArgument (not a bare OverflowError), naming `what`.
fn unsigned<T: TryFrom<i128>>(value: i128, what: &str) -> keel::Result<T> {
    T::try_from(value).map_err(|_| Error::invalid_argument(format!("{what} {value}: out of range")))
}

/// Per-item operation states in an LMDB file: a record per (item,
/// operation) in READY, WORKING, OK or FAILED. ``claim`` hands each item to
/// exactly one claimer (threads and processes) with a token; an update with a
/// stale token raises keel.Conflict. Every call is durable when it returns.
#[pyclass(name = "Operations", module = "keel", frozen)]
pub struct PyOperations {
    inner: Held<Operations>,
    path: PathBuf,
}

#[pymethods]
impl PyOperations {
    /// ``max_lapses``: how many lapsed claims in a row (a lease that ended
    /// without an update) a record survives; the next one makes it FAILED.
    #[new]
    #[pyo3(signature = (path, *, max_lapses=5))]
    fn new(py: Python<'_>, path: PathBuf, max_lapses: i128) -> PyResult<Self> {
        let policy = OpPolicy {
            max_lapses: quick(py, || unsigned(max_lapses, "max_lapses"))?,
        };
        // A `postgresql://` URL opens that database; other schemes are refused.
        let location = Location::from_path(&path);
        let path = shown(&path);
        let inner = blocking(py, || Operations::open_at(&location?))
            .map_err(|err| crate::errors::with_filename(py, err, &path))?
            .with_policy(policy);
        let inner = Held::new(inner, format!("the Operations {path:?}"));
        Ok(PyOperations { inner, path })
    }

    fn __repr__(&self) -> String {
        format!("<keel.Operations {:?}{}>", self.path, self.inner.closed_note())
    }

    /// Releases the store (the file, or the database connections): every
    /// later call raises keel.Closed. Closing twice is harmless.
    fn close(&self, py: Python<'_>) {
        self.inner.close(py)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the store.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py)
    }

    /// Up to ``limit`` records of ``op`` in ``state`` ("READY", "WORKING",
    /// "OK", "FAILED"; any if None), by item key — for operators finding
    /// the FAILED ones. A WORKING record whose lease ended has ``"expired":
    /// True``. Changes nothing; reads every record (an operator's call).
    #[pyo3(signature = (op, *, state=None, limit=100))]
    fn list<'py>(&self, py: Python<'py>, op: &str, state: Option<&str>, limit: i128) -> PyResult<Bound<'py, PyAny>> {
        let (state, limit) = quick(py, || {
            let state = state.map(str::parse::<OpState>).transpose()?;
            Ok((state, unsigned(limit, "limit")?))
        })?;
        let records = blocking(py, || self.inner.get()?.list(op, state, limit))?;
        records_py(py, records.iter().map(|r| r.to_json()))
    }

    /// Makes each of ``ops`` READY for ``item``; returns their records.
    fn ready<'py>(&self, py: Python<'py>, item: &str, ops: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let records = blocking(py, || {
            let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
            self.inner.get()?.ready(item, &ops)
        })?;
        records_py(py, records.iter().map(|r| r.to_json()))
    }

    /// Up to ``limit`` records of ``op`` a claim could take (READY, and
    /// WORKING under an expired lease, flagged ``"expired": True``), in
    /// ``order``: ``"oldest"`` (the default, the order ``claim`` takes them)
    /// or ``"item"`` (by item key). Claims nothing.
    #[pyo3(signature = (op, limit=100, *, order="oldest"))]
    fn next<'py>(&self, py: Python<'py>, op: &str, limit: i128, order: &str) -> PyResult<Bound<'py, PyAny>> {
        let (limit, order) = quick(py, || Ok((unsigned(limit, "limit")?, next_order(order)?)))?;
        let records = blocking(py, || self.inner.get()?.next_in(op, limit, order))?;
        records_py(py, records.iter().map(|r| r.to_json()))
    }

    /// The reset pass: WORKING records whose lease ended become READY again
    /// (FAILED past ``max_lapses``); ``{"ready", "failed"}``.
    fn reset_expired<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = blocking(py, || self.inner.get()?.reset_expired())?;
        let dict = PyDict::new(py);
        dict.set_item("ready", report.ready)?;
        dict.set_item("failed", report.failed)?;
        Ok(dict)
    }

    /// Claims up to ``limit`` READY (or lease-expired) items of ``op`` for
    /// ``worker`` for ``lease`` seconds. Returns ``[{"item", "op", "token",
    /// "lease_until", "attempt"}]``.
    #[pyo3(signature = (op, limit=1, *, worker, lease=30.0))]
    fn claim<'py>(
        &self,
        py: Python<'py>,
        op: &str,
        limit: i128,
        worker: &str,
        lease: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = quick(py, || unsigned(limit, "limit"))?;
        let claims = blocking(py, || {
            self.inner
                .get()?
                .claim(op, limit, worker, convert::duration(lease, "lease")?)
        })?;
        records_py(py, claims.iter().map(|c| c.to_json()))
    }

    /// Sets ``op`` of ``item`` to ``state`` ("READY", "OK", "FAILED") with
    /// ``message`` and makes each of ``enable`` READY, all or nothing. Pass
    /// the claim's ``token`` when holding one.
    #[pyo3(signature = (item, op, state, message="", *, enable=Vec::new(), token=None))]
    #[allow(clippy::too_many_arguments)]
    fn update<'py>(
        &self,
        py: Python<'py>,
        item: &str,
        op: &str,
        state: &str,
        message: &str,
        enable: Vec<String>,
        token: Option<i128>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = quick(py, || token.map(|t| unsigned(t, "token")).transpose())?;
        let record = blocking(py, || {
            let state: OpState = state.parse()?;
            let enable: Vec<&str> = enable.iter().map(String::as_str).collect();
            self.inner.get()?.update(item, op, token, state, message, &enable)
        })?;
        record_py(py, record.to_json())
    }

    /// Marks ``op`` of ``item`` FAILED with ``message`` (fenced like ``update``).
    #[pyo3(signature = (item, op, message, *, token=None))]
    fn error<'py>(
        &self,
        py: Python<'py>,
        item: &str,
        op: &str,
        message: &str,
        token: Option<i128>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = quick(py, || token.map(|t| unsigned(t, "token")).transpose())?;
        let record = blocking(py, || self.inner.get()?.error(item, op, token, message))?;
        record_py(py, record.to_json())
    }

    /// Every operation record of ``item``.
    fn states<'py>(&self, py: Python<'py>, item: &str) -> PyResult<Bound<'py, PyAny>> {
        let records = blocking(py, || self.inner.get()?.states(item))?;
        records_py(py, records.iter().map(|r| r.to_json()))
    }
}

/// A durable job queue in an LMDB file: priorities (0 first, 9 last),
/// run-at times, unique keys, leases with attempt tokens (a stale token
/// raises keel.Conflict), retries with exponential backoff and jitter, a
/// resetter for expired leases, retention cleanup, cheap counts.
#[pyclass(name = "Queue", module = "keel", frozen)]
pub struct PyQueue {
    inner: Held<Queue>,
    path: PathBuf,
}

#[pymethods]
impl PyQueue {
    /// ``max_resets``: how many lease expiries a job survives; the next one
    /// makes it dead ("its processor kept dying").
    #[new]
    #[pyo3(signature = (path, *, max_resets=5))]
    fn new(py: Python<'_>, path: PathBuf, max_resets: i128) -> PyResult<Self> {
        let policy = JobPolicy {
            max_resets: quick(py, || unsigned(max_resets, "max_resets"))?,
            ..JobPolicy::default()
        };
        // A `postgresql://` URL opens that database; other schemes are refused.
        let location = Location::from_path(&path);
        let path = shown(&path);
        let inner = blocking(py, || Queue::open_at(&location?, policy))
            .map_err(|err| crate::errors::with_filename(py, err, &path))?;
        let inner = Held::new(inner, format!("the Queue {path:?}"));
        Ok(PyQueue { inner, path })
    }

    fn __repr__(&self) -> String {
        format!("<keel.Queue {:?}{}>", self.path, self.inner.closed_note())
    }

    /// Releases the queue (the file, or the database connections): every
    /// later call raises keel.Closed, and so does starting a Worker on it.
    /// A Worker already running keeps its own hold until it stops. Closing
    /// twice is harmless.
    fn close(&self, py: Python<'_>) {
        self.inner.close(py)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the queue.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py)
    }

    /// Enqueues a job of ``kind`` with a JSON-serialisable ``payload``.
    /// ``run_at`` is a Unix time in seconds; ``delay`` seconds from now. A
    /// live job with the same ``unique_key`` is returned instead; the
    /// returned dict's ``created`` says which.
    #[pyo3(signature = (kind, payload=None, *, priority=5, run_at=None, delay=None, max_attempts=20, unique_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        payload: Option<Bound<'py, PyAny>>,
        priority: i128,
        run_at: Option<f64>,
        delay: Option<f64>,
        max_attempts: i128,
        unique_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = payload_text(payload)?;
        let options = quick(py, || {
            enqueue_options(priority, run_at, delay, max_attempts, unique_key)
        })?;
        let enqueued = blocking(py, || self.inner.get()?.enqueue(kind, &payload, &options))?;
        let mut record = in_seconds(enqueued.job.to_json());
        record["created"] = serde_json::Value::Bool(enqueued.created);
        to_py(py, &record)
    }

    /// Enqueues many jobs in one transaction (one commit, all or nothing),
    /// in order. Each job is a ``(kind, payload)`` pair or a dict with
    /// ``"kind"``, optional ``"payload"`` and any of ``enqueue``'s keyword
    /// options. Returns their records, each with ``created``.
    fn enqueue_many<'py>(&self, py: Python<'py>, jobs: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut batch = Vec::new();
        for job in jobs.try_iter()? {
            batch.push(job_spec(&job?)?);
        }
        let enqueued = blocking(py, || self.inner.get()?.enqueue_many(&batch))?;
        enqueued
            .iter()
            .map(|entry| {
                let mut record = in_seconds(entry.job.to_json());
                record["created"] = serde_json::Value::Bool(entry.created);
                to_py(py, &record)
            })
            .collect()
    }

    /// Claims the best ready job of ``kinds`` for ``worker`` for ``lease``
    /// seconds; None when none is ready. Finish it with its ``id`` and ``token``.
    #[pyo3(signature = (kinds, *, worker, lease=30.0))]
    fn dequeue<'py>(
        &self,
        py: Python<'py>,
        kinds: Vec<String>,
        worker: &str,
        lease: f64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let job = blocking(py, || {
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            self.inner
                .get()?
                .dequeue(&kinds, worker, convert::duration(lease, "lease")?)
        })?;
        job.map(|job| record_py(py, job.to_json())).transpose()
    }

    /// Extends the attempt's lease to ``lease`` seconds from now; returns
    /// when it now ends (a Unix time in seconds).
    #[pyo3(signature = (id, token, *, lease=30.0))]
    fn heartbeat(&self, py: Python<'_>, id: i128, token: i128, lease: f64) -> PyResult<f64> {
        let (id, token) = ids(py, id, token)?;
        let until = blocking(py, || {
            self.inner
                .get()?
                .heartbeat(id, token, convert::duration(lease, "lease")?)
        })?;
        Ok(seconds(until))
    }

    /// Completes the attempt with a JSON-serialisable ``result``.
    #[pyo3(signature = (id, token, result=None))]
    fn complete<'py>(
        &self,
        py: Python<'py>,
        id: i128,
        token: i128,
        result: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (id, token) = ids(py, id, token)?;
        let result = result
            .map(|value| convert::json_text(&value))
            .transpose()?
            .unwrap_or_default();
        let job = blocking(py, || self.inner.get()?.complete(id, token, &result))?;
        record_py(py, job.to_json())
    }

    /// Fails the attempt: retried after a backoff when ``retryable`` and
    /// attempts remain; dead otherwise.
    #[pyo3(signature = (id, token, error, *, retryable=true))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        id: i128,
        token: i128,
        error: &str,
        retryable: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (id, token) = ids(py, id, token)?;
        let job = blocking(py, || self.inner.get()?.fail(id, token, error, retryable))?;
        record_py(py, job.to_json())
    }

    /// Hands the attempt back unfinished (no failure counted).
    fn release<'py>(&self, py: Python<'py>, id: i128, token: i128) -> PyResult<Bound<'py, PyAny>> {
        let (id, token) = ids(py, id, token)?;
        let job = blocking(py, || self.inner.get()?.release(id, token))?;
        record_py(py, job.to_json())
    }

    /// Cancels a job that has not finished.
    #[pyo3(signature = (id, reason=""))]
    fn cancel<'py>(&self, py: Python<'py>, id: i128, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = quick(py, || unsigned(id, "id"))?;
        let job = blocking(py, || self.inner.get()?.cancel(id, reason))?;
        record_py(py, job.to_json())
    }

    /// Queues a dead or cancelled job again with fresh attempts
    /// (keel.Conflict for any other state).
    fn retry<'py>(&self, py: Python<'py>, id: i128) -> PyResult<Bound<'py, PyAny>> {
        let id = quick(py, || unsigned(id, "id"))?;
        let job = blocking(py, || self.inner.get()?.retry(id))?;
        record_py(py, job.to_json())
    }

    /// Jobs of ``kind`` (in ``state``, if given: "queued", "running",
    /// "retrying", "completed", "dead", "cancelled"), oldest first.
    #[pyo3(signature = (kind, *, state=None, limit=100))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        state: Option<&str>,
        limit: i128,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let limit = quick(py, || unsigned(limit, "limit"))?;
        let state = match state {
            Some(name) => Some(quick(py, || name.parse::<JobState>())?),
            None => None,
        };
        let jobs = blocking(py, || self.inner.get()?.list(kind, state, limit))?;
        jobs.iter().map(|job| record_py(py, job.to_json())).collect()
    }

    /// The job with ``id`` (keel.NotFound if none).
    fn get<'py>(&self, py: Python<'py>, id: i128) -> PyResult<Bound<'py, PyAny>> {
        let id = quick(py, || unsigned(id, "id"))?;
        let job = blocking(py, || self.inner.get()?.get(id))?;
        record_py(py, job.to_json())
    }

    /// ``{kind: {state: count}}``, read from counters (cheap).
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let counts = blocking(py, || self.inner.get()?.counts())?;
        to_py(py, &counts_to_json(&counts))
    }

    /// Requeues jobs whose lease expired; ``{"requeued", "dead"}``.
    fn reset_expired<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = blocking(py, || self.inner.get()?.reset_expired())?;
        let dict = PyDict::new(py);
        dict.set_item("requeued", report.requeued)?;
        dict.set_item("dead", report.dead)?;
        Ok(dict)
    }

    /// Deletes finished jobs older than ``retention`` seconds; returns how many.
    fn cleanup(&self, py: Python<'_>, retention: f64) -> PyResult<u64> {
        blocking(py, || {
            self.inner.get()?.cleanup(convert::duration(retention, "retention")?)
        })
    }
}

/// Runs Python callables as job handlers on keel's threads.
///
/// ``handlers`` maps a kind to a callable, or to ``(callable,
/// concurrency)``. A handler taking one argument gets the job as a dict; one
/// taking two gets the dict and a ``keel.JobContext`` (``should_stop()``,
/// ``lease_lost()``: true once the job was cancelled, reset or deleted, or
/// the worker is stopping). It returns a JSON-serialisable result (or None).
/// An exception fails the attempt (retried unless it has ``retryable =
/// False``); it never stops the worker. An unknown kind in ``allow``/``block``
/// raises keel.InvalidArgument. A handler running past ``job_timeout``
/// seconds fails its attempt; its thread is abandoned, never killed.
#[pyclass(name = "Worker", module = "keel", frozen)]
pub struct PyWorker {
    /// Locked only with the GIL released (`stop` holds it for its deadline).
    inner: Mutex<Worker>,
    /// Reads the counters without the lock, so `stats()` never waits on a
    /// `stop()` running in another thread.
    monitor: WorkerMonitor,
    kinds: Vec<String>,
}

/// The running attempt, as a handler taking two arguments sees it.
#[pyclass(name = "JobContext", module = "keel", frozen)]
pub struct PyJobContext {
    inner: JobContext,
}

#[pymethods]
impl PyJobContext {
    /// The job's id.
    #[getter]
    fn id(&self) -> u64 {
        self.inner.job().id
    }

    /// The attempt's token.
    #[getter]
    fn token(&self) -> u64 {
        self.inner.job().token
    }

    /// Which attempt this is (1 for the first).
    #[getter]
    fn attempt(&self) -> u32 {
        self.inner.job().attempts
    }

    /// Whether this attempt's lease was lost: the job was cancelled, reset
    /// or deleted (its result will not be stored), or a stop released it.
    fn lease_lost(&self) -> bool {
        self.inner.lease_lost()
    }

    /// Whether the handler should wrap up: the worker is stopping or the
    /// lease was lost.
    fn should_stop(&self) -> bool {
        self.inner.should_stop()
    }

    fn __repr__(&self) -> String {
        let job = self.inner.job();
        format!(
            "<keel.JobContext id={} kind={:?} attempt={}>",
            job.id, job.kind, job.attempts
        )
    }
}

/// A Python handler, called with the GIL taken per call.
fn python_handler(
    callable: Py<PyAny>,
    with_context: bool,
) -> impl Fn(&JobContext) -> HandlerResult + Send + Sync + 'static {
    move |ctx: &JobContext| {
        // The interpreter may be shutting down; then the job is retried later.
        attached(|py| call_handler(py, &callable, with_context, ctx))
            .unwrap_or_else(|| Err(HandlerError::retry("the Python interpreter is not available")))
    }
}

fn call_handler(py: Python<'_>, callable: &Py<PyAny>, with_context: bool, ctx: &JobContext) -> HandlerResult {
    let failure = |err: PyErr| {
        let retryable = err
            .value(py)
            .getattr("retryable")
            .and_then(|value| value.is_truthy())
            .unwrap_or(true);
        HandlerError {
            message: failure_message(py, &err),
            retryable,
        }
    };
    let job = record_py(py, ctx.job().to_json()).map_err(failure)?;
    let result = if with_context {
        let context = Bound::new(py, PyJobContext { inner: ctx.clone() }).map_err(failure)?;
        callable.bind(py).call1((job, context))
    } else {
        callable.bind(py).call1((job,))
    }
    .map_err(failure)?;
    if result.is_none() {
        return Ok(String::new());
    }
    convert::json_text(&result).map_err(failure)
}

/// A failed handler's `last_error`: the exception's line, then (unless it
/// is a deliberate `keel.JobError`) its traceback, so the operator sees
/// where it failed without the worker's log.
fn failure_message(py: Python<'_>, err: &PyErr) -> String {
    let line = err.to_string();
    if err.value(py).get_type().name().is_ok_and(|name| name == "JobError") {
        return line;
    }
    let formatted = py.import("traceback").and_then(|traceback| {
        let lines = traceback.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
        "".into_pyobject(py)?
            .call_method1("join", (lines,))?
            .extract::<String>()
    });
    match formatted {
        Ok(traceback) => format!("{line}\n{}", traceback.trim_end()),
        Err(_) => line,
    }
}

/// Whether `callable` takes a second positional argument (the context).
/// One without an inspectable signature (some builtins) gets the job only.
fn takes_context(py: Python<'_>, callable: &Bound<'_, PyAny>) -> PyResult<bool> {
    let inspect = py.import("inspect")?;
    let Ok(signature) = inspect.call_method1("signature", (callable,)) else {
        return Ok(false);
    };
    let parameter = inspect.getattr("Parameter")?;
    let positional = [
        parameter.getattr("POSITIONAL_ONLY")?,
        parameter.getattr("POSITIONAL_OR_KEYWORD")?,
    ];
    let var_positional = parameter.getattr("VAR_POSITIONAL")?;
    let mut count = 0;
    for param in signature.getattr("parameters")?.call_method0("values")?.try_iter()? {
        let kind = param?.getattr("kind")?;
        if kind.eq(&var_positional)? {
            return Ok(true);
        }
        if kind.eq(&positional[0])? || kind.eq(&positional[1])? {
            count += 1;
        }
    }
    Ok(count >= 2)
}

#[pymethods]
impl PyWorker {
    #[new]
    #[pyo3(signature = (queue, handlers, *, allow=None, block=Vec::new(), name=None, lease=30.0, heartbeat=None, poll=1.0, retention=None, job_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        queue: &PyQueue,
        handlers: &Bound<'_, PyDict>,
        allow: Option<Vec<String>>,
        block: Vec<String>,
        name: Option<String>,
        lease: f64,
        heartbeat: Option<f64>,
        poll: f64,
        retention: Option<f64>,
        job_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let mut options = WorkerOptions::default();
        quick(py, || {
            if let Some(name) = name {
                options.name = name;
            }
            options.lease = convert::duration(lease, "lease")?;
            options.heartbeat_interval = convert::optional_duration(heartbeat, "heartbeat")?;
            options.poll_interval = convert::duration(poll, "poll")?;
            options.retention = convert::optional_duration(retention, "retention")?;
            options.job_timeout = convert::optional_duration(job_timeout, "job_timeout")?;
            Ok(())
        })?;
        let queue = quick(py, || queue.inner.get())?;
        let mut builder = Worker::builder(&queue).options(options).block(block);
        if let Some(allow) = allow {
            builder = builder.allow(allow);
        }
        for (kind, spec) in handlers.iter() {
            let kind: String = kind.extract()?;
            let (callable, concurrency) = match spec.cast::<PyTuple>() {
                Ok(pair) => (pair.get_item(0)?, pair.get_item(1)?.extract::<i128>()?),
                Err(_) => (spec, 1),
            };
            let concurrency = quick(py, || unsigned(concurrency, &format!("concurrency of {kind:?}")))?;
            if !callable.is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "the handler for {kind:?} is not callable"
                )));
            }
            let with_context = takes_context(py, &callable)?;
            let handler = python_handler(callable.unbind(), with_context);
            builder = builder.shared_handler(&kind, concurrency, Arc::new(handler));
        }
        let worker = blocking(py, || builder.start())?;
        let kinds = worker.kinds().to_vec();
        Ok(PyWorker {
            monitor: worker.monitor(),
            inner: Mutex::new(worker),
            kinds,
        })
    }

    /// The kinds this worker runs.
    #[getter]
    fn kinds(&self) -> Vec<String> {
        self.kinds.clone()
    }

    /// How many jobs are running right now.
    #[getter]
    fn running(&self, py: Python<'_>) -> usize {
        py.detach(|| self.monitor.running())
    }

    /// Stops gracefully: no new jobs; running handlers get ``deadline``
    /// seconds; jobs still running then are released to the queue. Returns
    /// ``{"released", "detached"}``. Idempotent.
    #[pyo3(signature = (deadline=30.0))]
    fn stop<'py>(&self, py: Python<'py>, deadline: f64) -> PyResult<Bound<'py, PyDict>> {
        let deadline = quick(py, || convert::duration(deadline, "deadline"))?;
        // Ctrl-C during the wait releases the running jobs at once (as if
        // the deadline had passed) and raises KeyboardInterrupt.
        let mut interrupt = Interrupt::default();
        let stopped = blocking(py, || Ok(self.inner.lock().stop_unless(deadline, || interrupt.check())));
        let report = interrupt.or_raised(stopped)?;
        let dict = PyDict::new(py);
        dict.set_item("released", report.released)?;
        dict.set_item("detached", report.detached)?;
        Ok(dict)
    }

    /// ``{"completed", "failed", "panicked", "refused", "released",
    /// "timed_out", "lost", "running"}``; never waits, even while ``stop()`` runs.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // The running count takes a short internal lock: not with the GIL.
        let stats = py.detach(|| self.monitor.stats());
        crate::json::to_py_serialized(py, &stats)
    }

    fn __repr__(&self) -> String {
        let running = self.inner.try_lock().map(|worker| worker.running());
        match running {
            Some(running) => format!("<keel.Worker kinds={:?} running={running}>", self.kinds),
            None => format!("<keel.Worker kinds={:?} stopping>", self.kinds),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.stop(py, 30.0)?;
        Ok(())
    }
}

fn payload_text(payload: Option<Bound<'_, PyAny>>) -> PyResult<String> {
    match payload {
        Some(value) => convert::json_text(&value),
        None => Ok("null".to_owned()),
    }
}

/// The core's enqueue options from Python's (seconds, ints checked).
fn enqueue_options(
    priority: i128,
    run_at: Option<f64>,
    delay: Option<f64>,
    max_attempts: i128,
    unique_key: Option<String>,
) -> keel::Result<EnqueueOptions> {
    let run_at = match run_at {
        Some(at) if at >= 0.0 && at.is_finite() => Some((at * 1000.0) as u64),
        Some(at) => return Err(Error::invalid_argument(format!("run_at {at} is before 1970"))),
        None => None,
    };
    Ok(EnqueueOptions {
        priority: unsigned(priority, "priority")?,
        run_at,
        delay: convert::optional_duration(delay, "delay")?,
        max_attempts: unsigned(max_attempts, "max_attempts")?,
        unique_key,
    })
}

/// One job of `enqueue_many`: `(kind, payload)` or a dict of enqueue's
/// arguments.
fn job_spec(job: &Bound<'_, PyAny>) -> PyResult<(String, String, EnqueueOptions)> {
    let py = job.py();
    if let Ok(spec) = job.cast::<PyDict>() {
        let get = |key: &str| spec.get_item(key);
        let kind: String = get("kind")?
            .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("a job dict needs a \"kind\""))?
            .extract()?;
        let known = [
            "kind",
            "payload",
            "priority",
            "run_at",
            "delay",
            "max_attempts",
            "unique_key",
        ];
        for key in spec.keys() {
            let key: String = key.extract()?;
            if !known.contains(&key.as_str()) {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "unknown job key {key:?}"
                )));
            }
        }
        let number =
            |key: &str, default: i128| -> PyResult<i128> { get(key)?.map_or(Ok(default), |value| value.extract()) };
        let seconds = |key: &str| -> PyResult<Option<f64>> {
            get(key)?
                .filter(|value| !value.is_none())
                .map(|value| value.extract())
                .transpose()
        };
        let unique_key: Option<String> = get("unique_key")?
            .filter(|v| !v.is_none())
            .map(|v| v.extract())
            .transpose()?;
        let payload = payload_text(get("payload")?)?;
        let (priority, max_attempts) = (number("priority", 5)?, number("max_attempts", 20)?);
        let (run_at, delay) = (seconds("run_at")?, seconds("delay")?);
        let options = quick(py, || {
            enqueue_options(priority, run_at, delay, max_attempts, unique_key)
        })?;
        return Ok((kind, payload, options));
    }
    let (kind, payload): (String, Option<Bound<'_, PyAny>>) = job.extract()?;
    let options = quick(py, || enqueue_options(5, None, None, 20, None))?;
    Ok((kind, payload_text(payload)?, options))
}

fn ids(py: Python<'_>, id: i128, token: i128) -> PyResult<(u64, u64)> {
    quick(py, || Ok((unsigned(id, "id")?, unsigned(token, "token")?)))
}

fn next_order(order: &str) -> keel::Result<NextOrder> {
    match order {
        "oldest" => Ok(NextOrder::Oldest),
        "item" => Ok(NextOrder::Item),
        other => Err(Error::invalid_argument(format!(
            "order {other:?}: must be \"oldest\" or \"item\""
        ))),
    }
}

/// `path` as shown in reprs and errors: a URL without its password.
fn shown(path: &std::path::Path) -> PathBuf {
    match path.to_str() {
        Some(text) if text.contains("://") => PathBuf::from(keel::postgres::redact(text)),
        _ => path.to_owned(),
    }
}

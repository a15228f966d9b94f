//! `keel.Operations`, `keel.Queue` and `keel.Worker`. Records come back as
//! dicts (from the core's JSON forms); payloads and results are any
//! JSON-serialisable Python value.

use std::path::PathBuf;
use std::sync::Arc;

use keel::ops::{
    json::counts_to_json, EnqueueOptions, HandlerError, HandlerResult, JobContext, JobState, OpState, Operations,
    Queue, Worker, WorkerOptions,
};
use keel::Error;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert;
use crate::json::to_py;
use crate::run::{attached, blocking, quick, Interrupt};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyOperations>()?;
    m.add_class::<PyQueue>()?;
    m.add_class::<PyWorker>()?;
    Ok(())
}

/// Per-item operation states in an LMDB file: a record per (item,
/// operation) in READY, WORKING, OK or FAILED. ``claim`` hands each item to
/// exactly one claimer (threads and processes) with a token; an update with a
/// stale token raises keel.Conflict. Every call is durable when it returns.
#[pyclass(name = "Operations", module = "keel", frozen)]
pub struct PyOperations {
    inner: Operations,
    path: PathBuf,
}

#[pymethods]
impl PyOperations {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner =
            blocking(py, || Operations::open(&path)).map_err(|err| crate::errors::with_filename(py, err, &path))?;
        Ok(PyOperations { inner, path })
    }

    fn __repr__(&self) -> String {
        format!("<keel.Operations {:?}>", self.path)
    }

    /// Makes each of ``ops`` READY for ``item``; returns their records.
    fn ready<'py>(&self, py: Python<'py>, item: &str, ops: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let records = blocking(py, || {
            let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
            self.inner.ready(item, &ops)
        })?;
        to_py(py, &records.iter().map(|r| r.to_json()).collect())
    }

    /// Up to ``limit`` READY records of ``op``, oldest first (claims nothing).
    #[pyo3(signature = (op, limit=100))]
    fn next<'py>(&self, py: Python<'py>, op: &str, limit: usize) -> PyResult<Bound<'py, PyAny>> {
        let records = blocking(py, || self.inner.next(op, limit))?;
        to_py(py, &records.iter().map(|r| r.to_json()).collect())
    }

    /// Claims up to ``limit`` READY (or lease-expired) items of ``op`` for
    /// ``worker`` for ``lease`` seconds. Returns ``[{"item", "op", "token",
    /// "lease_until", "attempt"}]``.
    #[pyo3(signature = (op, limit=1, *, worker, lease=30.0))]
    fn claim<'py>(
        &self,
        py: Python<'py>,
        op: &str,
        limit: usize,
        worker: &str,
        lease: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let claims = blocking(py, || {
            self.inner.claim(op, limit, worker, convert::duration(lease, "lease")?)
        })?;
        to_py(py, &claims.iter().map(|c| c.to_json()).collect())
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
        token: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let record = blocking(py, || {
            let state: OpState = state.parse()?;
            let enable: Vec<&str> = enable.iter().map(String::as_str).collect();
            self.inner.update(item, op, token, state, message, &enable)
        })?;
        to_py(py, &record.to_json())
    }

    /// Marks ``op`` of ``item`` FAILED with ``message`` (fenced like ``update``).
    #[pyo3(signature = (item, op, message, *, token=None))]
    fn error<'py>(
        &self,
        py: Python<'py>,
        item: &str,
        op: &str,
        message: &str,
        token: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let record = blocking(py, || self.inner.error(item, op, token, message))?;
        to_py(py, &record.to_json())
    }

    /// Every operation record of ``item``.
    fn states<'py>(&self, py: Python<'py>, item: &str) -> PyResult<Bound<'py, PyAny>> {
        let records = blocking(py, || self.inner.states(item))?;
        to_py(py, &records.iter().map(|r| r.to_json()).collect())
    }
}

/// A durable job queue in an LMDB file: priorities (0 first, 9 last),
/// run-at times, unique keys, leases with attempt tokens (a stale token
/// raises keel.Conflict), retries with exponential backoff and jitter, a
/// resetter for expired leases, retention cleanup, cheap counts.
#[pyclass(name = "Queue", module = "keel", frozen)]
pub struct PyQueue {
    inner: Queue,
    path: PathBuf,
}

#[pymethods]
impl PyQueue {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = blocking(py, || Queue::open(&path)).map_err(|err| crate::errors::with_filename(py, err, &path))?;
        Ok(PyQueue { inner, path })
    }

    fn __repr__(&self) -> String {
        format!("<keel.Queue {:?}>", self.path)
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
        priority: u8,
        run_at: Option<f64>,
        delay: Option<f64>,
        max_attempts: u32,
        unique_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = match payload {
            Some(value) => convert::json_text(&value)?,
            None => "null".to_owned(),
        };
        let now = self.inner.clock().now();
        let run_at = quick(py, || match (run_at, delay) {
            (Some(_), Some(_)) => Err(Error::invalid_argument("give run_at or delay, not both")),
            (Some(at), None) if at >= 0.0 => Ok(Some((at * 1000.0) as u64)),
            (Some(at), None) => Err(Error::invalid_argument(format!("run_at {at} is before 1970"))),
            (None, Some(delay)) => Ok(Some(now + convert::duration(delay, "delay")?.as_millis() as u64)),
            (None, None) => Ok(None),
        })?;
        let options = EnqueueOptions {
            priority,
            run_at,
            max_attempts,
            unique_key,
        };
        let enqueued = blocking(py, || self.inner.enqueue(kind, &payload, &options))?;
        let mut record = enqueued.job.to_json();
        record["created"] = serde_json::Value::Bool(enqueued.created);
        to_py(py, &record)
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
            self.inner.dequeue(&kinds, worker, convert::duration(lease, "lease")?)
        })?;
        job.map(|job| to_py(py, &job.to_json())).transpose()
    }

    /// Extends the attempt's lease to ``lease`` seconds from now.
    #[pyo3(signature = (id, token, *, lease=30.0))]
    fn heartbeat(&self, py: Python<'_>, id: u64, token: u64, lease: f64) -> PyResult<u64> {
        blocking(py, || {
            self.inner.heartbeat(id, token, convert::duration(lease, "lease")?)
        })
    }

    /// Completes the attempt with a JSON-serialisable ``result``.
    #[pyo3(signature = (id, token, result=None))]
    fn complete<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        token: u64,
        result: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let result = result
            .map(|value| convert::json_text(&value))
            .transpose()?
            .unwrap_or_default();
        let job = blocking(py, || self.inner.complete(id, token, &result))?;
        to_py(py, &job.to_json())
    }

    /// Fails the attempt: retried after a backoff when ``retryable`` and
    /// attempts remain; dead otherwise.
    #[pyo3(signature = (id, token, error, *, retryable=true))]
    fn fail<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        token: u64,
        error: &str,
        retryable: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let job = blocking(py, || self.inner.fail(id, token, error, retryable))?;
        to_py(py, &job.to_json())
    }

    /// Hands the attempt back unfinished (no failure counted).
    fn release<'py>(&self, py: Python<'py>, id: u64, token: u64) -> PyResult<Bound<'py, PyAny>> {
        let job = blocking(py, || self.inner.release(id, token))?;
        to_py(py, &job.to_json())
    }

    /// Cancels a job that has not finished.
    #[pyo3(signature = (id, reason=""))]
    fn cancel<'py>(&self, py: Python<'py>, id: u64, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let job = blocking(py, || self.inner.cancel(id, reason))?;
        to_py(py, &job.to_json())
    }

    /// Queues a dead or cancelled job again with fresh attempts
    /// (keel.Conflict for any other state).
    fn retry<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let job = blocking(py, || self.inner.retry(id))?;
        to_py(py, &job.to_json())
    }

    /// Jobs of ``kind`` (in ``state``, if given: "queued", "running",
    /// "retrying", "completed", "dead", "cancelled"), oldest first.
    #[pyo3(signature = (kind, *, state=None, limit=100))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        state: Option<&str>,
        limit: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let state = match state {
            Some(name) => Some(quick(py, || name.parse::<JobState>())?),
            None => None,
        };
        let jobs = blocking(py, || self.inner.list(kind, state, limit))?;
        jobs.iter().map(|job| to_py(py, &job.to_json())).collect()
    }

    /// The job with ``id`` (keel.NotFound if none).
    fn get<'py>(&self, py: Python<'py>, id: u64) -> PyResult<Bound<'py, PyAny>> {
        let job = blocking(py, || self.inner.get(id))?;
        to_py(py, &job.to_json())
    }

    /// ``{kind: {state: count}}``, read from counters (cheap).
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let counts = blocking(py, || self.inner.counts())?;
        to_py(py, &counts_to_json(&counts))
    }

    /// Requeues jobs whose lease expired; ``{"requeued", "dead"}``.
    fn reset_expired<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = blocking(py, || self.inner.reset_expired())?;
        let dict = PyDict::new(py);
        dict.set_item("requeued", report.requeued)?;
        dict.set_item("dead", report.dead)?;
        Ok(dict)
    }

    /// Deletes finished jobs older than ``retention`` seconds; returns how many.
    fn cleanup(&self, py: Python<'_>, retention: f64) -> PyResult<u64> {
        blocking(py, || self.inner.cleanup(convert::duration(retention, "retention")?))
    }
}

/// Runs Python callables as job handlers on keel's threads.
///
/// ``handlers`` maps a kind to a callable, or to ``(callable,
/// concurrency)``; a handler gets the job as a dict and returns a
/// JSON-serialisable result (or None). An exception fails the attempt
/// (retried unless it has ``retryable = False``); it never stops the worker.
/// An unknown kind in ``allow``/``block`` raises keel.InvalidArgument. A
/// handler running past ``job_timeout`` seconds fails its attempt; its
/// thread is abandoned, never killed.
#[pyclass(name = "Worker", module = "keel", frozen)]
pub struct PyWorker {
    inner: Mutex<Worker>,
    kinds: Vec<String>,
}

/// A Python handler, called with the GIL taken per call.
fn python_handler(callable: Py<PyAny>) -> impl Fn(&JobContext) -> HandlerResult + Send + Sync + 'static {
    move |ctx: &JobContext| {
        // The interpreter may be shutting down; then the job is retried later.
        attached(|py| call_handler(py, &callable, ctx))
            .unwrap_or_else(|| Err(HandlerError::retry("the Python interpreter is not available")))
    }
}

fn call_handler(py: Python<'_>, callable: &Py<PyAny>, ctx: &JobContext) -> HandlerResult {
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
    let job = to_py(py, &ctx.job().to_json()).map_err(failure)?;
    let result = callable.bind(py).call1((job,)).map_err(failure)?;
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
        let mut builder = Worker::builder(&queue.inner).options(options).block(block);
        if let Some(allow) = allow {
            builder = builder.allow(allow);
        }
        for (kind, spec) in handlers.iter() {
            let kind: String = kind.extract()?;
            let (callable, concurrency) = match spec.cast::<PyTuple>() {
                Ok(pair) => (pair.get_item(0)?, pair.get_item(1)?.extract::<usize>()?),
                Err(_) => (spec, 1),
            };
            if !callable.is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "the handler for {kind:?} is not callable"
                )));
            }
            builder = builder.shared_handler(&kind, concurrency, Arc::new(python_handler(callable.unbind())));
        }
        let worker = blocking(py, || builder.start())?;
        let kinds = worker.kinds().to_vec();
        Ok(PyWorker {
            inner: Mutex::new(worker),
            kinds,
        })
    }

    /// The kinds this worker runs.
    #[getter]
    fn kinds(&self) -> Vec<String> {
        self.kinds.clone()
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

    /// ``{"completed", "failed", "panicked", "refused", "released"}``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.lock().stats();
        let dict = PyDict::new(py);
        dict.set_item("completed", stats.completed)?;
        dict.set_item("failed", stats.failed)?;
        dict.set_item("panicked", stats.panicked)?;
        dict.set_item("refused", stats.refused)?;
        dict.set_item("released", stats.released)?;
        dict.set_item("timed_out", stats.timed_out)?;
        Ok(dict)
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
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py, 30.0)?;
        Ok(false)
    }
}

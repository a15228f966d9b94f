//! `keel.SyncPool` and `keel.CancellationToken`.
//!
//! Python callables run on the pool's threads and attach to the interpreter
//! for each call (`Python::try_attach`: the interpreter may be shutting
//! down); the calling thread waits with the GIL released, so I/O-bound
//! callables (sleeps, sockets, subprocesses) really run in parallel.
//!
//! An exception a callable raises is kept, by task index, and handed back
//! as that task's result: the caller sees the very exception object, while
//! the core sees a failure (counted as failed, stopping a pipeline).

use std::sync::Arc;

use keel::pool::{
    BatchOptions, CancellationToken, FailureBackoff, Outcome, PipelineOptions, PoolConfig, Progress, SyncPool, Task,
    TaskContext,
};
use keel::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::convert;
use crate::errors::to_pyerr;
use crate::locks::key_bytes;
use crate::run::{attached, interruptible, quick, OnCaller};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySyncPool>()?;
    m.add_class::<PyCancellationToken>()?;
    m.add_class::<PyTaskContext>()?;
    Ok(())
}

/// What a running callable may know about itself, passed as its second
/// argument when `pool.run(..., context=True)`: its index, whether it is the
/// first item of its key in the batch (OPAL's one fetch per source), and
/// whether it should stop (timed out, batch cancelled, pool shut down).
#[pyclass(name = "TaskContext", module = "keel", frozen)]
pub struct PyTaskContext {
    #[pyo3(get)]
    index: usize,
    #[pyo3(get)]
    first_of_key: bool,
    token: CancellationToken,
    deadline: Option<std::time::Instant>,
}

impl PyTaskContext {
    fn of(ctx: &TaskContext) -> Self {
        PyTaskContext {
            index: ctx.index(),
            first_of_key: ctx.is_first_of_key(),
            token: ctx.cancellation().clone(),
            deadline: ctx.deadline(),
        }
    }
}

#[pymethods]
impl PyTaskContext {
    /// True once the callable should stop: threads are never killed, so a
    /// long callable checks this between steps.
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Seconds left before the deadline (0 once past it), or None.
    #[getter]
    fn remaining(&self) -> Option<f64> {
        self.deadline.map(|deadline| {
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f64()
        })
    }

    fn __repr__(&self) -> String {
        let python = |flag: bool| if flag { "True" } else { "False" };
        format!(
            "<keel.TaskContext index={} first_of_key={} cancelled={}>",
            self.index,
            python(self.first_of_key),
            python(self.token.is_cancelled())
        )
    }

    /// Waits up to `seconds` (GIL released), waking early if cancelled;
    /// returns True if the callable should stop.
    fn wait_cancelled(&self, py: Python<'_>, seconds: f64) -> PyResult<bool> {
        let wait = quick(py, || convert::duration(seconds, "seconds"))?;
        Ok(py.detach(|| self.token.wait_timeout(wait)))
    }
}

/// A flag that tells a running batch, pipeline or lock wait to stop; pass
/// it as `cancel=` and call `cancel()` from any thread.
#[pyclass(name = "CancellationToken", module = "keel", frozen)]
pub struct PyCancellationToken {
    pub(crate) inner: CancellationToken,
}

#[pymethods]
impl PyCancellationToken {
    #[new]
    fn new() -> Self {
        PyCancellationToken {
            inner: CancellationToken::new(),
        }
    }

    fn __repr__(&self) -> String {
        let cancelled = if self.inner.is_cancelled() { "True" } else { "False" };
        format!("<keel.CancellationToken cancelled={cancelled}>")
    }

    /// Cancels: tasks not started are cancelled, running ones are reported
    /// cancelled and their threads left to finish on their own.
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// True once cancel() was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

/// Calls `func(*args)` on this (pool) thread, attached for the call. A
/// Python exception becomes a keel failure that carries it as its source,
/// so the very exception object is handed back (to singleflight followers
/// too, whose outcome is a clone of their leader's).
fn call_python(
    func: &Py<PyAny>,
    args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
) -> keel::Result<Py<PyAny>> {
    let called = attached(|py| call_here(py, func, args));
    called.unwrap_or_else(|| Err(Error::closed("the Python interpreter is shutting down")))
}

/// Calls `func(*args)` on this thread, already attached.
fn call_here(
    py: Python<'_>,
    func: &Py<PyAny>,
    args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
) -> keel::Result<Py<PyAny>> {
    match args(py).and_then(|args| func.bind(py).call1(args)) {
        Ok(value) => Ok(value.unbind()),
        Err(err) => Err(failure_of(py, &err).with_source(err)),
    }
}

/// Calls `func(value)` on the thread that called keel (see
/// [`OnCaller`]); Cancelled once that call was interrupted by Ctrl-C.
fn call_on_caller(caller: &OnCaller<'_>, func: &Arc<Py<PyAny>>, value: Py<PyAny>) -> keel::Result<Py<PyAny>> {
    let func = Arc::clone(func);
    caller
        .run(move |py| call_here(py, &func, |py| (value.bind(py),).into_pyobject(py)))
        .unwrap_or_else(|| Err(Error::cancelled("interrupted (KeyboardInterrupt)")))
}

/// The token a call is stopped by on Ctrl-C: the caller's own, so the call
/// ends exactly as if they had cancelled it, or a fresh one.
fn stop_token(cancel: Option<PyRef<'_, PyCancellationToken>>) -> CancellationToken {
    cancel.map_or_else(CancellationToken::new, |cancel| cancel.inner.clone())
}

/// The keel failure standing for a Python exception: a keel error keeps its
/// kind; anything else counts as an I/O-style failure of the callable.
fn failure_of(py: Python<'_>, err: &PyErr) -> Error {
    let value = err.value(py);
    let kind = value
        .getattr("code")
        .ok()
        .filter(|_| {
            value
                .is_instance(&py.get_type::<pyo3::exceptions::PyException>())
                .unwrap_or(false)
        })
        .and_then(|code| code.extract::<u32>().ok())
        .and_then(ErrorKind::from_code)
        .unwrap_or(ErrorKind::Io);
    // The exception itself is attached as the source by the caller.
    Error::new(kind, "the callable raised")
}

/// The Python exception a callable raised, if `err` stands for one.
fn raised_by_callable(err: &Error) -> Option<&PyErr> {
    err.cause()?.downcast_ref::<PyErr>()
}

/// A callable's result, shareable between singleflight followers without
/// the GIL (a `Py` may only be cloned while attached).
type Shared = Arc<Py<PyAny>>;

/// The Python result of one outcome: the value, or the exception instance
/// (the callable's own, when it raised one; otherwise the core's error for
/// the outcome, from `Outcome::into_result`). A skip's exception carries
/// `retry_in`, the seconds left before its key may run again.
fn outcome_to_py(py: Python<'_>, index: usize, outcome: &Outcome<Shared>) -> Py<PyAny> {
    let err = match outcome {
        Outcome::Value(value) => return value.clone_ref(py),
        Outcome::Error(err) => match raised_by_callable(err) {
            Some(raised) => raised.clone_ref(py),
            None => to_pyerr(py, err.clone()),
        },
        other => match other.clone().into_result(index) {
            Ok(value) => return value.clone_ref(py),
            Err(err) => to_pyerr(py, err),
        },
    };
    if let Outcome::Skipped { retry_in, .. } = outcome {
        // Best effort: the exception is still the right one without it.
        let _ = err.value(py).setattr("retry_in", retry_in.as_secs_f64());
    }
    err.into_value(py).into_any()
}

/// A bounded pool for blocking callables: at most `max_concurrency` at
/// once, items of one key never at the same time, results in input order
/// with exceptions as values.
#[pyclass(name = "SyncPool", module = "keel", frozen)]
pub struct PySyncPool {
    inner: SyncPool<Vec<u8>>,
}

#[pymethods]
impl PySyncPool {
    #[new]
    #[pyo3(signature = (max_concurrency=10, *, timeout=None, max_abandoned=64, name=None, failure_backoff=None))]
    fn new(
        py: Python<'_>,
        max_concurrency: i64,
        timeout: Option<f64>,
        max_abandoned: i64,
        name: Option<String>,
        failure_backoff: Option<(f64, f64)>,
    ) -> PyResult<Self> {
        let mut config = quick(py, || PoolConfig::checked(max_concurrency, max_abandoned))?;
        if let Some((base, max)) = failure_backoff {
            let base = quick(py, || convert::duration(base, "failure_backoff base"))?;
            let max = quick(py, || convert::duration(max, "failure_backoff max"))?;
            config = config.with_failure_backoff(FailureBackoff::new(base, max));
        }
        if let Some(timeout) = quick(py, || convert::optional_duration(timeout, "timeout"))? {
            config = config.with_task_timeout(timeout);
        }
        if let Some(name) = name {
            config = config.with_name(name);
        }
        Ok(PySyncPool {
            inner: SyncPool::new(config),
        })
    }

    /// Calls `fn(item)` for every item on the pool's threads and returns the
    /// results in input order; an exception (or keel.Timeout, keel.Cancelled,
    /// keel.Busy for a refusal) is returned in its item's place, as
    /// `asyncio.gather(return_exceptions=True)` does.
    ///
    /// `key(item)` (str or bytes) serializes items of one key; without it
    /// nothing is serialized but the limit. `timeout` (seconds) overrides
    /// the pool's. With `singleflight`, only the first item of each key runs
    /// and the others get its result. `progress(done, total, index, result)`
    /// is called on this thread as results come in. With `context`, the
    /// callable is called as `fn(item, ctx)` with a keel.TaskContext.
    ///
    /// With the pool's `failure_backoff=(base, max)` (seconds), after n
    /// consecutive failures of a key its items are skipped (keel.Busy with
    /// `retry_in`, the seconds left) for base * 2**(n-1), at most max; a
    /// success clears it; `bypass_backoff=True` runs them anyway.
    ///
    /// The limit holds across every call on this pool, from any thread. A
    /// callable that calls `run` on its own pool gets keel.WouldDeadlock
    /// results (it would wait holding a slot): use a second pool.
    #[pyo3(signature = (func, items, *, key=None, timeout=None, singleflight=false, progress=None, cancel=None, context=false, bypass_backoff=false))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        func: Py<PyAny>,
        items: &Bound<'_, PyAny>,
        key: Option<Bound<'_, PyAny>>,
        timeout: Option<f64>,
        singleflight: bool,
        progress: Option<Py<PyAny>>,
        cancel: Option<PyRef<'_, PyCancellationToken>>,
        context: bool,
        bypass_backoff: bool,
    ) -> PyResult<Py<PyList>> {
        let items: Vec<Py<PyAny>> = items
            .try_iter()?
            .map(|item| item.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        let keys = match &key {
            Some(key) => Some(
                items
                    .iter()
                    .map(|item| key_bytes(&key.call1((item.bind(py),))?))
                    .collect::<PyResult<Vec<Vec<u8>>>>()?,
            ),
            None => None,
        };
        let timeout = quick(py, || convert::optional_duration(timeout, "timeout"))?;
        let cancel = stop_token(cancel);
        let func = Arc::new(func);
        let tasks = items.into_iter().map(|item| {
            let func = Arc::clone(&func);
            move |ctx: &TaskContext| -> keel::Result<Shared> {
                let ctx = context.then_some(ctx);
                call_python(&func, |py| item_args(py, &item, ctx)).map(Arc::new)
            }
        });
        let progress = progress.map(Arc::new);
        let pool = &self.inner;
        let stop = cancel.clone();
        // On a helper thread, so Ctrl-C (checked here) cancels the batch as
        // its token would; progress is still called on this thread.
        let outcomes = interruptible(
            py,
            move || stop.cancel(),
            move |caller| {
                // Built here: a progress callback is not Send, its parts are.
                let mut options = BatchOptions::new().cancel_token(cancel).bypass_backoff(bypass_backoff);
                if let Some(timeout) = timeout {
                    options = options.timeout(Some(timeout));
                }
                if let Some(progress) = progress {
                    options = options.on_progress(move |p: Progress<'_, Vec<u8>, Shared>| {
                        let (done, total, index, outcome) = (p.done, p.total, p.index, p.outcome.clone());
                        let progress = Arc::clone(&progress);
                        caller.run(move |py| {
                            let result = outcome_to_py(py, index, &outcome);
                            if let Err(err) = progress.bind(py).call1((done, total, index, result)) {
                                err.write_unraisable(py, Some(progress.bind(py)));
                            }
                        });
                    });
                }
                Ok(match keys {
                    None => pool.run_unkeyed(tasks, options),
                    Some(keys) => {
                        let tasks = keys.into_iter().zip(tasks).map(|(key, run)| Task::new(key, run));
                        if singleflight {
                            pool.run_singleflight(tasks, options)
                        } else {
                            pool.run_batch_with(tasks, options)
                        }
                    }
                })
            },
        )?;
        let results = outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| outcome_to_py(py, index, outcome));
        Ok(PyList::new(py, results)?.unbind())
    }

    /// Calls `prepare(item)` for every item on the pool's threads, in
    /// parallel, and `commit(prepared)` on this thread, one at a time, in
    /// input order, as soon as an item is prepared and the one before it is
    /// committed. Returns each commit's result, or the exception (of prepare
    /// or commit) in its item's place. At most `window` items are prepared
    /// but not committed. With `stop_at_first_commit_failure`, items after a
    /// failed commit are not committed (keel.Cancelled).
    #[pyo3(signature = (prepare, items, commit, *, window=None, stop_at_first_commit_failure=false, timeout=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &self,
        py: Python<'_>,
        prepare: Py<PyAny>,
        items: &Bound<'_, PyAny>,
        commit: Py<PyAny>,
        window: Option<usize>,
        stop_at_first_commit_failure: bool,
        timeout: Option<f64>,
        cancel: Option<PyRef<'_, PyCancellationToken>>,
    ) -> PyResult<Py<PyList>> {
        let items: Vec<Py<PyAny>> = items
            .try_iter()?
            .map(|item| item.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        let mut options = PipelineOptions::new().stop_at_first_commit_failure(stop_at_first_commit_failure);
        if let Some(window) = window {
            options = options.window(window);
        }
        if let Some(timeout) = quick(py, || convert::optional_duration(timeout, "timeout"))? {
            options = options.timeout(Some(timeout));
        }
        let cancel = stop_token(cancel);
        options = options.cancel_token(cancel.clone());
        let pool = &self.inner;
        let commit = Arc::new(commit);
        // On a helper thread, so Ctrl-C (checked here) cancels the pipeline
        // as its token would; commits still run on this thread, in order.
        let outcomes = interruptible(
            py,
            move || cancel.cancel(),
            move |caller| {
                Ok(pool.pipeline(
                    items,
                    move |item: Py<PyAny>, _: &TaskContext| {
                        call_python(&prepare, |py| (item.bind(py),).into_pyobject(py))
                    },
                    move |_, prepared: Py<PyAny>| call_on_caller(caller, &commit, prepared),
                    options,
                ))
            },
        )?;
        let results = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| outcome_to_py(py, index, &outcome.map(Arc::new)));
        Ok(PyList::new(py, results)?.unbind())
    }

    /// Stops the pool: running calls return at once (their running items
    /// reported keel.Cancelled, their threads left to finish on their own),
    /// and later calls are refused with keel.Closed. Never waits for a thread.
    fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// The same as `shutdown()`, for `with keel.SyncPool(...) as pool:`
    /// and `contextlib.closing`.
    fn close(&self) {
        self.inner.shutdown();
    }

    /// Whether `shutdown()` (or `close()`) was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_shut_down()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Shuts the pool down when the block ends.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
        self.inner.shutdown();
    }

    fn __repr__(&self) -> String {
        let stats = self.inner.stats();

        format!(
            "<keel.SyncPool max_concurrency={} in_flight={}{}>",
            self.inner.config().max_concurrency(),
            stats.in_flight,
            if self.inner.is_shut_down() { " shut down" } else { "" }
        )
    }

    /// The pool's counters: the fields of the core's PoolStats (in_flight,
    /// slot_waiters, peak_concurrency, completed, ..., hung_keys).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::json::to_py_serialized(py, &self.inner.stats())
    }

    /// The concurrency limit (at least 1).
    #[getter]
    fn max_concurrency(&self) -> usize {
        self.inner.config().max_concurrency()
    }
}

/// `(item,)`, or `(item, ctx)` when the callable asked for its context.
fn item_args<'py>(py: Python<'py>, item: &Py<PyAny>, ctx: Option<&TaskContext>) -> PyResult<Bound<'py, PyTuple>> {
    match ctx {
        Some(ctx) => (item.bind(py), Py::new(py, PyTaskContext::of(ctx))?).into_pyobject(py),
        None => (item.bind(py),).into_pyobject(py),
    }
}

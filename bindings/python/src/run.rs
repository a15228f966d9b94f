//! Running core calls from Python: with the GIL released where they may
//! block, with panics turned into `keel.Panic` instead of crossing, and
//! with Ctrl-C working: a call that may wait long wakes every
//! [`SIGNAL_CHECK`] to run Python's signal handlers, and when one raises
//! (KeyboardInterrupt) the call withdraws cleanly and raises it.
//!
//! Three shapes, by what the core call allows:
//! - [`in_slices`]: the core wait takes a timeout and does nothing when it
//!   runs out (a lock wait): wait one slice at a time on this thread.
//! - [`interruptible`]: the core call can be told to stop (a batch's
//!   cancellation token): run it on a helper thread, stop it on a signal,
//!   and wait for it to return. Python code it calls back is run here, on
//!   the calling thread, through [`OnCaller`].
//! - [`Interrupt`]: the core call takes a check to run between its waits
//!   (a worker's stop).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use keel::{Error, ErrorKind, Result, Wait};
use pyo3::prelude::*;

use crate::errors::to_pyerr;

/// Runs `body` without the GIL (it may block), containing panics.
pub fn blocking<T: Send>(py: Python<'_>, body: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    crate::logging::refresh_if_stale(py);
    py.detach(|| contained(body)).map_err(|err| to_pyerr(py, err))
}

/// Runs a short `body` with the GIL held, containing panics.
pub fn quick<T>(py: Python<'_>, body: impl FnOnce() -> Result<T>) -> PyResult<T> {
    crate::logging::refresh_if_stale(py);
    contained(body).map_err(|err| to_pyerr(py, err))
}

/// How often a blocking call wakes to let Python's signal handlers run.
pub const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The interpreter's main thread, the only one Python runs signal handlers
/// on: other threads' calls gain nothing from waking, and stay where they
/// are (so a pool task's nested run is still seen, and refused, as one).
static MAIN_THREAD: OnceLock<std::os::raw::c_ulong> = OnceLock::new();

/// Notes the main thread; called once, at import.
pub fn note_main_thread(py: Python<'_>) -> PyResult<()> {
    let main = py.import("threading")?.call_method0("main_thread")?.getattr("ident")?;
    let _ = MAIN_THREAD.set(main.extract()?);
    Ok(())
}

fn signals_run_here() -> bool {
    // SAFETY: a plain query of the calling thread's id; needs no GIL.
    let me = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
    MAIN_THREAD.get() == Some(&me)
}

/// Runs a core wait in slices of at most [`SIGNAL_CHECK`], without the GIL,
/// running the signal handlers between slices. `attempt(wait)` must do
/// nothing when its wait runs out and then fail with `ErrorKind::Timeout`
/// (as lock waits do), so an interrupted call leaves nothing taken.
///
/// Runs on the calling thread, so per-thread rules of the core (a lock is
/// not reentrant for its holder) see the caller. A slice ending and the next
/// starting lets another waiter in first; keel's locks promise no order
/// between waiters, so nobody relies on it.
pub fn in_slices<T: Send>(
    py: Python<'_>,
    wait: Wait,
    mut attempt: impl FnMut(Wait) -> Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    if !signals_run_here() {
        return blocking(py, || attempt(wait));
    }
    crate::logging::refresh_if_stale(py);
    let deadline = match wait {
        Wait::Never => return blocking(py, || attempt(Wait::Never)),
        Wait::For(limit) => Instant::now().checked_add(limit),
        Wait::Forever => None,
    };
    loop {
        let now = Instant::now();
        let (slice, last) = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(now);
                (left.min(SIGNAL_CHECK), left <= SIGNAL_CHECK)
            }
            None => (SIGNAL_CHECK, false),
        };
        match py.detach(|| contained(|| attempt(Wait::For(slice)))) {
            Err(err) if err.kind() == ErrorKind::Timeout && !last => py.check_signals()?,
            done => return done.map_err(|err| to_pyerr(py, err)),
        }
    }
}

/// Python code a helper thread asks the calling thread to run.
type CallerJob<'env> = Box<dyn FnOnce(Python<'_>) + Send + 'env>;

/// Lets the body of [`interruptible`], on its helper thread, run Python
/// code on the thread that made the call (progress callbacks, a
/// pipeline's commits: hosts rely on them running there, e.g. a SQLite
/// connection made on that thread).
pub struct OnCaller<'env> {
    /// None: the body runs on the calling thread itself.
    jobs: Option<Sender<CallerJob<'env>>>,
}

impl<'env> OnCaller<'env> {
    /// Runs `job` on the calling thread, attached, and returns its result;
    /// `None` once the call was interrupted (the job then never runs).
    pub fn run<R: Send + 'env>(&self, job: impl FnOnce(Python<'_>) -> R + Send + 'env) -> Option<R> {
        let Some(jobs) = &self.jobs else {
            return Python::attach(|py| Some(job(py)));
        };
        let (reply, result) = crossbeam_channel::bounded(1);
        let job: CallerJob<'env> = Box::new(move |py| {
            let _ = reply.send(job(py));
        });
        jobs.send(job).ok()?;
        // A job dropped unrun drops `reply`: recv fails, and that is None.
        result.recv().ok()
    }
}

/// What the calling thread of [`interruptible`] waits for.
enum Event<'env, T> {
    Done(Result<T>),
    Job(CallerJob<'env>),
    BodyGone,
    Tick,
}

/// Runs `body` on a helper thread while the calling thread (GIL released)
/// runs the Python code `body` hands it through [`OnCaller`] and, every
/// [`SIGNAL_CHECK`], the signal handlers. When a handler raises, `stop` is
/// called (it must make `body` return soon, e.g. by cancelling its token),
/// jobs `body` hands over from then on are refused, and once `body` has
/// returned the handler's exception is raised; `body`'s result is dropped.
pub fn interruptible<'env, T: Send + 'env>(
    py: Python<'_>,
    stop: impl FnOnce(),
    body: impl FnOnce(&OnCaller<'env>) -> Result<T> + Send + 'env,
) -> PyResult<T> {
    if !signals_run_here() {
        return blocking(py, || body(&OnCaller { jobs: None }));
    }
    crate::logging::refresh_if_stale(py);
    let (jobs_tx, jobs) = crossbeam_channel::unbounded::<CallerJob<'env>>();
    let (done_tx, done) = crossbeam_channel::bounded::<Result<T>>(1);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("keel-call".into())
            .spawn_scoped(scope, move || {
                let caller = OnCaller { jobs: Some(jobs_tx) };
                let result = contained(|| body(&caller));
                drop(caller);
                let _ = done_tx.send(result);
            })
            .map_err(|err| to_pyerr(py, Error::io("start a thread for a blocking call", err)))?;
        let mut stop = Some(stop);
        let mut interrupted: Option<PyErr> = None;
        let mut body_gone = false;
        loop {
            match py.detach(|| next_event(&done, &jobs, body_gone)) {
                Event::Done(result) => {
                    return match interrupted {
                        Some(err) => Err(err),
                        None => result.map_err(|err| to_pyerr(py, err)),
                    }
                }
                Event::Job(job) if interrupted.is_none() => job(py),
                Event::Job(refused) => drop(refused),
                Event::BodyGone => body_gone = true,
                Event::Tick if interrupted.is_none() => {
                    if let Err(err) = py.check_signals() {
                        interrupted = Some(err);
                        if let Some(stop) = stop.take() {
                            stop();
                        }
                    }
                }
                Event::Tick => {}
            }
        }
    })
}

fn next_event<'env, T>(
    done: &Receiver<Result<T>>,
    jobs: &Receiver<CallerJob<'env>>,
    body_gone: bool,
) -> Event<'env, T> {
    let done_now = |result: std::result::Result<Result<T>, _>| {
        Event::Done(result.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Panic,
                "the helper thread of a blocking call ended without a result",
            ))
        }))
    };
    if body_gone {
        return select! {
            recv(done) -> result => done_now(result),
            default(SIGNAL_CHECK) => Event::Tick,
        };
    }
    select! {
        recv(done) -> result => done_now(result),
        recv(jobs) -> job => job.map_or(Event::BodyGone, Event::Job),
        default(SIGNAL_CHECK) => Event::Tick,
    }
}

/// A check that runs Python's signal handlers, for core calls that take one
/// to run between their waits; keeps the exception a handler raised.
#[derive(Default)]
pub struct Interrupt {
    raised: Option<PyErr>,
}

impl Interrupt {
    /// Runs the signal handlers (attaching to the interpreter; call it from
    /// the thread that made the Python call); true once one raised.
    pub fn check(&mut self) -> bool {
        if self.raised.is_none() {
            self.raised = Python::attach(|py| py.check_signals().err());
        }
        self.raised.is_some()
    }

    /// `result`, unless a signal handler raised: then its exception.
    pub fn or_raised<T>(self, result: PyResult<T>) -> PyResult<T> {
        match self.raised {
            Some(err) => Err(err),
            None => result,
        }
    }
}

fn contained<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(payload)))
}

/// For tests of the panic boundary only: panics inside keel; raises keel.Panic.
#[pyfunction]
pub fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    blocking(py, || -> Result<()> { panic!("keel._keel._debug_panic was called") })
}

/// keel threads inside a Python call now, and whether the interpreter is
/// exiting (then no keel thread attaches again).
struct Attached {
    inside: usize,
    exiting: bool,
}

static ATTACHED: Mutex<Attached> = Mutex::new(Attached {
    inside: 0,
    exiting: false,
});
static DETACHED: Condvar = Condvar::new();

/// How long interpreter exit waits for keel threads still inside Python calls.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Runs `body` attached to the interpreter from one of keel's own threads
/// (pool workers, job handlers, migrations, the log emitter). `None` when the
/// interpreter is exiting or gone: the caller reports that, nothing crashes.
///
/// Why the bookkeeping: a thread that attaches *during* finalization is
/// ended by CPython (< 3.14) with pthread_exit, whose forced unwind through a
/// Rust frame aborts the process. The exit hook ([`_wait_for_keel_threads`],
/// registered with atexit) stops new attachments and waits for current ones.
pub fn attached<R>(body: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    {
        let mut state = ATTACHED.lock();
        if state.exiting {
            return None;
        }
        state.inside += 1;
    }
    let result = Python::try_attach(body);
    let mut state = ATTACHED.lock();
    state.inside -= 1;
    DETACHED.notify_all();
    result
}

/// Runs at interpreter exit (atexit), before finalization: no keel thread
/// attaches from now on, and those inside a Python call get up to a second
/// (with the GIL released) to return. One that stays hung is harmless: the
/// process exits around it.
#[pyfunction]
pub fn _wait_for_keel_threads(py: Python<'_>) {
    py.detach(|| {
        let deadline = Instant::now() + EXIT_GRACE;
        let mut state = ATTACHED.lock();
        state.exiting = true;
        while state.inside > 0 && !DETACHED.wait_until(&mut state, deadline).timed_out() {}
    });
}

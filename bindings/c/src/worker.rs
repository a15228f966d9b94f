//! Job workers on a queue: `keel_worker_builder`, `keel_worker` and the
//! `keel_job_ctx` handed to C job handlers.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use keel_core::ops::{HandlerError, JobContext, Worker, WorkerBuilder, WorkerOptions};
use keel_core::{Error, Result};

use crate::buf::keel_bytes;
use crate::callback::{self, Output, Userdata};
use crate::ffi;
use crate::ffi::ms;
use crate::queue::keel_queue;
use crate::status::keel_status;
use keel_core::ops::WorkerStats;

/// Collects handlers and settings for a worker; consumed by keel_worker_start.
pub struct keel_worker_builder {
    inner: Option<WorkerBuilder>,
}

/// A running worker; keel_worker_stop stops it, keel_worker_free stops it
/// (releasing running jobs at once) and frees it.
pub struct keel_worker {
    inner: Worker,
}

/// it was passed to; never free it.
pub struct keel_job_ctx {
    ctx: *const JobContext,
    output: Output,
    retryable: bool,
}

/// to the kind's concurrency) with `userdata` and the attempt. Return
/// KEEL_OK (0) to complete the job, with the JSON result (or nothing) given
/// to keel_job_ctx_set_output; any other number fails the attempt, with the
/// output as its message, retried after a backoff unless
/// keel_job_ctx_set_retryable(ctx, false) was called. It may call keel
/// functions, but not keel_worker_stop or keel_worker_free of its own worker.
pub type keel_job_handler_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, ctx: *mut keel_job_ctx) -> i32>;

/// How a worker claims and keeps its jobs; keel_worker_options_default
/// gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_worker_options {
    /// How long a claim holds without a heartbeat, in ms (at least 3). Default
    /// 30000.
    pub lease_ms: u64,
    /// How often running jobs' leases are extended, in ms; 0 (the default)
    /// means a third of the lease, so two heartbeats may be missed.
    pub heartbeat_ms: u64,
    /// How long an idle handler slot waits before asking the queue again,
    /// in ms (> 0; enqueues through this process's queue wake it sooner).
    /// Default 1000.
    pub poll_ms: u64,
    /// How often the resetter runs besides every dequeue, in ms (> 0).
    /// Default 5000.
    pub maintenance_ms: u64,
    /// Finished jobs older than this many ms are deleted by the maintenance
    /// pass; -1 (the default) keeps them.
    pub retention_ms: i64,
    /// An attempt whose handler runs longer than this many ms fails
    /// (retried after a backoff); the handler's thread is abandoned, never
    /// killed, and its late result is refused. -1 (the default): no limit.
    pub job_timeout_ms: i64,
}

/// The default worker options: 30 s leases with a heartbeat every 10 s,
/// idle polls every second, the resetter every 5 s, finished jobs kept, no
/// job timeout.
#[no_mangle]
pub extern "C" fn keel_worker_options_default() -> keel_worker_options {
    ffi::call_value(|| {
        let defaults = WorkerOptions::default();
        keel_worker_options {
            lease_ms: ffi::ms_of(defaults.lease),
            heartbeat_ms: 0,
            poll_ms: ffi::ms_of(defaults.poll_interval),
            maintenance_ms: ffi::ms_of(defaults.maintenance_interval),
            retention_ms: -1,
            job_timeout_ms: -1,
        }
    })
}

/// Not reached (making the defaults cannot panic): a zero lease, which
/// every builder refuses, rather than a guess at the defaults.
impl ffi::PanicValue for keel_worker_options {
    fn on_panic() -> Self {
        keel_worker_options {
            lease_ms: 0,
            heartbeat_ms: 0,
            poll_ms: 0,
            maintenance_ms: 0,
            retention_ms: -1,
            job_timeout_ms: -1,
        }
    }
}

/// The core's options for `options`, checked by the core's own rules (a
/// lease of at least 3 ms, intervals above zero, a heartbeat shorter than
/// the lease).
fn worker_options(options: &keel_worker_options, name: Option<&str>) -> Result<WorkerOptions> {
    let mut core = WorkerOptions {
        lease: ms(options.lease_ms),
        heartbeat_interval: (options.heartbeat_ms > 0).then(|| ms(options.heartbeat_ms)),
        poll_interval: ms(options.poll_ms),
        maintenance_interval: ms(options.maintenance_ms),
        retention: ffi::timeout_ms(options.retention_ms, "retention_ms")?,
        job_timeout: ffi::timeout_ms(options.job_timeout_ms, "job_timeout_ms")?,
        ..WorkerOptions::default()
    };
    if let Some(name) = name {
        core.name = name.to_owned();
    }
    core.check()?;
    Ok(core)
}

/// Starts building a worker on `queue` named `name` (NULL for a default)
/// with `options` (NULL for the defaults). Free with
/// keel_worker_builder_free unless started.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_new(
    queue: *const keel_queue,
    name: *const c_char,
    name_len: usize,
    options: *const keel_worker_options,
    out: *mut *mut keel_worker_builder,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let out = ffi::out_handle(out, "out")?;
        let name = ffi::optional_utf8(name, name_len, "name")?;
        let options = ffi::optional(options)
            .copied()
            .unwrap_or_else(|| keel_worker_options_default());
        out.put(keel_worker_builder {
            inner: Some(Worker::builder(&queue.inner).options(worker_options(&options, name)?)),
        });
        Ok(())
    })
}

/// Frees a builder that was not started. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_free(builder: *mut keel_worker_builder) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(builder) })
}

fn with_builder(builder: &mut keel_worker_builder, change: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> Result<()> {
    let current = builder
        .inner
        .take()
        .ok_or_else(|| Error::closed("the worker builder was already started"))?;
    builder.inner = Some(change(current));
    Ok(())
}

/// A C handler and its userdata, carried to the worker's threads.
#[derive(Clone, Copy)]
struct CHandler {
    run: unsafe extern "C" fn(*mut c_void, *mut keel_job_ctx) -> i32,
    userdata: Userdata,
}

impl CHandler {
    fn call(self, ctx: &JobContext) -> std::result::Result<String, HandlerError> {
        let mut c_ctx = keel_job_ctx {
            ctx,
            output: Output::default(),
            retryable: true,
        };
        // SAFETY: the caller promised a callable handler and its userdata.
        let status = unsafe { (self.run)(self.userdata.as_ptr(), &mut c_ctx) };
        let retryable = c_ctx.retryable;
        match callback::outcome(status, c_ctx.output, || format!("the handler of job {}", ctx.job().id)) {
            Ok(output) => Ok(String::from_utf8_lossy(&output).into_owned()),
            Err(err) => Err(HandlerError {
                message: err.report().to_string(),
                retryable,
            }),
        }
    }
}

/// Registers `handler` (with `userdata`) for `kind`, at most `concurrency`
/// at once.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_handler(
    builder: *mut keel_worker_builder,
    kind: *const c_char,
    kind_len: usize,
    concurrency: usize,
    handler: keel_job_handler_fn,
    userdata: *mut c_void,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let kind = ffi::utf8(kind, kind_len, "kind")?;
        let run = handler.ok_or_else(|| Error::invalid_argument("handler is NULL"))?;
        let handler = CHandler {
            run,
            userdata: Userdata::new(userdata),
        };
        with_builder(ffi::handle_mut(builder, "builder")?, |b| {
            b.shared_handler(kind, concurrency, Arc::new(move |ctx: &JobContext| handler.call(ctx)))
        })
    })
}

/// Runs only `kinds[0..count]` (default: every registered kind).
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_allow(
    builder: *mut keel_worker_builder,
    kinds: *const keel_bytes,
    count: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let kinds = ffi::utf8_list(kinds, count, "kinds")?;
        with_builder(ffi::handle_mut(builder, "builder")?, |b| b.allow(kinds))
    })
}

/// Never runs `kinds[0..count]`, even when allowed.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_block(
    builder: *mut keel_worker_builder,
    kinds: *const keel_bytes,
    count: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let kinds = ffi::utf8_list(kinds, count, "kinds")?;
        with_builder(ffi::handle_mut(builder, "builder")?, |b| b.block(kinds))
    })
}

/// Starts the worker into `*out` and frees the builder (also on failure).
/// A kind in the allow- or block-list with no handler is
/// KEEL_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_start(
    builder: *mut keel_worker_builder,
    out: *mut *mut keel_worker,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let builder = ffi::take_handle(builder).ok_or_else(|| Error::invalid_argument("builder is NULL"))?;
        let inner = builder
            .inner
            .ok_or_else(|| Error::closed("the worker builder was already started"))?;
        out.put(keel_worker { inner: inner.start()? });
        Ok(())
    })
}

/// Stops gracefully: no new jobs; running handlers get `deadline_ms`; jobs
/// still running then are released to the queue. Writes how many were
/// released to `*out_released` (may be NULL). Call it from a thread that is
/// not one of this worker's handlers.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_stop(
    worker: *mut keel_worker,
    deadline_ms: u64,
    out_released: *mut u64,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let worker = ffi::handle_mut(worker, "worker")?;
        let report = worker.inner.stop(ms(deadline_ms));
        ffi::put_optional(out_released, report.released);
        Ok(())
    })
}

/// Writes the worker's counters to `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_get_stats(worker: *const keel_worker, out: *mut WorkerStats) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let worker = ffi::handle(worker, "worker")?;
        let out = ffi::out_value(out, "out")?;
        *out = worker.inner.stats();
        Ok(())
    })
}

/// Stops the worker with a zero deadline (running jobs are released at
/// once) and frees it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_free(worker: *mut keel_worker) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(worker) })
}

/// The attempt behind a handler's context; NULL is `None`.
unsafe fn job_context<'a>(ctx: *const keel_job_ctx) -> Option<&'a JobContext> {
    // SAFETY: the header requires the context passed to the running handler,
    // whose JobContext outlives the call.
    unsafe { ffi::optional(ctx).and_then(|ctx| ctx.ctx.as_ref()) }
}

/// The job's id (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_id(ctx: *const keel_job_ctx) -> u64 {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe { job_context(ctx).map_or(0, |ctx| ctx.job().id) })
}

/// Which attempt this is, 1 for the first (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_attempt(ctx: *const keel_job_ctx) -> u32 {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe { job_context(ctx).map_or(0, |ctx| ctx.job().attempts) })
}

/// Points `*out_ptr`/`*out_len` at the JSON payload, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_payload(
    ctx: *const keel_job_ctx,
    out_ptr: *mut *const u8,
    out_len: *mut usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let job = job_context(ctx).ok_or_else(|| Error::invalid_argument("ctx is NULL"))?;
        let out_ptr = ffi::out_value(out_ptr, "out_ptr")?;
        let out_len = ffi::out_value(out_len, "out_len")?;
        *out_ptr = job.payload().as_ptr();
        *out_len = job.payload().len();
        Ok(())
    })
}

/// True once the handler should wrap up: the worker is stopping or this
/// attempt's lease was lost (its result will be refused). False for NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_should_stop(ctx: *const keel_job_ctx) -> bool {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe { job_context(ctx).is_some_and(JobContext::should_stop) })
}

/// True once this attempt's lease was lost: a heartbeat was refused (the job
/// was cancelled, reset or deleted; its result will not be stored) or a stop
/// released it. A cancelled job's handler sees it within one heartbeat
/// interval. False for NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_lease_lost(ctx: *const keel_job_ctx) -> bool {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe { job_context(ctx).is_some_and(JobContext::lease_lost) })
}

/// Sets the output (copied): the JSON result on KEEL_OK, the failure's
/// message otherwise.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_set_output(ctx: *mut keel_job_ctx, data: *const u8, len: usize) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle_mut(ctx, "ctx")?.output.set(data, len) })
}

/// Whether a failure (a non-OK return) is retried; true by default.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_set_retryable(ctx: *mut keel_job_ctx, retryable: bool) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ctx = ffi::handle_mut(ctx, "ctx")?;
        ctx.retryable = retryable;
        Ok(())
    })
}

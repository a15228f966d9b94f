//! Operations and jobs: `keel_ops`, `keel_queue`, `keel_worker`. Records
//! are handed to C as JSON in a keel_buf; the hot path (dequeue, finish)
//! uses plain numbers.

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keel_core::ops::{
    json::counts_to_json, EnqueueOptions, HandlerError, JobContext, OpState, Operations, Queue, Worker, WorkerBuilder,
    WorkerOptions,
};
use keel_core::{Error, Result};

use crate::buf::keel_buf;
use crate::buf::keel_bytes;
use crate::ffi;
use crate::status::keel_status;

/// Per-item operation states (see Operations in the Rust docs): a record
/// per (item, operation) in READY, WORKING, OK or FAILED, claimed with a
/// lease and a token. Every call is durable when it returns. Thread-safe.
pub struct keel_ops {
    inner: Operations,
}

/// A durable job queue (see Queue in the Rust docs): priorities, run-at
/// times, unique keys, leases with attempt tokens, retries with backoff.
/// Every call is durable when it returns. Thread-safe.
pub struct keel_queue {
    inner: Queue,
}

/// Collects handlers and settings for a worker; consumed by keel_worker_start.
pub struct keel_worker_builder {
    inner: Option<WorkerBuilder>,
}

/// A running worker; keel_worker_stop stops it, keel_worker_free stops it
/// (releasing running jobs at once) and frees it.
pub struct keel_worker {
    inner: Worker,
}

/// The running attempt handed to a job handler. Valid only during the call
/// it was passed to; never free it.
pub struct keel_job_ctx {
    ctx: *const JobContext,
    output: Vec<u8>,
    retryable: bool,
}

/// The state of an operation.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum keel_op_state {
    /// Waiting to be claimed.
    KEEL_OP_READY = 1,
    /// Claimed until its lease ends (entered by keel_ops_claim only).
    KEEL_OP_WORKING = 2,
    /// Done.
    KEEL_OP_OK = 3,
    /// Failed; the message says why.
    KEEL_OP_FAILED = 4,
}

/// How to enqueue a job; keel_enqueue_options_default gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_enqueue_options {
    /// 0 (runs first) to 9 (runs last); default 5.
    pub priority: u8,
    /// Not run before this time, in ms since the Unix epoch; -1 for now.
    pub run_at_ms: i64,
    /// Failed attempts allowed before the job is dead; default 20.
    pub max_attempts: u32,
    /// While a job of this kind with this key has not finished, enqueueing
    /// another returns it. NULL for none.
    pub unique_key: *const c_char,
    /// The unique key's length in bytes.
    pub unique_key_len: usize,
}

/// A dequeued attempt. Present `id` and `token` to finish it; free the
/// buffers with keel_job_free.
#[repr(C)]
#[derive(Debug)]
pub struct keel_job {
    pub id: u64,
    /// The attempt's token: finishing with any other is refused (KEEL_CONFLICT).
    pub token: u64,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The lease's end, in ms since the Unix epoch.
    pub lease_until_ms: u64,
    pub kind: keel_buf,
    /// The JSON payload.
    pub payload: keel_buf,
}

/// A worker's counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_worker_counters {
    pub completed: u64,
    pub failed: u64,
    pub panicked: u64,
    /// Finishes refused because the attempt was no longer current.
    pub refused: u64,
    pub released: u64,
    /// Attempts whose handler ran past the job timeout.
    pub timed_out: u64,
}

/// A job handler: runs on one of the worker's threads (several at once, up
/// to the kind's concurrency) with `userdata` and the attempt. Return
/// KEEL_OK to complete the job, with the JSON result (or nothing) given to
/// keel_job_ctx_set_output; any other status fails the attempt, with the
/// output as its message, retried after a backoff unless
/// keel_job_ctx_set_retryable(ctx, false) was called. It may call keel
/// functions, but not keel_worker_stop or keel_worker_free of its own worker.
pub type keel_job_handler_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, ctx: *mut keel_job_ctx) -> keel_status>;

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn op_state(state: u32) -> Result<OpState> {
    OpState::ALL
        .into_iter()
        .find(|candidate| *candidate as u32 == state)
        .ok_or_else(|| Error::invalid_argument(format!("state {state} is not a keel_op_state")))
}

// ---- operations ----------------------------------------------------------------------

/// Opens (creating if missing) the operations file at `path` into `*out`;
/// free it with keel_ops_free.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_open(path: *const c_char, path_len: usize, out: *mut *mut keel_ops) -> keel_status {
    ffi::call(|| {
        let out = unsafe { ffi::out_handle(out, "out")? };
        let path = unsafe { ffi::utf8(path, path_len, "path")? };
        out.put(keel_ops {
            inner: Operations::open(Path::new(path))?,
        });
        Ok(())
    })
}

/// Frees the handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_free(ops: *mut keel_ops) {
    unsafe { ffi::free_handle(ops) }
}

/// Makes each of `names[0..count]` READY for `item`.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_ready(
    ops: *const keel_ops,
    item: *const c_char,
    item_len: usize,
    names: *const keel_bytes,
    count: usize,
) -> keel_status {
    ffi::call(|| {
        let ops = unsafe { ffi::handle(ops, "ops")? };
        let item = unsafe { ffi::utf8(item, item_len, "item")? };
        let names = unsafe { self::ffi::utf8_list(names, count, "names")? };
        ops.inner.ready(item, &names).map(drop)
    })
}

/// Writes up to `limit` READY records of `op` (oldest first, not claimed) to
/// `*out` as a JSON array. Free `*out` with keel_buf_free.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_next(
    ops: *const keel_ops,
    op: *const c_char,
    op_len: usize,
    limit: usize,
    out: *mut keel_buf,
) -> keel_status {
    ffi::call(|| {
        let ops = unsafe { ffi::handle(ops, "ops")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        let op = unsafe { ffi::utf8(op, op_len, "op")? };
        let records = ops.inner.next(op, limit)?;
        *out = keel_buf::from_json(&records.iter().map(|record| record.to_json()).collect());
        Ok(())
    })
}

/// Claims up to `limit` READY (or lease-expired) records of `op` for
/// `worker` for `lease_ms`, atomically; each item goes to one claimer.
/// Writes a JSON array of `{"item", "op", "token", "lease_until",
/// "attempt"}` to `*out` (free with keel_buf_free).
#[no_mangle]
pub unsafe extern "C" fn keel_ops_claim(
    ops: *const keel_ops,
    op: *const c_char,
    op_len: usize,
    limit: usize,
    worker: *const c_char,
    worker_len: usize,
    lease_ms: u64,
    out: *mut keel_buf,
) -> keel_status {
    ffi::call(|| {
        let ops = unsafe { ffi::handle(ops, "ops")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        let op = unsafe { ffi::utf8(op, op_len, "op")? };
        let worker = unsafe { ffi::utf8(worker, worker_len, "worker")? };
        let claims = ops.inner.claim(op, limit, worker, ms(lease_ms))?;
        *out = keel_buf::from_json(&claims.iter().map(|claim| claim.to_json()).collect());
        Ok(())
    })
}

/// Sets `op` of `item` to `state` (a keel_op_state other than WORKING)
/// with `message`, and makes each of `enable[0..enable_count]` READY, all or
/// nothing. `token` is the claim's token, or 0 when holding no claim. A
/// stale token (or 0 while another holds a live claim) gives KEEL_CONFLICT
/// and changes nothing.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_update(
    ops: *const keel_ops,
    item: *const c_char,
    item_len: usize,
    op: *const c_char,
    op_len: usize,
    token: u64,
    state: u32,
    message: *const c_char,
    message_len: usize,
    enable: *const keel_bytes,
    enable_count: usize,
) -> keel_status {
    ffi::call(|| {
        let ops = unsafe { ffi::handle(ops, "ops")? };
        let item = unsafe { ffi::utf8(item, item_len, "item")? };
        let op = unsafe { ffi::utf8(op, op_len, "op")? };
        let message = unsafe { ffi::utf8(message, message_len, "message")? };
        let enable = unsafe { ffi::utf8_list(enable, enable_count, "enable")? };
        let token = (token != 0).then_some(token);
        ops.inner
            .update(item, op, token, op_state(state)?, message, &enable)
            .map(drop)
    })
}

/// Marks `op` of `item` FAILED with `message` (fenced like keel_ops_update).
#[no_mangle]
pub unsafe extern "C" fn keel_ops_error(
    ops: *const keel_ops,
    item: *const c_char,
    item_len: usize,
    op: *const c_char,
    op_len: usize,
    token: u64,
    message: *const c_char,
    message_len: usize,
) -> keel_status {
    unsafe {
        keel_ops_update(
            ops,
            item,
            item_len,
            op,
            op_len,
            token,
            keel_op_state::KEEL_OP_FAILED as u32,
            message,
            message_len,
            std::ptr::null(),
            0,
        )
    }
}

/// Writes every operation record of `item` to `*out` as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_states(
    ops: *const keel_ops,
    item: *const c_char,
    item_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    ffi::call(|| {
        let ops = unsafe { ffi::handle(ops, "ops")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        let item = unsafe { ffi::utf8(item, item_len, "item")? };
        let records = ops.inner.states(item)?;
        *out = keel_buf::from_json(&records.iter().map(|record| record.to_json()).collect());
        Ok(())
    })
}

// ---- queue ---------------------------------------------------------------------------

/// Opens (creating if missing) the job queue file at `path` into `*out`;
/// free it with keel_queue_free.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_open(
    path: *const c_char,
    path_len: usize,
    out: *mut *mut keel_queue,
) -> keel_status {
    ffi::call(|| {
        let out = unsafe { ffi::out_handle(out, "out")? };
        let path = unsafe { ffi::utf8(path, path_len, "path")? };
        out.put(keel_queue {
            inner: Queue::open(Path::new(path))?,
        });
        Ok(())
    })
}

/// Frees the handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_free(queue: *mut keel_queue) {
    unsafe { ffi::free_handle(queue) }
}

/// The default enqueue options: priority 5, now, 20 attempts, no unique key.
#[no_mangle]
pub extern "C" fn keel_enqueue_options_default() -> keel_enqueue_options {
    let defaults = EnqueueOptions::default();
    keel_enqueue_options {
        priority: defaults.priority,
        run_at_ms: -1,
        max_attempts: defaults.max_attempts,
        unique_key: std::ptr::null(),
        unique_key_len: 0,
    }
}

/// Enqueues a job of `kind` with a JSON `payload` (`options` NULL for the
/// defaults). Writes its id to `*out_id` and whether it was created (false:
/// a live job with the same unique key was returned) to `*out_created`
/// (either may be NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_enqueue(
    queue: *const keel_queue,
    kind: *const c_char,
    kind_len: usize,
    payload: *const c_char,
    payload_len: usize,
    options: *const keel_enqueue_options,
    out_id: *mut u64,
    out_created: *mut bool,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let kind = unsafe { ffi::utf8(kind, kind_len, "kind")? };
        let payload = unsafe { ffi::utf8(payload, payload_len, "payload")? };
        let given = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| keel_enqueue_options_default());
        let unique_key = unsafe { ffi::optional_utf8(given.unique_key, given.unique_key_len, "unique_key")? };
        let options = EnqueueOptions {
            priority: given.priority,
            run_at: u64::try_from(given.run_at_ms).ok(),
            max_attempts: given.max_attempts,
            unique_key: unique_key.map(str::to_owned),
        };
        let enqueued = queue.inner.enqueue(kind, payload, &options)?;
        if let Some(out) = unsafe { out_id.as_mut() } {
            *out = enqueued.job.id;
        }
        if let Some(out) = unsafe { out_created.as_mut() } {
            *out = enqueued.created;
        }
        Ok(())
    })
}

/// Claims the best ready job of `kinds[0..count]` for `worker` for
/// `lease_ms`. Writes it to `*out` and true to `*out_found`, or false to
/// `*out_found` (and nothing to `*out`) when none is ready. Free a written
/// job's buffers with keel_job_free.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_dequeue(
    queue: *const keel_queue,
    kinds: *const keel_bytes,
    count: usize,
    worker: *const c_char,
    worker_len: usize,
    lease_ms: u64,
    out: *mut keel_job,
    out_found: *mut bool,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        let found = unsafe { ffi::out_value(out_found, "out_found")? };
        let kinds = unsafe { ffi::utf8_list(kinds, count, "kinds")? };
        let worker = unsafe { ffi::utf8(worker, worker_len, "worker")? };
        *found = false;
        if let Some(job) = queue.inner.dequeue(&kinds, worker, ms(lease_ms))? {
            *out = keel_job {
                id: job.id,
                token: job.token,
                attempt: job.attempts,
                lease_until_ms: job.lease_until,
                kind: keel_buf::from_vec(job.kind.into_bytes()),
                payload: keel_buf::from_vec(job.payload.into_bytes()),
            };
            *found = true;
        }
        Ok(())
    })
}

/// Frees the buffers of a job written by keel_queue_dequeue. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_job_free(job: *mut keel_job) {
    ffi::call_void(|| {
        if let Some(job) = unsafe { job.as_mut() } {
            unsafe {
                crate::buf::keel_buf_free(&mut job.kind);
                crate::buf::keel_buf_free(&mut job.payload);
            }
        }
    });
}

/// Extends attempt `token` of job `id` to `lease_ms` from now
/// (KEEL_CONFLICT when the attempt is no longer current).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_heartbeat(
    queue: *const keel_queue,
    id: u64,
    token: u64,
    lease_ms: u64,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        queue.inner.heartbeat(id, token, ms(lease_ms)).map(drop)
    })
}

/// Completes attempt `token` of job `id` with a JSON `result` (or empty).
/// KEEL_CONFLICT when the attempt is no longer current.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_complete(
    queue: *const keel_queue,
    id: u64,
    token: u64,
    result: *const c_char,
    result_len: usize,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let result = unsafe { ffi::utf8(result, result_len, "result")? };
        queue.inner.complete(id, token, result).map(drop)
    })
}

/// Fails attempt `token` of job `id`: retried after a backoff when
/// `retryable` and attempts remain, dead otherwise.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_fail(
    queue: *const keel_queue,
    id: u64,
    token: u64,
    error: *const c_char,
    error_len: usize,
    retryable: bool,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let error = unsafe { ffi::utf8(error, error_len, "error")? };
        queue.inner.fail(id, token, error, retryable).map(drop)
    })
}

/// Cancels job `id` unless it has finished (KEEL_CONFLICT then).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_cancel(
    queue: *const keel_queue,
    id: u64,
    reason: *const c_char,
    reason_len: usize,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let reason = unsafe { ffi::utf8(reason, reason_len, "reason")? };
        queue.inner.cancel(id, reason).map(drop)
    })
}

/// Writes job `id` to `*out` as a JSON object (KEEL_NOT_FOUND if none).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_get(queue: *const keel_queue, id: u64, out: *mut keel_buf) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        *out = keel_buf::from_json(&queue.inner.get(id)?.to_json());
        Ok(())
    })
}

/// Writes `{"kind": {"state": count}}` to `*out` (read from counters, cheap).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_counts(queue: *const keel_queue, out: *mut keel_buf) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        *out = keel_buf::from_json(&counts_to_json(&queue.inner.counts()?));
        Ok(())
    })
}

/// Requeues jobs whose lease expired (dead past the max resets); writes the
/// numbers to `*out_requeued` and `*out_dead` (either may be NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_reset_expired(
    queue: *const keel_queue,
    out_requeued: *mut u64,
    out_dead: *mut u64,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let report = queue.inner.reset_expired()?;
        if let Some(out) = unsafe { out_requeued.as_mut() } {
            *out = report.requeued;
        }
        if let Some(out) = unsafe { out_dead.as_mut() } {
            *out = report.dead;
        }
        Ok(())
    })
}

/// Deletes finished jobs older than `retention_ms`; writes how many to
/// `*out_deleted` (may be NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_cleanup(
    queue: *const keel_queue,
    retention_ms: u64,
    out_deleted: *mut u64,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let deleted = queue.inner.cleanup(ms(retention_ms))?;
        if let Some(out) = unsafe { out_deleted.as_mut() } {
            *out = deleted;
        }
        Ok(())
    })
}

// ---- worker --------------------------------------------------------------------------

/// Starts building a worker on `queue` named `name` (NULL for a default),
/// with leases of `lease_ms` (0 for 30 s) and idle polls every `poll_ms`
/// (0 for 1 s). Free with keel_worker_builder_free unless started.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_new(
    queue: *const keel_queue,
    name: *const c_char,
    name_len: usize,
    lease_ms: u64,
    poll_ms: u64,
    out: *mut *mut keel_worker_builder,
) -> keel_status {
    ffi::call(|| {
        let queue = unsafe { ffi::handle(queue, "queue")? };
        let out = unsafe { ffi::out_handle(out, "out")? };
        let name = unsafe { ffi::optional_utf8(name, name_len, "name")? };
        let mut options = WorkerOptions::default();
        if let Some(name) = name {
            options.name = name.to_owned();
        }
        if lease_ms > 0 {
            options.lease = ms(lease_ms);
        }
        if poll_ms > 0 {
            options.poll_interval = ms(poll_ms);
        }
        out.put(keel_worker_builder {
            inner: Some(Worker::builder(&queue.inner).options(options)),
        });
        Ok(())
    })
}

/// Frees a builder that was not started. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_free(builder: *mut keel_worker_builder) {
    unsafe { ffi::free_handle(builder) }
}

fn with_builder(builder: *mut keel_worker_builder, change: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> Result<()> {
    // SAFETY: the header requires a live builder (or NULL).
    let builder = unsafe { builder.as_mut() }.ok_or_else(|| Error::invalid_argument("builder is NULL"))?;
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
    run: unsafe extern "C" fn(*mut c_void, *mut keel_job_ctx) -> keel_status,
    /// The C side's pointer, kept as a number: keel never dereferences it.
    userdata: usize,
}

impl CHandler {
    fn call(self, ctx: &JobContext) -> std::result::Result<String, HandlerError> {
        let mut c_ctx = keel_job_ctx {
            ctx,
            output: Vec::new(),
            retryable: true,
        };
        // SAFETY: the caller promised a callable handler and its userdata.
        let status = unsafe { (self.run)(self.userdata as *mut c_void, &mut c_ctx) };
        let text = String::from_utf8_lossy(&c_ctx.output).into_owned();
        if status == keel_status::KEEL_OK {
            return Ok(text);
        }
        let message = if text.is_empty() {
            format!("the handler returned status {}", status as u32)
        } else {
            text
        };
        Err(HandlerError {
            message,
            retryable: c_ctx.retryable,
        })
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
    ffi::call(|| {
        let kind = unsafe { ffi::utf8(kind, kind_len, "kind")? };
        let run = handler.ok_or_else(|| Error::invalid_argument("handler is NULL"))?;
        let handler = CHandler {
            run,
            userdata: userdata as usize,
        };
        with_builder(builder, |b| {
            b.shared_handler(kind, concurrency, Arc::new(move |ctx: &JobContext| handler.call(ctx)))
        })
    })
}

/// Fails any attempt whose handler runs longer than `timeout_ms` (retried
/// after a backoff); the handler's thread is abandoned, never killed, and its
/// late result is refused. 0 removes the limit (the default).
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_job_timeout(
    builder: *mut keel_worker_builder,
    timeout_ms: u64,
) -> keel_status {
    ffi::call(|| {
        with_builder(builder, |b| {
            b.map_options(|options| options.job_timeout = (timeout_ms > 0).then(|| ms(timeout_ms)))
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
    ffi::call(|| {
        let kinds = unsafe { ffi::utf8_list(kinds, count, "kinds")? };
        with_builder(builder, |b| b.allow(kinds))
    })
}

/// Never runs `kinds[0..count]`, even when allowed.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_builder_block(
    builder: *mut keel_worker_builder,
    kinds: *const keel_bytes,
    count: usize,
) -> keel_status {
    ffi::call(|| {
        let kinds = unsafe { ffi::utf8_list(kinds, count, "kinds")? };
        with_builder(builder, |b| b.block(kinds))
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
    ffi::call(|| {
        let out = unsafe { ffi::out_handle(out, "out")? };
        if builder.is_null() {
            return Err(Error::invalid_argument("builder is NULL"));
        }
        // SAFETY: made by keel_worker_builder_new; consumed here, once.
        let builder = unsafe { Box::from_raw(builder) };
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
    ffi::call(|| {
        // SAFETY: the header requires a live worker (or NULL).
        let worker = unsafe { worker.as_mut() }.ok_or_else(|| Error::invalid_argument("worker is NULL"))?;
        let report = worker.inner.stop(ms(deadline_ms));
        if let Some(out) = unsafe { out_released.as_mut() } {
            *out = report.released;
        }
        Ok(())
    })
}

/// Writes the worker's counters to `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_stats(worker: *const keel_worker, out: *mut keel_worker_counters) -> keel_status {
    ffi::call(|| {
        let worker = unsafe { ffi::handle(worker, "worker")? };
        let out = unsafe { ffi::out_value(out, "out")? };
        let stats = worker.inner.stats();
        *out = keel_worker_counters {
            completed: stats.completed,
            failed: stats.failed,
            panicked: stats.panicked,
            refused: stats.refused,
            released: stats.released,
            timed_out: stats.timed_out,
        };
        Ok(())
    })
}

/// Stops the worker with a zero deadline (running jobs are released at
/// once) and frees it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_worker_free(worker: *mut keel_worker) {
    unsafe { ffi::free_handle(worker) }
}

unsafe fn job_context<'a>(ctx: *const keel_job_ctx) -> Option<&'a JobContext> {
    // SAFETY: the header requires the context passed to the running handler,
    // whose JobContext outlives the call.
    unsafe { ctx.as_ref().and_then(|ctx| ctx.ctx.as_ref()) }
}

/// The job's id (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_id(ctx: *const keel_job_ctx) -> u64 {
    unsafe { job_context(ctx) }.map_or(0, |ctx| ctx.job().id)
}

/// Which attempt this is, 1 for the first (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_attempt(ctx: *const keel_job_ctx) -> u32 {
    unsafe { job_context(ctx) }.map_or(0, |ctx| ctx.job().attempts)
}

/// Points `*out_ptr`/`*out_len` at the JSON payload, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_payload(
    ctx: *const keel_job_ctx,
    out_ptr: *mut *const u8,
    out_len: *mut usize,
) -> keel_status {
    ffi::call(|| {
        let job = unsafe { job_context(ctx) }.ok_or_else(|| Error::invalid_argument("ctx is NULL"))?;
        let out_ptr = unsafe { ffi::out_value(out_ptr, "out_ptr")? };
        let out_len = unsafe { ffi::out_value(out_len, "out_len")? };
        *out_ptr = job.payload().as_ptr();
        *out_len = job.payload().len();
        Ok(())
    })
}

/// True once the handler should wrap up: the worker is stopping or this
/// attempt's lease was lost (its result will be refused). False for NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_should_stop(ctx: *const keel_job_ctx) -> bool {
    unsafe { job_context(ctx) }.is_some_and(JobContext::should_stop)
}

/// Sets the output (copied): the JSON result on KEEL_OK, the failure's
/// message otherwise.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_set_output(ctx: *mut keel_job_ctx, data: *const u8, len: usize) -> keel_status {
    ffi::call(|| {
        // SAFETY: the header requires the context passed to the running handler.
        let ctx = unsafe { ctx.as_mut() }.ok_or_else(|| Error::invalid_argument("ctx is NULL"))?;
        ctx.output = unsafe { ffi::bytes(data, len, "data")? }.to_vec();
        Ok(())
    })
}

/// Whether a failure (a non-OK return) is retried; true by default.
#[no_mangle]
pub unsafe extern "C" fn keel_job_ctx_set_retryable(ctx: *mut keel_job_ctx, retryable: bool) -> keel_status {
    ffi::call(|| {
        // SAFETY: as for keel_job_ctx_set_output.
        let ctx = unsafe { ctx.as_mut() }.ok_or_else(|| Error::invalid_argument("ctx is NULL"))?;
        ctx.retryable = retryable;
        Ok(())
    })
}

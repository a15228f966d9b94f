//! The durable job queue: `keel_queue`. Job records are handed to C as
//! JSON in a keel_buf; the hot path (dequeue, finish) uses plain numbers.

use std::ffi::c_char;

use keel_core::ops::{json::counts_to_json, EnqueueOptions, JobPolicy, JobState, Queue};
use keel_core::{Error, Result};

use crate::buf::keel_buf;
use crate::buf::keel_bytes;
use crate::ffi;
use crate::ffi::ms;
use crate::status::keel_status;

/// A durable job queue (see Queue in the Rust docs): priorities, run-at
/// times, unique keys, leases with attempt tokens, retries with backoff.
/// Every call is durable when it returns. Thread-safe.
pub struct keel_queue {
    pub(crate) inner: Queue,
}

/// Pass as `run_at_ms` to run a job as soon as possible.
pub const KEEL_RUN_NOW: i64 = -1;

/// How to enqueue a job; keel_enqueue_options_default gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_enqueue_options {
    /// 0 (runs first) to 9 (runs last); default 5.
    pub priority: u8,
    /// Not run before this time, in ms since the Unix epoch; KEEL_RUN_NOW
    /// (-1, the default) for now. Any other negative is KEEL_INVALID_ARGUMENT.
    pub run_at_ms: i64,
    /// Not run before this many ms from now, read on the queue's clock; -1
    /// for none. Give run_at_ms or delay_ms, not both.
    pub delay_ms: i64,
    /// Failed attempts allowed before the job is dead; default 20.
    pub max_attempts: u32,
    /// While a job of this kind with this key has not finished, enqueueing
    /// another returns it. NULL for none.
    pub unique_key: *const c_char,
    /// The unique key's length in bytes.
    pub unique_key_len: usize,
}

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

/// Opens the job queue at `location` into `*out` with `options` (NULL for
/// the defaults): a file path (LMDB, created if missing) or a
/// `postgresql://` URL (PostgreSQL, libpq conventions, the `keel` schema,
/// the database's clock; idle workers wake on jobs enqueued by any host).
/// An unknown scheme is KEEL_INVALID_ARGUMENT. Free it with keel_queue_free.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_open(
    location: *const c_char,
    location_len: usize,
    options: *const keel_queue_options,
    out: *mut *mut keel_queue,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let location = ffi::location(location, location_len)?;
        let options = ffi::optional(options)
            .copied()
            .unwrap_or_else(|| keel_queue_options_default());
        let policy = JobPolicy {
            max_resets: options.max_resets,
            ..JobPolicy::default()
        };
        out.put(keel_queue {
            inner: Queue::open_at(&location, policy)?,
        });
        Ok(())
    })
}

/// Frees the handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_free(queue: *mut keel_queue) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(queue) })
}

/// The default enqueue options: priority 5, now, 20 attempts, no unique key.
#[no_mangle]
pub extern "C" fn keel_enqueue_options_default() -> keel_enqueue_options {
    ffi::call_value(|| {
        let defaults = EnqueueOptions::default();
        keel_enqueue_options {
            priority: defaults.priority,
            run_at_ms: KEEL_RUN_NOW,
            delay_ms: -1,
            max_attempts: defaults.max_attempts,
            unique_key: std::ptr::null(),
            unique_key_len: 0,
        }
    })
}

impl ffi::PanicValue for keel_enqueue_options {
    fn on_panic() -> Self {
        // Not reached (making the defaults cannot panic); a job that would
        // never run rather than a guess at the defaults.
        keel_enqueue_options {
            priority: 9,
            run_at_ms: i64::MAX,
            delay_ms: -1,
            max_attempts: 0,
            unique_key: std::ptr::null(),
            unique_key_len: 0,
        }
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let kind = ffi::utf8(kind, kind_len, "kind")?;
        let payload = ffi::utf8(payload, payload_len, "payload")?;
        let given = ffi::optional(options)
            .copied()
            .unwrap_or_else(|| keel_enqueue_options_default());
        let options = enqueue_options(&given)?;
        let enqueued = queue.inner.enqueue(kind, payload, &options)?;
        ffi::put_optional(out_id, enqueued.job.id);
        ffi::put_optional(out_created, enqueued.created);
        Ok(())
    })
}

/// The core's options from C's; -1 (none) is the only negative time.
unsafe fn enqueue_options(given: &keel_enqueue_options) -> Result<EnqueueOptions> {
    // SAFETY: the caller keeps keel.h's contract for the unique key.
    let unique_key = unsafe { ffi::optional_utf8(given.unique_key, given.unique_key_len, "unique_key")? };
    Ok(EnqueueOptions {
        priority: given.priority,
        run_at: ffi::time_ms(given.run_at_ms, "run_at_ms")?,
        delay: ffi::timeout_ms(given.delay_ms, "delay_ms")?,
        max_attempts: given.max_attempts,
        unique_key: unique_key.map(str::to_owned),
    })
}

/// One job of keel_queue_enqueue_many.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_job_spec {
    pub kind: *const c_char,
    pub kind_len: usize,
    /// The JSON payload.
    pub payload: *const c_char,
    pub payload_len: usize,
    /// Start from keel_enqueue_options_default().
    pub options: keel_enqueue_options,
}

/// Enqueues `jobs[0..count]` in one transaction (one commit, all or
/// nothing), in order. Writes each job's id to `out_ids[i]` and whether it
/// was created to `out_created[i]` (arrays of `count`; either may be NULL).
/// A job whose unique key an earlier one of the batch took gets that id.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_enqueue_many(
    queue: *const keel_queue,
    jobs: *const keel_job_spec,
    count: usize,
    out_ids: *mut u64,
    out_created: *mut bool,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let specs = ffi::slice(jobs, count, "jobs")?;
        let mut batch = Vec::with_capacity(specs.len());
        for spec in specs {
            let kind = ffi::utf8(spec.kind, spec.kind_len, "kind")?;
            let payload = ffi::utf8(spec.payload, spec.payload_len, "payload")?;
            batch.push((kind, payload, enqueue_options(&spec.options)?));
        }
        let mut ids = if out_ids.is_null() {
            None
        } else {
            Some(ffi::slice_mut(out_ids, count, "out_ids")?)
        };
        let mut created = if out_created.is_null() {
            None
        } else {
            Some(ffi::slice_mut(out_created, count, "out_created")?)
        };
        let enqueued = queue.inner.enqueue_many(&batch)?;
        for (i, entry) in enqueued.iter().enumerate() {
            if let Some(ids) = ids.as_deref_mut() {
                ids[i] = entry.job.id;
            }
            if let Some(created) = created.as_deref_mut() {
                created[i] = entry.created;
            }
        }
        Ok(())
    })
}

/// How a queue retries and resets its jobs; keel_queue_options_default
/// gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_queue_options {
    /// How many lease expiries a job survives; the next one makes it dead
    /// ("its processor kept dying"). Default 5.
    pub max_resets: u32,
}

/// The default queue options: 5 resets.
#[no_mangle]
pub extern "C" fn keel_queue_options_default() -> keel_queue_options {
    ffi::call_value(|| keel_queue_options {
        max_resets: JobPolicy::default().max_resets,
    })
}

impl ffi::PanicValue for keel_queue_options {
    fn on_panic() -> Self {
        keel_queue_options { max_resets: 0 }
    }
}

/// Hands attempt `token` of job `id` back unfinished: queued again at once,
/// no failure counted (KEEL_CONFLICT when the attempt is no longer current).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_release(queue: *const keel_queue, id: u64, token: u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle(queue, "queue")?.inner.release(id, token).map(drop) })
}

/// Queues dead or cancelled job `id` again with fresh attempts
/// (KEEL_CONFLICT for any other state).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_retry(queue: *const keel_queue, id: u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle(queue, "queue")?.inner.retry(id).map(drop) })
}

/// Writes a JSON array of the jobs of `kind` to `*out`, oldest first, at
/// most `limit`: in the state named by `state` ("queued", "running",
/// "retrying", "completed", "dead", "cancelled"), or in any when `state` is
/// NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_list(
    queue: *const keel_queue,
    kind: *const c_char,
    kind_len: usize,
    state: *const c_char,
    state_len: usize,
    limit: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let out = ffi::out_value(out, "out")?;
        let kind = ffi::utf8(kind, kind_len, "kind")?;
        let state = ffi::optional_utf8(state, state_len, "state")?
            .map(str::parse::<JobState>)
            .transpose()?;
        if limit == 0 {
            return Err(Error::invalid_argument("limit: must be at least 1"));
        }
        let jobs = queue.inner.list(kind, state, limit)?;
        *out = keel_buf::from_json(&jobs.iter().map(|job| job.to_json()).collect());
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let out = ffi::out_value(out, "out")?;
        let found = ffi::out_value(out_found, "out_found")?;
        let kinds = ffi::utf8_list(kinds, count, "kinds")?;
        let worker = ffi::utf8(worker, worker_len, "worker")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe {
        if let Some(job) = ffi::optional_mut(job) {
            job.kind.release();
            job.payload.release();
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let result = ffi::utf8(result, result_len, "result")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let error = ffi::utf8(error, error_len, "error")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let reason = ffi::utf8(reason, reason_len, "reason")?;
        queue.inner.cancel(id, reason).map(drop)
    })
}

/// Writes job `id` to `*out` as a JSON object (KEEL_NOT_FOUND if none).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_get(queue: *const keel_queue, id: u64, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&queue.inner.get(id)?.to_json());
        Ok(())
    })
}

/// Writes `{"kind": {"state": count}}` to `*out` (read from counters, cheap).
#[no_mangle]
pub unsafe extern "C" fn keel_queue_counts(queue: *const keel_queue, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let out = ffi::out_value(out, "out")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let report = queue.inner.reset_expired()?;
        ffi::put_optional(out_requeued, report.requeued);
        ffi::put_optional(out_dead, report.dead);
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let queue = ffi::handle(queue, "queue")?;
        let deleted = queue.inner.cleanup(ms(retention_ms))?;
        ffi::put_optional(out_deleted, deleted);
        Ok(())
    })
}

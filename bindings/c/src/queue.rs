//! The durable job queue: `keel_queue`. Job records are handed to C as
//! JSON in a keel_buf; the hot path (dequeue, finish) uses plain numbers.

use std::ffi::c_char;
use std::path::Path;

use keel_core::location::Location;
use keel_core::ops::{json::counts_to_json, EnqueueOptions, JobPolicy, Queue};

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

/// Opens (creating if missing) the job queue file at `path` into `*out`;
/// free it with keel_queue_free.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_open(
    path: *const c_char,
    path_len: usize,
    out: *mut *mut keel_queue,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let path = ffi::utf8(path, path_len, "path")?;
        out.put(keel_queue {
            inner: Queue::open_at(&Location::Path(Path::new(path).to_owned()), JobPolicy::default())?,
        });
        Ok(())
    })
}

/// Opens the job queue at `location` into `*out`: a `postgresql://` URL
/// (PostgreSQL, libpq conventions, the `keel` schema, the database's
/// clock; idle workers wake on jobs enqueued by any host) or a file path.
/// An unknown scheme is KEEL_INVALID_ARGUMENT. Free it with keel_queue_free.
#[no_mangle]
pub unsafe extern "C" fn keel_queue_open_url(
    location: *const c_char,
    location_len: usize,
    out: *mut *mut keel_queue,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let location = ffi::utf8(location, location_len, "location")?;
        out.put(keel_queue {
            inner: Queue::open_at(&Location::parse(location)?, JobPolicy::default())?,
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
            run_at_ms: -1,
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
        let unique_key = ffi::optional_utf8(given.unique_key, given.unique_key_len, "unique_key")?;
        let options = EnqueueOptions {
            priority: given.priority,
            run_at: u64::try_from(given.run_at_ms).ok(),
            max_attempts: given.max_attempts,
            unique_key: unique_key.map(str::to_owned),
        };
        let enqueued = queue.inner.enqueue(kind, payload, &options)?;
        ffi::put_optional(out_id, enqueued.job.id);
        ffi::put_optional(out_created, enqueued.created);
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

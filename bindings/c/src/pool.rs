//! The bounded sync pool: `keel_pool`, tasks as a function pointer plus
//! `void *userdata`, outcomes as statuses plus output buffers.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use keel_core::pool::{
    BatchOptions, FailureBackoff, Outcome, PipelineOptions, PoolConfig, SyncPool, Task, TaskContext,
};
use keel_core::Error;

use crate::buf::keel_buf;
use crate::callback::{self, Output, Userdata};
use crate::ffi;
use crate::status::keel_status;
use keel_core::pool::PoolStats;

/// A bounded pool for keyed, blocking tasks (see SyncPool in the Rust docs):
/// at most `max_concurrency` tasks at once across all its batches, tasks of one key never at the
/// same time, a task past its timeout reported at once while its thread is
/// abandoned (never killed), and keel_pool_shutdown that never waits for a
/// thread. Thread-safe: several threads may run batches on one pool.
pub struct keel_pool {
    inner: SyncPool<Vec<u8>>,
}

/// What a running task may ask keel: its index, whether it is the first of
/// its key, whether it should stop; and where it puts its output. Valid only
/// during the call it was passed to; never free it.
pub struct keel_task_ctx {
    ctx: Option<*const TaskContext>,
    index: usize,
    output: Output,
}

/// A task: runs on one of the pool's threads with `userdata` and a context.
///
/// Return KEEL_OK (0) for success; the bytes given to
/// keel_task_ctx_set_output are the task's output. Any other keel_status is
/// a failure of that kind, and the bytes given to keel_task_ctx_set_output
/// are its message; a number that is no keel_status is reported as
/// KEEL_INVALID_ARGUMENT.
///
/// Called on a pool thread, never on the thread that called keel_pool_run;
/// tasks of distinct keys run at the same time on several threads. It may
/// call keel functions, except a batch on its own pool: that batch's tasks
/// are refused with KEEL_WOULD_DEADLOCK (use a second pool). A task that
/// never returns is reported
/// KEEL_OUTCOME_TIMED_OUT after the timeout, and its thread (with its
/// userdata) stays in use until it does return.
pub type keel_task_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, ctx: *mut keel_task_ctx) -> i32>;

/// Commits one prepared item (keel_pool_pipeline): `prepared` is the output
/// of its prepare task. Called on the thread that called
/// keel_pool_pipeline, one item at a time, in input order. Its output and
/// status work as for keel_task_fn.
pub type keel_commit_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        index: usize,
        prepared: *const u8,
        prepared_len: usize,
        ctx: *mut keel_task_ctx,
    ) -> i32,
>;

/// One task of a batch: its key (`key_len` bytes; tasks of one key never
/// run at the same time) and its function with its userdata.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_task {
    /// The key's first byte (may be NULL when key_len is 0).
    pub key: *const u8,
    /// The key's length.
    pub key_len: usize,
    /// The function to run; NULL is KEEL_INVALID_ARGUMENT for the whole batch.
    pub run: keel_task_fn,
    /// Handed to `run`; keel never reads it.
    pub userdata: *mut c_void,
}

/// How a task ended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum keel_outcome_kind {
    /// It returned KEEL_OK; `output` holds its output.
    KEEL_OUTCOME_VALUE = 0,
    /// It returned a failure; `status` and `message` say which.
    KEEL_OUTCOME_ERROR = 1,
    /// keel caught a panic (of a keel call it made); `message` says what.
    KEEL_OUTCOME_PANICKED = 2,
    /// It ran past its timeout; its thread was abandoned.
    KEEL_OUTCOME_TIMED_OUT = 3,
    /// The batch stopped (keel_pool_shutdown) before it finished.
    KEEL_OUTCOME_CANCELLED = 4,
    /// Not started: the pool is at its abandoned-thread cap, its key is busy
    /// with a timed-out run, or the pool is shut down.
    KEEL_OUTCOME_REFUSED = 5,
    /// Not started: its key failed too often lately and is paused by the
    /// pool's failure backoff; `retry_in_ms` says for how long (KEEL_BUSY).
    KEEL_OUTCOME_SKIPPED = 6,
}

/// One task's outcome. Free the buffers of a whole array with keel_outcomes_free.
#[repr(C)]
#[derive(Debug)]
pub struct keel_outcome {
    /// How it ended.
    pub kind: keel_outcome_kind,
    /// KEEL_OK for a value; otherwise the failure's status (KEEL_TIMEOUT,
    /// KEEL_CANCELLED, KEEL_PANIC, KEEL_BUSY or KEEL_CLOSED for a refusal, or
    /// the status the task returned).
    pub status: keel_status,
    /// The output of a task that returned KEEL_OK.
    pub output: keel_buf,
    /// What went wrong, as text; empty for a value.
    pub message: keel_buf,
    /// For KEEL_OUTCOME_SKIPPED: milliseconds before its key may run again;
    /// 0 otherwise.
    pub retry_in_ms: i64,
}

/// Pass as `timeout_ms` to keel_pool_run for the pool's own timeout.
pub const KEEL_POOL_TIMEOUT_DEFAULT: i64 = -2;
/// Pass as a timeout for no timeout at all.
pub const KEEL_POOL_NO_TIMEOUT: i64 = -1;
/// keel_pool_run flag: only the first task of each key runs; the others get
/// a copy of its outcome.
pub const KEEL_POOL_SINGLEFLIGHT: u32 = 1;
/// keel_pool_run flag: ignore the keys; nothing is serialized but the limit.
pub const KEEL_POOL_UNKEYED: u32 = 2;
/// keel_pool_run flag: run the tasks of keys paused by the failure backoff
/// anyway (an explicit retry); their outcomes still count.
pub const KEEL_POOL_BYPASS_BACKOFF: u32 = 4;

/// How a pool is made (keel_pool_new). Start from
/// keel_pool_options_default() and set what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_pool_options {
    /// At most this many tasks at once; 0 means 1, above 65536 is
    /// KEEL_INVALID_ARGUMENT. Default 10.
    pub max_concurrency: usize,
    /// Each task's timeout in ms; KEEL_POOL_NO_TIMEOUT (the default) for none.
    pub timeout_ms: i64,
    /// While this many abandoned threads live, new tasks are refused; 0
    /// means no cap. Default 64.
    pub max_abandoned: usize,
    /// Per-key failure backoff: after n consecutive failures of a key, its
    /// tasks are skipped (KEEL_OUTCOME_SKIPPED) for
    /// backoff_base_ms * 2^(n-1), at most backoff_max_ms. 0 (the default)
    /// turns it off; negative values are KEEL_INVALID_ARGUMENT.
    pub backoff_base_ms: i64,
    /// The longest backoff pause in ms (at least backoff_base_ms).
    pub backoff_max_ms: i64,
}

/// The default pool options: 10 at a time, no timeout, at most 64
/// abandoned threads, no failure backoff.
#[no_mangle]
pub extern "C" fn keel_pool_options_default() -> keel_pool_options {
    ffi::call_value(|| keel_pool_options {
        max_concurrency: 10,
        timeout_ms: KEEL_POOL_NO_TIMEOUT,
        max_abandoned: PoolConfig::DEFAULT_MAX_ABANDONED,
        backoff_base_ms: 0,
        backoff_max_ms: 0,
    })
}

fn default_options() -> keel_pool_options {
    keel_pool_options_default()
}

/// Not reached (making the defaults cannot panic): a pool that refuses
/// every task rather than a guess at the defaults.
impl ffi::PanicValue for keel_pool_options {
    fn on_panic() -> Self {
        keel_pool_options {
            max_concurrency: 1,
            timeout_ms: 0,
            max_abandoned: 1,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
        }
    }
}

/// The core's configuration for `options`, every number checked.
fn pool_config(options: &keel_pool_options, name: Option<&str>) -> keel_core::Result<PoolConfig> {
    // Out of range is an error, never clamped ((size_t)-5 included).
    let as_number = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut config = PoolConfig::checked(as_number(options.max_concurrency), as_number(options.max_abandoned))?;
    if let Some(timeout) = ffi::timeout_ms(options.timeout_ms, "timeout_ms")? {
        config = config.with_task_timeout(timeout);
    }
    let non_negative = |ms: i64, what: &str| {
        u64::try_from(ms)
            .map(ffi::ms)
            .map_err(|_| Error::invalid_argument(format!("{what} {ms} is negative")))
    };
    let base = non_negative(options.backoff_base_ms, "backoff_base_ms")?;
    let max = non_negative(options.backoff_max_ms, "backoff_max_ms")?;
    if !base.is_zero() {
        config = config.with_failure_backoff(FailureBackoff::new(base, max));
    }
    if let Some(name) = name {
        config = config.with_name(name);
    }
    Ok(config)
}

/// Makes a pool from `options` (NULL: the defaults) in `*out`; free it with
/// keel_pool_free. `name` (UTF-8, NULL for none) names the pool in
/// keel_stats_json and events.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_new(
    options: *const keel_pool_options,
    name: *const c_char,
    name_len: usize,
    out: *mut *mut keel_pool,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let name = ffi::optional_utf8(name, name_len, "name")?;
        let options = ffi::optional(options).copied().unwrap_or_else(default_options);
        out.put(keel_pool {
            inner: SyncPool::new(pool_config(&options, name)?),
        });
        Ok(())
    })
}

/// Shuts the pool down (as keel_pool_shutdown) and frees it. Returns at
/// once: hung task threads are never joined. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_free(pool: *mut keel_pool) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(pool) })
}

/// Stops the pool: running keel_pool_run calls return at once (their running
/// tasks reported KEEL_OUTCOME_CANCELLED, their threads abandoned), and later
/// calls refuse every task with KEEL_CLOSED. Never waits for a thread.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_shutdown(pool: *const keel_pool) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        ffi::handle(pool, "pool")?.inner.shutdown();
        Ok(())
    })
}

/// A C task: its function and userdata, carried to a pool thread.
#[derive(Clone, Copy)]
struct CTask {
    run: unsafe extern "C" fn(*mut c_void, *mut keel_task_ctx) -> i32,
    userdata: Userdata,
}

impl CTask {
    fn call(self, ctx: &TaskContext) -> keel_core::Result<Vec<u8>> {
        let mut c_ctx = keel_task_ctx {
            ctx: Some(ctx),
            index: ctx.index(),
            output: Output::default(),
        };
        // SAFETY: the caller of keel_pool_run promised a callable function
        // and a userdata it accepts, for the length of the call.
        let status = unsafe { (self.run)(self.userdata.as_ptr(), &mut c_ctx) };
        callback::outcome(status, c_ctx.output, || format!("task {}", ctx.index()))
    }
}

unsafe fn c_tasks(tasks: *const keel_task, count: usize) -> keel_core::Result<Vec<(Vec<u8>, CTask)>> {
    // SAFETY: passed on from the export, whose caller keeps keel.h's contract.
    let tasks = unsafe { ffi::slice(tasks, count, "tasks")? };
    tasks
        .iter()
        .enumerate()
        .map(|(i, task)| {
            // SAFETY: each keel_task follows the header's (ptr, len) contract.
            let key = unsafe { ffi::bytes(task.key, task.key_len, &format!("tasks[{i}].key"))? };
            let run = task
                .run
                .ok_or_else(|| Error::invalid_argument(format!("tasks[{i}].run is NULL")))?;
            let userdata = Userdata::new(task.userdata);
            Ok((key.to_vec(), CTask { run, userdata }))
        })
        .collect()
}

/// Writes task `index`'s outcome: its kind, and for a non-value the status
/// and message of the core's error for it (`Outcome::into_result`), so C
/// reads the same error every surface reports.
fn write_outcome(slot: &mut keel_outcome, index: usize, outcome: Outcome<Vec<u8>>) {
    use keel_outcome_kind::*;
    let kind = match &outcome {
        Outcome::Value(_) => KEEL_OUTCOME_VALUE,
        Outcome::Error(_) => KEEL_OUTCOME_ERROR,
        Outcome::Panicked(_) => KEEL_OUTCOME_PANICKED,
        Outcome::TimedOut => KEEL_OUTCOME_TIMED_OUT,
        Outcome::Cancelled => KEEL_OUTCOME_CANCELLED,
        Outcome::Refused(_) => KEEL_OUTCOME_REFUSED,
        Outcome::Skipped { .. } => KEEL_OUTCOME_SKIPPED,
    };
    let retry_in_ms = match &outcome {
        Outcome::Skipped { retry_in, .. } => i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
        _ => 0,
    };
    let (status, output, message) = match outcome.into_result(index) {
        Ok(output) => (keel_status::KEEL_OK, output, String::new()),
        Err(err) => (keel_status::of(err.kind()), Vec::new(), err.report().to_string()),
    };
    *slot = keel_outcome {
        kind,
        status,
        output: keel_buf::from_vec(output),
        message: keel_buf::from_vec(message.into_bytes()),
        retry_in_ms,
    };
}

/// Runs `tasks[0..count]` on the pool and writes one outcome per task, in
/// input order, to `outcomes[0..count]` (room provided by the caller; free
/// the buffers with keel_outcomes_free).
///
/// Blocks the calling thread until every task is decided; the tasks run on
/// pool threads. `flags` combines KEEL_POOL_SINGLEFLIGHT and
/// KEEL_POOL_UNKEYED. `timeout_ms` overrides the pool's timeout for this
/// batch (KEEL_POOL_TIMEOUT_DEFAULT keeps it, KEEL_POOL_NO_TIMEOUT removes it).
/// A failing task never stops the others: the call itself returns KEEL_OK
/// and each outcome says how its task ended.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_run(
    pool: *const keel_pool,
    tasks: *const keel_task,
    count: usize,
    flags: u32,
    timeout_ms: i64,
    outcomes: *mut keel_outcome,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let pool = ffi::handle(pool, "pool")?;
        let slots = ffi::slice_mut(outcomes, count, "outcomes")?;
        let tasks = c_tasks(tasks, count)?;
        if flags & !(KEEL_POOL_SINGLEFLIGHT | KEEL_POOL_UNKEYED | KEEL_POOL_BYPASS_BACKOFF) != 0 {
            return Err(Error::invalid_argument(format!("flags {flags:#x} has unknown bits")));
        }
        let mut options = BatchOptions::new().bypass_backoff(flags & KEEL_POOL_BYPASS_BACKOFF != 0);
        if timeout_ms != KEEL_POOL_TIMEOUT_DEFAULT {
            options = options.timeout(ffi::timeout_ms(timeout_ms, "timeout_ms")?);
        }
        let results = if flags & KEEL_POOL_UNKEYED != 0 {
            let runs = tasks
                .into_iter()
                .map(|(_, task)| move |ctx: &TaskContext| task.call(ctx));
            pool.inner.run_unkeyed(runs, options)
        } else {
            let tasks = tasks
                .into_iter()
                .map(|(key, task)| Task::new(key, move |ctx: &TaskContext| task.call(ctx)));
            if flags & KEEL_POOL_SINGLEFLIGHT != 0 {
                pool.inner.run_singleflight(tasks, options)
            } else {
                pool.inner.run_batch_with(tasks, options)
            }
        };
        for (index, (slot, outcome)) in slots.iter_mut().zip(results).enumerate() {
            write_outcome(slot, index, outcome);
        }
        Ok(())
    })
}

/// Prepares every item on the pool, in parallel (`items[i].run`; keys are
/// ignored), and commits each with `commit` on the calling thread, one at a
/// time, in input order, as soon as it is prepared and the item before it is
/// committed. At most `window` items (0: twice the pool's concurrency) are
/// prepared but not committed. Writes one outcome per item to
/// `outcomes[0..count]`: the commit's output, or why the item was not
/// committed. With `stop_at_first_commit_failure`, items after a failed
/// commit are KEEL_OUTCOME_CANCELLED.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_pipeline(
    pool: *const keel_pool,
    items: *const keel_task,
    count: usize,
    commit: keel_commit_fn,
    commit_userdata: *mut c_void,
    window: usize,
    stop_at_first_commit_failure: bool,
    outcomes: *mut keel_outcome,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let pool = ffi::handle(pool, "pool")?;
        let slots = ffi::slice_mut(outcomes, count, "outcomes")?;
        let items = c_tasks(items, count)?;
        let commit = commit.ok_or_else(|| Error::invalid_argument("commit is NULL"))?;
        let mut options = PipelineOptions::new().stop_at_first_commit_failure(stop_at_first_commit_failure);
        if window > 0 {
            options = options.window(window);
        }
        let commit_userdata = Userdata::new(commit_userdata);
        let results = pool.inner.pipeline(
            items.into_iter().map(|(_, task)| task),
            |task: CTask, ctx: &TaskContext| task.call(ctx),
            |index, prepared: Vec<u8>| {
                let mut c_ctx = keel_task_ctx {
                    ctx: None,
                    index,
                    output: Output::default(),
                };
                let status = commit(
                    commit_userdata.as_ptr(),
                    index,
                    prepared.as_ptr(),
                    prepared.len(),
                    &mut c_ctx,
                );
                callback::outcome(status, c_ctx.output, || format!("commit of item {index}"))
            },
            options,
        );
        for (index, (slot, outcome)) in slots.iter_mut().zip(results).enumerate() {
            write_outcome(slot, index, outcome);
        }
        Ok(())
    })
}

/// Frees the buffers of `outcomes[0..count]` (not the array itself, which
/// belongs to the caller) and zeroes them. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_outcomes_free(outcomes: *mut keel_outcome, count: usize) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe {
        // NULL (with any count) is a no-op, as for every _free.
        let slots = ffi::slice_mut(outcomes, if outcomes.is_null() { 0 } else { count }, "outcomes");
        for slot in slots.unwrap_or_default() {
            slot.output.release();
            slot.message.release();
        }
    });
}

/// Writes the pool's counters to `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_pool_get_stats(pool: *const keel_pool, out: *mut PoolStats) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let pool = ffi::handle(pool, "pool")?;
        let out = ffi::out_value(out, "out")?;
        *out = pool.inner.stats();
        Ok(())
    })
}

fn with_task_context<R>(ctx: &keel_task_ctx, body: impl FnOnce(&TaskContext) -> R) -> Option<R> {
    // SAFETY: set only while the task runs, which is when C may call us.
    ctx.ctx.map(|task| body(unsafe { &*task }))
}

/// The task's index in its batch (or the item's, for a commit). 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_index(ctx: *const keel_task_ctx) -> usize {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe { ffi::optional(ctx).map_or(0, |ctx| ctx.index) })
}

/// True for the first task of its key in its batch (OPAL's one forced fetch
/// per source); the others run after it has finished. False for NULL.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_is_first_of_key(ctx: *const keel_task_ctx) -> bool {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe {
        ffi::optional(ctx)
            .and_then(|ctx| with_task_context(ctx, TaskContext::is_first_of_key))
            .unwrap_or(false)
    })
}

/// True once the task should stop: it timed out, or the pool shut down.
/// Threads are never killed: a task that checks this can stop early.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_is_cancelled(ctx: *const keel_task_ctx) -> bool {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe {
        ffi::optional(ctx)
            .and_then(|ctx| with_task_context(ctx, TaskContext::is_cancelled))
            .unwrap_or(false)
    })
}

/// Milliseconds left before the task's deadline (0 once past it), or -1
/// when it has none.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_remaining_ms(ctx: *const keel_task_ctx) -> i64 {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_value(|| unsafe {
        ffi::optional(ctx)
            .and_then(|ctx| with_task_context(ctx, TaskContext::remaining).flatten())
            .map_or(-1, |left| i64::try_from(left.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Sleeps up to `ms` milliseconds, waking early when the task is cancelled.
/// Returns KEEL_OK, or KEEL_CANCELLED / KEEL_TIMEOUT when the task should stop.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_sleep_ms(ctx: *const keel_task_ctx, ms: u64) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ctx = ffi::handle(ctx, "ctx")?;
        match with_task_context(ctx, |task| task.sleep(Duration::from_millis(ms))) {
            Some(result) => result,
            None => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            }
        }
    })
}

/// Sets the task's output (copied): its value on KEEL_OK, its message otherwise.
#[no_mangle]
pub unsafe extern "C" fn keel_task_ctx_set_output(ctx: *mut keel_task_ctx, data: *const u8, len: usize) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe { ffi::handle_mut(ctx, "ctx")?.output.set(data, len) })
}

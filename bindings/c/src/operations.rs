//! Per-item operation states: `keel_ops`. Records are handed to C as JSON
//! in a keel_buf.

use std::ffi::c_char;

use keel_core::ops::{NextOrder, OpPolicy, OpState, Operations};
use keel_core::{Error, Result};

use crate::buf::keel_buf;
use crate::buf::keel_bytes;
use crate::ffi;
use crate::ffi::ms;
use crate::status::keel_status;

/// Per-item operation states (see Operations in the Rust docs): a record
/// per (item, operation) in READY, WORKING, OK or FAILED, claimed with a
/// lease and a token. Every call is durable when it returns. Thread-safe.
pub struct keel_ops {
    inner: Operations,
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

fn op_state(state: u32) -> Result<OpState> {
    OpState::ALL
        .into_iter()
        .find(|candidate| *candidate as u32 == state)
        .ok_or_else(|| Error::invalid_argument(format!("state {state} is not a keel_op_state")))
}

/// How operations count lapsed claims; keel_ops_options_default gives the
/// defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_ops_options {
    /// How many lapsed claims in a row (a lease that ended without an
    /// update) a record survives; the next one makes it FAILED. Default 5.
    pub max_lapses: u32,
}

/// The default operations options: 5 lapses.
#[no_mangle]
pub extern "C" fn keel_ops_options_default() -> keel_ops_options {
    ffi::call_value(|| keel_ops_options {
        max_lapses: OpPolicy::default().max_lapses,
    })
}

impl ffi::PanicValue for keel_ops_options {
    fn on_panic() -> Self {
        keel_ops_options { max_lapses: 0 }
    }
}

/// Pass as `order` to keel_ops_next_in: oldest first, the order claims take
/// (the default of keel_ops_next).
pub const KEEL_NEXT_OLDEST: u32 = 0;
/// Pass as `order` to keel_ops_next_in: by item key.
pub const KEEL_NEXT_ITEM: u32 = 1;

/// keel_ops_next in `order` (KEEL_NEXT_OLDEST or KEEL_NEXT_ITEM).
#[no_mangle]
pub unsafe extern "C" fn keel_ops_next_in(
    ops: *const keel_ops,
    op: *const c_char,
    op_len: usize,
    limit: usize,
    order: u32,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let out = ffi::out_value(out, "out")?;
        let op = ffi::utf8(op, op_len, "op")?;
        let order = match order {
            KEEL_NEXT_OLDEST => NextOrder::Oldest,
            KEEL_NEXT_ITEM => NextOrder::Item,
            other => {
                return Err(Error::invalid_argument(format!(
                    "order {other}: not a KEEL_NEXT_ value"
                )))
            }
        };
        let records = ops.inner.next_in(op, limit, order)?;
        *out = keel_buf::from_json(&records.iter().map(|record| record.to_json()).collect());
        Ok(())
    })
}

/// The reset pass: WORKING records whose lease ended become READY again
/// (FAILED past max_lapses); writes the numbers to `*out_ready` and
/// `*out_failed` (either may be NULL).
#[no_mangle]
pub unsafe extern "C" fn keel_ops_reset_expired(
    ops: *const keel_ops,
    out_ready: *mut u64,
    out_failed: *mut u64,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let report = ffi::handle(ops, "ops")?.inner.reset_expired()?;
        ffi::put_optional(out_ready, report.ready);
        ffi::put_optional(out_failed, report.failed);
        Ok(())
    })
}

/// Opens the operations at `location` into `*out` with `options` (NULL
/// for the defaults): a file path (LMDB, created if missing) or a
/// `postgresql://` URL (PostgreSQL, libpq conventions, the `keel` schema,
/// the database's clock). An unknown scheme is KEEL_INVALID_ARGUMENT. Free
/// it with keel_ops_free.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_open(
    location: *const c_char,
    location_len: usize,
    options: *const keel_ops_options,
    out: *mut *mut keel_ops,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let location = ffi::location(location, location_len)?;
        let options = ffi::optional(options)
            .copied()
            .unwrap_or_else(|| keel_ops_options_default());
        let policy = OpPolicy {
            max_lapses: options.max_lapses,
        };
        out.put(keel_ops {
            inner: Operations::open_at(&location)?.with_policy(policy),
        });
        Ok(())
    })
}

/// Frees the handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_free(ops: *mut keel_ops) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(ops) })
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let item = ffi::utf8(item, item_len, "item")?;
        let names = self::ffi::utf8_list(names, count, "names")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let out = ffi::out_value(out, "out")?;
        let op = ffi::utf8(op, op_len, "op")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let out = ffi::out_value(out, "out")?;
        let op = ffi::utf8(op, op_len, "op")?;
        let worker = ffi::utf8(worker, worker_len, "worker")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let item = ffi::utf8(item, item_len, "item")?;
        let op = ffi::utf8(op, op_len, "op")?;
        let message = ffi::utf8(message, message_len, "message")?;
        let enable = ffi::utf8_list(enable, enable_count, "enable")?;
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
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let item = ffi::utf8(item, item_len, "item")?;
        let op = ffi::utf8(op, op_len, "op")?;
        let message = ffi::utf8(message, message_len, "message")?;
        let token = (token != 0).then_some(token);
        ops.inner.error(item, op, token, message).map(drop)
    })
}

/// Writes every operation record of `item` to `*out` as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_states(
    ops: *const keel_ops,
    item: *const c_char,
    item_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let out = ffi::out_value(out, "out")?;
        let item = ffi::utf8(item, item_len, "item")?;
        let records = ops.inner.states(item)?;
        *out = keel_buf::from_json(&records.iter().map(|record| record.to_json()).collect());
        Ok(())
    })
}

/// Writes a JSON array of up to `limit` records of `op` to `*out`, by item
/// key: those in `state` (a keel_op_state), or in any state when `state` is
/// 0 — for operators finding the FAILED ones. A WORKING record whose lease
/// ended has `"expired": true`. Changes nothing; reads every record (an
/// operator's call, not a worker's). `limit` is 1 to 10000.
#[no_mangle]
pub unsafe extern "C" fn keel_ops_list(
    ops: *const keel_ops,
    op: *const c_char,
    op_len: usize,
    state: u32,
    limit: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let ops = ffi::handle(ops, "ops")?;
        let out = ffi::out_value(out, "out")?;
        let op = ffi::utf8(op, op_len, "op")?;
        let state = match state {
            0 => None,
            state => Some(op_state(state)?),
        };
        let records = ops.inner.list(op, state, limit)?;
        *out = keel_buf::from_json(&records.iter().map(|record| record.to_json()).collect());
        Ok(())
    })
}

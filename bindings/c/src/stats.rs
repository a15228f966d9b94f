//! Counters for C: `keel_stats_json`, every live object as the core's
//! `keel::stats::gather` lists them. The per-object stats structs
//! (keel_lock_stats, keel_pool_stats, keel_worker_stats) are the core's own
//! `repr(C)` structs, renamed for C by cbindgen.toml: nothing here to drift.

use crate::buf::keel_buf;
use crate::ffi;
use crate::status::keel_status;

/// Writes every live keel object's counters into `*out` as one JSON object,
/// grouped by part: `{"locks": [{"name": ..., "entries": 0, ...}], ...}`;
/// each entry is the object's identity and the fields of its part's stats
/// struct (keel_lock_stats, keel_pool_stats, keel_worker_stats, ...).
/// Cheap enough to call on every metrics scrape. Free `*out` with keel_buf_free.
#[no_mangle]
pub unsafe extern "C" fn keel_stats_json(out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_vec(keel_core::stats::gather().to_string().into_bytes());
        Ok(())
    })
}

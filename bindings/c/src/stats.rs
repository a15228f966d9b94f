//! Counters for C: `keel_stats_json` (every live object, as the core's
//! `keel::stats::gather` lists them) and the structs that mirror the core's
//! stats structs field for field. `tests/stats_fields.rs` fails when a
//! struct here and its core struct differ in their fields.

use keel_core::ops::WorkerStats;
use keel_core::pool::PoolStats;
use keel_core::LockStats;

use crate::buf::keel_buf;
use crate::ffi;
use crate::status::keel_status;

/// A snapshot of a lock registry's size (LockStats in the Rust docs).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_lock_stats {
    /// Keys with an entry (each held or waited for).
    pub entries: usize,
    /// Guards alive (a shared key counts each holder).
    pub holders: usize,
    /// Threads waiting for a key.
    pub waiters: usize,
}

impl From<LockStats> for keel_lock_stats {
    fn from(stats: LockStats) -> Self {
        let LockStats {
            entries,
            holders,
            waiters,
        } = stats;
        keel_lock_stats {
            entries,
            holders,
            waiters,
        }
    }
}

/// A snapshot of a pool's counters (PoolStats in the Rust docs).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_pool_stats {
    /// Tasks holding a slot now: running, or waiting for their key
    /// (abandoned threads excluded).
    pub in_flight: usize,
    /// Tasks waiting for a slot now.
    pub slot_waiters: usize,
    /// The most tasks ever running at once.
    pub peak_concurrency: usize,
    /// Tasks that returned KEEL_OK.
    pub completed: usize,
    /// Tasks that failed or panicked.
    pub failed: usize,
    /// Tasks reported timed out.
    pub timed_out: usize,
    /// Tasks reported cancelled.
    pub cancelled: usize,
    /// Tasks refused.
    pub refused: usize,
    /// Abandoned threads still running.
    pub abandoned: usize,
    /// Threads ever abandoned.
    pub abandoned_total: usize,
    /// Keys held in the pool's lock registry now.
    pub locked_keys: usize,
    /// Keys held by an abandoned thread: their tasks are refused until it returns.
    pub hung_keys: usize,
}

impl From<PoolStats> for keel_pool_stats {
    fn from(stats: PoolStats) -> Self {
        // Destructured, so a field added to PoolStats fails to compile here.
        let PoolStats {
            in_flight,
            slot_waiters,
            peak_concurrency,
            completed,
            failed,
            timed_out,
            cancelled,
            refused,
            abandoned,
            abandoned_total,
            locked_keys,
            hung_keys,
        } = stats;
        keel_pool_stats {
            in_flight,
            slot_waiters,
            peak_concurrency,
            completed,
            failed,
            timed_out,
            cancelled,
            refused,
            abandoned,
            abandoned_total,
            locked_keys,
            hung_keys,
        }
    }
}

/// A worker's counters (WorkerStats in the Rust docs).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct keel_worker_stats {
    /// Jobs whose handler succeeded and whose completion was stored.
    pub completed: u64,
    /// Attempts whose handler failed (stored as failures).
    pub failed: u64,
    /// Attempts whose handler panicked (stored as failures).
    pub panicked: u64,
    /// Finishes refused because the attempt was no longer current.
    pub refused: u64,
    /// Unfinished jobs handed back to the queue.
    pub released: u64,
    /// Attempts whose handler ran past the job timeout.
    pub timed_out: u64,
    /// Running jobs whose heartbeat was refused: their result is not stored.
    pub lost: u64,
    /// Jobs running at the moment of the snapshot.
    pub running: usize,
}

impl From<WorkerStats> for keel_worker_stats {
    fn from(stats: WorkerStats) -> Self {
        let WorkerStats {
            completed,
            failed,
            panicked,
            refused,
            released,
            timed_out,
            lost,
            running,
        } = stats;
        keel_worker_stats {
            completed,
            failed,
            panicked,
            refused,
            released,
            timed_out,
            lost,
            running,
        }
    }
}

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

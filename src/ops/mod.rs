//! Operations and jobs: durable per-item operation states, and a job queue
//! with a worker that isolates job kinds.
//!
//! - [`Operations`]: a record per (item, operation) — READY, WORKING, OK,
//!   FAILED — claimed atomically with a lease and a token, updated with the
//!   downstream operations enabled in the same transaction.
//! - [`Queue`]: jobs with priorities, run-at times, unique keys and attempt
//!   tokens; retries with exponential backoff and jitter; a resetter for
//!   expired leases; retention cleanup; cheap counts per kind and state.
//! - [`Worker`]: runs handlers for an allowed set of kinds, each kind with its
//!   own concurrency, heartbeating while they run.
//!
//! Both sit behind the [`OperationStore`] and [`JobStore`] traits; LMDB
//! ([`LmdbStore`]) is the embedded store. Time comes from a [`Clock`], so
//! tests move a [`ManualClock`] instead of sleeping.
//!
//! The folders show which file belongs to which product: `operations/`
//! (per-item states), `jobs/` (the queue, its handlers and the worker) and
//! `store/` (the storage seam and its stores); what both products share —
//! records, their state machines, names, the clock — sits at the top.

pub mod clock;
mod events;
pub mod jobs;
pub mod json;
pub mod names;
pub mod operations;
pub mod records;
pub mod store;
pub mod transitions;

pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use jobs::backoff::Backoff;
pub use jobs::handler::{Handler, HandlerError, HandlerResult, JobContext};
pub use jobs::queue::{EnqueueOptions, Queue};
pub use jobs::worker::{StopReport, Worker, WorkerBuilder, WorkerMonitor, WorkerOptions, WorkerStats};
pub use operations::Operations;
pub use records::{JobId, JobRecord, JobState, OpClaim, OpRecord, OpState, Token};
pub use store::lmdb::LmdbStore;
pub use store::lmdb::FORMAT_VERSION;
#[cfg(feature = "postgres")]
pub use store::postgres::PgStore;
pub use store::{
    ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, NextOrder, OpResetReport, OperationStore, ResetReport,
};
pub use transitions::{JobPolicy, OpPolicy};

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

pub mod backoff;
pub mod clock;
mod codec;
mod events;
pub mod handler;
pub mod json;
mod lmdb_keys;
pub mod lmdb_store;
pub mod names;
pub mod operations;
pub mod queue;
mod queue_stats;
pub mod records;
pub mod store;
pub mod transitions;
pub mod worker;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use handler::{Handler, HandlerError, HandlerResult, JobContext};
pub use lmdb_store::LmdbStore;
pub use operations::Operations;
pub use queue::{EnqueueOptions, Queue};
pub use records::{JobId, JobRecord, JobState, OpClaim, OpRecord, OpState, Token, FORMAT_VERSION};
pub use store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, OperationStore, ResetReport};
pub use transitions::JobPolicy;
pub use worker::{StopReport, Worker, WorkerBuilder, WorkerOptions, WorkerStats};

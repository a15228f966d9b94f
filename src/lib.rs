//! keel: the reliability parts that background sync and ingest services keep
//! hand-rolling.
//!
//! One synchronous core, used from Rust, from C through `libkeel` and
//! `include/keel.h`, and from Python as `import keel`:
//!
//! - [`KeyedLocks`]: one lock per key while anyone holds or waits for it, and
//!   no entry left behind when nobody does.
//! - [`Journal`]: crash-safe mutations of a directory tree: after any crash
//!   the tree is exactly as before or exactly as after a mutation.
//! - [`SyncPool`]: keyed tasks N at a time, timeouts that never starve the
//!   pool, and an ordered prepare/commit pipeline.
//! - [`ops`]: durable per-item operation states, and a job queue with
//!   leases, fencing tokens, retries and a worker that isolates job kinds.
//!
//! Every fallible call returns [`Result`], whose [`Error`] carries an
//! [`ErrorKind`] with a stable number shared by all three surfaces.

pub mod drive;
pub mod error;
pub mod events;
pub mod journal;
pub mod lmdb;
pub mod location;
pub mod locks;
pub mod ops;
pub mod pool;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod stats;

pub use error::{Error, ErrorKind, Result};
pub use journal::{Journal, Mutation};
pub use locks::{KeyGuard, KeyedLocks, LockMode, LockRequest, LockStats, MultiKeyGuard, Wait};
pub use pool::{Outcome, PoolConfig, SyncPool, Task, TaskContext};

/// The version of this build, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
//! - [`Drive`]: a tree of named items in an LMDB file, with versioned JSON
//!   data checked by JSON Schema and per-item permissions.
//! - [`Operations`]: durable per-item operation states, each claimed once
//!   with a lease and a token.
//! - [`Queue`] and [`Worker`]: a durable job queue with leases, fencing
//!   tokens and retries, and a worker that isolates job kinds. (The rest of
//!   both is in [`ops`].)
//!
//! Every fallible call returns [`Result`], whose [`Error`] carries an
//! [`ErrorKind`] with a stable number shared by all three surfaces.

#[cfg(feature = "drive")]
pub mod drive;
pub mod error;
pub mod events;
#[cfg(all(feature = "drive", feature = "ops"))]
pub mod inspect;
#[cfg(feature = "journal")]
pub mod journal;
#[cfg(feature = "lmdb")]
pub mod lmdb;
#[cfg(feature = "ops")]
pub mod location;
pub mod locks;
#[cfg(feature = "ops")]
pub mod ops;
pub mod pool;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod stats;

#[cfg(feature = "drive")]
pub use drive::{Drive, DriveOptions};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "journal")]
pub use journal::{Journal, Mutation};
pub use locks::{KeyGuard, KeyedLocks, LockMode, LockRequest, LockStats, MultiKeyGuard, Wait};
#[cfg(feature = "ops")]
pub use ops::{Operations, Queue, Worker};
pub use pool::{Outcome, PoolConfig, SyncPool, Task, TaskContext};

/// The README's Rust example, compiled as a doc test so it cannot rot.
#[cfg(all(doctest, feature = "ops"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The version of this build, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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

pub mod drive;
pub mod error;
pub mod events;
pub mod inspect;
pub mod journal;
pub mod lmdb;
pub mod locks;
pub mod ops;
pub mod pool;
pub mod stats;

pub use drive::{Drive, DriveOptions};
pub use error::{Error, ErrorKind, Result};
pub use ops::{Operations, Queue, Worker};
pub use journal::{Journal, Mutation};
pub use locks::{KeyGuard, KeyedLocks, LockMode, LockStats, MultiKeyGuard, Wait};
pub use pool::{Outcome, PoolConfig, SyncPool, Task, TaskContext};

/// The README's Rust example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The version of this build, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

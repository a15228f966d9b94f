//! The shared LMDB layer: one environment per file per process, durable group
//! commit, map growth, stale-reader cleanup and compacted backups.
//!
//! Guarantees:
//! - **One environment per file per process.** [`Env::open`] keeps a
//!   process-wide registry keyed by the canonical path, so every opener in the
//!   process shares one `lmdb::Environment` (LMDB forbids opening a file twice
//!   in one process). Several *processes* may open the same file at once; LMDB's
//!   lock file coordinates them.
//! - **Durable when `write` returns** (the default [`Durability::Durable`]).
//!   Concurrent writers are combined by group commit: one write transaction
//!   and one fsync for everyone queued while the previous commit ran. Each
//!   writer's closure runs in its own nested transaction, so one writer's error
//!   never undoes another's work.
//! - **No "map full" surprises.** When the memory map fills, the batch is
//!   aborted, the map doubled and the batch run again; a full *disk* gives
//!   [`ErrorKind::StorageFull`](crate::ErrorKind::StorageFull) and loses nothing
//!   already committed.
//! - **Bad files are errors, never crashes.** A file that is not LMDB, or is
//!   shorter than its own meta page says, gives
//!   [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) at open.
//! - **Versioned.** Each part stamps its file with a format version and
//!   upgrades older ones in one transaction after a backup; a newer version
//!   is refused with [`Unsupported`](crate::ErrorKind::Unsupported) (see
//!   [`format`](mod@format)).
//! - **Never across `fork()`.** After a fork the child's environments refuse
//!   every call with [`ErrorKind::Closed`](crate::ErrorKind::Closed); a child
//!   process must open its own (tests use `std::process::Command`, which execs).
//!
//! Costs: a read is one LMDB read transaction plus an uncontended shared lock
//! (taken so the map can be grown safely); a durable write is one fsync shared
//! with every writer queued beside it.

mod codec;
mod env;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
mod group_commit;
mod held;
mod registry;
mod sys;
pub mod verify;

use std::fmt::Display;

use crate::Error;

pub use codec::{encode_len_prefixed, malformed, seal, unseal, utf8, Codec, Decoder, Table, SEAL_LEN};
pub use env::{Env, EnvStats};
pub use held::HeldWrite;
pub use lmdb::{Cursor, Database, DatabaseFlags, RoTransaction, RwTransaction, Transaction, WriteFlags};

/// How a committed write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before `write` returns (the default).
    #[default]
    Durable,
    /// Commits are not fsynced (LMDB's `MDB_NOSYNC`). A process crash loses
    /// nothing, but an operating-system crash or power loss may lose the last
    /// commits (never corrupting the file). For caches and tests only.
    NoSyncRisksLastCommits,
}

/// How to open an [`Env`]. The first opener of a file in a process decides;
/// later openers of the same file share that environment as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOptions {
    /// The most named databases the file may hold.
    pub max_dbs: u32,
    /// The memory map's size at open; it doubles whenever it fills.
    pub initial_map_size: usize,
    /// Whether commits are fsynced.
    pub durability: Durability,
    /// The most concurrent read transactions (LMDB reader slots) across all
    /// processes using the file.
    pub max_readers: u32,
}

impl Default for EnvOptions {
    fn default() -> EnvOptions {
        EnvOptions {
            max_dbs: 32,
            initial_map_size: 64 << 20,
            durability: Durability::Durable,
            max_readers: 512,
        }
    }
}

/// Turns an LMDB error into a keel error, prefixed with `context` (what was
/// being done, and to which file or key).
///
/// A full map or transaction is [`StorageFull`](crate::ErrorKind::StorageFull);
/// a corrupt, invalid or incompatible file is
/// [`Corrupt`](crate::ErrorKind::Corrupt); `NotFound` and `KeyExist` map to
/// their kinds; an OS error goes through [`Error::io`] (ENOSPC is
/// `StorageFull`). The LMDB error stays attached as the source.
pub fn map_err(context: impl Display, err: lmdb::Error) -> Error {
    use lmdb::Error as E;
    // The message names what failed; LMDB's own text is the source.
    let message = context.to_string();
    let error = match err {
        // EFBIG: the file hit its size limit (RLIMIT_FSIZE, a filesystem's
        // maximum): for a database, the storage is full.
        E::Other(libc::EFBIG) => Error::storage_full(message),
        E::Other(code) => return Error::io(context, std::io::Error::from_raw_os_error(code)).with_source(err),
        E::NotFound => Error::not_found(message),
        E::KeyExist => Error::already_exists(message),
        E::MapFull | E::TxnFull | E::DbsFull | E::ReadersFull | E::TlsFull => Error::storage_full(message),
        E::Corrupted | E::PageNotFound | E::Invalid | E::VersionMismatch | E::Panic | E::Incompatible => {
            Error::corrupt(message)
        }
        E::BadValSize => Error::invalid_argument(message),
        E::MapResized | E::CursorFull | E::PageFull | E::BadRslot | E::BadTxn | E::BadDbi => {
            Error::new(crate::ErrorKind::Io, message)
        }
    };
    error.with_source(err)
}

/// Whether `err` came from LMDB running out of map space (so growing the map
/// and retrying will help).
pub(crate) fn is_map_full(err: &Error) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(source) = std::error::Error::source(err) else {
        return false;
    };
    // keel::Error keeps its cause behind an Arc, which is what `source` hands out.
    let cause = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<lmdb::Error>(),
        None => source.downcast_ref::<lmdb::Error>(),
    };
    cause == Some(&lmdb::Error::MapFull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn lmdb_errors_map_to_stable_kinds() {
        assert_eq!(map_err("x", lmdb::Error::MapFull).kind(), ErrorKind::StorageFull);
        assert_eq!(map_err("x", lmdb::Error::Invalid).kind(), ErrorKind::Corrupt);
        assert_eq!(map_err("x", lmdb::Error::Corrupted).kind(), ErrorKind::Corrupt);
        assert_eq!(map_err("x", lmdb::Error::VersionMismatch).kind(), ErrorKind::Corrupt);
        assert_eq!(map_err("x", lmdb::Error::NotFound).kind(), ErrorKind::NotFound);
        assert_eq!(map_err("x", lmdb::Error::KeyExist).kind(), ErrorKind::AlreadyExists);
        assert_eq!(map_err("x", lmdb::Error::Other(28)).kind(), ErrorKind::StorageFull);
        assert_eq!(
            map_err("x", lmdb::Error::Other(libc::EFBIG)).kind(),
            ErrorKind::StorageFull
        );
        assert_eq!(map_err("x", lmdb::Error::Other(5)).kind(), ErrorKind::Io);
        let missing = map_err("put key k", lmdb::Error::NotFound);
        assert_eq!(
            missing.message(),
            "put key k",
            "LMDB's text is the source, not repeated"
        );
        assert!(missing.report().to_string().starts_with("put key k: "));
    }

    #[test]
    fn map_full_is_recognised_through_the_source() {
        assert!(is_map_full(&map_err("x", lmdb::Error::MapFull)));
        assert!(is_map_full(&map_err("x", lmdb::Error::MapFull).context("outer")));
        assert!(!is_map_full(&map_err("x", lmdb::Error::TxnFull)));
        assert!(!is_map_full(&Error::storage_full("disk")));
    }
}

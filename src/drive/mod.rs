//! The drive: a tree of named items in its own LMDB file, any of which may
//! have a type and carry versioned JSON data checked by the type's schema,
//! with per-item permissions that a checked view enforces.
//!
//! # Guarantees
//! - **Durable when a write returns** (by default). Every write call is one
//!   transaction; [`DriveView::batch`] groups many calls into one, all or
//!   nothing. Concurrent writers share commits (group commit), so many
//!   threads write much faster than one, each still returning only once its
//!   write is on disk.
//! - **Indexes stay exact.** Child names (unique per parent under full
//!   Unicode case folding of their NFC form),
//!   child counts and the type index are updated in the same transaction as
//!   the items they describe, through create, move, rename and delete.
//! - **The tree stays a tree.** A move under the item's own descendant is
//!   refused; every parent exists.
//! - **Bad input is a typed error and loses nothing**: bad names (checked up
//!   front, including their size in bytes), bad paths, bad ids, data that
//!   fails its schema, a file that is not a drive
//!   ([`Corrupt`](crate::ErrorKind::Corrupt)).
//! - **History is kept**: writing a data version that is already stored is
//!   refused unless the caller asks to replace it.
//! - **Damage is never a wrong answer.** Every stored value carries a
//!   checksum of its key and bytes, checked on every read: a mismatch is
//!   [`Corrupt`](crate::ErrorKind::Corrupt) naming the file and key; so is
//!   a child count that would overflow. [`Drive::verify`] checks the whole
//!   file in a child process, so damage that would crash LMDB gives a
//!   report instead.
//! - **One environment per file per process**, shared by every `Drive` of
//!   that file; several processes may use one drive at once.
//!
//! # Costs
//! A get by id is one LMDB lookup and a small binary decode; resolving a
//! path is one lookup per step (two with the child index); a write is one
//! shared fsync. Permission checks in a checked view add one lookup per
//! ancestor with no permissions of its own.
//!
//! ```
//! use keel::drive::{Drive, DriveOptions, NewItem, ItemId};
//! # let dir = std::env::temp_dir().join(format!("keel-doc-drive-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let drive = Drive::open(&dir.join("drive.lmdb"), &DriveOptions::default())?;
//! let docs = drive.create(ItemId::ROOT, &NewItem::named("Docs"))?;
//! let note = drive.create_at("docs", &NewItem::typed("note", "text"))?;
//! drive.set_data(note.id, &serde_json::json!({"body": "hi"}), None)?;
//! assert_eq!(drive.resolve("DOCS/Note")?.len(), 2);
//! assert_eq!(drive.get(docs.id)?.children, 1);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), keel::Error>(())
//! ```

mod apply;
mod batch;
mod calls;
pub(crate) mod codecs;
mod data;
mod id;
mod item;
pub mod json;
mod names;
mod open_batch;
pub mod perms;
mod schema;
mod tables;
mod tree;
mod upgrade;
mod verify;
mod view;

use std::path::Path;
use std::sync::Arc;

use crate::lmdb::format::{self, FileFormat};
use crate::lmdb::{Durability, Env, EnvOptions};
use crate::{Error, Result};

pub use crate::lmdb::verify::Report;
pub use apply::{Write, Written};
pub use batch::{Batch, InBatch};
pub use calls::Calls;
pub use data::{Version, VersionInfo};
pub use id::ItemId;
pub use item::{Item, NewItem};
pub use names::{MAX_NAME_BYTES, MAX_NAME_CHARS, MAX_TYPE_BYTES};
pub use open_batch::{InOpenBatch, OpenBatch};
pub use perms::{Level, Permissions};
pub use schema::{MigrateFn, Migration};
pub use tree::WalkOrder;
pub use view::{AsView, DriveView};

use perms::Actor;
use schema::SchemaCache;
use tables::Tables;

/// How to open a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveOptions {
    /// Whether commits are fsynced before writes return (default: yes).
    pub durability: Durability,
    /// The LMDB map's size at open; it doubles whenever it fills.
    pub initial_map_size: usize,
    /// Whether items may be created with a type that has no registered
    /// schema (their data is then any JSON). Default: yes — a type is a
    /// label first, a schema is opt-in, and drives written before schemas
    /// were registered keep working. Set `false` so a misspelt type (or one
    /// whose schema was never registered) is refused at `create` instead
    /// of silently making unchecked items.
    pub allow_types_without_schema: bool,
}

impl Default for DriveOptions {
    fn default() -> DriveOptions {
        DriveOptions {
            durability: Durability::Durable,
            initial_map_size: EnvOptions::default().initial_map_size,
            allow_types_without_schema: true,
        }
    }
}

impl DriveOptions {
    /// The default options, fsyncing before writes return when `durable`
    /// (else [`Durability::NoSyncRisksLastCommits`]), with the map's size
    /// at open if given: what the host languages' `durable=` and
    /// `initial_map_size=` arguments mean.
    pub fn with_durable(durable: bool, initial_map_size: Option<usize>) -> DriveOptions {
        let defaults = DriveOptions::default();
        DriveOptions {
            durability: match durable {
                true => Durability::Durable,
                false => Durability::NoSyncRisksLastCommits,
            },
            initial_map_size: initial_map_size.unwrap_or(defaults.initial_map_size),
            ..defaults
        }
    }
}

/// An open drive, acting as the system: every call is allowed. It
/// dereferences to a [`DriveView`], which has the item, data and schema
/// calls; [`as_user`](Drive::as_user) gives a view that enforces a user's
/// permission levels.
///
/// Cloning is cheap; every clone, and every `Drive` opened on the same file
/// in this process, shares one LMDB environment.
#[derive(Clone, Debug)]
pub struct Drive {
    view: DriveView,
}

/// What every view of one drive shares.
pub(crate) struct DriveCore {
    pub env: Env,
    pub tables: Tables,
    pub schemas: SchemaCache,
}

impl crate::stats::StatsSource for DriveCore {
    fn stats_json(&self) -> serde_json::Value {
        let identity = serde_json::json!({ "path": self.env.path().display().to_string() });
        crate::stats::entry(identity, &self.env.stats())
    }
}

/// The stored layout this build reads and writes: 2 (checksummed values,
/// child names keyed by full Unicode case folding). Format-1 drives are
/// upgraded on open.
pub const FORMAT_VERSION: u32 = 2;

/// The drive's format marker (`"format"` in `drive.meta`: `keel-drive` and
/// the version) and its upgrade steps.
pub const FILE_FORMAT: FileFormat = FileFormat {
    part: "drive",
    meta_db: "drive.meta",
    magic: b"keel-drive",
    current: FORMAT_VERSION,
    steps: upgrade::STEPS,
};

impl Drive {
    /// Opens the drive file at `path`, creating it if missing (its folder
    /// must exist: a missing one is [`NotFound`](crate::ErrorKind::NotFound)).
    /// A file that is not LMDB, is truncated, or is an LMDB file
    /// holding something other than a drive gives
    /// [`Corrupt`](crate::ErrorKind::Corrupt) and is left untouched. A drive
    /// of a newer format than [`FORMAT_VERSION`] gives
    /// [`Unsupported`](crate::ErrorKind::Unsupported) naming both versions;
    /// an older one is upgraded (see [`crate::lmdb::format`]).
    pub fn open(path: impl AsRef<Path>, options: &DriveOptions) -> Result<Drive> {
        let env_options = EnvOptions {
            durability: options.durability,
            initial_map_size: options.initial_map_size,
            ..EnvOptions::default()
        };
        let env = Env::open(path, &env_options)?;
        refuse_foreign_file(&env)?;
        let tables = Tables::open(&env)?;
        init_or_check_format(&env, &tables)?;
        let core = Arc::new(DriveCore {
            env,
            tables,
            schemas: SchemaCache::new(options.allow_types_without_schema),
        });
        crate::stats::register("drive", &core);
        Ok(Drive {
            view: Calls {
                hooks: AsView {
                    core,
                    actor: Arc::new(Actor::default()),
                },
            },
        })
    }

    /// A view whose every call is checked against `user`'s (and `roles'`)
    /// permission levels, and records `user` as creator and updater.
    pub fn as_user(&self, user: &str, roles: &[&str]) -> DriveView {
        self.view.view_as(user, roles, true)
    }

    /// A view that records `user` as creator and updater but checks nothing
    /// (for services that have checked permissions themselves).
    pub fn attributed_to(&self, user: &str) -> DriveView {
        self.view.view_as(user, &[], false)
    }

    /// Writes a consistent, compacted copy of the drive to `dest` while it
    /// stays in use; durable when this returns. The copy opens as a drive.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        self.view.core().env.backup(dest)
    }

    /// Checks the whole drive file in a child process (see
    /// [`verify_file`]): a damaged file gives a report listing what is
    /// wrong, never a crash of this process.
    pub fn verify(&self) -> Result<Report> {
        let report = verify_file(self.path())?;
        // A verifier killed mid-read leaves its reader slot behind.
        self.view.core().env.clear_stale_readers()?;
        Ok(report)
    }

    /// The drive's LMDB environment (for stats).
    pub fn env(&self) -> &Env {
        &self.view.core().env
    }

    /// The canonical path of the drive file.
    pub fn path(&self) -> &Path {
        self.view.core().env.path()
    }
}

impl std::ops::Deref for Drive {
    type Target = DriveView;
    fn deref(&self) -> &DriveView {
        &self.view
    }
}

/// Verifies the keel LMDB file at `path` — a drive, or an operations and
/// jobs file — in a child process, so damage that would crash LMDB is a
/// report, never a crash of the caller (see [`crate::lmdb::verify`]). Every
/// table is walked entry by entry; a drive's values are checked against
/// their checksums and decoded, and its indexes (child names and counts,
/// types, data versions) and parent links checked against its items. The
/// file is opened read-only and never changed.
pub fn verify_file(path: impl AsRef<Path>) -> Result<Report> {
    use crate::lmdb::verify::PartCheck;
    #[cfg(feature = "ops")]
    let checks: &[PartCheck] = &[verify::check, crate::ops::store::lmdb::verify_check];
    #[cfg(not(feature = "ops"))]
    let checks: &[PartCheck] = &[verify::check];
    crate::lmdb::verify::verify(path.as_ref(), checks)
}

/// Refuses an LMDB file that holds anything but drive tables (and the
/// `keel.` tables of operations and jobs kept beside a drive).
fn refuse_foreign_file(env: &Env) -> Result<()> {
    let names = env.database_names()?;
    let ours = |name: &&String| name.starts_with("drive.") || name.starts_with("keel.");
    if let Some(foreign) = names.iter().find(|name| !ours(name)) {
        return Err(Error::corrupt(format!(
            "{} is an LMDB file but not a drive (it holds {foreign:?})",
            env.path().display()
        )));
    }
    Ok(())
}

/// Stamps a new drive with its format and root record, checks an existing
/// drive's format (refusing a newer one), or upgrades an older one.
fn init_or_check_format(env: &Env, tables: &Tables) -> Result<()> {
    let path = env.path().display().to_string();
    format::ensure(env, &FILE_FORMAT, |txn| {
        if tables.items.contains(txn, &ItemId::ROOT)? {
            return Err(Error::corrupt(format!("drive {path} has items but no format marker")));
        }
        tables.items.put(txn, &ItemId::ROOT, &tree::root_record())
    })?;
    Ok(())
}

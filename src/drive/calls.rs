//! [`Calls`]: the one list of drive calls, composed once over two hooks — a
//! read and a write — that say where a call runs. The view
//! ([`DriveView`](super::DriveView) = `Calls<AsView>`) reads in a read
//! transaction and writes in a group-committed one; a closure batch
//! ([`Batch`](super::Batch) = `Calls<InBatch>`) and an open batch
//! ([`OpenBatch`](super::OpenBatch) = `Calls<InOpenBatch>`) run both in
//! their batch's transaction, each write in a nested transaction of its own.

use std::marker::PhantomData;

use lmdb::{RwTransaction, Transaction};
use lmdb_sys as ffi;
use serde_json::Value;

use super::data::{self, Version, VersionInfo};
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::perms::Permissions;
use super::schema::{self, MigrateFn};
use super::tree::{self, Ctx, WalkOrder};
use crate::Result;

/// The drive's calls, run through the hooks `H`. See
/// [`DriveView`](super::DriveView) for what each call does and needs; the
/// batches run the same calls inside their transaction.
#[derive(Clone)]
pub struct Calls<H> {
    pub(crate) hooks: H,
}

/// A read-only handle on whichever transaction a read hook has: a read
/// transaction, or a batch's write transaction (whose own writes it sees).
pub(crate) struct Snapshot<'t> {
    raw: *mut ffi::MDB_txn,
    _borrow: PhantomData<&'t ()>,
}

impl<'t> Snapshot<'t> {
    pub(crate) fn of(txn: &'t impl Transaction) -> Snapshot<'t> {
        Snapshot {
            raw: txn.txn(),
            _borrow: PhantomData,
        }
    }
}

impl Transaction for Snapshot<'_> {
    fn txn(&self) -> *mut ffi::MDB_txn {
        self.raw
    }
}

/// Where a drive call runs: the two hooks every call is made of.
pub(crate) trait Hooks {
    /// Runs the read call `op` in a consistent snapshot.
    fn read<T>(&self, op: &'static str, f: impl FnOnce(&Ctx<'_>, &Snapshot<'_>) -> Result<T>) -> Result<T>;

    /// Runs the write call `op` atomically: all of it or none. `f` may run
    /// again (after the map grew), so it has no other effects.
    fn write<T: Send>(
        &self,
        op: &'static str,
        f: impl FnMut(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T> + Send,
    ) -> Result<T>;
}

#[allow(private_bounds)] // `Hooks` is sealed: only the drive's own kinds of calls.
impl<H: Hooks> Calls<H> {
    /// Item `id`. Needs `read`.
    pub fn get(&self, id: ItemId) -> Result<Item> {
        self.hooks.read("get", |cx, txn| tree::get(cx, txn, id, None))
    }

    /// Item `id`, which must be of type `kind` (Conflict otherwise).
    pub fn get_typed(&self, id: ItemId, kind: &str) -> Result<Item> {
        self.hooks
            .read("get_typed", |cx, txn| tree::get(cx, txn, id, Some(kind)))
    }

    /// Every item along `path` (`a/b/c`, case-insensitive; outer slashes and
    /// spaces ignored), first step first. A missing step is NotFound naming
    /// it. Needs `read` on every step.
    pub fn resolve(&self, path: &str) -> Result<Vec<Item>> {
        self.hooks.read("resolve", |cx, txn| tree::resolve(cx, txn, path))
    }

    /// The item at `path` (the root for `""`).
    pub fn at_path(&self, path: &str) -> Result<Item> {
        self.hooks.read("at_path", |cx, txn| tree::at_path(cx, txn, path))
    }

    /// The path of item `id` (`a/b/c`, names as given).
    pub fn path_of(&self, id: ItemId) -> Result<String> {
        self.hooks.read("path_of", |cx, txn| tree::path_of(cx, txn, id))
    }

    /// Up to `limit` readable children of `parent` in name order (ignoring
    /// case), starting after the child named `after`.
    pub fn children(&self, parent: ItemId, after: Option<&str>, limit: usize) -> Result<Vec<Item>> {
        self.hooks
            .read("children", |cx, txn| tree::children(cx, txn, parent, after, limit))
    }

    /// Every readable item of the subtree at `top` (including `top` unless
    /// it is the root), in `order`, from one consistent snapshot.
    pub fn walk(&self, top: ItemId, order: WalkOrder) -> Result<Vec<Item>> {
        self.hooks.read("walk", |cx, txn| {
            let mut items = Vec::new();
            tree::walk(cx, txn, top, order, |item| {
                items.push(item);
                Ok(())
            })?;
            Ok(items)
        })
    }

    /// Like [`walk`](Calls::walk), calling `visit` on each item instead of
    /// collecting them; an error from `visit` stops the walk.
    pub fn walk_each(&self, top: ItemId, order: WalkOrder, mut visit: impl FnMut(&Item) -> Result<()>) -> Result<()> {
        self.hooks.read("walk_each", |cx, txn| {
            tree::walk(cx, txn, top, order, |item| visit(&item))
        })
    }

    /// Up to `limit` readable items of type `kind`, by id, after `after`.
    pub fn by_type(&self, kind: &str, after: Option<ItemId>, limit: usize) -> Result<Vec<Item>> {
        self.hooks
            .read("by_type", |cx, txn| tree::by_type(cx, txn, kind, after, limit))
    }

    /// Creates `new` under `parent`, which must exist. Needs `edit` on it.
    pub fn create(&self, parent: ItemId, new: &NewItem) -> Result<Item> {
        self.hooks.write("create", |cx, txn| tree::create(cx, txn, parent, new))
    }

    /// Creates `new` under the item at `parent_path`, which must exist.
    pub fn create_at(&self, parent_path: &str, new: &NewItem) -> Result<Item> {
        self.hooks.write("create_at", |cx, txn| {
            let parent = tree::at_path(cx, txn, parent_path)?;
            tree::create(cx, txn, parent.id, new)
        })
    }

    /// Creates the missing folders along `path`; returns every step's item.
    pub fn make_path(&self, path: &str) -> Result<Vec<Item>> {
        self.hooks.write("make_path", |cx, txn| tree::make_path(cx, txn, path))
    }

    /// Moves item `id` under `new_parent`, renamed to `new_name` if given,
    /// in one transaction. Refuses a move under the item's own descendant.
    pub fn move_item(&self, id: ItemId, new_parent: ItemId, new_name: Option<&str>) -> Result<Item> {
        self.hooks.write("move_item", |cx, txn| {
            tree::move_item(cx, txn, id, new_parent, new_name)
        })
    }

    /// Renames item `id` within its parent.
    pub fn rename(&self, id: ItemId, new_name: &str) -> Result<Item> {
        self.hooks.write("rename", |cx, txn| {
            let parent = tree::load(cx, txn, id)?.parent;
            tree::move_item(cx, txn, id, parent, Some(new_name))
        })
    }

    /// Deletes item `id`, everything below it and all their data. Needs
    /// `admin` on each. Returns how many items were removed.
    pub fn delete(&self, id: ItemId) -> Result<u64> {
        self.hooks.write("delete", |cx, txn| tree::delete(cx, txn, id))
    }

    /// Replaces item `id`'s own permissions. Needs `admin`.
    pub fn set_permissions(&self, id: ItemId, permissions: &Permissions) -> Result<Item> {
        self.hooks.write("set_permissions", |cx, txn| {
            tree::set_permissions(cx, txn, id, permissions)
        })
    }

    /// Writes `value` as `version` of typed item `id`'s data (default: the
    /// next patch after the current one), checked against the type's schema.
    /// A version that is already stored is refused with
    /// [`AlreadyExists`](crate::ErrorKind::AlreadyExists) (see
    /// [`replace_data`](Calls::replace_data)). Needs `edit`. Returns the
    /// version written.
    pub fn set_data(&self, id: ItemId, value: &Value, version: Option<Version>) -> Result<Version> {
        self.hooks.write("set_data", |cx, txn| {
            data::set_data(cx, txn, id, value, version, data::Existing::Refuse)
        })
    }

    /// Like [`set_data`](Calls::set_data) at `version`, replacing that
    /// version's data if it is stored (the old data is lost).
    pub fn replace_data(&self, id: ItemId, value: &Value, version: Version) -> Result<Version> {
        self.hooks.write("replace_data", |cx, txn| {
            data::set_data(cx, txn, id, value, Some(version), data::Existing::Replace)
        })
    }

    /// Item `id`'s data at `version` (default: current) and that version.
    pub fn get_data(&self, id: ItemId, version: Option<Version>) -> Result<(Version, Value)> {
        self.hooks
            .read("get_data", |cx, txn| data::get_data(cx, txn, id, version))
    }

    /// Like [`get_data`](Calls::get_data), as the stored JSON text (no
    /// parse): cheaper when the data is handed on as text.
    pub fn get_data_text(&self, id: ItemId, version: Option<Version>) -> Result<(Version, String)> {
        self.hooks
            .read("get_data_text", |cx, txn| data::get_data_text(cx, txn, id, version))
    }

    /// Every stored version of item `id`'s data, newest first.
    pub fn versions(&self, id: ItemId) -> Result<Vec<VersionInfo>> {
        self.hooks.read("versions", |cx, txn| data::versions(cx, txn, id))
    }

    /// Deletes one version; deleting the current one makes the highest
    /// remaining version current. Returns the current version afterwards.
    pub fn delete_data(&self, id: ItemId, version: Version) -> Result<Option<Version>> {
        self.hooks
            .write("delete_data", |cx, txn| data::delete_data(cx, txn, id, version))
    }

    /// Registers `schema` (JSON Schema) as `version` of type `kind`'s schema.
    /// The same version again is a no-op returning `false`; a lower one is a
    /// Conflict; a higher one runs `migrate` over every stored version of
    /// every item of the type and validates the results — all in one
    /// transaction, so a failure (naming the item and version) changes
    /// nothing. Needs `admin` on the root in a checked view.
    pub fn set_schema(
        &self,
        kind: &str,
        schema: &Value,
        version: u32,
        mut migrate: Option<&mut MigrateFn<'_>>,
    ) -> Result<bool> {
        self.hooks.write("set_schema", |cx, txn| {
            schema::set_schema(cx, txn, kind, schema, version, migrate.as_deref_mut())
        })
    }

    /// The schema registered for `kind`, with its version.
    pub fn schema(&self, kind: &str) -> Result<Option<(u32, Value)>> {
        self.hooks.read("schema", |cx, txn| schema::get_schema(cx, txn, kind))
    }
}

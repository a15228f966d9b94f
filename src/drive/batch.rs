//! [`Batch`]: drive calls inside one transaction, all or nothing.

use lmdb::{RwTransaction, Transaction};
use serde_json::Value;

use super::data::{self, Version, VersionInfo};
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::perms::Permissions;
use super::schema::{self, MigrateFn};
use super::tree::{self, Ctx, WalkOrder};
use crate::lmdb::map_err;
use crate::Result;

/// Drive calls made inside one write transaction (from
/// [`DriveView::batch`](super::DriveView::batch)). Reads see the batch's own
/// writes. Nothing is visible to others, or durable, until the batch
/// returns `Ok`; an error undoes every call in it. Each call is itself
/// atomic: one that fails leaves nothing half-done, so a closure may handle
/// the error and go on. The same permission checks apply as on the view
/// that made it.
pub struct Batch<'a, 'env> {
    pub(crate) cx: Ctx<'a>,
    pub(crate) txn: &'a mut RwTransaction<'env>,
}

impl Batch<'_, '_> {
    /// Runs one call in a nested transaction, so a call that fails leaves no
    /// half-done change in the batch, even if the caller goes on.
    fn atomic<T>(&mut self, call: impl FnOnce(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T>) -> Result<T> {
        let mut nested = self
            .txn
            .begin_nested_txn()
            .map_err(|e| map_err("begin a nested transaction", e))?;
        match call(&self.cx, &mut nested) {
            Ok(value) => {
                nested.commit().map_err(|e| map_err("commit a nested transaction", e))?;
                Ok(value)
            }
            Err(err) => {
                nested.abort();
                Err(err)
            }
        }
    }

    /// See [`DriveView::get`](super::DriveView::get).
    pub fn get(&self, id: ItemId) -> Result<Item> {
        tree::get(&self.cx, &*self.txn, id, None)
    }

    /// See [`DriveView::get_typed`](super::DriveView::get_typed).
    pub fn get_typed(&self, id: ItemId, kind: &str) -> Result<Item> {
        tree::get(&self.cx, &*self.txn, id, Some(kind))
    }

    /// See [`DriveView::resolve`](super::DriveView::resolve).
    pub fn resolve(&self, path: &str) -> Result<Vec<Item>> {
        tree::resolve(&self.cx, &*self.txn, path)
    }

    /// See [`DriveView::at_path`](super::DriveView::at_path).
    pub fn at_path(&self, path: &str) -> Result<Item> {
        tree::at_path(&self.cx, &*self.txn, path)
    }

    /// See [`DriveView::path_of`](super::DriveView::path_of).
    pub fn path_of(&self, id: ItemId) -> Result<String> {
        tree::path_of(&self.cx, &*self.txn, id)
    }

    /// See [`DriveView::children`](super::DriveView::children).
    pub fn children(&self, parent: ItemId, after: Option<&str>, limit: usize) -> Result<Vec<Item>> {
        tree::children(&self.cx, &*self.txn, parent, after, limit)
    }

    /// See [`DriveView::walk`](super::DriveView::walk).
    pub fn walk(&self, top: ItemId, order: WalkOrder) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        tree::walk(&self.cx, &*self.txn, top, order, |item| {
            items.push(item);
            Ok(())
        })?;
        Ok(items)
    }

    /// See [`DriveView::by_type`](super::DriveView::by_type).
    pub fn by_type(&self, kind: &str, after: Option<ItemId>, limit: usize) -> Result<Vec<Item>> {
        tree::by_type(&self.cx, &*self.txn, kind, after, limit)
    }

    /// See [`DriveView::create`](super::DriveView::create).
    pub fn create(&mut self, parent: ItemId, new: &NewItem) -> Result<Item> {
        self.atomic(|cx, txn| tree::create(cx, txn, parent, new))
    }

    /// See [`DriveView::create_at`](super::DriveView::create_at).
    pub fn create_at(&mut self, parent_path: &str, new: &NewItem) -> Result<Item> {
        self.atomic(|cx, txn| {
            let parent = tree::at_path(cx, txn, parent_path)?;
            tree::create(cx, txn, parent.id, new)
        })
    }

    /// See [`DriveView::make_path`](super::DriveView::make_path).
    pub fn make_path(&mut self, path: &str) -> Result<Vec<Item>> {
        self.atomic(|cx, txn| tree::make_path(cx, txn, path))
    }

    /// See [`DriveView::move_item`](super::DriveView::move_item).
    pub fn move_item(&mut self, id: ItemId, new_parent: ItemId, new_name: Option<&str>) -> Result<Item> {
        self.atomic(|cx, txn| tree::move_item(cx, txn, id, new_parent, new_name))
    }

    /// See [`DriveView::rename`](super::DriveView::rename).
    pub fn rename(&mut self, id: ItemId, new_name: &str) -> Result<Item> {
        self.atomic(|cx, txn| {
            let parent = tree::load(cx, txn, id)?.parent;
            tree::move_item(cx, txn, id, parent, Some(new_name))
        })
    }

    /// See [`DriveView::delete`](super::DriveView::delete).
    pub fn delete(&mut self, id: ItemId) -> Result<u64> {
        self.atomic(|cx, txn| tree::delete(cx, txn, id))
    }

    /// See [`DriveView::set_permissions`](super::DriveView::set_permissions).
    pub fn set_permissions(&mut self, id: ItemId, permissions: &Permissions) -> Result<Item> {
        self.atomic(|cx, txn| tree::set_permissions(cx, txn, id, permissions))
    }

    /// See [`DriveView::set_data`](super::DriveView::set_data).
    pub fn set_data(&mut self, id: ItemId, value: &Value, version: Option<Version>) -> Result<Version> {
        self.atomic(|cx, txn| data::set_data(cx, txn, id, value, version, data::Existing::Refuse))
    }

    /// See [`DriveView::replace_data`](super::DriveView::replace_data).
    pub fn replace_data(&mut self, id: ItemId, value: &Value, version: Version) -> Result<Version> {
        self.atomic(|cx, txn| data::set_data(cx, txn, id, value, Some(version), data::Existing::Replace))
    }

    /// See [`DriveView::get_data`](super::DriveView::get_data).
    pub fn get_data(&self, id: ItemId, version: Option<Version>) -> Result<(Version, Value)> {
        data::get_data(&self.cx, &*self.txn, id, version)
    }

    /// See [`DriveView::versions`](super::DriveView::versions).
    pub fn versions(&self, id: ItemId) -> Result<Vec<VersionInfo>> {
        data::versions(&self.cx, &*self.txn, id)
    }

    /// See [`DriveView::delete_data`](super::DriveView::delete_data).
    pub fn delete_data(&mut self, id: ItemId, version: Version) -> Result<Option<Version>> {
        self.atomic(|cx, txn| data::delete_data(cx, txn, id, version))
    }

    /// See [`DriveView::set_schema`](super::DriveView::set_schema).
    pub fn set_schema(
        &mut self,
        kind: &str,
        schema: &Value,
        version: u32,
        migrate: Option<&mut MigrateFn<'_>>,
    ) -> Result<bool> {
        self.atomic(|cx, txn| schema::set_schema(cx, txn, kind, schema, version, migrate))
    }

    /// See [`DriveView::schema`](super::DriveView::schema).
    pub fn schema(&self, kind: &str) -> Result<Option<(u32, Value)>> {
        schema::get_schema(&self.cx, &*self.txn, kind)
    }
}

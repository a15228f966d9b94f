//! The tree: creating, finding, listing, moving and deleting items, with
//! every index (child names, child counts, types) kept exact in the same
//! transaction, and every call checked against the actor's level.

use lmdb::{RwTransaction, Transaction};

use super::data;
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::names::{check_name, check_type, fold, parse_path, Name};
use super::perms::{Actor, Level, Permissions};
use super::schema::SchemaCache;
use super::tables::{ChildKey, Tables, TypeKey};
use crate::{Error, Result};

/// Deeper than any real tree: walking up further means the stored parent
/// links loop, which only damage can cause.
const MAX_DEPTH: usize = 100_000;

/// Everything a drive call needs besides its transaction.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub t: Tables,
    pub actor: &'a Actor,
    pub schemas: &'a SchemaCache,
}

/// Which comes first when walking a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalkOrder {
    /// Every item after all of its descendants (safe order for deleting).
    #[default]
    ChildrenFirst,
    /// Every item before its descendants (safe order for copying).
    ParentsFirst,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The stored item, unchecked; NotFound if there is none.
pub(crate) fn load(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId) -> Result<Item> {
    cx.t.items
        .get(txn, &id)?
        .ok_or_else(|| Error::not_found(format!("no item {id}")))
}

/// The actor's level on `item`, following inheritance up the tree.
pub(crate) fn level_of(cx: &Ctx<'_>, txn: &impl Transaction, item: &Item) -> Result<Level> {
    if !cx.actor.enforced {
        return Ok(Level::Admin);
    }
    if let Some(level) = item.permissions.level_for(&cx.actor.user, &cx.actor.roles) {
        return Ok(level);
    }
    let mut next = item.parent;
    let mut at_root = item.id.is_root();
    for _ in 0..MAX_DEPTH {
        if at_root {
            return Ok(Level::Read);
        }
        let ancestor = load(cx, txn, next).map_err(|e| broken_link(e, item.id))?;
        if let Some(level) = ancestor.permissions.level_for(&cx.actor.user, &cx.actor.roles) {
            return Ok(level);
        }
        at_root = ancestor.id.is_root();
        next = ancestor.parent;
    }
    Err(Error::corrupt(format!("the ancestors of item {} form a loop", item.id)))
}

fn broken_link(err: Error, id: ItemId) -> Error {
    if err.kind() == crate::ErrorKind::NotFound {
        return Error::corrupt(format!("an ancestor of item {id} is missing: {}", err.message()));
    }
    err
}

/// Item `id`, if the actor may read it (and, given `kind`, if it has that
/// type: a Conflict otherwise).
pub(crate) fn get(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId, kind: Option<&str>) -> Result<Item> {
    let item = load(cx, txn, id)?;
    let level = level_of(cx, txn, &item)?;
    cx.actor.require(level, Level::Read, "read", &id)?;
    if let Some(kind) = kind {
        if item.kind.as_deref() != Some(kind) {
            return Err(Error::conflict(format!(
                "item {id} has type {:?}, not {kind:?}",
                item.kind.as_deref().unwrap_or("(none)")
            )));
        }
    }
    Ok(item)
}

/// Every item along `path`, first step first (the root itself is not
/// included). A missing step is NotFound naming it; the actor needs `read`
/// on every step.
pub(crate) fn resolve(cx: &Ctx<'_>, txn: &impl Transaction, path: &str) -> Result<Vec<Item>> {
    let steps = parse_path(path)?;
    let root = load(cx, txn, ItemId::ROOT)?;
    let mut level = cx.actor.level(&root.permissions, Level::Read);
    let mut parent = root;
    let mut found = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let Some(id) = child_id(cx, txn, parent.id, &step.folded)? else {
            return Err(Error::not_found(format!(
                "path {path:?}: step {} ({:?}) does not exist{}",
                index + 1,
                step.display,
                if index == 0 {
                    String::new()
                } else {
                    format!(" in {:?}", parent.name)
                }
            )));
        };
        let item = load(cx, txn, id).map_err(|e| broken_link(e, id))?;
        level = cx.actor.level(&item.permissions, level);
        cx.actor
            .require(level, Level::Read, &format!("read (path step {}) ", index + 1), &id)?;
        found.push(item.clone());
        parent = item;
    }
    Ok(found)
}

fn child_id(cx: &Ctx<'_>, txn: &impl Transaction, parent: ItemId, folded: &str) -> Result<Option<ItemId>> {
    cx.t.children.get(
        txn,
        &ChildKey {
            parent,
            folded: folded.to_owned(),
        },
    )
}

/// The item at `path` (the root for an empty path).
pub(crate) fn at_path(cx: &Ctx<'_>, txn: &impl Transaction, path: &str) -> Result<Item> {
    match resolve(cx, txn, path)?.pop() {
        Some(item) => Ok(item),
        None => {
            let root = load(cx, txn, ItemId::ROOT)?;
            let level = level_of(cx, txn, &root)?;
            cx.actor.require(level, Level::Read, "read", &"the drive root")?;
            Ok(root)
        }
    }
}

/// The path of item `id`: its ancestors' names and its own, joined by `/`.
/// Needs `read` on the item and every ancestor.
pub(crate) fn path_of(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId) -> Result<String> {
    let mut chain = Vec::new();
    let mut next = id;
    while !next.is_root() {
        if chain.len() > MAX_DEPTH {
            return Err(Error::corrupt(format!("the ancestors of item {id} form a loop")));
        }
        let item = load(cx, txn, next).map_err(|e| if next == id { e } else { broken_link(e, id) })?;
        next = item.parent;
        chain.push(item);
    }
    // Check from the top down so inherited levels are computed once each.
    let root = load(cx, txn, ItemId::ROOT)?;
    let mut level = cx.actor.level(&root.permissions, Level::Read);
    let mut names = Vec::with_capacity(chain.len());
    for item in chain.iter().rev() {
        level = cx.actor.level(&item.permissions, level);
        cx.actor.require(level, Level::Read, "read", &item.id)?;
        names.push(item.name.as_str());
    }
    Ok(names.join("/"))
}

/// Up to `limit` children of `parent` in name order (ignoring case),
/// starting after the child called `after`. Needs `read` on the parent;
/// children the actor may not read are left out.
pub(crate) fn children(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    parent: ItemId,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Item>> {
    let parent_item = load(cx, txn, parent)?;
    let parent_level = level_of(cx, txn, &parent_item)?;
    cx.actor
        .require(parent_level, Level::Read, "list children of", &parent)?;
    let prefix = ChildKey::prefix(parent);
    let start = match after {
        Some(name) => ChildKey::after(parent, &fold(name)),
        None => prefix.clone(),
    };
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    cx.t.children.scan(txn, &prefix, &start, |_, id| {
        let item = load(cx, txn, id).map_err(|e| broken_link(e, id))?;
        if cx.actor.level(&item.permissions, parent_level) >= Level::Read {
            found.push(item);
        }
        Ok(found.len() < limit)
    })?;
    Ok(found)
}

/// Calls `visit` on every item of the subtree at `top` (including `top`
/// unless it is the root) in `order`, children in name order. Items the
/// actor may not read are skipped (their readable descendants are not).
/// Needs `read` on `top`.
pub(crate) fn walk(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    top: ItemId,
    order: WalkOrder,
    mut visit: impl FnMut(Item) -> Result<()>,
) -> Result<()> {
    let top_item = load(cx, txn, top)?;
    let top_level = level_of(cx, txn, &top_item)?;
    cx.actor.require(top_level, Level::Read, "walk", &top)?;
    walk_all(cx, txn, top_item, top_level, order, |item, level| {
        if level >= Level::Read {
            visit(item)?;
        }
        Ok(())
    })
}

/// Calls `visit` on every item of the subtree (but the root), readable or
/// not, with the actor's level on it. Items are handed over, not cloned.
fn walk_all(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    top: Item,
    top_level: Level,
    order: WalkOrder,
    mut visit: impl FnMut(Item, Level) -> Result<()>,
) -> Result<()> {
    // (item, its level, whether its children are already on the stack)
    let mut stack = vec![(top, top_level, false)];
    let mut seen = 0usize;
    while let Some((item, level, expanded)) = stack.pop() {
        let visible = !item.id.is_root();
        if expanded {
            if visible {
                visit(item, level)?;
            }
            continue;
        }
        seen += 1;
        if seen > MAX_DEPTH * 1000 {
            return Err(Error::corrupt(format!("the subtree at {} does not end", item.id)));
        }
        let id = item.id;
        let kids = child_items(cx, txn, id)?;
        match order {
            WalkOrder::ParentsFirst if visible => visit(item, level)?,
            WalkOrder::ParentsFirst => {}
            WalkOrder::ChildrenFirst => stack.push((item, level, true)),
        }
        for kid in kids.into_iter().rev() {
            if kid.id == id || kid.id.is_root() {
                return Err(Error::corrupt(format!("item {id} is listed as its own child")));
            }
            let kid_level = cx.actor.level(&kid.permissions, level);
            stack.push((kid, kid_level, false));
        }
    }
    Ok(())
}

/// Every child of `parent`, unchecked, in name order.
fn child_items(cx: &Ctx<'_>, txn: &impl Transaction, parent: ItemId) -> Result<Vec<Item>> {
    let mut kids = Vec::new();
    let prefix = ChildKey::prefix(parent);
    cx.t.children.scan(txn, &prefix, &prefix, |_, id| {
        kids.push(load(cx, txn, id).map_err(|e| broken_link(e, id))?);
        Ok(true)
    })?;
    Ok(kids)
}

/// Up to `limit` items of type `kind`, by id, starting after `after`. Items
/// the actor may not read are left out.
pub(crate) fn by_type(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    kind: &str,
    after: Option<ItemId>,
    limit: usize,
) -> Result<Vec<Item>> {
    check_type(kind)?;
    let prefix = TypeKey::prefix(kind);
    let start = match after {
        Some(id) => TypeKey::after(kind, id),
        None => prefix.clone(),
    };
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    cx.t.types.scan(txn, &prefix, &start, |key, ()| {
        let item = load(cx, txn, key.id).map_err(|e| broken_link(e, key.id))?;
        if level_of(cx, txn, &item)? >= Level::Read {
            found.push(item);
        }
        Ok(found.len() < limit)
    })?;
    Ok(found)
}

/// Creates `new` under `parent` (which must exist). Needs `edit` on the
/// parent, and `admin` there to give the new item permissions of its own.
pub(crate) fn create(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, parent: ItemId, new: &NewItem) -> Result<Item> {
    let name = check_name(&new.name)?;
    if let Some(kind) = &new.kind {
        check_type(kind)?;
        cx.schemas.check_creatable(cx, txn, kind)?;
    }
    let mut parent_item =
        load(cx, txn, parent).map_err(|_| Error::not_found(format!("parent {parent} does not exist")))?;
    let level = level_of(cx, txn, &parent_item)?;
    cx.actor.require(level, Level::Edit, "create children in", &parent)?;
    if !new.permissions.is_empty() {
        cx.actor
            .require(level, Level::Admin, "set permissions of new children in", &parent)?;
    }
    claim_name(cx, txn, &parent_item, &name, None)?;
    let now = now_ms();
    let item = Item {
        id: ItemId::random()?,
        parent,
        name: name.display.clone(),
        kind: new.kind.clone(),
        created: now,
        creator: cx.actor.user.clone(),
        children: 0,
        data_size: 0,
        version: None,
        updated: now,
        updater: cx.actor.user.clone(),
        permissions: new.permissions.clone(),
    };
    cx.t.items.put(txn, &item.id, &item)?;
    put_child(cx, txn, parent, &name, item.id)?;
    if let Some(kind) = &item.kind {
        cx.t.types.put(txn, &type_key(kind, item.id), &())?;
    }
    parent_item.children = add_child(&parent_item)?;
    cx.t.items.put(txn, &parent, &parent_item)?;
    Ok(item)
}

/// Fails with AlreadyExists if `parent` has a child called `name` (other
/// than `except`, the item being renamed).
fn claim_name(cx: &Ctx<'_>, txn: &impl Transaction, parent: &Item, name: &Name, except: Option<ItemId>) -> Result<()> {
    match child_id(cx, txn, parent.id, &name.folded)? {
        Some(existing) if Some(existing) != except => Err(Error::already_exists(format!(
            "an item named {:?} already exists in {}",
            name.display,
            if parent.id.is_root() {
                "the drive root".to_owned()
            } else {
                format!("{:?} ({})", parent.name, parent.id)
            }
        ))),
        _ => Ok(()),
    }
}

fn put_child(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, parent: ItemId, name: &Name, id: ItemId) -> Result<()> {
    let key = ChildKey {
        parent,
        folded: name.folded.clone(),
    };
    cx.t.children.put(txn, &key, &id)
}

/// `parent`'s child count plus one; Corrupt if the stored count cannot
/// grow (only a damaged file holds a count near `u64::MAX`).
fn add_child(parent: &Item) -> Result<u64> {
    parent.children.checked_add(1).ok_or_else(|| bad_count(parent))
}

/// `parent`'s child count minus one; Corrupt if it is already 0 (the stored
/// count disagrees with the child index).
fn remove_child(parent: &Item) -> Result<u64> {
    parent.children.checked_sub(1).ok_or_else(|| bad_count(parent))
}

fn bad_count(parent: &Item) -> Error {
    Error::corrupt(format!(
        "item {} has a stored child count of {} that disagrees with its children (the file is damaged)",
        parent.id, parent.children
    ))
}

fn type_key(kind: &str, id: ItemId) -> TypeKey {
    TypeKey {
        kind: kind.to_owned(),
        id,
    }
}

/// Creates every missing item along `path` as an untyped folder and returns
/// every step's item (like `mkdir -p`).
pub(crate) fn make_path(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, path: &str) -> Result<Vec<Item>> {
    let steps = parse_path(path)?;
    let mut parent = ItemId::ROOT;
    let mut found = Vec::with_capacity(steps.len());
    for step in &steps {
        let item = match child_id(cx, txn, parent, &step.folded)? {
            Some(id) => get(cx, txn, id, None)?,
            None => create(cx, txn, parent, &NewItem::named(step.display.clone()))?,
        };
        parent = item.id;
        found.push(item);
    }
    // Each step's child count grew when the next step was created under it:
    // hand back what is stored now, as `resolve` would.
    for item in found.iter_mut() {
        *item = load(cx, txn, item.id)?;
    }
    Ok(found)
}

/// Moves item `id` under `new_parent`, renaming it to `new_name` if given —
/// one call, one transaction. Refuses to move an item under itself or its
/// own descendant. Needs `edit` on the item and on the new parent.
pub(crate) fn move_item(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    id: ItemId,
    new_parent: ItemId,
    new_name: Option<&str>,
) -> Result<Item> {
    if id.is_root() {
        return Err(Error::invalid_argument("the drive root cannot be moved or renamed"));
    }
    let mut item = load(cx, txn, id)?;
    let level = level_of(cx, txn, &item)?;
    cx.actor.require(level, Level::Edit, "move or rename", &id)?;
    let name = check_name(new_name.unwrap_or(&item.name))?;
    let mut target =
        load(cx, txn, new_parent).map_err(|_| Error::not_found(format!("new parent {new_parent} does not exist")))?;
    let target_level = level_of(cx, txn, &target)?;
    cx.actor
        .require(target_level, Level::Edit, "move items into", &new_parent)?;
    refuse_cycle(cx, txn, id, new_parent)?;
    claim_name(cx, txn, &target, &name, Some(id))?;
    let old_key = ChildKey {
        parent: item.parent,
        folded: fold(&item.name),
    };
    cx.t.children.delete(txn, &old_key)?;
    put_child(cx, txn, new_parent, &name, id)?;
    if item.parent != new_parent {
        let mut old_parent = load(cx, txn, item.parent).map_err(|e| broken_link(e, id))?;
        old_parent.children = remove_child(&old_parent)?;
        cx.t.items.put(txn, &old_parent.id, &old_parent)?;
        target.children = add_child(&target)?;
        cx.t.items.put(txn, &new_parent, &target)?;
    }
    item.parent = new_parent;
    item.name = name.display;
    item.updated = now_ms();
    item.updater = cx.actor.user.clone();
    cx.t.items.put(txn, &id, &item)?;
    Ok(item)
}

/// InvalidArgument if `new_parent` is `id` or lies below it.
fn refuse_cycle(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId, new_parent: ItemId) -> Result<()> {
    let mut next = new_parent;
    for _ in 0..MAX_DEPTH {
        if next == id {
            return Err(Error::invalid_argument(format!(
                "cannot move item {id} under itself or its own descendant {new_parent}"
            )));
        }
        if next.is_root() {
            return Ok(());
        }
        next = load(cx, txn, next).map_err(|e| broken_link(e, new_parent))?.parent;
    }
    Err(Error::corrupt(format!(
        "the ancestors of item {new_parent} form a loop"
    )))
}

/// Deletes item `id` and everything below it, with their data. Needs
/// `admin` on every item removed; returns how many were removed.
pub(crate) fn delete(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, id: ItemId) -> Result<u64> {
    if id.is_root() {
        return Err(Error::invalid_argument("the drive root cannot be deleted"));
    }
    let top = load(cx, txn, id)?;
    let top_level = level_of(cx, txn, &top)?;
    let mut doomed = Vec::new();
    walk_all(cx, txn, top, top_level, WalkOrder::ChildrenFirst, |item, level| {
        cx.actor.require(level, Level::Admin, "delete", &item.id)?;
        doomed.push(item);
        Ok(())
    })?;
    let removed = doomed.len() as u64;
    let parent = doomed.last().map_or(ItemId::ROOT, |item| item.parent);
    for item in &doomed {
        remove_one(cx, txn, item)?;
    }
    let mut parent_item = load(cx, txn, parent).map_err(|e| broken_link(e, id))?;
    parent_item.children = remove_child(&parent_item)?;
    cx.t.items.put(txn, &parent, &parent_item)?;
    Ok(removed)
}

fn remove_one(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, item: &Item) -> Result<()> {
    cx.t.items.delete(txn, &item.id)?;
    let key = ChildKey {
        parent: item.parent,
        folded: fold(&item.name),
    };
    cx.t.children.delete(txn, &key)?;
    if let Some(kind) = &item.kind {
        cx.t.types.delete(txn, &type_key(kind, item.id))?;
    }
    data::delete_all(cx, txn, item.id)
}

/// Replaces item `id`'s own permissions (the root's too). Needs `admin`.
pub(crate) fn set_permissions(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    id: ItemId,
    permissions: &Permissions,
) -> Result<Item> {
    let mut item = load(cx, txn, id)?;
    let level = level_of(cx, txn, &item)?;
    cx.actor.require(level, Level::Admin, "change permissions of", &id)?;
    item.permissions = permissions.clone();
    item.updated = now_ms();
    item.updater = cx.actor.user.clone();
    cx.t.items.put(txn, &id, &item)?;
    Ok(item)
}

/// The root's record, written once when a drive is created.
pub(crate) fn root_record() -> Item {
    let now = now_ms();
    Item {
        id: ItemId::ROOT,
        parent: ItemId::ROOT,
        name: String::new(),
        kind: None,
        created: now,
        creator: String::new(),
        children: 0,
        data_size: 0,
        version: None,
        updated: now,
        updater: String::new(),
        permissions: Permissions::default(),
    }
}

//! [`Write`]: one drive write described as a value, so many can be handed
//! over at once and applied in one transaction ([`Calls::apply`]) — the bulk
//! call of surfaces where each call has a fixed cost (Python, C).

use lmdb::RwTransaction;
use serde_json::Value;

use super::calls::{Calls, Hooks};
use super::data::{self, Version};
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::perms::Permissions;
use super::tree::{self, Ctx};
use crate::Result;

/// One write call, as a value (see the [`Calls`] method of the same name).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// [`Calls::create`].
    Create { parent: ItemId, new: NewItem },
    /// [`Calls::create_at`].
    CreateAt { parent_path: String, new: NewItem },
    /// [`Calls::make_path`].
    MakePath { path: String },
    /// [`Calls::move_item`].
    Move {
        id: ItemId,
        parent: ItemId,
        name: Option<String>,
    },
    /// [`Calls::rename`].
    Rename { id: ItemId, name: String },
    /// [`Calls::delete`].
    Delete { id: ItemId },
    /// [`Calls::set_permissions`].
    SetPermissions { id: ItemId, permissions: Permissions },
    /// [`Calls::set_data`].
    SetData {
        id: ItemId,
        data: Value,
        version: Option<Version>,
    },
    /// [`Calls::delete_data`].
    DeleteData { id: ItemId, version: Version },
}

/// What one [`Write`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The item created, moved, renamed or given permissions.
    Item(Box<Item>),
    /// Every step's item (`MakePath`).
    Items(Vec<Item>),
    /// How many items were deleted.
    Deleted(u64),
    /// The data version written.
    Version(Version),
    /// The current data version after a `DeleteData`.
    Current(Option<Version>),
}

impl Write {
    /// The call's name, as in [`Calls`] (and the C and JSON forms).
    pub fn op(&self) -> &'static str {
        match self {
            Write::Create { .. } => "create",
            Write::CreateAt { .. } => "create_at",
            Write::MakePath { .. } => "make_path",
            Write::Move { .. } => "move",
            Write::Rename { .. } => "rename",
            Write::Delete { .. } => "delete",
            Write::SetPermissions { .. } => "set_permissions",
            Write::SetData { .. } => "set_data",
            Write::DeleteData { .. } => "delete_data",
        }
    }

    /// Runs the write in `txn`: the same steps as the call of its name.
    pub(crate) fn run(&self, cx: &Ctx<'_>, txn: &mut RwTransaction<'_>) -> Result<Written> {
        Ok(match self {
            Write::Create { parent, new } => Written::Item(Box::new(tree::create(cx, txn, *parent, new)?)),
            Write::CreateAt { parent_path, new } => {
                let parent = tree::at_path(cx, txn, parent_path)?;
                Written::Item(Box::new(tree::create(cx, txn, parent.id, new)?))
            }
            Write::MakePath { path } => Written::Items(tree::make_path(cx, txn, path)?),
            Write::Move { id, parent, name } => {
                Written::Item(Box::new(tree::move_item(cx, txn, *id, *parent, name.as_deref())?))
            }
            Write::Rename { id, name } => {
                let parent = tree::load(cx, txn, *id)?.parent;
                Written::Item(Box::new(tree::move_item(cx, txn, *id, parent, Some(name))?))
            }
            Write::Delete { id } => Written::Deleted(tree::delete(cx, txn, *id)?),
            Write::SetPermissions { id, permissions } => {
                Written::Item(Box::new(tree::set_permissions(cx, txn, *id, permissions)?))
            }
            Write::SetData { id, data, version } => {
                Written::Version(data::set_data(cx, txn, *id, data, *version, data::Existing::Refuse)?)
            }
            Write::DeleteData { id, version } => Written::Current(data::delete_data(cx, txn, *id, *version)?),
        })
    }
}

#[allow(private_bounds)] // `Hooks` is sealed: only the drive's own kinds of calls.
impl<H: Hooks> Calls<H> {
    /// Applies every write in order, in one transaction: all of them or, if
    /// one fails, none (the error names which, by position and call). On a
    /// view that is one durable commit, shared with concurrent writers; in
    /// a batch, part of the batch. Returns each write's result, in order.
    pub fn apply(&self, writes: &[Write]) -> Result<Vec<Written>> {
        self.hooks.write("apply", |cx, txn| {
            writes
                .iter()
                .enumerate()
                .map(|(at, write)| {
                    write
                        .run(cx, txn)
                        .map_err(|err| err.context(format!("write {at} ({})", write.op())))
                })
                .collect()
        })
    }
}

//! The drive: `keel_drive`, `keel_drive_batch` and `keel_drive_migration`.
//!
//! Items, permissions, versions and data cross as UTF-8 JSON (the forms of
//! keel::drive::json). An item id is given as `(ptr, len)`: 16 raw bytes or
//! 32 hex characters; NULL with length 0 means the root. Ids in JSON are hex.

use std::ffi::{c_char, c_void};

use keel_core::drive::{
    json, Drive, DriveOptions, DriveView, ItemId, Migration, NewItem, OpenBatch, Permissions, Version, WalkOrder,
};
use keel_core::lmdb::Durability;
use keel_core::{Error, Result};
use serde_json::Value;

use crate::buf::{keel_buf, keel_bytes};
use crate::callback::{self, Output, Userdata};
use crate::ffi;
use crate::status::keel_status;

/// An open drive (from keel_drive_open) or a view of one as a user (from
/// keel_drive_as_user). Thread-safe; every write is durable when it returns.
pub struct keel_drive {
    drive: Drive,
    view: DriveView,
}

/// An open batch (from keel_drive_batch_begin): calls made with
/// keel_drive_batch_call share one transaction until keel_drive_batch_commit
/// or keel_drive_batch_abort, which also free it. Other writers of the drive
/// wait while it is open.
pub struct keel_drive_batch {
    open: OpenBatch,
}

/// Where a migration callback puts its result (keel_drive_migration_set).
/// Valid only during the callback.
pub struct keel_drive_migration {
    output: Output,
}

/// Converts one stored data version for a new schema. `input` (UTF-8 JSON,
/// `input_len` bytes, valid during the call) is `{"item": {...}, "version":
/// "1.2.3", "data": ..., "from_schema": n|null, "to_schema": n}`. Return
/// KEEL_OK (0) after keel_drive_migration_set(`output`, new data JSON), or
/// any other number to abort the whole migration (nothing changes; a
/// keel_status is the error's kind, any other number KEEL_INVALID_ARGUMENT).
///
/// Called on a keel thread (the one committing the write), one call at a
/// time per migration. It must not write to the drive (that would wait for
/// itself and gives KEEL_WOULD_DEADLOCK); reading is fine.
pub type keel_drive_migrate_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        input: *const c_char,
        input_len: usize,
        output: *mut keel_drive_migration,
    ) -> i32,
>;

/// The order of keel_drive_walk.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub enum keel_walk_order {
    /// Every item after all of its descendants.
    KEEL_WALK_CHILDREN_FIRST = 0,
    /// Every item before its descendants.
    KEEL_WALK_PARENTS_FIRST = 1,
}

unsafe fn id_arg(ptr: *const u8, len: usize) -> Result<ItemId> {
    // SAFETY: passed on from the export, whose caller keeps keel.h's contract.
    let raw = unsafe { ffi::bytes(ptr, len, "id")? };
    match raw.len() {
        0 => Ok(ItemId::ROOT),
        16 => Ok(ItemId::from_bytes(raw.try_into().expect("16 bytes"))),
        32 => ItemId::parse(std::str::from_utf8(raw).map_err(|_| Error::invalid_argument("id is not hex"))?),
        n => Err(Error::invalid_argument(format!(
            "an id is 16 bytes or 32 hex characters, not {n} bytes"
        ))),
    }
}

fn items_json(items: &[keel_core::drive::Item]) -> Value {
    Value::Array(items.iter().map(|item| item.to_json()).collect())
}

/// How to open a drive; keel_drive_options_default gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keel_drive_options {
    /// Whether commits are fsynced before writes return; default true.
    pub durable: bool,
    /// The LMDB map's size at open in bytes (it doubles whenever it fills);
    /// 0 for the default.
    pub initial_map_size: u64,
    /// Whether items may be created with a type that has no registered
    /// schema; default true.
    pub allow_types_without_schema: bool,
}

/// The default drive options: durable, the default map size, types without
/// a schema allowed.
#[no_mangle]
pub extern "C" fn keel_drive_options_default() -> keel_drive_options {
    ffi::call_value(|| {
        let defaults = DriveOptions::default();
        keel_drive_options {
            durable: defaults.durability == Durability::Durable,
            initial_map_size: 0,
            allow_types_without_schema: defaults.allow_types_without_schema,
        }
    })
}

impl ffi::PanicValue for keel_drive_options {
    fn on_panic() -> Self {
        // Not reached (making the defaults cannot panic); the safe choice.
        keel_drive_options {
            durable: true,
            initial_map_size: 0,
            allow_types_without_schema: false,
        }
    }
}

fn drive_options(given: &keel_drive_options) -> Result<DriveOptions> {
    let initial_map_size = match given.initial_map_size {
        0 => None,
        size => Some(
            usize::try_from(size).map_err(|_| Error::invalid_argument("initial_map_size does not fit in memory"))?,
        ),
    };
    Ok(DriveOptions {
        allow_types_without_schema: given.allow_types_without_schema,
        ..DriveOptions::with_durable(given.durable, initial_map_size)
    })
}

/// Opens (or creates) the drive file at `path` with `options` (NULL for the
/// defaults). Free with keel_drive_free. A file that is not a drive gives
/// KEEL_CORRUPT.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_open(
    path: *const c_char,
    path_len: usize,
    options: *const keel_drive_options,
    out: *mut *mut keel_drive,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let out = ffi::out_handle(out, "out")?;
        let path = ffi::utf8(path, path_len, "path")?;
        let given = ffi::optional(options)
            .copied()
            .unwrap_or_else(|| keel_drive_options_default());
        let options = drive_options(&given)?;
        let drive = Drive::open(std::path::Path::new(path), &options)?;
        let view = (*drive).clone();
        out.put(keel_drive { drive, view });
        Ok(())
    })
}

/// Frees a drive or view handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_free(drive: *mut keel_drive) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe { ffi::free_handle(drive) })
}

/// A view of `drive` as `user` with the roles `roles[0..roles_count]` (NULL
/// with 0 for none): every call through it enforces that user's permission
/// levels and returns KEEL_PERMISSION_DENIED when one is missing. Only the
/// unchecked drive offers this. Free with keel_drive_free.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_as_user(
    drive: *const keel_drive,
    user: *const c_char,
    user_len: usize,
    roles: *const keel_bytes,
    roles_count: usize,
    out: *mut *mut keel_drive,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let user = ffi::utf8(user, user_len, "user")?;
        let out = ffi::out_handle(out, "out")?;
        let roles = ffi::utf8_list(roles, roles_count, "roles")?;
        out.put(keel_drive {
            drive: drive.drive.clone(),
            view: drive.view.as_user(user, &roles)?,
        });
        Ok(())
    })
}

/// The item `id` as JSON in `*out`. With `type` (NULL for none), an item of
/// another type gives KEEL_CONFLICT.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_get(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    type_name: *const c_char,
    type_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let kind = ffi::optional_utf8(type_name, type_len, "type")?;
        let out = ffi::out_value(out, "out")?;
        let item = match kind {
            Some(kind) => drive.view.get_typed(id, kind)?,
            None => drive.view.get(id)?,
        };
        *out = keel_buf::from_json(&item.to_json());
        Ok(())
    })
}

/// Every item along `path` ("a/b/c", case-insensitive) as a JSON array,
/// first step first. A missing step gives KEEL_NOT_FOUND naming it.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_resolve(
    drive: *const keel_drive,
    path: *const c_char,
    path_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let path = ffi::utf8(path, path_len, "path")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&items_json(&drive.view.resolve(path)?));
        Ok(())
    })
}

/// The item at `path` ("a/b/c", case-insensitive; "" is the root) as
/// JSON in `*out`. A missing step gives KEEL_NOT_FOUND naming it.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_at_path(
    drive: *const keel_drive,
    path: *const c_char,
    path_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let path = ffi::utf8(path, path_len, "path")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.at_path(path)?.to_json());
        Ok(())
    })
}

/// Applies a JSON array of writes in one durable transaction, all or
/// nothing: each `{"op": "create", "parent": id|null, "item": {...}}`, or
/// `create_at`, `make_path`, `move`, `rename`, `delete`, `set_permissions`,
/// `set_data`, `delete_data` (see keel::drive::Write::from_json for their
/// fields). `*out` gets the JSON array of their results, in order. If one
/// fails, nothing is written and the error names it by position.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_apply(
    drive: *const keel_drive,
    writes_json: *const c_char,
    writes_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let writes = ffi::json(writes_json, writes_len, "writes")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&json::apply_all(&drive.view, &writes)?);
        Ok(())
    })
}

/// The path of item `id` ("a/b/c", names as given) as text in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_path_of(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_vec(drive.view.path_of(id)?.into_bytes());
        Ok(())
    })
}

/// Up to `limit` children of `parent` in name order (ignoring case), after
/// the child named `after` (NULL: from the first), as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_children(
    drive: *const keel_drive,
    parent: *const u8,
    parent_len: usize,
    after: *const c_char,
    after_len: usize,
    limit: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let parent = id_arg(parent, parent_len)?;
        let after = ffi::optional_utf8(after, after_len, "after")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&items_json(&drive.view.children(parent, after, limit)?));
        Ok(())
    })
}

/// Every readable item below `top` (the root for length 0) in `order` (a
/// keel_walk_order), as a JSON array from one consistent snapshot.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_walk(
    drive: *const keel_drive,
    top: *const u8,
    top_len: usize,
    order: u32,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let top = id_arg(top, top_len)?;
        let out = ffi::out_value(out, "out")?;
        let order = match order {
            0 => WalkOrder::ChildrenFirst,
            1 => WalkOrder::ParentsFirst,
            other => {
                return Err(Error::invalid_argument(format!(
                    "order {other} is not a keel_walk_order"
                )))
            }
        };
        *out = keel_buf::from_json(&items_json(&drive.view.walk(top, order)?));
        Ok(())
    })
}

/// Up to `limit` items of `type`, by id, after the id `after` (length 0:
/// from the first), as a JSON array.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_by_type(
    drive: *const keel_drive,
    type_name: *const c_char,
    type_len: usize,
    after: *const u8,
    after_len: usize,
    limit: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let kind = ffi::utf8(type_name, type_len, "type")?;
        let after = match after_len {
            0 => None,
            _ => Some(id_arg(after, after_len)?),
        };
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&items_json(&drive.view.by_type(kind, after, limit)?));
        Ok(())
    })
}

/// Creates an item under `parent` (length 0: the root) from `item_json`:
/// `{"name": "...", "type": "..." (optional), "permissions": {...} (optional)}`.
/// The new item's JSON goes in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_create(
    drive: *const keel_drive,
    parent: *const u8,
    parent_len: usize,
    item_json: *const c_char,
    item_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let parent = id_arg(parent, parent_len)?;
        let new = NewItem::from_json(&ffi::json(item_json, item_len, "item")?)?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.create(parent, &new)?.to_json());
        Ok(())
    })
}

/// Like keel_drive_create, under the item at `parent_path`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_create_at(
    drive: *const keel_drive,
    parent_path: *const c_char,
    parent_path_len: usize,
    item_json: *const c_char,
    item_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let parent_path = ffi::utf8(parent_path, parent_path_len, "parent_path")?;
        let new = NewItem::from_json(&ffi::json(item_json, item_len, "item")?)?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.create_at(parent_path, &new)?.to_json());
        Ok(())
    })
}

/// Makes every missing folder of `path` ("a/b/c") and puts the JSON array
/// of the path's items, root first, in `*out`; existing steps are kept.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_make_path(
    drive: *const keel_drive,
    path: *const c_char,
    path_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let path = ffi::utf8(path, path_len, "path")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&items_json(&drive.view.make_path(path)?));
        Ok(())
    })
}

/// Renames item `id` to `new_name` in its folder; the renamed item goes
/// in `*out`. A sibling of that name gives KEEL_ALREADY_EXISTS.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_rename(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    new_name: *const c_char,
    new_name_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let new_name = ffi::utf8(new_name, new_name_len, "new_name")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.rename(id, new_name)?.to_json());
        Ok(())
    })
}

/// Moves item `id` under `new_parent` (length 0: the root), renamed to
/// `new_name` unless it is NULL, in one transaction. A move under the item's
/// own descendant gives KEEL_INVALID_ARGUMENT. The moved item goes in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_move(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    new_parent: *const u8,
    new_parent_len: usize,
    new_name: *const c_char,
    new_name_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let new_parent = id_arg(new_parent, new_parent_len)?;
        let new_name = ffi::optional_utf8(new_name, new_name_len, "new_name")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.move_item(id, new_parent, new_name)?.to_json());
        Ok(())
    })
}

/// Deletes item `id` and everything below it; `*removed` (may be NULL)
/// receives how many items were removed.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_delete(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    removed: *mut u64,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let count = drive.view.delete(id)?;
        ffi::put_optional(removed, count);
        Ok(())
    })
}

/// Replaces item `id`'s own permissions with `permissions_json`
/// (`{"default": "read", "users": {"ann": "admin"}, "roles": {}}`).
#[no_mangle]
pub unsafe extern "C" fn keel_drive_set_permissions(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    permissions_json: *const c_char,
    permissions_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let permissions = Permissions::from_json(&ffi::json(permissions_json, permissions_len, "permissions")?)?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.view.set_permissions(id, &permissions)?.to_json());
        Ok(())
    })
}

/// Stores `data_json` as `version` ("1.2.3"; NULL: the next patch) of
/// typed item `id`, checked against its type's schema. The version written
/// goes in `*out` as text.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_set_data(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    data_json: *const c_char,
    data_len: usize,
    version: *const c_char,
    version_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let data = ffi::json(data_json, data_len, "data")?;
        let version = ffi::optional_utf8(version, version_len, "version")?
            .map(Version::parse)
            .transpose()?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_vec(drive.view.set_data(id, &data, version)?.to_string().into_bytes());
        Ok(())
    })
}

/// Stores `data_json` as `version` ("1.2.3", required) of typed item `id`,
/// checked against its type's schema, replacing that version's data if it
/// is stored (the old data is lost; `keel_drive_set_data` refuses an
/// existing version with `KEEL_ALREADY_EXISTS`). The version written goes
/// in `*out` as text.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_replace_data(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    data_json: *const c_char,
    data_len: usize,
    version: *const c_char,
    version_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let data = ffi::json(data_json, data_len, "data")?;
        let version = Version::parse(ffi::utf8(version, version_len, "version")?)?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_vec(drive.view.replace_data(id, &data, version)?.to_string().into_bytes());
        Ok(())
    })
}

/// Item `id`'s data at `version` (NULL: current) as
/// `{"version": "1.2.3", "data": ...}` in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_get_data(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    version: *const c_char,
    version_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let version = ffi::optional_utf8(version, version_len, "version")?
            .map(Version::parse)
            .transpose()?;
        let out = ffi::out_value(out, "out")?;
        // The stored text is handed on as is: no parse and re-serialize.
        let (version, data) = drive.view.get_data_text(id, version)?;
        let text = format!("{{\"version\":\"{version}\",\"data\":{data}}}");
        *out = keel_buf::from_vec(text.into_bytes());
        Ok(())
    })
}

/// Every stored version of item `id`'s data, newest first, as a JSON array
/// of `{"version", "updated", "updater", "size"}`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_versions(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let out = ffi::out_value(out, "out")?;
        let versions = drive.view.versions(id)?;
        *out = keel_buf::from_json(&Value::Array(versions.iter().map(|v| v.to_json()).collect()));
        Ok(())
    })
}

/// Deletes one version of item `id`'s data; the current version afterwards
/// goes in `*out` as text (empty when no data is left).
#[no_mangle]
pub unsafe extern "C" fn keel_drive_delete_data(
    drive: *const keel_drive,
    id: *const u8,
    id_len: usize,
    version: *const c_char,
    version_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let id = id_arg(id, id_len)?;
        let version = Version::parse(ffi::utf8(version, version_len, "version")?)?;
        let out = ffi::out_value(out, "out")?;
        let current = drive.view.delete_data(id, version)?;
        *out = keel_buf::from_vec(current.map(|v| v.to_string()).unwrap_or_default().into_bytes());
        Ok(())
    })
}

/// Registers `schema_json` (a JSON Schema) as `version` of `type`'s schema.
/// `*changed` (may be NULL) is false when that version was already current
/// (a no-op); a lower version gives KEEL_CONFLICT. A higher one calls
/// `migrate` (may be NULL: data kept as is) for every stored version of
/// every item of the type and validates the results, all in one
/// transaction: any failure changes nothing.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_set_schema(
    drive: *const keel_drive,
    type_name: *const c_char,
    type_len: usize,
    schema_json: *const c_char,
    schema_len: usize,
    version: u32,
    migrate: keel_drive_migrate_fn,
    userdata: *mut c_void,
    changed: *mut bool,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let kind = ffi::utf8(type_name, type_len, "type")?;
        let schema = ffi::json(schema_json, schema_len, "schema")?;
        let result = match migrate {
            Some(function) => {
                let userdata = Userdata::new(userdata);
                let mut call = move |step: &Migration<'_>, data: Value| run_migration(function, userdata, step, data);
                drive.view.set_schema(kind, &schema, version, Some(&mut call))?
            }
            None => drive.view.set_schema(kind, &schema, version, None)?,
        };
        ffi::put_optional(changed, result);
        Ok(())
    })
}

type MigrateFunction = unsafe extern "C" fn(*mut c_void, *const c_char, usize, *mut keel_drive_migration) -> i32;

unsafe fn run_migration(
    function: MigrateFunction,
    userdata: Userdata,
    step: &Migration<'_>,
    data: Value,
) -> Result<Value> {
    let input = serde_json::json!({
        "item": step.item.to_json(),
        "version": step.version.to_string(),
        "data": data,
        "from_schema": step.from_schema,
        "to_schema": step.to_schema,
    })
    .to_string();
    let mut output = keel_drive_migration {
        output: Output::default(),
    };
    // SAFETY: C gave this function and userdata to keel_drive_set_schema, whose contract covers this call.
    let status = unsafe { function(userdata.as_ptr(), input.as_ptr().cast(), input.len(), &mut output) };
    if status == 0 && !output.output.is_set() {
        return Err(Error::invalid_argument(
            "the migration callback returned KEEL_OK without a result",
        ));
    }
    let bytes = callback::outcome(status, output.output, || "the migration callback".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid_argument(format!("migration result is not JSON: {e}")))
}

/// Inside a keel_drive_migrate_fn: sets the migrated data (UTF-8 JSON,
/// copied). Calling it again replaces the result.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_migration_set(
    migration: *mut keel_drive_migration,
    json: *const c_char,
    json_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let migration = ffi::handle_mut(migration, "migration")?;
        let text = ffi::utf8(json, json_len, "json")?;
        migration.output.set(text.as_ptr(), text.len())
    })
}

/// `type`'s schema as `{"version": n, "schema": {...}}`, or `null`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_schema(
    drive: *const keel_drive,
    type_name: *const c_char,
    type_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let kind = ffi::utf8(type_name, type_len, "type")?;
        let out = ffi::out_value(out, "out")?;
        let value = match drive.view.schema(kind)? {
            Some((version, schema)) => serde_json::json!({"version": version, "schema": schema}),
            None => Value::Null,
        };
        *out = keel_buf::from_json(&value);
        Ok(())
    })
}

/// Writes a consistent, compacted copy of the drive to `dest` while it is
/// in use; durable when this returns.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_backup(
    drive: *const keel_drive,
    dest: *const c_char,
    dest_len: usize,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let dest = ffi::utf8(dest, dest_len, "dest")?;
        drive.drive.backup(std::path::Path::new(dest))
    })
}

/// The drive file's path (canonical, UTF-8 lossy) as text in `*out`.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_path(drive: *const keel_drive, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let out = ffi::out_value(out, "out")?;
        let path = drive.drive.path().to_string_lossy().into_owned();
        *out = keel_buf::from_vec(path.into_bytes());
        Ok(())
    })
}

/// Checks the whole drive file in a child process and puts the report in
/// `*out` as JSON (`{"file", "tables", "problems", ...}`): a damaged file
/// gives a report listing what is wrong, never a crash of this process.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_verify(drive: *const keel_drive, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&drive.drive.verify()?.to_json());
        Ok(())
    })
}

/// keel_drive_verify for the drive file at `path`, without opening it in
/// this process.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_verify_file(
    path: *const c_char,
    path_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let path = ffi::utf8(path, path_len, "path")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::from_json(&keel_core::drive::verify_file(path)?.to_json());
        Ok(())
    })
}

/// The drive's storage and commit counters as a JSON object in `*out`:
/// the fields of keel::lmdb::EnvStats (`map_size`, `used`, `readers`,
/// `batches`, `writes`, ...), as keel_stats_json lists them.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_stats_json(drive: *const keel_drive, out: *mut keel_buf) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let out = ffi::out_value(out, "out")?;
        *out = keel_buf::serialized(&drive.drive.env().stats())?;
        Ok(())
    })
}

/// Opens a batch on `drive` (or a view: the same checks apply). A plain
/// write to the drive from this thread while it is open gives
/// KEEL_WOULD_DEADLOCK. End it with keel_drive_batch_commit or
/// keel_drive_batch_abort, which free it.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_batch_begin(
    drive: *const keel_drive,
    out: *mut *mut keel_drive_batch,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let drive = ffi::handle(drive, "drive")?;
        let out = ffi::out_handle(out, "out")?;
        out.put(keel_drive_batch {
            open: drive.view.begin_batch()?,
        });
        Ok(())
    })
}

/// Runs one call in the batch, described in JSON: `{"op": "create",
/// "parent": id|null, "item": {...}}`, and likewise `get`, `resolve`,
/// `at_path`, `path_of`, `children`, `by_type`, `create_at`, `make_path`,
/// `move`, `rename`, `delete`, `set_permissions`, `set_data`, `get_data`,
/// `versions`, `delete_data`, `schema`, `set_schema` (see the Rust docs of
/// keel::drive::json::apply for each call's fields). The result's JSON goes
/// in `*out`. A call that fails changes nothing; the batch stays open.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_batch_call(
    batch: *const keel_drive_batch,
    call_json: *const c_char,
    call_len: usize,
    out: *mut keel_buf,
) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let batch = ffi::handle(batch, "batch")?;
        let call = ffi::json(call_json, call_len, "call")?;
        let out = ffi::out_value(out, "out")?;
        let result = json::apply(&batch.open, &call)?;
        *out = keel_buf::from_json(&result);
        Ok(())
    })
}

/// Commits every call of the batch durably and frees it. NULL gives
/// KEEL_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_batch_commit(batch: *mut keel_drive_batch) -> keel_status {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call(|| unsafe {
        let batch = ffi::take_handle(batch).ok_or_else(|| Error::invalid_argument("batch is NULL"))?;
        batch.open.commit()
    })
}

/// Undoes every call of the batch and frees it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn keel_drive_batch_abort(batch: *mut keel_drive_batch) {
    // SAFETY: the caller keeps keel.h's contract for these arguments.
    ffi::call_void(|| unsafe {
        if let Some(batch) = ffi::take_handle(batch) {
            // From another thread than the opening one the abort is refused
            // and the drop aborts instead (see keel::drive::OpenBatch).
            let _ = batch.open.abort();
        }
    })
}

//! The JSON forms of drive values, shared by the C and Python surfaces (and
//! anyone storing or sending items): ids as 32 hex characters, versions as
//! `"major.minor.patch"`, levels by name.
//!
//! ```json
//! {"id": "…32 hex…", "parent": "…", "name": "Report", "type": "doc",
//!  "created": 1700000000000, "creator": "ann", "children": 0,
//!  "data_size": 42, "version": "1.0.2", "updated": 1700000000000,
//!  "updater": "bob",
//!  "permissions": {"default": "read", "users": {"ann": "admin"}, "roles": {}}}
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::apply::{Write, Written};
use super::data::{Version, VersionInfo};
use super::id::ItemId;
use super::item::{Item, NewItem};
use super::perms::{Level, Permissions};
use crate::{Error, Result};

impl Item {
    /// The item as a JSON object (see the module docs).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "parent": self.parent.to_string(),
            "name": self.name,
            "type": self.kind,
            "created": self.created,
            "creator": self.creator,
            "children": self.children,
            "data_size": self.data_size,
            "version": self.version.map(|v| v.to_string()),
            "updated": self.updated,
            "updater": self.updater,
            "permissions": self.permissions.to_json(),
        })
    }
}

impl NewItem {
    /// Reads `{"name": …, "type": … (optional), "permissions": … (optional)}`.
    pub fn from_json(value: &Value) -> Result<NewItem> {
        let object = as_object(value, "a new item")?;
        let name = match object.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => return Err(Error::invalid_argument("a new item needs a \"name\" string")),
        };
        let kind = match object.get("type") {
            None | Some(Value::Null) => None,
            Some(Value::String(kind)) => Some(kind.clone()),
            Some(_) => return Err(Error::invalid_argument("an item's \"type\" is a string or null")),
        };
        let permissions = match object.get("permissions") {
            None | Some(Value::Null) => Permissions::default(),
            Some(value) => Permissions::from_json(value)?,
        };
        refuse_unknown(object, &["name", "type", "permissions"], "a new item")?;
        Ok(NewItem {
            name,
            kind,
            permissions,
        })
    }
}

impl Permissions {
    /// `{"default": "read" | null, "users": {name: level}, "roles": {name: level}}`.
    pub fn to_json(&self) -> Value {
        let levels = |map: &BTreeMap<String, Level>| -> Map<String, Value> {
            map.iter()
                .map(|(name, level)| (name.clone(), Value::from(level.name())))
                .collect()
        };
        json!({
            "default": self.default.map(Level::name),
            "users": levels(&self.users),
            "roles": levels(&self.roles),
        })
    }

    /// Reads the form [`to_json`](Permissions::to_json) writes; every key is
    /// optional.
    pub fn from_json(value: &Value) -> Result<Permissions> {
        let object = as_object(value, "permissions")?;
        refuse_unknown(object, &["default", "users", "roles"], "permissions")?;
        let default = match object.get("default") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(Level::parse(name)?),
            Some(_) => {
                return Err(Error::invalid_argument(
                    "permissions \"default\" is a level name or null",
                ))
            }
        };
        let levels = |key: &str| -> Result<BTreeMap<String, Level>> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(name, level)| match level {
                        Value::String(level) => Ok((name.clone(), Level::parse(level)?)),
                        _ => Err(Error::invalid_argument(format!(
                            "permissions {key}.{name} is not a level name"
                        ))),
                    })
                    .collect(),
                Some(_) => Err(Error::invalid_argument(format!("permissions \"{key}\" is an object"))),
            }
        };
        Ok(Permissions {
            default,
            users: levels("users")?,
            roles: levels("roles")?,
        })
    }
}

impl VersionInfo {
    /// `{"version": "1.2.3", "updated": ms, "updater": "…", "size": bytes}`.
    pub fn to_json(&self) -> Value {
        json!({
            "version": self.version.to_string(),
            "updated": self.updated,
            "updater": self.updater,
            "size": self.size,
        })
    }
}

/// An id from its JSON form (32 hex characters).
pub fn id_from_json(value: &Value) -> Result<ItemId> {
    match value {
        Value::String(text) => ItemId::parse(text),
        _ => Err(Error::invalid_argument("an item id is a string of 32 hex characters")),
    }
}

/// A version from its JSON form (`"1.2.3"`).
pub fn version_from_json(value: &Value) -> Result<Version> {
    match value {
        Value::String(text) => Version::parse(text),
        _ => Err(Error::invalid_argument("a version is a \"major.minor.patch\" string")),
    }
}

/// Runs one call described in JSON inside `batch` and returns its result in
/// JSON: the batch interface of surfaces that cannot hold a closure (C).
///
/// `{"op": "create", "parent": id|null, "item": {...}}` → item;
/// `create_at` (`parent_path`, `item`) → item; `get` (`id`, `type`?) → item;
/// `resolve` / `make_path` (`path`) → `[item]`; `at_path` (`path`) → item;
/// `path_of` (`id`) → "a/b"; `children` (`parent`, `after`?, `limit`?) →
/// `[item]`; `by_type` (`type`, `after`?, `limit`?) → `[item]`; `move`
/// (`id`, `parent`, `name`?) → item; `rename` (`id`, `name`) → item;
/// `delete` (`id`) → count; `set_permissions` (`id`, `permissions`) → item;
/// `set_data` (`id`, `data`, `version`?) → "1.2.3"; `get_data` (`id`,
/// `version`?) → {"version", "data"}; `versions` (`id`) → `[info]`;
/// `delete_data` (`id`, `version`) → "1.2.3"|null; `schema` (`type`) →
/// {"version", "schema"}|null; `set_schema` (`type`, `schema`, `version`) →
/// bool (no migration callback here).
#[allow(private_bounds)] // `Hooks` is sealed: a view, a batch or an open batch.
pub fn apply<H: super::calls::Hooks>(batch: &super::Calls<H>, call: &Value) -> Result<Value> {
    let object = as_object(call, "a batch call")?;
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_argument("a batch call needs an \"op\" string"))?;
    let field = |key: &str| object.get(key).unwrap_or(&Value::Null);
    let text = |key: &str| -> Result<&str> {
        field(key)
            .as_str()
            .ok_or_else(|| Error::invalid_argument(format!("{op}: \"{key}\" must be a string")))
    };
    let optional_text = |key: &str| -> Result<Option<&str>> {
        match field(key) {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            _ => Err(Error::invalid_argument(format!(
                "{op}: \"{key}\" must be a string or null"
            ))),
        }
    };
    let id = |key: &str| -> Result<ItemId> {
        match field(key) {
            Value::Null => Ok(ItemId::ROOT),
            other => id_from_json(other),
        }
    };
    let limit = || -> Result<usize> {
        match field("limit") {
            Value::Null => Ok(usize::MAX),
            value => value
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| Error::invalid_argument(format!("{op}: \"limit\" must be a count"))),
        }
    };
    let version = |key: &str| -> Result<Option<Version>> { optional_text(key)?.map(Version::parse).transpose() };
    let items = |items: Vec<Item>| Value::Array(items.iter().map(Item::to_json).collect());
    Ok(match op {
        "get" => match optional_text("type")? {
            Some(kind) => batch.get_typed(id("id")?, kind)?.to_json(),
            None => batch.get(id("id")?)?.to_json(),
        },
        "resolve" => items(batch.resolve(text("path")?)?),
        "at_path" => batch.at_path(text("path")?)?.to_json(),
        "path_of" => Value::from(batch.path_of(id("id")?)?),
        "children" => items(batch.children(id("parent")?, optional_text("after")?, limit()?)?),
        "by_type" => {
            let after = optional_text("after")?.map(ItemId::parse).transpose()?;
            items(batch.by_type(text("type")?, after, limit()?)?)
        }
        "create" => batch
            .create(id("parent")?, &NewItem::from_json(field("item"))?)?
            .to_json(),
        "create_at" => batch
            .create_at(text("parent_path")?, &NewItem::from_json(field("item"))?)?
            .to_json(),
        "make_path" => items(batch.make_path(text("path")?)?),
        "move" => batch
            .move_item(id("id")?, id("parent")?, optional_text("name")?)?
            .to_json(),
        "rename" => batch.rename(id("id")?, text("name")?)?.to_json(),
        "delete" => Value::from(batch.delete(id("id")?)?),
        "set_permissions" => batch
            .set_permissions(id("id")?, &Permissions::from_json(field("permissions"))?)?
            .to_json(),
        "set_data" => Value::from(
            batch
                .set_data(id("id")?, field("data"), version("version")?)?
                .to_string(),
        ),
        "get_data" => {
            let (version, data) = batch.get_data(id("id")?, version("version")?)?;
            json!({"version": version.to_string(), "data": data})
        }
        "versions" => Value::Array(batch.versions(id("id")?)?.iter().map(VersionInfo::to_json).collect()),
        "delete_data" => {
            let version =
                version("version")?.ok_or_else(|| Error::invalid_argument("delete_data needs a \"version\""))?;
            batch.delete_data(id("id")?, version)?.map(|v| v.to_string()).into()
        }
        "schema" => match batch.schema(text("type")?)? {
            Some((version, schema)) => json!({"version": version, "schema": schema}),
            None => Value::Null,
        },
        "set_schema" => {
            let version = field("version")
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| Error::invalid_argument("set_schema needs a \"version\" number"))?;
            Value::from(batch.set_schema(text("type")?, field("schema"), version, None)?)
        }
        other => return Err(Error::invalid_argument(format!("unknown batch call {other:?}"))),
    })
}

impl super::DriveOptions {
    /// Reads `{"durable": bool, "initial_map_size": bytes,
    /// "allow_types_without_schema": bool}` (each optional; see
    /// [`DriveOptions`](super::DriveOptions)).
    pub fn from_json(value: &Value) -> Result<super::DriveOptions> {
        let object = as_object(value, "drive options")?;
        refuse_unknown(
            object,
            &["durable", "initial_map_size", "allow_types_without_schema"],
            "drive options",
        )?;
        let durable = match object.get("durable") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(durable)) => *durable,
            Some(_) => return Err(Error::invalid_argument("drive options \"durable\" is true or false")),
        };
        let initial_map_size = match object.get("initial_map_size") {
            None | Some(Value::Null) => None,
            Some(size) => Some(
                size.as_u64()
                    .and_then(|size| usize::try_from(size).ok())
                    .ok_or_else(|| Error::invalid_argument("drive options \"initial_map_size\" is a byte count"))?,
            ),
        };
        let allow_types_without_schema = match object.get("allow_types_without_schema") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(allow)) => *allow,
            Some(_) => {
                return Err(Error::invalid_argument(
                    "drive options \"allow_types_without_schema\" is true or false",
                ))
            }
        };
        Ok(super::DriveOptions {
            allow_types_without_schema,
            ..super::DriveOptions::with_durable(durable, initial_map_size)
        })
    }
}

impl Write {
    /// Reads a write in the form of [`apply`]'s calls: `{"op": "create",
    /// "parent": id|null, "item": {...}}`, `create_at` (`parent_path`,
    /// `item`), `make_path` (`path`), `move` (`id`, `parent`, `name`?),
    /// `rename` (`id`, `name`), `delete` (`id`), `set_permissions` (`id`,
    /// `permissions`), `set_data` (`id`, `data`, `version`?), `delete_data`
    /// (`id`, `version`).
    pub fn from_json(call: &Value) -> Result<Write> {
        let object = as_object(call, "a write")?;
        let op = object
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_argument("a write needs an \"op\" string"))?;
        let field = |key: &str| object.get(key).unwrap_or(&Value::Null);
        let text = |key: &str| -> Result<String> {
            field(key)
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::invalid_argument(format!("{op}: \"{key}\" must be a string")))
        };
        let id = |key: &str| -> Result<ItemId> {
            match field(key) {
                Value::Null => Ok(ItemId::ROOT),
                other => id_from_json(other),
            }
        };
        let version = || -> Result<Option<Version>> {
            match field("version") {
                Value::Null => Ok(None),
                other => version_from_json(other).map(Some),
            }
        };
        Ok(match op {
            "create" => Write::Create {
                parent: id("parent")?,
                new: NewItem::from_json(field("item"))?,
            },
            "create_at" => Write::CreateAt {
                parent_path: text("parent_path")?,
                new: NewItem::from_json(field("item"))?,
            },
            "make_path" => Write::MakePath { path: text("path")? },
            "move" => Write::Move {
                id: id("id")?,
                parent: id("parent")?,
                name: match field("name") {
                    Value::Null => None,
                    _ => Some(text("name")?),
                },
            },
            "rename" => Write::Rename {
                id: id("id")?,
                name: text("name")?,
            },
            "delete" => Write::Delete { id: id("id")? },
            "set_permissions" => Write::SetPermissions {
                id: id("id")?,
                permissions: Permissions::from_json(field("permissions"))?,
            },
            "set_data" => Write::SetData {
                id: id("id")?,
                data: field("data").clone(),
                version: version()?,
            },
            "delete_data" => Write::DeleteData {
                id: id("id")?,
                version: version()?.ok_or_else(|| Error::invalid_argument("delete_data needs a \"version\""))?,
            },
            other => return Err(Error::invalid_argument(format!("unknown write {other:?}"))),
        })
    }
}

impl Written {
    /// The result in the JSON form of the call's own result: an item, a
    /// list of items, a count, `"1.2.3"`, or `"1.2.3"`/null.
    pub fn to_json(&self) -> Value {
        match self {
            Written::Item(item) => item.to_json(),
            Written::Items(items) => Value::Array(items.iter().map(Item::to_json).collect()),
            Written::Deleted(count) => Value::from(*count),
            Written::Version(version) => Value::from(version.to_string()),
            Written::Current(current) => current.map(|v| v.to_string()).into(),
        }
    }
}

/// Applies a JSON array of writes (see [`Write::from_json`]) in one
/// transaction with [`Calls::apply`](super::Calls::apply); returns the
/// array of their results.
#[allow(private_bounds)] // `Hooks` is sealed: a view, a batch or an open batch.
pub fn apply_all<H: super::calls::Hooks>(calls: &super::Calls<H>, writes: &Value) -> Result<Value> {
    let writes = writes
        .as_array()
        .ok_or_else(|| Error::invalid_argument("writes must be a JSON array"))?
        .iter()
        .enumerate()
        .map(|(at, write)| Write::from_json(write).map_err(|err| err.context(format!("write {at}"))))
        .collect::<Result<Vec<Write>>>()?;
    let written = calls.apply(&writes)?;
    Ok(Value::Array(written.iter().map(Written::to_json).collect()))
}

fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| Error::invalid_argument(format!("{what} must be a JSON object")))
}

fn refuse_unknown(object: &Map<String, Value>, known: &[&str], what: &str) -> Result<()> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(Error::invalid_argument(format!("{what} has an unknown key {key:?}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_options_read_durability_and_map_size_and_refuse_the_rest() {
        use crate::drive::DriveOptions;
        use crate::lmdb::Durability;
        let options = DriveOptions::from_json(&json!({"durable": false, "initial_map_size": 1 << 20})).unwrap();
        assert_eq!(options.durability, Durability::NoSyncRisksLastCommits);
        assert_eq!(options.initial_map_size, 1 << 20);
        assert_eq!(DriveOptions::from_json(&json!({})).unwrap(), DriveOptions::default());
        for bad in [
            json!({"durable": "no"}),
            json!({"initial_map_size": -1}),
            json!({"sync": true}),
            json!([]),
        ] {
            let err = DriveOptions::from_json(&bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn permissions_and_new_items_round_trip_and_reject_bad_shapes() {
        let value = json!({"default": "read", "users": {"ann": "admin"}, "roles": {"ops": "deny"}});
        let perms = Permissions::from_json(&value).unwrap();
        assert_eq!(perms.to_json(), value);
        let new = NewItem::from_json(&json!({"name": "a", "type": "doc", "permissions": value})).unwrap();
        assert_eq!((new.name.as_str(), new.kind.as_deref()), ("a", Some("doc")));
        for bad in [
            json!([]),
            json!({"type": "doc"}),
            json!({"name": 3}),
            json!({"name": "a", "colour": "red"}),
            json!({"name": "a", "permissions": {"users": {"ann": "owner"}}}),
        ] {
            let err = NewItem::from_json(&bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}

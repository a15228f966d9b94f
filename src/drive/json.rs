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

//! The drive's LMDB databases and the typed keys that index them.
//!
//! | table           | key                               | value                      |
//! |-----------------|-----------------------------------|----------------------------|
//! | `drive.items`   | item id                           | [`Item`]                   |
//! | `drive.children`| parent id ++ folded name          | child id                   |
//! | `drive.types`   | type ++ `\0` ++ item id           | (empty)                    |
//! | `drive.data`    | item id ++ major ++ minor ++ patch| [`DataRecord`]             |
//! | `drive.schemas` | type                              | [`SchemaRecord`]           |
//! | `drive.meta`    | `"format"`                        | magic and format version   |
//!
//! `drive.meta` is read and written by [`crate::lmdb::format`] only. Every
//! other value is sealed with a checksum of its key and bytes (format 2 on;
//! see [`crate::lmdb::seal`]). Child keys hold the name's full Unicode case
//! folding of its NFC form (format 2 on; format 1 held `to_lowercase`).

use super::data::{DataRecord, Version};
use super::id::ItemId;
use super::item::Item;
use super::schema::SchemaRecord;
use crate::lmdb::{malformed, utf8, Codec, Decoder, Env, Table};
use crate::Result;

/// The tables' database names.
pub(crate) const ITEMS: &str = "drive.items";
pub(crate) const CHILDREN: &str = "drive.children";
pub(crate) const TYPES: &str = "drive.types";
pub(crate) const DATA: &str = "drive.data";
pub(crate) const SCHEMAS: &str = "drive.schemas";

/// Handles to every drive table (cheap to copy).
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    pub items: Table<ItemId, Item>,
    pub children: Table<ChildKey, ItemId>,
    pub types: Table<TypeKey, ()>,
    pub data: Table<DataKey, DataRecord>,
    pub schemas: Table<String, SchemaRecord>,
}

impl Tables {
    /// Opens (creating) every table in `env`.
    pub fn open(env: &Env) -> Result<Tables> {
        let file = env.static_path();
        Ok(Tables {
            items: Table::new(env.database(ITEMS)?, "drive items", file),
            children: Table::new(env.database(CHILDREN)?, "drive child index", file),
            types: Table::new(env.database(TYPES)?, "drive type index", file),
            data: Table::new(env.database(DATA)?, "drive data", file),
            schemas: Table::new(env.database(SCHEMAS)?, "drive schemas", file),
        })
    }
}

/// A child-index key: children sort by folded name within their parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildKey {
    pub parent: ItemId,
    pub folded: String,
}

impl ChildKey {
    /// The key prefix shared by all of `parent`'s children.
    pub fn prefix(parent: ItemId) -> Vec<u8> {
        parent.as_bytes().to_vec()
    }

    /// The first key after the child called `folded` (names hold no NUL, so
    /// appending one gives the smallest greater key).
    pub fn after(parent: ItemId, folded: &str) -> Vec<u8> {
        let mut key = ChildKey::prefix(parent);
        key.extend_from_slice(folded.as_bytes());
        key.push(0);
        key
    }
}

impl Codec for ChildKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.parent.as_bytes());
        out.extend_from_slice(self.folded.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<ChildKey> {
        let mut d = Decoder::new(bytes);
        let parent = ItemId::from_bytes(d.array()?);
        let folded = utf8(d.rest())?.to_owned();
        Ok(ChildKey { parent, folded })
    }
}

/// A type-index key: items of one type, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeKey {
    pub kind: String,
    pub id: ItemId,
}

impl TypeKey {
    /// The key prefix shared by all items of `kind`.
    pub fn prefix(kind: &str) -> Vec<u8> {
        let mut key = kind.as_bytes().to_vec();
        key.push(0);
        key
    }

    /// The first key after item `id` of `kind`.
    pub fn after(kind: &str, id: ItemId) -> Vec<u8> {
        let mut key = TypeKey::prefix(kind);
        key.extend_from_slice(id.as_bytes());
        key.push(0);
        key
    }
}

impl Codec for TypeKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TypeKey::prefix(&self.kind));
        out.extend_from_slice(self.id.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<TypeKey> {
        let split = bytes
            .len()
            .checked_sub(17)
            .ok_or_else(|| malformed("type key shorter than an item id"))?;
        let (kind, rest) = bytes.split_at(split);
        let mut d = Decoder::new(rest);
        if d.u8()? != 0 {
            return Err(malformed("type key without its separator"));
        }
        Ok(TypeKey {
            kind: utf8(kind)?.to_owned(),
            id: ItemId::decode(d.rest())?,
        })
    }
}

/// A data key: an item's versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataKey {
    pub id: ItemId,
    pub version: Version,
}

impl DataKey {
    /// The key prefix shared by all of `id`'s versions.
    pub fn prefix(id: ItemId) -> Vec<u8> {
        id.as_bytes().to_vec()
    }
}

impl Codec for DataKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        self.version.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<DataKey> {
        let mut d = Decoder::new(bytes);
        let id = ItemId::from_bytes(d.array()?);
        let version = Version::decode(d.rest())?;
        Ok(DataKey { id, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let id = ItemId::random().unwrap();
        let child = ChildKey {
            parent: id,
            folded: "ä.b".into(),
        };
        assert_eq!(ChildKey::decode(&child.to_bytes()).unwrap(), child);
        let typed = TypeKey {
            kind: "acme:doc".into(),
            id,
        };
        assert_eq!(TypeKey::decode(&typed.to_bytes()).unwrap(), typed);
        let data = DataKey {
            id,
            version: Version::new(1, 0, 300),
        };
        assert_eq!(DataKey::decode(&data.to_bytes()).unwrap(), data);
    }

    #[test]
    fn data_keys_sort_by_version() {
        let id = ItemId::random().unwrap();
        let key = |a, b, c| {
            DataKey {
                id,
                version: Version::new(a, b, c),
            }
            .to_bytes()
        };
        assert!(key(0, 0, 9) < key(0, 1, 0));
        assert!(key(0, 9, 9) < key(1, 0, 0));
        assert!(key(1, 0, 255) < key(1, 0, 256));
    }
}

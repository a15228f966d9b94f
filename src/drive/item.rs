//! [`Item`]: what the drive stores about one item, and its byte layout.

use super::data::Version;
use super::id::ItemId;
use super::perms::Permissions;
use crate::lmdb::{encode_len_prefixed, malformed, Codec, Decoder};
use crate::Result;

/// One drive item as stored: identity, place in the tree, type, history
/// stamps, child count, current data version and permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The item's identity.
    pub id: ItemId,
    /// Its parent ([`ItemId::ROOT`] for top-level items).
    pub parent: ItemId,
    /// Its name as given (lookups ignore case).
    pub name: String,
    /// Its type, if any; only typed items carry data.
    pub kind: Option<String>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created: u64,
    /// Who created it.
    pub creator: String,
    /// How many children it has.
    pub children: u64,
    /// The size in bytes of its current data version's JSON (0 without data).
    pub data_size: u64,
    /// Its current (highest) data version, if it has data.
    pub version: Option<Version>,
    /// When it (or its data) last changed, in milliseconds since the epoch.
    pub updated: u64,
    /// Who last changed it.
    pub updater: String,
    /// Its own permissions (empty: inherited from the parent).
    pub permissions: Permissions,
}

/// What to give when creating an item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewItem {
    /// The name (normalized to NFC; no `/`, control characters or outer
    /// whitespace; unique within the parent under full case folding).
    pub name: String,
    /// The type, if the item is to carry data.
    pub kind: Option<String>,
    /// Its own permissions (default: none, so it inherits its parent's).
    pub permissions: Permissions,
}

impl NewItem {
    /// An untyped item (a folder) called `name`.
    pub fn named(name: impl Into<String>) -> NewItem {
        NewItem {
            name: name.into(),
            ..NewItem::default()
        }
    }

    /// An item called `name` of type `kind`.
    pub fn typed(name: impl Into<String>, kind: impl Into<String>) -> NewItem {
        NewItem {
            name: name.into(),
            kind: Some(kind.into()),
            ..NewItem::default()
        }
    }

    /// The same item with these permissions.
    pub fn with_permissions(mut self, permissions: Permissions) -> NewItem {
        self.permissions = permissions;
        self
    }
}

/// Layout version of the stored item record, its first byte.
const ITEM_FORMAT: u8 = 1;

impl Codec for Item {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(ITEM_FORMAT);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.parent.as_bytes());
        encode_len_prefixed(out, self.name.as_bytes());
        match &self.kind {
            Some(kind) => {
                out.push(1);
                encode_len_prefixed(out, kind.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.created.to_be_bytes());
        encode_len_prefixed(out, self.creator.as_bytes());
        out.extend_from_slice(&self.children.to_be_bytes());
        out.extend_from_slice(&self.data_size.to_be_bytes());
        match self.version {
            Some(version) => {
                out.push(1);
                version.encode(out);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.updated.to_be_bytes());
        encode_len_prefixed(out, self.updater.as_bytes());
        self.permissions.encode(out);
    }

    fn decode(bytes: &[u8]) -> Result<Item> {
        let mut d = Decoder::new(bytes);
        match d.u8()? {
            ITEM_FORMAT => {}
            other => return Err(malformed(format!("item layout {other}"))),
        }
        let item = Item {
            id: ItemId::from_bytes(d.array()?),
            parent: ItemId::from_bytes(d.array()?),
            name: d.str()?.to_owned(),
            kind: match d.u8()? {
                0 => None,
                1 => Some(d.str()?.to_owned()),
                other => return Err(malformed(format!("kind flag {other}"))),
            },
            created: d.u64()?,
            creator: d.str()?.to_owned(),
            children: d.u64()?,
            data_size: d.u64()?,
            version: match d.u8()? {
                0 => None,
                1 => Some(Version::decode(d.bytes(12)?)?),
                other => return Err(malformed(format!("version flag {other}"))),
            },
            updated: d.u64()?,
            updater: d.str()?.to_owned(),
            permissions: Permissions::decode(&mut d)?,
        };
        d.finish(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::perms::Level;

    #[test]
    fn items_round_trip_and_damaged_records_do_not_decode() {
        let mut item = Item {
            id: ItemId::random().unwrap(),
            parent: ItemId::ROOT,
            name: "Report.ä".into(),
            kind: Some("doc".into()),
            created: 1,
            creator: "ann".into(),
            children: 3,
            data_size: 10,
            version: Some(Version::new(1, 2, 3)),
            updated: 2,
            updater: "bob".into(),
            permissions: Permissions::default(),
        };
        item.permissions.users.insert("ann".into(), Level::Admin);
        let bytes = item.to_bytes();
        assert_eq!(Item::decode(&bytes).unwrap(), item);
        assert!(Item::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Item::decode(&extra).is_err());
        let mut wrong_format = bytes;
        wrong_format[0] = 9;
        assert!(Item::decode(&wrong_format)
            .unwrap_err()
            .message()
            .contains("item layout 9"));
    }
}

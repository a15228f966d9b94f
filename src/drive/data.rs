//! Typed, versioned data: each typed item keeps every version of its JSON
//! data; the highest is current.

use std::fmt;

use lmdb::{RwTransaction, Transaction};
use serde_json::Value;

use super::id::ItemId;
use super::item::Item;
use super::perms::Level;
use super::tables::DataKey;
use super::tree::{self, now_ms, Ctx};
use crate::lmdb::{encode_len_prefixed, Codec, Decoder};
use crate::{Error, Result};

/// A data version, `major.minor.patch`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// The major part.
    pub major: u32,
    /// The minor part.
    pub minor: u32,
    /// The patch part.
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version { major, minor, patch }
    }

    /// The next patch after `self`.
    pub fn next_patch(self) -> Result<Version> {
        let patch = self
            .patch
            .checked_add(1)
            .ok_or_else(|| Error::invalid_argument(format!("version {self} has no next patch")))?;
        Ok(Version { patch, ..self })
    }

    /// Parses `"1.2.3"`.
    pub fn parse(text: &str) -> Result<Version> {
        let bad = || Error::invalid_argument(format!("version {text:?} is not major.minor.patch"));
        let mut parts = text.split('.').map(|part| part.parse::<u32>().map_err(|_| bad()));
        let version = Version::new(
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
        );
        match parts.next() {
            None => Ok(version),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Codec for Version {
    fn encode(&self, out: &mut Vec<u8>) {
        for part in [self.major, self.minor, self.patch] {
            out.extend_from_slice(&part.to_be_bytes());
        }
    }
    fn decode(bytes: &[u8]) -> Result<Version> {
        let mut d = Decoder::new(bytes);
        let version = Version::new(d.u32()?, d.u32()?, d.u32()?);
        d.finish(version)
    }
}

/// One stored version: who wrote it, when, and the JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataRecord {
    pub updated: u64,
    pub updater: String,
    pub json: Vec<u8>,
}

impl DataRecord {
    /// The JSON text inside an encoded record, without decoding the rest.
    fn json_of(bytes: &[u8]) -> Result<&[u8]> {
        let mut d = Decoder::new(bytes);
        d.u64()?;
        d.str()?;
        Ok(d.rest())
    }
}

impl Codec for DataRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.updated.to_be_bytes());
        encode_len_prefixed(out, self.updater.as_bytes());
        out.extend_from_slice(&self.json);
    }
    fn decode(bytes: &[u8]) -> Result<DataRecord> {
        let mut d = Decoder::new(bytes);
        Ok(DataRecord {
            updated: d.u64()?,
            updater: d.str()?.to_owned(),
            json: d.rest().to_vec(),
        })
    }
}

/// What is known about one stored version, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version.
    pub version: Version,
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated: u64,
    /// Who wrote it.
    pub updater: String,
    /// The size of its JSON in bytes.
    pub size: u64,
}

/// Whether a write may replace a version that is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// AlreadyExists if the version is stored (history is never lost by
    /// accident).
    Refuse,
    /// The caller means to overwrite it.
    Replace,
}

/// Writes `value` as `version` of item `id` (default: the next patch after
/// the current one), validated against the type's schema. A version that is
/// already stored is refused unless `existing` says replace. Returns the
/// version written. Needs `edit`.
pub(crate) fn set_data(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    id: ItemId,
    value: &Value,
    version: Option<Version>,
    existing: Existing,
) -> Result<Version> {
    let mut item = tree::load(cx, txn, id)?;
    let level = tree::level_of(cx, txn, &item)?;
    cx.actor.require(level, Level::Edit, "write data of", &id)?;
    let kind = typed(&item)?.to_owned();
    let version = match (version, item.version) {
        (Some(version), _) => version,
        (None, Some(current)) => current.next_patch()?,
        (None, None) => Version::new(0, 0, 1),
    };
    if existing == Existing::Refuse && cx.t.data.contains(txn, &DataKey { id, version })? {
        return Err(Error::already_exists(format!(
            "item {id} already has data version {version}: writing it again would lose that version \
             (replace it explicitly, or write a new version)"
        )));
    }
    cx.schemas
        .validate(cx, txn, &kind, value, || format!("item {id} version {version}"))?;
    let json = serde_json::to_vec(value).map_err(|e| Error::invalid_argument(format!("data for item {id}: {e}")))?;
    let size = json.len() as u64;
    let record = DataRecord {
        updated: now_ms(),
        updater: cx.actor.user.clone(),
        json,
    };
    cx.t.data.put(txn, &DataKey { id, version }, &record)?;
    if item.version.is_none_or(|current| version >= current) {
        item.version = Some(version);
        item.data_size = size;
    }
    item.updated = record.updated;
    item.updater = record.updater;
    cx.t.items.put(txn, &id, &item)?;
    Ok(version)
}

/// Item `id`'s data at `version` (default: the current one). Needs `read`.
pub(crate) fn get_data(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    id: ItemId,
    version: Option<Version>,
) -> Result<(Version, Value)> {
    with_data_text(cx, txn, id, version, |version, json| {
        serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(format!("data of item {id} version {version} is not JSON: {e}")))
    })
}

/// Like [`get_data`], as the stored JSON text (no parse): for surfaces
/// that hand JSON on as text.
pub(crate) fn get_data_text(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    id: ItemId,
    version: Option<Version>,
) -> Result<(Version, String)> {
    with_data_text(cx, txn, id, version, |version, json| {
        String::from_utf8(json.to_vec())
            .map_err(|_| Error::corrupt(format!("data of item {id} version {version} is not UTF-8")))
    })
}

/// Runs `read` on the stored JSON bytes of item `id` at `version` (default:
/// current), straight from the map: no copy of the text.
fn with_data_text<T>(
    cx: &Ctx<'_>,
    txn: &impl Transaction,
    id: ItemId,
    version: Option<Version>,
    read: impl FnOnce(Version, &[u8]) -> Result<T>,
) -> Result<(Version, T)> {
    let item = tree::get(cx, txn, id, None)?;
    let version = version
        .or(item.version)
        .ok_or_else(|| Error::not_found(format!("item {id} has no data")))?;
    let value =
        cx.t.data
            .get_raw(txn, &DataKey { id, version }, |bytes| {
                let json = DataRecord::json_of(bytes)
                    .map_err(|e| e.context(format!("data record of item {id} version {version}")))?;
                read(version, json)
            })?
            .ok_or_else(|| Error::not_found(format!("item {id} has no data version {version}")))?;
    Ok((version, value))
}

/// Every stored version of item `id`, newest first. Needs `read`.
pub(crate) fn versions(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId) -> Result<Vec<VersionInfo>> {
    tree::get(cx, txn, id, None)?;
    let mut found = Vec::new();
    let prefix = DataKey::prefix(id);
    cx.t.data.scan(txn, &prefix, &prefix, |key, record| {
        found.push(VersionInfo {
            version: key.version,
            updated: record.updated,
            updater: record.updater,
            size: record.json.len() as u64,
        });
        Ok(true)
    })?;
    found.reverse();
    Ok(found)
}

/// Deletes `version` of item `id`; if it was current, the highest remaining
/// version becomes current. Returns the current version afterwards. Needs
/// `edit`.
pub(crate) fn delete_data(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    id: ItemId,
    version: Version,
) -> Result<Option<Version>> {
    let mut item = tree::load(cx, txn, id)?;
    let level = tree::level_of(cx, txn, &item)?;
    cx.actor.require(level, Level::Edit, "delete data of", &id)?;
    if !cx.t.data.delete(txn, &DataKey { id, version })? {
        return Err(Error::not_found(format!("item {id} has no data version {version}")));
    }
    if item.version == Some(version) {
        let highest = highest_version(cx, txn, id)?;
        item.version = highest.as_ref().map(|(version, _)| *version);
        item.data_size = highest.map_or(0, |(_, record)| record.json.len() as u64);
        item.updated = now_ms();
        item.updater = cx.actor.user.clone();
        cx.t.items.put(txn, &id, &item)?;
    }
    Ok(item.version)
}

fn highest_version(cx: &Ctx<'_>, txn: &impl Transaction, id: ItemId) -> Result<Option<(Version, DataRecord)>> {
    let mut highest = None;
    let prefix = DataKey::prefix(id);
    cx.t.data.scan(txn, &prefix, &prefix, |key, record| {
        highest = Some((key.version, record));
        Ok(true)
    })?;
    Ok(highest)
}

/// Removes every version of item `id` (when the item is deleted).
pub(crate) fn delete_all(cx: &Ctx<'_>, txn: &mut RwTransaction<'_>, id: ItemId) -> Result<()> {
    let mut keys = Vec::new();
    let prefix = DataKey::prefix(id);
    cx.t.data.scan(txn, &prefix, &prefix, |key, _| {
        keys.push(key);
        Ok(true)
    })?;
    for key in keys {
        cx.t.data.delete(txn, &key)?;
    }
    Ok(())
}

/// The item's type, or an error if it has none (untyped items carry no data).
pub(crate) fn typed(item: &Item) -> Result<&str> {
    item.kind
        .as_deref()
        .ok_or_else(|| Error::invalid_argument(format!("item {} has no type, so it carries no data", item.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_and_parse() {
        assert!(Version::new(1, 0, 0) > Version::new(0, 99, 99));
        assert!(Version::new(0, 2, 0) > Version::new(0, 1, 10));
        assert_eq!(Version::parse("1.2.3").unwrap(), Version::new(1, 2, 3));
        assert_eq!(Version::new(1, 2, 3).to_string(), "1.2.3");
        for bad in ["1.2", "1.2.3.4", "a.b.c", "", "1.-2.3"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Version::new(0, 1, 9).next_patch().unwrap(), Version::new(0, 1, 10));
        assert!(Version::new(0, 0, u32::MAX).next_patch().is_err());
    }
}

//! The drive's own checks for [`crate::lmdb::verify`]: every value's
//! checksum and decoding, and every index against the items it describes
//! (child index, child counts, type index, data versions), and that every
//! item's parents lead to the root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use lmdb::{Cursor, Database, RoTransaction, Transaction};

use super::data::{DataRecord, Version};
use super::id::ItemId;
use super::item::Item;
use super::names::fold;
use super::schema::SchemaRecord;
use super::tables::{ChildKey, DataKey, TypeKey, CHILDREN, DATA, ITEMS, SCHEMAS, TYPES};
use crate::lmdb::verify::Report;
use crate::lmdb::{unseal, Codec};

/// Called with each entry's key and unsealed value.
type Visit<'a> = dyn FnMut(&[u8], &[u8], &mut Report) + 'a;

/// Everything decoded, for the cross-checks.
#[derive(Default)]
struct Decoded {
    items: HashMap<ItemId, Item>,
    children: Vec<(ChildKey, ItemId)>,
    types: Vec<TypeKey>,
    data: Vec<(DataKey, u64)>,
}

/// Runs the drive's checks if the file holds a drive (its meta table).
pub(crate) fn check(
    txn: &RoTransaction<'_>,
    dbs: &BTreeMap<String, Database>,
    _file: &'static Path,
    report: &mut Report,
) {
    if !dbs.contains_key("drive.meta") {
        return;
    }
    let mut decoded = Decoded::default();
    let mut table = |name: &str, mut each: Box<Visit<'_>>| match dbs.get(name) {
        Some(db) => for_each_sealed(txn, *db, name, report, &mut *each),
        None => report.problem(format!("table {name} is missing")),
    };
    let mut items = HashMap::new();
    table(
        ITEMS,
        Box::new(|key, value, report| match (ItemId::decode(key), Item::decode(value)) {
            (Ok(id), Ok(item)) if item.id == id => {
                items.insert(id, item);
            }
            (Ok(id), Ok(item)) => report.problem(format!("{ITEMS}: key {id} holds item {}", item.id)),
            _ => report.problem(format!("{ITEMS}: entry at key {key:02x?} is malformed")),
        }),
    );
    decoded.items = items;
    let mut children = Vec::new();
    table(
        CHILDREN,
        Box::new(
            |key, value, report| match (ChildKey::decode(key), ItemId::decode(value)) {
                (Ok(key), Ok(id)) => children.push((key, id)),
                _ => report.problem(format!("{CHILDREN}: entry at key {key:02x?} is malformed")),
            },
        ),
    );
    decoded.children = children;
    let mut types = Vec::new();
    table(
        TYPES,
        Box::new(|key, value, report| match (TypeKey::decode(key), value.is_empty()) {
            (Ok(key), true) => types.push(key),
            _ => report.problem(format!("{TYPES}: entry at key {key:02x?} is malformed")),
        }),
    );
    decoded.types = types;
    let mut data = Vec::new();
    table(
        DATA,
        Box::new(
            |key, value, report| match (DataKey::decode(key), DataRecord::decode(value)) {
                (Ok(key), Ok(record)) => {
                    if serde_json::from_slice::<serde_json::Value>(&record.json).is_err() {
                        report.problem(format!("{DATA}: item {} version {} is not JSON", key.id, key.version));
                    }
                    data.push((key, record.json.len() as u64));
                }
                _ => report.problem(format!("{DATA}: entry at key {key:02x?} is malformed")),
            },
        ),
    );
    decoded.data = data;
    table(
        SCHEMAS,
        Box::new(|key, value, report| {
            let ok = std::str::from_utf8(key).is_ok()
                && SchemaRecord::decode(value)
                    .is_ok_and(|record| serde_json::from_slice::<serde_json::Value>(&record.json).is_ok());
            if !ok {
                report.problem(format!("{SCHEMAS}: entry at key {key:02x?} is malformed"));
            }
        }),
    );
    cross_check(&decoded, report);
}

/// Calls `each` with every entry's key and unsealed value; a value whose
/// checksum fails is a problem naming the table and key.
fn for_each_sealed(txn: &RoTransaction<'_>, db: Database, name: &str, report: &mut Report, each: &mut Visit<'_>) {
    let mut cursor = match txn.open_ro_cursor(db) {
        Ok(cursor) => cursor,
        Err(e) => return report.problem(format!("{name}: {e}")),
    };
    for entry in cursor.iter_start() {
        let (key, stored) = match entry {
            Ok(entry) => entry,
            Err(e) => return report.problem(format!("{name}: {e}")),
        };
        match unseal(key, stored) {
            Some(value) => each(key, value, report),
            None => report.problem(format!("{name}: the value at key {key:02x?} fails its checksum")),
        }
    }
}

fn cross_check(d: &Decoded, report: &mut Report) {
    if !d.items.contains_key(&ItemId::ROOT) {
        return report.problem("the root item is missing");
    }
    let mut counted: HashMap<ItemId, u64> = HashMap::new();
    let mut listed: HashSet<ItemId> = HashSet::new();
    for (key, id) in &d.children {
        *counted.entry(key.parent).or_default() += 1;
        match d.items.get(id) {
            None => report.problem(format!("child index: {} lists missing item {id}", key.parent)),
            Some(item) if item.parent != key.parent || fold(&item.name) != key.folded => report.problem(format!(
                "child index: entry {:?} under {} does not match item {id} ({:?} under {})",
                key.folded, key.parent, item.name, item.parent
            )),
            Some(_) => {
                if !listed.insert(*id) {
                    report.problem(format!("child index: item {id} is listed twice"));
                }
            }
        }
    }
    for item in d.items.values() {
        let stored = item.children;
        let actual = counted.get(&item.id).copied().unwrap_or(0);
        if stored != actual {
            report.problem(format!("item {}: child count {stored}, but {actual} children", item.id));
        }
        if item.id.is_root() {
            continue;
        }
        if !listed.contains(&item.id) {
            report.problem(format!("item {}: not in its parent's child index", item.id));
        }
        if !d.items.contains_key(&item.parent) {
            report.problem(format!("item {}: parent {} is missing", item.id, item.parent));
        }
    }
    check_types(d, report);
    check_data(d, report);
    check_reaches_root(d, report);
}

fn check_types(d: &Decoded, report: &mut Report) {
    let indexed: HashSet<(&str, ItemId)> = d.types.iter().map(|key| (key.kind.as_str(), key.id)).collect();
    for key in &d.types {
        if d.items.get(&key.id).and_then(|item| item.kind.as_deref()) != Some(key.kind.as_str()) {
            report.problem(format!(
                "type index: {} lists item {} that is not of that type",
                key.kind, key.id
            ));
        }
    }
    for item in d.items.values() {
        if let Some(kind) = &item.kind {
            if !indexed.contains(&(kind.as_str(), item.id)) {
                report.problem(format!("item {}: missing from the type index of {kind}", item.id));
            }
        }
    }
}

fn check_data(d: &Decoded, report: &mut Report) {
    let mut highest: HashMap<ItemId, (Version, u64)> = HashMap::new();
    for (key, size) in &d.data {
        match d.items.get(&key.id) {
            None => report.problem(format!("data: version {} of missing item {}", key.version, key.id)),
            Some(item) if item.kind.is_none() => report.problem(format!("data: item {} has data but no type", key.id)),
            Some(_) => {}
        }
        // Data keys sort by version within an item, so the last one wins.
        highest.insert(key.id, (key.version, *size));
    }
    for item in d.items.values() {
        let expected = highest.get(&item.id).copied();
        if item.version != expected.map(|(version, _)| version) {
            report.problem(format!(
                "item {}: current version {:?}, but its highest stored version is {:?}",
                item.id,
                item.version.map(|v| v.to_string()),
                expected.map(|(v, _)| v.to_string())
            ));
        } else if item.data_size != expected.map_or(0, |(_, size)| size) {
            report.problem(format!(
                "item {}: data size {} disagrees with its data",
                item.id, item.data_size
            ));
        }
    }
}

/// Every item's parents lead to the root (no loops, no detached subtrees).
fn check_reaches_root(d: &Decoded, report: &mut Report) {
    let mut good: HashSet<ItemId> = HashSet::from([ItemId::ROOT]);
    for start in d.items.keys() {
        let mut path = Vec::new();
        let mut next = *start;
        let mut on_path = HashSet::new();
        let reached = loop {
            if good.contains(&next) {
                break true;
            }
            if !on_path.insert(next) {
                break false;
            }
            path.push(next);
            match d.items.get(&next) {
                Some(item) => next = item.parent,
                None => break false,
            }
        };
        if reached {
            good.extend(path);
        } else if d.items.contains_key(&next) {
            report.problem(format!("item {start}: its parents form a loop"));
        }
    }
}

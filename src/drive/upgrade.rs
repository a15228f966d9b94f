//! Upgrades of older drive files, run by [`crate::lmdb::format`] in one
//! write transaction after a backup.
//!
//! Format 1 → 2: every value gains a checksum (see [`crate::lmdb::seal`]),
//! and child-index keys change from the name's `to_lowercase` to its full
//! Unicode case folding of the NFC form (so `ß` and `SS` become one name).
//! Two children of one folder that the new folding makes equal cannot both
//! keep their names: the upgrade refuses, naming both, and the file stays
//! at format 1 (open it with a format-1 build and rename one).

use lmdb::{Database, RwTransaction, Transaction, WriteFlags};

use super::id::ItemId;
use super::item::Item;
use super::names::fold;
use super::tables::{ChildKey, CHILDREN, DATA, ITEMS, SCHEMAS, TYPES};
use crate::lmdb::format::{entries, seal_all, StepDatabases, UpgradeStep};
use crate::lmdb::{map_err, seal, Codec};
use crate::{Error, Result};

/// Every upgrade step of the drive format, oldest first.
pub(crate) const STEPS: &[UpgradeStep] = &[UpgradeStep {
    from: 1,
    what: "checksum every value and key children by full case folding",
    databases: &[ITEMS, CHILDREN, TYPES, DATA, SCHEMAS],
    run: seal_and_refold,
}];

fn seal_and_refold(txn: &mut RwTransaction<'_>, dbs: &StepDatabases) -> Result<()> {
    let items = dbs.get(ITEMS)?;
    let children = dbs.get(CHILDREN)?;
    let names = child_names(txn, items, children)?;
    for name in [ITEMS, TYPES, DATA, SCHEMAS] {
        seal_all(txn, dbs.get(name)?, name, &[], |_, _| Ok(()))?;
    }
    txn.clear_db(children)
        .map_err(|e| map_err("clear the child index", e))?;
    for (parent, folded, id) in names {
        let key = ChildKey { parent, folded }.to_bytes();
        if let Ok(other) = txn.get(children, &key) {
            return Err(Error::conflict(format!(
                "items {id} and {} in folder {parent} have names that are equal under Unicode case \
                 folding; rename one with a build that reads drive format 1, then open this one",
                other
                    .get(..16)
                    .and_then(|bytes| ItemId::decode(bytes).ok())
                    .map_or_else(|| "?".to_owned(), |other| other.to_string())
            )));
        }
        txn.put(children, &key, &seal(&key, id.as_bytes()), WriteFlags::empty())
            .map_err(|e| map_err("write the child index", e))?;
    }
    Ok(())
}

/// (parent, new folded name, child) for every entry of the format-1 child
/// index, from the items' own names.
fn child_names(txn: &RwTransaction<'_>, items: Database, children: Database) -> Result<Vec<(ItemId, String, ItemId)>> {
    let mut names = Vec::new();
    for (key, value) in entries(txn, children, CHILDREN)? {
        let parent = ChildKey::decode(&key).map_err(|e| corrupt(CHILDREN, &key, e))?.parent;
        let id = ItemId::decode(&value).map_err(|e| corrupt(CHILDREN, &key, e))?;
        let stored = txn
            .get(items, &id.as_bytes())
            .map_err(|e| map_err(format!("read item {id} listed in the child index"), e))?;
        let item = Item::decode(stored).map_err(|e| corrupt(ITEMS, id.as_bytes(), e))?;
        names.push((parent, fold(&item.name), id));
    }
    Ok(names)
}

fn corrupt(table: &str, key: &[u8], err: Error) -> Error {
    err.context(format!("{table} entry at key {key:02x?}"))
}

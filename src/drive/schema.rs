//! Type schemas (JSON Schema) and migrations.
//!
//! A type's schema checks every data write of items of that type. Registering
//! a newer schema version runs a migration over every stored version of every
//! item of the type, all in the caller's one transaction: if any callback or
//! validation fails, nothing changes and the old schema stays current.

use std::collections::HashMap;
use std::sync::Arc;

use lmdb::{RwTransaction, Transaction};
use parking_lot::Mutex;
use serde_json::Value;

use super::data::{DataRecord, Version};
use super::item::Item;
use super::names::check_type;
use super::perms::Level;
use super::tables::{DataKey, TypeKey};
use super::tree::{self, Ctx};
use crate::lmdb::{encode_len_prefixed, Codec, Decoder};
use crate::{Error, Result};

/// What a migration callback is told about the version it converts.
#[derive(Debug)]
pub struct Migration<'a> {
    /// The item whose data this is.
    pub item: &'a Item,
    /// The data version being converted.
    pub version: Version,
    /// The schema version the data was written under (`None`: no schema).
    pub from_schema: Option<u32>,
    /// The schema version being registered.
    pub to_schema: u32,
}

/// A migration callback: takes one stored version's data and returns it in
/// the new schema's shape (or an error, which aborts the whole migration).
pub type MigrateFn<'f> = dyn FnMut(&Migration<'_>, Value) -> Result<Value> + Send + 'f;

/// A stored schema: its version and JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaRecord {
    pub version: u32,
    pub json: Vec<u8>,
}

impl Codec for SchemaRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        encode_len_prefixed(out, &self.json);
    }
    fn decode(bytes: &[u8]) -> Result<SchemaRecord> {
        let mut d = Decoder::new(bytes);
        let record = SchemaRecord {
            version: d.u32()?,
            json: d.len_prefixed()?.to_vec(),
        };
        d.finish(record)
    }
}

/// Compiled validators by type, reused while the stored schema text is the
/// same (compared byte for byte, so another process's or an aborted
/// transaction's schema is never used by mistake).
pub(crate) struct SchemaCache {
    compiled: Mutex<HashMap<String, Compiled>>,
    /// [`DriveOptions::allow_types_without_schema`](super::DriveOptions).
    allow_without_schema: bool,
}

/// A schema's stored text and its compiled validator.
type Compiled = (Vec<u8>, Arc<jsonschema::Validator>);

impl SchemaCache {
    pub fn new(allow_without_schema: bool) -> SchemaCache {
        SchemaCache {
            compiled: Mutex::default(),
            allow_without_schema,
        }
    }

    /// InvalidArgument if `kind` has no schema and the drive requires one
    /// for every type items are created with.
    pub fn check_creatable(&self, cx: &Ctx<'_>, txn: &impl Transaction, kind: &str) -> Result<()> {
        if self.allow_without_schema || cx.t.schemas.contains(txn, &kind.to_owned())? {
            return Ok(());
        }
        Err(Error::invalid_argument(format!(
            "type {kind:?} has no schema, and this drive allows only types with one \
             (register it with set_schema, or open the drive with allow_types_without_schema)"
        )))
    }
    /// Checks `value` against `kind`'s schema, if it has one; the error
    /// names `what` (item and version) and what failed where.
    pub fn validate(
        &self,
        cx: &Ctx<'_>,
        txn: &impl Transaction,
        kind: &str,
        value: &Value,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let Some(record) = cx.t.schemas.get(txn, &kind.to_owned())? else {
            return Ok(());
        };
        let validator = self.compiled_for(kind, &record)?;
        check(&validator, value, || {
            format!("{} (type {kind}, schema v{})", what(), record.version)
        })
    }

    fn compiled_for(&self, kind: &str, record: &SchemaRecord) -> Result<Arc<jsonschema::Validator>> {
        if let Some((json, validator)) = self.compiled.lock().get(kind) {
            if *json == record.json {
                return Ok(validator.clone());
            }
        }
        let schema: Value = serde_json::from_slice(&record.json)
            .map_err(|e| Error::corrupt(format!("stored schema of type {kind} is not JSON: {e}")))?;
        let validator = Arc::new(compile(kind, &schema).map_err(|e| Error::corrupt(e.message().to_owned()))?);
        self.compiled
            .lock()
            .insert(kind.to_owned(), (record.json.clone(), validator.clone()));
        Ok(validator)
    }
}

fn compile(kind: &str, schema: &Value) -> Result<jsonschema::Validator> {
    jsonschema::validator_for(schema)
        .map_err(|e| Error::invalid_argument(format!("schema for type {kind} is not valid JSON Schema: {e}")))
}

fn check(validator: &jsonschema::Validator, value: &Value, what: impl FnOnce() -> String) -> Result<()> {
    let failures: Vec<String> = validator
        .iter_errors(value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("at {:?}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_argument(format!(
        "data for {} does not match its schema: {}",
        what(),
        failures.join("; ")
    )))
}

/// The schema registered for `kind`: its version and JSON.
pub(crate) fn get_schema(cx: &Ctx<'_>, txn: &impl Transaction, kind: &str) -> Result<Option<(u32, Value)>> {
    check_type(kind)?;
    let Some(record) = cx.t.schemas.get(txn, &kind.to_owned())? else {
        return Ok(None);
    };
    let schema = serde_json::from_slice(&record.json)
        .map_err(|e| Error::corrupt(format!("stored schema of type {kind} is not JSON: {e}")))?;
    Ok(Some((record.version, schema)))
}

/// Registers `schema` as `version` of `kind`'s schema. The same version
/// again is a no-op (returns `false`); a lower one is a Conflict; a higher
/// one migrates (with `migrate`, or as is) and validates every stored
/// version of every item of the type, then becomes current. In a checked
/// view this needs `admin` on the root.
pub(crate) fn set_schema(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    kind: &str,
    schema: &Value,
    version: u32,
    mut migrate: Option<&mut MigrateFn<'_>>,
) -> Result<bool> {
    check_type(kind)?;
    let root = tree::load(cx, txn, super::ItemId::ROOT)?;
    let level = tree::level_of(cx, txn, &root)?;
    cx.actor
        .require(level, Level::Admin, "register schemas in", &"the drive root")?;
    let validator = compile(kind, schema)?;
    let current = cx.t.schemas.get(txn, &kind.to_owned())?.map(|record| record.version);
    match current {
        Some(current) if current == version => return Ok(false),
        Some(current) if current > version => {
            return Err(Error::conflict(format!(
                "type {kind} already has schema v{current}; v{version} is older"
            )))
        }
        _ => {}
    }
    for id in items_of_type(cx, txn, kind)? {
        migrate_item(cx, txn, id, &validator, current, version, migrate.as_deref_mut())?;
    }
    let record = SchemaRecord {
        version,
        json: serde_json::to_vec(schema).map_err(|e| Error::invalid_argument(e.to_string()))?,
    };
    cx.t.schemas.put(txn, &kind.to_owned(), &record)?;
    Ok(true)
}

fn items_of_type(cx: &Ctx<'_>, txn: &impl Transaction, kind: &str) -> Result<Vec<super::ItemId>> {
    let mut ids = Vec::new();
    let prefix = TypeKey::prefix(kind);
    cx.t.types.scan(txn, &prefix, &prefix, |key, ()| {
        ids.push(key.id);
        Ok(true)
    })?;
    Ok(ids)
}

/// Converts and re-validates every stored version of one item.
fn migrate_item(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    id: super::ItemId,
    validator: &jsonschema::Validator,
    from_schema: Option<u32>,
    to_schema: u32,
    mut migrate: Option<&mut MigrateFn<'_>>,
) -> Result<()> {
    let mut item = tree::load(cx, txn, id)?;
    let prefix = DataKey::prefix(id);
    let mut stored: Vec<(DataKey, DataRecord)> = Vec::new();
    cx.t.data.scan(txn, &prefix, &prefix, |key, record| {
        stored.push((key, record));
        Ok(true)
    })?;
    for (key, mut record) in stored {
        let where_ = || {
            format!(
                "migration to schema v{to_schema} failed at item {id} version {}",
                key.version
            )
        };
        let mut value: Value = serde_json::from_slice(&record.json)
            .map_err(|e| Error::corrupt(format!("{}: stored data is not JSON: {e}", where_())))?;
        if let Some(migrate) = migrate.as_deref_mut() {
            let step = Migration {
                item: &item,
                version: key.version,
                from_schema,
                to_schema,
            };
            value = migrate(&step, value).map_err(|e| e.context(where_()))?;
        }
        check(validator, &value, || format!("item {id} version {}", key.version)).map_err(|e| e.context(where_()))?;
        record.json = serde_json::to_vec(&value).map_err(|e| Error::invalid_argument(e.to_string()))?;
        if item.version == Some(key.version) {
            item.data_size = record.json.len() as u64;
        }
        cx.t.data.put(txn, &key, &record)?;
    }
    cx.t.items.put(txn, &id, &item)
}

//! The operation records and their READY/WORKING indexes.

use ::lmdb::{Cursor, RwTransaction, Transaction};

use super::keys;
use super::{del, get, next_counter, put, scan_keys, LmdbStore, NEXT_TOKEN};
use crate::lmdb::{map_err, Database};
use crate::ops::clock::Millis;
use crate::ops::records::{OpClaim, OpRecord, OpState, Token};
use crate::ops::store::{ClaimRequest, OperationStore};
use crate::ops::transitions as t;
use crate::{Error, Result};

impl LmdbStore {
    fn load_op(&self, txn: &impl Transaction, item: &str, op: &str) -> Result<Option<OpRecord>> {
        let what = || format!("{}: operation {op:?} of item {item:?}", self.context());
        get(txn, self.dbs.op_records, &keys::op_record(item, op), &what)?
            .map(|value| OpRecord::decode_value(item, op, value))
            .transpose()
    }

    /// Stores `new` in place of `old`, moving its index entries.
    fn write_op(&self, txn: &mut RwTransaction<'_>, old: Option<&OpRecord>, new: &OpRecord) -> Result<()> {
        let what = || format!("{}: operation {:?} of item {:?}", self.context(), new.op, new.item);
        if let Some(old) = old {
            if let Some((db, key)) = self.op_index_entry(old) {
                del(txn, db, &key, &what)?;
            }
        }
        if let Some((db, key)) = self.op_index_entry(new) {
            put(txn, db, &key, &[], &what)?;
        }
        put(
            txn,
            self.dbs.op_records,
            &keys::op_record(&new.item, &new.op),
            &new.encode_value(),
            &what,
        )
    }

    fn op_index_entry(&self, record: &OpRecord) -> Option<(Database, Vec<u8>)> {
        match record.state {
            OpState::Ready => Some((
                self.dbs.op_ready,
                keys::op_index(&record.op, record.ready_at, &record.item),
            )),
            OpState::Working => Some((
                self.dbs.op_working,
                keys::op_index(&record.op, record.lease_until, &record.item),
            )),
            OpState::Ok | OpState::Failed => None,
        }
    }

    fn make_ready(&self, txn: &mut RwTransaction<'_>, item: &str, op: &str, now: Millis) -> Result<OpRecord> {
        let old = self.load_op(txn, item, op)?;
        let new = t::op_ready(old.clone(), item, op, now);
        self.write_op(txn, old.as_ref(), &new)?;
        Ok(new)
    }

    /// The items of `op` to claim: expired WORKING first, then READY oldest first.
    fn claimable_items(&self, txn: &impl Transaction, op: &str, limit: usize, now: Millis) -> Result<Vec<String>> {
        let prefix = keys::prefix(op);
        let expired = scan_keys(txn, self.dbs.op_working, &prefix, &prefix, limit, |key| {
            Ok(keys::parse_op_index(key)?.0 <= now)
        })?;
        let ready = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, limit - expired.len(), |_| {
            Ok(true)
        })?;
        expired
            .iter()
            .chain(&ready)
            .map(|key| keys::parse_op_index(key).map(|(_, item)| item))
            .collect()
    }
}

impl OperationStore for LmdbStore {
    fn location(&self) -> String {
        self.path_shown()
    }

    fn ready(&self, item: &str, ops: &[&str], now: Millis) -> Result<Vec<OpRecord>> {
        self.env
            .write(|txn| ops.iter().map(|op| self.make_ready(txn, item, op, now)).collect())
    }

    fn next(&self, op: &str, limit: usize) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(op);
            let found = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, limit, |_| Ok(true))?;
            found
                .iter()
                .map(|key| {
                    let (_, item) = keys::parse_op_index(key)?;
                    self.load_op(txn, &item, op)?.ok_or_else(|| {
                        Error::corrupt(format!("{}: READY index names missing item {item:?}", self.context()))
                    })
                })
                .collect()
        })
    }

    fn claim(&self, op: &str, limit: usize, request: ClaimRequest<'_>) -> Result<Vec<OpClaim>> {
        self.env.write(|txn| {
            let items = self.claimable_items(txn, op, limit, request.now)?;
            let mut claims = Vec::with_capacity(items.len());
            for item in items {
                let old = self
                    .load_op(txn, &item, op)?
                    .ok_or_else(|| Error::corrupt(format!("{}: index names missing item {item:?}", self.context())))?;
                if !t::op_claimable(&old, request.now) {
                    return Err(Error::corrupt(format!(
                        "{}: index lists unclaimable item {item:?}",
                        self.context()
                    )));
                }
                let token = next_counter(txn, self.dbs.meta, NEXT_TOKEN)?;
                let new = t::op_claim(old.clone(), request.worker, token, request.lease_until, request.now);
                self.write_op(txn, Some(&old), &new)?;
                claims.push(OpClaim {
                    item,
                    op: op.to_owned(),
                    token,
                    lease_until: new.lease_until,
                    attempt: new.attempts,
                });
            }
            Ok(claims)
        })
    }

    fn update(
        &self,
        item: &str,
        op: &str,
        token: Option<Token>,
        state: OpState,
        message: &str,
        enable: &[&str],
        now: Millis,
    ) -> Result<OpRecord> {
        self.env.write(|txn| {
            let old = self.load_op(txn, item, op)?;
            let new = t::op_update(old.clone(), item, op, token, state, message, now)?;
            self.write_op(txn, old.as_ref(), &new)?;
            for downstream in enable {
                self.make_ready(txn, item, downstream, now)?;
            }
            Ok(new)
        })
    }

    fn states(&self, item: &str) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(item);
            let mut cursor = txn
                .open_ro_cursor(self.dbs.op_records)
                .map_err(|err| map_err(self.context(), err))?;
            let mut records = Vec::new();
            for entry in cursor.iter_from(&prefix) {
                let (key, value) = entry.map_err(|err| map_err(self.context(), err))?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let (item, op) = keys::parse_op_record(key)?;
                records.push(OpRecord::decode_value(&item, &op, value)?);
            }
            Ok(records)
        })
    }
}

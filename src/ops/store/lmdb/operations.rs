//! The operation records and their READY/WORKING indexes.

use ::lmdb::{Cursor, RwTransaction, Transaction};

use super::keys;
use super::{del, get, next_counter, put, scan_keys, LmdbStore, NEXT_TOKEN};
use crate::lmdb::{map_err, Database};
use crate::ops::clock::Millis;
use crate::ops::records::{OpClaim, OpRecord, OpState, Token};
use crate::ops::store::{ClaimRequest, NextOrder, OpResetReport, OperationStore};
use crate::ops::transitions::{self as t, OpPolicy};
use crate::{Error, Result};

/// How many lapsed claims one `claim` counts before claiming (the rest wait
/// for the next call or the reset pass).
const LAPSES_PER_CLAIM: usize = 64;
/// How many lapsed claims one reset transaction handles.
const LAPSES_PER_PASS: usize = 1_000;

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
        self.clear_lapses(txn, item, op)?;
        Ok(new)
    }

    fn lapses(&self, txn: &impl Transaction, item: &str, op: &str) -> Result<u32> {
        let what = || format!("{}: lapses of {op:?} of item {item:?}", self.context());
        match get(txn, self.dbs.op_lapses, &keys::op_record(item, op), &what)? {
            Some(value) => Ok(u32::try_from(keys::parse_u64(value, &what())?).unwrap_or(u32::MAX)),
            None => Ok(0),
        }
    }

    /// Forgets the lapses of a record its holder (or an operator) moved.
    fn clear_lapses(&self, txn: &mut RwTransaction<'_>, item: &str, op: &str) -> Result<()> {
        match txn.del(self.dbs.op_lapses, &keys::op_record(item, op), None) {
            Ok(()) | Err(::lmdb::Error::NotFound) => Ok(()),
            Err(err) => Err(map_err(self.context(), err)),
        }
    }

    /// The (op, item) of up to `limit` WORKING records whose lease ended by
    /// `now`: of `op` only, or of every operation.
    fn lapsed(
        &self,
        txn: &impl Transaction,
        op: Option<&str>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut seek = op.map(keys::prefix).unwrap_or_default();
        while found.len() < limit {
            let Some(key) = scan_keys(txn, self.dbs.op_working, &seek, &[], 1, |_| Ok(true))?.pop() else {
                break;
            };
            let (name, at) = keys::parse_op_index_op(&key)?;
            if op.is_some_and(|op| op != name) {
                break;
            }
            let prefix = keys::prefix(&name);
            if at > now {
                // The rest of this operation's claims end later still.
                if op.is_some() {
                    break;
                }
                seek = keys::after_prefix(&prefix);
                continue;
            }
            let expired = scan_keys(txn, self.dbs.op_working, &key, &prefix, limit - found.len(), |key| {
                Ok(keys::parse_op_index(key)?.0 <= now)
            })?;
            for key in &expired {
                found.push((name.clone(), keys::parse_op_index(key)?.1));
            }
            if op.is_some() {
                break;
            }
            seek = keys::after_prefix(&prefix);
        }
        Ok(found)
    }

    /// Counts a lapse on each lapsed claim (of `op`, or of all): READY
    /// again, or FAILED past `policy.max_lapses`.
    fn lapse_in(
        &self,
        txn: &mut RwTransaction<'_>,
        op: Option<&str>,
        policy: &OpPolicy,
        now: Millis,
        limit: usize,
    ) -> Result<OpResetReport> {
        let mut report = OpResetReport::default();
        for (op, item) in self.lapsed(txn, op, limit, now)? {
            let old = self
                .load_op(txn, &item, &op)?
                .filter(|old| t::op_expired(old, now))
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "{}: WORKING index names {item:?} of {op:?} wrongly",
                        self.context()
                    ))
                })?;
            let lapses = self.lapses(txn, &item, &op)?.saturating_add(1);
            let new = t::op_lapse(old.clone(), lapses, policy, now);
            self.write_op(txn, Some(&old), &new)?;
            let what = || format!("{}: lapses of {op:?} of item {item:?}", self.context());
            if new.state == OpState::Failed {
                report.failed += 1;
                self.clear_lapses(txn, &item, &op)?;
            } else {
                report.ready += 1;
                let key = keys::op_record(&item, &op);
                put(txn, self.dbs.op_lapses, &key, &u64::from(lapses).to_be_bytes(), &what)?;
            }
        }
        Ok(report)
    }

    fn expect_op(&self, txn: &impl Transaction, item: &str, op: &str) -> Result<OpRecord> {
        self.load_op(txn, item, op)?
            .ok_or_else(|| Error::corrupt(format!("{}: index names missing item {item:?}", self.context())))
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
                .map(|key| self.expect_op(txn, &keys::parse_op_index(key)?.1, op))
                .collect()
        })
    }

    /// Oldest: the first `limit` READY entries merged with every lapsed
    /// claim by ready time. Item: every READY key of `op` is read (keys, not
    /// records) and the first `limit` items loaded.
    fn next_in(&self, op: &str, limit: usize, order: NextOrder, now: Millis) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let prefix = keys::prefix(op);
            let lapsed = self.lapsed(txn, Some(op), usize::MAX, now)?;
            let ready_limit = if order == NextOrder::Oldest { limit } else { usize::MAX };
            let ready = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, ready_limit, |_| Ok(true))?;
            let mut items: Vec<String> = lapsed.into_iter().map(|(_, item)| item).collect();
            for key in &ready {
                items.push(keys::parse_op_index(key)?.1);
            }
            if order == NextOrder::Item {
                items.sort();
                items.truncate(limit);
            }
            let mut records = items
                .iter()
                .map(|item| self.expect_op(txn, item, op))
                .collect::<Result<Vec<_>>>()?;
            if order == NextOrder::Oldest {
                records.sort_by(|a, b| (a.ready_at, &a.item).cmp(&(b.ready_at, &b.item)));
                records.truncate(limit);
            }
            Ok(records)
        })
    }

    fn claim(&self, op: &str, limit: usize, request: ClaimRequest<'_>) -> Result<Vec<OpClaim>> {
        self.claim_with(op, limit, request, &OpPolicy::default())
    }

    fn claim_with(&self, op: &str, limit: usize, request: ClaimRequest<'_>, policy: &OpPolicy) -> Result<Vec<OpClaim>> {
        self.env.write(|txn| {
            self.lapse_in(txn, Some(op), policy, request.now, LAPSES_PER_CLAIM)?;
            let prefix = keys::prefix(op);
            let ready = scan_keys(txn, self.dbs.op_ready, &prefix, &prefix, limit, |_| Ok(true))?;
            let mut claims = Vec::with_capacity(ready.len());
            for key in ready {
                let item = keys::parse_op_index(&key)?.1;
                let old = self.expect_op(txn, &item, op)?;
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

    fn reset_expired(&self, policy: &OpPolicy, now: Millis) -> Result<OpResetReport> {
        let mut total = OpResetReport::default();
        loop {
            let report = self
                .env
                .write(|txn| self.lapse_in(txn, None, policy, now, LAPSES_PER_PASS))?;
            total.ready += report.ready;
            total.failed += report.failed;
            if report.ready + report.failed < LAPSES_PER_PASS as u64 {
                return Ok(total);
            }
        }
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
            self.clear_lapses(txn, item, op)?;
            for downstream in enable {
                self.make_ready(txn, item, downstream, now)?;
            }
            Ok(new)
        })
    }

    /// Walks every record in key order (item, then operation), keeping
    /// those of `op` in `state`.
    fn list(&self, op: &str, state: Option<OpState>, limit: usize) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let mut cursor = txn
                .open_ro_cursor(self.dbs.op_records)
                .map_err(|err| map_err(self.context(), err))?;
            let mut records = Vec::new();
            for entry in cursor.iter_start() {
                if records.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(|err| map_err(self.context(), err))?;
                let (item, name) = keys::parse_op_record(key)?;
                if name != op {
                    continue;
                }
                let record = OpRecord::decode_value(&item, &name, value)?;
                if state.is_none_or(|state| state == record.state) {
                    records.push(record);
                }
            }
            Ok(records)
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

//! The operation records and their READY/WORKING indexes.

use ::lmdb::{RwTransaction, Transaction};

use super::tables::{self, after_prefix, prefix, OpIndexKey, OpKey, NEXT_TOKEN};
use super::{next_counter, LmdbStore};
use crate::lmdb::{Codec, Table};
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
        let key = OpKey::new(item, op);
        Ok(self.t.op_records.get(txn, &key)?.map(|record| key.record(record)))
    }

    /// Stores `new` in place of `old`, moving its index entries.
    fn write_op(&self, txn: &mut RwTransaction<'_>, old: Option<&OpRecord>, new: &OpRecord) -> Result<()> {
        if let Some(old) = old {
            if let Some((index, key)) = self.op_index_entry(old) {
                index.delete_existing(txn, &key)?;
            }
        }
        if let Some((index, key)) = self.op_index_entry(new) {
            index.put(txn, &key, &())?;
        }
        self.t.op_records.put(txn, &OpKey::new(&new.item, &new.op), new)
    }

    fn op_index_entry(&self, record: &OpRecord) -> Option<(Table<OpIndexKey, ()>, OpIndexKey)> {
        let (index, at) = match record.state {
            OpState::Ready => (self.t.op_ready, record.ready_at),
            OpState::Working => (self.t.op_working, record.lease_until),
            OpState::Ok | OpState::Failed => return None,
        };
        let key = OpIndexKey {
            op: record.op.clone(),
            at,
            item: record.item.clone(),
        };
        Some((index, key))
    }

    fn make_ready(&self, txn: &mut RwTransaction<'_>, item: &str, op: &str, now: Millis) -> Result<OpRecord> {
        let old = self.load_op(txn, item, op)?;
        let new = t::op_ready(old.clone(), item, op, now);
        self.write_op(txn, old.as_ref(), &new)?;
        self.clear_lapses(txn, item, op)?;
        Ok(new)
    }

    fn lapses(&self, txn: &impl Transaction, item: &str, op: &str) -> Result<u32> {
        let count = self.t.op_lapses.get(txn, &OpKey::new(item, op))?.unwrap_or(0);
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Forgets the lapses of a record its holder (or an operator) moved.
    fn clear_lapses(&self, txn: &mut RwTransaction<'_>, item: &str, op: &str) -> Result<()> {
        self.t.op_lapses.delete(txn, &OpKey::new(item, op)).map(drop)
    }

    /// The first entry of `index` at or after `seek`.
    fn first_index_entry(
        &self,
        txn: &impl Transaction,
        index: &Table<OpIndexKey, ()>,
        seek: &[u8],
    ) -> Result<Option<OpIndexKey>> {
        Ok(index.range(txn, &[], seek, 1)?.into_iter().next().map(|(key, ())| key))
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
        let mut seek = op.map(prefix).unwrap_or_default();
        while found.len() < limit {
            let Some(first) = self.first_index_entry(txn, &self.t.op_working, &seek)? else {
                break;
            };
            if op.is_some_and(|op| op != first.op) {
                break;
            }
            let name_prefix = prefix(&first.op);
            if first.at <= now {
                self.t
                    .op_working
                    .scan(txn, &name_prefix, &first.to_bytes(), |key, ()| {
                        if key.at > now {
                            return Ok(false);
                        }
                        found.push((key.op, key.item));
                        Ok(found.len() < limit)
                    })?;
            }
            // The rest of this operation's claims end later still.
            if op.is_some() {
                break;
            }
            seek = after_prefix(&name_prefix);
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
                        "{}: {} names {item:?} of {op:?} wrongly",
                        self.context(),
                        tables::OP_WORKING
                    ))
                })?;
            let lapses = self.lapses(txn, &item, &op)?.saturating_add(1);
            let new = t::op_lapse(old.clone(), lapses, policy, now);
            self.write_op(txn, Some(&old), &new)?;
            if new.state == OpState::Failed {
                report.failed += 1;
                self.clear_lapses(txn, &item, &op)?;
            } else {
                report.ready += 1;
                self.t.op_lapses.put(txn, &OpKey::new(&item, &op), &u64::from(lapses))?;
            }
        }
        Ok(report)
    }

    /// The record of `item` that the index `index` lists for `op`: a
    /// missing one is Corrupt (the index and the records disagree).
    fn expect_op(&self, txn: &impl Transaction, item: &str, op: &str, index: &str) -> Result<OpRecord> {
        self.load_op(txn, item, op)?.ok_or_else(|| {
            Error::corrupt(format!(
                "{}: {index} lists item {item:?} of {op:?}, which {} does not hold",
                self.context(),
                tables::OP_RECORDS
            ))
        })
    }

    /// The items of up to `limit` READY entries of `op`, oldest first.
    fn ready_items(&self, txn: &impl Transaction, op: &str, limit: usize) -> Result<Vec<String>> {
        let name_prefix = prefix(op);
        let entries = self.t.op_ready.range(txn, &name_prefix, &name_prefix, limit)?;
        Ok(entries.into_iter().map(|(key, ())| key.item).collect())
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
            self.ready_items(txn, op, limit)?
                .iter()
                .map(|item| self.expect_op(txn, item, op, tables::OP_READY))
                .collect()
        })
    }

    /// Oldest: the first `limit` READY entries merged with every lapsed
    /// claim by ready time. Item: every READY key of `op` is read (keys, not
    /// records) and the first `limit` items loaded.
    fn next_in(&self, op: &str, limit: usize, order: NextOrder, now: Millis) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let lapsed = self.lapsed(txn, Some(op), usize::MAX, now)?;
            let ready_limit = if order == NextOrder::Oldest { limit } else { usize::MAX };
            let mut items: Vec<String> = lapsed.into_iter().map(|(_, item)| item).collect();
            items.extend(self.ready_items(txn, op, ready_limit)?);
            if order == NextOrder::Item {
                items.sort();
                items.truncate(limit);
            }
            let mut records = items
                .iter()
                .map(|item| self.expect_op(txn, item, op, "keel.op.ready or keel.op.working"))
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
            let ready = self.ready_items(txn, op, limit)?;
            let mut claims = Vec::with_capacity(ready.len());
            for item in ready {
                let old = self.expect_op(txn, &item, op, tables::OP_READY)?;
                if !t::op_claimable(&old, request.now) {
                    return Err(Error::corrupt(format!(
                        "{}: index lists unclaimable item {item:?}",
                        self.context()
                    )));
                }
                let token = next_counter(txn, &self.t, NEXT_TOKEN)?;
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
            let mut records = Vec::new();
            if limit == 0 {
                return Ok(records);
            }
            self.t.op_records.scan(txn, &[], &[], |key, record| {
                if key.op == op && state.is_none_or(|state| state == record.state) {
                    records.push(key.record(record));
                }
                Ok(records.len() < limit)
            })?;
            Ok(records)
        })
    }

    fn states(&self, item: &str) -> Result<Vec<OpRecord>> {
        self.env.read(|txn| {
            let item_prefix = prefix(item);
            let mut records = Vec::new();
            self.t.op_records.scan(txn, &item_prefix, &item_prefix, |key, record| {
                records.push(key.record(record));
                Ok(true)
            })?;
            Ok(records)
        })
    }
}

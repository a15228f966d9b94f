//! Operation records on PostgreSQL: one row per (item, operation), claimed
//! with `FOR UPDATE SKIP LOCKED`, written back in one statement per call.

use ::postgres::Row;

use super::{from_sql_time, from_sql_u32, to_sql_time, to_sql_u32, PgStore};
use crate::ops::clock::Millis;
use crate::ops::records::{OpClaim, OpRecord, OpState, Token};
use crate::ops::store::{ClaimRequest, NextOrder, OpResetReport, OperationStore};
use crate::ops::transitions::{self as t, OpPolicy};
use crate::postgres::Session;
use crate::{Error, Result};

/// How many lapsed claims one `claim` counts before claiming.
const LAPSES_PER_CLAIM: i64 = 64;
/// How many lapsed claims one reset transaction handles.
const LAPSES_PER_PASS: i64 = 1_000;

const COLS: &str = "item, op, state, message, attempts, token, worker, lease_until, ready_at, created_at, updated_at";

fn op_from(row: &Row) -> Result<OpRecord> {
    let item: String = row.get(0);
    let op: String = row.get(1);
    let state: i16 = row.get(2);
    let state = OpState::ALL
        .into_iter()
        .find(|known| *known as u8 as i16 == state)
        .ok_or_else(|| Error::corrupt(format!("operation {op:?} of item {item:?}: unknown state {state}")))?;
    Ok(OpRecord {
        item,
        op,
        state,
        message: row.get(3),
        attempts: from_sql_u32(row.get(4)),
        token: row.get::<_, i64>(5) as Token,
        worker: row.get(6),
        lease_until: from_sql_time(row.get(7)),
        ready_at: from_sql_time(row.get(8)),
        created_at: from_sql_time(row.get(9)),
        updated_at: from_sql_time(row.get(10)),
        expired: false,
    })
}

fn ops_from(rows: &[Row]) -> Result<Vec<OpRecord>> {
    rows.iter().map(op_from).collect()
}

impl PgStore {
    /// The records of `item` for each of `ops` that exist, locked for update.
    fn lock_ops(&self, s: &mut Session<'_>, item: &str, ops: &[&str]) -> Result<Vec<OpRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.op_records WHERE item = $1 AND op = ANY($2) \
             ORDER BY op COLLATE \"C\" FOR UPDATE"
        ));
        ops_from(&s.query(&sql, &[&item, &ops])?)
    }

    /// Stores `records` (new or changed) in one statement; `clear_lapses`
    /// when their holder or an operator moved them (a claim keeps them).
    fn write_ops(&self, s: &mut Session<'_>, records: &[OpRecord], clear_lapses: bool) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let sql = self.sql(
            "INSERT INTO {s}.op_records SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[], \
             $5::integer[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[]) \
             ON CONFLICT (item, op) DO UPDATE SET state = excluded.state, message = excluded.message, \
             attempts = excluded.attempts, token = excluded.token, worker = excluded.worker, \
             lease_until = excluded.lease_until, ready_at = excluded.ready_at, updated_at = excluded.updated_at, \
             lapses = CASE WHEN $12 THEN 0 ELSE {s}.op_records.lapses END",
        );
        let column = |f: &dyn Fn(&OpRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
        let items: Vec<&str> = records.iter().map(|r| r.item.as_str()).collect();
        let ops: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
        let states: Vec<i16> = records.iter().map(|r| r.state as u8 as i16).collect();
        let messages: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
        let attempts: Vec<i32> = records.iter().map(|r| to_sql_u32(r.attempts)).collect();
        let tokens = column(&|r| r.token as i64);
        let workers: Vec<&str> = records.iter().map(|r| r.worker.as_str()).collect();
        let leases = column(&|r| to_sql_time(r.lease_until));
        let ready = column(&|r| to_sql_time(r.ready_at));
        let created = column(&|r| to_sql_time(r.created_at));
        let updated = column(&|r| to_sql_time(r.updated_at));
        s.execute(
            &sql,
            &[
                &items,
                &ops,
                &states,
                &messages,
                &attempts,
                &tokens,
                &workers,
                &leases,
                &ready,
                &created,
                &updated,
                &clear_lapses,
            ],
        )?;
        Ok(())
    }

    /// Each of `ops` of `item` made READY (records created as needed).
    fn make_ready(&self, s: &mut Session<'_>, item: &str, ops: &[&str], now: Millis) -> Result<Vec<OpRecord>> {
        let existing = self.lock_ops(s, item, ops)?;
        let records: Vec<OpRecord> = ops
            .iter()
            .map(|op| {
                let old = existing.iter().find(|record| record.op == *op).cloned();
                t::op_ready(old, item, op, now)
            })
            .collect();
        self.write_ops(s, &records, true)?;
        Ok(records)
    }

    /// Counts a lapse on up to `limit` lapsed claims (of `op`, or of all):
    /// READY again at their old place, or FAILED past `policy.max_lapses`.
    fn lapse_in(
        &self,
        s: &mut Session<'_>,
        op: Option<&str>,
        policy: &OpPolicy,
        now: Millis,
        limit: i64,
    ) -> Result<OpResetReport> {
        let find = self.sql(&format!(
            "SELECT {COLS}, lapses FROM {{s}}.op_records WHERE state = 2 AND lease_until <= $1 \
             AND ($2::text IS NULL OR op = $2) ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED"
        ));
        let store = self.sql(
            "UPDATE {s}.op_records SET state = $3, message = $4, token = 0, lease_until = 0, updated_at = $5, \
             lapses = $6 WHERE item = $1 AND op = $2",
        );
        let mut report = OpResetReport::default();
        for row in s.query(&find, &[&to_sql_time(now), &op, &limit])? {
            let old = op_from(&row)?;
            let lapses = from_sql_u32(row.get(11)).saturating_add(1);
            let new = t::op_lapse(old, lapses, policy, now);
            let kept = if new.state == OpState::Failed {
                report.failed += 1;
                0
            } else {
                report.ready += 1;
                lapses
            };
            s.execute(
                &store,
                &[
                    &new.item,
                    &new.op,
                    &(new.state as u8 as i16),
                    &new.message,
                    &to_sql_time(new.updated_at),
                    &to_sql_u32(kept),
                ],
            )?;
        }
        Ok(report)
    }
}

impl OperationStore for PgStore {
    fn location(&self) -> String {
        self.db.location()
    }

    fn ready(&self, item: &str, ops: &[&str], now: Millis) -> Result<Vec<OpRecord>> {
        let context = self.context();
        self.conn()?.transact(&context, |s| {
            let times = self.times(s, now)?;
            self.make_ready(s, item, ops, times.now)
        })
    }

    fn next(&self, op: &str, limit: usize) -> Result<Vec<OpRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.op_records WHERE op = $1 AND state = 1 \
             ORDER BY ready_at, item COLLATE \"C\" LIMIT $2"
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        ops_from(&self.conn()?.query(&self.context(), &sql, &[&op, &limit])?)
    }

    fn claim(&self, op: &str, limit: usize, request: ClaimRequest<'_>) -> Result<Vec<OpClaim>> {
        self.claim_with(op, limit, request, &OpPolicy::default())
    }

    /// Lapsed claims of `op` are counted first (READY again at their old
    /// place, or FAILED), then the oldest READY records are claimed.
    fn claim_with(&self, op: &str, limit: usize, request: ClaimRequest<'_>, policy: &OpPolicy) -> Result<Vec<OpClaim>> {
        let context = self.context();
        let ready = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.op_records WHERE op = $1 AND state = 1 \
             ORDER BY ready_at, item COLLATE \"C\" LIMIT $2 FOR UPDATE SKIP LOCKED"
        ));
        let tokens = self.sql("SELECT nextval('{s}.tokens') FROM generate_series(1, $1)");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn()?.transact(&context, |s| {
            let times = self.times(s, request.now)?;
            self.lapse_in(s, Some(op), policy, times.now, LAPSES_PER_CLAIM)?;
            let found = ops_from(&s.query(&ready, &[&op, &limit])?)?;
            if found.is_empty() {
                return Ok(Vec::new());
            }
            let tokens: Vec<Token> = s
                .query(&tokens, &[&(found.len() as i32)])?
                .iter()
                .map(|row| row.get::<_, i64>(0) as Token)
                .collect();
            let lease_until = times.shift(request.lease_until);
            let claimed: Vec<OpRecord> = found
                .into_iter()
                .zip(tokens)
                .map(|(old, token)| t::op_claim(old, request.worker, token, lease_until, times.now))
                .collect();
            self.write_ops(s, &claimed, false)?;
            Ok(claimed
                .into_iter()
                .map(|record| OpClaim {
                    item: record.item,
                    op: record.op,
                    token: record.token,
                    lease_until: record.lease_until,
                    attempt: record.attempts,
                })
                .collect())
        })
    }

    fn reset_expired(&self, policy: &OpPolicy, now: Millis) -> Result<OpResetReport> {
        let context = self.context();
        let mut conn = self.conn()?;
        let mut total = OpResetReport::default();
        loop {
            let report = conn.transact(&context, |s| {
                let times = self.times(s, now)?;
                self.lapse_in(s, None, policy, times.now, LAPSES_PER_PASS)
            })?;
            total.ready += report.ready;
            total.failed += report.failed;
            if report.ready + report.failed < LAPSES_PER_PASS as u64 {
                return Ok(total);
            }
        }
    }

    /// READY records and lapsed claims of `op`, oldest first or by item.
    fn next_in(&self, op: &str, limit: usize, order: NextOrder, now: Millis) -> Result<Vec<OpRecord>> {
        let order_by = match order {
            NextOrder::Oldest => "ready_at, item COLLATE \"C\"",
            NextOrder::Item => "item COLLATE \"C\"",
        };
        let sql = self.sql(&format!(
            "WITH t AS (SELECT CASE WHEN $4 THEN $3 ELSE {{s}}.now_ms() END AS now) \
             SELECT {COLS} FROM {{s}}.op_records, t WHERE op = $1 \
             AND (state = 1 OR (state = 2 AND lease_until <= t.now)) ORDER BY {order_by} LIMIT $2"
        ));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: [&(dyn ::postgres::types::ToSql + Sync); 4] = [&op, &limit, &to_sql_time(now), &self.caller_time()];
        ops_from(&self.conn()?.query(&self.context(), &sql, &params)?)
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
        let context = self.context();
        self.conn()?.transact(&context, |s| {
            let times = self.times(s, now)?;
            let old = self.lock_ops(s, item, &[op])?.pop();
            let new = t::op_update(old, item, op, token, state, message, times.now)?;
            self.write_ops(s, std::slice::from_ref(&new), true)?;
            self.make_ready(s, item, enable, times.now)?;
            Ok(new)
        })
    }

    fn list(&self, op: &str, state: Option<OpState>, limit: usize) -> Result<Vec<OpRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.op_records WHERE op = $1 AND ($2::smallint IS NULL OR state = $2) \
             ORDER BY item COLLATE \"C\" LIMIT $3"
        ));
        let state = state.map(|state| state as u8 as i16);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        ops_from(&self.conn()?.query(&self.context(), &sql, &[&op, &state, &limit])?)
    }

    fn states(&self, item: &str) -> Result<Vec<OpRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.op_records WHERE item = $1 ORDER BY op COLLATE \"C\""
        ));
        ops_from(&self.conn()?.query(&self.context(), &sql, &[&item])?)
    }
}

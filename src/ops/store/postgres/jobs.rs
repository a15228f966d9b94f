//! The job queue on PostgreSQL: the `jobs` table, claimed with `FOR UPDATE
//! SKIP LOCKED`, counted by a trigger into `job_count_deltas`.

use std::collections::HashMap;

use ::postgres::types::ToSql;
use ::postgres::Row;

use super::{
    from_sql_time, from_sql_u32, scalar, to_sql_time, to_sql_u32, PgStore, Times, RESETS_PER_DEQUEUE, RESETS_PER_PASS,
};
use crate::ops::clock::Millis;
use crate::ops::events;
use crate::ops::records::{JobId, JobRecord, JobState, Token};
use crate::ops::store::{ClaimRequest, Enqueued, Finish, JobStore, KindCount, NewJob, ResetReport};
use crate::ops::transitions::{self as t, JobPolicy};
use crate::postgres::{map_err, Session};
use crate::{Error, Result};

/// The columns of `jobs`, in table order (so `(job).*` matches too).
const COLS: &str = "id, kind, payload, state, priority, run_at, attempts, failures, max_attempts, resets, token, \
                    worker, lease_until, unique_key, last_error, result, created_at, updated_at, finished_at";

/// A job from the row's columns `offset..offset + 19`, in [`COLS`] order.
fn job_from(row: &Row, offset: usize) -> Result<JobRecord> {
    let id: i64 = row.get(offset);
    let state: i16 = row.get(offset + 3);
    let what = format!("job {id}");
    Ok(JobRecord {
        id: id as JobId,
        kind: row.get(offset + 1),
        payload: row.get(offset + 2),
        state: JobState::from_code(u8::try_from(state).unwrap_or(0), &what)?,
        priority: row.get::<_, i16>(offset + 4).clamp(0, 255) as u8,
        run_at: from_sql_time(row.get(offset + 5)),
        attempts: from_sql_u32(row.get(offset + 6)),
        failures: from_sql_u32(row.get(offset + 7)),
        max_attempts: from_sql_u32(row.get(offset + 8)),
        resets: from_sql_u32(row.get(offset + 9)),
        token: row.get::<_, i64>(offset + 10) as Token,
        worker: row.get(offset + 11),
        lease_until: from_sql_time(row.get(offset + 12)),
        unique_key: row.get(offset + 13),
        last_error: row.get(offset + 14),
        result: row.get(offset + 15),
        created_at: from_sql_time(row.get(offset + 16)),
        updated_at: from_sql_time(row.get(offset + 17)),
        finished_at: from_sql_time(row.get(offset + 18)),
    })
}

/// `cols` (comma-separated) each prefixed with `table.`.
fn prefixed(table: &str, cols: &str) -> String {
    cols.split(',')
        .map(|col| format!("{table}.{}", col.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn jobs_from(rows: &[Row]) -> Result<Vec<JobRecord>> {
    rows.iter().map(|row| job_from(row, 0)).collect()
}

/// Enqueues `job` inside the caller's own transaction on `txn` (any
/// `postgres` client or transaction): the job exists, and idle workers
/// hear of it, only if that transaction commits. `schema` is the store's
/// schema (`keel` by default); times are the database's.
///
/// The arguments are checked as [`Queue::enqueue`](crate::ops::Queue::enqueue)
/// checks them.
pub fn enqueue_in(
    txn: &mut impl ::postgres::GenericClient,
    schema: &str,
    kind: &str,
    payload: &str,
    options: &crate::ops::EnqueueOptions,
) -> Result<Enqueued> {
    crate::ops::names::check_name("job kind", kind)?;
    crate::ops::names::check_json("payload", payload)?;
    if options.priority > 9 || options.max_attempts == 0 {
        return Err(Error::invalid_argument(format!(
            "priority {} (0 to 9) or max_attempts {} (at least 1) out of range",
            options.priority, options.max_attempts
        )));
    }
    if let Some(key) = &options.unique_key {
        crate::ops::names::check_key("unique key", key)?;
    }
    if !schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::invalid_argument(format!("schema name {schema:?}")));
    }
    let sql = format!(
        "SELECT r.created, (r.job).* FROM {schema}.insert_job($1, $2, $3, COALESCE($4, {schema}.now_ms()), $5, $6, {schema}.now_ms()) r"
    );
    let run_at = options.run_at.map(to_sql_time);
    let row = txn
        .query_one(
            &sql,
            &[
                &kind,
                &payload,
                &i32::from(options.priority),
                &run_at,
                &to_sql_u32(options.max_attempts),
                &options.unique_key,
            ],
        )
        .map_err(|err| map_err(&format!("enqueue in transaction ({schema})"), err))?;
    Ok(Enqueued {
        created: row.get(0),
        job: job_from(&row, 1)?,
    })
}

impl PgStore {
    fn load_job(&self, s: &mut Session<'_>, id: JobId) -> Result<JobRecord> {
        let sql = self.sql(&format!("SELECT {COLS} FROM {{s}}.jobs WHERE id = $1 FOR UPDATE"));
        match s.query_opt(&sql, &[&(id as i64)])? {
            Some(row) => job_from(&row, 0),
            None => Err(self.no_job(id)),
        }
    }

    fn no_job(&self, id: JobId) -> Error {
        Error::not_found(format!("{}: no job {id}", self.context()))
    }

    /// Stores the changed fields of `job` (kind, payload, unique key and
    /// creation time never change).
    fn write_job(&self, s: &mut Session<'_>, job: &JobRecord) -> Result<()> {
        let sql = self.sql(
            "UPDATE {s}.jobs SET state = $2, priority = $3, run_at = $4, attempts = $5, failures = $6, \
             max_attempts = $7, resets = $8, token = $9, worker = $10, lease_until = $11, last_error = $12, \
             result = $13, updated_at = $14, finished_at = $15 WHERE id = $1",
        );
        let params: [&(dyn ToSql + Sync); 15] = [
            &(job.id as i64),
            &(job.state as u8 as i16),
            &i16::from(job.priority),
            &to_sql_time(job.run_at),
            &to_sql_u32(job.attempts),
            &to_sql_u32(job.failures),
            &to_sql_u32(job.max_attempts),
            &to_sql_u32(job.resets),
            &(job.token as i64),
            &job.worker,
            &to_sql_time(job.lease_until),
            &job.last_error,
            &job.result,
            &to_sql_time(job.updated_at),
            &to_sql_time(job.finished_at),
        ];
        match s.execute(&sql, &params)? {
            1 => {
                self.note_write();
                Ok(())
            }
            _ => Err(self.no_job(job.id)),
        }
    }

    /// Resets up to `limit` running jobs whose lease ended, skipping any a
    /// concurrent caller is resetting.
    fn reset_in(&self, s: &mut Session<'_>, policy: &JobPolicy, now: Millis, limit: i64) -> Result<ResetReport> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.jobs WHERE state = 2 AND lease_until <= $1 \
             ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED"
        ));
        let expired = jobs_from(&s.query(&sql, &[&to_sql_time(now), &limit])?)?;
        let mut report = ResetReport::default();
        for old in expired {
            let new = t::job_reset(old, policy.max_resets, now);
            match new.state {
                JobState::Dead => report.dead += 1,
                _ => report.requeued += 1,
            }
            self.write_job(s, &new)?;
        }
        Ok(report)
    }

    /// The live job holding `unique` for `kind`, if any.
    fn unique_holder(&self, s: &mut Session<'_>, kind: &str, unique: &str) -> Result<Option<JobRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.jobs WHERE kind = $1 AND unique_key = $2 AND state IN (1, 2, 3)"
        ));
        s.query_opt(&sql, &[&kind, &unique])?
            .map(|row| job_from(&row, 0))
            .transpose()
    }

    /// Resets expired leases and claims up to `limit` jobs: one call of the
    /// schema's `claim_jobs`, so one round trip.
    fn claim(
        &self,
        kinds: &[&str],
        limit: usize,
        request: ClaimRequest<'_>,
        policy: &JobPolicy,
    ) -> Result<Vec<JobRecord>> {
        let sql =
            self.sql("SELECT r.requeued, r.dead, (r.job).* FROM {s}.claim_jobs($1, $2, $3, $4, $5, $6, $7, $8) r");
        let kinds: Vec<&str> = kinds.to_vec();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.conn()?.query(
            &self.context(),
            &sql,
            &[
                &kinds,
                &limit,
                &request.worker,
                &to_sql_time(request.lease_until),
                &to_sql_time(request.now),
                &self.caller_time(),
                &to_sql_u32(policy.max_resets),
                &(RESETS_PER_DEQUEUE as i32),
            ],
        )?;
        let (requeued, dead) = rows.first().map_or((0, 0), |row| {
            (u64::from(from_sql_u32(row.get(0))), u64::from(from_sql_u32(row.get(1))))
        });
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.get::<_, Option<i64>>(2).is_some() {
                claimed.push(job_from(row, 2)?);
            }
        }
        // Best first, as `dequeue` one by one would hand them out.
        claimed.sort_by_key(|job| (job.priority, job.run_at, job.id));
        self.note_writes(requeued + dead + claimed.len() as u64);
        events::leases_reset(requeued, dead, "dequeue");
        Ok(claimed)
    }

    /// Completes each `(id, token, result)` in one statement (so one round
    /// trip), each on its own: a stale token fails only its entry. The rule
    /// is `transitions::job_complete`'s: a running job under that token
    /// becomes completed, its attempt cleared. Ids must be distinct.
    fn complete_many(&self, completes: &[(JobId, Token, &str)], now: Millis) -> Result<Vec<Result<JobRecord>>> {
        if completes.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.sql(&format!(
            "WITH t AS (SELECT CASE WHEN $5 THEN $4 ELSE {{s}}.now_ms() END AS now) \
             UPDATE {{s}}.jobs j SET state = 4, result = f.result, finished_at = t.now, token = 0, \
             lease_until = 0, updated_at = t.now \
             FROM t, unnest($1::bigint[], $2::bigint[], $3::text[]) AS f(id, token, result) \
             WHERE j.id = f.id AND j.state = 2 AND j.token = f.token RETURNING {}",
            prefixed("j", COLS)
        ));
        let ids: Vec<i64> = completes.iter().map(|&(id, _, _)| id as i64).collect();
        let tokens: Vec<i64> = completes.iter().map(|&(_, token, _)| token as i64).collect();
        let results: Vec<&str> = completes.iter().map(|&(_, _, result)| result).collect();
        let context = self.context();
        let mut conn = self.conn()?;
        let mut attempt = 0;
        let rows = loop {
            attempt += 1;
            match conn.query(
                &context,
                &sql,
                &[&ids, &tokens, &results, &to_sql_time(now), &self.caller_time()],
            ) {
                // Two batches that lock the same rows in opposite orders:
                // the server aborted one; it changed nothing, run it again.
                Err(err) if err.kind() == crate::ErrorKind::Busy && attempt < 5 => continue,
                other => break other?,
            }
        };
        let mut done: HashMap<JobId, JobRecord> = jobs_from(&rows)?.into_iter().map(|job| (job.id, job)).collect();
        self.note_writes(done.len() as u64);
        let missed: Vec<i64> = completes
            .iter()
            .filter(|(id, _, _)| !done.contains_key(id))
            .map(|&(id, _, _)| id as i64)
            .collect();
        let mut refused: HashMap<JobId, JobRecord> = HashMap::new();
        if !missed.is_empty() {
            // Why each was refused, from the job as it is now.
            let look = self.sql(&format!("SELECT {COLS} FROM {{s}}.jobs WHERE id = ANY($1)"));
            refused = jobs_from(&conn.query(&context, &look, &[&missed])?)?
                .into_iter()
                .map(|job| (job.id, job))
                .collect();
        }
        Ok(completes
            .iter()
            .map(|&(id, token, _)| {
                if let Some(job) = done.remove(&id) {
                    return Ok(job);
                }
                match refused.get(&id) {
                    None => Err(self.no_job(id)),
                    Some(job) => match t::fence(job, token) {
                        Err(err) => Err(err),
                        // Only a running job under `token` is completed,
                        // and tokens are never reused: it finished since.
                        Ok(()) => Err(Error::conflict(format!(
                            "job {id} ({}): attempt token {token} is stale",
                            job.kind
                        ))),
                    },
                }
            })
            .collect())
    }

    /// Runs `body` on the job `id` locked for update, storing what it returns.
    fn move_job(
        &self,
        now: Millis,
        id: JobId,
        body: impl Fn(&mut Session<'_>, JobRecord, Times) -> Result<JobRecord>,
    ) -> Result<JobRecord> {
        let context = self.context();
        self.conn()?.transact(&context, |s| {
            let times = self.times(s, now)?;
            let old = self.load_job(s, id)?;
            let new = body(s, old, times)?;
            self.write_job(s, &new)?;
            Ok(new)
        })
    }
}

impl JobStore for PgStore {
    fn enqueue(&self, job: NewJob, now: Millis) -> Result<Enqueued> {
        // One self-committing statement: the caller's times moved onto the
        // store's clock, then `insert_job_quiet`; the notification follows
        // from the announcer's own connection.
        let sql = self.sql(
            "WITH t AS (SELECT CASE WHEN $8 THEN $7 ELSE {s}.now_ms() END AS now) \
             SELECT r.created, (r.job).* FROM t, \
             LATERAL {s}.insert_job_quiet($1, $2, $3, $4 + (t.now - $7), $5, $6, t.now) r",
        );
        let rows = self.conn()?.query(
            &self.context(),
            &sql,
            &[
                &job.kind,
                &job.payload,
                &i32::from(job.priority),
                &to_sql_time(job.run_at),
                &to_sql_u32(job.max_attempts),
                &job.unique_key,
                &to_sql_time(now),
                &self.caller_time(),
            ],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| Error::corrupt(format!("{}: enqueue returned nothing", self.context())))?;
        self.note_write();
        let enqueued = Enqueued {
            created: row.get(0),
            job: job_from(row, 1)?,
        };
        if enqueued.created {
            self.announce(&enqueued.job.kind);
        }
        Ok(enqueued)
    }

    fn dequeue(&self, kinds: &[&str], request: ClaimRequest<'_>, policy: &JobPolicy) -> Result<Option<JobRecord>> {
        Ok(self.claim(kinds, 1, request, policy)?.into_iter().next())
    }

    fn dequeue_many(
        &self,
        kinds: &[&str],
        limit: usize,
        request: ClaimRequest<'_>,
        policy: &JobPolicy,
    ) -> Result<Vec<JobRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.claim(kinds, limit, request, policy)
    }

    fn heartbeat(&self, leases: &[(JobId, Token)], lease_until: Millis, now: Millis) -> Result<Vec<Result<()>>> {
        let context = self.context();
        let lock = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ));
        let ids: Vec<i64> = leases.iter().map(|&(id, _)| id as i64).collect();
        self.conn()?.transact(&context, |s| {
            let times = self.times(s, now)?;
            // Locked in id order, so two heartbeats never deadlock.
            let mut jobs: HashMap<JobId, JobRecord> = jobs_from(&s.query(&lock, &[&ids])?)?
                .into_iter()
                .map(|job| (job.id, job))
                .collect();
            let until = times.shift(lease_until);
            let mut results = Vec::with_capacity(leases.len());
            for &(id, token) in leases {
                let Some(old) = jobs.get(&id).cloned() else {
                    results.push(Err(self.no_job(id)));
                    continue;
                };
                match t::job_heartbeat(old, token, until, times.now) {
                    Ok(new) => {
                        self.write_job(s, &new)?;
                        jobs.insert(id, new);
                        results.push(Ok(()));
                    }
                    Err(err) => results.push(Err(err)),
                }
            }
            Ok(results)
        })
    }

    fn finish(
        &self,
        id: JobId,
        token: Token,
        finish: Finish<'_>,
        policy: &JobPolicy,
        now: Millis,
    ) -> Result<JobRecord> {
        if let Finish::Complete { result } = finish {
            return self
                .complete_many(&[(id, token, result)], now)?
                .pop()
                .unwrap_or_else(|| Err(self.no_job(id)));
        }
        self.move_job(now, id, |_, old, times| match finish {
            Finish::Complete { result } => t::job_complete(old, token, result, times.now),
            Finish::Fail { error, retryable } => t::job_fail(old, token, error, retryable, &policy.backoff, times.now),
            Finish::Release => t::job_release(old, token, times.now),
        })
    }

    /// The completions in one statement; the other finishes one by one.
    fn finish_many(
        &self,
        finishes: &[(JobId, Token, Finish<'_>)],
        policy: &JobPolicy,
        now: Millis,
    ) -> Result<Vec<Result<JobRecord>>> {
        let mut ids: Vec<JobId> = finishes.iter().map(|&(id, _, _)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < finishes.len() {
            // A job named twice: the second must see the first's outcome.
            return Ok(finishes
                .iter()
                .map(|&(id, token, finish)| self.finish(id, token, finish, policy, now))
                .collect());
        }
        let completes: Vec<(JobId, Token, &str)> = finishes
            .iter()
            .filter_map(|&(id, token, finish)| match finish {
                Finish::Complete { result } => Some((id, token, result)),
                _ => None,
            })
            .collect();
        let mut completed = self.complete_many(&completes, now)?.into_iter();
        Ok(finishes
            .iter()
            .map(|&(id, token, finish)| match finish {
                Finish::Complete { .. } => completed.next().unwrap_or_else(|| Err(self.no_job(id))),
                other => self.finish(id, token, other, policy, now),
            })
            .collect())
    }

    fn cancel(&self, id: JobId, reason: &str, now: Millis) -> Result<JobRecord> {
        self.move_job(now, id, |_, old, times| t::job_cancel(old, reason, times.now))
    }

    fn retry(&self, id: JobId, now: Millis) -> Result<JobRecord> {
        let new = self.move_job(now, id, |s, old, times| {
            let new = t::job_retry(old, times.now)?;
            // Its unique key may have gone to a newer live job meanwhile.
            if let Some(unique) = &new.unique_key {
                if let Some(holder) = self.unique_holder(s, &new.kind, unique)? {
                    return Err(Error::conflict(format!(
                        "job {id} ({}): its unique key {unique:?} is held by live job {}",
                        new.kind, holder.id
                    )));
                }
            }
            Ok(new)
        })?;
        // A retried job is ready at once: wake idle workers elsewhere.
        let notify = "SELECT pg_notify($1, $2)";
        self.conn()?
            .query(&self.context(), notify, &[&self.db.jobs_channel(), &new.kind])?;
        Ok(new)
    }

    fn get(&self, id: JobId) -> Result<JobRecord> {
        let sql = self.sql(&format!("SELECT {COLS} FROM {{s}}.jobs WHERE id = $1"));
        let rows = self.conn()?.query(&self.context(), &sql, &[&(id as i64)])?;
        match rows.first() {
            Some(row) => job_from(row, 0),
            None => Err(self.no_job(id)),
        }
    }

    fn reset_expired(&self, policy: &JobPolicy, now: Millis) -> Result<ResetReport> {
        let context = self.context();
        let mut total = ResetReport::default();
        let mut conn = self.conn()?;
        loop {
            let report = conn.transact(&context, |s| {
                let times = self.times(s, now)?;
                self.reset_in(s, policy, times.now, RESETS_PER_PASS)
            })?;
            total.requeued += report.requeued;
            total.dead += report.dead;
            if report.requeued + report.dead < RESETS_PER_PASS as u64 {
                if total.requeued > 0 {
                    let notify = "SELECT pg_notify($1, '')";
                    conn.query(&context, notify, &[&self.db.jobs_channel()])?;
                }
                return Ok(total);
            }
        }
    }

    fn cleanup(&self, before: Millis, limit: usize) -> Result<u64> {
        let context = self.context();
        let sql = self.sql(
            "DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM {s}.jobs \
             WHERE state IN (4, 5, 6) AND finished_at < $1 ORDER BY finished_at LIMIT $2)",
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deleted = self.conn()?.transact(&context, |s| {
            // `before` is on the caller's clock, which reads the system's
            // when the store reads the database's.
            let times = self.times(s, crate::ops::Clock::now(&crate::ops::SystemClock))?;
            s.execute(&sql, &[&to_sql_time(times.shift(before)), &limit])
        })?;
        if deleted > 0 {
            self.fold_counts()?;
        }
        Ok(deleted)
    }

    fn counts(&self) -> Result<Vec<KindCount>> {
        self.fold_counts()?;
        let sql = self.sql(
            "SELECT kind, state, sum(n)::bigint FROM (SELECT kind, state, n FROM {s}.job_counts \
             UNION ALL SELECT kind, state, delta FROM {s}.job_count_deltas) c \
             GROUP BY kind, state HAVING sum(n) <> 0 ORDER BY kind COLLATE \"C\", state",
        );
        let rows = self.conn()?.query(&self.context(), &sql, &[])?;
        rows.iter()
            .map(|row| {
                let state: i16 = row.get(1);
                let count: i64 = row.get(2);
                if count < 0 {
                    return Err(Error::corrupt(format!("{}: a job count below zero", self.context())));
                }
                Ok(KindCount {
                    kind: row.get(0),
                    state: JobState::from_code(u8::try_from(state).unwrap_or(0), "job count")?,
                    count: count as u64,
                })
            })
            .collect()
    }

    /// One index seek per priority: the first ready entry at each priority
    /// is its earliest run-at.
    fn oldest_ready(&self, kind: &str, now: Millis) -> Result<Option<Millis>> {
        let sql = self.sql(
            "WITH t AS (SELECT CASE WHEN $3 THEN $2 ELSE {s}.now_ms() END AS now) \
             SELECT min(first.run_at) - (min(t.now) - $2) FROM t, generate_series(0, 9) p, LATERAL ( \
               SELECT run_at FROM {s}.jobs WHERE kind = $1 AND state IN (1, 3) AND priority = p \
               AND run_at <= t.now ORDER BY run_at LIMIT 1) first",
        );
        let rows = self
            .conn()?
            .query(&self.context(), &sql, &[&kind, &to_sql_time(now), &self.caller_time()])?;
        Ok(scalar::<Option<i64>>(&rows, None).map(from_sql_time))
    }

    fn location(&self) -> String {
        self.db.location()
    }

    fn list(&self, kind: &str, state: Option<JobState>, limit: usize) -> Result<Vec<JobRecord>> {
        let sql = self.sql(&format!(
            "SELECT {COLS} FROM {{s}}.jobs WHERE kind = $1 AND ($2::smallint IS NULL OR state = $2) \
             ORDER BY id LIMIT $3"
        ));
        let state = state.map(|state| state as u8 as i16);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        jobs_from(&self.conn()?.query(&self.context(), &sql, &[&kind, &state, &limit])?)
    }
}

//! keel's schema: created on first open and upgraded on later opens, under
//! an advisory lock and in one transaction, so concurrent openers never see
//! half a schema and a failed upgrade leaves the old one intact.
//!
//! The version lives in `meta` (`schema_version`). Step `n` of [`STEPS`]
//! turns version `n` into `n + 1`; a database at a newer version than this
//! build knows is refused as [`Unsupported`](crate::ErrorKind::Unsupported).
//! `{s}` in the SQL stands for the schema name (checked to be a plain
//! identifier before it gets here).

use ::postgres::Client;

use super::map_err;
use crate::{Error, Result};

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = 3;

/// The upgrade steps: `STEPS[n]` takes version `n` to `n + 1`.
const STEPS: &[&str] = &[V1, V2, V3];

/// Version 3: a dequeue in one round trip — `claim_jobs` resets expired
/// leases and then claims, in one call — and the quoting its reset message
/// uses; `insert_job_quiet`, an insert that leaves the notification to the
/// store's announcer (`crate::postgres::Announcer`). Their rules are `crate::ops::transitions`' `job_reset` and
/// `job_claim`, word for word; the conformance suite holds both stores to
/// them.
const V3: &str = r#"
-- insert_job without the notification: the store's own enqueue notifies
-- from another connection after it commits (a transaction that notifies
-- holds a database-wide lock until its commit is on disk, so notifying
-- enqueues could not share disk flushes). insert_job stays the one that
-- notifies in the caller's transaction.
CREATE OR REPLACE FUNCTION {s}.insert_job_quiet(
    p_kind text, p_payload text, p_priority integer, p_run_at bigint,
    p_max_attempts integer, p_unique_key text, p_now bigint,
    OUT created boolean, OUT job {s}.jobs
) LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        INSERT INTO {s}.jobs (kind, payload, state, priority, run_at, max_attempts, unique_key, created_at, updated_at)
        VALUES (p_kind, p_payload, 1, p_priority, p_run_at, p_max_attempts, p_unique_key, p_now, p_now)
        ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL AND state IN (1, 2, 3) DO NOTHING
        RETURNING * INTO job;
        IF FOUND THEN
            created := true;
            RETURN;
        END IF;
        -- Each statement sees the latest commits: the holder is found, or
        -- it finished meanwhile and the insert is tried again.
        SELECT * INTO job FROM {s}.jobs j
            WHERE j.kind = p_kind AND j.unique_key = p_unique_key AND j.state IN (1, 2, 3);
        IF FOUND THEN
            created := false;
            RETURN;
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION {s}.insert_job(
    p_kind text, p_payload text, p_priority integer, p_run_at bigint,
    p_max_attempts integer, p_unique_key text, p_now bigint,
    OUT created boolean, OUT job {s}.jobs
) LANGUAGE plpgsql AS $$
DECLARE
    outcome record;
BEGIN
    SELECT * INTO outcome FROM {s}.insert_job_quiet(p_kind, p_payload, p_priority, p_run_at,
        p_max_attempts, p_unique_key, p_now);
    created := outcome.created;
    job := outcome.job;
    IF created THEN
        PERFORM pg_notify('keel_jobs_{s}', p_kind);
    END IF;
END $$;

-- A text as Rust's Debug shows a str: in double quotes, with \ " and the
-- usual control characters escaped.
CREATE OR REPLACE FUNCTION {s}.quoted(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT '"' || replace(replace(replace(replace(replace(p,
        E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n'), E'\r', E'\\r'), E'\t', E'\\t') || '"'
$$;

-- Resets up to p_reset_limit running jobs whose lease ended (queued again,
-- or dead past p_max_resets), then claims up to p_limit ready jobs of
-- p_kinds, best first, each with a fresh token, for p_worker until
-- p_lease_until. Times: the caller's (p_now, p_lease_until) when
-- p_caller_time, else the database's, with p_lease_until moved by the
-- difference. One row per claimed job, or one with a NULL job when none
-- was; every row carries the reset counts.
CREATE OR REPLACE FUNCTION {s}.claim_jobs(
    p_kinds text[], p_limit integer, p_worker text, p_lease_until bigint,
    p_now bigint, p_caller_time boolean, p_max_resets integer, p_reset_limit integer,
    OUT requeued integer, OUT dead integer, OUT job {s}.jobs
) RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := CASE WHEN p_caller_time THEN p_now ELSE {s}.now_ms() END;
    v_until bigint := p_lease_until;
    v_claimed boolean := false;
BEGIN
    IF NOT p_caller_time AND p_lease_until <> 0 THEN
        v_until := greatest(p_lease_until + (v_now - p_now), 0);
    END IF;
    WITH expired AS (
        SELECT id FROM {s}.jobs WHERE state = 2 AND lease_until <= v_now
        ORDER BY lease_until LIMIT p_reset_limit FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE {s}.jobs j SET
            resets = j.resets + 1,
            state = CASE WHEN j.resets + 1 > p_max_resets THEN 5 ELSE 1 END,
            run_at = CASE WHEN j.resets + 1 > p_max_resets THEN j.run_at ELSE v_now END,
            finished_at = CASE WHEN j.resets + 1 > p_max_resets THEN v_now ELSE j.finished_at END,
            last_error = CASE WHEN j.resets + 1 > p_max_resets THEN format(
                'its processor kept dying: the lease expired %s times (max resets %s), last held by %s',
                j.resets + 1, p_max_resets, {s}.quoted(j.worker)) ELSE j.last_error END,
            token = 0, lease_until = 0, updated_at = v_now
        FROM expired WHERE j.id = expired.id
        RETURNING j.state
    )
    SELECT count(*) FILTER (WHERE moved.state = 1), count(*) FILTER (WHERE moved.state = 5)
        INTO requeued, dead FROM moved;
    -- A later statement: it sees the jobs just reset, and may claim them.
    FOR job IN
        WITH picked AS (
            SELECT id FROM {s}.jobs WHERE kind = ANY(p_kinds) AND state IN (1, 3) AND run_at <= v_now
            ORDER BY priority, run_at, id LIMIT p_limit FOR UPDATE SKIP LOCKED
        ), numbered AS (SELECT picked.id, nextval('{s}.tokens') AS token FROM picked)
        UPDATE {s}.jobs j SET state = 2, attempts = j.attempts + 1, token = numbered.token,
            worker = p_worker, lease_until = v_until, updated_at = v_now
        FROM numbered WHERE j.id = numbered.id
        RETURNING j.*
    LOOP
        v_claimed := true;
        RETURN NEXT;
    END LOOP;
    IF NOT v_claimed THEN
        job := NULL;
        RETURN NEXT;
    END IF;
END $$;
"#;

/// Version 2: operation records count their lapsed claims in a row (leases
/// that ended without an update), so a claim that keeps dying fails.
const V2: &str = r#"
ALTER TABLE {s}.op_records ADD COLUMN lapses integer NOT NULL DEFAULT 0;
"#;

/// Version 1: jobs (with their per-kind counts), operation records, the
/// token sequence (claims, attempts and lock fences) and the SQL entry points.
const V1: &str = r#"
CREATE SEQUENCE {s}.tokens;

CREATE TABLE {s}.jobs (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    payload text NOT NULL,
    state smallint NOT NULL,
    priority smallint NOT NULL,
    run_at bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    resets integer NOT NULL DEFAULT 0,
    token bigint NOT NULL DEFAULT 0,
    worker text NOT NULL DEFAULT '',
    lease_until bigint NOT NULL DEFAULT 0,
    unique_key text,
    last_error text NOT NULL DEFAULT '',
    result text NOT NULL DEFAULT '',
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    finished_at bigint NOT NULL DEFAULT 0
);
-- The indexes mirror the LMDB store's: ready jobs in dequeue order, running
-- jobs by lease end (the resetter), finished jobs by finish time (cleanup),
-- and at most one unfinished job per (kind, unique key).
CREATE INDEX jobs_available ON {s}.jobs (kind, priority, run_at, id) WHERE state IN (1, 3);
CREATE INDEX jobs_available_any ON {s}.jobs (priority, run_at, id) WHERE state IN (1, 3);
CREATE INDEX jobs_running ON {s}.jobs (lease_until) WHERE state = 2;
CREATE INDEX jobs_finished ON {s}.jobs (finished_at) WHERE state IN (4, 5, 6);
CREATE INDEX jobs_kind ON {s}.jobs (kind, id);
CREATE UNIQUE INDEX jobs_unique ON {s}.jobs (kind, unique_key)
    WHERE unique_key IS NOT NULL AND state IN (1, 2, 3);

-- Counts per kind and state. Every job move appends a delta row in its own
-- transaction (a trigger, so no writer can forget); appending never waits
-- on another writer, where updating one counter row per state would
-- serialise every dequeue. `fold_counts` moves the deltas into job_counts.
CREATE TABLE {s}.job_counts (
    kind text NOT NULL,
    state smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, state)
);
CREATE TABLE {s}.job_count_deltas (
    kind text NOT NULL,
    state smallint NOT NULL,
    delta bigint NOT NULL
);

CREATE FUNCTION {s}.count_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.job_count_deltas VALUES (NEW.kind, NEW.state, 1);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {s}.job_count_deltas VALUES (OLD.kind, OLD.state, -1);
    ELSIF OLD.state <> NEW.state OR OLD.kind <> NEW.kind THEN
        INSERT INTO {s}.job_count_deltas VALUES (OLD.kind, OLD.state, -1), (NEW.kind, NEW.state, 1);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_count AFTER INSERT OR DELETE OR UPDATE OF state, kind ON {s}.jobs
    FOR EACH ROW EXECUTE FUNCTION {s}.count_job();

CREATE FUNCTION {s}.fold_counts() RETURNS void LANGUAGE sql AS $$
    WITH moved AS (DELETE FROM {s}.job_count_deltas RETURNING kind, state, delta)
    INSERT INTO {s}.job_counts (kind, state, n)
    SELECT kind, state, sum(delta) FROM moved GROUP BY kind, state
    ON CONFLICT (kind, state) DO UPDATE SET n = {s}.job_counts.n + excluded.n;
    DELETE FROM {s}.job_counts WHERE n = 0;
$$;

-- The database's time in milliseconds since the epoch.
CREATE FUNCTION {s}.now_ms() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (extract(epoch FROM now()) * 1000)::bigint
$$;

-- Inserts a queued job, or returns the unfinished job holding its unique
-- key; announces a new job on the schema's channel at commit.
CREATE FUNCTION {s}.insert_job(
    p_kind text, p_payload text, p_priority integer, p_run_at bigint,
    p_max_attempts integer, p_unique_key text, p_now bigint,
    OUT created boolean, OUT job {s}.jobs
) LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        INSERT INTO {s}.jobs (kind, payload, state, priority, run_at, max_attempts, unique_key, created_at, updated_at)
        VALUES (p_kind, p_payload, 1, p_priority, p_run_at, p_max_attempts, p_unique_key, p_now, p_now)
        ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL AND state IN (1, 2, 3) DO NOTHING
        RETURNING * INTO job;
        IF FOUND THEN
            created := true;
            PERFORM pg_notify('keel_jobs_{s}', p_kind);
            RETURN;
        END IF;
        -- Each statement sees the latest commits: the holder is found, or
        -- it finished meanwhile and the insert is tried again.
        SELECT * INTO job FROM {s}.jobs j
            WHERE j.kind = p_kind AND j.unique_key = p_unique_key AND j.state IN (1, 2, 3);
        IF FOUND THEN
            created := false;
            RETURN;
        END IF;
    END LOOP;
END $$;

-- Enqueue from any client, inside its own transaction: the job exists (and
-- workers are woken) only if that transaction commits. Returns the job's id
-- (the holder's, for a unique key already held). Times are the database's.
CREATE FUNCTION {s}.enqueue(
    kind text, payload text, priority integer DEFAULT 5, run_at_ms bigint DEFAULT NULL,
    max_attempts integer DEFAULT 20, unique_key text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    outcome record;
BEGIN
    IF kind IS NULL OR kind !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'enqueue: job kind %: use 1 to 64 ASCII letters, digits, _ - . :', kind
            USING ERRCODE = '22023';
    END IF;
    PERFORM payload::json;
    IF priority IS NULL OR priority NOT BETWEEN 0 AND 9 THEN
        RAISE EXCEPTION 'enqueue: priority %: must be 0 to 9', priority USING ERRCODE = '22023';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'enqueue: max_attempts: must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF unique_key IS NOT NULL AND length(unique_key) NOT BETWEEN 1 AND 400 THEN
        RAISE EXCEPTION 'enqueue: unique key: must be 1 to 400 bytes' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO outcome FROM {s}.insert_job(kind, payload, priority, COALESCE(run_at_ms, {s}.now_ms()),
        max_attempts, unique_key, {s}.now_ms());
    RETURN (outcome.job).id;
END $$;

CREATE TABLE {s}.op_records (
    item text NOT NULL,
    op text NOT NULL,
    state smallint NOT NULL,
    message text NOT NULL,
    attempts integer NOT NULL,
    token bigint NOT NULL,
    worker text NOT NULL,
    lease_until bigint NOT NULL,
    ready_at bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (item, op)
);
CREATE INDEX op_ready ON {s}.op_records (op, ready_at, item COLLATE "C") WHERE state = 1;
CREATE INDEX op_working ON {s}.op_records (op, lease_until, item COLLATE "C") WHERE state = 2;

"#;

/// Creates or upgrades `schema` to [`SCHEMA_VERSION`], all or nothing.
pub(super) fn ensure(client: &mut Client, schema: &str) -> Result<()> {
    let err = |what: &str| {
        let what = format!("schema {schema}: {what}");
        move |err| map_err(&what, err)
    };
    let mut txn = client.transaction().map_err(err("begin"))?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&schema_lock_key(schema)])
        .map_err(err("lock"))?;
    let exists: bool = txn
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{schema}.meta")])
        .map_err(err("look up"))?
        .get(0);
    let version = if exists {
        let row = txn
            .query_opt(
                &format!("SELECT value FROM {schema}.meta WHERE key = 'schema_version'"),
                &[],
            )
            .map_err(err("read version"))?;
        let text: String = row.map(|row| row.get(0)).unwrap_or_default();
        text.parse::<i32>()
            .map_err(|_| Error::corrupt(format!("schema {schema}: schema_version {text:?} is not a number")))?
    } else {
        txn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE {schema}.meta (key text PRIMARY KEY, value text NOT NULL);"
        ))
        .map_err(err("create"))?;
        0
    };
    if version > SCHEMA_VERSION {
        return Err(Error::unsupported(format!(
            "schema {schema}: written by keel schema version {version}, this build reads up to {SCHEMA_VERSION}"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, step) in STEPS.iter().enumerate().skip(version as usize) {
        txn.batch_execute(&step.replace("{s}", schema))
            .map_err(err(&format!("upgrade from version {from}")))?;
    }
    txn.execute(
        &format!(
            "INSERT INTO {schema}.meta VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        &[&SCHEMA_VERSION.to_string()],
    )
    .map_err(err("record version"))?;
    txn.commit().map_err(err("commit"))
}

/// The advisory-lock key that serialises schema changes of `schema`.
fn schema_lock_key(schema: &str) -> i64 {
    super::locks::key_hash(&format!("keel schema {schema}"))
}

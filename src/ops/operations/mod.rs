//! [`Operations`]: durable per-item operation states (Pbench's `Sync`, with
//! claims, leases and fencing).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lmdb::Env;
use crate::ops::clock::{millis, Clock, SystemClock};
use crate::ops::events;
use crate::ops::names::{check_key, check_name};
use crate::ops::records::{OpClaim, OpRecord, OpState, Token};
use crate::ops::store::lmdb::LmdbStore;
use crate::ops::store::{ClaimRequest, NextOrder, OpResetReport, OperationStore};
use crate::ops::transitions::{self as t, OpPolicy};
use crate::{Error, Result};

/// The most records one `next` or `claim` call returns.
pub const MAX_CLAIM: usize = 10_000;

/// Per-item operation states: a record per (item, operation) in READY,
/// WORKING, OK or FAILED, with a message, timestamps and an attempt count.
///
/// Guarantees: every call is one transaction, durable when it returns
/// (group-committed with concurrent callers, so many writers share an fsync).
/// [`claim`](Operations::claim) hands each item to exactly one claimer across
/// threads and processes; an update with a stale claim token is refused
/// ([`Conflict`](crate::ErrorKind::Conflict)); enabling downstream operations
/// is all-or-nothing with the update. Cost: one durable commit per call;
/// reads (`next`, `states`) take no lock. Cloning is cheap (shared store).
///
/// Leases: a WORKING record whose lease ended reads with
/// [`expired`](OpRecord::expired) set (in `states` and `next`) and no
/// longer guards the item: it is listed by `next`, taken by `claim`, and may
/// be updated without a token. Each claim that lapses this way is counted:
/// `claim` (for its operation) and [`reset_expired`](Operations::reset_expired)
/// (for all) make such records READY again in their old place, or FAILED
/// with a message once their claims lapsed more than
/// [`OpPolicy::max_lapses`] times in a row; an update by the holder or
/// `ready` clears the count. The lapsed holder's token is refused from then
/// on.
///
/// ```
/// use std::time::Duration;
/// use keel::ops::{OpState, Operations};
/// # let dir = std::env::temp_dir().join(format!("keel-doc-ops-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let ops = Operations::open(&dir.join("ops.lmdb"))?;
/// ops.ready("dataset-1", &["unpack"])?;
/// let claim = ops.claim("unpack", 1, "unpacker", Duration::from_secs(60))?.remove(0);
/// ops.update("dataset-1", "unpack", Some(claim.token), OpState::Ok, "unpacked", &["index"])?;
/// assert_eq!(ops.next("index", 10)?[0].item, "dataset-1");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), keel::Error>(())
/// ```
#[derive(Clone)]
pub struct Operations {
    store: Arc<dyn OperationStore>,
    clock: Arc<dyn Clock>,
    policy: OpPolicy,
    stats: Arc<OpStats>,
}

/// What one `Operations` (and its clones) has done, for `keel::stats`.
struct OpStats {
    location: String,
    claims: AtomicU64,
    claimed: AtomicU64,
    updates: AtomicU64,
    conflicts: AtomicU64,
}

impl crate::stats::StatsSource for OpStats {
    fn stats_json(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "store": self.location,
            "claims": get(&self.claims),
            "claimed": get(&self.claimed),
            "updates": get(&self.updates),
            "conflicts": get(&self.conflicts),
        })
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Operations {
    /// Operations in their own LMDB file at `path` (created if missing).
    pub fn open(path: impl AsRef<Path>) -> Result<Operations> {
        Ok(Operations::with_store(Arc::new(LmdbStore::open(path)?)))
    }

    /// Operations in named databases of `env` (a drive's, for example).
    pub fn with_env(env: &Env) -> Result<Operations> {
        Ok(Operations::with_store(Arc::new(LmdbStore::with_env(env)?)))
    }

    /// Operations kept in `store`, timed by the system clock.
    pub fn with_store(store: Arc<dyn OperationStore>) -> Operations {
        Operations::with_clock(store, Arc::new(SystemClock))
    }

    /// Operations kept in `store`, timed by `clock` (tests move it).
    pub fn with_clock(store: Arc<dyn OperationStore>, clock: Arc<dyn Clock>) -> Operations {
        Operations::with_parts(store, clock, OpPolicy::default())
    }

    /// Operations kept in `store`, timed by `clock`, counting lapsed claims
    /// per `policy`.
    pub fn with_parts(store: Arc<dyn OperationStore>, clock: Arc<dyn Clock>, policy: OpPolicy) -> Operations {
        let stats = Arc::new(OpStats {
            location: store.location(),
            claims: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        });
        crate::stats::register("operations", &stats);
        Operations {
            store,
            clock,
            policy,
            stats,
        }
    }

    /// The same operations (shared store and stats) under another policy.
    pub fn with_policy(&self, policy: OpPolicy) -> Operations {
        Operations { policy, ..self.clone() }
    }

    /// The lapse policy.
    pub fn policy(&self) -> &OpPolicy {
        &self.policy
    }

    /// Makes each of `ops` READY for `item`, creating missing records.
    pub fn ready(&self, item: &str, ops: &[&str]) -> Result<Vec<OpRecord>> {
        check_key("item", item)?;
        check_names(ops)?;
        self.store.ready(item, ops, self.clock.now())
    }

    /// Up to `limit` records of `op` that a claim could take — READY, and
    /// WORKING under an expired lease (flagged [`expired`](OpRecord::expired))
    /// — oldest first ([`NextOrder::Oldest`], the order `claim` takes them).
    /// Claims nothing: use [`claim`](Operations::claim) when acting on them.
    pub fn next(&self, op: &str, limit: usize) -> Result<Vec<OpRecord>> {
        self.next_in(op, limit, NextOrder::Oldest)
    }

    /// [`next`](Operations::next) in `order`: oldest first, or by item key.
    pub fn next_in(&self, op: &str, limit: usize, order: NextOrder) -> Result<Vec<OpRecord>> {
        check_name("operation", op)?;
        let now = self.clock.now();
        let records = self.store.next_in(op, check_limit(limit)?, order, now)?;
        Ok(mark_expired(records, now))
    }

    /// Atomically claims up to `limit` items whose `op` is READY (or WORKING
    /// under an expired lease) for `worker` until `lease` from now. Each item
    /// goes to exactly one claimer; each claim carries a fresh token.
    pub fn claim(&self, op: &str, limit: usize, worker: &str, lease: Duration) -> Result<Vec<OpClaim>> {
        check_name("operation", op)?;
        check_key("worker", worker)?;
        check_lease(lease)?;
        let now = self.clock.now();
        let request = ClaimRequest {
            worker,
            lease_until: now.saturating_add(millis(lease)),
            now,
        };
        let limit = check_limit(limit)?;
        let watch = events::watch();
        let claims = self.store.claim_with(op, limit, request, &self.policy)?;
        bump(&self.stats.claims, 1);
        bump(&self.stats.claimed, claims.len() as u64);
        events::ops_claimed(watch, op, limit, worker, &claims);
        Ok(claims)
    }

    /// Sets `op` of `item` to `state` with `message` and makes each of
    /// `enable` READY, atomically. Pass the claim's `token` when you hold
    /// one; a stale token, or none while another holds a live claim, is a
    /// Conflict and changes nothing.
    pub fn update(
        &self,
        item: &str,
        op: &str,
        token: Option<Token>,
        state: OpState,
        message: &str,
        enable: &[&str],
    ) -> Result<OpRecord> {
        check_key("item", item)?;
        check_name("operation", op)?;
        check_names(enable)?;
        if enable.contains(&op) {
            return Err(Error::invalid_argument(format!(
                "operation {op:?} of item {item:?}: cannot enable itself"
            )));
        }
        let watch = events::watch();
        let record = self
            .store
            .update(item, op, token, state, message, enable, self.clock.now())
            .inspect_err(|err| {
                if err.kind() == crate::ErrorKind::Conflict {
                    bump(&self.stats.conflicts, 1);
                }
            })?;
        bump(&self.stats.updates, 1);
        events::op_updated(watch, &record, enable.len());
        Ok(record)
    }

    /// Marks `op` of `item` FAILED with `message` (fenced like `update`).
    pub fn error(&self, item: &str, op: &str, token: Option<Token>, message: &str) -> Result<OpRecord> {
        self.update(item, op, token, OpState::Failed, message, &[])
    }

    /// Every operation record of `item`, by operation name; a WORKING one
    /// whose lease ended has [`expired`](OpRecord::expired) set.
    pub fn states(&self, item: &str) -> Result<Vec<OpRecord>> {
        check_key("item", item)?;
        let now = self.clock.now();
        Ok(mark_expired(self.store.states(item)?, now))
    }

    /// Up to `limit` records of `op` — in `state` if given, in any
    /// otherwise — by item key (byte order), for operators looking for the
    /// FAILED ones. A WORKING record whose lease ended has
    /// [`expired`](OpRecord::expired) set (and is still listed as WORKING).
    /// Claims and changes nothing. Cost: the records of every operation are
    /// read (OK and FAILED have no index); an operator's call, not a
    /// worker's.
    pub fn list(&self, op: &str, state: Option<OpState>, limit: usize) -> Result<Vec<OpRecord>> {
        check_name("operation", op)?;
        let limit = check_limit(limit)?;
        let now = self.clock.now();
        Ok(mark_expired(self.store.list(op, state, limit)?, now))
    }

    /// The reset pass: every WORKING record whose lease ended becomes READY
    /// again in its old place, or FAILED with a message once its claims
    /// lapsed more than `max_lapses` times in a row. `claim` does the same
    /// for its own operation; call this to sweep every operation (for
    /// example from a periodic task).
    pub fn reset_expired(&self) -> Result<OpResetReport> {
        let report = self.store.reset_expired(&self.policy, self.clock.now())?;
        events::ops_reset(report.ready, report.failed);
        Ok(report)
    }
}

fn mark_expired(mut records: Vec<OpRecord>, now: crate::ops::clock::Millis) -> Vec<OpRecord> {
    for record in &mut records {
        record.expired = t::op_expired(record, now);
    }
    records
}

fn check_names(ops: &[&str]) -> Result<()> {
    ops.iter().try_for_each(|op| check_name("operation", op))
}

fn check_limit(limit: usize) -> Result<usize> {
    if limit == 0 || limit > MAX_CLAIM {
        return Err(Error::invalid_argument(format!(
            "limit {limit}: must be 1 to {MAX_CLAIM}"
        )));
    }
    Ok(limit)
}

/// A lease must be positive; a zero lease would expire as it is granted.
pub(crate) fn check_lease(lease: Duration) -> Result<()> {
    if millis(lease) == 0 {
        return Err(Error::invalid_argument("lease: must be at least 1 ms"));
    }
    Ok(())
}

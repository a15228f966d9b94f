//! [`PgKeyedLocks`]: exclusive and shared locks per key across processes and
//! hosts, on PostgreSQL session-level advisory locks.
//!
//! Why advisory locks pinned to a connection, not a lease table: the server
//! itself queues waiters and grants in order, a holder that dies (process
//! killed, host gone, network cut) loses its locks as soon as the server
//! drops its session — no lease length to tune, no sweeper — and an idle
//! key costs nothing: there is no row to leave behind, so "nothing left
//! when no one holds or waits" holds by construction. The cost is one
//! connection per held guard (kept and reused once released) and that the
//! holder learns of a lost session only when it asks
//! ([`PgKeyGuard::check`]), which is why every guard also carries a
//! fencing token: a number from one database sequence, larger for every
//! later acquisition, that the protected resource can compare to refuse a
//! late holder.
//!
//! Keys are strings hashed (FNV-1a, 64 bits, with the schema name) to the
//! advisory lock's bigint; two keys that collide only serialise each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::{Client, NoTls};
use parking_lot::Mutex;

use super::{map_err, PgDatabase, PgOptions};
use crate::locks::{LockMode, LockStats, Wait};
use crate::pool::CancellationToken;
use crate::{Error, ErrorKind, Result};

/// A stable 64-bit hash of `text` (FNV-1a), as an advisory-lock key.
pub fn key_hash(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// How to open cross-host locks.
#[derive(Debug, Clone, Default)]
pub struct PgLocksOptions {
    /// The database options (schema, connect timeout).
    pub database: PgOptions,
}

/// Keyed locks shared by every process that opens the same database and
/// schema. Cloning shares the idle connections.
#[derive(Clone)]
pub struct PgKeyedLocks {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgDatabase,
    /// Sessions released by guards, kept for the next acquisition.
    idle: Mutex<Vec<Client>>,
    /// What this handle (and its clones) holds and waits for, for `stats`.
    local: Mutex<Local>,
}

/// The keys held or waited for through one handle.
#[derive(Default)]
struct Local {
    /// Per key: guards holding it plus calls waiting for it.
    keys: HashMap<String, usize>,
    holders: usize,
    waiters: usize,
}

impl Local {
    fn add(&mut self, keys: &[String]) {
        for key in keys {
            *self.keys.entry(key.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(count) = self.keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.keys.remove(key);
                }
            }
        }
    }
}

/// Holds one or more keys until dropped (or [`release`](PgKeyGuard::release)d).
pub struct PgKeyGuard {
    locks: Arc<Inner>,
    client: Option<Client>,
    keys: Vec<String>,
    mode: LockMode,
    token: u64,
    pid: i32,
}

impl PgKeyedLocks {
    /// Locks in the database at `url` (schema `keel`).
    pub fn open(url: &str) -> Result<PgKeyedLocks> {
        PgKeyedLocks::open_with(url, &PgLocksOptions::default())
    }

    /// Locks in the database at `url` with `options`.
    pub fn open_with(url: &str, options: &PgLocksOptions) -> Result<PgKeyedLocks> {
        Ok(PgKeyedLocks::with_database(PgDatabase::open(url, &options.database)?))
    }

    /// Locks in an open database.
    pub fn with_database(db: PgDatabase) -> PgKeyedLocks {
        PgKeyedLocks {
            inner: Arc::new(Inner {
                db,
                idle: Mutex::new(Vec::new()),
                local: Mutex::new(Local::default()),
            }),
        }
    }

    /// Where the locks live, without secrets.
    pub fn location(&self) -> String {
        self.inner.db.location()
    }

    /// The advisory-lock key that stands for `key` (in `pg_locks`,
    /// `classid` holds its high 32 bits and `objid` its low 32 bits).
    pub fn advisory_key(&self, key: &str) -> i64 {
        key_hash(&format!("{}\0{key}", self.inner.db.schema()))
    }

    /// Locks `key` exclusively, waiting as long as it takes.
    pub fn lock(&self, key: &str) -> Result<PgKeyGuard> {
        self.acquire(key, LockMode::Exclusive, Wait::Forever)?
            .ok_or_else(|| Error::timeout(format!("lock {key:?}: not granted")))
    }

    /// Locks `key` in `mode`, waiting per `wait`: `Ok(None)` when
    /// [`Wait::Never`] finds it held, [`Timeout`](ErrorKind::Timeout) when a
    /// [`Wait::For`] runs out.
    pub fn acquire(&self, key: &str, mode: LockMode, wait: Wait) -> Result<Option<PgKeyGuard>> {
        self.lock_many(&[key], mode, wait)
    }

    /// Locks every one of `keys` in `mode`, all or none: on a timeout (or a
    /// held key under [`Wait::Never`]) none stays held. Keys are taken in a
    /// fixed order, so two `lock_many` calls never deadlock each other.
    pub fn lock_many(&self, keys: &[&str], mode: LockMode, wait: Wait) -> Result<Option<PgKeyGuard>> {
        self.lock_many_with(keys, mode, wait, None)
    }

    /// [`lock_many`](Self::lock_many) that also stops waiting when `cancel`
    /// is cancelled: [`Cancelled`](ErrorKind::Cancelled), and none of the
    /// keys stays held. The waiting statement is cancelled on the server
    /// (a cancel request, as `pg_cancel_backend` sends), so the wait keeps
    /// its place in the server's queue until then.
    pub fn lock_many_with(
        &self,
        keys: &[&str],
        mode: LockMode,
        wait: Wait,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<PgKeyGuard>> {
        let mut names: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::invalid_argument("lock_many: name at least one key"));
        }
        if let Some(bad) = names.iter().find(|key| key.is_empty() || key.contains('\0')) {
            return Err(Error::invalid_argument(format!(
                "lock key {bad:?}: must be non-empty, without NUL"
            )));
        }
        let what = format!("{}: lock {:?}", self.inner.db.location(), names);
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(Error::cancelled(format!("{what}: cancelled")));
        }
        let mut hashes: Vec<i64> = names.iter().map(|key| self.advisory_key(key)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let mut client = self.inner.session()?;
        {
            let mut local = self.inner.local.lock();
            local.add(&names);
            local.waiters += 1;
        }
        let taken = take(&mut client, &hashes, mode, wait, cancel, &what);
        {
            let mut local = self.inner.local.lock();
            local.waiters -= 1;
            if !matches!(taken, Ok(true)) {
                local.remove(&names);
            }
        }
        match taken {
            Ok(true) => {}
            Ok(false) => {
                self.inner.give_back(client);
                return Ok(None);
            }
            Err(err) => {
                // `take` released what it took; a session it could not
                // clean up (or that a cancel request may still reach) is
                // closed, which releases everything just as well.
                if err.kind() != ErrorKind::Cancelled {
                    self.inner.give_back(client);
                }
                return Err(err);
            }
        }
        let fence = format!("SELECT nextval('{}.tokens'), pg_backend_pid()", self.inner.db.schema());
        let fenced = client.query_one(&fence, &[]);
        let (token, pid) = match fenced {
            Ok(row) => (row.get::<_, i64>(0) as u64, row.get::<_, i32>(1)),
            Err(err) => {
                self.inner.local.lock().remove(&names);
                // The keys are held: release them before the session is
                // reused (closing it, when that fails, releases them too).
                if client.batch_execute("SELECT pg_advisory_unlock_all()").is_ok() {
                    self.inner.give_back(client);
                }
                return Err(map_err(&what, err));
            }
        };
        self.inner.local.lock().holders += 1;
        Ok(Some(PgKeyGuard {
            locks: self.inner.clone(),
            client: Some(client),
            keys: names,
            mode,
            token,
            pid,
        }))
    }

    /// What this handle and its clones hold and wait for — not the other
    /// processes' (the server shows everyone's in `pg_locks`): `entries`
    /// keys held or waited for, `holders` guards alive, `waiters` calls
    /// waiting.
    pub fn stats(&self) -> LockStats {
        let local = self.inner.local.lock();
        LockStats {
            entries: local.keys.len(),
            holders: local.holders,
            waiters: local.waiters,
        }
    }
}

/// Takes every lock of `hashes` in order on `client`; false when `Never`
/// found one held. Leaves nothing held unless it returns true.
fn take(
    client: &mut Client,
    hashes: &[i64],
    mode: LockMode,
    wait: Wait,
    cancel: Option<&CancellationToken>,
    what: &str,
) -> Result<bool> {
    let (wait_fn, try_fn) = match mode {
        LockMode::Exclusive => ("pg_advisory_lock", "pg_try_advisory_lock"),
        LockMode::Shared => ("pg_advisory_lock_shared", "pg_try_advisory_lock_shared"),
    };
    let outcome = match wait {
        Wait::Never => {
            let sql = format!("SELECT bool_and(got) FROM (SELECT {try_fn}(k) AS got FROM unnest($1::bigint[]) k) t");
            client
                .query_one(&sql, &[&hashes])
                .map(|row| row.get::<_, Option<bool>>(0).unwrap_or(false))
        }
        Wait::Forever | Wait::For(_) => {
            let limit = match wait {
                Wait::For(timeout) => timeout.as_millis().clamp(1, i32::MAX as u128).to_string(),
                _ => "0".to_owned(),
            };
            let started = Instant::now();
            // The timeout is armed when a statement starts: set it first.
            let sql = format!("SELECT count({wait_fn}(k)) FROM unnest($1::bigint[]) WITH ORDINALITY u(k, o)");
            let mut wait_on_server = || -> std::result::Result<bool, ::postgres::Error> {
                client.batch_execute(&format!("SET statement_timeout = {limit}"))?;
                let watch = cancel.map(|token| CancelOnServer::arm(token, client));
                if watch.as_ref().is_some_and(|watch| watch.waker.is_none()) {
                    return Ok(false); // cancelled already: not worth a wait
                }
                client.query_one(&sql, &[&hashes]).map(|_| true)
            };
            let result = wait_on_server();
            if cancel.is_some_and(CancellationToken::is_cancelled) {
                // A cancel request may have ended the wait, or may reach
                // the session later: leave nothing held, and the caller
                // closes the session rather than reuse it.
                let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
                return Err(Error::cancelled(format!(
                    "{what}: cancelled (after {:?})",
                    started.elapsed()
                )));
            }
            let _ = client.batch_execute("SET statement_timeout = 0");
            if let (Err(err), Wait::For(timeout)) = (&result, wait) {
                if err.code().map(|code| code.code()) == Some("57014") {
                    let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
                    return Err(Error::timeout(format!(
                        "{what}: not granted within {timeout:?} (waited {:?})",
                        started.elapsed()
                    )));
                }
            }
            result
        }
    };
    match outcome {
        Ok(true) => Ok(true),
        Ok(false) => {
            client
                .batch_execute("SELECT pg_advisory_unlock_all()")
                .map_err(|err| map_err(what, err))?;
            Ok(false)
        }
        Err(err) => {
            let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
            Err(map_err(what, err))
        }
    }
}

/// While alive, cancelling `token` sends the server a cancel request for
/// the statement `client` is running. Dropping it waits for a request
/// being sent, so none is sent once it is gone.
struct CancelOnServer<'a> {
    token: &'a CancellationToken,
    waker: Option<u64>,
    armed: Arc<Mutex<bool>>,
}

impl<'a> CancelOnServer<'a> {
    fn arm(token: &'a CancellationToken, client: &Client) -> CancelOnServer<'a> {
        let armed = Arc::new(Mutex::new(true));
        let canceller = client.cancel_token();
        let waker = {
            let armed = armed.clone();
            token.add_waker(Arc::new(move || {
                let armed = armed.lock();
                if *armed {
                    // Best effort: a wait that is not cancelled still ends
                    // at its timeout, and the caller sees the token.
                    let _ = canceller.cancel_query(NoTls);
                }
            }))
        };
        CancelOnServer { token, waker, armed }
    }
}

impl Drop for CancelOnServer<'_> {
    fn drop(&mut self) {
        *self.armed.lock() = false;
        if let Some(id) = self.waker {
            self.token.forget_waker(id);
        }
    }
}

impl Inner {
    fn session(&self) -> Result<Client> {
        while let Some(client) = self.idle.lock().pop() {
            if !client.is_closed() {
                return Ok(client);
            }
        }
        self.db.dedicated()
    }

    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            self.idle.lock().push(client);
        }
    }
}

impl PgKeyGuard {
    /// The keys held, sorted.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The mode they are held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The fencing token: larger than every token handed out before it, so
    /// a resource that remembers the largest token it saw can refuse a
    /// holder whose session was lost and whose key went to someone else.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The server process of the session holding the keys (what
    /// `pg_locks.pid` shows).
    pub fn session_pid(&self) -> i32 {
        self.pid
    }

    /// Ok while the session holding the locks is alive;
    /// [`Closed`](ErrorKind::Closed) once it was lost (the server released
    /// the locks, and someone else may hold them now).
    pub fn check(&mut self) -> Result<()> {
        let lost = || {
            Error::new(
                ErrorKind::Closed,
                format!("locks {:?}: the session holding them was lost", self.keys),
            )
        };
        let Some(client) = self.client.as_mut() else {
            return Err(lost());
        };
        let alive = !client.is_closed() && client.is_valid(Duration::from_secs(5)).is_ok();
        if alive {
            return Ok(());
        }
        self.client = None;
        Err(lost())
    }

    /// Releases the keys now (dropping the guard does the same): the one
    /// verb of every keel guard.
    pub fn release(self) {}
}

impl Drop for PgKeyGuard {
    fn drop(&mut self) {
        {
            let mut local = self.locks.local.lock();
            local.remove(&self.keys);
            local.holders -= 1;
        }
        if let Some(mut client) = self.client.take() {
            // A session that fails to unlock is dropped: closing it releases
            // its locks just as well.
            if client.batch_execute("SELECT pg_advisory_unlock_all()").is_ok() {
                self.locks.give_back(client);
            }
        }
    }
}

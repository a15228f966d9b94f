//! [`Announcer`]: `NOTIFY` for jobs enqueued through a store, sent from a
//! session of its own just after each enqueue commits.
//!
//! Why not in the enqueue's own transaction: PostgreSQL serialises the
//! commits of every transaction that notified (one database-wide lock, held
//! until the commit is on disk), so eight threads enqueuing with a
//! notification each commit one after the other instead of sharing a disk
//! flush — measured at a thirteenth of the rate with `fsync` on. Here the
//! enqueue commits on its own (durable, flushed with its neighbours) and
//! the notification follows in a transaction that does not wait for the
//! disk (`synchronous_commit = off`: it is only a wake-up).
//!
//! Who sends it depends on the pace. An enqueue that comes alone (none in
//! the last [`BUSY`]) sends it itself, so the wake-up waits for no other
//! thread's scheduling: that is when an idle worker elsewhere is waiting
//! for it. Enqueues in quick succession leave their kinds to the
//! announcer's thread, which waits [`LINGER`] and then sends every kind
//! left meanwhile in one transaction, so a busy enqueuer does not pay a
//! round trip per job, nor the server a transaction per job.
//! Whoever holds the session sends every kind left before it lets go. A
//! notification lost to a crash or a dropped connection costs latency,
//! never a job: workers poll.
//!
//! Enqueues inside the caller's transaction (`enqueue_in`, SQL
//! `<schema>.enqueue`) still notify in that transaction, so the
//! notification goes out only if it commits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ::postgres::{Client, Statement};
use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::Mutex;

use super::{map_err, PgDatabase};

/// Enqueues closer together than this leave their notification to the
/// announcer's thread.
pub const BUSY: Duration = Duration::from_millis(2);

/// How long the thread gathers crowding enqueues before it notifies.
const LINGER: Duration = Duration::from_millis(1);

/// Sends the notifications of one store's enqueues; its thread ends when
/// it is dropped.
pub struct Announcer {
    shared: Arc<Shared>,
    /// Wakes the thread (a full channel means it is woken already).
    wake: Option<Sender<()>>,
}

struct Shared {
    db: PgDatabase,
    /// Kinds enqueued and not yet announced.
    pending: Mutex<BTreeSet<String>>,
    /// The announcing session (held by whoever is sending now).
    session: Mutex<Option<(Client, Statement)>>,
    /// When the last enqueue was announced.
    last: Mutex<Option<Instant>>,
}

impl Announcer {
    /// An announcer on `db`'s jobs channel; it connects when it first
    /// sends. Without its thread (none could start) every enqueue sends
    /// its own notification.
    pub fn new(db: PgDatabase) -> Announcer {
        let shared = Arc::new(Shared {
            db,
            pending: Mutex::new(BTreeSet::new()),
            session: Mutex::new(None),
            last: Mutex::new(None),
        });
        let (wake, woken) = bounded::<()>(1);
        let on_thread = shared.clone();
        let started = thread::Builder::new().name("keel-pg-notify".into()).spawn(move || {
            while woken.recv().is_ok() {
                // Crowding enqueues keep coming: gather a few more per
                // transaction (their workers are busy anyway).
                thread::sleep(LINGER);
                on_thread.drain();
            }
        });
        if let Err(err) = &started {
            log::warn!(
                "keel: cannot start the NOTIFY thread for {}: {err}; each enqueue notifies itself",
                shared.db.location()
            );
        }
        Announcer {
            shared,
            wake: started.ok().map(|_| wake),
        }
    }

    /// Announces a job of `kind`: now, from this thread, when it comes
    /// alone; soon, from the announcer's thread, when enqueues crowd.
    pub fn announce(&self, kind: &str) {
        self.shared.pending.lock().insert(kind.to_owned());
        let crowded = {
            let mut last = self.shared.last.lock();
            let now = Instant::now();
            let crowded = last.is_some_and(|at| now.duration_since(at) < BUSY);
            *last = Some(now);
            crowded
        };
        if let (true, Some(wake)) = (crowded, &self.wake) {
            match wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => return,
                Err(TrySendError::Disconnected(())) => {}
            }
        }
        self.shared.drain();
    }
}

impl Shared {
    /// Sends every pending kind unless another thread holds the session
    /// (it sends them before it lets go).
    fn drain(&self) {
        while !self.pending.lock().is_empty() {
            let Some(mut session) = self.session.try_lock() else {
                return;
            };
            loop {
                let kinds: Vec<String> = std::mem::take(&mut *self.pending.lock()).into_iter().collect();
                if kinds.is_empty() {
                    break;
                }
                if let Err(err) = self.send(&mut session, &kinds) {
                    *session = None;
                    log::warn!(
                        "keel: NOTIFY {} on {}: {err}; workers elsewhere find the jobs at their next poll",
                        self.db.jobs_channel(),
                        self.db.location()
                    );
                    return;
                }
            }
        }
    }

    fn send(&self, session: &mut Option<(Client, Statement)>, kinds: &[String]) -> crate::Result<()> {
        let context = self.db.location();
        if session.as_ref().is_none_or(|(client, _)| client.is_closed()) {
            let mut client = self.db.dedicated()?;
            client
                .batch_execute("SET synchronous_commit = off")
                .map_err(|err| map_err(&context, err))?;
            let notify = client
                .prepare("SELECT pg_notify($1, k) FROM unnest($2::text[]) k")
                .map_err(|err| map_err(&context, err))?;
            *session = Some((client, notify));
        }
        if let Some((client, notify)) = session.as_mut() {
            client
                .execute(&*notify, &[&self.db.jobs_channel(), &kinds])
                .map_err(|err| map_err(&context, err))?;
        }
        Ok(())
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // Disconnecting the channel ends the thread once it is idle.
        self.wake.take();
    }
}

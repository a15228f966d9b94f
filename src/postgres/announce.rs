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
//! The enqueuing thread sends it itself (no hand-over to another thread,
//! whose wake-up a busy machine delays) unless another thread is sending
//! right now: then it leaves its kind to that one, which sends every kind
//! left meanwhile before it lets go. A notification lost to a crash or a
//! dropped connection costs latency, never a job: workers poll.
//!
//! Enqueues inside the caller's transaction (`enqueue_in`, SQL
//! `<schema>.enqueue`) still notify in that transaction, so the
//! notification goes out only if it commits.

use std::collections::BTreeSet;

use ::postgres::{Client, Statement};
use parking_lot::Mutex;

use super::{map_err, PgDatabase};

/// Sends the notifications of one store's enqueues.
pub struct Announcer {
    db: PgDatabase,
    /// Kinds enqueued and not yet announced.
    pending: Mutex<BTreeSet<String>>,
    /// The announcing session (held by the thread sending now).
    session: Mutex<Option<(Client, Statement)>>,
}

impl Announcer {
    /// An announcer on `db`'s jobs channel; it connects when it first
    /// sends.
    pub fn new(db: PgDatabase) -> Announcer {
        Announcer {
            db,
            pending: Mutex::new(BTreeSet::new()),
            session: Mutex::new(None),
        }
    }

    /// Announces a job of `kind`, now or through the thread sending now.
    pub fn announce(&self, kind: &str) {
        self.pending.lock().insert(kind.to_owned());
        // A kind left while the session was held is sent by its holder
        // (it drains before letting go) or, if that holder had already
        // drained, by the next pass of this loop.
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

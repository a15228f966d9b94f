//! [`Announcer`]: `NOTIFY` for jobs enqueued through a store, sent from a
//! connection of its own just after each enqueue commits.
//!
//! Why not in the enqueue's own transaction: PostgreSQL serialises the
//! commits of every transaction that notified (one database-wide lock, held
//! until the commit is on disk), so eight threads enqueuing with a
//! notification each commit one after the other instead of sharing a disk
//! flush — measured at a thirteenth of the rate with `fsync` on. Here the
//! enqueue commits on its own (durable, flushed with its neighbours) and
//! the notification follows in a transaction that does not wait for the
//! disk (`synchronous_commit = off`: it is only a wake-up), coalescing the
//! kinds of every enqueue made meanwhile into one. A notification lost to a
//! crash or a dropped connection costs latency, never a job: workers poll.
//!
//! Enqueues inside the caller's transaction (`enqueue_in`, SQL
//! `<schema>.enqueue`) still notify in that transaction, so the
//! notification goes out only if it commits.

use std::collections::BTreeSet;
use std::sync::mpsc::{channel, Sender};
use std::thread;

use ::postgres::Client;
use parking_lot::Mutex;

use super::PgDatabase;

/// Sends the notifications of one store's enqueues; the thread ends when
/// the announcer is dropped.
pub struct Announcer {
    kinds: Mutex<Sender<String>>,
}

impl Announcer {
    /// An announcer on `db`'s jobs channel, with its thread (which connects
    /// when it first has something to send).
    pub fn spawn(db: PgDatabase) -> std::io::Result<Announcer> {
        let (kinds, pending) = channel::<String>();
        thread::Builder::new().name("keel-pg-notify".into()).spawn(move || {
            let channel = db.jobs_channel();
            let mut client: Option<Client> = None;
            while let Ok(first) = pending.recv() {
                let mut batch = BTreeSet::from([first]);
                batch.extend(pending.try_iter());
                let kinds: Vec<String> = batch.into_iter().collect();
                if let Err(err) = send(&db, &mut client, &channel, &kinds) {
                    client = None;
                    log::warn!(
                        "keel: NOTIFY {channel} on {}: {err}; workers elsewhere find the jobs at their next poll",
                        db.location()
                    );
                }
            }
        })?;
        Ok(Announcer {
            kinds: Mutex::new(kinds),
        })
    }

    /// Announces a job of `kind` (soon, from the announcer's thread).
    pub fn announce(&self, kind: &str) {
        let _ = self.kinds.lock().send(kind.to_owned());
    }
}

fn send(db: &PgDatabase, client: &mut Option<Client>, channel: &str, kinds: &[String]) -> crate::Result<()> {
    let context = db.location();
    if client.as_ref().is_none_or(Client::is_closed) {
        let mut fresh = db.dedicated()?;
        fresh
            .batch_execute("SET synchronous_commit = off")
            .map_err(|err| super::map_err(&context, err))?;
        *client = Some(fresh);
    }
    let Some(client) = client.as_mut() else {
        return Ok(());
    };
    client
        .execute("SELECT pg_notify($1, k) FROM unnest($2::text[]) k", &[&channel, &kinds])
        .map_err(|err| super::map_err(&context, err))?;
    Ok(())
}

//! Opening a [`Queue`] or [`Operations`] on PostgreSQL, and the wake-ups
//! that cross hosts.

use std::sync::Arc;

use super::PgStore;
use crate::ops::clock::{Clock, SystemClock};
use crate::ops::transitions::JobPolicy;
use crate::ops::{Operations, Queue};
use crate::postgres::{Listener, PgOptions};
use crate::Result;

impl Queue {
    /// A queue in the PostgreSQL database at `url` (a `postgresql://` URL
    /// or a libpq `key=value` string), in the `keel` schema, timed by the
    /// database. Idle workers of this queue wake as soon as any process
    /// enqueues a job in the same schema (`LISTEN/NOTIFY`); polling stays
    /// the fallback.
    pub fn postgres(url: &str) -> Result<Queue> {
        Queue::postgres_with(url, &PgOptions::default())
    }

    /// [`Queue::postgres`] with `options` (schema, pool size, time source).
    pub fn postgres_with(url: &str, options: &PgOptions) -> Result<Queue> {
        Ok(PgStore::open_with(url, options)?.queue(Arc::new(SystemClock), JobPolicy::default()))
    }
}

impl Operations {
    /// Operations in the PostgreSQL database at `url`, in the `keel`
    /// schema, timed by the database.
    pub fn postgres(url: &str) -> Result<Operations> {
        Operations::postgres_with(url, &PgOptions::default())
    }

    /// [`Operations::postgres`] with `options`.
    pub fn postgres_with(url: &str, options: &PgOptions) -> Result<Operations> {
        Ok(Operations::with_store(Arc::new(PgStore::open_with(url, options)?)))
    }
}

impl PgStore {
    /// A queue over this store, timed by `clock`, retrying per `policy`,
    /// with a thread that listens for jobs enqueued anywhere and wakes the
    /// queue's idle workers. Returns once the thread listens (or, if the
    /// server cannot be reached for it, after the connect timeout, polling
    /// only until it can). The thread ends soon after the last clone of the
    /// queue is dropped.
    pub fn queue(&self, clock: Arc<dyn Clock>, policy: JobPolicy) -> Queue {
        let queue = Queue::with_parts(Arc::new(self.clone()), clock, policy);
        let wakeup = Arc::downgrade(queue.wakeup());
        let (listening, heard) = std::sync::mpsc::sync_channel(1);
        Listener::spawn(self.db.clone(), self.db.jobs_channel(), move |payload| {
            match wakeup.upgrade() {
                Some(wakeup) => {
                    if payload.is_some() {
                        let _ = listening.try_send(());
                        wakeup.notify();
                    }
                    true
                }
                None => false,
            }
        })
        .detach();
        let _ = heard.recv_timeout(self.db.connect_timeout());
        queue
    }
}

//! [`Listener`]: `LISTEN` on a channel from a thread of its own, so a job
//! enqueued on one host wakes idle workers on every other host at once
//! instead of at their next poll.
//!
//! The thread holds one dedicated connection (notifications need a session
//! that stays open). When the connection drops it reconnects after a
//! second and reports one wake-up, since notifications sent meanwhile are
//! lost; polling stays the fallback, so a lost wake-up only costs latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;

use super::PgDatabase;

/// How often the thread checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// How long it waits before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A thread listening on one channel; stops when dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Listens on `channel` of `db`, calling `on_notify` with each
    /// notification's payload (and with `Some("")` after every
    /// (re)connect), and with `None` every 200 ms while nothing arrives.
    /// `on_notify` returns false to stop listening.
    pub fn spawn(
        db: PgDatabase,
        channel: String,
        on_notify: impl Fn(Option<&str>) -> bool + Send + 'static,
    ) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = format!("keel-listen-{channel}");
        let shown = channel.clone();
        let spawned = thread::Builder::new()
            .name(name)
            .spawn(move || run(&db, &channel, &flag, &on_notify));
        if let Err(err) = spawned {
            log::warn!("keel: cannot start the LISTEN thread for {shown}: {err}; polling only");
        }
        Listener { stop }
    }
}

impl Listener {
    /// Lets the thread run until `on_notify` returns false.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(db: &PgDatabase, channel: &str, stop: &AtomicBool, on_notify: &dyn Fn(Option<&str>) -> bool) {
    while !stop.load(Ordering::SeqCst) {
        if let Err(err) = listen(db, channel, stop, on_notify) {
            log::warn!("keel: LISTEN {channel} on {}: {err}; reconnecting", db.location());
            thread::sleep(RECONNECT_DELAY);
        }
    }
}

/// One connection's life: returns Ok when told to stop.
fn listen(
    db: &PgDatabase,
    channel: &str,
    stop: &AtomicBool,
    on_notify: &dyn Fn(Option<&str>) -> bool,
) -> crate::Result<()> {
    let mut client = db.dedicated()?;
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .map_err(|err| super::map_err(channel, err))?;
    if !on_notify(Some("")) {
        stop.store(true, Ordering::SeqCst);
    }
    while !stop.load(Ordering::SeqCst) {
        let next = client.notifications().timeout_iter(STOP_CHECK).next();
        match next {
            Ok(Some(notification)) => {
                if !on_notify(Some(notification.payload())) {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            Ok(None) if client.is_closed() => {
                return Err(crate::Error::closed(format!("{channel}: connection closed")))
            }
            Ok(None) => {
                if !on_notify(None) {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            Err(err) => return Err(super::map_err(channel, err)),
        }
    }
    Ok(())
}

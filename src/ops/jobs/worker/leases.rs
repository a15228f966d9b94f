//! Keeping running jobs' leases: the heartbeat and maintenance thread,
//! dropping jobs whose heartbeat was refused, and releasing what is still
//! running when the worker stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::state::{Counters, Shared};
use super::TARGET;
use crate::ops::records::{JobId, Token};
use crate::Error;

impl Shared {
    /// Waits until every slot thread has exited (true) or `deadline` (false).
    pub(super) fn wait_for_slots(&self, deadline: Instant) -> bool {
        let mut live = self.live_threads.lock();
        while *live > 0 {
            if self.thread_exited.wait_until(&mut live, deadline).timed_out() {
                return *live == 0;
            }
        }
        true
    }

    /// Releases every job still running; returns how many.
    pub(super) fn release_unfinished(&self) -> u64 {
        let unfinished: Vec<(JobId, Token)> = self
            .inflight
            .lock()
            .drain()
            .map(|(id, entry)| {
                entry.lease_lost.store(true, Ordering::SeqCst);
                (id, entry.token)
            })
            .collect();
        for (id, token) in &unfinished {
            self.release(*id, *token);
        }
        unfinished.len() as u64
    }

    /// Extends running jobs' leases every heartbeat interval and runs the
    /// resetter and retention cleanup every maintenance interval, until stop.
    pub(super) fn heartbeat_loop(&self) {
        let mut next_beat = Instant::now() + self.heartbeat;
        let mut next_maintenance = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_maintenance {
                self.maintain();
                next_maintenance = now + self.options.maintenance_interval;
            }
            if now >= next_beat {
                self.heartbeat_running();
                next_beat = now + self.heartbeat;
            }
            let mut stop = self.stop_signal.lock();
            if !*stop {
                self.stop_changed.wait_until(&mut stop, next_beat.min(next_maintenance));
            }
            if *stop {
                return;
            }
        }
    }

    pub(super) fn heartbeat_running(&self) {
        let running: Vec<(JobId, Token, Arc<AtomicBool>)> = self
            .inflight
            .lock()
            .iter()
            .filter(|(_, entry)| !entry.lease_lost.load(Ordering::SeqCst))
            .map(|(id, entry)| (*id, entry.token, entry.lease_lost.clone()))
            .collect();
        if running.is_empty() {
            return;
        }
        let leases: Vec<(JobId, Token)> = running.iter().map(|(id, token, _)| (*id, *token)).collect();
        // A failed call (I/O) changes nothing: the next beat tries again, and
        // no job is flagged for a failure that was not its own.
        let Ok(results) = self.queue.heartbeat_many(&leases, self.options.lease) else {
            return;
        };
        for ((id, token, lost), result) in running.iter().zip(results) {
            if let Err(err) = result {
                // Out of the running set (and counted) before the handler
                // can see the flag.
                self.drop_lost(*id, *token, &err);
                lost.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Takes a job whose heartbeat was refused (cancelled, reset, deleted)
    /// out of the running set: it is not heartbeaten again, its result is
    /// not stored, and its handler sees `lease_lost`. Logged once.
    fn drop_lost(&self, id: JobId, token: Token, err: &Error) {
        let removed = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&id) {
                Some(entry) if entry.token == token => inflight.remove(&id).is_some(),
                _ => false,
            }
        };
        if removed {
            Counters::bump(&self.stats.lost);
            log::warn!(
                target: TARGET,
                "job lost: id={id} token={token} error={}; its handler is told to stop and its result will not be stored",
                err.report()
            );
        }
    }

    pub(super) fn maintain(&self) {
        let _ = self.queue.reset_expired();
        if let Some(retention) = self.options.retention {
            let _ = self.queue.cleanup(retention);
        }
    }
}

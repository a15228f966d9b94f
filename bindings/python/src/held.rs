//! What `close()` ends: a native object's hold on its core object.
//!
//! Every call takes a clone of the held value (a few shared pointers) under
//! a short lock and runs on that clone, so `close()` never waits for a call
//! in flight and never holds a lock across a release of the GIL; the core
//! object is freed when the last call using it returns. After `close()`
//! every call raises keel.Closed; closing twice is harmless.

use keel::Error;
use parking_lot::RwLock;
use pyo3::prelude::*;

pub struct Held<T> {
    slot: RwLock<Option<T>>,
    /// Names the object in the Closed error: `the Queue "/x/jobs.lmdb"`.
    what: String,
}

impl<T: Clone + Send> Held<T> {
    pub fn new(value: T, what: String) -> Held<T> {
        Held {
            slot: RwLock::new(Some(value)),
            what,
        }
    }

    /// The held value, or keel.Closed once closed.
    pub fn get(&self) -> keel::Result<T> {
        self.slot
            .read()
            .clone()
            .ok_or_else(|| Error::closed(format!("{} is closed", self.what)))
    }

    /// keel.Closed once closed (without cloning the value).
    pub fn check(&self) -> keel::Result<()> {
        match self.is_closed() {
            true => Err(Error::closed(format!("{} is closed", self.what))),
            false => Ok(()),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.slot.read().is_none()
    }

    /// Ends the hold; the value is dropped with the GIL released (dropping
    /// the last handle of a store may close files or connections).
    pub fn close(&self, py: Python<'_>) {
        let taken = self.slot.write().take();
        if taken.is_some() {
            py.detach(move || drop(taken));
        }
    }

    /// `" closed"` once closed, for reprs.
    pub fn closed_note(&self) -> &'static str {
        if self.is_closed() {
            " closed"
        } else {
            ""
        }
    }
}

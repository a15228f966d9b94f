//! [`OpenBatch`]: a batch whose calls arrive one at a time (from a host
//! language's `with` block, or C calls between begin and commit) instead of
//! inside one closure.
//!
//! LMDB ties a write transaction to the thread that began it, so the batch
//! lives on a thread of its own: each call is sent there, run in the batch's
//! transaction, and its result sent back. Commit and abort end the thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{JoinHandle, ThreadId};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use super::batch::Batch;
use super::view::DriveView;
use crate::{Error, Result};

type Call = Box<dyn FnOnce(&mut Batch<'_, '_>) -> Option<Error> + Send>;

enum Message {
    Call(Call),
    Commit,
}

/// An open batch: calls made through [`run`](OpenBatch::run) share one write
/// transaction, made durable by [`commit`](OpenBatch::commit) and undone by
/// [`abort`](OpenBatch::abort) (or by dropping it).
///
/// While it is open it holds the drive's write transaction: other writers
/// of the same file wait until it ends, so keep it short. A write through
/// the drive itself (not through the batch) from the thread that opened it
/// would wait for itself and fails with
/// [`WouldDeadlock`](crate::ErrorKind::WouldDeadlock) instead. If the batch
/// outgrows the storage map, its calls fail with
/// [`StorageFull`](crate::ErrorKind::StorageFull) and so does `commit`;
/// the map has grown by then, so running the batch again succeeds.
pub struct OpenBatch {
    calls: Option<Sender<Message>>,
    finished: Receiver<Result<()>>,
    thread: Option<JoinHandle<()>>,
    marker: (ThreadId, usize),
}

/// Threads that have an open batch, and on which drive (by core address).
static OPEN: Mutex<Vec<(ThreadId, usize)>> = Mutex::new(Vec::new());
static OPEN_COUNT: AtomicUsize = AtomicUsize::new(0);

/// WouldDeadlock if this thread has a batch open on the drive at `core`.
pub(crate) fn refuse_write_beside_open_batch(core: usize) -> Result<()> {
    if OPEN_COUNT.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let me = std::thread::current().id();
    if OPEN.lock().contains(&(me, core)) {
        return Err(Error::would_deadlock(
            "this thread has a batch open on the drive: write through the batch, or end it first",
        ));
    }
    Ok(())
}

impl OpenBatch {
    pub(crate) fn begin(view: &DriveView) -> Result<OpenBatch> {
        let (calls, incoming) = bounded::<Message>(0);
        let (report, finished) = bounded::<Result<()>>(1);
        let view = view.clone();
        let core = std::sync::Arc::as_ptr(&view.core) as usize;
        let thread = std::thread::Builder::new()
            .name("keel-drive-batch".into())
            .spawn(move || {
                let _ = report.send(serve(&view, &incoming));
            })
            .map_err(|e| Error::io("start a batch thread", e))?;
        let marker = (std::thread::current().id(), core);
        OPEN.lock().push(marker);
        OPEN_COUNT.fetch_add(1, Ordering::AcqRel);
        Ok(OpenBatch {
            calls: Some(calls),
            finished,
            thread: Some(thread),
            marker,
        })
    }

    /// Runs `call` in the batch's transaction and returns its result. A call
    /// that fails leaves no change in the batch (each runs in a nested
    /// transaction); the batch stays open.
    pub fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut Batch<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = bounded(1);
        let call: Call = Box::new(move |batch| {
            let result = call(batch);
            let map_full = match &result {
                Err(err) if crate::lmdb::is_map_full(err) => Some(err.clone()),
                _ => None,
            };
            let _ = reply.send(result);
            map_full
        });
        let ended = || Error::closed("the batch has ended");
        self.calls
            .as_ref()
            .ok_or_else(ended)?
            .send(Message::Call(call))
            .map_err(|_| ended())?;
        answer.recv().map_err(|_| ended())?
    }

    /// Commits every call made, durably; returns once it is on disk.
    pub fn commit(mut self) -> Result<()> {
        let sent = self.calls.take().map(|calls| calls.send(Message::Commit));
        if !matches!(sent, Some(Ok(()))) {
            return Err(Error::closed("the batch has ended"));
        }
        self.finish()
    }

    /// Undoes every call made. Aborting an ended batch is a no-op.
    pub fn abort(mut self) {
        self.calls = None;
        let _ = self.finish();
    }

    fn finish(&mut self) -> Result<()> {
        self.calls = None;
        let result = self
            .finished
            .recv()
            .unwrap_or_else(|_| Err(Error::closed("the batch thread ended")));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut open = OPEN.lock();
        if let Some(at) = open.iter().position(|entry| *entry == self.marker) {
            open.swap_remove(at);
            OPEN_COUNT.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }
}

impl std::fmt::Debug for OpenBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBatch")
            .field("open", &self.calls.is_some())
            .finish()
    }
}

impl Drop for OpenBatch {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

/// The batch thread: one transaction, serving calls until commit or abort.
fn serve(view: &DriveView, incoming: &Receiver<Message>) -> Result<()> {
    let mut first_attempt = true;
    view.batch_unguarded(|batch| {
        if !std::mem::replace(&mut first_attempt, false) {
            // The map filled and has grown; the calls cannot be replayed.
            return Err(Error::storage_full(
                "the batch outgrew the storage map, which has now grown: run the batch again",
            ));
        }
        let mut map_full = None;
        loop {
            match incoming.recv() {
                Ok(Message::Call(call)) => map_full = call(batch).or(map_full),
                Ok(Message::Commit) => return map_full.map_or(Ok(()), Err),
                // Aborted. If a call ran out of map space, say so: the write
                // path grows the map on that error only, so the caller's
                // retry of the batch (as the error tells them) succeeds.
                Err(_) => {
                    return Err(
                        map_full.unwrap_or_else(|| Error::cancelled("the batch was aborted; nothing was written"))
                    )
                }
            }
        }
    })
}

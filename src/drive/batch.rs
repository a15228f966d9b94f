//! [`Batch`]: drive calls inside one transaction, all or nothing.

use std::cell::RefCell;

use lmdb::{RwTransaction, Transaction};

use super::calls::{Calls, Hooks, Snapshot};
use super::tree::Ctx;
use crate::lmdb::map_err;
use crate::Result;

/// Drive calls made inside one write transaction (from
/// [`DriveView::batch`](super::DriveView::batch)): the same calls as the
/// view's ([`Calls`]). Reads see the batch's own writes. Nothing is visible
/// to others, or durable, until the batch returns `Ok`; an error undoes
/// every call in it. Each call is itself atomic: one that fails leaves
/// nothing half-done, so a closure may handle the error and go on. The same
/// permission checks apply as on the view that made it.
pub type Batch<'a, 'env> = Calls<InBatch<'a, 'env>>;

/// What a [`Batch`] runs its calls in: a write transaction it borrows.
pub struct InBatch<'a, 'env> {
    cx: Ctx<'a>,
    txn: RefCell<&'a mut RwTransaction<'env>>,
}

impl<'a, 'env> InBatch<'a, 'env> {
    pub(crate) fn calls(cx: Ctx<'a>, txn: &'a mut RwTransaction<'env>) -> Batch<'a, 'env> {
        Calls {
            hooks: InBatch {
                cx,
                txn: RefCell::new(txn),
            },
        }
    }
}

impl Hooks for InBatch<'_, '_> {
    fn read<T>(&self, _op: &'static str, f: impl FnOnce(&Ctx<'_>, &Snapshot<'_>) -> Result<T>) -> Result<T> {
        let txn = self.txn.borrow();
        f(&self.cx, &Snapshot::of(&**txn))
    }

    /// Runs one call in a nested transaction, so a call that fails leaves no
    /// half-done change in the batch, even if the caller goes on.
    fn write<T: Send>(
        &self,
        _op: &'static str,
        mut f: impl FnMut(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let mut txn = self.txn.borrow_mut();
        atomic(&self.cx, &mut txn, |cx, nested| f(cx, nested))
    }
}

/// Runs `call` in a nested transaction of `txn`: committed into `txn` when
/// it succeeds, undone when it fails.
pub(crate) fn atomic<T>(
    cx: &Ctx<'_>,
    txn: &mut RwTransaction<'_>,
    call: impl FnOnce(&Ctx<'_>, &mut RwTransaction<'_>) -> Result<T>,
) -> Result<T> {
    let mut nested = txn
        .begin_nested_txn()
        .map_err(|e| map_err("begin a nested transaction", e))?;
    match call(cx, &mut nested) {
        Ok(value) => {
            nested.commit().map_err(|e| map_err("commit a nested transaction", e))?;
            Ok(value)
        }
        Err(err) => {
            nested.abort();
            Err(err)
        }
    }
}

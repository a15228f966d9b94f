//! Upgrades of older operations-and-jobs files, run by
//! [`crate::lmdb::format`] in one write transaction after a backup.
//!
//! Format 1 → 2: every value (records, index entries, counts, counters)
//! gains a checksum of its key and bytes (see [`crate::lmdb::seal`]); the
//! layouts are otherwise unchanged. Each entry is decoded first: one that
//! does not decode refuses the upgrade, naming the table and key, and the
//! file stays at format 1 (damage already there is reported, never sealed
//! in as if it were sound).

use lmdb::RwTransaction;

use super::tables::{ALL, CHECKS, MARKER_KEY};
use crate::lmdb::format::{seal_all, StepDatabases, UpgradeStep};
use crate::Result;

/// Every upgrade step of the operations-and-jobs format, oldest first.
pub(crate) const STEPS: &[UpgradeStep] = &[UpgradeStep {
    from: 1,
    what: "checksum every value",
    databases: &ALL,
    run: seal_every_table,
}];

fn seal_every_table(txn: &mut RwTransaction<'_>, dbs: &StepDatabases) -> Result<()> {
    for (name, check) in CHECKS {
        seal_all(txn, dbs.get(name)?, name, &[MARKER_KEY.as_bytes()], check)?;
    }
    Ok(())
}

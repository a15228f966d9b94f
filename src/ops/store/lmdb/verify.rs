//! The operations-and-jobs checks for [`crate::lmdb::verify`]: every
//! value's checksum (format 2 on) and that every key and value decodes as
//! its table's.

use std::collections::BTreeMap;
use std::path::Path;

use lmdb::{Cursor, Database, RoTransaction, Transaction};

use super::tables::{CHECKS, MARKER_KEY, META};
use crate::lmdb::unseal;
use crate::lmdb::verify::Report;

/// Runs the checks if the file holds operations and jobs (their meta
/// table); a file without a marker (written before markers) is format 1.
pub(crate) fn check(
    txn: &RoTransaction<'_>,
    dbs: &BTreeMap<String, Database>,
    _file: &'static Path,
    report: &mut Report,
) {
    let Some(meta) = dbs.get(META) else {
        return;
    };
    let version = txn
        .get(*meta, &MARKER_KEY)
        .ok()
        .and_then(|marker| marker.strip_prefix(super::FILE_FORMAT.magic))
        .and_then(|version| <[u8; 4]>::try_from(version).ok())
        .map(u32::from_be_bytes);
    let marked = txn.get(*meta, &MARKER_KEY).is_ok();
    let sealed = match version {
        None if !marked => false,
        Some(1) => false,
        Some(super::FORMAT_VERSION) => true,
        Some(newer) if newer > super::FORMAT_VERSION => {
            return report.problem(format!(
                "{META}: operations and jobs of format {newer}, newer than this build reads (format {}); verify \
                 it with a newer keel",
                super::FORMAT_VERSION
            ))
        }
        _ => return report.problem(format!("{META}: the operations and jobs format marker is malformed")),
    };
    for (name, decodes) in CHECKS {
        let Some(db) = dbs.get(name) else {
            continue;
        };
        let mut cursor = match txn.open_ro_cursor(*db) {
            Ok(cursor) => cursor,
            Err(e) => {
                report.problem(format!("{name}: {e}"));
                continue;
            }
        };
        for entry in cursor.iter_start() {
            let (key, stored) = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    report.problem(format!("{name}: {e}"));
                    break;
                }
            };
            if name == META && key == MARKER_KEY.as_bytes() {
                continue;
            }
            // Format 1 is not checksummed (opening upgrades it): decoded only.
            let value = if sealed { unseal(key, stored) } else { Some(stored) };
            match value {
                None => report.problem(format!("{name}: the value at key {key:02x?} fails its checksum")),
                Some(value) => {
                    if let Err(err) = decodes(key, value) {
                        report.problem(format!("{name}: entry at key {key:02x?}: {}", err.message()));
                    }
                }
            }
        }
    }
}

//! The journal record of one mutation: what it touched and how to undo it.
//!
//! On disk a record is its JSON body, a newline, and `fnv1a64:<hex>` of the
//! body. The checksum catches truncation and accidental corruption; it is not
//! a defence against a malicious writer, which is why every path is validated
//! again when a record is read and applied.

use serde::{Deserialize, Serialize};

use super::paths::RelPath;
use crate::{Error, Result};

/// The record format this build writes; it reads every format from 1 on.
///
/// - 1: the first released format.
/// - 2: file backups carry their size and CRC-32C (`size`, `crc`), checked
///   before a rollback uses them; folder fingerprints carry inode, ctime and
///   (for declared folders) a CRC-32C of each file. Records are bound to the
///   root they are found in, not to its path when written.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest record format this build still recovers.
pub const OLDEST_FORMAT: u32 = 1;

/// The `status` values this build knows.
const KNOWN_STATUSES: [&str; 3] = ["active", "committed", "rolled_back"];
/// The entry `kind` values this build knows.
const KNOWN_KINDS: [&str; 4] = ["absent", "file", "symlink", "dir"];

/// Where a mutation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    /// Changes may be on disk; recovery rolls them back.
    Active,
    /// Final; only cleanup remains.
    Committed,
    /// Undone; only cleanup remains.
    RolledBack,
}

impl MutationStatus {
    /// The name used in records and by the C and Python surfaces.
    pub fn as_str(self) -> &'static str {
        match self {
            MutationStatus::Active => "active",
            MutationStatus::Committed => "committed",
            MutationStatus::RolledBack => "rolled_back",
        }
    }
}

/// What a path was before the mutation first touched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Prior {
    /// Nothing was there: rollback removes whatever is.
    Absent,
    /// A regular file, copied (or hardlinked) to the entry's backup, whose
    /// size and CRC-32C are recorded from format 2 on (`None` in older
    /// records, which are then checked by type only).
    File {
        mode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crc: Option<u32>,
    },
    /// A symlink with this target (raw bytes), restored as a symlink.
    Symlink { target: Vec<u8> },
    /// A folder whose tree is in the entry's backup; `linked` when every file
    /// was hardlinked (restore then compares inodes, not bytes).
    Dir { mode: u32, linked: bool },
}

/// One snapshotted path. Its backup is `journal/<seq>.<index>`, derived from
/// its position, never read from the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) path: String,
    #[serde(flatten)]
    pub(crate) prior: Prior,
}

/// A mutation's journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) format: u32,
    pub(crate) seq: u64,
    /// The canonical root when the record was written, for operators only:
    /// entries are relative to the root, so a copied or moved tree's records
    /// are recovered where they are found.
    pub(crate) root: String,
    pub(crate) operation: String,
    pub(crate) details: String,
    pub(crate) status: MutationStatus,
    pub(crate) entries: Vec<Entry>,
}

impl Record {
    /// Serializes with the checksum trailer.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a record always serializes");
        let sum = fnv1a64(&bytes);
        bytes.extend_from_slice(format!("\nfnv1a64:{sum:016x}\n").as_bytes());
        bytes
    }

    /// Parses and checks a record: checksum, format version, and every path.
    /// Malformed data (including a missing or zero format) is
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt); a format newer than
    /// [`FORMAT_VERSION`] is [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported),
    /// naming both versions.
    ///
    /// The envelope — a JSON body with a `format` number, a newline and the
    /// `fnv1a64:` checksum line — is the same in every format, so any build
    /// can tell a newer record from a damaged one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Record> {
        let body = verify_checksum(bytes)?;
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|err| Error::corrupt(format!("not JSON: {err}")))?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(format) if (u64::from(OLDEST_FORMAT)..=u64::from(FORMAT_VERSION)).contains(&format) => {}
            Some(format) if format > u64::from(FORMAT_VERSION) => {
                return Err(Error::unsupported(format!(
                    "record format {format} is newer than this build reads (format {FORMAT_VERSION})"
                )))
            }
            other => {
                return Err(Error::corrupt(format!(
                    "record format {other:?} is not a journal format (this build reads format {FORMAT_VERSION})"
                )))
            }
        }
        refuse_unknown_values(&value)?;
        let record: Record =
            serde_json::from_value(value).map_err(|err| Error::corrupt(format!("bad record: {err}")))?;
        for entry in &record.entries {
            RelPath::parse(&entry.path).map_err(|err| Error::corrupt(format!("bad entry path: {err}")))?;
        }
        Ok(record)
    }

    /// The entries with their validated paths and indexes.
    pub(crate) fn paths(&self) -> Vec<(usize, RelPath, &Prior)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| RelPath::parse(&entry.path).ok().map(|path| (index, path, &entry.prior)))
            .collect()
    }
}

/// A checksummed record whose `status` or entry `kind` this build does not
/// know was written by a build that knows more: like a newer format, it is
/// `Unsupported` (blocks, never quarantined), not `Corrupt`.
fn refuse_unknown_values(value: &serde_json::Value) -> Result<()> {
    let unknown = |what: &str, got: &str| {
        Err(Error::unsupported(format!(
            "record {what} {got:?} is not one this build knows (format {FORMAT_VERSION})"
        )))
    };
    if let Some(status) = value.get("status").and_then(|s| s.as_str()) {
        if !KNOWN_STATUSES.contains(&status) {
            return unknown("status", status);
        }
    }
    let entries = value.get("entries").and_then(|e| e.as_array());
    for entry in entries.into_iter().flatten() {
        if let Some(kind) = entry.get("kind").and_then(|k| k.as_str()) {
            if !KNOWN_KINDS.contains(&kind) {
                return unknown("entry kind", kind);
            }
        }
    }
    Ok(())
}

fn verify_checksum(bytes: &[u8]) -> Result<&[u8]> {
    let text = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| Error::corrupt("truncated: no trailing newline"))?;
    let split = text
        .iter()
        .rposition(|&b| b == b'\n')
        .ok_or_else(|| Error::corrupt("truncated: no checksum line"))?;
    let (body, trailer) = (&text[..split], &text[split + 1..]);
    let expected = std::str::from_utf8(trailer)
        .ok()
        .and_then(|line| line.strip_prefix("fnv1a64:"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| Error::corrupt("malformed checksum line"))?;
    if fnv1a64(body) != expected {
        return Err(Error::corrupt("checksum mismatch"));
    }
    Ok(body)
}

/// FNV-1a, 64 bits: small, dependency-free, enough to catch torn writes.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn sample() -> Record {
        Record {
            format: FORMAT_VERSION,
            seq: 7,
            root: "/srv/kb".into(),
            operation: "add".into(),
            details: "doc.pdf".into(),
            status: MutationStatus::Active,
            entries: vec![
                Entry {
                    path: "a/b".into(),
                    prior: Prior::File {
                        mode: 0o640,
                        size: Some(3),
                        crc: Some(0xdead),
                    },
                },
                Entry {
                    path: "l".into(),
                    prior: Prior::Symlink {
                        target: b"../x".to_vec(),
                    },
                },
                Entry {
                    path: "d".into(),
                    prior: Prior::Dir {
                        mode: 0o755,
                        linked: true,
                    },
                },
                Entry {
                    path: "n".into(),
                    prior: Prior::Absent,
                },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let record = sample();
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn flipped_or_truncated_bytes_are_corrupt() {
        let bytes = sample().encode();
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert_eq!(Record::decode(&flipped).unwrap_err().kind(), ErrorKind::Corrupt);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(
                Record::decode(&bytes[..cut]).unwrap_err().kind(),
                ErrorKind::Corrupt,
                "cut {cut}"
            );
        }
    }

    fn with_checksum(body: &str) -> Vec<u8> {
        format!("{body}\nfnv1a64:{:016x}\n", fnv1a64(body.as_bytes())).into_bytes()
    }

    #[test]
    fn newer_versions_are_unsupported_naming_both() {
        let body = serde_json::to_string(&sample())
            .unwrap()
            .replace("\"format\":2", "\"format\":3");
        let err = Record::decode(&with_checksum(&body)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(
            err.message().contains("format 3") && err.message().contains("format 2"),
            "{err}"
        );
    }

    #[test]
    fn missing_or_zero_versions_are_corrupt() {
        let json = serde_json::to_string(&sample()).unwrap();
        for body in [
            json.replace("\"format\":2", "\"format\":0"),
            json.replace("\"format\":2,", ""),
        ] {
            assert_eq!(
                Record::decode(&with_checksum(&body)).unwrap_err().kind(),
                ErrorKind::Corrupt,
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_statuses_and_kinds_are_unsupported_not_corrupt() {
        let json = serde_json::to_string(&sample()).unwrap();
        for body in [
            json.replace("\"status\":\"active\"", "\"status\":\"paused\""),
            json.replace("\"kind\":\"absent\"", "\"kind\":\"fifo\""),
        ] {
            let err = Record::decode(&with_checksum(&body)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{body}");
        }
    }

    #[test]
    fn format_1_records_without_checksums_still_decode() {
        let json = serde_json::to_string(&sample())
            .unwrap()
            .replace("\"format\":2", "\"format\":1")
            .replace(",\"size\":3,\"crc\":57005", "");
        let record = Record::decode(&with_checksum(&json)).unwrap();
        assert_eq!(record.format, 1);
        assert_eq!(
            record.entries[0].prior,
            Prior::File {
                mode: 0o640,
                size: None,
                crc: None
            }
        );
    }

    #[test]
    fn escaping_paths_are_corrupt_even_with_a_valid_checksum() {
        for bad in ["/etc/passwd", "../outside", "a/../../b", ".keel/lock"] {
            let body = serde_json::to_string(&sample())
                .unwrap()
                .replace("\"a/b\"", &format!("{bad:?}"));
            assert_eq!(
                Record::decode(&with_checksum(&body)).unwrap_err().kind(),
                ErrorKind::Corrupt,
                "{bad}"
            );
        }
    }
}

//! The key layouts of the LMDB store: one function to build and one to parse
//! each kind of key, so no byte slicing is scattered around the store.
//!
//! Names and item keys never contain NUL (checked on the way in), so NUL
//! ends a variable-length field; times and ids are big-endian so byte order
//! is numeric order and a cursor walks each index oldest first.

use crate::ops::clock::Millis;
use crate::ops::codec::{Decoder, Encoder};
use crate::ops::records::{JobId, JobState};
use crate::{Error, Result};

const SEP: u8 = 0;

/// `name` followed by the separator: the prefix of every key of that name.
pub(crate) fn prefix(name: &str) -> Vec<u8> {
    Encoder::new().raw(name.as_bytes()).u8(SEP).finish()
}

/// Splits `key` at its first separator into the name and the rest.
fn split_name<'a>(key: &'a [u8], what: &str) -> Result<(&'a str, &'a [u8])> {
    let at = key
        .iter()
        .position(|byte| *byte == SEP)
        .ok_or_else(|| Error::corrupt(format!("{what} key without a separator")))?;
    let name = std::str::from_utf8(&key[..at]).map_err(|_| Error::corrupt(format!("{what} key is not UTF-8")))?;
    Ok((name, &key[at + 1..]))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::corrupt(format!("{what} key is not UTF-8")))
}

// ---- operations ------------------------------------------------------------

/// `op.records`: item, op.
pub(crate) fn op_record(item: &str, op: &str) -> Vec<u8> {
    Encoder::new().raw(&prefix(item)).raw(op.as_bytes()).finish()
}

pub(crate) fn parse_op_record(key: &[u8]) -> Result<(String, String)> {
    let (item, op) = split_name(key, "operation record")?;
    Ok((item.to_owned(), utf8(op, "operation record")?))
}

/// `op.ready` (by ready time) and `op.working` (by lease end): op, time, item.
pub(crate) fn op_index(op: &str, at: Millis, item: &str) -> Vec<u8> {
    Encoder::new().raw(&prefix(op)).u64(at).raw(item.as_bytes()).finish()
}

/// The time and item of an `op_index` key.
pub(crate) fn parse_op_index(key: &[u8]) -> Result<(Millis, String)> {
    let (_, rest) = split_name(key, "operation index")?;
    let mut decoder = Decoder::new(rest, "operation index key");
    let at = decoder.u64()?;
    Ok((at, utf8(decoder.rest(), "operation index")?))
}

/// The operation and time of an `op_index` key.
pub(crate) fn parse_op_index_op(key: &[u8]) -> Result<(String, Millis)> {
    let (op, _) = split_name(key, "operation index")?;
    Ok((op.to_owned(), parse_op_index(key)?.0))
}

/// The first key after every key that starts with `prefix` (which ends in
/// the separator, so bumping that byte skips exactly that name's keys).
pub(crate) fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut next = prefix.to_vec();
    if let Some(last) = next.last_mut() {
        *last += 1;
    }
    next
}

// ---- jobs --------------------------------------------------------------------

/// `jobs.records`: the id.
pub(crate) fn job(id: JobId) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn parse_job(key: &[u8]) -> Result<JobId> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Error::corrupt("job key is not 8 bytes"))?;
    Ok(JobId::from_be_bytes(bytes))
}

/// Where a job sits in `jobs.available`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    pub(crate) priority: u8,
    pub(crate) run_at: Millis,
    pub(crate) id: JobId,
}

/// `jobs.available`: kind, priority, run-at, id — so the first entry of a
/// kind at a priority is the one to run next.
pub(crate) fn available(kind: &str, slot: Slot) -> Vec<u8> {
    Encoder::new()
        .raw(&prefix(kind))
        .u8(slot.priority)
        .u64(slot.run_at)
        .u64(slot.id)
        .finish()
}

/// The start of `kind`'s entries at `priority`.
pub(crate) fn available_from(kind: &str, priority: u8) -> Vec<u8> {
    Encoder::new().raw(&prefix(kind)).u8(priority).finish()
}

pub(crate) fn parse_available(key: &[u8]) -> Result<Slot> {
    let (_, rest) = split_name(key, "available job")?;
    let mut decoder = Decoder::new(rest, "available job key");
    let slot = Slot {
        priority: decoder.u8()?,
        run_at: decoder.u64()?,
        id: decoder.u64()?,
    };
    decoder.end()?;
    Ok(slot)
}

/// `jobs.running` (by lease end) and `jobs.finished` (by finish time): time, id.
pub(crate) fn timed(at: Millis, id: JobId) -> Vec<u8> {
    Encoder::new().u64(at).u64(id).finish()
}

pub(crate) fn parse_timed(key: &[u8]) -> Result<(Millis, JobId)> {
    let mut decoder = Decoder::new(key, "job time index key");
    let parsed = (decoder.u64()?, decoder.u64()?);
    decoder.end()?;
    Ok(parsed)
}

/// `jobs.unique`: kind, unique key.
pub(crate) fn unique(kind: &str, key: &str) -> Vec<u8> {
    Encoder::new().raw(&prefix(kind)).raw(key.as_bytes()).finish()
}

/// `jobs.counts`: kind, state.
pub(crate) fn count(kind: &str, state: JobState) -> Vec<u8> {
    Encoder::new().raw(&prefix(kind)).u8(state as u8).finish()
}

pub(crate) fn parse_count(key: &[u8]) -> Result<(String, JobState)> {
    let (kind, rest) = split_name(key, "job count")?;
    let [state] = rest else {
        return Err(Error::corrupt("job count key: bad state field"));
    };
    Ok((kind.to_owned(), JobState::from_code(*state, "job count key")?))
}

/// A stored counter (`u64` big-endian).
pub(crate) fn parse_u64(value: &[u8], what: &str) -> Result<u64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| Error::corrupt(format!("{what}: counter is not 8 bytes")))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert_eq!(
            parse_op_record(&op_record("a/b c", "unpack")).unwrap(),
            ("a/b c".into(), "unpack".into())
        );
        assert_eq!(
            parse_op_index(&op_index("unpack", 77, "x\u{e9}")).unwrap(),
            (77, "x\u{e9}".into())
        );
        assert_eq!(parse_job(&job(9)).unwrap(), 9);
        let slot = Slot {
            priority: 3,
            run_at: 12,
            id: 5,
        };
        assert_eq!(parse_available(&available("mail", slot)).unwrap(), slot);
        assert_eq!(parse_timed(&timed(4, 6)).unwrap(), (4, 6));
        assert_eq!(
            parse_count(&count("mail", JobState::Dead)).unwrap(),
            ("mail".into(), JobState::Dead)
        );
    }

    #[test]
    fn index_keys_sort_by_priority_then_time_then_id() {
        let key = |priority, run_at, id| available("k", Slot { priority, run_at, id });
        assert!(key(0, 900, 9) < key(1, 1, 1));
        assert!(key(1, 1, 9) < key(1, 2, 1));
        assert!(key(1, 2, 1) < key(1, 2, 2));
        assert!(op_index("op", 255, "z") < op_index("op", 256, "a"));
        // One kind's entries never interleave with a longer kind's sharing its start.
        assert!(
            available(
                "k",
                Slot {
                    priority: 9,
                    run_at: u64::MAX,
                    id: 0
                }
            ) < prefix("k2")
        );
    }

    #[test]
    fn malformed_keys_are_corrupt() {
        assert!(parse_job(b"short").is_err());
        assert!(parse_available(b"kind-without-separator").is_err());
        assert!(parse_timed(&[1, 2, 3]).is_err());
        assert!(parse_count(b"k\0\x63").is_err());
    }
}

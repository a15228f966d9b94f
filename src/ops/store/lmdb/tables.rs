//! The operations-and-jobs tables of an LMDB file, their typed keys, and
//! the byte layout of the records they hold (through the LMDB layer's
//! [`Codec`], so this file is the only place that layout lives).
//!
//! | table               | key                                  | value          |
//! |---------------------|--------------------------------------|----------------|
//! | `keel.op.records`   | item `\0` op                         | [`OpRecord`]   |
//! | `keel.op.ready`     | op `\0` ready-at ++ item             | (empty)        |
//! | `keel.op.working`   | op `\0` lease-until ++ item          | (empty)        |
//! | `keel.op.lapses`    | item `\0` op                         | count (`u64`)  |
//! | `keel.jobs.records` | job id                               | [`JobRecord`]  |
//! | `keel.jobs.available` | kind `\0` priority ++ run-at ++ id | (empty)        |
//! | `keel.jobs.running` | lease-until ++ id                    | (empty)        |
//! | `keel.jobs.finished`| finished-at ++ id                    | (empty)        |
//! | `keel.jobs.unique`  | kind `\0` unique key                 | job id         |
//! | `keel.jobs.counts`  | kind `\0` state                      | count (`u64`)  |
//! | `keel.ops.meta`     | `next_job_id`, `next_token`          | counter (`u64`)|
//! |                     | `format`                             | the format marker |
//!
//! Names and item keys never contain NUL (checked on the way in), so NUL
//! ends a variable-length field; times and ids are big-endian so byte order
//! is numeric order and a cursor walks each index oldest first.
//!
//! Every value but the format marker (read by [`crate::lmdb::format`] only)
//! is sealed with a checksum of its key and bytes (format 2 on; see
//! [`crate::lmdb::seal`]): a flipped byte in a key or a value reads as
//! [`Corrupt`](crate::ErrorKind::Corrupt) naming the file, table and key.
//! Records start with a layout byte (1), so a record of a layout this build
//! does not know is [`Unsupported`](crate::ErrorKind::Unsupported), never
//! misread.

use crate::lmdb::{encode_len_prefixed, malformed, utf8, Codec, Decoder, Env, Table};
use crate::ops::clock::Millis;
use crate::ops::records::{JobId, JobRecord, JobState, OpRecord, OpState};
use crate::{Error, Result};

/// The tables' database names.
pub(crate) const OP_RECORDS: &str = "keel.op.records";
pub(crate) const OP_READY: &str = "keel.op.ready";
pub(crate) const OP_WORKING: &str = "keel.op.working";
pub(crate) const OP_LAPSES: &str = "keel.op.lapses";
pub(crate) const JOBS: &str = "keel.jobs.records";
pub(crate) const AVAILABLE: &str = "keel.jobs.available";
pub(crate) const RUNNING: &str = "keel.jobs.running";
pub(crate) const FINISHED: &str = "keel.jobs.finished";
pub(crate) const UNIQUE: &str = "keel.jobs.unique";
pub(crate) const COUNTS: &str = "keel.jobs.counts";
pub(crate) const META: &str = "keel.ops.meta";

/// Every table, meta last.
pub(crate) const ALL: [&str; 11] = [
    OP_RECORDS, OP_READY, OP_WORKING, OP_LAPSES, JOBS, AVAILABLE, RUNNING, FINISHED, UNIQUE, COUNTS, META,
];

/// The key of the format marker in [`META`], the one value not sealed.
pub(crate) const MARKER_KEY: &str = "format";

/// The counters in [`META`].
pub(crate) const NEXT_JOB_ID: &str = "next_job_id";
pub(crate) const NEXT_TOKEN: &str = "next_token";

/// Handles to every table (cheap to copy).
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    pub op_records: Table<OpKey, OpRecord>,
    pub op_ready: Table<OpIndexKey, ()>,
    pub op_working: Table<OpIndexKey, ()>,
    pub op_lapses: Table<OpKey, u64>,
    pub jobs: Table<JobId, JobRecord>,
    pub available: Table<AvailableKey, ()>,
    pub running: Table<TimedKey, ()>,
    pub finished: Table<TimedKey, ()>,
    pub unique: Table<UniqueKey, JobId>,
    pub counts: Table<CountKey, u64>,
    pub meta: Table<String, u64>,
}

impl Tables {
    /// Opens (creating) every table in `env`.
    pub fn open(env: &Env) -> Result<Tables> {
        fn table<K: Codec + std::fmt::Debug, V: Codec>(env: &Env, name: &'static str) -> Result<Table<K, V>> {
            Ok(Table::new(env.database(name)?, name, env.static_path()))
        }
        Ok(Tables {
            op_records: table(env, OP_RECORDS)?,
            op_ready: table(env, OP_READY)?,
            op_working: table(env, OP_WORKING)?,
            op_lapses: table(env, OP_LAPSES)?,
            jobs: table(env, JOBS)?,
            available: table(env, AVAILABLE)?,
            running: table(env, RUNNING)?,
            finished: table(env, FINISHED)?,
            unique: table(env, UNIQUE)?,
            counts: table(env, COUNTS)?,
            meta: table(env, META)?,
        })
    }
}

const SEP: u8 = 0;

/// `name` followed by the separator: the prefix of every key of that name.
pub(crate) fn prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(SEP);
    key
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

/// Reads a name ended by the separator.
fn name<'a>(d: &mut Decoder<'a>) -> Result<&'a str> {
    utf8(d.until(SEP)?)
}

// ---- operations ------------------------------------------------------------

/// An operation record's key (and its lapse count's): item, op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpKey {
    pub item: String,
    pub op: String,
}

impl OpKey {
    pub fn new(item: &str, op: &str) -> OpKey {
        OpKey {
            item: item.to_owned(),
            op: op.to_owned(),
        }
    }

    /// The stored record with its item and operation from this key.
    pub fn record(self, mut record: OpRecord) -> OpRecord {
        record.item = self.item;
        record.op = self.op;
        record
    }
}

impl Codec for OpKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.item.as_bytes());
        out.push(SEP);
        out.extend_from_slice(self.op.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<OpKey> {
        let mut d = Decoder::new(bytes);
        let item = name(&mut d)?.to_owned();
        let op = utf8(d.rest())?.to_owned();
        Ok(OpKey { item, op })
    }
}

/// A key of `op.ready` (by ready time) and `op.working` (by lease end):
/// op, time, item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpIndexKey {
    pub op: String,
    pub at: Millis,
    pub item: String,
}

impl Codec for OpIndexKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.op.as_bytes());
        out.push(SEP);
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(self.item.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<OpIndexKey> {
        let mut d = Decoder::new(bytes);
        let op = name(&mut d)?.to_owned();
        let at = d.u64()?;
        let item = utf8(d.rest())?.to_owned();
        Ok(OpIndexKey { op, at, item })
    }
}

// ---- jobs --------------------------------------------------------------------

/// Where a job sits in `jobs.available`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    pub priority: u8,
    pub run_at: Millis,
    pub id: JobId,
}

/// A `jobs.available` key: kind, priority, run-at, id — so the first entry
/// of a kind at a priority is the one to run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AvailableKey {
    pub kind: String,
    pub slot: Slot,
}

impl AvailableKey {
    /// The start of `kind`'s entries at `priority`.
    pub fn from_priority(kind: &str, priority: u8) -> Vec<u8> {
        let mut key = prefix(kind);
        key.push(priority);
        key
    }
}

impl Codec for AvailableKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.kind.as_bytes());
        out.push(SEP);
        out.push(self.slot.priority);
        out.extend_from_slice(&self.slot.run_at.to_be_bytes());
        out.extend_from_slice(&self.slot.id.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<AvailableKey> {
        let mut d = Decoder::new(bytes);
        let kind = name(&mut d)?.to_owned();
        let slot = Slot {
            priority: d.u8()?,
            run_at: d.u64()?,
            id: d.u64()?,
        };
        d.finish(AvailableKey { kind, slot })
    }
}

/// A `jobs.running` (by lease end) or `jobs.finished` (by finish time) key:
/// time, id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedKey {
    pub at: Millis,
    pub id: JobId,
}

impl Codec for TimedKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<TimedKey> {
        let mut d = Decoder::new(bytes);
        let key = TimedKey {
            at: d.u64()?,
            id: d.u64()?,
        };
        d.finish(key)
    }
}

/// A `jobs.unique` key: kind, unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueKey {
    pub kind: String,
    pub unique: String,
}

impl Codec for UniqueKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.kind.as_bytes());
        out.push(SEP);
        out.extend_from_slice(self.unique.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<UniqueKey> {
        let mut d = Decoder::new(bytes);
        let kind = name(&mut d)?.to_owned();
        let unique = utf8(d.rest())?.to_owned();
        Ok(UniqueKey { kind, unique })
    }
}

/// A `jobs.counts` key: kind, state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CountKey {
    pub kind: String,
    pub state: JobState,
}

impl Codec for CountKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.kind.as_bytes());
        out.push(SEP);
        out.push(self.state as u8);
    }
    fn decode(bytes: &[u8]) -> Result<CountKey> {
        let mut d = Decoder::new(bytes);
        let kind = name(&mut d)?.to_owned();
        let state = JobState::from_code(d.u8()?, "job count key")?;
        d.finish(CountKey { kind, state })
    }
}

// ---- records -------------------------------------------------------------------

/// The layout byte every stored record starts with.
const RECORD_LAYOUT: u8 = 1;

fn check_layout(layout: u8) -> Result<()> {
    match layout {
        RECORD_LAYOUT => Ok(()),
        0 => Err(malformed("record layout 0")),
        newer => Err(Error::unsupported(format!(
            "record of layout {newer}, this build reads layout {RECORD_LAYOUT}"
        ))),
    }
}

/// The item and operation live in the key: decoding leaves them empty, and
/// `OpKey::record` fills them in.
impl Codec for OpRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECORD_LAYOUT);
        out.push(self.state as u8);
        out.extend_from_slice(&self.attempts.to_be_bytes());
        for field in [
            self.token,
            self.lease_until,
            self.ready_at,
            self.created_at,
            self.updated_at,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        encode_len_prefixed(out, self.message.as_bytes());
        encode_len_prefixed(out, self.worker.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<OpRecord> {
        let mut d = Decoder::new(bytes);
        check_layout(d.u8()?)?;
        let record = OpRecord {
            item: String::new(),
            op: String::new(),
            state: OpState::from_code(d.u8()?, "operation record")?,
            attempts: d.u32()?,
            token: d.u64()?,
            lease_until: d.u64()?,
            ready_at: d.u64()?,
            created_at: d.u64()?,
            updated_at: d.u64()?,
            message: d.str()?.to_owned(),
            worker: d.str()?.to_owned(),
            expired: false,
        };
        d.finish(record)
    }
}

/// The id lives in the key: decoding leaves it 0 and the store sets it.
impl Codec for JobRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[RECORD_LAYOUT, self.state as u8, self.priority]);
        out.extend_from_slice(&self.run_at.to_be_bytes());
        for field in [self.attempts, self.failures, self.max_attempts, self.resets] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        for field in [
            self.token,
            self.lease_until,
            self.created_at,
            self.updated_at,
            self.finished_at,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        encode_len_prefixed(out, self.kind.as_bytes());
        encode_len_prefixed(out, self.worker.as_bytes());
        match &self.unique_key {
            Some(unique) => {
                out.push(1);
                encode_len_prefixed(out, unique.as_bytes());
            }
            None => out.push(0),
        }
        encode_len_prefixed(out, self.last_error.as_bytes());
        encode_len_prefixed(out, self.result.as_bytes());
        encode_len_prefixed(out, self.payload.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<JobRecord> {
        let mut d = Decoder::new(bytes);
        check_layout(d.u8()?)?;
        let record = JobRecord {
            id: 0,
            state: JobState::from_code(d.u8()?, "job record")?,
            priority: d.u8()?,
            run_at: d.u64()?,
            attempts: d.u32()?,
            failures: d.u32()?,
            max_attempts: d.u32()?,
            resets: d.u32()?,
            token: d.u64()?,
            lease_until: d.u64()?,
            created_at: d.u64()?,
            updated_at: d.u64()?,
            finished_at: d.u64()?,
            kind: d.str()?.to_owned(),
            worker: d.str()?.to_owned(),
            unique_key: match d.flag()? {
                true => Some(d.str()?.to_owned()),
                false => None,
            },
            last_error: d.str()?.to_owned(),
            result: d.str()?.to_owned(),
            payload: d.str()?.to_owned(),
        };
        d.finish(record)
    }
}

/// Checks that a stored key and (unsealed) value decode as their table's.
pub(crate) type EntryCheck = fn(&[u8], &[u8]) -> Result<()>;

fn decodes<K: Codec, V: Codec>(key: &[u8], value: &[u8]) -> Result<()> {
    K::decode(key).map_err(|e| e.context("key"))?;
    V::decode(value).map_err(|e| e.context("value"))?;
    Ok(())
}

/// Every table with the check of its entries: what an upgrade checks
/// before sealing and what verifying checks after unsealing. `keel.ops.meta`
/// is last; its `format` entry is the marker, not a sealed value.
pub(crate) const CHECKS: [(&str, EntryCheck); 11] = [
    (OP_RECORDS, decodes::<OpKey, OpRecord>),
    (OP_READY, decodes::<OpIndexKey, ()>),
    (OP_WORKING, decodes::<OpIndexKey, ()>),
    (OP_LAPSES, decodes::<OpKey, u64>),
    (JOBS, decodes::<JobId, JobRecord>),
    (AVAILABLE, decodes::<AvailableKey, ()>),
    (RUNNING, decodes::<TimedKey, ()>),
    (FINISHED, decodes::<TimedKey, ()>),
    (UNIQUE, decodes::<UniqueKey, JobId>),
    (COUNTS, decodes::<CountKey, u64>),
    (META, decodes::<String, u64>),
];

/// Decodes `bytes` with every key and value codec of these tables, checking
/// that whatever decodes survives encoding (for the decoder fuzz target,
/// see `crate::lmdb::fuzzing`).
pub(crate) fn round_trip_all(bytes: &[u8]) {
    use crate::lmdb::fuzzing::round_trip;
    round_trip::<OpKey>(bytes);
    round_trip::<OpIndexKey>(bytes);
    round_trip::<AvailableKey>(bytes);
    round_trip::<TimedKey>(bytes);
    round_trip::<UniqueKey>(bytes);
    round_trip::<CountKey>(bytes);
    round_trip::<OpRecord>(bytes);
    round_trip::<JobRecord>(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn sample_job() -> JobRecord {
        JobRecord {
            id: 0,
            kind: "email".into(),
            payload: r#"{"to":"a@b"}"#.into(),
            state: JobState::Retrying,
            priority: 3,
            run_at: 1_000,
            attempts: 2,
            failures: 1,
            max_attempts: 5,
            resets: 1,
            token: 99,
            worker: "w1".into(),
            lease_until: 5_000,
            unique_key: Some("u".into()),
            last_error: "smtp down".into(),
            result: String::new(),
            created_at: 10,
            updated_at: 20,
            finished_at: 0,
        }
    }

    #[test]
    fn keys_round_trip() {
        let op = OpKey::new("a/b c", "unpack");
        assert_eq!(OpKey::decode(&op.to_bytes()).unwrap(), op);
        let index = OpIndexKey {
            op: "unpack".into(),
            at: 77,
            item: "x\u{e9}".into(),
        };
        assert_eq!(OpIndexKey::decode(&index.to_bytes()).unwrap(), index);
        let available = AvailableKey {
            kind: "mail".into(),
            slot: Slot {
                priority: 3,
                run_at: 12,
                id: 5,
            },
        };
        assert_eq!(AvailableKey::decode(&available.to_bytes()).unwrap(), available);
        let timed = TimedKey { at: 4, id: 6 };
        assert_eq!(TimedKey::decode(&timed.to_bytes()).unwrap(), timed);
        let unique = UniqueKey {
            kind: "mail".into(),
            unique: "welcome".into(),
        };
        assert_eq!(UniqueKey::decode(&unique.to_bytes()).unwrap(), unique);
        let count = CountKey {
            kind: "mail".into(),
            state: JobState::Dead,
        };
        assert_eq!(CountKey::decode(&count.to_bytes()).unwrap(), count);
    }

    #[test]
    fn index_keys_sort_by_priority_then_time_then_id() {
        let key = |priority, run_at, id| {
            AvailableKey {
                kind: "k".into(),
                slot: Slot { priority, run_at, id },
            }
            .to_bytes()
        };
        assert!(key(0, 900, 9) < key(1, 1, 1));
        assert!(key(1, 1, 9) < key(1, 2, 1));
        assert!(key(1, 2, 1) < key(1, 2, 2));
        let op_index = |at, item: &str| {
            OpIndexKey {
                op: "op".into(),
                at,
                item: item.into(),
            }
            .to_bytes()
        };
        assert!(op_index(255, "z") < op_index(256, "a"));
        // One kind's entries never interleave with a longer kind's sharing its start.
        assert!(key(9, u64::MAX, 0) < prefix("k2"));
        assert!(key(9, u64::MAX, u64::MAX) < after_prefix(&prefix("k")));
    }

    #[test]
    fn malformed_keys_are_corrupt() {
        assert_eq!(u64::decode(b"short").unwrap_err().kind(), ErrorKind::Corrupt);
        assert!(AvailableKey::decode(b"kind-without-separator").is_err());
        assert!(TimedKey::decode(&[1, 2, 3]).is_err());
        let err = CountKey::decode(b"k\0\x63").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.message().contains("unknown job state 99"), "{err}");
    }

    #[test]
    fn records_round_trip() {
        let job = sample_job();
        assert_eq!(JobRecord::decode(&job.to_bytes()).unwrap(), job);
        let plain = JobRecord {
            unique_key: None,
            ..job
        };
        assert_eq!(JobRecord::decode(&plain.to_bytes()).unwrap(), plain);
        let mut record = OpRecord::new_ready("ds1", "unpack", 7);
        record.state = OpState::Failed;
        record.message = "bad tarball".into();
        record.attempts = 3;
        let decoded = OpKey::new("ds1", "unpack").record(OpRecord::decode(&record.to_bytes()).unwrap());
        assert_eq!(decoded, record);
    }

    #[test]
    fn a_newer_layout_is_unsupported_and_garbage_is_corrupt() {
        let mut bytes = sample_job().to_bytes();
        bytes[0] = RECORD_LAYOUT + 1;
        assert_eq!(JobRecord::decode(&bytes).unwrap_err().kind(), ErrorKind::Unsupported);
        let good = sample_job().to_bytes();
        for cut in 0..good.len() {
            let err = JobRecord::decode(&good[..cut]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "cut at {cut}");
        }
        let mut bad_state = good.clone();
        bad_state[1] = 77;
        let err = JobRecord::decode(&bad_state).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.message().contains("unknown job state 77"), "{err}");
        let mut trailing = good;
        trailing.push(0);
        assert!(JobRecord::decode(&trailing).is_err());
    }
}

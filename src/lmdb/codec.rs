//! Typed keys and values: each stored shape has one [`Codec`], so byte layout
//! lives in one place and malformed bytes become
//! [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the table and key.
//!
//! Every value a [`Table`] stores is *sealed*: followed by a CRC-32C of its
//! key and its bytes (4 bytes, big-endian). LMDB checks no page contents, so
//! this is what turns a scribbled, torn or misplaced value into `Corrupt`
//! naming the file, table and key, instead of a wrong answer.

use std::marker::PhantomData;
use std::path::Path;

use lmdb::{Cursor, Database, RwTransaction, Transaction, WriteFlags};

use super::map_err;
use crate::{Error, Result};

/// How a type is laid out in LMDB bytes. Key codecs must preserve order:
/// `a < b` exactly when `encode(a) < encode(b)` bytewise.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads a value back. Bytes that are not a valid encoding are
    /// [`Corrupt`](crate::ErrorKind::Corrupt) saying what is wrong (a
    /// [`Table`] adds the file, table and key); a layout this build does
    /// not read may be [`Unsupported`](crate::ErrorKind::Unsupported).
    fn decode(bytes: &[u8]) -> Result<Self>;

    /// The encoding as a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// The error for bytes that are not a valid encoding: `what` says how
/// (`"truncated"`, `"unknown state 9"`); the reader adds where.
pub fn malformed(what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("malformed: {what}"))
}

/// Reads fields off the front of a byte slice, for composite codecs. Every
/// method fails with [`malformed`] when the bytes run short or are not what
/// the field must be.
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Starts reading `bytes`.
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { rest: bytes }
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| malformed(format!("truncated ({} bytes left, {N} needed)", self.rest.len())))?;
        self.rest = rest;
        Ok(*head)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// The next big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.rest.len() < len {
            return Err(malformed(format!(
                "truncated ({} bytes left, {len} needed)",
                self.rest.len()
            )));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// A length-prefixed byte string written by [`encode_len_prefixed`].
    pub fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()?;
        self.bytes(len as usize)
    }

    /// A length-prefixed UTF-8 string written by [`encode_len_prefixed`].
    pub fn str(&mut self) -> Result<&'a str> {
        utf8(self.len_prefixed()?)
    }

    /// A presence flag: `0` is false, `1` true, anything else malformed.
    pub fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(malformed(format!("flag byte {other}"))),
        }
    }

    /// The bytes up to the next `separator`, which is consumed (for keys
    /// whose variable-length fields end in a byte they never contain).
    pub fn until(&mut self, separator: u8) -> Result<&'a [u8]> {
        let at = self
            .rest
            .iter()
            .position(|byte| *byte == separator)
            .ok_or_else(|| malformed(format!("no {separator:#04x} separator")))?;
        let (head, rest) = self.rest.split_at(at);
        self.rest = &rest[1..];
        Ok(head)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// `value` if every byte was consumed, else malformed (trailing bytes).
    pub fn finish<T>(self, value: T) -> Result<T> {
        match self.rest.len() {
            0 => Ok(value),
            left => Err(malformed(format!("{left} trailing bytes"))),
        }
    }
}

/// `bytes` as UTF-8 text, or malformed.
pub fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| malformed("text is not UTF-8"))
}

/// Appends `bytes` preceded by its length (a big-endian `u32`); read back
/// with [`Decoder::len_prefixed`]. For values, not keys (it does not sort).
pub fn encode_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Codec for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<u64> {
        let mut d = Decoder::new(bytes);
        let value = d.u64()?;
        d.finish(value)
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<String> {
        utf8(bytes).map(str::to_owned)
    }
}

impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Result<()> {
        Decoder::new(bytes).finish(())
    }
}

impl Codec for serde_json::Value {
    fn encode(&self, out: &mut Vec<u8>) {
        // Writing a Value into a Vec cannot fail.
        serde_json::to_writer(out, self).expect("serialize JSON value");
    }
    fn decode(bytes: &[u8]) -> Result<serde_json::Value> {
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON ({e})")))
    }
}

/// The length of the checksum that ends every sealed value.
pub const SEAL_LEN: usize = 4;

/// `value` followed by the CRC-32C of `key` and `value`: what a [`Table`]
/// stores. Covering the key too means a value found under the wrong key
/// (a page mixed up by damage) fails its check as well.
pub fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + SEAL_LEN);
    out.extend_from_slice(value);
    out.extend_from_slice(&checksum(key, value).to_be_bytes());
    out
}

/// The value inside `stored` if its checksum matches `key` and its bytes;
/// `None` if it is too short or does not match.
pub fn unseal<'a>(key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
    let split = stored.len().checked_sub(SEAL_LEN)?;
    let (value, sum) = stored.split_at(split);
    let sum = u32::from_be_bytes(sum.try_into().ok()?);
    (checksum(key, value) == sum).then_some(value)
}

fn checksum(key: &[u8], value: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), value)
}

/// A named LMDB database whose keys are `K` and values `V`.
///
/// Values are sealed (see the module docs). Reads check the seal and decode
/// into owned values; a value that fails either is
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the file, the
/// table and the key.
pub struct Table<K, V> {
    db: Database,
    name: &'static str,
    file: &'static Path,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

impl<K: Codec + std::fmt::Debug, V: Codec> Table<K, V> {
    /// The table stored in `db` of the LMDB file `file`, called `name` in
    /// errors.
    pub fn new(db: Database, name: &'static str, file: &'static Path) -> Table<K, V> {
        Table {
            db,
            name,
            file,
            _types: PhantomData,
        }
    }

    /// The underlying database handle.
    pub fn database(&self) -> Database {
        self.db
    }

    /// The value at `key`, if any.
    pub fn get(&self, txn: &impl Transaction, key: &K) -> Result<Option<V>> {
        let key_bytes = key.to_bytes();
        match txn.get(self.db, &key_bytes) {
            Ok(stored) => self.value_at(&key_bytes, stored).map(Some),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(map_err(format!("read {} key {key:?}", self.name), e)),
        }
    }

    /// Runs `read` on the stored bytes at `key` without copying them (for
    /// values decoded straight into something else, like JSON); `None` if
    /// the key is absent.
    pub fn get_raw<R>(
        &self,
        txn: &impl Transaction,
        key: &K,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        let key_bytes = key.to_bytes();
        match txn.get(self.db, &key_bytes) {
            Ok(stored) => read(self.unseal(&key_bytes, stored)?).map(Some),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(map_err(format!("read {} key {key:?}", self.name), e)),
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, txn: &impl Transaction, key: &K) -> Result<bool> {
        match txn.get(self.db, &key.to_bytes()) {
            Ok(_) => Ok(true),
            Err(lmdb::Error::NotFound) => Ok(false),
            Err(e) => Err(map_err(format!("read {} key {key:?}", self.name), e)),
        }
    }

    /// Stores `value` at `key`, replacing any value there.
    pub fn put(&self, txn: &mut RwTransaction<'_>, key: &K, value: &V) -> Result<()> {
        let key_bytes = key.to_bytes();
        txn.put(
            self.db,
            &key_bytes,
            &seal(&key_bytes, &value.to_bytes()),
            WriteFlags::empty(),
        )
        .map_err(|e| map_err(format!("write {} key {key:?}", self.name), e))
    }

    /// Removes `key`; returns whether it was there.
    pub fn delete(&self, txn: &mut RwTransaction<'_>, key: &K) -> Result<bool> {
        match txn.del(self.db, &key.to_bytes(), None) {
            Ok(()) => Ok(true),
            Err(lmdb::Error::NotFound) => Ok(false),
            Err(e) => Err(map_err(format!("delete {} key {key:?}", self.name), e)),
        }
    }

    /// Removes `key`, which must be there: an index entry its record says
    /// exists. A missing one, or one whose checksum fails, is
    /// [`Corrupt`](crate::ErrorKind::Corrupt) naming the table and key (the
    /// index and its record disagree, or the file is damaged): damage is
    /// reported, never removed unseen.
    pub fn delete_existing(&self, txn: &mut RwTransaction<'_>, key: &K) -> Result<()> {
        let key_bytes = key.to_bytes();
        match txn.get(self.db, &key_bytes) {
            Ok(stored) => {
                self.unseal(&key_bytes, stored)?;
            }
            Err(lmdb::Error::NotFound) => {
                return Err(self.corrupt(format!("key {key:?} is missing (its record lists it)")));
            }
            Err(e) => return Err(map_err(format!("read {} key {key:?}", self.name), e)),
        }
        txn.del(self.db, &key_bytes, None)
            .map_err(|e| map_err(format!("delete {} key {key:?}", self.name), e))
    }

    /// Up to `limit` entries whose encoded key starts with `prefix`, in key
    /// order, beginning at the first key `>= start` (which must itself start
    /// with `prefix`, or be the prefix).
    pub fn range(&self, txn: &impl Transaction, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan(txn, prefix, start, |key, value| {
            out.push((key, value));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Calls `visit` on each entry whose key starts with `prefix`, from the
    /// first key `>= start` (an empty `start`: the first key), until it
    /// returns `false`. Every entry visited has its checksum checked and
    /// its key and value decoded first.
    pub fn scan(
        &self,
        txn: &impl Transaction,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(K, V) -> Result<bool>,
    ) -> Result<()> {
        let context = || format!("scan {}", self.name);
        let mut cursor = txn.open_ro_cursor(self.db).map_err(|e| map_err(context(), e))?;
        // LMDB refuses to seek to an empty key.
        let entries = match start.is_empty() {
            true => cursor.iter_start(),
            false => cursor.iter_from(start),
        };
        for entry in entries {
            let (key_bytes, stored) = entry.map_err(|e| map_err(context(), e))?;
            if !key_bytes.starts_with(prefix) {
                break;
            }
            let value = self.value_at(key_bytes, stored)?;
            let key = K::decode(key_bytes).map_err(|e| e.context(self.at_key(key_bytes)))?;
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }

    /// The decoded value in `stored` at `key_bytes`: its checksum checked
    /// first, so damage in either the key or the value is caught.
    fn value_at(&self, key_bytes: &[u8], stored: &[u8]) -> Result<V> {
        V::decode(self.unseal(key_bytes, stored)?).map_err(|e| e.context(format!("{} value", self.at_key(key_bytes))))
    }

    /// The value inside a stored one, or Corrupt if its checksum fails.
    fn unseal<'v>(&self, key_bytes: &[u8], stored: &'v [u8]) -> Result<&'v [u8]> {
        unseal(key_bytes, stored).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: entry fails its checksum (the file is damaged)",
                self.at_key(key_bytes)
            ))
        })
    }

    /// `<file>: <table> key <key>`, the key decoded if it decodes.
    fn at_key(&self, key_bytes: &[u8]) -> String {
        match K::decode(key_bytes) {
            Ok(key) => format!("{}: {} key {key:?}", self.file.display(), self.name),
            Err(_) => format!("{}: {} key {key_bytes:02x?}", self.file.display(), self.name),
        }
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        Error::corrupt(format!("{}: {} {what}", self.file.display(), self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_encode_in_order() {
        let mut values = [0u64, 1, 255, 256, u64::MAX / 2, u64::MAX];
        values.sort();
        let encoded: Vec<Vec<u8>> = values.iter().map(Codec::to_bytes).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for v in values {
            assert_eq!(u64::decode(&v.to_bytes()).unwrap(), v);
        }
        assert_eq!(u64::decode(&[1, 2, 3]).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }

    #[test]
    fn decoder_reads_fields_and_rejects_leftovers() {
        let mut bytes = 7u64.to_bytes();
        bytes.extend_from_slice(&[1, 2]);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u64().unwrap(), 7);
        assert_eq!(d.u8().unwrap(), 1);
        let err = d.finish(()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.message().contains("1 trailing bytes"), "{err}");
        let mut short = Decoder::new(&[1, 2]);
        assert!(short.u32().unwrap_err().message().contains("truncated"));
        let mut key = Decoder::new(b"name\0rest");
        assert_eq!(key.until(0).unwrap(), b"name");
        assert_eq!(key.rest(), b"rest");
        assert!(Decoder::new(b"no separator").until(0).is_err());
        assert!(Decoder::new(&[2]).flag().is_err());
    }

    #[test]
    fn sealed_values_check_their_key_and_bytes() {
        let sealed = seal(b"key", b"value");
        assert_eq!(unseal(b"key", &sealed), Some(&b"value"[..]));
        assert_eq!(unseal(b"other", &sealed), None, "a value under the wrong key");
        for at in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[at] ^= 0x10;
            assert_eq!(unseal(b"key", &flipped), None, "byte {at} flipped");
        }
        assert_eq!(unseal(b"key", &sealed[..3]), None);
        assert_eq!(unseal(b"", &seal(b"", b"")), Some(&b""[..]));
    }

    #[test]
    fn json_round_trips_and_garbage_does_not_decode() {
        let value = serde_json::json!({"a": [1, "two", null]});
        assert_eq!(serde_json::Value::decode(&value.to_bytes()).unwrap(), value);
        assert!(serde_json::Value::decode(b"{not json").is_err());
        assert!(String::decode(&[0xff, 0xfe]).is_err());
    }
}

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
    /// Reads a value back; `None` if the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Option<Self>;

    /// The encoding as a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Reads fixed-width fields off the front of a byte slice, for composite
/// codecs. Every method returns `None` when the bytes run short.
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Starts reading `bytes`.
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { rest: bytes }
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next big-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// The next big-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(head)
    }

    /// A length-prefixed byte string written by [`encode_len_prefixed`].
    pub fn len_prefixed(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.bytes(len as usize)
    }

    /// A length-prefixed UTF-8 string written by [`encode_len_prefixed`].
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.len_prefixed()?).ok()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// `value` if every byte was consumed, else `None` (trailing garbage).
    pub fn finish<T>(self, value: T) -> Option<T> {
        self.rest.is_empty().then_some(value)
    }
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
    fn decode(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(bytes.to_vec())
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Option<()> {
        bytes.is_empty().then_some(())
    }
}

impl Codec for serde_json::Value {
    fn encode(&self, out: &mut Vec<u8>) {
        // Writing a Value into a Vec cannot fail.
        serde_json::to_writer(out, self).expect("serialize JSON value");
    }
    fn decode(bytes: &[u8]) -> Option<serde_json::Value> {
        serde_json::from_slice(bytes).ok()
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
            Ok(stored) => self.decode_value(key, self.unseal(key, &key_bytes, stored)?).map(Some),
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
            Ok(stored) => read(self.unseal(key, &key_bytes, stored)?).map(Some),
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

    /// Up to `limit` entries whose encoded key starts with `prefix`, in key
    /// order, beginning at the first key `>= start` (which must itself start
    /// with `prefix`, or be the prefix).
    pub fn range(&self, txn: &impl Transaction, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        self.scan(txn, prefix, start, |key, value| {
            out.push((key, value));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Calls `visit` on each entry whose key starts with `prefix`, from the
    /// first key `>= start`, until it returns `false`.
    pub fn scan(
        &self,
        txn: &impl Transaction,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(K, V) -> Result<bool>,
    ) -> Result<()> {
        let context = || format!("scan {}", self.name);
        let mut cursor = txn.open_ro_cursor(self.db).map_err(|e| map_err(context(), e))?;
        for entry in cursor.iter_from(start) {
            let (key_bytes, value_bytes) = entry.map_err(|e| map_err(context(), e))?;
            if !key_bytes.starts_with(prefix) {
                break;
            }
            let key = K::decode(key_bytes).ok_or_else(|| self.corrupt_key(key_bytes))?;
            let value = self.decode_value(&key, self.unseal(&key, key_bytes, value_bytes)?)?;
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }

    /// The value inside a stored one, or Corrupt if its checksum fails.
    fn unseal<'v>(&self, key: &K, key_bytes: &[u8], stored: &'v [u8]) -> Result<&'v [u8]> {
        unseal(key_bytes, stored).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: {} value at key {key:?} fails its checksum (the file is damaged)",
                self.file.display(),
                self.name
            ))
        })
    }

    fn decode_value(&self, key: &K, bytes: &[u8]) -> Result<V> {
        V::decode(bytes).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: {} value at key {key:?} is malformed",
                self.file.display(),
                self.name
            ))
        })
    }

    fn corrupt_key(&self, bytes: &[u8]) -> Error {
        Error::corrupt(format!(
            "{}: {} key {bytes:02x?} is malformed",
            self.file.display(),
            self.name
        ))
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
            assert_eq!(u64::decode(&v.to_bytes()), Some(v));
        }
        assert_eq!(u64::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn decoder_reads_fields_and_rejects_leftovers() {
        let mut bytes = 7u64.to_bytes();
        bytes.extend_from_slice(&[1, 2]);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u64(), Some(7));
        assert_eq!(d.u8(), Some(1));
        assert_eq!(d.finish(()), None);
        let mut short = Decoder::new(&[1, 2]);
        assert_eq!(short.u32(), None);
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
        assert_eq!(serde_json::Value::decode(&value.to_bytes()), Some(value));
        assert_eq!(serde_json::Value::decode(b"{not json"), None);
        assert_eq!(String::decode(&[0xff, 0xfe]), None);
    }
}

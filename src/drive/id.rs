//! [`ItemId`]: the 128-bit identity of a drive item.

use std::fmt;
use std::str::FromStr;

use crate::lmdb::{Codec, Decoder};
use crate::{Error, Result};

/// A drive item's identity: 128 random bits, written as 32 lowercase hex
/// characters. [`ItemId::ROOT`] (all zeros) is the virtual root that holds the
/// top level.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ItemId([u8; 16]);

impl ItemId {
    /// The virtual root: the parent of every top-level item.
    pub const ROOT: ItemId = ItemId([0; 16]);

    /// A fresh random id (from the operating system's random source).
    pub fn random() -> Result<ItemId> {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: writes at most the remaining length into `bytes`.
            let got = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
            if got < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("read random bytes for an item id", err));
            }
            filled += got as usize;
        }
        if bytes == [0; 16] {
            return ItemId::random(); // never hand out the root's id
        }
        Ok(ItemId(bytes))
    }

    /// The id with these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> ItemId {
        ItemId(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Whether this is the virtual root.
    pub fn is_root(&self) -> bool {
        *self == ItemId::ROOT
    }

    /// Parses 32 hex characters (either case).
    pub fn parse(text: &str) -> Result<ItemId> {
        Self::parse_hex(text.as_bytes())
            .ok_or_else(|| Error::invalid_argument(format!("item id {text:?} is not 32 hex characters")))
    }

    /// The 32 hex characters, upper or lower case, as an id.
    fn parse_hex(text: &[u8]) -> Option<ItemId> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(ItemId(bytes))
    }

    /// The id as 32 lowercase hex characters, without allocating (ids are
    /// printed on every item a binding returns, so this is a hot path).
    pub fn to_hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 15)];
        }
        out
    }
}

/// One hex digit's value, either case.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // Hex digits are ASCII, so this never falls back.
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({self})")
    }
}

impl FromStr for ItemId {
    type Err = Error;
    fn from_str(text: &str) -> Result<ItemId> {
        ItemId::parse(text)
    }
}

impl Codec for ItemId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Result<ItemId> {
        let mut d = Decoder::new(bytes);
        let id = ItemId(d.array()?);
        d.finish(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_lowercase_hex_and_parse_back() {
        let id = ItemId::random().unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(ItemId::parse(&text).unwrap(), id);
        assert_eq!(ItemId::parse(&text.to_uppercase()).unwrap(), id);
        assert_eq!(ItemId::ROOT.to_string(), "0".repeat(32));
        assert_ne!(ItemId::random().unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_invalid_arguments() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"0".repeat(31),
            &"0".repeat(33),
            "é0000000000000000000000000000000",
        ] {
            assert_eq!(
                ItemId::parse(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}

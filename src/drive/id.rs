//! [`ItemId`]: the 128-bit identity of a drive item.

use std::fmt;
use std::str::FromStr;

use crate::lmdb::Codec;
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
        let bad = || Error::invalid_argument(format!("item id {text:?} is not 32 hex characters"));
        if text.len() != 32 {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            bytes[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(ItemId(bytes))
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
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
    fn decode(bytes: &[u8]) -> Option<ItemId> {
        Some(ItemId(bytes.try_into().ok()?))
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

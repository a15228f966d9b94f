//! A tiny binary codec for stored records: fixed-width big-endian integers
//! and length-prefixed strings, read back with bounds checks so a malformed
//! value is a [`Corrupt`](crate::ErrorKind::Corrupt) error, never a panic.

use crate::{Error, Result};

/// Appends fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Encoder {
        Encoder {
            bytes: Vec::with_capacity(128),
        }
    }

    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.u32(value.len() as u32);
        self.bytes.extend_from_slice(value.as_bytes());
        self
    }

    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(text) => self.u8(1).str(text),
            None => self.u8(0),
        }
    }

    /// Raw bytes with no length prefix (for the tail of index keys).
    pub(crate) fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(value);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Reads fields back in the order they were written.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`; `what` names the record in error messages.
    pub(crate) fn new(bytes: &'a [u8], what: &'a str) -> Decoder<'a> {
        Decoder { bytes, what }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(Error::corrupt(format!("{}: truncated record", self.what)));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    pub(crate) fn str(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::corrupt(format!("{}: a text field is not UTF-8", self.what)))
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            flag => Err(Error::corrupt(format!("{}: bad option flag {flag}", self.what))),
        }
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Fails unless every byte was read (trailing bytes mean a format mix-up).
    pub(crate) fn end(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "{}: {} trailing bytes",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn fields_round_trip() {
        let bytes = Encoder::new()
            .u8(7)
            .u32(9)
            .u64(u64::MAX)
            .str("héllo")
            .opt_str(None)
            .opt_str(Some("x"))
            .finish();
        let mut decoder = Decoder::new(&bytes, "test");
        assert_eq!(decoder.u8().unwrap(), 7);
        assert_eq!(decoder.u32().unwrap(), 9);
        assert_eq!(decoder.u64().unwrap(), u64::MAX);
        assert_eq!(decoder.str().unwrap(), "héllo");
        assert_eq!(decoder.opt_str().unwrap(), None);
        assert_eq!(decoder.opt_str().unwrap().as_deref(), Some("x"));
        decoder.end().unwrap();
    }

    #[test]
    fn truncated_and_malformed_input_is_corrupt() {
        let bytes = Encoder::new().str("hello").finish();
        for cut in 0..bytes.len() {
            let err = Decoder::new(&bytes[..cut], "test").str().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
        }
        let not_utf8 = Encoder::new().u32(2).raw(&[0xff, 0xfe]).finish();
        assert_eq!(
            Decoder::new(&not_utf8, "t").str().unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let trailing = [1u8, 2];
        let mut decoder = Decoder::new(&trailing, "t");
        decoder.u8().unwrap();
        assert_eq!(decoder.end().unwrap_err().kind(), ErrorKind::Corrupt);
    }
}

//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from
//! the docs, may change at any time). Each runs every decoder of one kind
//! over arbitrary bytes and checks what must hold of any input: no panic,
//! and whatever decodes encodes to bytes that decode to the same value.

use crate::lmdb::{seal, unseal, Codec};

/// Runs every value and key decoder keel has for LMDB bytes over `bytes`:
/// the seal, and every drive and every operations-and-jobs key and value
/// codec (round trip checked).
pub fn decode_everything(bytes: &[u8]) {
    if let Some(inner) = unseal(b"key", bytes) {
        assert_eq!(seal(b"key", inner), bytes, "a sealed value re-seals to itself");
    }
    #[cfg(feature = "drive")]
    crate::drive::codecs::round_trip_all(bytes);
    round_trip::<u64>(bytes);
    round_trip::<String>(bytes);
    round_trip::<()>(bytes);
    let _ = serde_json::Value::decode(bytes);
    #[cfg(feature = "ops")]
    crate::ops::store::lmdb::tables::round_trip_all(bytes);
}

/// Decodes `bytes` as `T`; if it decodes, its encoding decodes to it again.
pub fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(value) = T::decode(bytes) {
        let again = T::decode(&value.to_bytes()).ok();
        assert_eq!(again.as_ref(), Some(&value), "{value:?} does not survive encoding");
    }
}

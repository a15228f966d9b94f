//! Every drive codec over one byte string, for the decoder fuzz target
//! (see `crate::lmdb::fuzzing`).

use super::data::{DataRecord, Version};
use super::id::ItemId;
use super::item::Item;
use super::schema::SchemaRecord;
use super::tables::{ChildKey, DataKey, TypeKey};
use crate::lmdb::fuzzing::round_trip;

/// Decodes `bytes` with every drive key and value codec, checking that
/// whatever decodes survives encoding.
pub(crate) fn round_trip_all(bytes: &[u8]) {
    round_trip::<Item>(bytes);
    round_trip::<ItemId>(bytes);
    round_trip::<Version>(bytes);
    round_trip::<DataRecord>(bytes);
    round_trip::<SchemaRecord>(bytes);
    round_trip::<ChildKey>(bytes);
    round_trip::<TypeKey>(bytes);
    round_trip::<DataKey>(bytes);
}

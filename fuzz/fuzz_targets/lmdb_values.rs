//! Every LMDB value and key decoder over arbitrary bytes: no panic, and what
//! decodes survives encoding (`keel::lmdb::fuzzing::decode_everything`).
#![no_main]

use keel_core as keel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel::lmdb::fuzzing::decode_everything(data);
});

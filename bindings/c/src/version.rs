//! The library's version, as a string and as header macros.

use std::ffi::c_char;

use crate::ffi;

/// The major version of the header; a test checks these against Cargo.toml.
pub const KEEL_VERSION_MAJOR: u32 = 0;
/// The minor version of the header.
pub const KEEL_VERSION_MINOR: u32 = 1;
/// The patch version of the header.
pub const KEEL_VERSION_PATCH: u32 = 0;

/// The version of the linked library (`"0.1.0"`), to compare with the
/// KEEL_VERSION_* macros the program was compiled against. Static: never free it.
#[no_mangle]
pub extern "C" fn keel_version() -> *const c_char {
    ffi::call_value(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

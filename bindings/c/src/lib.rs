//! The C ABI of keel (`libkeel`, `include/keel.h`).
//!
//! A thin layer: each entry point converts its arguments, calls the core and
//! converts the result. One module per exported concept (`queue.rs`,
//! `worker.rs`, ...); the plumbing lives in `ffi.rs` (the boundary and the
//! pointer checks), `callback.rs` (calling C back), `buf.rs` and `status.rs`.
//!
//! # Writing an export
//!
//! Every export's body is exactly one call of the boundary in `ffi`:
//! `ffi::call` for a fallible call (returns a `keel_status`),
//! `ffi::call_value` for one that returns a plain value (a getter, a
//! `_default`), `ffi::call_void` for a `_free`. The boundary catches
//! panics and records the thread's last error. Inside it, one `unsafe`
//! block with one SAFETY line, and every pointer from C read through an
//! `ffi` helper (`handle`, `utf8`, `slice`, `out_value`, `put_optional`,
//! `take_handle`, ...), which turn NULL, impossible lengths and invalid
//! UTF-8 into `KEEL_INVALID_ARGUMENT`:
//!
//! ```ignore
//! /// Doc comment: becomes the header's documentation.
//! #[no_mangle]
//! pub unsafe extern "C" fn keel_thing_do(thing: *const keel_thing, name: *const c_char, name_len: usize) -> keel_status {
//!     // SAFETY: the caller keeps keel.h's contract for these arguments.
//!     ffi::call(|| unsafe {
//!         let thing = ffi::handle(thing, "thing")?;
//!         let name = ffi::utf8(name, name_len, "name")?;
//!         thing.inner.do_it(name)
//!     })
//! }
//! ```
//!
//! `tests/boundary.rs` fails when an export's body is anything else, or
//! when the exports and `include/keel.h` disagree (run `scripts/header`).

#![allow(non_camel_case_types)]
// Every `unsafe` block says why it is sound (for an export: the header's
// contract), and every unsafe operation sits in one.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Every exported function checks its pointers through `ffi`; the unsafety is
// in what C hands us, which the header documents per function.
#![allow(clippy::missing_safety_doc)]

mod buf;
mod callback;
mod drive;
mod ffi;
mod journal;
mod locks;
mod log_callback;
mod operations;
mod pool;
mod queue;
mod stats;
mod status;
mod version;
mod worker;

pub use buf::*;
pub use drive::*;
pub use journal::*;
pub use locks::*;
pub use log_callback::*;
pub use operations::*;
pub use pool::*;
pub use queue::*;
pub use stats::*;
pub use status::*;
pub use version::*;
pub use worker::*;

//! The C ABI of keel (`libkeel`, `include/keel.h`).
//!
//! A thin layer: each entry point converts its arguments, calls the core and
//! converts the result. All of them go through [`ffi::call`], which catches
//! panics, turns NULL and invalid UTF-8 into `KEEL_INVALID_ARGUMENT` and
//! records the thread's last error message.

#![allow(non_camel_case_types)]
// Every exported function checks its pointers through `ffi`; the unsafety is
// in what C hands us, which the header documents per function.
#![allow(clippy::missing_safety_doc)]

mod buf;
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

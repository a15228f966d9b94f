//! The C ABI with arbitrary lengths: every `(ptr, len)` is either inside
//! the input (real bytes, often not UTF-8 or JSON) or impossible (above
//! `isize::MAX`, or a count whose byte size overflows). What must hold: no
//! panic (`KEEL_PANIC`) and no crash; an impossible length is
//! `KEEL_INVALID_ARGUMENT` before any slice is made.
//!
//! Input: a sequence of `[op: u8][len selector: u8][bytes...]`; the bytes
//! after the two header bytes are the call's argument.
#![no_main]

use std::ffi::c_char;
use std::sync::OnceLock;

use keel_c::*;
use libfuzzer_sys::fuzz_target;

struct Handles {
    drive: *mut keel_drive,
    locks: *mut keel_locks,
}

// SAFETY: keel's handles are thread-safe (keel.h says so); the fuzzer uses
// one thread anyway.
unsafe impl Send for Handles {}
unsafe impl Sync for Handles {}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keel-fuzz-c-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drive.lmdb").to_string_lossy().into_owned();
        let mut drive = std::ptr::null_mut();
        let mut locks = std::ptr::null_mut();
        // SAFETY: valid (ptr, len) pairs and out-pointers.
        unsafe {
            assert_eq!(
                // Default options (scripts/fuzz keeps scratch files on a tmpfs).
                keel_drive_open(path.as_ptr().cast(), path.len(), std::ptr::null(), &mut drive),
                keel_status::KEEL_OK
            );
            assert_eq!(keel_locks_new(std::ptr::null(), 0, &mut locks), keel_status::KEEL_OK);
        }
        Handles { drive, locks }
    })
}

/// The length to pass for `arg`: its own, a prefix of it, or impossible.
fn length(selector: u8, arg: &[u8]) -> (usize, bool) {
    match selector % 8 {
        0 => (isize::MAX as usize + 1 + usize::from(selector), true),
        1 => (usize::MAX - usize::from(selector >> 3), true),
        2 => (0, false),
        _ => (usize::from(selector).min(arg.len()), false),
    }
}

fn check(status: keel_status, impossible: bool, what: &str) {
    assert_ne!(status, keel_status::KEEL_PANIC, "{what} panicked");
    if impossible {
        assert_eq!(
            status,
            keel_status::KEEL_INVALID_ARGUMENT,
            "{what} took an impossible length"
        );
    }
}

fn call(op: u8, selector: u8, arg: &[u8]) {
    let h = handles();
    let (len, impossible) = length(selector, arg);
    let ptr = arg.as_ptr();
    let text = ptr.cast::<c_char>();
    let mut buf = keel_buf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    // SAFETY: `ptr` points at `arg`, and `len` is within it unless it is
    // impossible, which keel must refuse before reading anything.
    let status = unsafe {
        match op % 11 {
            0 => keel_drive_resolve(h.drive, text, len, &mut buf),
            1 => keel_drive_get(h.drive, ptr, len, std::ptr::null(), 0, &mut buf),
            2 => keel_drive_create(h.drive, std::ptr::null(), 0, text, len, &mut buf),
            3 => keel_drive_set_data(
                h.drive,
                ptr,
                16.min(arg.len()),
                text,
                len,
                std::ptr::null(),
                0,
                &mut buf,
            ),
            4 => keel_drive_get(h.drive, ptr, 16.min(arg.len()), text, len, &mut buf),
            5 => {
                let mut guard = std::ptr::null_mut();
                let status = keel_locks_lock(h.locks, ptr, len, 0, 0, &mut guard);
                keel_lock_guard_release(guard);
                status
            }
            6 => {
                // A count of keys: its byte size overflows when impossible.
                let keys = [keel_bytes { ptr, len: arg.len() }];
                let count = if impossible { len / 2 + 1 } else { keys.len().min(len) };
                let mut guard = std::ptr::null_mut();
                let status = keel_locks_lock_many(h.locks, keys.as_ptr(), count, 0, 0, &mut guard);
                keel_lock_guard_release(guard);
                status
            }
            7 => {
                let item = br#"{"name": "x"}"#;
                keel_drive_create_at(h.drive, text, len, item.as_ptr().cast(), item.len(), &mut buf)
            }
            8 => keel_drive_make_path(h.drive, text, len, &mut buf),
            9 => keel_drive_rename(h.drive, ptr, 16.min(arg.len()), text, len, &mut buf),
            // Reads `<root>/.keel` of whatever path the bytes name; writes nothing.
            _ => keel_journal_inspect(text, len, &mut buf),
        }
    };
    check(status, impossible, &format!("op {}", op % 11));
    // SAFETY: `buf` is keel's (or empty).
    unsafe { keel_buf_free(&mut buf) };
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let [op, selector, tail @ ..] = rest {
        let take = tail.iter().position(|&b| b == 0xff).unwrap_or(tail.len());
        call(*op, *selector, &tail[..take]);
        rest = tail.get(take + 1..).unwrap_or_default();
    }
});

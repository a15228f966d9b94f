//! The one error type of keel, shared by every part and every surface.
//!
//! Every failure carries an [`ErrorKind`] with a stable number (the C status
//! code and the Python exception class are derived from it) and a message that
//! says what failed and where: the path, the key, the item.

use std::fmt;
use std::io;
use std::sync::Arc;

/// A `Result` whose error is [`keel::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
///
/// The numbers are part of the stable ABI: a released kind never changes its
/// number, and new kinds are only ever appended. `0` is reserved for success
/// at the C surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument was malformed: a NULL pointer, invalid UTF-8, a bad name
    /// or path (`..`, absolute, NUL bytes), an out-of-range option.
    InvalidArgument = 1,
    /// The thing asked for does not exist.
    NotFound = 2,
    /// The thing to create exists already.
    AlreadyExists = 3,
    /// A version, state or token did not match what the call expected.
    Conflict = 4,
    /// The resource is held by someone else and the call would not wait.
    Busy = 5,
    /// A wait or a task ran past its deadline.
    Timeout = 6,
    /// The work was cancelled before it finished.
    Cancelled = 7,
    /// The caller lacks the permission the call needs.
    PermissionDenied = 8,
    /// Stored data is malformed, truncated or not what it claims to be.
    Corrupt = 9,
    /// The disk or the storage map is full.
    StorageFull = 10,
    /// Any other operating-system I/O failure.
    Io = 11,
    /// The call would wait forever on something the calling thread holds.
    WouldDeadlock = 12,
    /// The object was closed or shut down.
    Closed = 13,
    /// Code run by keel panicked; the panic was caught at the boundary.
    Panic = 14,
    /// Data written by a newer (or unknown) format than this build reads.
    Unsupported = 15,
}

impl ErrorKind {
    /// Every kind, in the order of its number.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::Busy,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::PermissionDenied,
        ErrorKind::Corrupt,
        ErrorKind::StorageFull,
        ErrorKind::Io,
        ErrorKind::WouldDeadlock,
        ErrorKind::Closed,
        ErrorKind::Panic,
        ErrorKind::Unsupported,
    ];

    /// The stable number of this kind.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind with this stable number, if there is one.
    pub fn from_code(code: u32) -> Option<ErrorKind> {
        Self::ALL.iter().copied().find(|kind| kind.code() == code)
    }

    /// The kind's name as the surfaces spell it (`"NotFound"`, the Python
    /// class name).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Busy => "Busy",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::Corrupt => "Corrupt",
            ErrorKind::StorageFull => "StorageFull",
            ErrorKind::Io => "IoError",
            ErrorKind::WouldDeadlock => "WouldDeadlock",
            ErrorKind::Closed => "Closed",
            ErrorKind::Panic => "Panic",
            ErrorKind::Unsupported => "Unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A keel failure: a kind, a message naming what and where, and the
/// underlying cause when there is one.
///
/// Cloning is cheap (the cause is shared), so one failure can be handed to
/// several waiters, as the pool's singleflight mode does.
///
/// `Display` shows the message alone and [`source`](std::error::Error::source)
/// gives the cause, so an error reporter that prints the chain prints each
/// part once. [`report`](Error::report) is the whole chain on one line
/// (`"open /srv/kb/x: No such file or directory (os error 2)"`): what the C
/// and Python surfaces, logs and messages that embed an error show.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// An error and its causes on one line, each once: see [`Error::report`].
pub struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(next) = cause {
            write!(f, ": {next}")?;
            cause = next.source();
        }
        Ok(())
    }
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    /// The underlying cause attached with [`with_source`](Error::with_source),
    /// as itself (so it can be downcast to its concrete type).
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by each cause (`"message: cause: its cause"`),
    /// for showing an error where no reporter walks the chain: the C and
    /// Python surfaces, log lines, a message that embeds this error.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// Prefixes the message with where it happened (`"journal /srv/kb: ..."`).
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An I/O failure of `action` (a phrase naming the operation and its
    /// path), classified by the OS error: missing files are
    /// [`ErrorKind::NotFound`], a full disk [`ErrorKind::StorageFull`], and so on.
    pub fn io(action: impl fmt::Display, err: io::Error) -> Error {
        let kind = io_error_kind(&err);
        Error::new(kind, action.to_string()).with_source(err)
    }

    /// Turns a caught panic payload into an error of kind [`ErrorKind::Panic`].
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Error {
        Error::new(ErrorKind::Panic, format!("panicked: {}", panic_message(&*payload)))
    }
}

macro_rules! kind_constructors {
    ($($fn_name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
                pub fn $fn_name(message: impl Into<String>) -> Error {
                    Error::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

kind_constructors! {
    invalid_argument => InvalidArgument,
    not_found => NotFound,
    already_exists => AlreadyExists,
    conflict => Conflict,
    busy => Busy,
    timeout => Timeout,
    cancelled => Cancelled,
    permission_denied => PermissionDenied,
    corrupt => Corrupt,
    storage_full => StorageFull,
    would_deadlock => WouldDeadlock,
    closed => Closed,
    unsupported => Unsupported,
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn io_error_kind(err: &io::Error) -> ErrorKind {
    // ENOSPC and EDQUOT: the disk or the quota is full.
    if matches!(err.raw_os_error(), Some(28) | Some(122)) {
        return ErrorKind::StorageFull;
    }
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        io::ErrorKind::WouldBlock => ErrorKind::Busy,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::Corrupt,
        _ => ErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        for (index, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.code() as usize, index + 1, "{kind} moved");
            assert_eq!(ErrorKind::from_code(kind.code()), Some(*kind));
        }
        assert_eq!(ErrorKind::from_code(0), None);
        assert_eq!(ErrorKind::from_code(999), None);
    }

    #[test]
    fn io_errors_are_classified_by_os_error() {
        let full = Error::io("write /x", io::Error::from_raw_os_error(28));
        assert_eq!(full.kind(), ErrorKind::StorageFull);
        let missing = Error::io("open /x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert_eq!(missing.to_string(), "open /x", "the cause is the source, not repeated");
        let reported = missing.report().to_string();
        assert!(
            reported.starts_with("open /x: ") && reported.len() > "open /x: ".len(),
            "{reported}"
        );
        assert!(std::error::Error::source(&missing).is_some());
        let cause = missing.cause().and_then(|cause| cause.downcast_ref::<io::Error>());
        assert_eq!(cause.map(io::Error::kind), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn panic_payloads_become_messages() {
        let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let err = Error::from_panic(payload);
        assert_eq!(err.kind(), ErrorKind::Panic);
        assert!(err.message().contains("boom 7"));
    }

    #[test]
    fn context_prefixes_the_message() {
        let err = Error::not_found("no such key").context("locks");
        assert_eq!(err.to_string(), "locks: no such key");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}

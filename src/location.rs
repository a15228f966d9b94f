//! Where operations and jobs live: a file path (LMDB, the embedded
//! default) or a database URL (`postgresql://`, with the `postgres`
//! feature). A string with a URL scheme opens that store; an unknown scheme
//! is refused rather than taken for a file name — `postgresql://db/app`
//! must never quietly become a local folder named `postgresql:`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ops::{JobPolicy, LmdbStore, Operations, Queue, SystemClock};
use crate::{Error, Result};

/// A parsed store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An LMDB file.
    Path(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Location {
    /// `text` as a location: `scheme://...` names a store by its scheme
    /// (only `postgres`/`postgresql` are known), anything else is a path.
    pub fn parse(text: &str) -> Result<Location> {
        match scheme(text) {
            None => Ok(Location::Path(PathBuf::from(text))),
            Some(scheme) if scheme.eq_ignore_ascii_case("postgresql") || scheme.eq_ignore_ascii_case("postgres") => {
                Ok(Location::Postgres(text.to_owned()))
            }
            Some(scheme) => Err(Error::invalid_argument(format!(
                "store location with unknown scheme {scheme:?}: use a file path or a postgresql:// URL"
            ))),
        }
    }

    /// `path` as a location (a path that is not UTF-8 is a path).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Location> {
        let path = path.as_ref();
        match path.to_str() {
            Some(text) => Location::parse(text),
            None => Ok(Location::Path(path.to_owned())),
        }
    }
}

/// The scheme of `scheme://rest`, if `text` has that form.
fn scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(not(feature = "postgres"))]
fn no_postgres(url: &str) -> Error {
    let _ = url;
    Error::unsupported("this build of keel has no PostgreSQL store (cargo feature `postgres`)")
}

impl Queue {
    /// A queue at `location` — an LMDB file path or a `postgresql://` URL —
    /// with the system clock (the database's on PostgreSQL) and `policy`.
    pub fn open_at(location: &Location, policy: JobPolicy) -> Result<Queue> {
        match location {
            Location::Path(path) => Ok(Queue::with_parts(
                Arc::new(LmdbStore::open(path)?),
                Arc::new(SystemClock),
                policy,
            )),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => Ok(crate::ops::PgStore::open(url)?.queue(Arc::new(SystemClock), policy)),
            #[cfg(not(feature = "postgres"))]
            Location::Postgres(url) => Err(no_postgres(url)),
        }
    }
}

impl Operations {
    /// Operations at `location` — an LMDB file path or a `postgresql://` URL.
    pub fn open_at(location: &Location) -> Result<Operations> {
        match location {
            Location::Path(path) => Operations::open(path),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => Operations::postgres(url),
            #[cfg(not(feature = "postgres"))]
            Location::Postgres(url) => Err(no_postgres(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn urls_open_their_store_paths_stay_paths_and_unknown_schemes_are_refused() {
        assert_eq!(
            Location::parse("postgresql://db/app").unwrap(),
            Location::Postgres("postgresql://db/app".into())
        );
        assert!(matches!(
            Location::parse("POSTGRES://db").unwrap(),
            Location::Postgres(_)
        ));
        for path in ["jobs.lmdb", "/var/lib/keel/jobs", "C:\\jobs", "data:v1/jobs", "./a://b"] {
            assert_eq!(Location::parse(path).unwrap(), Location::Path(path.into()), "{path}");
        }
        for bad in ["mysql://db/app", "redis://cache", "file://x"] {
            assert_eq!(
                Location::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}

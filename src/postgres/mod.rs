//! PostgreSQL plumbing shared by every keel part that can live in a
//! database: opening a URL, the connection pool, the keel-owned schema and
//! the mapping of database errors to [`ErrorKind`](crate::ErrorKind)s.
//!
//! It sits beside [`crate::lmdb`] (the LMDB environment) rather than inside
//! `ops`, because the keyed locks use the same pool and schema and are not
//! an ops concept.
//!
//! Connection settings follow libpq: a `postgresql://` URL or a `key=value`
//! string, with what it leaves out taken from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD` and `PGDATABASE`. TLS is not built in: the client connects
//! without it (`sslmode=prefer` falls back to plain, `sslmode=require` is
//! refused) — put the server on a private network or a local socket.
//! Passwords never appear in [`PgDatabase::location`], stats, logs or errors.

use std::str::FromStr;
use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::{Config, NoTls};

use crate::{Error, ErrorKind, Result};

mod announce;
mod conn;
pub mod listen;
pub mod locks;
mod schema;

/// The `postgres` client crate keel is built with: use it for the
/// transactions you hand to [`enqueue_in`](crate::ops::store::postgres::enqueue_in).
pub use ::postgres as client;
pub use announce::Announcer;
pub use conn::{Conn, PgConn, Session};
pub use listen::Listener;
pub use locks::{PgKeyGuard, PgKeyedLocks, PgLocksOptions};
pub use schema::SCHEMA_VERSION;

/// Whose clock the stores read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The database's `now()`: leases hold across hosts whose clocks
    /// disagree. Times the caller passes (run-at, lease ends) are moved by
    /// the difference between its clock and the database's.
    #[default]
    Database,
    /// The caller's clock (the `now` each call passes): for tests that move
    /// a [`ManualClock`](crate::ops::ManualClock).
    Caller,
}

/// How to open a database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema keel's tables live in (created if missing), so several
    /// applications can share a database: 1 to 48 of `a-z`, `0-9`, `_`,
    /// starting with a letter or `_`. Default `keel`.
    pub schema: String,
    /// The most connections the pool keeps open.
    pub pool_size: u32,
    /// How long to wait for a connection (from the pool or the server).
    pub connect_timeout: Duration,
    /// Whose clock the stores read.
    pub time: TimeSource,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: "keel".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            time: TimeSource::Database,
        }
    }
}

/// An open database: a connection pool, keel's schema in it (created or
/// upgraded on open), and a printable location without secrets.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PgDatabase {
    pool: r2d2::Pool<conn::Manager>,
    config: Config,
    schema: String,
    location: String,
    time: TimeSource,
    connect_timeout: Duration,
}

impl PgDatabase {
    /// Connects to `url` and makes sure keel's schema is there, at this
    /// build's version ([`Unsupported`](ErrorKind::Unsupported) when the
    /// database holds a newer one).
    pub fn open(url: &str, options: &PgOptions) -> Result<PgDatabase> {
        check_schema_name(&options.schema)?;
        let mut config = parse_config(url)?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("keel");
        let location = format!("{}?schema={}", describe(&config), options.schema);
        let manager = conn::Manager { config: config.clone() };
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            // A broken connection is noticed when used (`is_closed`); a test
            // query on every checkout would cost a round trip per call.
            .test_on_check_out(false)
            .connection_timeout(options.connect_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        let db = PgDatabase {
            pool,
            config,
            schema: options.schema.clone(),
            location,
            time: options.time,
            connect_timeout: options.connect_timeout,
        };
        let mut conn = db.conn()?;
        schema::ensure(&mut conn.client, &db.schema).map_err(|err| err.context(&db.location))?;
        Ok(db)
    }

    /// A connection from the pool.
    pub fn conn(&self) -> Result<Conn> {
        self.pool.get().map_err(|err| {
            Error::new(
                ErrorKind::Io,
                format!("{}: no database connection: {err}", self.location),
            )
        })
    }

    /// A connection of its own, outside the pool (for `LISTEN` and for locks
    /// pinned to a session).
    pub fn dedicated(&self) -> Result<::postgres::Client> {
        self.config.connect(NoTls).map_err(|err| map_err(&self.location, err))
    }

    /// The schema keel's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whose clock the stores read.
    pub fn time(&self) -> TimeSource {
        self.time
    }

    /// `postgresql://user@host:port/db?schema=name`, without the password.
    pub fn location(&self) -> String {
        self.location.clone()
    }

    /// The `NOTIFY` channel jobs of this schema are announced on.
    pub fn jobs_channel(&self) -> String {
        format!("keel_jobs_{}", self.schema)
    }
}

/// Whether `text` names a PostgreSQL database (`postgres://` or
/// `postgresql://`).
pub fn is_url(text: &str) -> bool {
    let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgresql://") || lower.starts_with("postgres://")
}

fn parse_config(url: &str) -> Result<Config> {
    // The parser's error may quote the text; never echo a password back.
    let mut config = Config::from_str(url).map_err(|_| {
        Error::invalid_argument(format!(
            "{}: not a PostgreSQL connection URL or key=value string",
            redact(url)
        ))
    })?;
    apply_environment(&mut config);
    Ok(config)
}

/// Fills in what the URL leaves out from libpq's environment variables.
fn apply_environment(config: &mut Config) {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if config.get_hosts().is_empty() {
        match var("PGHOST") {
            Some(host) => {
                config.host(&host);
            }
            None => {
                config.host("localhost");
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = var("PGPORT").and_then(|port| port.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = var("PGUSER").or_else(|| var("USER")) {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = var("PGDATABASE") {
            config.dbname(&db);
        }
    }
}

/// `postgresql://user@host:port/db` from a parsed config: no password.
fn describe(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgresql://{at}{host}:{port}/{db}")
}

/// `url` with any password replaced by `***`, for messages about a URL that
/// did not parse.
pub fn redact(url: &str) -> String {
    if let Some(rest) = url.split_once("://").map(|(_, rest)| rest) {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let scheme_len = url.len() - rest.len();
                return format!("{}{}:***{}", &url[..scheme_len], &rest[..colon], &rest[at..]);
            }
        }
        return url.to_owned();
    }
    // key=value form: drop the password's value.
    url.split_whitespace()
        .map(|pair| {
            if pair.to_ascii_lowercase().starts_with("password=") {
                "password=***"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_schema_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 48 {
        return Err(Error::invalid_argument(format!(
            "schema name {name:?}: use 1 to 48 of a-z, 0-9 and '_', starting with a letter or '_'"
        )));
    }
    Ok(())
}

/// A database error as a keel error, with `context` (never a password: the
/// client's errors do not carry the connection settings).
pub fn map_err(context: &str, err: ::postgres::Error) -> Error {
    let kind = match err.code().map(|code| code.code()) {
        Some("40001" | "40P01" | "55P03") => ErrorKind::Busy,
        Some("57014") => ErrorKind::Timeout,
        Some(code) if code.starts_with("23") => ErrorKind::Conflict,
        Some("53100") => ErrorKind::StorageFull,
        Some(code) if code.starts_with("42501") || code.starts_with("28") => ErrorKind::PermissionDenied,
        Some(code) if code.starts_with("22") => ErrorKind::InvalidArgument,
        _ if err.is_closed() => ErrorKind::Closed,
        _ => ErrorKind::Io,
    };
    let detail = match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    };
    Error::new(kind, format!("{context}: {detail}"))
}

/// Whether `err` is worth running the transaction again for (a deadlock or
/// serialization failure the server resolved by aborting us).
pub fn is_retryable(err: &::postgres::Error) -> bool {
    matches!(err.code().map(|code| code.code()), Some("40001" | "40P01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls_and_key_value_strings() {
        assert_eq!(
            redact("postgresql://ann:s3cret@db.example:5433/app?sslmode=disable"),
            "postgresql://ann:***@db.example:5433/app?sslmode=disable"
        );
        assert_eq!(redact("postgres://ann@db/app"), "postgres://ann@db/app");
        assert_eq!(
            redact("host=db password=s3cret user=ann"),
            "host=db password=*** user=ann"
        );
    }

    #[test]
    fn a_parsed_location_has_no_password() {
        let config = parse_config("postgresql://ann:s3cret@db.example:5433/app").unwrap();
        let shown = describe(&config);
        assert_eq!(shown, "postgresql://ann@db.example:5433/app");
        let err = parse_config("postgresql://ann:s3cret@db:notaport/app").unwrap_err();
        assert!(!err.message().contains("s3cret"), "{err}");
    }

    #[test]
    fn urls_are_told_from_paths_and_schema_names_are_checked() {
        assert!(is_url("postgresql://h/db") && is_url("POSTGRES://h/db"));
        assert!(!is_url("/var/lib/jobs.lmdb") && !is_url("postgresql:"));
        check_schema_name("keel_app1").unwrap();
        for bad in ["", "1abc", "Keel", "a-b", "a;drop", &"a".repeat(49)] {
            assert_eq!(check_schema_name(bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
    }
}

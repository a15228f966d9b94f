//! Pooled connections that remember their prepared statements.
//!
//! The `postgres` client prepares a statement given as text on every call —
//! one more round trip than the statement itself. keel's statements are a
//! small fixed set, so each connection keeps the ones it prepared and a call
//! costs just its own round trip. r2d2 stays the pool; only the connection
//! type is keel's (r2d2_postgres's has nowhere to keep the statements).

use std::collections::HashMap;

use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::map_err;
use crate::{Error, Result};

/// A connection borrowed from the pool.
pub type Conn = r2d2::PooledConnection<Manager>;

/// A client and the statements prepared on it.
pub struct PgConn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

pub struct Manager {
    pub(super) config: Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ::postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, ::postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), ::postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

impl PgConn {
    /// Runs `body` in a transaction and commits it, trying again (up to 5
    /// times) when the server aborted it to break a deadlock.
    pub fn transact<T>(&mut self, context: &str, mut body: impl FnMut(&mut Session<'_>) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let txn = self.client.transaction().map_err(|err| map_err(context, err))?;
            let mut session = Session {
                txn,
                statements: &mut self.statements,
                context,
            };
            let outcome = body(&mut session).and_then(|value| {
                session.txn.commit().map_err(|err| map_err(context, err))?;
                Ok(value)
            });
            match outcome {
                Err(err) if err.kind() == crate::ErrorKind::Busy && attempt < 5 => continue,
                other => return other,
            }
        }
    }

    /// Runs one statement outside an explicit transaction (it commits on
    /// its own): the cheapest way to make one atomic change.
    pub fn query(&mut self, context: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = prepare(&mut self.client, &mut self.statements, context, sql)?;
        self.client
            .query(&statement, params)
            .map_err(|err| map_err(context, err))
    }
}

fn prepare(
    client: &mut impl ::postgres::GenericClient,
    statements: &mut HashMap<String, Statement>,
    context: &str,
    sql: &str,
) -> Result<Statement> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql).map_err(|err| map_err(context, err))?;
    statements.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

/// A transaction on a pooled connection, with its statement cache.
pub struct Session<'a> {
    txn: Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    context: &'a str,
}

impl Session<'_> {
    /// The rows `sql` returns.
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = prepare(&mut self.txn, self.statements, self.context, sql)?;
        self.txn
            .query(&statement, params)
            .map_err(|err| map_err(self.context, err))
    }

    /// The one row `sql` returns, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            return Err(Error::corrupt(format!("{}: more than one row", self.context)));
        }
        Ok(rows.pop())
    }

    /// How many rows `sql` changed.
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = prepare(&mut self.txn, self.statements, self.context, sql)?;
        self.txn
            .execute(&statement, params)
            .map_err(|err| map_err(self.context, err))
    }
}

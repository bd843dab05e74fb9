//! PostgreSQL: a cloneable [`Db`] handle that runs the queries, and the
//! [`keeper::DbActor`] that owns the connection behind it.
//!
//! The keeper runs the connection state machine (connecting -> connected ->
//! lost -> connecting), checks what it connected to (PostgreSQL 18 or later,
//! the `steep_repl` extension installed), pings it for the health snapshot,
//! and publishes the pool while it is usable. Queries never cross its
//! mailbox: a caller runs them on the published pool through its `Db`, and
//! a connection error met by a query tells the keeper the connection is
//! lost. Nobody else touches SQL.

pub mod cause;
mod handle;
pub mod keeper;
pub mod projection;
pub mod queries;

pub use handle::Db;
pub use keeper::{DbActor, DbConnected, DbStatus};

use sqlx::postgres::PgConnectOptions;
use std::sync::Arc;
use std::time::Duration;

/// What the keeper needs to know; built by the daemon from its config.
#[derive(Clone)]
pub struct DbSettings {
    /// `postgresql.enabled`: false on a witness, which never connects.
    pub enabled: bool,
    /// This node's node_id (the actor of the audit rows it writes).
    pub node_id: String,
    /// Structured connection options (never a URL), with the
    /// `steep_repl.actor` setting already among the startup options.
    pub connect: PgConnectOptions,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// Bound of one health ping. Short: a pool facing a dead server keeps
    /// retrying until its acquire timeout, and a lost server must be noticed
    /// within a couple of refresh intervals.
    pub ping_timeout: Duration,
    /// `password_command`: run again before every connection attempt (its
    /// password replaces the one in `connect`), so that a rotated password
    /// is picked up when the daemon reconnects. The error names what failed,
    /// never what the command printed.
    pub password_source: Option<PasswordSource>,
}

impl DbSettings {
    /// Where the daemon connects, for messages.
    fn target(&self) -> cause::Target<'_> {
        cause::Target {
            host: &self.host,
            port: self.port,
            user: &self.user,
            database: &self.database,
        }
    }
}

/// Produces the PostgreSQL password for one connection attempt.
pub type PasswordSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL is not available: {0}")]
    NotConnected(String),
    #[error("PostgreSQL query failed: {0}")]
    Query(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// Why a witness answers nothing that needs a database.
const WITNESS: &str = "this node is a witness (postgresql.enabled: false): it has no PostgreSQL";

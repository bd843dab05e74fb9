//! Turning sqlx errors into what an operator needs to read: the real cause
//! of a failed connection (sqlx often reports only "pool timed out"), and
//! whether a failed query means the connection is gone.

use std::io;

/// Where the daemon tried to connect, for messages.
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub database: &'a str,
}

/// A one-line reason for a failed connection attempt. Never contains the
/// password (sqlx errors do not carry it).
pub fn describe_connect_error(err: &sqlx::Error, target: &Target<'_>) -> String {
    let at = if target.host.starts_with('/') {
        format!("socket {}/.s.PGSQL.{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    match err {
        sqlx::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                format!("connection refused by {at} (is PostgreSQL running and listening there?)")
            }
            io::ErrorKind::TimedOut => format!("timed out connecting to {at}"),
            io::ErrorKind::NotFound => format!("no PostgreSQL at {at}"),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
                format!("connection to {at} closed by the server ({e})")
            }
            _ => format!("cannot connect to {at}: {e}"),
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") => format!(
                "password authentication failed for user \"{}\" at {at}",
                target.user
            ),
            Some("3D000") => format!("database \"{}\" does not exist at {at}", target.database),
            Some("28000") => format!("authentication rejected at {at}: {}", db.message()),
            Some("57P03") => format!("PostgreSQL at {at} is starting up or shutting down"),
            Some("53300") => format!("PostgreSQL at {at} has no free connection slots"),
            _ => format!(
                "PostgreSQL at {at} refused the connection: {}",
                db.message()
            ),
        },
        sqlx::Error::Tls(e) => format!("TLS with {at} failed: {e}"),
        sqlx::Error::PoolTimedOut => format!("timed out connecting to {at}"),
        sqlx::Error::Configuration(e) => format!("invalid connection settings: {e}"),
        other => format!("cannot connect to {at}: {other}"),
    }
}

/// True when a query failed because the connection (or the server) is gone,
/// as opposed to a failure of the statement itself.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // Class 08: connection exception; class 28: the server refused
            // to authenticate a new connection of the pool (a changed
            // password: only a new connection attempt, which runs
            // password_command again, can recover); 57P01-57P03:
            // shutdown/startup.
            code.starts_with("08")
                || code.starts_with("28")
                || matches!(code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            host: "db.example",
            port: 5432,
            user: "steep",
            database: "registry",
        }
    }

    #[test]
    fn a_refused_connection_says_where_and_what_to_check() {
        let err = sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            describe_connect_error(&err, &target()),
            "connection refused by db.example:5432 (is PostgreSQL running and listening there?)"
        );
        assert!(is_connection_error(&err));
    }

    #[test]
    fn a_pool_timeout_is_reported_as_a_timeout_at_the_target() {
        let message = describe_connect_error(&sqlx::Error::PoolTimedOut, &target());
        assert_eq!(message, "timed out connecting to db.example:5432");
    }

    #[test]
    fn a_socket_path_is_named_as_a_socket() {
        let t = Target {
            host: "/run/postgresql",
            port: 5433,
            user: "u",
            database: "d",
        };
        let err = sqlx::Error::Io(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(
            describe_connect_error(&err, &t),
            "no PostgreSQL at socket /run/postgresql/.s.PGSQL.5433"
        );
    }

    #[test]
    fn statement_errors_are_not_connection_losses() {
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
        assert!(!is_connection_error(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
    }
}

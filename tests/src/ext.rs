//! Helpers for tests of the steep_repl extension itself.

use crate::pg::PgServer;
use anyhow::{Context, Result};
use sqlx::postgres::PgConnection;
use sqlx::Executor;

/// A fresh PostgreSQL 18 server with `CREATE EXTENSION steep_repl` done in
/// database `postgres`, and a superuser connection to it over TCP.
pub async fn server_with_extension() -> Result<(PgServer, PgConnection)> {
    let server = PgServer::start()?;
    let mut conn = server.connect().await?;
    conn.execute("CREATE EXTENSION steep_repl")
        .await
        .context("CREATE EXTENSION steep_repl (did deploy/extension.sh run?)")?;
    Ok((server, conn))
}

/// The message of the database error `result` carries; panics with the
/// result when it succeeded or failed some other way, so a test that expects
/// a refusal fails loudly when the statement went through.
pub fn db_error<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Err(sqlx::Error::Database(e)) => e.message().to_string(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

/// Like [`db_error`], also returning the SQLSTATE.
pub fn db_error_code<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> (String, String) {
    match result {
        Err(sqlx::Error::Database(e)) => (
            e.code().map(|c| c.to_string()).unwrap_or_default(),
            e.message().to_string(),
        ),
        other => panic!("expected a database error, got {other:?}"),
    }
}

/// The `extension` folder of the PostgreSQL 18 the tests use.
pub fn extension_dir() -> std::path::PathBuf {
    crate::paths::pg_config_dir(&crate::paths::pg18_config().unwrap(), "sharedir")
        .unwrap()
        .join("extension")
}

/// Makes the install script of released version `old` available the way an
/// old package would have left it. Tests run in parallel: one copy at a time.
pub fn install_released_script(old: &str) {
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = COPYING.lock().unwrap_or_else(|e| e.into_inner());
    let target = extension_dir().join(format!("steep_repl--{old}.sql"));
    if !target.exists() {
        std::fs::copy(
            crate::paths::repo_root().join(format!("ext/sql/released/steep_repl--{old}.sql")),
            &target,
        )
        .unwrap();
    }
}

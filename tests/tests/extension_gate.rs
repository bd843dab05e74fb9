//! The version gate: on PostgreSQL 17 or older, CREATE EXTENSION steep_repl
//! fails before creating anything, with our message naming both versions.
//! Tested on Debian's PostgreSQL 15 (deploy/test.sh installs it).

use sqlx::Executor;
use std::path::{Path, PathBuf};
use steep_repl_tests::ext::db_error_code;
use steep_repl_tests::paths::{pg15_bindir, pg18_config, pg_config_dir};
use steep_repl_tests::pg::PgServer;

/// Copies the extension's control file and install script into another
/// installation's extension folder, and removes them again on drop.
struct InstalledFiles(Vec<PathBuf>);

impl InstalledFiles {
    fn copy(from: &Path, to: &Path, names: &[String]) -> Self {
        let mut copied = Vec::new();
        for name in names {
            let target = to.join(name);
            std::fs::copy(from.join(name), &target).unwrap_or_else(|e| {
                panic!(
                    "copying {name} into {} (the gate test needs to write there; run as root): {e}",
                    to.display()
                )
            });
            copied.push(target);
        }
        InstalledFiles(copied)
    }
}

impl Drop for InstalledFiles {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

#[tokio::test]
async fn postgresql_15_gets_our_version_message_and_no_objects() {
    let pg18_ext = pg_config_dir(&pg18_config().unwrap(), "sharedir")
        .unwrap()
        .join("extension");
    let bindir = pg15_bindir().unwrap();
    let pg15_ext = pg_config_dir(&bindir.join("pg_config"), "sharedir")
        .unwrap()
        .join("extension");
    // Only the SQL side: the gate must fire before the (PostgreSQL 18)
    // library would be loaded, so the library is deliberately absent.
    let scripts: Vec<String> = std::fs::read_dir(&pg18_ext)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("steep_repl"))
        .collect();
    assert!(
        scripts.iter().any(|n| n == "steep_repl.control"),
        "extension not installed: {scripts:?}"
    );
    let _installed = InstalledFiles::copy(&pg18_ext, &pg15_ext, &scripts);

    let pg = PgServer::start_with(&bindir).unwrap();
    let mut conn = pg.connect().await.unwrap();
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(server_version.starts_with("15."), "{server_version}");

    let (code, message) = db_error_code(conn.execute("CREATE EXTENSION steep_repl").await);
    assert_eq!(
        message,
        format!("steep_repl requires PostgreSQL 18 or later (server is {server_version})")
    );
    assert_eq!(code, "0A000");

    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'steep_repl')
              + (SELECT count(*) FROM pg_extension WHERE extname = 'steep_repl')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        leftovers, 0,
        "the failed CREATE EXTENSION left objects behind"
    );
}

#[tokio::test]
async fn postgresql_18_passes_the_gate() {
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();
    let version_num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(version_num.parse::<i32>().unwrap() >= 180000);
    conn.execute("CREATE EXTENSION steep_repl").await.unwrap();
}

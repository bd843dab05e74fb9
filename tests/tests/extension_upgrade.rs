//! Versioning: released install scripts never change, every released
//! version has an upgrade path to the current one, and an upgraded schema is
//! the same as a fresh install.
//!
//! `ext/sql/released/steep_repl--X.sql` holds the install script of every
//! released version X as shipped; `ext/sql/steep_repl--A--B.sql` are the
//! upgrade scripts cargo-pgrx installs beside the current one.

use sqlx::Executor;
use std::path::PathBuf;
use steep_repl_tests::paths::{pg18_config, pg_config_dir, repo_root};
use steep_repl_tests::pg::PgServer;

fn current_version() -> String {
    let cargo = std::fs::read_to_string(repo_root().join("ext/Cargo.toml")).unwrap();
    cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version line in ext/Cargo.toml")
        .to_string()
}

/// Released versions, oldest first.
fn released_versions() -> Vec<String> {
    let dir = repo_root().join("ext/sql/released");
    let mut versions: Vec<Vec<u64>> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let v = name
                .strip_prefix("steep_repl--")?
                .strip_suffix(".sql")?
                .to_string();
            Some(v.split('.').map(|p| p.parse().unwrap()).collect())
        })
        .collect();
    versions.sort();
    versions
        .into_iter()
        .map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
        .collect()
}

fn extension_dir() -> PathBuf {
    pg_config_dir(&pg18_config().unwrap(), "sharedir")
        .unwrap()
        .join("extension")
}

/// Drops the source-location comments pgrx writes, which move when lib.rs
/// is edited without changing any SQL.
fn normalized(sql: &str) -> String {
    sql.lines()
        .filter(|l| !(l.starts_with("-- src/") && l.contains(".rs:")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_released_install_script_is_never_changed() {
    let current = current_version();
    let released = released_versions();
    assert!(
        !released.is_empty(),
        "ext/sql/released holds no released version"
    );
    if released.contains(&current) {
        let shipped = std::fs::read_to_string(
            repo_root().join(format!("ext/sql/released/steep_repl--{current}.sql")),
        )
        .unwrap();
        let built =
            std::fs::read_to_string(extension_dir().join(format!("steep_repl--{current}.sql")))
                .unwrap();
        assert!(
            normalized(&shipped) == normalized(&built),
            "the install script of released version {current} changed: bump the version in \
             ext/Cargo.toml and add ext/sql/steep_repl--{current}--<new>.sql instead"
        );
    } else {
        let latest = released.last().unwrap();
        let upgrade = repo_root().join(format!("ext/sql/steep_repl--{latest}--{current}.sql"));
        assert!(
            upgrade.exists(),
            "version {current} is not released and has no upgrade script from {latest} ({})",
            upgrade.display()
        );
    }
}

#[tokio::test]
async fn every_released_version_upgrades_to_the_same_schema_as_a_fresh_install() {
    let current = current_version();
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();

    conn.execute("CREATE DATABASE fresh").await.unwrap();
    let mut fresh = pg.connect_to("fresh").await.unwrap();
    fresh.execute("CREATE EXTENSION steep_repl").await.unwrap();
    // Updating the current version is a successful no-op.
    fresh
        .execute("ALTER EXTENSION steep_repl UPDATE")
        .await
        .unwrap();
    let reference = schema_fingerprint(&mut fresh).await;
    assert!(
        reference.len() > 60 && reference.iter().any(|l| l.starts_with("trigger ")),
        "the fingerprint misses objects: {reference:?}"
    );

    for old in released_versions().into_iter().filter(|v| *v != current) {
        // Make the old install script available the way an old package would.
        let target = extension_dir().join(format!("steep_repl--{old}.sql"));
        if !target.exists() {
            std::fs::copy(
                repo_root().join(format!("ext/sql/released/steep_repl--{old}.sql")),
                &target,
            )
            .unwrap();
        }
        let db = format!("from_{}", old.replace('.', "_"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .await
            .unwrap();
        let mut upgraded = pg.connect_to(&db).await.unwrap();
        upgraded
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE EXTENSION steep_repl VERSION '{old}'"
            )))
            .await
            .unwrap();
        upgraded
            .execute("ALTER EXTENSION steep_repl UPDATE")
            .await
            .unwrap();
        let version: String = sqlx::query_scalar("SELECT steep_repl.version()")
            .fetch_one(&mut upgraded)
            .await
            .unwrap();
        assert_eq!(version, current, "upgrading from {old}");
        assert_eq!(
            schema_fingerprint(&mut upgraded).await,
            reference,
            "schema after upgrading from {old}"
        );
    }
}

/// Everything that defines the extension's schema, one line per object, in
/// a stable order. pg_dump cannot serve here: it writes extension members
/// as a bare CREATE EXTENSION.
async fn schema_fingerprint(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT line FROM (
             SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                    || coalesce(' -- ' || col_description(c.oid, a.attnum), '') AS line
               FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
               LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
              WHERE c.relnamespace = 'steep_repl'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '')
                    || coalesce(' -- ' || obj_description(c.oid, 'pg_class'), '')
               FROM pg_class c WHERE c.relnamespace = 'steep_repl'::regnamespace
             UNION ALL
             SELECT 'index ' || pg_get_indexdef(i.indexrelid)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
              WHERE c.relnamespace = 'steep_repl'::regnamespace
             UNION ALL
             SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE connamespace = 'steep_repl'::regnamespace
             UNION ALL
             SELECT 'function ' || pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '')
                    || coalesce(' -- ' || obj_description(p.oid, 'pg_proc'), '')
               FROM pg_proc p WHERE p.pronamespace = 'steep_repl'::regnamespace
             UNION ALL
             SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
                    || coalesce(' -- ' || obj_description(t.oid, 'pg_trigger'), '')
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE c.relnamespace = 'steep_repl'::regnamespace AND NOT t.tgisinternal
             UNION ALL
             SELECT 'config ' || cfg::regclass::text
               FROM pg_extension e, unnest(e.extconfig) cfg WHERE e.extname = 'steep_repl'
         ) lines ORDER BY line",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

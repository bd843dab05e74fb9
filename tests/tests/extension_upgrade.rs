//! Versioning: released install scripts never change, every released
//! version has an upgrade path to the current one, and an upgraded schema is
//! the same as a fresh install.
//!
//! `ext/sql/released/steep_repl--X.sql` holds the install script of every
//! released version X as shipped; `ext/sql/steep_repl--A--B.sql` are the
//! upgrade scripts cargo-pgrx installs beside the current one.

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use steep_repl_tests::ext::{extension_dir, install_released_script};
use steep_repl_tests::paths::repo_root;
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
        install_released_script(&old);
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

/// The rows of a database, one JSON document per table, in a stable order.
async fn rows(conn: &mut sqlx::PgConnection) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let nodes = sqlx::query_scalar("SELECT to_jsonb(n) FROM steep_repl.nodes n ORDER BY node_id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let state =
        sqlx::query_scalar("SELECT to_jsonb(s) FROM steep_repl.coordinator_state s ORDER BY key")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let audit = sqlx::query_scalar("SELECT to_jsonb(a) FROM steep_repl.audit_log a ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    (nodes, state, audit)
}

#[tokio::test]
async fn a_0_1_0_database_keeps_every_row_through_the_upgrade_to_the_current_version() {
    let current = current_version();
    install_released_script("0.1.0");
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();
    conn.execute("CREATE DATABASE old").await.unwrap();
    let mut old = pg.connect_to("old").await.unwrap();
    old.execute("CREATE EXTENSION steep_repl VERSION '0.1.0'")
        .await
        .unwrap();
    // What a 0.1.0 cluster leaves behind, written through the 0.1.0 API.
    old.execute(
        "SET steep_repl.actor = 'steep-repl@node-a';
         SELECT steep_repl.register_node('node-a', 'Node A', 'db-a', 5432, 70, 'db-a', 5433);
         SELECT steep_repl.register_node('node-b', 'Node B', 'db-b', 5432, 50, 'db-b', 5433);
         SELECT steep_repl.heartbeat('node-a', 'healthy');
         SELECT steep_repl.heartbeat('node-b', 'degraded');
         SELECT steep_repl.set_coordinator('node-a');
         SELECT steep_repl.set_state('cluster.version', '\"0.1.0\"');
         SELECT steep_repl.set_state('election.term', '{\"term\": 4, \"by\": [\"node-a\"]}');
         INSERT INTO steep_repl.audit_log (action, actor, event_id)
         VALUES ('daemon.started', 'steep-repl@node-a', '7d0f4d3a-8f2e-4c1b-9a55-0d6f1f2b3c4d');
         RESET steep_repl.actor;",
    )
    .await
    .unwrap();
    let (nodes, state, audit) = rows(&mut old).await;
    assert_eq!((nodes.len(), state.len()), (2, 2));
    assert!(audit.len() >= 7, "{audit:?}");

    old.execute("ALTER EXTENSION steep_repl UPDATE")
        .await
        .unwrap();
    let version: String = sqlx::query_scalar("SELECT steep_repl.version()")
        .fetch_one(&mut old)
        .await
        .unwrap();
    assert_eq!(version, current);

    // Every row is still there, unchanged; the upgrade audits nothing.
    let (nodes_after, state_after, audit_after) = rows(&mut old).await;
    let with_role: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n["role"] = json!("data");
            n
        })
        .collect();
    assert_eq!(nodes_after, with_role);
    assert_eq!(state_after, state);
    assert_eq!(audit_after, audit);
    // The projection has applied nothing yet.
    let projection: (Option<String>, i64, i64) = sqlx::query_as(
        "SELECT cluster_id, applied_index, applied_term FROM steep_repl.projection()",
    )
    .fetch_one(&mut old)
    .await
    .unwrap();
    assert_eq!(projection, (None, 0, 0));
    let projection_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM steep_repl.cluster_projection")
            .fetch_one(&mut old)
            .await
            .unwrap();
    assert_eq!(projection_rows, 0);

    // The upgraded database behaves as the current version: the daemon's
    // apply path works, a direct write is refused.
    let applied: bool = sqlx::query_scalar(
        "SELECT steep_repl.apply_state('c1', 3, 1, 'cluster.version', '\"0.2.0\"', false, 'steep-repl@node-a', NULL, NULL)",
    )
    .fetch_one(&mut old)
    .await
    .unwrap();
    assert!(applied);
    let message = match old
        .execute("UPDATE steep_repl.coordinator_state SET value = '1'")
        .await
    {
        Err(sqlx::Error::Database(e)) => e.message().to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(message.contains("steep-repl state set"), "{message}");

    // The per-node election of 0.1.0 is gone: the cluster decides the
    // coordinator and the daemon applies its record. The flag the old
    // election left (node-a) gives way to the first record applied.
    let election: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
          WHERE p.pronamespace = 'steep_repl'::regnamespace
            AND p.proname IN ('elect_coordinator', 'set_coordinator')",
    )
    .fetch_all(&mut old)
    .await
    .unwrap();
    assert_eq!(election, Vec::<String>::new());
    let applied: bool = sqlx::query_scalar(
        "SELECT steep_repl.apply_coordinator('c1', 4, 1, 'node-b', 1, NULL, 'coordinator.grant', 'steep-repl@node-a')",
    )
    .fetch_one(&mut old)
    .await
    .unwrap();
    assert!(applied);
    let coordinators: Vec<String> =
        sqlx::query_scalar("SELECT node_id FROM steep_repl.nodes WHERE is_coordinator")
            .fetch_all(&mut old)
            .await
            .unwrap();
    assert_eq!(coordinators, ["node-b"]);
    let (action, target, new_value): (String, Option<String>, Value) = sqlx::query_as(
        "SELECT action, target_id, new_value FROM steep_repl.audit_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&mut old)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), target.as_deref()),
        ("coordinator.elected", Some("node-b"))
    );
    assert_eq!(
        (
            &new_value["holder"],
            &new_value["epoch"],
            &new_value["log_index"]
        ),
        (&json!("node-b"), &json!(1), &json!(4))
    );
    let message = match old
        .execute("UPDATE steep_repl.nodes SET is_coordinator = (node_id = 'node-a')")
        .await
    {
        Err(sqlx::Error::Database(e)) => e.message().to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(
        message.starts_with("steep_repl.nodes.is_coordinator is set only by the cluster"),
        "{message}"
    );

    // And its schema is the fresh install's.
    conn.execute("CREATE DATABASE fresh").await.unwrap();
    let mut fresh = pg.connect_to("fresh").await.unwrap();
    fresh.execute("CREATE EXTENSION steep_repl").await.unwrap();
    assert_eq!(
        schema_fingerprint(&mut old).await,
        schema_fingerprint(&mut fresh).await
    );
}

#[tokio::test]
async fn a_0_2_0_database_keeps_its_rows_and_loses_the_direct_audit_writes_its_grants_allowed() {
    let current = current_version();
    install_released_script("0.2.0");
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();
    conn.execute("CREATE DATABASE old").await.unwrap();
    let mut old = pg.connect_to("old").await.unwrap();
    old.execute("CREATE EXTENSION steep_repl VERSION '0.2.0'")
        .await
        .unwrap();
    // The grants the 0.2.0 documentation recommended for the daemon's role.
    old.execute(
        "CREATE ROLE steep_daemon LOGIN;
         GRANT USAGE ON SCHEMA steep_repl TO steep_daemon;
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA steep_repl TO steep_daemon;
         GRANT SELECT ON ALL TABLES IN SCHEMA steep_repl TO steep_daemon;
         GRANT INSERT ON steep_repl.audit_log TO steep_daemon;
         GRANT USAGE ON SEQUENCE steep_repl.audit_log_id_seq TO steep_daemon;
         SELECT steep_repl.apply_membership(1, '[{\"node_id\": \"a\", \"grpc_host\": \"h\", \"grpc_port\": 5433, \"priority\": 50, \"role\": \"data\"}]');
         SELECT steep_repl.apply_state('c1', 2, 1, 'a.b', '1', false, 'steep-repl@a', NULL, NULL);",
    )
    .await
    .unwrap();
    let mut daemon = PgConnection::connect_with(&pg.socket_options("steep_daemon", "old"))
        .await
        .unwrap();
    daemon
        .execute("INSERT INTO steep_repl.audit_log (action, actor) VALUES ('daemon.started', 'steep-repl@a')")
        .await
        .unwrap();
    let before = rows(&mut old).await;

    old.execute("ALTER EXTENSION steep_repl UPDATE")
        .await
        .unwrap();
    let version: String = sqlx::query_scalar("SELECT steep_repl.version()")
        .fetch_one(&mut old)
        .await
        .unwrap();
    assert_eq!(version, current);
    assert_eq!(rows(&mut old).await, before, "the upgrade changes no row");

    // The direct writes those grants allowed are gone; reading stays.
    for (sql, object) in [
        (
            "INSERT INTO steep_repl.audit_log (action, actor) VALUES ('daemon.started', 'steep-repl@a')",
            "table audit_log",
        ),
        ("SELECT nextval('steep_repl.audit_log_id_seq')", "sequence audit_log_id_seq"),
        (
            "SELECT steep_repl.write_audit('daemon.started', NULL, NULL, NULL, NULL)",
            "function write_audit",
        ),
    ] {
        let message = match daemon.execute(sql).await {
            Err(sqlx::Error::Database(e)) => e.message().to_string(),
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        };
        assert_eq!(message, format!("permission denied for {object}"), "{sql}");
    }
    daemon
        .execute("SELECT count(*) FROM steep_repl.audit_log")
        .await
        .unwrap();
    // The three roles exist, and steep_repl_daemon is the way in.
    old.execute("GRANT steep_repl_daemon TO steep_daemon")
        .await
        .unwrap();
    let recorded: bool = sqlx::query_scalar("SELECT steep_repl.record_peer_status('a', 'healthy')")
        .fetch_one(&mut daemon)
        .await
        .unwrap();
    assert!(recorded);
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

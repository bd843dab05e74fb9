//! The SQL API of steep_repl: node registration, heartbeats and status,
//! state, retention, and argument checking. The coordinator is the cluster's
//! decision, projected by steep_repl.apply_coordinator()
//! (tests/tests/extension_projection.rs).

use serde_json::json;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use steep_repl_tests::ext::{db_error, db_error_code, server_with_extension};

async fn audit_count(conn: &mut PgConnection, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn node(conn: &mut PgConnection, id: &str, priority: i32, status: &str) {
    sqlx::query("SELECT steep_repl.register_node($1, $1, 'host-' || $1, 5432, $2)")
        .bind(id)
        .bind(priority)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT steep_repl.set_status($1, $2)")
        .bind(id)
        .bind(status)
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn register_node_inserts_then_updates_and_keeps_status() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let (host, port, priority, status): (String, i32, i32, String) = sqlx::query_as(
        "SELECT host, port, priority, status FROM steep_repl.register_node('a', 'Node A', 'db-a', 5433, 70, 'db-a', 5434)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (host.as_str(), port, priority, status.as_str()),
        ("db-a", 5433, 70, "unknown")
    );

    conn.execute("SELECT steep_repl.set_status('a', 'healthy')")
        .await
        .unwrap();
    let (host, grpc_host, grpc_port, status): (String, Option<String>, Option<i32>, String) =
        sqlx::query_as(
            "SELECT host, grpc_host, grpc_port, status FROM steep_repl.register_node('a', 'Node A', 'db-a2', 5433, 70)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(host, "db-a2");
    // A registration without a gRPC address keeps the known one.
    assert_eq!(
        (grpc_host.as_deref(), grpc_port),
        (Some("db-a"), Some(5434))
    );
    assert_eq!(status, "healthy");
    assert_eq!(audit_count(&mut conn, "node.registered").await, 1);
    assert_eq!(audit_count(&mut conn, "node.updated").await, 1);

    // Registering again with the same values writes (and audits) nothing.
    conn.execute("SELECT steep_repl.register_node('a', 'Node A', 'db-a2', 5433, 70)")
        .await
        .unwrap();
    assert_eq!(audit_count(&mut conn, "node.updated").await, 1);
}

#[tokio::test]
async fn bad_arguments_are_refused_naming_the_argument() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let cases = [
        ("SELECT steep_repl.register_node('', 'A', 'h')", "steep_repl.register_node: node_id must not be empty"),
        ("SELECT steep_repl.register_node('b', '', 'h')", "steep_repl.register_node: node_name must not be empty"),
        ("SELECT steep_repl.register_node('b', 'B', '')", "steep_repl.register_node: host must not be empty"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 0)", "steep_repl.register_node: port must be between 1 and 65535 (got 0)"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 70000)", "steep_repl.register_node: port must be between 1 and 65535 (got 70000)"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 5432, 0)", "steep_repl.register_node: priority must be between 1 and 100 (got 0)"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 5432, 101)", "steep_repl.register_node: priority must be between 1 and 100 (got 101)"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 5432, 50, '')", "steep_repl.register_node: grpc_host must be null or not empty"),
        ("SELECT steep_repl.register_node('b', 'B', 'h', 5432, 50, 'g', 0)", "steep_repl.register_node: grpc_port must be between 1 and 65535 (got 0)"),
        ("SELECT steep_repl.set_status('a', 'sleepy')", "steep_repl.set_status: status must be one of unknown, healthy, degraded, unreachable, offline (got 'sleepy')"),
        ("SELECT steep_repl.set_status('a', NULL)", "steep_repl.set_status: status must be one of unknown, healthy, degraded, unreachable, offline (got NULL)"),
        ("SELECT steep_repl.heartbeat('a', 'up')", "steep_repl.heartbeat: status must be one of unknown, healthy, degraded, unreachable, offline (got 'up')"),
        ("SELECT steep_repl.heartbeat('')", "steep_repl.heartbeat: node_id must not be empty"),
        ("SELECT steep_repl.remove_node(NULL)", "steep_repl.remove_node: node_id must not be empty"),
        ("SELECT steep_repl.prune_audit('-1 day')", "steep_repl.prune_audit: older_than must be at least 1 day (the minimum retention; got -1 days)"),
        ("SELECT steep_repl.prune_audit('0')", "steep_repl.prune_audit: older_than must be at least 1 day (the minimum retention; got 00:00:00)"),
        ("SELECT steep_repl.prune_audit('1 microsecond')", "steep_repl.prune_audit: older_than must be at least 1 day (the minimum retention; got 00:00:00.000001)"),
        ("SELECT steep_repl.prune_audit(NULL)", "steep_repl.prune_audit: older_than must be at least 1 day (the minimum retention; got NULL)"),
    ];
    for (sql, expected) in cases {
        let (code, message) = db_error_code(conn.execute(sql).await);
        assert_eq!(message, expected, "{sql}");
        assert_eq!(code, "22023", "{sql}: invalid_parameter_value expected");
    }
}

#[tokio::test]
async fn unknown_nodes_are_reported_as_not_registered() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    for (sql, function) in [
        ("SELECT steep_repl.heartbeat('ghost')", "heartbeat"),
        (
            "SELECT steep_repl.set_status('ghost', 'healthy')",
            "set_status",
        ),
    ] {
        let (code, message) = db_error_code(conn.execute(sql).await);
        assert_eq!(
            message,
            format!("steep_repl.{function}: node_id 'ghost' is not registered")
        );
        assert_eq!(code, "P0002");
    }
    let removed: bool = sqlx::query_scalar("SELECT steep_repl.remove_node('ghost')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!removed);
}

#[tokio::test]
async fn heartbeat_sets_last_seen_and_never_overrides_offline() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    node(&mut conn, "a", 50, "offline").await;
    let (seen, status): (bool, String) = sqlx::query_as(
        "SELECT last_seen IS NOT NULL, status FROM steep_repl.heartbeat('a', 'healthy')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(seen);
    assert_eq!(status, "offline");
    // Only set_status brings a node back.
    let changed: bool = sqlx::query_scalar("SELECT steep_repl.set_status('a', 'healthy')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(changed);
    let changed: bool = sqlx::query_scalar("SELECT steep_repl.set_status('a', 'healthy')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!changed);
}

/// Since 0.2.0 the state is replicated by the cluster: get_state reads the
/// local projection, set_state is refused (tests/tests/extension_projection.rs
/// covers the apply functions).
#[tokio::test]
async fn get_state_reads_the_projection_and_set_state_is_refused() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let missing: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT steep_repl.get_state('cluster.version')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(missing, None);
    let value = json!({"major": 18, "nodes": ["a", "b"]});
    let (code, message) = db_error_code(
        sqlx::query("SELECT steep_repl.set_state('cluster.version', $1)")
            .bind(&value)
            .execute(&mut conn)
            .await,
    );
    assert_eq!(code, "42501");
    assert!(
        message.contains("\"steep-repl state set KEY VALUE\""),
        "{message}"
    );
    sqlx::query(
        "SELECT steep_repl.apply_state('c1', 1, 1, 'cluster.version', $1, false, 'postgres@local', NULL, NULL)",
    )
    .bind(&value)
    .execute(&mut conn)
    .await
    .unwrap();
    let read: serde_json::Value =
        sqlx::query_scalar("SELECT steep_repl.get_state('cluster.version')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(read, value);
    assert_eq!(audit_count(&mut conn, "state.updated").await, 1);
}

#[tokio::test]
async fn prune_removes_old_entries_returns_the_count_and_is_audited() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "INSERT INTO steep_repl.audit_log (occurred_at, action, actor)
         SELECT now() - interval '400 days', 'daemon.started', 'steep-repl@a' FROM generate_series(1, 7);
         INSERT INTO steep_repl.audit_log (occurred_at, action, actor)
         SELECT now() - interval '10 days', 'daemon.stopped', 'steep-repl@a' FROM generate_series(1, 3);",
    )
    .await
    .unwrap();
    let deleted: i64 = sqlx::query_scalar("SELECT steep_repl.prune_audit('1 year')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 7);
    let remaining: Vec<String> =
        sqlx::query_scalar("SELECT action FROM steep_repl.audit_log ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        remaining,
        [
            "daemon.stopped",
            "daemon.stopped",
            "daemon.stopped",
            "audit.pruned"
        ]
    );
    let (actor, new): (String, serde_json::Value) = sqlx::query_as(
        "SELECT actor, new_value FROM steep_repl.audit_log WHERE action = 'audit.pruned'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(actor, "postgres@127.0.0.1");
    assert_eq!(new["deleted"], json!(7));
    assert_eq!(new["older_than"], json!("1 year"));
    // The prune's permission to delete ends with the function.
    let message = db_error(conn.execute("DELETE FROM steep_repl.audit_log").await);
    assert!(message.contains("append-only"), "{message}");
}

#[tokio::test]
async fn a_role_without_privileges_is_told_what_it_lacks() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("CREATE ROLE nobody_special LOGIN")
        .await
        .unwrap();
    let mut plain = PgConnection::connect_with(&pg.socket_options("nobody_special", "postgres"))
        .await
        .unwrap();
    let message = db_error(
        plain
            .execute("SELECT steep_repl.register_node('a', 'A', 'h')")
            .await,
    );
    assert_eq!(message, "permission denied for schema steep_repl");

    conn.execute("GRANT USAGE ON SCHEMA steep_repl TO nobody_special")
        .await
        .unwrap();
    let message = db_error(
        plain
            .execute("SELECT steep_repl.register_node('a', 'A', 'h')")
            .await,
    );
    assert_eq!(message, "permission denied for function register_node");
    let message = db_error(plain.execute("SELECT * FROM steep_repl.nodes").await);
    assert_eq!(message, "permission denied for table nodes");

    // Granted EXECUTE, the role registers nodes and is audited by name.
    conn.execute("GRANT EXECUTE ON FUNCTION steep_repl.register_node(text, text, text, integer, integer, text, integer) TO nobody_special")
        .await
        .unwrap();
    plain
        .execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM steep_repl.audit_log WHERE action = 'node.registered'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(actor, "nobody_special@local");
    // The internal audit writer stays out of reach.
    let message = db_error(
        plain
            .execute("SELECT steep_repl.write_audit('node.removed', 'node', 'a', NULL, NULL)")
            .await,
    );
    assert_eq!(message, "permission denied for function write_audit");
}

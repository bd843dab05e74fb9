//! Every constraint of the schema, violated once, is refused with a message
//! that names what was wrong.

use sqlx::postgres::PgConnection;
use sqlx::Executor;
use steep_repl_tests::ext::{db_error, server_with_extension};

async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    db_error(conn.execute(sqlx::AssertSqlSafe(sql.to_string())).await)
}

const NODE_A: &str =
    "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('a', 'A', 'host-a')";

#[tokio::test]
async fn node_rows_violating_a_rule_are_refused_naming_the_rule() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    // Only the apply functions change is_coordinator. To reach the column's
    // own rule, this superuser session takes their way past the refusal.
    conn.execute("SET steep_repl.applying = on").await.unwrap();
    conn.execute(NODE_A).await.unwrap();

    let cases = [
        (NODE_A, "duplicate key value violates unique constraint \"nodes_pkey\""),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('', 'B', 'h')",
            "violates check constraint \"nodes_node_id_not_empty\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('b', NULL, 'h')",
            "null value in column \"node_name\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('b', '', 'h')",
            "violates check constraint \"nodes_node_name_not_empty\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('b', 'B', '')",
            "violates check constraint \"nodes_host_not_empty\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name) VALUES ('b', 'B')",
            "null value in column \"host\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, port) VALUES ('b', 'B', 'h', 0)",
            "violates check constraint \"nodes_port_range\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, port) VALUES ('b', 'B', 'h', 65536)",
            "violates check constraint \"nodes_port_range\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, priority) VALUES ('b', 'B', 'h', 0)",
            "violates check constraint \"nodes_priority_range\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, priority) VALUES ('b', 'B', 'h', 101)",
            "violates check constraint \"nodes_priority_range\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, status) VALUES ('b', 'B', 'h', 'sleepy')",
            "violates check constraint \"nodes_status_valid\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, grpc_host) VALUES ('b', 'B', 'h', '')",
            "violates check constraint \"nodes_grpc_host_not_empty\"",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, grpc_port) VALUES ('b', 'B', 'h', 0)",
            "violates check constraint \"nodes_grpc_port_range\"",
        ),
        (
            "UPDATE steep_repl.nodes SET is_coordinator = NULL",
            "null value in column \"is_coordinator\"",
        ),
    ];
    for (sql, expected) in cases {
        let message = refused(&mut conn, sql).await;
        assert!(
            message.contains(expected),
            "{sql}\n  gave: {message}\n  expected: {expected}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM steep_repl.nodes")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "a refused row must leave nothing behind");
}

#[tokio::test]
async fn a_second_coordinator_is_refused_by_the_schema() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    // As above: the flag is the apply functions' to set; the unique index
    // holds for them too.
    conn.execute("SET steep_repl.applying = on").await.unwrap();
    conn.execute(
        "INSERT INTO steep_repl.nodes (node_id, node_name, host, is_coordinator)
         VALUES ('a', 'A', 'h', true), ('b', 'B', 'h', false)",
    )
    .await
    .unwrap();
    let message = refused(
        &mut conn,
        "UPDATE steep_repl.nodes SET is_coordinator = true WHERE node_id = 'b'",
    )
    .await;
    assert!(
        message
            .contains("duplicate key value violates unique constraint \"idx_nodes_coordinator\""),
        "{message}"
    );
    // Any number of non-coordinators is fine.
    conn.execute(
        "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('c', 'C', 'h'), ('d', 'D', 'h')",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn state_keys_must_be_dotted_names_and_values_present() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    // Only the apply functions write coordinator_state (they validate their
    // arguments first). To reach the table's own rules, this superuser
    // session takes their way past the refusal: the rules hold there too.
    conn.execute("SET steep_repl.applying = on").await.unwrap();
    for key in ["", "has space", "trailing.", ".leading", "a..b"] {
        let message = refused(
            &mut conn,
            &format!("INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('{key}', '1')"),
        )
        .await;
        assert!(
            message.contains("violates check constraint \"coordinator_state_key_dotted\""),
            "key {key:?}: {message}"
        );
    }
    let message = refused(
        &mut conn,
        "INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('a.b', NULL)",
    )
    .await;
    assert!(
        message.contains("null value in column \"value\""),
        "{message}"
    );
    conn.execute(
        "INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('election.term', '1'), ('cluster.version', '\"18\"')",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn audit_rows_violating_a_rule_are_refused_naming_the_rule() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let insert = |action: &str, actor: &str, target_type: &str| {
        format!(
            "INSERT INTO steep_repl.audit_log (action, actor, target_type) VALUES ({action}, {actor}, {target_type})"
        )
    };
    let cases = [
        (
            insert("'node.registered'", "'dba@local'", "'table'"),
            "audit_log_target_type_valid",
        ),
        (
            insert("'Registered'", "'dba@local'", "NULL"),
            "audit_log_action_format",
        ),
        (
            insert("'node.'", "'dba@local'", "NULL"),
            "audit_log_action_format",
        ),
        (
            insert("'node.registered'", "'dba'", "NULL"),
            "audit_log_actor_format",
        ),
        (
            insert("NULL", "'dba@local'", "NULL"),
            "null value in column \"action\"",
        ),
        (
            insert("'node.registered'", "NULL", "NULL"),
            "null value in column \"actor\"",
        ),
    ];
    for (sql, expected) in cases {
        let message = refused(&mut conn, &sql).await;
        assert!(message.contains(expected), "{sql}\n  gave: {message}");
    }
    let event = "INSERT INTO steep_repl.audit_log (action, actor, event_id)
                 VALUES ('daemon.started', 'steep-repl@a', '7d0f4d3a-8f2e-4c1b-9a55-0d6f1f2b3c4d')";
    conn.execute(event).await.unwrap();
    let message = refused(&mut conn, event).await;
    assert!(message.contains("idx_audit_log_event_id"), "{message}");
}

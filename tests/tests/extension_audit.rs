//! The audit trail: every change to nodes and coordinator_state is audited
//! whoever makes it, with the right actor and values, and the log itself
//! cannot be rewritten.

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use steep_repl_tests::ext::{db_error, server_with_extension};

#[derive(Debug, sqlx::FromRow)]
struct Entry {
    action: String,
    actor: String,
    target_type: Option<String>,
    target_id: Option<String>,
    old_value: Option<Value>,
    new_value: Option<Value>,
    client_ip: Option<String>,
}

async fn entries(conn: &mut PgConnection) -> Vec<Entry> {
    sqlx::query_as(
        "SELECT action, actor, target_type, target_id, old_value, new_value, host(client_ip) AS client_ip
           FROM steep_repl.audit_log ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn last_entry(conn: &mut PgConnection) -> Entry {
    entries(conn).await.pop().expect("no audit entry")
}

#[tokio::test]
async fn a_dbas_plain_update_in_psql_style_sql_is_audited_with_actor_and_values() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "INSERT INTO steep_repl.nodes (node_id, node_name, host) VALUES ('a', 'A', 'old-host')",
    )
    .await
    .unwrap();
    conn.execute(
        "UPDATE steep_repl.nodes SET host = 'new-host', priority = 80 WHERE node_id = 'a'",
    )
    .await
    .unwrap();

    let all = entries(&mut conn).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].action, "node.registered");
    assert_eq!(all[0].old_value, None);
    let update = &all[1];
    assert_eq!(update.action, "node.updated");
    // Connected over TCP from loopback as the superuser.
    assert_eq!(update.actor, "postgres@127.0.0.1");
    assert_eq!(update.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(update.target_type.as_deref(), Some("node"));
    assert_eq!(update.target_id.as_deref(), Some("a"));
    let old = update.old_value.as_ref().unwrap();
    let new = update.new_value.as_ref().unwrap();
    assert_eq!(
        (&old["host"], &old["priority"]),
        (&json!("old-host"), &json!(50))
    );
    assert_eq!(
        (&new["host"], &new["priority"]),
        (&json!("new-host"), &json!(80))
    );
}

#[tokio::test]
async fn a_local_socket_session_is_audited_as_local_without_client_ip() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut local = PgConnection::connect_with(&pg.socket_options("postgres", "postgres"))
        .await
        .unwrap();
    local
        .execute("SELECT steep_repl.register_node('a', 'A', 'db-a')")
        .await
        .unwrap();
    let entry = last_entry(&mut local).await;
    assert_eq!(entry.action, "node.registered");
    assert_eq!(entry.actor, "postgres@local");
    assert_eq!(entry.client_ip, None);
    assert_eq!(entry.target_type.as_deref(), Some("node"));
    assert_eq!(entry.target_id.as_deref(), Some("a"));
    assert_eq!(entry.new_value.unwrap()["host"], json!("db-a"));
}

#[tokio::test]
async fn the_actor_setting_names_the_actor_when_a_session_sets_it() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SET steep_repl.actor = 'steep-repl@node-a'")
        .await
        .unwrap();
    conn.execute("SELECT steep_repl.register_node('node-a', 'A', 'h')")
        .await
        .unwrap();
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "node.registered");
    assert_eq!(entry.actor, "steep-repl@node-a");
    // The client address is recorded all the same.
    assert_eq!(entry.client_ip.as_deref(), Some("127.0.0.1"));

    // Resetting it goes back to session_user@address.
    conn.execute("RESET steep_repl.actor").await.unwrap();
    conn.execute("SELECT steep_repl.set_status('node-a', 'healthy')")
        .await
        .unwrap();
    assert_eq!(last_entry(&mut conn).await.actor, "postgres@127.0.0.1");
}

#[tokio::test]
async fn heartbeats_alone_are_not_audited_but_status_changes_are() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let before = entries(&mut conn).await.len();

    conn.execute("UPDATE steep_repl.nodes SET last_seen = now()")
        .await
        .unwrap();
    conn.execute("SELECT steep_repl.heartbeat('a')")
        .await
        .unwrap();
    assert_eq!(
        entries(&mut conn).await.len(),
        before,
        "a heartbeat was audited"
    );

    conn.execute("SELECT steep_repl.heartbeat('a', 'healthy')")
        .await
        .unwrap();
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "node.status_changed");
    assert_eq!(entry.old_value, Some(json!({"status": "unknown"})));
    assert_eq!(entry.new_value, Some(json!({"status": "healthy"})));

    // The same status again is a heartbeat, not a change.
    conn.execute("SELECT steep_repl.heartbeat('a', 'healthy')")
        .await
        .unwrap();
    assert_eq!(entries(&mut conn).await.len(), before + 1);

    // A DBA changing status by hand is audited the same way.
    conn.execute("UPDATE steep_repl.nodes SET status = 'offline', last_seen = now()")
        .await
        .unwrap();
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "node.status_changed");
    assert_eq!(entry.new_value, Some(json!({"status": "offline"})));
}

#[tokio::test]
async fn removing_a_node_is_audited_with_its_last_values() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h', 5433, 60)")
        .await
        .unwrap();
    conn.execute("DELETE FROM steep_repl.nodes WHERE node_id = 'a'")
        .await
        .unwrap();
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "node.removed");
    assert_eq!(entry.target_id.as_deref(), Some("a"));
    assert_eq!(entry.old_value.unwrap()["port"], json!(5433));
    assert_eq!(entry.new_value, None);
}

/// Since 0.2.0 coordinator_state changes only as the cluster's log is
/// applied (direct writes are refused: tests/tests/extension_projection.rs);
/// each applied change is audited once with old and new values.
#[tokio::test]
async fn state_changes_are_audited_and_updated_at_is_kept_current() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let apply = |index: i64, value: Option<Value>| {
        sqlx::query(
            "SELECT steep_repl.apply_state('c1', $1, 1, 'election.term', $2, $3, 'steep-repl@a', NULL, NULL)",
        )
        .bind(index)
        .bind(value.clone())
        .bind(value.is_none())
    };
    apply(1, Some(json!(1))).execute(&mut conn).await.unwrap();
    let first = updated_at(&mut conn).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    apply(2, Some(json!(2))).execute(&mut conn).await.unwrap();
    let second = updated_at(&mut conn).await;
    assert!(
        second > first,
        "updated_at did not move: {first} -> {second}"
    );

    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "state.updated");
    assert_eq!(entry.actor, "steep-repl@a");
    assert_eq!(entry.old_value.unwrap()["value"], json!(1));
    assert_eq!(entry.new_value.unwrap()["value"], json!(2));

    apply(3, None).execute(&mut conn).await.unwrap();
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "state.updated");
    assert_eq!(entry.new_value, None);
    assert_eq!(entries(&mut conn).await.len(), 3);
}

/// updated_at of election.term, in microseconds since the epoch.
async fn updated_at(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT (extract(epoch FROM updated_at) * 1000000)::bigint FROM steep_repl.coordinator_state WHERE key = 'election.term'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();

    for (sql, op) in [
        (
            "UPDATE steep_repl.audit_log SET actor = 'someone@else'",
            "UPDATE",
        ),
        ("DELETE FROM steep_repl.audit_log", "DELETE"),
        ("TRUNCATE steep_repl.audit_log", "TRUNCATE"),
    ] {
        let message = db_error(conn.execute(sql).await);
        assert_eq!(
            message,
            format!("steep_repl.audit_log is append-only: {op} is not allowed")
        );
    }
    // The guards hold in replica mode too, where ordinary triggers are skipped.
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let message = db_error(
        conn.execute("UPDATE steep_repl.audit_log SET actor = 'x@y'")
            .await,
    );
    assert!(message.contains("append-only"), "{message}");
    conn.execute("RESET session_replication_role")
        .await
        .unwrap();

    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.actor, "postgres@127.0.0.1");
    assert_eq!(entries(&mut conn).await.len(), 1);
}

#[tokio::test]
async fn a_role_without_audit_privileges_is_still_audited() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "CREATE ROLE operator LOGIN;
         GRANT USAGE ON SCHEMA steep_repl TO operator;
         GRANT SELECT, UPDATE ON steep_repl.nodes TO operator;
         SELECT steep_repl.register_node('a', 'A', 'h');",
    )
    .await
    .unwrap();
    let mut operator = PgConnection::connect_with(&pg.socket_options("operator", "postgres"))
        .await
        .unwrap();
    operator
        .execute("UPDATE steep_repl.nodes SET node_name = 'Renamed' WHERE node_id = 'a'")
        .await
        .unwrap();
    // The operator cannot read or write the audit log directly...
    let message = db_error(operator.execute("SELECT * FROM steep_repl.audit_log").await);
    assert_eq!(message, "permission denied for table audit_log");
    // ...but its change was recorded under its own name.
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "node.updated");
    assert_eq!(entry.actor, "operator@local");
    assert_eq!(entry.new_value.unwrap()["node_name"], json!("Renamed"));
}

#[tokio::test]
async fn a_restored_dump_gets_fresh_ids_past_the_restored_rows() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    // What a pg_dump restore does: audit rows arrive with their ids before
    // the sequence is positioned, while other tables' triggers already audit.
    conn.execute(
        "INSERT INTO steep_repl.audit_log (id, action, actor) VALUES (1, 'daemon.started', 'x@y'), (2, 'daemon.stopped', 'x@y')",
    )
    .await
    .unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM steep_repl.audit_log ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);
}

//! coordinator_state, the identity columns of nodes and the coordinator as
//! the projection of the cluster's replicated state (docs/operations.md, "The cluster"): applied
//! idempotently with the log index stored in the same transaction, one audit
//! row per applied entry carrying the requester, and direct writes refused
//! naming the command to use.

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use steep_repl_tests::ext::{db_error, db_error_code, server_with_extension};

/// The SQL of one apply_state call (set, or delete when `value` is None).
async fn apply(
    conn: &mut PgConnection,
    cluster: &str,
    index: i64,
    key: &str,
    value: Option<Value>,
) -> bool {
    sqlx::query_scalar(
        "SELECT steep_repl.apply_state($1, $2, 3, $3, $4, $5, 'alice@10.0.0.7', '10.0.0.7', 'req-' || $2)",
    )
    .bind(cluster)
    .bind(index)
    .bind(key)
    .bind(&value)
    .bind(value.is_none())
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn state(conn: &mut PgConnection) -> Value {
    sqlx::query_scalar(
        "SELECT COALESCE(jsonb_object_agg(key, value), '{}') FROM steep_repl.coordinator_state",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn audit_rows(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log")
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn projection(conn: &mut PgConnection) -> (Option<String>, i64, i64, Option<i64>) {
    sqlx::query_as(
        "SELECT cluster_id, applied_index, applied_term, membership_index FROM steep_repl.projection()",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Entry {
    action: String,
    actor: String,
    target_type: Option<String>,
    target_id: Option<String>,
    old_value: Option<Value>,
    new_value: Option<Value>,
    client_ip: Option<String>,
    event_id: Option<String>,
}

async fn last_entry(conn: &mut PgConnection) -> Entry {
    sqlx::query_as(
        "SELECT action, actor, target_type, target_id, old_value, new_value,
                host(client_ip) AS client_ip, event_id::text AS event_id
           FROM steep_repl.audit_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_applied_entry_writes_the_value_and_one_audit_row_naming_the_requester() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    assert_eq!(projection(&mut conn).await, (None, 0, 0, None));

    assert!(apply(&mut conn, "c1", 5, "cluster.version", Some(json!("18"))).await);
    assert_eq!(state(&mut conn).await, json!({"cluster.version": "18"}));
    assert_eq!(audit_rows(&mut conn).await, 1);
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "state.updated");
    // The requester travels in the entry: not this session's user or address.
    assert_eq!(entry.actor, "alice@10.0.0.7");
    assert_eq!(entry.client_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(entry.target_type.as_deref(), Some("state"));
    assert_eq!(entry.target_id.as_deref(), Some("cluster.version"));
    assert_eq!(entry.old_value, None);
    let new = entry.new_value.unwrap();
    assert_eq!(new["value"], json!("18"));
    assert_eq!(
        new["log"],
        json!({"cluster_id": "c1", "index": 5, "term": 3, "request_id": "req-5"})
    );
    let expected_event: String =
        sqlx::query_scalar("SELECT steep_repl.log_event_id('c1', 5)::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(entry.event_id, Some(expected_event));
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 5, 3, None));

    // A replay of the same entry, or an older one, writes nothing at all.
    assert!(!apply(&mut conn, "c1", 5, "cluster.version", Some(json!("18"))).await);
    assert!(!apply(&mut conn, "c1", 4, "cluster.version", Some(json!("17"))).await);
    assert!(!apply(&mut conn, "c1", 5, "other.key", Some(json!(1))).await);
    assert_eq!(state(&mut conn).await, json!({"cluster.version": "18"}));
    assert_eq!(audit_rows(&mut conn).await, 1);

    // An update records the old and the new value.
    assert!(apply(&mut conn, "c1", 6, "cluster.version", Some(json!("19"))).await);
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.old_value.unwrap()["value"], json!("18"));
    assert_eq!(entry.new_value.unwrap()["value"], json!("19"));

    // A delete: the old row, no new value.
    assert!(apply(&mut conn, "c1", 7, "cluster.version", None).await);
    assert_eq!(state(&mut conn).await, json!({}));
    let entry = last_entry(&mut conn).await;
    assert_eq!(
        (entry.action.as_str(), entry.target_id.as_deref()),
        ("state.updated", Some("cluster.version"))
    );
    assert_eq!(entry.old_value.unwrap()["value"], json!("19"));
    assert_eq!(entry.new_value, None);
    assert_eq!(audit_rows(&mut conn).await, 3);
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 7, 3, None));

    // get_state reads the projection.
    assert!(apply(&mut conn, "c1", 8, "election.term", Some(json!(4))).await);
    let read: Value = sqlx::query_scalar("SELECT steep_repl.get_state('election.term')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(read, json!(4));
}

#[tokio::test]
async fn an_entry_of_another_cluster_is_refused_until_its_snapshot_is_installed() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    assert!(apply(&mut conn, "c1", 2, "a.b", Some(json!(1))).await);
    let (code, message) = db_error_code(
        conn.execute(
            "SELECT steep_repl.apply_state('c2', 9, 1, 'a.b', '2', false, 'x@y', NULL, NULL)",
        )
        .await,
    );
    assert_eq!(code, "55000");
    assert_eq!(
        message,
        "steep_repl.apply_state: this projection holds cluster 'c1', not 'c2'"
    );
    let message = db_error(
        conn.execute("SELECT steep_repl.advance_projection('c2', 9, 1)")
            .await,
    );
    assert!(message.contains("holds cluster 'c1'"), "{message}");

    // A snapshot of the new cluster is installed whatever its index.
    let installed: bool =
        sqlx::query_scalar("SELECT steep_repl.apply_state_snapshot('c2', 1, 1, '{\"x.y\": true}')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(installed);
    assert_eq!(state(&mut conn).await, json!({"x.y": true}));
    assert_eq!(projection(&mut conn).await, (Some("c2".into()), 1, 1, None));
    assert!(apply(&mut conn, "c2", 2, "a.b", Some(json!(2))).await);
}

/// A node that applies the whole log from its first entry starts its
/// projection from the empty map at index 0: the first snapshot is taken
/// at any index, 0 included, and only then is a replay refused.
#[tokio::test]
async fn the_first_snapshot_is_installed_at_index_0() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    assert_eq!(projection(&mut conn).await, (None, 0, 0, None));
    let install = || {
        sqlx::query_scalar::<_, bool>("SELECT steep_repl.apply_state_snapshot('c1', 0, 0, '{}')")
    };
    assert!(install().fetch_one(&mut conn).await.unwrap());
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 0, 0, None));
    assert_eq!(state(&mut conn).await, json!({}));
    assert!(!install().fetch_one(&mut conn).await.unwrap());
    assert!(apply(&mut conn, "c1", 1, "a.b", Some(json!(1))).await);
    assert_eq!(state(&mut conn).await, json!({"a.b": 1}));
}

#[tokio::test]
async fn a_snapshot_replaces_the_content_once_and_an_older_one_is_refused() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    assert!(apply(&mut conn, "c1", 3, "a.keep", Some(json!(1))).await);
    assert!(apply(&mut conn, "c1", 4, "a.drop", Some(json!(2))).await);
    assert!(apply(&mut conn, "c1", 5, "a.change", Some(json!(3))).await);
    let kept_at: String = sqlx::query_scalar(
        "SELECT updated_at::text FROM steep_repl.coordinator_state WHERE key = 'a.keep'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let rows_before = audit_rows(&mut conn).await;

    let snapshot = json!({"a.keep": 1, "a.change": 30, "b.new": {"n": [1, 2]}});
    let install = |index: i64| {
        sqlx::query_scalar::<_, bool>("SELECT steep_repl.apply_state_snapshot('c1', $1, 7, $2)")
            .bind(index)
            .bind(snapshot.clone())
    };
    assert!(install(10).fetch_one(&mut conn).await.unwrap());
    assert_eq!(state(&mut conn).await, snapshot);
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 10, 7, None)
    );
    // An unchanged key is not rewritten.
    let kept_after: String = sqlx::query_scalar(
        "SELECT updated_at::text FROM steep_repl.coordinator_state WHERE key = 'a.keep'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept_at, kept_after);
    // One audit row for the install, none per key.
    assert_eq!(audit_rows(&mut conn).await, rows_before + 1);
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "state.updated");
    assert_eq!(entry.target_type.as_deref(), Some("state"));
    assert_eq!(entry.target_id, None);
    assert_eq!(entry.actor, "postgres@127.0.0.1");
    assert_eq!(
        entry.old_value,
        Some(json!({"cluster_id": "c1", "applied_index": 5, "applied_term": 3, "keys": 3}))
    );
    assert_eq!(
        entry.new_value,
        Some(json!({"snapshot": {"cluster_id": "c1", "index": 10, "term": 7, "keys": 3}}))
    );

    // The same or an older snapshot, and entries it covers, change nothing.
    assert!(!install(10).fetch_one(&mut conn).await.unwrap());
    assert!(!install(9).fetch_one(&mut conn).await.unwrap());
    assert!(!apply(&mut conn, "c1", 8, "a.drop", Some(json!(2))).await);
    assert_eq!(state(&mut conn).await, snapshot);
    assert_eq!(audit_rows(&mut conn).await, rows_before + 1);
    assert!(apply(&mut conn, "c1", 11, "a.drop", Some(json!(2))).await);
}

#[tokio::test]
async fn advance_projection_moves_the_index_forward_only_and_writes_nothing() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let advance = |index: i64| {
        sqlx::query_scalar::<_, bool>("SELECT steep_repl.advance_projection('c1', $1, 2)")
            .bind(index)
    };
    assert!(advance(3).fetch_one(&mut conn).await.unwrap());
    assert!(!advance(3).fetch_one(&mut conn).await.unwrap());
    assert!(!advance(1).fetch_one(&mut conn).await.unwrap());
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 3, 2, None));
    assert_eq!(audit_rows(&mut conn).await, 0);
    assert!(!apply(&mut conn, "c1", 3, "a.b", Some(json!(1))).await);
    assert!(apply(&mut conn, "c1", 4, "a.b", Some(json!(1))).await);
    assert!(advance(9).fetch_one(&mut conn).await.unwrap());
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 9, 2, None));
}

#[tokio::test]
async fn bad_arguments_to_the_apply_functions_are_refused_naming_the_argument() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let state = |args: &str| format!("SELECT steep_repl.apply_state({args})");
    let member = |m: &str| format!("SELECT steep_repl.apply_membership(1, '[{m}]')");
    let coordinator = |args: &str| format!("SELECT steep_repl.apply_coordinator({args})");
    let ok =
        r#"{"node_id": "a", "grpc_host": "g", "grpc_port": 5433, "priority": 50, "role": "data"}"#;
    let cases = [
        (state("'', 1, 1, 'a.b', '1', false, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_cluster_id must not be empty".to_string()),
        (state("'c', -1, 1, 'a.b', '1', false, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_log_index must be 0 or more (got -1)".into()),
        (state("'c', 1, NULL, 'a.b', '1', false, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_log_term must be 0 or more (got NULL)".into()),
        (state("'c', 1, 1, 'a b', '1', false, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_key must be a dotted name such as cluster.version (got 'a b')".into()),
        (state("'c', 1, 1, 'a.b', NULL, false, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_value must not be NULL unless p_deleted is true".into()),
        (state("'c', 1, 1, 'a.b', '1', NULL, 'x@y', NULL, NULL"), "steep_repl.apply_state: p_deleted must not be NULL".into()),
        (state("'c', 1, 1, 'a.b', '1', false, 'nobody', NULL, NULL"), "steep_repl.apply_state: p_actor must have the form role@host (got 'nobody')".into()),
        ("SELECT steep_repl.apply_state_snapshot('c', 1, 1, '[]')".into(), "steep_repl.apply_state_snapshot: p_state must be a JSON object of key -> value (got array)".into()),
        ("SELECT steep_repl.apply_state_snapshot('c', 1, 1, '{\"ok.key\": 1, \"bad key\": 2}')".into(), "steep_repl.apply_state_snapshot: p_state key 'bad key' is not a dotted name such as cluster.version".into()),
        ("SELECT steep_repl.advance_projection(NULL, 1, 1)".into(), "steep_repl.advance_projection: p_cluster_id must not be empty".into()),
        ("SELECT steep_repl.apply_membership(1, '[]')".into(), "steep_repl.apply_membership: p_members must be a non-empty JSON array of members".into()),
        ("SELECT steep_repl.apply_membership(NULL, '[{}]')".into(), "steep_repl.apply_membership: p_log_index must be 0 or more (got NULL)".into()),
        (member(r#"{"grpc_host": "g"}"#), "steep_repl.apply_membership: p_members[0].node_id must not be empty".into()),
        (member(&format!("{ok}, {ok}")), "steep_repl.apply_membership: p_members[1].node_id 'a' appears twice".into()),
        (member(r#"{"node_id": "a", "grpc_port": 5433, "priority": 50, "role": "data"}"#), "steep_repl.apply_membership: p_members[0].grpc_host must not be empty".into()),
        (member(r#"{"node_id": "a", "grpc_host": "g", "grpc_port": 0, "priority": 50, "role": "data"}"#), "steep_repl.apply_membership: p_members[0].grpc_port must be an integer between 1 and 65535 (got 0)".into()),
        (member(r#"{"node_id": "a", "grpc_host": "g", "grpc_port": "5433", "priority": 50, "role": "data"}"#), "steep_repl.apply_membership: p_members[0].grpc_port must be an integer between 1 and 65535 (got \"5433\")".into()),
        (member(r#"{"node_id": "a", "grpc_host": "g", "grpc_port": 5433, "priority": 101, "role": "data"}"#), "steep_repl.apply_membership: p_members[0].priority must be an integer between 1 and 100 (got 101)".into()),
        (member(r#"{"node_id": "a", "grpc_host": "g", "grpc_port": 5433, "priority": 50, "role": "observer"}"#), "steep_repl.apply_membership: p_members[0].role must be data or witness (got 'observer')".into()),
        (member(r#"{"node_id": "a", "grpc_host": "g", "grpc_port": 5433, "priority": 50, "role": "data", "host": ""}"#), "steep_repl.apply_membership: p_members[0].host must be a non-empty string (got \"\")".into()),
        (coordinator("'', 1, 1, 'a', 1, NULL, 'coordinator.grant', 'x@y'"), "steep_repl.apply_coordinator: p_cluster_id must not be empty".into()),
        (coordinator("'c', 1, 1, 'a', 1, NULL, 'coordinator.renew', 'x@y'"), "steep_repl.apply_coordinator: p_method must be coordinator.grant, coordinator.release, coordinator.handover or snapshot (got 'coordinator.renew')".into()),
        (coordinator("'c', 1, 1, 'a', 1, NULL, NULL, 'x@y'"), "steep_repl.apply_coordinator: p_method must be coordinator.grant, coordinator.release, coordinator.handover or snapshot (got NULL)".into()),
        (coordinator("'c', 1, 1, '', 1, NULL, 'coordinator.grant', 'x@y'"), "steep_repl.apply_coordinator: p_holder must be a node_id or NULL (nobody)".into()),
        (coordinator("'c', 1, 1, 'a', 1, '', 'coordinator.grant', 'x@y'"), "steep_repl.apply_coordinator: p_previous_holder must be a node_id or NULL (nobody)".into()),
        (coordinator("'c', 1, 1, NULL, 1, NULL, 'coordinator.grant', 'x@y'"), "steep_repl.apply_coordinator: p_holder must not be NULL for coordinator.grant".into()),
        (coordinator("'c', 1, 1, NULL, 1, 'a', 'coordinator.handover', 'x@y'"), "steep_repl.apply_coordinator: p_holder must not be NULL for coordinator.handover".into()),
        (coordinator("'c', 1, 1, 'a', 1, 'a', 'coordinator.release', 'x@y'"), "steep_repl.apply_coordinator: p_holder must be NULL for coordinator.release (got 'a')".into()),
        (coordinator("'c', 1, 1, 'a', -1, NULL, 'coordinator.grant', 'x@y'"), "steep_repl.apply_coordinator: p_epoch must be 0 or more (got -1)".into()),
        (coordinator("'c', 1, 1, 'a', NULL, NULL, 'snapshot', 'x@y'"), "steep_repl.apply_coordinator: p_epoch must be 0 or more (got NULL)".into()),
        (coordinator("'c', 1, 1, 'a', 1, NULL, 'coordinator.grant', 'nobody'"), "steep_repl.apply_coordinator: p_actor must have the form role@host (got 'nobody')".into()),
    ];
    for (sql, expected) in cases {
        let (code, message) = db_error_code(conn.execute(sqlx::AssertSqlSafe(sql.clone())).await);
        assert_eq!(message, expected, "{sql}");
        assert_eq!(code, "22023", "{sql}: invalid_parameter_value expected");
    }
    assert_eq!(audit_rows(&mut conn).await, 0);
    assert_eq!(projection(&mut conn).await, (None, 0, 0, None));
}

const REFUSED: &str = "steep_repl.coordinator_state is replicated by the cluster";
const COMMAND: &str = "use \"steep-repl state set KEY VALUE\"";

#[tokio::test]
async fn direct_writes_and_set_state_are_refused_naming_the_command_to_use() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    assert!(apply(&mut conn, "c1", 1, "a.b", Some(json!(1))).await);
    let rows = audit_rows(&mut conn).await;
    for (sql, what) in [
        (
            "INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('c.d', '1')",
            "INSERT",
        ),
        (
            "INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('a.b', '2') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            "INSERT",
        ),
        (
            "UPDATE steep_repl.coordinator_state SET value = '2'",
            "UPDATE",
        ),
        // Refused even when it would touch no row.
        (
            "DELETE FROM steep_repl.coordinator_state WHERE false",
            "DELETE",
        ),
        ("DELETE FROM steep_repl.coordinator_state", "DELETE"),
        ("TRUNCATE steep_repl.coordinator_state", "TRUNCATE"),
        (
            "SELECT steep_repl.set_state('a.b', '2')",
            "steep_repl.set_state()",
        ),
    ] {
        let (code, message) = db_error_code(conn.execute(sql).await);
        assert_eq!(
            message,
            format!("{REFUSED}: {what} is refused; {COMMAND} (or \"steep-repl state delete KEY\")"),
            "{sql}"
        );
        assert_eq!(code, "42501", "{sql}");
    }
    // The hint names the IPC methods.
    match conn
        .execute("UPDATE steep_repl.coordinator_state SET value = '2'")
        .await
    {
        Err(sqlx::Error::Database(e)) => {
            let pg = e
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .unwrap();
            assert!(pg.hint().unwrap().contains("state.set"), "{:?}", pg.hint());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Replica mode does not switch the refusal off.
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let message = db_error(
        conn.execute("DELETE FROM steep_repl.coordinator_state")
            .await,
    );
    assert!(message.starts_with(REFUSED), "{message}");
    conn.execute("RESET session_replication_role")
        .await
        .unwrap();

    // The applied-index record is guarded the same way.
    for sql in [
        "UPDATE steep_repl.cluster_projection SET applied_index = 1000",
        "DELETE FROM steep_repl.cluster_projection",
        "TRUNCATE steep_repl.cluster_projection",
    ] {
        let message = db_error(conn.execute(sql).await);
        assert!(
            message.starts_with(
                "steep_repl.cluster_projection is written only by the steep-repl daemon"
            ),
            "{sql}: {message}"
        );
    }
    assert_eq!(state(&mut conn).await, json!({"a.b": 1}));
    assert_eq!(audit_rows(&mut conn).await, rows);
    assert_eq!(projection(&mut conn).await, (Some("c1".into()), 1, 3, None));
}

/// What the refusal does and does not prevent.
///
/// Prevented: any role that is not a superuser writing coordinator_state or
/// cluster_projection directly, even with every table privilege granted and
/// the apply functions' flag (`steep_repl.applying`) set by itself; such a
/// role writes only through the apply functions, and only when granted
/// EXECUTE on them.
///
/// Not prevented: a superuser. One who sets the flag itself writes directly
/// (and, for coordinator_state, unaudited); one can also COPY rows in (what
/// a pg_dump restore does), disable or drop the triggers. The refusal stops
/// mistakes and ordinary roles, not a superuser who means it.
#[tokio::test]
async fn an_ordinary_role_cannot_pass_the_refusal_by_setting_the_flag() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "CREATE ROLE operator LOGIN;
         GRANT USAGE ON SCHEMA steep_repl TO operator;
         GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
            ON steep_repl.coordinator_state, steep_repl.cluster_projection TO operator;",
    )
    .await
    .unwrap();
    assert!(apply(&mut conn, "c1", 1, "a.b", Some(json!(1))).await);
    let mut operator = PgConnection::connect_with(&pg.socket_options("operator", "postgres"))
        .await
        .unwrap();

    operator
        .execute("SET steep_repl.applying = on")
        .await
        .unwrap();
    for sql in [
        "INSERT INTO steep_repl.coordinator_state (key, value) VALUES ('c.d', '1')",
        "UPDATE steep_repl.coordinator_state SET value = '2'",
        "DELETE FROM steep_repl.coordinator_state",
        "TRUNCATE steep_repl.coordinator_state",
    ] {
        let message = db_error(operator.execute(sql).await);
        assert!(message.starts_with(REFUSED), "{sql}: {message}");
        operator.execute("ROLLBACK").await.ok();
    }
    // Since 0.3.0 the flag is a setting only a superuser may set: once the
    // library is loaded (the refusals above loaded it), setting it is refused.
    let message = db_error(
        operator
            .execute("BEGIN; SELECT set_config('steep_repl.applying', 'on', true); UPDATE steep_repl.coordinator_state SET value = '3'")
            .await,
    );
    assert_eq!(
        message,
        "permission denied to set parameter \"steep_repl.applying\""
    );
    operator.execute("ROLLBACK").await.ok();
    let message = db_error(
        operator
            .execute("UPDATE steep_repl.cluster_projection SET applied_index = 1000")
            .await,
    );
    assert!(message.contains("is refused"), "{message}");
    // COPY is refused too: only a superuser's COPY (a restore) passes.
    let message = db_error(copy_in(&mut operator, "c.d\t1\n").await);
    assert!(message.starts_with(REFUSED), "{message}");

    // The apply functions are not granted to PUBLIC...
    let message = db_error(
        operator
            .execute(
                "SELECT steep_repl.apply_state('c1', 2, 1, 'a.b', '2', false, 'x@y', NULL, NULL)",
            )
            .await,
    );
    assert_eq!(message, "permission denied for function apply_state");
    // ...and, once granted, are the way in.
    conn.execute("GRANT EXECUTE ON FUNCTION steep_repl.apply_state(text, bigint, bigint, text, jsonb, boolean, text, inet, text) TO operator")
        .await
        .unwrap();
    operator
        .execute("SELECT steep_repl.apply_state('c1', 2, 1, 'a.b', '2', false, 'x@y', NULL, NULL)")
        .await
        .unwrap();
    assert_eq!(state(&mut conn).await, json!({"a.b": 2}));

    // The limits, stated. A superuser's COPY passes (a pg_dump restore
    // loads the table so), and is audited by the ordinary trigger.
    let rows = audit_rows(&mut conn).await;
    copy_in(&mut conn, "c.d\t1\n").await.unwrap();
    assert_eq!(state(&mut conn).await, json!({"a.b": 2, "c.d": 1}));
    assert_eq!(audit_rows(&mut conn).await, rows + 1);
    assert_eq!(last_entry(&mut conn).await.actor, "postgres@127.0.0.1");
    // A superuser who sets the flag itself gets through.
    conn.execute("SET steep_repl.applying = on").await.unwrap();
    conn.execute("UPDATE steep_repl.coordinator_state SET value = '9'")
        .await
        .unwrap();
    conn.execute("RESET steep_repl.applying").await.unwrap();
    assert_eq!(state(&mut conn).await, json!({"a.b": 9, "c.d": 9}));
}

/// Loads `rows` (COPY text format) into coordinator_state.
async fn copy_in(conn: &mut PgConnection, rows: &str) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw("COPY steep_repl.coordinator_state (key, value) FROM STDIN")
        .await?;
    copy.send(rows.as_bytes()).await?;
    copy.finish().await
}

async fn node_rows(conn: &mut PgConnection) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(n) - 'last_seen' FROM steep_repl.nodes n ORDER BY node_id")
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn apply_membership_makes_the_identity_columns_equal_the_membership() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "SELECT steep_repl.register_node('a', 'A', 'db-a', 5432, 50, 'g-a', 5433);
         SELECT steep_repl.register_node('gone', 'Gone', 'db-gone');
         SELECT steep_repl.heartbeat('a', 'healthy');
         SELECT steep_repl.apply_coordinator('c1', 1, 1, 'a', 1, NULL, 'coordinator.grant', 'steep-repl@a');",
    )
    .await
    .unwrap();
    let seen_before: String =
        sqlx::query_scalar("SELECT last_seen::text FROM steep_repl.nodes WHERE node_id = 'a'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let rows_before = audit_rows(&mut conn).await;

    let members = json!([
        {"node_id": "a", "node_name": "Node A", "host": "db-a", "port": 5432,
         "grpc_host": "g-a2", "grpc_port": 5433, "priority": 80, "role": "data"},
        {"node_id": "w", "grpc_host": "g-w", "grpc_port": 7000, "priority": 10, "role": "witness"},
    ]);
    let membership = |index: i64, members: &Value| {
        sqlx::query_scalar::<_, i32>("SELECT steep_repl.apply_membership($1, $2)")
            .bind(index)
            .bind(members.clone())
    };
    assert_eq!(
        membership(4, &members).fetch_one(&mut conn).await.unwrap(),
        3
    );
    assert_eq!(
        node_rows(&mut conn).await,
        [
            json!({"node_id": "a", "node_name": "Node A", "host": "db-a", "port": 5432,
                   "priority": 80, "is_coordinator": true, "status": "healthy",
                   "grpc_host": "g-a2", "grpc_port": 5433, "role": "data"}),
            // A witness has no PostgreSQL: its row names the machine by its gRPC host.
            json!({"node_id": "w", "node_name": "w", "host": "g-w", "port": 5432,
                   "priority": 10, "is_coordinator": false, "status": "unknown",
                   "grpc_host": "g-w", "grpc_port": 7000, "role": "witness"}),
        ]
    );
    // last_seen is the node's own observation and stays.
    let seen_after: String =
        sqlx::query_scalar("SELECT last_seen::text FROM steep_repl.nodes WHERE node_id = 'a'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(seen_before, seen_after);
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, target_id FROM steep_repl.audit_log WHERE id > (SELECT max(id) FROM steep_repl.audit_log) - 3 ORDER BY action",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(audit_rows(&mut conn).await, rows_before + 3);
    assert_eq!(
        actions,
        [
            ("node.registered".to_string(), "w".to_string()),
            ("node.removed".to_string(), "gone".to_string()),
            ("node.updated".to_string(), "a".to_string()),
        ]
    );
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 1, 1, Some(4))
    );

    // A replay, an older membership, or the same one again change nothing.
    let older = json!([{"node_id": "x", "grpc_host": "g-x", "grpc_port": 1, "priority": 1, "role": "data"}]);
    assert_eq!(membership(4, &older).fetch_one(&mut conn).await.unwrap(), 0);
    assert_eq!(membership(2, &older).fetch_one(&mut conn).await.unwrap(), 0);
    assert_eq!(
        membership(6, &members).fetch_one(&mut conn).await.unwrap(),
        0
    );
    assert_eq!(audit_rows(&mut conn).await, rows_before + 3);
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 1, 1, Some(6))
    );

    // A status change by the node itself is still its own business.
    conn.execute("SELECT steep_repl.set_status('w', 'healthy')")
        .await
        .unwrap();
    let fewer = json!([{"node_id": "w", "grpc_host": "g-w", "grpc_port": 7000, "priority": 20, "role": "witness"}]);
    assert_eq!(membership(9, &fewer).fetch_one(&mut conn).await.unwrap(), 2);
    let rows: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT node_id, priority, status FROM steep_repl.nodes")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows, [("w".to_string(), 20, "healthy".to_string())]);
}

/// One apply_coordinator call with `args` as written in SQL.
async fn coordinate(conn: &mut PgConnection, args: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT steep_repl.apply_coordinator({args})"
    )))
    .fetch_one(conn)
    .await
}

/// The coordinator as projected: (coordinator_id, coordinator_epoch) of
/// projection(), and the node_ids whose is_coordinator is true.
async fn coordinator(conn: &mut PgConnection) -> (Option<String>, Option<i64>, Vec<String>) {
    let (id, epoch): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT coordinator_id, coordinator_epoch FROM steep_repl.projection()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let flagged = sqlx::query_scalar(
        "SELECT node_id FROM steep_repl.nodes WHERE is_coordinator ORDER BY node_id",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    (id, epoch, flagged)
}

fn held(
    id: Option<&str>,
    epoch: Option<i64>,
    flagged: &[&str],
) -> (Option<String>, Option<i64>, Vec<String>) {
    (
        id.map(str::to_string),
        epoch,
        flagged.iter().map(|s| s.to_string()).collect(),
    )
}

async fn action_count(conn: &mut PgConnection, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Data members n1, n2 and n3, as membership entry 1.
async fn three_members(conn: &mut PgConnection) {
    let members: Vec<Value> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| json!({"node_id": id, "grpc_host": format!("g-{id}"), "grpc_port": 7000, "priority": 50, "role": "data"}))
        .collect();
    sqlx::query("SELECT steep_repl.apply_membership(1, $1)")
        .bind(Value::Array(members))
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn apply_coordinator_sets_the_flags_and_audits_each_command_with_the_previous_holder_and_epoch(
) {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    three_members(&mut conn).await;
    assert_eq!(coordinator(&mut conn).await, held(None, None, &[]));
    let rows = audit_rows(&mut conn).await;
    let node_updates = action_count(&mut conn, "node.updated").await;

    let grant = "'c1', 5, 2, 'n1', 1, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(1), &["n1"])
    );
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "coordinator.elected");
    assert_eq!(entry.actor, "steep-repl@n1");
    assert_eq!(entry.client_ip, None);
    assert_eq!(
        (entry.target_type.as_deref(), entry.target_id.as_deref()),
        (Some("node"), Some("n1"))
    );
    assert_eq!(
        entry.old_value,
        Some(json!({"holder": null, "epoch": null}))
    );
    assert_eq!(
        entry.new_value,
        Some(json!({"holder": "n1", "epoch": 1, "previous": null,
                    "cluster_id": "c1", "log_index": 5, "log_term": 2}))
    );
    let expected_event: String =
        sqlx::query_scalar("SELECT steep_repl.log_event_id('c1', 5)::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(entry.event_id, Some(expected_event));
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 5, 2, Some(1))
    );

    // The next grant moves the flag and names the holder it replaces.
    let grant = "'c1', 6, 2, 'n2', 2, 'n1', 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n2"), Some(2), &["n2"])
    );
    let entry = last_entry(&mut conn).await;
    assert_eq!(entry.action, "coordinator.elected");
    assert_eq!(entry.target_id.as_deref(), Some("n2"));
    assert_eq!(entry.old_value, Some(json!({"holder": "n1", "epoch": 1})));
    let new = entry.new_value.unwrap();
    assert_eq!(
        (
            &new["holder"],
            &new["epoch"],
            &new["previous"],
            &new["log_index"]
        ),
        (&json!("n2"), &json!(2), &json!("n1"), &json!(6))
    );

    // A handover request keeps the holder until it releases.
    let handover = "'c1', 7, 2, 'n2', 2, 'n2', 'coordinator.handover', 'steep-repl@n3'";
    assert!(coordinate(&mut conn, handover).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n2"), Some(2), &["n2"])
    );
    let entry = last_entry(&mut conn).await;
    assert_eq!(
        (entry.action.as_str(), entry.target_id.as_deref()),
        ("coordinator.handover_requested", Some("n2"))
    );

    // A release leaves nobody, under the same epoch; the row names who left.
    let release = "'c1', 8, 2, NULL, 2, 'n2', 'coordinator.release', 'steep-repl@n2'";
    assert!(coordinate(&mut conn, release).await.unwrap());
    assert_eq!(coordinator(&mut conn).await, held(None, Some(2), &[]));
    let entry = last_entry(&mut conn).await;
    assert_eq!(
        (entry.action.as_str(), entry.target_id.as_deref()),
        ("coordinator.released", Some("n2"))
    );
    let new = entry.new_value.unwrap();
    assert_eq!(
        (&new["holder"], &new["epoch"], &new["previous"]),
        (&json!(null), &json!(2), &json!("n2"))
    );

    // One row per entry; the flag flips are not audited a second time.
    assert_eq!(audit_rows(&mut conn).await, rows + 4);
    assert_eq!(action_count(&mut conn, "node.updated").await, node_updates);
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 8, 2, Some(1))
    );
}

#[tokio::test]
async fn a_replayed_coordinator_entry_returns_false_and_writes_no_second_audit_row() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    three_members(&mut conn).await;
    let grant = "'c1', 5, 2, 'n1', 1, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    let rows = audit_rows(&mut conn).await;

    // The same entry again, or an older one whatever it carries (even an
    // epoch below the applied one): skipped, nothing written.
    assert!(!coordinate(&mut conn, grant).await.unwrap());
    let older = "'c1', 4, 2, 'n3', 0, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(!coordinate(&mut conn, older).await.unwrap());
    let older = "'c1', 5, 2, NULL, 1, 'n1', 'coordinator.release', 'steep-repl@n1'";
    assert!(!coordinate(&mut conn, older).await.unwrap());
    assert_eq!(audit_rows(&mut conn).await, rows);
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(1), &["n1"])
    );
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 5, 2, Some(1))
    );

    // Even a projection whose index went back (here a superuser rewinds it)
    // writes no second audit row for the entry: its event_id names it.
    conn.execute(
        "BEGIN;
         SET LOCAL steep_repl.applying = on;
         UPDATE steep_repl.cluster_projection SET applied_index = 4;
         COMMIT;",
    )
    .await
    .unwrap();
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert_eq!(audit_rows(&mut conn).await, rows);
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(1), &["n1"])
    );
}

#[tokio::test]
async fn an_epoch_lower_than_the_applied_one_is_refused() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    three_members(&mut conn).await;
    let grant = "'c1', 5, 2, 'n1', 3, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    let rows = audit_rows(&mut conn).await;

    for (args, expected) in [
        (
            "'c1', 6, 2, 'n2', 2, 'n1', 'coordinator.grant', 'steep-repl@n1'",
            "steep_repl.apply_coordinator: epoch 2 is older than the applied coordinator epoch 3 ('n1' of 'c1'): an epoch never goes back",
        ),
        (
            "'c1', 6, 2, NULL, 2, 'n1', 'coordinator.release', 'steep-repl@n1'",
            "steep_repl.apply_coordinator: epoch 2 is older than the applied coordinator epoch 3 ('n1' of 'c1'): an epoch never goes back",
        ),
        // One holder per epoch.
        (
            "'c1', 6, 2, 'n2', 3, 'n1', 'coordinator.grant', 'steep-repl@n1'",
            "steep_repl.apply_coordinator: coordinator.grant of epoch 3 to 'n2' is refused: that epoch is already applied with holder 'n1'",
        ),
    ] {
        let (code, message) = db_error_code(coordinate(&mut conn, args).await);
        assert_eq!(message, expected, "{args}");
        assert_eq!(code, "55000", "{args}");
    }
    // Nothing of the refused entries stays, not even their index.
    assert_eq!(audit_rows(&mut conn).await, rows);
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(3), &["n1"])
    );
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 5, 2, Some(1))
    );

    let grant = "'c1', 6, 2, 'n2', 4, 'n1', 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n2"), Some(4), &["n2"])
    );
}

const FLAG_REFUSED: &str =
    "steep_repl.nodes.is_coordinator is set only by the cluster's coordinator record";

/// is_coordinator is the projection of the cluster's record: no role but
/// the apply functions changes it, whatever its privileges on nodes. Its
/// other columns are not affected.
#[tokio::test]
async fn a_direct_change_of_the_coordinator_flag_is_refused_with_a_clear_error() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "CREATE ROLE operator LOGIN;
         GRANT USAGE ON SCHEMA steep_repl TO operator;
         GRANT SELECT, INSERT, UPDATE, DELETE ON steep_repl.nodes TO operator;",
    )
    .await
    .unwrap();
    three_members(&mut conn).await;
    let grant = "'c1', 5, 2, 'n1', 1, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    let rows = audit_rows(&mut conn).await;
    let mut operator = PgConnection::connect_with(&pg.socket_options("operator", "postgres"))
        .await
        .unwrap();

    let (code, message) = db_error_code(
        operator
            .execute("UPDATE steep_repl.nodes SET is_coordinator = false WHERE node_id = 'n1'")
            .await,
    );
    assert_eq!(
        message,
        format!("{FLAG_REFUSED}: UPDATE of is_coordinator is refused")
    );
    assert_eq!(code, "42501");
    match operator
        .execute("UPDATE steep_repl.nodes SET is_coordinator = (node_id = 'n2')")
        .await
    {
        Err(sqlx::Error::Database(e)) => {
            let pg = e
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .unwrap();
            assert!(
                pg.detail()
                    .unwrap()
                    .contains("steep_repl.apply_coordinator()"),
                "{:?}",
                pg.detail()
            );
            assert!(
                pg.hint().unwrap().contains("steep_repl.projection()"),
                "{:?}",
                pg.hint()
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Setting the apply functions' flag does not help a role that is not a
    // superuser (since 0.3.0 it may not even set it once the library is
    // loaded, as the refusal above did); a new row may not claim the role
    // either.
    let message = db_error(operator.execute("SET steep_repl.applying = on").await);
    assert_eq!(
        message,
        "permission denied to set parameter \"steep_repl.applying\""
    );
    for (sql, what) in [
        (
            "UPDATE steep_repl.nodes SET is_coordinator = true WHERE node_id = 'n2'",
            "UPDATE",
        ),
        (
            "INSERT INTO steep_repl.nodes (node_id, node_name, host, is_coordinator) VALUES ('n9', 'N9', 'h', true)",
            "INSERT",
        ),
    ] {
        let message = db_error(operator.execute(sql).await);
        assert_eq!(
            message,
            format!("{FLAG_REFUSED}: {what} of is_coordinator is refused"),
            "{sql}"
        );
    }
    // The other columns are the operator's to change, as before.
    operator
        .execute("UPDATE steep_repl.nodes SET status = 'healthy' WHERE node_id = 'n2'")
        .await
        .unwrap();
    operator
        .execute("UPDATE steep_repl.nodes SET is_coordinator = is_coordinator, status = 'degraded'")
        .await
        .unwrap();
    // A superuser is refused too unless it means it, in replica mode as well.
    let message = db_error(
        conn.execute("UPDATE steep_repl.nodes SET is_coordinator = false")
            .await,
    );
    assert!(message.starts_with(FLAG_REFUSED), "{message}");
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let message = db_error(
        conn.execute("UPDATE steep_repl.nodes SET is_coordinator = false")
            .await,
    );
    assert!(message.starts_with(FLAG_REFUSED), "{message}");
    conn.execute("RESET session_replication_role")
        .await
        .unwrap();

    // apply_coordinator is not granted to PUBLIC.
    let message = db_error(
        operator
            .execute("SELECT steep_repl.apply_coordinator('c1', 6, 2, 'n2', 2, 'n1', 'coordinator.grant', 'x@y')")
            .await,
    );
    assert_eq!(message, "permission denied for function apply_coordinator");

    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(1), &["n1"])
    );
    // The status changes (1 row, then 3) were audited; nothing else was.
    assert_eq!(audit_rows(&mut conn).await, rows + 4);
}

#[tokio::test]
async fn a_snapshot_sets_holder_and_epoch_without_an_audit_row() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    three_members(&mut conn).await;
    let installed: bool =
        sqlx::query_scalar("SELECT steep_repl.apply_state_snapshot('c1', 10, 2, '{\"a.b\": 1}')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(installed);
    let rows = audit_rows(&mut conn).await;

    let snapshot = "'c1', 10, 2, 'n2', 4, NULL, 'snapshot', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, snapshot).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n2"), Some(4), &["n2"])
    );
    assert_eq!(audit_rows(&mut conn).await, rows);
    // (The first snapshot also reset the membership index: the members
    // were applied before the projection held any cluster.)
    assert_eq!(
        projection(&mut conn).await,
        (Some("c1".into()), 10, 2, None)
    );
    // The same again changes nothing.
    assert!(!coordinate(&mut conn, snapshot).await.unwrap());

    // A snapshot whose state is not installed is refused; an older one, or
    // one the log has gone past, changes nothing.
    let (code, message) = db_error_code(
        coordinate(
            &mut conn,
            "'c1', 12, 2, 'n3', 5, NULL, 'snapshot', 'steep-repl@n1'",
        )
        .await,
    );
    assert_eq!(code, "55000");
    assert_eq!(
        message,
        "steep_repl.apply_coordinator: the snapshot of cluster 'c1' at log index 12 is not installed (this projection holds cluster 'c1' at log index 10)"
    );
    assert!(!coordinate(
        &mut conn,
        "'c1', 9, 2, 'n1', 3, NULL, 'snapshot', 'steep-repl@n1'"
    )
    .await
    .unwrap());
    let grant = "'c1', 11, 2, 'n3', 5, 'n2', 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert!(!coordinate(&mut conn, snapshot).await.unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n3"), Some(5), &["n3"])
    );
    // A lower epoch is refused from a snapshot too.
    conn.execute("SELECT steep_repl.advance_projection('c1', 20, 3)")
        .await
        .unwrap();
    let (code, message) = db_error_code(
        coordinate(
            &mut conn,
            "'c1', 20, 3, 'n1', 4, NULL, 'snapshot', 'steep-repl@n1'",
        )
        .await,
    );
    assert_eq!(code, "55000");
    assert!(message.contains("an epoch never goes back"), "{message}");
    assert_eq!(audit_rows(&mut conn).await, rows + 1);

    // A snapshot of another cluster clears the coordinator: that cluster's
    // record comes next, its epochs counted afresh.
    let installed: bool =
        sqlx::query_scalar("SELECT steep_repl.apply_state_snapshot('c2', 3, 1, '{}')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(installed);
    assert_eq!(coordinator(&mut conn).await, held(None, None, &[]));
    assert!(coordinate(
        &mut conn,
        "'c2', 3, 1, 'n1', 1, NULL, 'snapshot', 'steep-repl@n1'"
    )
    .await
    .unwrap());
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n1"), Some(1), &["n1"])
    );
    // An entry of the old cluster is refused.
    let message = db_error(
        coordinate(
            &mut conn,
            "'c1', 21, 3, 'n2', 6, 'n3', 'coordinator.grant', 'steep-repl@n1'",
        )
        .await,
    );
    assert!(
        message.contains("holds cluster 'c2', not 'c1'"),
        "{message}"
    );
}

#[tokio::test]
async fn a_holder_whose_membership_is_applied_after_its_grant_gets_the_flag() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    three_members(&mut conn).await;
    let grant = "'c1', 5, 2, 'n4', 1, NULL, 'coordinator.grant', 'steep-repl@n1'";
    assert!(coordinate(&mut conn, grant).await.unwrap());
    assert_eq!(coordinator(&mut conn).await, held(Some("n4"), Some(1), &[]));
    let members = json!([
        {"node_id": "n1", "grpc_host": "g-n1", "grpc_port": 7000, "priority": 50, "role": "data"},
        {"node_id": "n4", "grpc_host": "g-n4", "grpc_port": 7000, "priority": 50, "role": "data"},
    ]);
    sqlx::query("SELECT steep_repl.apply_membership(6, $1)")
        .bind(members)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        coordinator(&mut conn).await,
        held(Some("n4"), Some(1), &["n4"])
    );
}

/// Every audit row of state changes, without the times (which differ).
async fn state_audit(conn: &mut PgConnection) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('action', action, 'actor', actor, 'target', target_id,
                'old', old_value - 'updated_at', 'new', new_value - 'updated_at',
                'ip', host(client_ip), 'event', event_id)
           FROM steep_repl.audit_log WHERE action = 'state.updated' ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

fn batch_entry(index: i64, key: &str, value: Option<Value>) -> Value {
    json!({
        "index": index, "term": 3, "key": key, "deleted": value.is_none(),
        "value": value, "actor": "alice@10.0.0.7", "client_ip": "10.0.0.7",
        "request_id": format!("req-{index}"),
    })
}

async fn apply_batch(conn: &mut PgConnection, entries: Value) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT steep_repl.apply_state_batch('c1', $1)")
        .bind(entries)
        .fetch_one(conn)
        .await
}

#[tokio::test]
async fn a_batch_of_entries_writes_what_applying_them_one_by_one_writes() {
    let (_one_pg, mut one) = server_with_extension().await.unwrap();
    let (_batch_pg, mut batch) = server_with_extension().await.unwrap();
    // Keys set, updated, deleted and set again, several in one run.
    let entries: Vec<(i64, &str, Option<Value>)> = vec![
        (5, "app.a", Some(json!(1))),
        (6, "app.b", Some(json!({"x": true}))),
        (7, "app.a", Some(json!(2))),
        (8, "app.b", None),
        (9, "app.b", Some(json!("again"))),
        (11, "app.a", None),
        (12, "app.c", Some(json!(null))),
    ];
    for (index, key, value) in &entries {
        assert!(apply(&mut one, "c1", *index, key, value.clone()).await);
    }
    let all: Vec<Value> = entries
        .iter()
        .map(|(i, k, v)| batch_entry(*i, k, v.clone()))
        .collect();
    assert_eq!(apply_batch(&mut batch, json!(all[..4])).await.unwrap(), 4);
    // The next run overlaps the first: what is applied already is skipped.
    assert_eq!(apply_batch(&mut batch, json!(all[2..])).await.unwrap(), 3);
    assert_eq!(apply_batch(&mut batch, json!(all)).await.unwrap(), 0);

    assert_eq!(state(&mut batch).await, state(&mut one).await);
    assert_eq!(
        state(&mut batch).await,
        json!({"app.b": "again", "app.c": null})
    );
    assert_eq!(state_audit(&mut batch).await, state_audit(&mut one).await);
    assert_eq!(state_audit(&mut batch).await.len(), entries.len());
    assert_eq!(projection(&mut batch).await, projection(&mut one).await);
}

#[tokio::test]
async fn a_bad_entry_in_a_batch_is_refused_naming_it_and_nothing_is_written() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let good = batch_entry(5, "app.a", Some(json!(1)));
    let cases = [
        (
            json!([good, batch_entry(6, "app/b", Some(json!(1)))]),
            "p_entries[2].key must be a dotted name",
        ),
        (
            json!([good, batch_entry(5, "app.b", Some(json!(1)))]),
            "p_entries[2].index 5 does not follow",
        ),
        (
            json!([good, {"index": 6, "term": 3, "key": "app.b", "deleted": false, "actor": "a@b"}]),
            "p_entries[2].value is missing",
        ),
        (
            json!([good, {"index": 6, "term": 3, "key": "app.b", "deleted": false, "value": 1, "actor": "nobody"}]),
            "p_entries[2].actor must have the form role@host",
        ),
        (
            json!([{"index": -1, "term": 3}]),
            "p_entries[1] must be an object with a whole index",
        ),
        (json!({"index": 6}), "p_entries must be a JSON array"),
    ];
    for (entries, expected) in cases {
        let (code, message) = db_error_code(apply_batch(&mut conn, entries.clone()).await);
        assert!(message.contains(expected), "{entries}: {message}");
        assert_eq!(code, "22023", "{message}");
    }
    assert_eq!(state(&mut conn).await, json!({}));
    assert_eq!(audit_rows(&mut conn).await, 0);
    assert_eq!(projection(&mut conn).await, (None, 0, 0, None));
}

//! The extension's privileges (since 0.3.0): three roles with the least each
//! needs, audit rows written only by the extension's own code with real
//! values, no session setting that skips the audit, a minimum retention,
//! TRUNCATE refused on the audited tables and the audit triggers ALWAYS on.
//!
//! Logins are made over the Unix socket (trusted) as roles that are members
//! of one of the three roles; the superuser connection sets up and checks.

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use steep_repl_tests::ext::{db_error, server_with_extension};
use steep_repl_tests::pg::PgServer;

/// Creates login role `name` as a member of `group` and connects as it.
async fn login(pg: &PgServer, conn: &mut PgConnection, name: &str, group: &str) -> PgConnection {
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {name} LOGIN IN ROLE {group}"
    )))
    .await
    .unwrap();
    PgConnection::connect_with(&pg.socket_options(name, "postgres"))
        .await
        .unwrap()
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    id: i64,
    action: String,
    actor: String,
    client_ip: Option<String>,
    future: bool,
}

async fn audit_rows(conn: &mut PgConnection) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, action, actor, host(client_ip) AS client_ip, occurred_at > now() AS future
           FROM steep_repl.audit_log ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_three_roles_are_created_nologin_once_and_a_second_database_installs_too() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let roles: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolcanlogin, rolsuper FROM pg_roles
          WHERE rolname LIKE 'steep\\_repl\\_%' ORDER BY rolname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        roles,
        [
            ("steep_repl_admin".to_string(), false, false),
            ("steep_repl_daemon".to_string(), false, false),
            ("steep_repl_reader".to_string(), false, false),
        ]
    );
    // Roles belong to the whole server: a second database reuses them and
    // gets its own grants.
    conn.execute("CREATE DATABASE second").await.unwrap();
    let mut second = pg.connect_to("second").await.unwrap();
    second.execute("CREATE EXTENSION steep_repl").await.unwrap();
    let granted: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('steep_repl_reader', 'steep_repl.audit_log', 'SELECT')",
    )
    .fetch_one(&mut second)
    .await
    .unwrap();
    assert!(granted);
    // And the extension installs again after a DROP (the roles stay).
    conn.execute("DROP EXTENSION steep_repl; CREATE EXTENSION steep_repl")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_role_of_that_name_that_another_role_may_grant_is_refused() {
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();
    // A CREATEROLE role that makes steep_repl_daemon holds ADMIN OPTION on
    // it: it could later grant itself the daemon's rights.
    conn.execute("CREATE ROLE maker LOGIN CREATEROLE")
        .await
        .unwrap();
    let mut maker = PgConnection::connect_with(&pg.socket_options("maker", "postgres"))
        .await
        .unwrap();
    maker
        .execute("CREATE ROLE steep_repl_daemon NOLOGIN")
        .await
        .unwrap();
    let message = db_error(conn.execute("CREATE EXTENSION steep_repl").await);
    assert_eq!(
        message,
        "role steep_repl_daemon already exists and role maker, which is not a superuser, may grant it (ADMIN OPTION)"
    );
    conn.execute("REVOKE ADMIN OPTION FOR steep_repl_daemon FROM maker")
        .await
        .unwrap();
    conn.execute("CREATE EXTENSION steep_repl").await.unwrap();
}

#[tokio::test]
async fn each_role_may_do_what_it_needs_and_nothing_more() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "SELECT steep_repl.apply_membership(1, '[{\"node_id\": \"a\", \"grpc_host\": \"h\", \"grpc_port\": 5433, \"priority\": 50, \"role\": \"data\"}]')",
    )
    .await
    .unwrap();
    let mut daemon = login(&pg, &mut conn, "d", "steep_repl_daemon").await;
    let mut admin = login(&pg, &mut conn, "o", "steep_repl_admin").await;
    let mut reader = login(&pg, &mut conn, "r", "steep_repl_reader").await;

    // Everybody reads.
    for session in [&mut daemon, &mut admin, &mut reader] {
        for sql in [
            "SELECT count(*) FROM steep_repl.nodes",
            "SELECT count(*) FROM steep_repl.audit_log",
            "SELECT count(*) FROM steep_repl.coordinator_state",
            "SELECT * FROM steep_repl.projection()",
        ] {
            session.execute(sql).await.unwrap();
        }
    }
    // Nobody writes a table directly, nor an audit row.
    for session in [&mut daemon, &mut admin, &mut reader] {
        for (sql, object) in [
            ("UPDATE steep_repl.nodes SET status = 'healthy'", "table nodes"),
            ("DELETE FROM steep_repl.nodes", "table nodes"),
            (
                "INSERT INTO steep_repl.audit_log (action, actor) VALUES ('daemon.started', 'steep-repl@a')",
                "table audit_log",
            ),
            (
                "SELECT steep_repl.write_audit('daemon.started', NULL, NULL, NULL, NULL)",
                "function write_audit",
            ),
            ("SELECT nextval('steep_repl.audit_log_id_seq')", "sequence audit_log_id_seq"),
        ] {
            let message = db_error(session.execute(sql).await);
            assert_eq!(message, format!("permission denied for {object}"), "{sql}");
        }
    }
    // The daemon: its writes, through the extension's functions.
    let registered: bool =
        sqlx::query_scalar("SELECT steep_repl.record_peer_status('a', 'healthy')")
            .fetch_one(&mut daemon)
            .await
            .unwrap();
    assert!(registered);
    let seen: bool = sqlx::query_scalar("SELECT steep_repl.record_peer_seen('a')")
        .fetch_one(&mut daemon)
        .await
        .unwrap();
    assert!(seen);
    daemon
        .execute("SELECT steep_repl.apply_state('c1', 2, 1, 'a.b', '1', false, 'steep-repl@a', NULL, NULL)")
        .await
        .unwrap();
    daemon
        .execute("SELECT steep_repl.prune_audit('30 days')")
        .await
        .unwrap();
    for sql in [
        "SELECT steep_repl.register_node('x', 'X', 'h')",
        "SELECT steep_repl.set_status('a', 'offline')",
        "SELECT steep_repl.remove_node('a')",
    ] {
        assert!(
            db_error(daemon.execute(sql).await).starts_with("permission denied for function"),
            "{sql}"
        );
    }
    // An operator: the operator functions, not the daemon's.
    admin
        .execute("SELECT steep_repl.set_status('a', 'offline')")
        .await
        .unwrap();
    admin
        .execute("SELECT steep_repl.prune_audit('30 days')")
        .await
        .unwrap();
    for sql in [
        "SELECT steep_repl.record_peer_status('a', 'healthy')",
        "SELECT steep_repl.apply_state('c1', 3, 1, 'a.b', '2', false, 'steep-repl@a', NULL, NULL)",
        "SELECT steep_repl.append_daemon_events('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
    ] {
        assert!(
            db_error(admin.execute(sql).await).starts_with("permission denied for function"),
            "{sql}"
        );
    }
    // A reader: nothing but reading.
    for sql in [
        "SELECT steep_repl.prune_audit('30 days')",
        "SELECT steep_repl.set_status('a', 'healthy')",
        "SELECT steep_repl.record_peer_seen('a')",
    ] {
        assert!(
            db_error(reader.execute(sql).await).starts_with("permission denied for function"),
            "{sql}"
        );
    }
    let value: Value = sqlx::query_scalar("SELECT steep_repl.get_state('a.b')")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(value, json!(1));
}

#[tokio::test]
async fn the_actor_setting_names_the_actor_only_for_the_daemons_role() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let mut admin = login(&pg, &mut conn, "o", "steep_repl_admin").await;
    admin
        .execute("SET steep_repl.actor = 'steep-repl@node-a'")
        .await
        .unwrap();
    admin
        .execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let mut daemon = login(&pg, &mut conn, "d", "steep_repl_daemon").await;
    daemon
        .execute("SET steep_repl.actor = 'steep-repl@node-a'")
        .await
        .unwrap();
    daemon
        .execute("SELECT steep_repl.record_peer_status('a', 'healthy')")
        .await
        .unwrap();
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM steep_repl.audit_log ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        actors,
        [
            ("node.registered".to_string(), "o@local".to_string()),
            (
                "node.status_changed".to_string(),
                "steep-repl@node-a".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn audit_rows_take_their_id_from_the_sequence_and_no_time_after_now() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    // Even the owner's own INSERT cannot choose the id or a future time:
    // the largest id with occurred_at infinity once moved the sequence to
    // its end, and every audited change failed from then on.
    conn.execute(
        "INSERT INTO steep_repl.audit_log (id, occurred_at, action, actor)
         VALUES (9223372036854775807, 'infinity', 'daemon.started', 'x@y'),
                (9223372036854775806, now() + interval '1 year', 'daemon.started', 'x@y')",
    )
    .await
    .unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    let rows = audit_rows(&mut conn).await;
    assert_eq!(
        rows.iter().map(|r| (r.id, r.future)).collect::<Vec<_>>(),
        [(1, false), (2, false), (3, false)]
    );
    assert_eq!(rows[2].action, "node.registered");
}

#[tokio::test]
async fn the_daemons_events_keep_their_time_up_to_now_and_a_replay_writes_nothing() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let mut daemon = login(&pg, &mut conn, "d", "steep_repl_daemon").await;
    daemon
        .execute("SET steep_repl.actor = 'steep-repl@node-a'")
        .await
        .unwrap();
    let batch = "SELECT steep_repl.append_daemon_events(
        ARRAY['00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002',
              '00000000-0000-4000-8000-000000000003']::uuid[],
        ARRAY[now() - interval '2 hours', 'infinity', now() + interval '1 day']::timestamptz[],
        ARRAY['daemon.started', 'peer.auth_failed', 'daemon.stopped'],
        ARRAY['daemon', 'node', 'daemon'], ARRAY['node-a', 'node-b', 'node-a'],
        ARRAY[NULL, NULL, NULL]::jsonb[], ARRAY['{\"v\": 1}', NULL, NULL]::jsonb[],
        ARRAY[NULL, '10.0.0.9', NULL]::inet[], ARRAY[true, false, true], ARRAY[NULL, 'bad certificate', NULL])";
    let inserted: i64 = sqlx::query_scalar(batch)
        .fetch_one(&mut daemon)
        .await
        .unwrap();
    assert_eq!(inserted, 3);
    let again: i64 = sqlx::query_scalar(batch)
        .fetch_one(&mut daemon)
        .await
        .unwrap();
    assert_eq!(again, 0, "a replayed batch writes nothing");

    let rows: Vec<(String, String, Option<String>, bool, bool)> = sqlx::query_as(
        "SELECT action, actor, host(client_ip), occurred_at < now() - interval '1 hour',
                occurred_at <= now()
           FROM steep_repl.audit_log ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "daemon.started".into(),
                "steep-repl@node-a".into(),
                None,
                true,
                true
            ),
            (
                "peer.auth_failed".into(),
                "steep-repl@node-a".into(),
                Some("10.0.0.9".into()),
                false,
                true
            ),
            (
                "daemon.stopped".into(),
                "steep-repl@node-a".into(),
                None,
                false,
                true
            ),
        ]
    );
    // Arrays of different lengths are refused, naming the rule.
    let message = db_error(
        daemon
            .execute("SELECT steep_repl.append_daemon_events(ARRAY[gen_random_uuid()], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')")
            .await,
    );
    assert_eq!(
        message,
        "steep_repl.append_daemon_events: every array must have one element per event (1 event ids)"
    );
}

#[tokio::test]
async fn no_session_setting_skips_the_audit_or_lets_a_row_go() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "CREATE ROLE operator LOGIN;
         GRANT USAGE ON SCHEMA steep_repl TO operator;
         GRANT SELECT, UPDATE, DELETE ON steep_repl.nodes, steep_repl.audit_log TO operator;
         SELECT steep_repl.register_node('a', 'A', 'h');
         INSERT INTO steep_repl.audit_log (occurred_at, action, actor)
         VALUES (now() - interval '400 days', 'daemon.started', 'steep-repl@a');",
    )
    .await
    .unwrap();
    let mut operator = PgConnection::connect_with(&pg.socket_options("operator", "postgres"))
        .await
        .unwrap();
    // The 0.2.0 switch that allowed deletes is gone: even an old row stays.
    operator
        .execute("SET steep_repl.prune_in_progress = on")
        .await
        .unwrap();
    let message = db_error(operator.execute("DELETE FROM steep_repl.audit_log").await);
    assert_eq!(
        message,
        "steep_repl.audit_log is append-only: DELETE is not allowed"
    );

    // steep_repl.applying: a value set before the library is loaded is
    // dropped when it is, and the change is audited.
    operator
        .execute("SET steep_repl.applying = on")
        .await
        .unwrap();
    let before = audit_rows(&mut conn).await.len();
    operator
        .execute("UPDATE steep_repl.nodes SET host = 'h2'")
        .await
        .unwrap();
    assert_eq!(audit_rows(&mut conn).await.len(), before + 1);
    // Once it is loaded, setting it is refused outright.
    let message = db_error(operator.execute("SET steep_repl.applying = on").await);
    assert_eq!(
        message,
        "permission denied to set parameter \"steep_repl.applying\""
    );
    let message = db_error(
        operator
            .execute("SELECT set_config('steep_repl.applying', 'on', false)")
            .await,
    );
    assert_eq!(
        message,
        "permission denied to set parameter \"steep_repl.applying\""
    );
    let last: (String, String) =
        sqlx::query_as("SELECT action, actor FROM steep_repl.audit_log ORDER BY id DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        last,
        ("node.updated".to_string(), "operator@local".to_string())
    );
}

#[tokio::test]
async fn prune_audit_keeps_at_least_the_minimum_retention() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "INSERT INTO steep_repl.audit_log (occurred_at, action, actor)
         SELECT now() - interval '2 days', 'daemon.started', 'steep-repl@a';
         SELECT steep_repl.register_node('a', 'A', 'h');",
    )
    .await
    .unwrap();
    for interval in ["1 microsecond", "23 hours 59 minutes"] {
        let message = db_error(
            conn.execute(sqlx::AssertSqlSafe(format!(
                "SELECT steep_repl.prune_audit('{interval}')"
            )))
            .await,
        );
        assert!(
            message.starts_with(
                "steep_repl.prune_audit: older_than must be at least 1 day (the minimum retention; got "
            ),
            "{message}"
        );
    }
    let deleted: i64 = sqlx::query_scalar("SELECT steep_repl.prune_audit('1 day')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM steep_repl.audit_log ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(actions, ["node.registered", "audit.pruned"]);
    // Not even a superuser deletes a row younger than the minimum.
    let message = db_error(conn.execute("DELETE FROM steep_repl.audit_log").await);
    assert_eq!(
        message,
        "steep_repl.audit_log is append-only: DELETE is not allowed"
    );
}

#[tokio::test]
async fn truncate_is_refused_and_the_audit_holds_in_replica_mode() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("SELECT steep_repl.register_node('a', 'A', 'h')")
        .await
        .unwrap();
    for table in [
        "nodes",
        "coordinator_state",
        "cluster_projection",
        "audit_log",
    ] {
        let message = db_error(
            conn.execute(sqlx::AssertSqlSafe(format!("TRUNCATE steep_repl.{table}")))
                .await,
        );
        assert!(message.contains("TRUNCATE"), "{table}: {message}");
    }
    // Not even inside the apply functions' flag.
    let message = db_error(
        conn.execute(
            "BEGIN; SET LOCAL steep_repl.applying = on; TRUNCATE steep_repl.coordinator_state",
        )
        .await,
    );
    assert!(message.contains("TRUNCATE is refused"), "{message}");
    conn.execute("ROLLBACK").await.unwrap();

    // Every trigger of the extension fires in replica mode too.
    let not_always: Vec<String> = sqlx::query_scalar(
        "SELECT t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE c.relnamespace = 'steep_repl'::regnamespace AND NOT t.tgisinternal
            AND t.tgenabled <> 'A' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(not_always, Vec::<String>::new());
    conn.execute(
        "SET session_replication_role = replica;
         UPDATE steep_repl.nodes SET host = 'elsewhere';
         RESET session_replication_role;",
    )
    .await
    .unwrap();
    let last: String =
        sqlx::query_scalar("SELECT action FROM steep_repl.audit_log ORDER BY id DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(last, "node.updated");
}

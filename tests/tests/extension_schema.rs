//! The objects `CREATE EXTENSION steep_repl` creates, read back from the
//! catalogs and compared with what docs/operations.md ("What it creates")
//! describes.

use sqlx::{Executor, Row};
use steep_repl_tests::ext::{db_error, server_with_extension};
use steep_repl_tests::paths::repo_root;
use steep_repl_tests::pg::PgServer;

type Column = (String, String, String, String, Option<String>);

fn col(table: &str, name: &str, ty: &str, nullable: bool, default: Option<&str>) -> Column {
    (
        table.to_string(),
        name.to_string(),
        ty.to_string(),
        if nullable { "YES" } else { "NO" }.to_string(),
        default.map(str::to_string),
    )
}

#[tokio::test]
async fn the_extension_creates_exactly_four_tables_in_its_schema() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
          WHERE relnamespace = 'steep_repl'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f')
          ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "audit_log",
            "cluster_projection",
            "coordinator_state",
            "nodes"
        ]
    );
}

#[tokio::test]
async fn columns_types_nullability_and_defaults_match_the_spec() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let rows: Vec<Column> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text
           FROM information_schema.columns
          WHERE table_schema = 'steep_repl'
          ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let tz = "timestamp with time zone";
    let expected = vec![
        col("audit_log", "id", "bigint", false, None),
        col("audit_log", "occurred_at", tz, false, Some("now()")),
        col("audit_log", "action", "text", false, None),
        col("audit_log", "actor", "text", false, None),
        col("audit_log", "target_type", "text", true, None),
        col("audit_log", "target_id", "text", true, None),
        col("audit_log", "old_value", "jsonb", true, None),
        col("audit_log", "new_value", "jsonb", true, None),
        col("audit_log", "client_ip", "inet", true, None),
        col("audit_log", "success", "boolean", false, Some("true")),
        col("audit_log", "error_message", "text", true, None),
        col("audit_log", "event_id", "uuid", true, None),
        col("cluster_projection", "id", "boolean", false, Some("true")),
        col("cluster_projection", "cluster_id", "text", true, None),
        col(
            "cluster_projection",
            "applied_index",
            "bigint",
            false,
            Some("0"),
        ),
        col(
            "cluster_projection",
            "applied_term",
            "bigint",
            false,
            Some("0"),
        ),
        col(
            "cluster_projection",
            "membership_index",
            "bigint",
            true,
            None,
        ),
        col("cluster_projection", "coordinator_id", "text", true, None),
        col(
            "cluster_projection",
            "coordinator_epoch",
            "bigint",
            true,
            None,
        ),
        col("cluster_projection", "updated_at", tz, false, Some("now()")),
        col("coordinator_state", "key", "text", false, None),
        col("coordinator_state", "value", "jsonb", false, None),
        col("coordinator_state", "updated_at", tz, false, Some("now()")),
        col("nodes", "node_id", "text", false, None),
        col("nodes", "node_name", "text", false, None),
        col("nodes", "host", "text", false, None),
        col("nodes", "port", "integer", false, Some("5432")),
        col("nodes", "priority", "integer", false, Some("50")),
        col("nodes", "is_coordinator", "boolean", false, Some("false")),
        col("nodes", "last_seen", tz, true, None),
        col("nodes", "status", "text", false, Some("'unknown'::text")),
        col("nodes", "grpc_host", "text", true, None),
        col("nodes", "grpc_port", "integer", true, None),
        col("nodes", "role", "text", false, Some("'data'::text")),
    ];
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn indexes_are_the_ones_the_spec_names() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'steep_repl' ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let expected = [
        ("audit_log_pkey", "CREATE UNIQUE INDEX audit_log_pkey ON steep_repl.audit_log USING btree (id)"),
        ("cluster_projection_pkey", "CREATE UNIQUE INDEX cluster_projection_pkey ON steep_repl.cluster_projection USING btree (id)"),
        ("coordinator_state_pkey", "CREATE UNIQUE INDEX coordinator_state_pkey ON steep_repl.coordinator_state USING btree (key)"),
        ("idx_audit_log_action", "CREATE INDEX idx_audit_log_action ON steep_repl.audit_log USING btree (action)"),
        ("idx_audit_log_actor", "CREATE INDEX idx_audit_log_actor ON steep_repl.audit_log USING btree (actor)"),
        ("idx_audit_log_event_id", "CREATE UNIQUE INDEX idx_audit_log_event_id ON steep_repl.audit_log USING btree (event_id) WHERE (event_id IS NOT NULL)"),
        ("idx_audit_log_occurred_at", "CREATE INDEX idx_audit_log_occurred_at ON steep_repl.audit_log USING btree (occurred_at DESC)"),
        ("idx_audit_log_target", "CREATE INDEX idx_audit_log_target ON steep_repl.audit_log USING btree (target_type, target_id) WHERE (target_type IS NOT NULL)"),
        ("idx_nodes_coordinator", "CREATE UNIQUE INDEX idx_nodes_coordinator ON steep_repl.nodes USING btree (is_coordinator) WHERE is_coordinator"),
        ("idx_nodes_status", "CREATE INDEX idx_nodes_status ON steep_repl.nodes USING btree (status)"),
        ("nodes_pkey", "CREATE UNIQUE INDEX nodes_pkey ON steep_repl.nodes USING btree (node_id)"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn check_constraints_cover_every_rule_of_the_spec() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid)
           FROM pg_constraint
          WHERE connamespace = 'steep_repl'::regnamespace AND contype = 'c'
          ORDER BY conname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "audit_log_action_format",
            "audit_log_actor_format",
            "audit_log_target_type_valid",
            "cluster_projection_applied_index_not_negative",
            "cluster_projection_applied_term_not_negative",
            "cluster_projection_cluster_id_not_empty",
            "cluster_projection_coordinator_epoch_not_negative",
            "cluster_projection_coordinator_id_not_empty",
            "cluster_projection_membership_index_not_negative",
            "cluster_projection_single_row",
            "coordinator_state_key_dotted",
            "nodes_grpc_host_not_empty",
            "nodes_grpc_port_range",
            "nodes_host_not_empty",
            "nodes_node_id_not_empty",
            "nodes_node_name_not_empty",
            "nodes_port_range",
            "nodes_priority_range",
            "nodes_role_valid",
            "nodes_status_valid",
        ]
    );
    let def = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    assert_eq!(
        def("nodes_port_range"),
        "CHECK (((port >= 1) AND (port <= 65535)))"
    );
    assert_eq!(
        def("nodes_priority_range"),
        "CHECK (((priority >= 1) AND (priority <= 100)))"
    );
    assert_eq!(
        def("nodes_role_valid"),
        "CHECK ((role = ANY (ARRAY['data'::text, 'witness'::text])))"
    );
    assert_eq!(
        def("nodes_status_valid"),
        "CHECK ((status = ANY (ARRAY['unknown'::text, 'healthy'::text, 'degraded'::text, 'unreachable'::text, 'offline'::text])))"
    );
}

#[tokio::test]
async fn every_object_of_the_extension_carries_a_comment() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let undocumented: Vec<String> = sqlx::query_scalar(
        "SELECT kind || ' ' || name FROM (
             SELECT 'table' AS kind, c.oid::regclass::text AS name, obj_description(c.oid, 'pg_class') AS d
               FROM pg_class c WHERE c.relnamespace = 'steep_repl'::regnamespace AND c.relkind IN ('r', 'i')
             UNION ALL
             SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, col_description(a.attrelid, a.attnum)
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              WHERE c.relnamespace = 'steep_repl'::regnamespace AND c.relkind = 'r'
                AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT 'function', p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc')
               FROM pg_proc p WHERE p.pronamespace = 'steep_repl'::regnamespace
             UNION ALL
             SELECT 'trigger', t.tgname::text, obj_description(t.oid, 'pg_trigger')
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE c.relnamespace = 'steep_repl'::regnamespace AND NOT t.tgisinternal
             UNION ALL
             SELECT 'schema', 'steep_repl', obj_description('steep_repl'::regnamespace, 'pg_namespace')
         ) o WHERE d IS NULL OR d = '' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        undocumented.is_empty(),
        "objects without COMMENT ON: {undocumented:?}"
    );
}

#[tokio::test]
async fn the_sql_api_is_the_documented_set_of_functions() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
          WHERE p.pronamespace = 'steep_repl'::regnamespace ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        functions,
        [
            "steep_repl.advance_projection(text,bigint,bigint)",
            "steep_repl.append_daemon_events(uuid[],timestamp with time zone[],text[],text[],text[],jsonb[],jsonb[],inet[],boolean[],text[])",
            "steep_repl.apply_coordinator(text,bigint,bigint,text,bigint,text,text,text)",
            "steep_repl.apply_membership(bigint,jsonb)",
            "steep_repl.apply_state(text,bigint,bigint,text,jsonb,boolean,text,inet,text)",
            "steep_repl.apply_state_batch(text,jsonb)",
            "steep_repl.apply_state_snapshot(text,bigint,bigint,jsonb)",
            "steep_repl.applying()",
            "steep_repl.audit_min_retention()",
            "steep_repl.audit_nodes_change()",
            "steep_repl.audit_state_change()",
            "steep_repl.check_log_position(text,text,bigint,bigint)",
            "steep_repl.check_node_id(text,text)",
            "steep_repl.check_status(text,text)",
            "steep_repl.claim_log_index(text,text,bigint,bigint)",
            "steep_repl.current_actor()",
            "steep_repl.get_state(text)",
            "steep_repl.heartbeat(text,text)",
            "steep_repl.lock_projection()",
            "steep_repl.log_event_id(text,bigint)",
            "steep_repl.member_integer(text,bigint,jsonb,text,integer,integer)",
            "steep_repl.member_text(text,bigint,jsonb,text)",
            "steep_repl.next_audit_id()",
            "steep_repl.projection()",
            "steep_repl.prune_audit(interval)",
            "steep_repl.raise_unknown_node(text,text)",
            "steep_repl.record_peer_seen(text)",
            "steep_repl.record_peer_status(text,text)",
            "steep_repl.refuse_audit_rewrite()",
            "steep_repl.refuse_projection_write()",
            "steep_repl.refuse_truncate()",
            "steep_repl.register_node(text,text,text,integer,integer,text,integer)",
            "steep_repl.remove_node(text)",
            "steep_repl.set_state(text,jsonb)",
            "steep_repl.set_status(text,text)",
            "steep_repl.stamp_audit_row()",
            "steep_repl.state_batch_entries(jsonb,bigint)",
            "steep_repl.touch_updated_at()",
            "steep_repl.version()",
            "steep_repl.write_audit(text,text,text,jsonb,jsonb)",
        ]
    );
    // Every one belongs to the extension (dropped with it, upgraded with it).
    let loose: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p
          WHERE p.pronamespace = 'steep_repl'::regnamespace
            AND NOT EXISTS (SELECT 1 FROM pg_depend d
                             WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                               AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(loose, 0);
}

#[tokio::test]
async fn version_reports_the_version_of_the_extension_crate() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let cargo = std::fs::read_to_string(repo_root().join("ext/Cargo.toml")).unwrap();
    let crate_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let reported: String = sqlx::query_scalar("SELECT steep_repl.version()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(reported, crate_version);
}

#[tokio::test]
async fn the_tables_are_registered_for_pg_dump() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    let config: Vec<String> = sqlx::query_scalar(
        "SELECT c::regclass::text FROM pg_extension e, unnest(e.extconfig) c
          WHERE e.extname = 'steep_repl' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        config,
        [
            "steep_repl.audit_log",
            "steep_repl.audit_log_id_seq",
            "steep_repl.cluster_projection",
            "steep_repl.coordinator_state",
            "steep_repl.nodes"
        ]
    );
}

#[tokio::test]
async fn pg_dump_keeps_the_registry_state_and_audit_rows_and_they_restore() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute(
        "SELECT steep_repl.register_node('node-a', 'Node A', 'db-a.example', 5432, 70);
         SELECT steep_repl.apply_state('c1', 7, 2, 'cluster.version', '\"1\"', false, 'steep-repl@node-a', NULL, NULL);
         SELECT steep_repl.apply_coordinator('c1', 8, 2, 'node-a', 1, NULL, 'coordinator.grant', 'steep-repl@node-a');",
    )
    .await
    .unwrap();
    let dump = pg.run_tool("pg_dump", &["-d", "postgres"]).unwrap();
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dump.contains("COPY steep_repl.nodes"),
        "no nodes data in the dump"
    );
    assert!(dump.contains("node-a\tNode A\tdb-a.example\t5432\t70"));
    assert!(dump.contains("cluster.version"));
    assert!(dump.contains("node.registered"));

    conn.execute("CREATE DATABASE restored").await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &dump).unwrap();
    std::fs::set_permissions(
        file.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    pg.run_tool(
        "psql",
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            "restored",
            "-f",
            file.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    let mut restored = pg.connect_to("restored").await.unwrap();
    let node: (String, i32) =
        sqlx::query_as("SELECT host, priority FROM steep_repl.nodes WHERE node_id = 'node-a'")
            .fetch_one(&mut restored)
            .await
            .unwrap();
    assert_eq!(node, ("db-a.example".to_string(), 70));
    let state: serde_json::Value =
        sqlx::query_scalar("SELECT steep_repl.get_state('cluster.version')")
            .fetch_one(&mut restored)
            .await
            .unwrap();
    assert_eq!(state, serde_json::json!("1"));
    // The projection comes back with the log index it was applied up to, so
    // the daemon goes on from there, and with the coordinator; its rows (and
    // the coordinator flag of nodes) were restored by COPY, which the
    // refusal of direct writes lets a superuser do.
    let projection: (String, i64, i64, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT cluster_id, applied_index, applied_term, coordinator_id, coordinator_epoch
           FROM steep_repl.projection()",
    )
    .fetch_one(&mut restored)
    .await
    .unwrap();
    assert_eq!(
        projection,
        ("c1".to_string(), 8, 2, Some("node-a".to_string()), Some(1))
    );
    let coordinator: Option<String> =
        sqlx::query_scalar("SELECT node_id FROM steep_repl.nodes WHERE is_coordinator")
            .fetch_optional(&mut restored)
            .await
            .unwrap();
    assert_eq!(coordinator.as_deref(), Some("node-a"));
    let message = db_error(
        restored
            .execute("DELETE FROM steep_repl.coordinator_state")
            .await,
    );
    assert!(message.contains("steep-repl state set"), "{message}");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'node.registered' AND target_id = 'node-a'",
    )
    .fetch_one(&mut restored)
    .await
    .unwrap();
    assert!(audited >= 1);
}

#[tokio::test]
async fn drop_extension_removes_everything_and_it_installs_again() {
    let (_pg, mut conn) = server_with_extension().await.unwrap();
    conn.execute("DROP EXTENSION steep_repl").await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'steep_repl'::regnamespace",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0);
    conn.execute("CREATE EXTENSION steep_repl").await.unwrap();
    let row = sqlx::query("SELECT steep_repl.version() AS v")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!row.get::<String, _>("v").is_empty());
}

#[tokio::test]
async fn a_schema_pre_created_by_an_ordinary_role_is_refused() {
    let pg = PgServer::start().unwrap();
    let mut conn = pg.connect().await.unwrap();
    conn.execute("CREATE ROLE intruder LOGIN; CREATE SCHEMA steep_repl AUTHORIZATION intruder")
        .await
        .unwrap();
    let message = db_error(conn.execute("CREATE EXTENSION steep_repl").await);
    assert_eq!(
        message,
        "schema steep_repl already exists and is owned by role intruder, which is not a superuser"
    );
    // Handing the schema to a superuser makes it acceptable.
    conn.execute("ALTER SCHEMA steep_repl OWNER TO postgres; CREATE EXTENSION steep_repl")
        .await
        .unwrap();
}

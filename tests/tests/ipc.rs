//! The IPC face of real daemons: every method and error code, the
//! protocol's limits (oversized lines, pipelining, hundreds of clients, a
//! connection limit, clients that vanish), and the socket's life (mode,
//! stale file, removal at stop).

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::types::chrono::DateTime;
use sqlx::Executor;
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};
use steep_repl_tests::daemon::{Daemon, DaemonHome, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::ipc::IpcClient;
use steep_repl_tests::pg::PgServer;

const WAIT: Duration = Duration::from_secs(20);
const ONE_MIB: usize = 1024 * 1024;

/// A PostgreSQL 18 server with the extension and a daemon connected to it,
/// its registry holding node-a, healthy. (The daemon writes no row for
/// itself: the registry is the Raft membership's projection. These tests
/// use no cluster and seed the row as an operator could.)
async fn connected_daemon() -> (PgServer, PgConnection, Daemon) {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_postgresql(WAIT).unwrap();
    seed_node_a(&mut conn).await;
    (pg, conn, daemon)
}

async fn seed_node_a(conn: &mut PgConnection) {
    for sql in [
        "SELECT steep_repl.register_node('node-a', 'Node node-a', '127.0.0.1', 5432, 50)",
        "SELECT steep_repl.heartbeat('node-a', 'healthy')",
    ] {
        conn.execute(sql).await.unwrap();
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

fn node_ids(result: &Value) -> Vec<&str> {
    result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_method_answers_with_the_documented_shapes() {
    let (_pg, mut conn, daemon) = connected_daemon().await;
    let mut ipc = daemon.ipc().unwrap();

    let status = ipc.call("status.get", json!({})).unwrap();
    assert_eq!(
        keys(&status),
        [
            "grpc",
            "node",
            "pid",
            "postgresql",
            "start_time",
            "state",
            "uptime_seconds",
            "version"
        ]
    );
    assert_eq!(status["pid"], json!(daemon.pid().unwrap()));
    assert_eq!(
        keys(&status["postgresql"]),
        ["connected", "host", "port", "version"]
    );
    assert_eq!(status["postgresql"]["connected"], true);
    assert!(
        status["postgresql"]["version"]
            .as_str()
            .unwrap()
            .starts_with("18."),
        "{status}"
    );
    assert_eq!(
        status["grpc"],
        json!({"listening": false, "port": null, "tls_enabled": false})
    );
    assert_eq!(
        status["node"],
        json!({"node_id": "node-a", "node_name": "Node node-a", "is_coordinator": false,
               "cluster_size": 1, "coordinator_id": null, "epoch": null, "role": "data"})
    );
    let start = status["start_time"].as_str().unwrap();
    assert!(start.ends_with('Z') && start.len() == 20, "{start}");

    let health = ipc.call("health.check", json!({})).unwrap();
    assert_eq!(
        keys(&health),
        ["components", "node", "status", "uptime_seconds", "version"]
    );
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["components"]["ipc"]["status"], "listening");
    assert_eq!(health["components"]["postgresql"]["healthy"], true);

    conn.execute("SELECT steep_repl.register_node('node-b', 'Node B', 'db2', 5433, 40)")
        .await
        .unwrap();
    let all = ipc.call("nodes.list", json!({})).unwrap();
    assert_eq!(node_ids(&all), ["node-a", "node-b"]);
    let a = &all["nodes"][0];
    assert_eq!(
        keys(a),
        [
            "coordinator_epoch",
            "grpc_host",
            "grpc_port",
            "host",
            "is_coordinator",
            "last_seen",
            "node_id",
            "node_name",
            "port",
            "priority",
            "role",
            "status"
        ]
    );
    assert_eq!(
        (a["status"].as_str(), a["host"].as_str()),
        (Some("healthy"), Some("127.0.0.1"))
    );
    assert!(a["last_seen"].as_str().unwrap().ends_with('Z'), "{a}");
    for (filter, expected) in [
        (json!(["healthy"]), vec!["node-a"]),
        (json!(["unknown"]), vec!["node-b"]),
        (json!(["healthy", "unknown"]), vec!["node-a", "node-b"]),
        (json!(["offline", "degraded", "unreachable"]), vec![]),
        (json!([]), vec!["node-a", "node-b"]),
    ] {
        let listed = ipc
            .call("nodes.list", json!({ "status_filter": filter }))
            .unwrap();
        assert_eq!(node_ids(&listed), expected, "filter {filter}");
    }

    let b = ipc.call("nodes.get", json!({"node_id": "node-b"})).unwrap();
    assert_eq!(keys(&b), ["node"]);
    assert_eq!(
        (
            b["node"]["node_name"].as_str(),
            b["node"]["port"].as_i64(),
            b["node"]["priority"].as_i64()
        ),
        (Some("Node B"), Some(5433), Some(40))
    );
    assert_eq!(b["node"]["last_seen"], Value::Null);

    let audit = ipc.call("audit.query", json!({})).unwrap();
    assert_eq!(keys(&audit), ["entries", "has_more", "total"]);
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "node.registered", "newest first: {audit}");
    assert_eq!(entry["target_id"], "node-b");
    assert_eq!(
        keys(entry),
        [
            "action",
            "actor",
            "client_ip",
            "error_message",
            "id",
            "new_value",
            "occurred_at",
            "old_value",
            "success",
            "target_id",
            "target_type"
        ]
    );
}

#[tokio::test]
async fn every_error_code_is_answered_and_the_connection_stays_usable() {
    let (_pg, _conn, daemon) = connected_daemon().await;
    let mut ipc = daemon.ipc().unwrap();

    let (code, message) = ipc
        .call_err("nodes.get", json!({"node_id": "ghost"}))
        .unwrap();
    assert_eq!(code, "NODE_NOT_FOUND");
    assert!(message.contains("ghost"), "{message}");

    let (code, message) = ipc.call_err("nodes.remove", json!({})).unwrap();
    assert_eq!(code, "METHOD_NOT_FOUND");
    assert!(message.contains("nodes.remove"), "{message}");

    ipc.send_raw(b"{this is not json\n").unwrap();
    let answer = ipc.read_answer().unwrap();
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{answer}"
    );

    let (code, message) = ipc.call_err("nodes.get", json!({})).unwrap();
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "INVALID_REQUEST",
            "missing parameter \"node_id\" of nodes.get"
        )
    );
    let (code, message) = ipc
        .call_err("audit.query", json!({"limit": "ten"}))
        .unwrap();
    assert_eq!(code, "INVALID_REQUEST");
    assert!(message.contains("\"limit\""), "{message}");

    // After all that, the same connection still answers.
    let status = ipc.call("status.get", json!({})).unwrap();
    assert_eq!(status["node"]["node_id"], "node-a");
}

#[tokio::test]
async fn database_methods_answer_not_connected_with_the_reason_while_postgresql_is_down() {
    let (mut pg, _conn, daemon) = connected_daemon().await;
    let mut ipc = daemon.ipc().unwrap();
    pg.stop().unwrap();

    let deadline = Instant::now() + WAIT;
    let (code, message) = loop {
        let answer = ipc.request("nodes.list", json!({})).unwrap();
        if !answer["error"].is_null() {
            break (
                answer["error"]["code"].clone(),
                answer["error"]["message"].clone(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "nodes.list kept succeeding with PostgreSQL stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, "NOT_CONNECTED");
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL is not available: "),
        "{message}"
    );
    for (method, params) in [
        ("nodes.get", json!({"node_id": "node-a"})),
        ("audit.query", json!({"limit": 5})),
    ] {
        let (code, message) = ipc.call_err(method, params).unwrap();
        assert_eq!(code, "NOT_CONNECTED", "{method}");
        assert!(!message.is_empty());
    }
    // The cached answers need no database.
    let status = ipc.call("status.get", json!({})).unwrap();
    assert_eq!(status["state"], "running");
    let health = ipc.call("health.check", json!({})).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["components"]["postgresql"]["error"].is_string(),
        "{health}"
    );

    pg.start_again().unwrap();
    let mut ipc = daemon.wait_for_postgresql(WAIT).unwrap();
    assert_eq!(
        node_ids(&ipc.call("nodes.list", json!({})).unwrap()),
        ["node-a"]
    );
}

#[tokio::test]
async fn a_line_over_one_mebibyte_is_refused_and_its_connection_closed() {
    let (_pg, _conn, daemon) = connected_daemon().await;

    // Exactly 1 MiB (newline excluded) is still a request.
    let mut ipc = daemon.ipc().unwrap();
    let mut line = br#"{"id":"big","method":"status.get"}"#.to_vec();
    line.resize(ONE_MIB, b' ');
    line.push(b'\n');
    ipc.send_raw(&line).unwrap();
    let answer = ipc.read_answer().unwrap();
    assert_eq!(
        (answer["id"].as_str(), answer["error"].is_null()),
        (Some("big"), true),
        "{answer}"
    );

    // One byte more is not. The daemon may close before the client has
    // written everything: the write error is expected, the answer still
    // arrives.
    let mut line = br#"{"id":"huge","method":"status.get"}"#.to_vec();
    line.resize(ONE_MIB + 1, b' ');
    line.push(b'\n');
    let _ = ipc.send_raw(&line);
    let answer = ipc.read_answer().unwrap();
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576"),
        "{answer}"
    );
    assert!(
        ipc.is_closed().unwrap(),
        "the connection stayed open after an oversized line"
    );

    let mut other = daemon.ipc().unwrap();
    assert_eq!(
        other.call("status.get", json!({})).unwrap()["state"],
        "running"
    );
}

#[tokio::test]
async fn a_hundred_pipelined_requests_are_answered_in_order() {
    let (_pg, _conn, daemon) = connected_daemon().await;
    let mut ipc = daemon.ipc().unwrap();
    let requests = [
        json!({"method": "status.get"}),
        json!({"method": "health.check"}),
        json!({"method": "nodes.list", "params": {"status_filter": ["healthy"]}}),
        json!({"method": "nodes.get", "params": {"node_id": "node-a"}}),
        json!({"method": "audit.query", "params": {"limit": 2}}),
        json!({"method": "nodes.get", "params": {"node_id": "ghost"}}),
        json!({"method": "no.such.method"}),
    ];
    let mut burst = Vec::new();
    for i in 0..100 {
        let mut request = requests[i % requests.len()].clone();
        request["id"] = json!(i);
        burst.extend(serde_json::to_vec(&request).unwrap());
        burst.push(b'\n');
    }
    ipc.send_raw(&burst).unwrap();
    for i in 0..100 {
        let answer = ipc.read_answer().unwrap();
        assert_eq!(answer["id"], json!(i), "answer out of order: {answer}");
        match i % requests.len() {
            0 => assert_eq!(answer["result"]["node"]["node_id"], "node-a"),
            1 => assert!(answer["result"]["components"].is_object()),
            2 => assert_eq!(node_ids(&answer["result"]), ["node-a"]),
            3 => assert_eq!(answer["result"]["node"]["node_id"], "node-a"),
            4 => assert!(answer["result"]["entries"].as_array().unwrap().len() <= 2),
            5 => assert_eq!(answer["error"]["code"], "NODE_NOT_FOUND"),
            _ => assert_eq!(answer["error"]["code"], "METHOD_NOT_FOUND"),
        }
    }
}

#[tokio::test]
async fn two_hundred_concurrent_clients_each_get_their_own_answers() {
    let (_pg, mut conn, daemon) = connected_daemon().await;
    for i in 0..5 {
        sqlx::query("SELECT steep_repl.register_node($1, $2, 'db', 5432, 50)")
            .bind(format!("peer-{i}"))
            .bind(format!("Peer {i}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let pid = json!(daemon.pid().unwrap());
    let socket = daemon.home.socket_path();
    let barrier = std::sync::Barrier::new(200);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..200)
            .map(|i| {
                let (socket, barrier, pid) = (&socket, &barrier, &pid);
                scope.spawn(move || {
                    let mut ipc = IpcClient::connect(socket).unwrap();
                    barrier.wait();
                    for round in 0..3 {
                        assert_eq!(&ipc.call("status.get", json!({})).unwrap()["pid"], pid);
                        let node = format!("peer-{}", (i + round) % 5);
                        let got = ipc.call("nodes.get", json!({"node_id": node})).unwrap();
                        assert_eq!(got["node"]["node_id"], json!(node), "client {i}");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a client failed");
        }
    });
    let mut ipc = daemon.ipc().unwrap();
    assert_eq!(
        node_ids(
            &ipc.call("nodes.list", json!({"status_filter": ["unknown"]}))
                .unwrap()
        )
        .len(),
        5
    );
}

#[tokio::test]
async fn clients_beyond_the_connection_limit_are_told_and_closed() {
    let (_pg, _conn, daemon) = connected_daemon().await;
    let socket = daemon.home.socket_path();
    // The daemon serves 1024 clients at once.
    let mut open: Vec<IpcClient> = (0..1024)
        .map(|_| IpcClient::connect(&socket).unwrap())
        .collect();
    assert_eq!(
        open[1023].call("status.get", json!({})).unwrap()["state"],
        "running"
    );

    let mut refused = IpcClient::connect(&socket).unwrap();
    let answer = refused.read_answer().unwrap();
    assert_eq!(answer["error"]["code"], "INTERNAL_ERROR");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many IPC connections"),
        "{answer}"
    );
    assert!(refused.is_closed().unwrap());

    open.truncate(1000);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = IpcClient::connect(&socket).unwrap();
        if let Ok(result) = again.call("status.get", json!({})) {
            assert_eq!(result["state"], "running");
            break;
        }
        assert!(Instant::now() < deadline, "freed slots were never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        open[0].call("status.get", json!({})).unwrap()["state"],
        "running"
    );
}

#[tokio::test]
async fn clients_that_vanish_mid_request_harm_nobody() {
    let (_pg, _conn, daemon) = connected_daemon().await;
    let mut steady = daemon.ipc().unwrap();
    for i in 0..50 {
        let mut gone = daemon.ipc().unwrap();
        let line: &[u8] = match i % 3 {
            0 => b"{\"id\":1,\"method\":\"audit.query\",\"params\":{\"limit\":1000}}\n",
            1 => b"{\"id\":1,\"method\":\"nodes.list\"}\n{\"id\":2,\"method\":\"status.get\"}\n",
            _ => b"{\"id\":1,\"method\":\"nodes.g",
        };
        gone.send_raw(line).unwrap();
        drop(gone);
    }
    assert_eq!(
        node_ids(&steady.call("nodes.list", json!({})).unwrap()),
        ["node-a"]
    );
    let mut fresh = daemon.ipc().unwrap();
    // Answered (whether healthy depends on PostgreSQL's pace on a busy machine).
    let health = fresh.call("health.check", json!({})).unwrap();
    assert_eq!(health["components"]["ipc"]["status"], "listening");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[tokio::test]
async fn the_socket_gets_the_configured_mode_and_is_removed_at_stop() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_ipc(WAIT).unwrap();
    let socket = daemon.home.socket_path();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "the default ipc.mode"
    );

    let status = daemon.stop().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(!socket.exists(), "the socket outlived the daemon");

    let mut options = DaemonOptions::for_server("node-a", &pg);
    options.ipc_extra = "    mode: 0600\n".to_string();
    let mut daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_ipc(WAIT).unwrap();
    let mode = std::fs::metadata(daemon.home.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    daemon.stop().unwrap();
}

#[tokio::test]
async fn a_stale_socket_is_removed_at_start_but_a_live_one_is_refused() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let options = DaemonOptions::for_server("node-a", &pg);

    // What a daemon killed with SIGKILL leaves behind.
    let home = DaemonHome::new().unwrap();
    home.write_config(&options).unwrap();
    drop(std::os::unix::net::UnixListener::bind(home.socket_path()).unwrap());
    let daemon = Daemon::start_in(home).unwrap();
    let mut ipc = daemon.wait_for_ipc(WAIT).unwrap();
    assert_eq!(
        ipc.call("status.get", json!({})).unwrap()["node"]["node_id"],
        "node-a"
    );
    daemon
        .wait_for_log("ipc.stale_socket_removed", WAIT)
        .unwrap();

    // A socket some other live process answers on is not taken over.
    let home = DaemonHome::new().unwrap();
    home.write_config(&options).unwrap();
    let other = std::os::unix::net::UnixListener::bind(home.socket_path()).unwrap();
    let daemon = Daemon::start_in(home).unwrap();
    daemon
        .wait_for_log("another process answers on the IPC socket", WAIT)
        .unwrap();
    assert!(daemon.home.socket_path().exists());
    drop(other);
}

/// Waits until the audit log holds `n` rows (the daemon writes in batches).
async fn wait_audit_rows(conn: &mut PgConnection, sql: &'static str, n: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap();
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} stayed at {count}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn audit_query_counts_filters_and_pages() {
    let (_pg, mut conn, daemon) = connected_daemon().await;
    wait_audit_rows(
        &mut conn,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'daemon.started'",
        1,
    )
    .await;
    for sql in [
        "SELECT steep_repl.register_node('n1', 'N1', 'db1', 5432, 50)",
        "SELECT steep_repl.register_node('n2', 'N2', 'db2', 5432, 50)",
        "SELECT steep_repl.register_node('n3', 'N3', 'db3', 5432, 50)",
        "SELECT steep_repl.register_node('n1', 'N1 renamed', 'db1', 5432, 60)",
        "SELECT steep_repl.set_status('n2', 'offline')",
        "SELECT steep_repl.remove_node('n3')",
        // coordinator_state changes only as the cluster's log is applied.
        "SELECT steep_repl.apply_state('test', 1, 1, 'cluster.version', '\"1\"', false, 'postgres@local', NULL, NULL)",
        "SELECT steep_repl.apply_state('test', 2, 1, 'cluster.version', '\"2\"', false, 'postgres@local', NULL, NULL)",
    ] {
        conn.execute(sql).await.unwrap();
    }
    let mut ipc = daemon.ipc().unwrap();

    // Every filter value against the database's own count.
    for filter in [
        "node.registered",
        "node.updated",
        "node.removed",
        "node.status_changed",
        "coordinator.elected",
        "state.updated",
        "daemon.started",
        "daemon.stopped",
        "peer.auth_failed",
        "config.changed",
        "audit.pruned",
        "node.*",
        "daemon.*",
        "state.*",
    ] {
        let pattern = filter.replace('*', "%");
        let expected: i64 =
            sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log WHERE action LIKE $1")
                .bind(&pattern)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let page = ipc
            .call(
                "audit.query",
                json!({"action_filter": [filter], "limit": 1000}),
            )
            .unwrap();
        assert_eq!(page["total"], json!(expected), "total for {filter}");
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len() as i64, expected, "entries for {filter}");
        for entry in entries {
            let action = entry["action"].as_str().unwrap();
            match filter.strip_suffix('*') {
                Some(prefix) => assert!(action.starts_with(prefix), "{action} under {filter}"),
                None => assert_eq!(action, filter),
            }
        }
        assert_eq!(page["has_more"], false);
    }
    let registered = ipc
        .call("audit.query", json!({"action_filter": ["node.registered"]}))
        .unwrap();
    assert_eq!(
        registered["total"], 4,
        "node-a (seeded) and n1..n3: {registered}"
    );
    let two = ipc
        .call(
            "audit.query",
            json!({"action_filter": ["node.removed", "state.updated"]}),
        )
        .unwrap();
    let actions: BTreeSet<&str> = two["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(two["total"], 3);
    assert_eq!(actions, BTreeSet::from(["node.removed", "state.updated"]));

    // Pages of 3 cover everything once, newest first, has_more until the last.
    let total = ipc.call("audit.query", json!({"limit": 0})).unwrap();
    let (total, empty) = (
        total["total"].as_u64().unwrap(),
        total["entries"].as_array().unwrap().len(),
    );
    assert_eq!(empty, 0);
    assert!(total >= 11, "{total}");
    let (mut offset, mut ids) = (0u64, Vec::new());
    loop {
        let page = ipc
            .call("audit.query", json!({"limit": 3, "offset": offset}))
            .unwrap();
        assert_eq!(page["total"], json!(total));
        let entries = page["entries"].as_array().unwrap();
        ids.extend(entries.iter().map(|e| {
            let at = e["occurred_at"].as_str().unwrap();
            (
                DateTime::parse_from_rfc3339(at).unwrap(),
                e["id"].as_i64().unwrap(),
            )
        }));
        offset += entries.len() as u64;
        assert_eq!(
            page["has_more"],
            json!(offset < total),
            "at offset {offset}"
        );
        if page["has_more"] == false {
            break;
        }
        assert_eq!(entries.len(), 3);
    }
    assert_eq!(ids.len() as u64, total);
    // Newest first: by occurrence (a daemon event may reach the table after
    // later SQL changes, through the spool), then by id.
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    let distinct: BTreeSet<i64> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len() as u64, total);
    let beyond = ipc
        .call("audit.query", json!({"offset": total + 10}))
        .unwrap();
    assert_eq!(
        (
            beyond["entries"].as_array().unwrap().len(),
            beyond["has_more"].clone()
        ),
        (0, json!(false))
    );

    // since: only what happened from then on.
    let since: String = sqlx::query_scalar(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.execute("SELECT steep_repl.set_status('n1', 'degraded')")
        .await
        .unwrap();
    let recent = ipc.call("audit.query", json!({"since": since})).unwrap();
    assert_eq!(recent["total"], 1, "{recent}");
    assert_eq!(recent["entries"][0]["action"], "node.status_changed");
    assert_eq!(recent["entries"][0]["target_id"], "n1");
}

/// An audit.query that cannot finish (the log locked by another session)
/// is cancelled by PostgreSQL when the daemon stops waiting for it: it
/// does not keep a pooled connection busy after its answer.
#[tokio::test]
async fn an_audit_query_that_outlives_its_answer_is_cancelled_in_postgresql() {
    let (pg, _conn, daemon) = connected_daemon().await;
    let mut locker = pg.connect().await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE steep_repl.audit_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut ipc = daemon.ipc().unwrap();
    let (code, message) = ipc.call_err("audit.query", json!({"limit": 5})).unwrap();
    assert!(
        code == "INTERNAL_ERROR" || code == "NOT_CONNECTED",
        "{code}: {message}"
    );
    let answer = format!("{code}: {message}");
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE query LIKE '%FROM steep_repl.audit_log%' AND state = 'active' \
                     AND pid <> pg_backend_pid()";
    let mut observer = pg.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n: i64 = sqlx::query_scalar(waiting)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned audit query still waits in PostgreSQL ({n} running): {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    locker.execute("ROLLBACK").await.unwrap();
    // The daemon still answers once the log is free again.
    let page = ipc.call("audit.query", json!({"limit": 1})).unwrap();
    assert!(page["total"].as_i64().unwrap() >= 1, "{page}");
}

//! The gRPC server's limits, on a real daemon over mutual TLS with
//! certificates from `steep-repl tls`: a peer over `grpc.peer_rate_limit`
//! is refused RESOURCE_EXHAUSTED while another peer is served; beyond
//! `grpc.max_concurrent_requests` requests are refused UNAVAILABLE at once;
//! a request not answered within `grpc.request_timeout` ends with
//! DEADLINE_EXCEEDED and its query is cancelled in PostgreSQL.
//!
//! Slow requests are made slow legitimately: the test holds an exclusive
//! lock on `steep_repl.nodes` (as the superuser), on which GetNodes and
//! Heartbeat wait.

use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};
use steep_repl_actors::peer_tls::{ConnectOptions, PeerTransport, TlsPaths};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::{GetNodesRequest, HealthCheckRequest, HeartbeatRequest};
use steep_repl_tests::cluster::{grpc_yaml, Certificates};
use steep_repl_tests::daemon::{Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::pg::PgServer;
use steep_repl_tests::ports::free_port;
use tonic::transport::Channel;
use tonic::Code;

/// Bound on anything the test waits for that should be quick.
const SLACK: Duration = Duration::from_secs(30);

/// One daemon (node-1) with `limits` in its `grpc:` section, and
/// certificates of the same CA for two more peers, node-x and node-y.
struct Node {
    certs: Certificates,
    pg: PgServer,
    daemon: Daemon,
    port: u16,
    http: std::net::SocketAddr,
}

impl Node {
    async fn start(limits: &str) -> Node {
        let certs = Certificates::new(&["node-1", "node-x", "node-y"]).unwrap();
        let (pg, _conn) = server_with_extension().await.unwrap();
        let port = free_port();
        let mut options = DaemonOptions::for_server("node-1", &pg).with_http();
        options.grpc = format!(
            "{}{limits}",
            grpc_yaml(port, &[], &certs.tls_yaml("node-1"))
        );
        let http = options.http_addr().unwrap();
        let daemon = Daemon::start(&options).unwrap();
        daemon.wait_for_postgresql(SLACK).unwrap();
        daemon.wait_for_log("grpc.listening", SLACK).unwrap();
        Node {
            certs,
            pg,
            daemon,
            port,
            http,
        }
    }

    /// A channel presenting `peer`'s certificate.
    async fn channel(&self, peer: &str) -> Channel {
        let dir = self.certs.dir.path();
        let transport = PeerTransport::mtls_from_files(&TlsPaths {
            cert_file: dir.join(format!("{peer}.crt")),
            key_file: dir.join(format!("{peer}.key")),
            ca_file: dir.join("ca.crt"),
        })
        .unwrap();
        let options = ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        transport
            .connect("127.0.0.1", self.port, &options)
            .await
            .unwrap()
    }

    /// `steep_repl_grpc_requests_refused_total{reason}` from `/metrics`.
    fn refused(&self, reason: &str) -> u64 {
        let page = steep_repl_tests::http::get(self.http, "/metrics")
            .unwrap()
            .text();
        steep_repl_tests::http::parse_prometheus(&page).unwrap();
        let prefix = format!("steep_repl_grpc_requests_refused_total{{reason=\"{reason}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{page}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// The test's hold on `steep_repl.nodes`: every query of it waits
    /// until the returned connection commits or is dropped.
    async fn lock_nodes(&self) -> PgConnection {
        let mut conn = self.pg.connect().await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("LOCK TABLE steep_repl.nodes IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        conn
    }

    /// Queries of GetNodes and Heartbeat still running in PostgreSQL.
    async fn blocked_queries(&self) -> i64 {
        let mut conn = self.pg.connect().await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE state = 'active' AND pid <> pg_backend_pid()
                AND (query LIKE '%cardinality($1::text[])%'
                     OR query LIKE 'SELECT steep_repl.record_peer_seen(%')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }

    async fn wait_for_blocked(&self, n: i64) {
        let deadline = Instant::now() + SLACK;
        while self.blocked_queries().await < n {
            assert!(
                Instant::now() < deadline,
                "{n} requests never reached PostgreSQL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn get_nodes(channel: &Channel) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    let mut client = CoordinatorClient::new(channel.clone());
    tokio::spawn(async move { client.get_nodes(GetNodesRequest::default()).await.map(drop) })
}

#[tokio::test]
async fn a_flooding_peer_is_refused_while_another_peer_is_served() {
    let node = Node::start("    peer_rate_limit: 5\n").await;
    let mut flooder = CoordinatorClient::new(node.channel("node-x").await);
    let mut other = CoordinatorClient::new(node.channel("node-y").await);

    // Five a second: asking without pause is soon refused. Go on until
    // twenty refusals to see that they are not logged one by one.
    let started = Instant::now();
    let (mut served, mut refused) = (0, 0);
    while refused < 20 {
        match flooder.health_check(HealthCheckRequest::default()).await {
            Ok(_) => served += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("grpc.peer_rate_limit"), "{s:?}");
                refused += 1;
            }
        }
        assert!(served < 10_000, "10000 requests in a row and none refused");
    }
    let flood_lasted = started.elapsed();

    // The other peer has an allowance of its own, for every method.
    other
        .health_check(HealthCheckRequest::default())
        .await
        .unwrap();
    other
        .heartbeat(HeartbeatRequest {
            node_id: "node-y".into(),
            node_status: None,
        })
        .await
        .unwrap();

    assert!(node.refused("rate_limited") >= 20);
    // At most one line per 10 s window, telling how many were held back.
    let lines = node
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains("grpc.request_refused") && l.contains("rate_limited"))
        .count();
    assert!(lines >= 1, "the refusals were not logged");
    let windows = flood_lasted.as_secs() / 10 + 2;
    assert!(
        lines as u64 <= windows,
        "{lines} log lines for {refused} refusals in {flood_lasted:?}"
    );
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused_and_the_daemon_stays_responsive() {
    let node = Node::start(
        "    max_concurrent_requests: 2\n    request_timeout: 15s\n    peer_rate_limit: 1000\n",
    )
    .await;
    let slow = node.channel("node-x").await;
    let mut other = CoordinatorClient::new(node.channel("node-y").await);

    let lock = node.lock_nodes().await;
    let waiting = [get_nodes(&slow), get_nodes(&slow)];
    node.wait_for_blocked(2).await;

    // Both slots are taken: a third request, even one that needs no
    // database, is refused at once rather than queued.
    let refused = other
        .health_check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("grpc.max_concurrent_requests"));
    assert!(node.refused("overloaded") >= 1);
    // The rest of the daemon answers meanwhile.
    let mut ipc = node.daemon.ipc().unwrap();
    ipc.call("status.get", serde_json::json!({})).unwrap();

    // The slow ones end at the request timeout and free their slots.
    for request in waiting {
        let status = tokio::time::timeout(SLACK, request)
            .await
            .expect("a slow request outlived the request timeout")
            .unwrap()
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    other
        .health_check(HealthCheckRequest::default())
        .await
        .unwrap();
    drop(lock);
}

#[tokio::test]
async fn a_slow_request_ends_at_the_timeout_and_its_query_is_cancelled() {
    let node = Node::start("    request_timeout: 6s\n").await;
    let channel = node.channel("node-x").await;

    let lock = node.lock_nodes().await;
    let list = get_nodes(&channel);
    let mut client = CoordinatorClient::new(channel.clone());
    let beat = tokio::spawn(async move {
        client
            .heartbeat(HeartbeatRequest {
                node_id: "node-x".into(),
                node_status: None,
            })
            .await
            .map(drop)
    });
    node.wait_for_blocked(2).await;

    // Within the timeout plus generous slack, both end.
    let list = tokio::time::timeout(SLACK, list)
        .await
        .expect("GetNodes outlived the request timeout")
        .unwrap()
        .unwrap_err();
    assert_eq!(list.code(), Code::DeadlineExceeded, "{list:?}");
    assert!(list.message().contains("grpc.request_timeout"), "{list:?}");
    let beat = tokio::time::timeout(SLACK, beat)
        .await
        .expect("Heartbeat outlived the request timeout")
        .unwrap()
        .unwrap_err();
    assert_eq!(beat.code(), Code::DeadlineExceeded, "{beat:?}");
    assert!(node.refused("timeout") >= 2);

    // The lock is still held, yet PostgreSQL no longer runs their queries:
    // the caller gave up, so did the database.
    let deadline = Instant::now() + SLACK;
    while node.blocked_queries().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the queries of timed-out requests still run in PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lock.close().await.unwrap();
}

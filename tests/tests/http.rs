//! The HTTP face of real daemons: probes for load balancers and Kubernetes,
//! Prometheus metrics, and a real HAProxy routing by them. Faults are real:
//! PostgreSQL stopped and started, a port in use, hundreds of idle clients.

use sqlx::Connection;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steep_repl_tests::daemon::{Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::haproxy::{Backend, Haproxy};
use steep_repl_tests::http::{get, parse_prometheus, request, wait_for, wait_for_status};
use steep_repl_tests::pg::PgServer;

const WAIT: Duration = Duration::from_secs(20);
/// "Within a few refresh intervals" (1 s each), generously: the daemon
/// notices a lost connection at its next ping, and a cached result older
/// than 3 s counts as unhealthy anyway.
const FEW_INTERVALS: Duration = Duration::from_secs(10);
const PROBE_PATHS: [&str; 4] = ["/", "/health", "/ready", "/live"];

/// A daemon with HTTP on, started against `pg`; returns it with its address
/// once `/health` answers 200.
fn healthy_daemon(node: &str, pg: &PgServer) -> (Daemon, SocketAddr) {
    let options = DaemonOptions::for_server(node, pg).with_http();
    let addr = options.http_addr().unwrap();
    let daemon = Daemon::start(&options).unwrap();
    if let Err(e) = wait_for_status(addr, "/health", 200, WAIT) {
        panic!("{e:#}\nlog:\n{}", daemon.log());
    }
    (daemon, addr)
}

/// Keeps asking `/live` in the background; `finish` returns every answer
/// that was not 200.
struct LivenessWatch {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<usize>,
}

impl LivenessWatch {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (stop2, failures2) = (stop.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let mut asked = 0;
            while !stop2.load(Ordering::Relaxed) {
                asked += 1;
                match get(addr, "/live") {
                    Ok(res) if res.status == 200 => {}
                    Ok(res) => {
                        failures2
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", res.status, res.text()))
                    }
                    Err(e) => failures2.lock().unwrap().push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            asked
        });
        LivenessWatch {
            stop,
            failures,
            thread,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let asked = self.thread.join().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (asked, failures)
    }
}

#[tokio::test]
async fn a_healthy_node_answers_health_200_with_every_component() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let (mut daemon, addr) = healthy_daemon("node-a", &pg);

    // The latency appears with the first background ping, within an interval.
    let res = wait_for(addr, "/health", "a PostgreSQL latency", WAIT, |res| {
        res.json()
            .is_ok_and(|body| body["components"]["postgresql"]["latency_ms"].is_f64())
    })
    .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let body = res.json().unwrap();
    assert_eq!(body["status"], "healthy");
    let pg_report = &body["components"]["postgresql"];
    assert_eq!(pg_report["healthy"], true);
    assert_eq!(pg_report["status"], "connected");
    assert!(
        pg_report["version"].as_str().unwrap().starts_with("18"),
        "{body}"
    );
    assert!(pg_report["latency_ms"].as_f64().is_some(), "{body}");
    assert_eq!(pg_report["port"], pg.port);
    assert_eq!(body["components"]["http"]["status"], "listening");
    assert_eq!(body["components"]["http"]["port"], addr.port());
    assert_eq!(body["components"]["grpc"]["status"], "disabled");
    for component in ["postgresql", "grpc", "ipc", "http", "audit"] {
        assert!(
            body["components"][component]["healthy"].is_boolean(),
            "{component}: {body}"
        );
    }
    assert_eq!(body["node"]["node_id"], "node-a");
    assert_eq!(body["node"]["node_name"], "Node node-a");
    assert!(body["node"]["is_coordinator"].is_boolean());
    assert!(body["uptime_seconds"].is_u64());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    // `/` is `/health` (HAProxy checks `/` by default).
    assert_eq!(get(addr, "/").unwrap().json().unwrap()["status"], "healthy");
    let ready = wait_for_status(addr, "/ready", 200, WAIT).unwrap();
    assert_eq!(ready.json().unwrap(), serde_json::json!({"ready": true}));
    let live = get(addr, "/live").unwrap();
    assert_eq!(
        (live.status, live.json().unwrap()),
        (200, serde_json::json!({"alive": true}))
    );

    // A graceful stop closes the port and exits 0.
    let status = daemon.stop().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        daemon.log().contains("http.stopped"),
        "log:\n{}",
        daemon.log()
    );
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts");
}

#[tokio::test]
async fn health_follows_postgresql_down_and_back_up_while_live_stays_200() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let (daemon, addr) = healthy_daemon("node-a", &pg);
    let watch = LivenessWatch::start(addr);

    pg.stop().unwrap();
    let down = wait_for_status(addr, "/health", 503, FEW_INTERVALS)
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", daemon.log()));
    let body = down.json().unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["components"]["postgresql"]["healthy"], false);
    assert!(
        body["components"]["postgresql"]["error"].is_string(),
        "{body}"
    );
    let ready = get(addr, "/ready").unwrap();
    assert_eq!(ready.status, 503);
    let reason = ready.json().unwrap()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!reason.is_empty(), "/ready gave no reason");
    // Stay down for a while: /live is watched during a sustained outage.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;

    pg.start_again().unwrap();
    wait_for_status(addr, "/health", 200, FEW_INTERVALS)
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", daemon.log()));
    wait_for_status(addr, "/ready", 200, FEW_INTERVALS).unwrap();

    let (asked, failures) = watch.finish();
    assert!(asked > 5, "/live was asked only {asked} times");
    assert!(
        failures.is_empty(),
        "/live failed during the outage: {failures:?}"
    );
}

#[tokio::test]
async fn ready_says_why_while_the_extension_is_missing() {
    // A PostgreSQL 18 server without CREATE EXTENSION steep_repl.
    let pg = PgServer::start().unwrap();
    let options = DaemonOptions::for_server("node-a", &pg).with_http();
    let addr = options.http_addr().unwrap();
    let daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_log("CREATE EXTENSION", WAIT).unwrap();

    // Until the daemon has connected the reason is the connection; then it
    // must say what to run.
    let ready = wait_for(
        addr,
        "/ready",
        "the missing extension as the reason",
        WAIT,
        |res| {
            res.json().is_ok_and(|body| {
                body["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("CREATE EXTENSION steep_repl"))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", daemon.log()));
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json().unwrap()["ready"], false);
    assert_eq!(get(addr, "/health").unwrap().status, 503);
    assert_eq!(get(addr, "/live").unwrap().status, 200);
}

/// Every probe path answers HEAD and OPTIONS with GET's status and no body.
fn assert_methods_agree(addr: SocketAddr, expect_health: u16) {
    let t = Duration::from_secs(10);
    for path in PROBE_PATHS {
        let get = request(addr, "GET", path, t).unwrap();
        assert!(!get.body.is_empty(), "GET {path} has no body");
        if path == "/" || path == "/health" {
            assert_eq!(get.status, expect_health, "GET {path}: {}", get.text());
        }
        for method in ["HEAD", "OPTIONS"] {
            let res = request(addr, method, path, t).unwrap();
            assert_eq!(res.status, get.status, "{method} {path} vs GET");
            assert!(
                res.body.is_empty(),
                "{method} {path} sent a body: {:?}",
                res.text()
            );
        }
    }
}

#[tokio::test]
async fn head_and_options_answer_the_status_of_get_on_every_probe_path() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let (_daemon, addr) = healthy_daemon("node-a", &pg);
    wait_for_status(addr, "/ready", 200, WAIT).unwrap();
    assert_methods_agree(addr, 200);

    pg.stop().unwrap();
    wait_for_status(addr, "/health", 503, FEW_INTERVALS).unwrap();
    assert_methods_agree(addr, 503);
}

#[tokio::test]
async fn five_hundred_idle_connections_do_not_keep_a_probe_waiting() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let (daemon, addr) = healthy_daemon("node-a", &pg);

    // Half say nothing at all, half stop in the middle of a request head.
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut stream = TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        idle.push(stream);
    }
    // Generous timeout: this asserts that the probe is answered at all while
    // every idle connection is still open, not how fast.
    let res = request(addr, "GET", "/health", Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "probe not answered with 500 idle clients: {e:#}\nlog:\n{}",
            daemon.log()
        )
    });
    assert_eq!(res.status, 200);
    assert_eq!(
        request(addr, "GET", "/live", Duration::from_secs(10))
            .unwrap()
            .status,
        200
    );

    // The server does not keep them forever: the request timeout closes an
    // idle connection and a half-sent one (the latter with 408).
    for stream in idle.iter_mut().take(2) {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("the server closes idle connections");
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_port_in_use_stops_the_daemon_with_the_address_named() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let options = DaemonOptions::for_server("node-a", &pg).with_http();
    let addr = options.http_addr().unwrap();
    let _squatter = TcpListener::bind(addr).unwrap();

    let mut daemon = Daemon::start(&options).unwrap();
    let status = daemon.wait_exit(WAIT).unwrap();
    let log = daemon.log();
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(
        log.contains(&format!("cannot listen for HTTP on {addr}")),
        "log:\n{log}"
    );
    assert!(
        log.contains(&format!("http.port {}", addr.port())),
        "log:\n{log}"
    );
    assert!(log.contains("already in use"), "log:\n{log}");
    assert!(
        !log.contains("daemon.started"),
        "the daemon started anyway:\n{log}"
    );
    assert!(
        !daemon.home.lock_path().exists(),
        "the lock outlived the failed start"
    );
}

/// The TCP ports process `pid` listens on (its sockets in /proc/net/tcp*).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is IP:PORT in hex; state 0A is LISTEN; field 9 the inode.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[tokio::test]
async fn with_http_disabled_no_port_is_opened() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg).with_http();
    options.http_enabled = false;
    let addr = options.http_addr().unwrap();
    let daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_log("daemon.running", WAIT).unwrap();

    assert!(
        TcpStream::connect(addr).is_err(),
        "something answers on {addr}"
    );
    let ports = listening_ports(daemon.pid().unwrap());
    assert!(
        ports.is_empty(),
        "the daemon listens on TCP ports {ports:?}"
    );
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_name_every_family() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let (_daemon, addr) = healthy_daemon("node-a", &pg);
    for _ in 0..3 {
        get(addr, "/health").unwrap();
    }
    // The latency gauge appears with the first background ping.
    wait_for(
        addr,
        "/metrics",
        "a PostgreSQL latency sample",
        WAIT,
        |res| {
            res.text()
                .lines()
                .any(|l| l.starts_with("steep_repl_postgresql_latency_seconds "))
        },
    )
    .unwrap();

    let res = get(addr, "/metrics").unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let families =
        parse_prometheus(&res.text()).unwrap_or_else(|e| panic!("{e:#}\n{}", res.text()));
    let expected = [
        ("steep_repl_up", "gauge"),
        ("steep_repl_postgresql_latency_seconds", "gauge"),
        ("steep_repl_postgresql_reconnects_total", "counter"),
        ("steep_repl_audit_queue_depth", "gauge"),
        ("steep_repl_audit_written_total", "counter"),
        ("steep_repl_audit_dropped_total", "counter"),
        ("steep_repl_http_requests_total", "counter"),
        ("steep_repl_http_request_duration_seconds", "histogram"),
        ("steep_repl_uptime_seconds", "gauge"),
        ("steep_repl_is_coordinator", "gauge"),
        // The IPC server's counters share the page.
        ("steep_repl_ipc_requests_total", "counter"),
        ("steep_repl_ipc_request_duration_seconds", "histogram"),
    ];
    for (name, kind) in expected {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing:\n{}", res.text()));
        assert_eq!(family.kind, kind, "{name}");
    }
    // A lone daemon has no peers: a family without a sample is left out,
    // as Prometheus' own client libraries do.
    for name in ["steep_repl_peer_up", "steep_repl_peer_rtt_seconds"] {
        assert!(
            !families.contains_key(name),
            "{name} present:\n{}",
            res.text()
        );
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        families[name]
            .samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    };
    for component in ["postgresql", "grpc", "ipc", "http"] {
        assert!(
            value("steep_repl_up", &[("component", component)]).is_some(),
            "{component}"
        );
    }
    assert_eq!(
        value("steep_repl_up", &[("component", "postgresql")]),
        Some(1.0)
    );
    assert_eq!(value("steep_repl_up", &[("component", "http")]), Some(1.0));
    assert!(value("steep_repl_postgresql_latency_seconds", &[]).unwrap() > 0.0);
    assert!(
        value(
            "steep_repl_http_requests_total",
            &[("path", "/health"), ("code", "200")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(families["steep_repl_http_request_duration_seconds"]
        .samples
        .iter()
        .any(|s| s.name.ends_with("_bucket")
            && s.labels.get("le").map(String::as_str) == Some("+Inf")));
    assert!(value("steep_repl_audit_written_total", &[]).is_some());
    assert!(value("steep_repl_uptime_seconds", &[]).is_some());
}

/// The PostgreSQL port that served a connection made through HAProxy.
async fn served_by(haproxy: &Haproxy, pg: &PgServer) -> anyhow::Result<i32> {
    let options = pg.tcp_options("postgres").port(haproxy.frontend.port());
    let mut conn = sqlx::postgres::PgConnection::connect_with(&options).await?;
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(port)
}

async fn ports_reached(haproxy: &Haproxy, pg: &PgServer, connections: usize) -> BTreeSet<i32> {
    let mut ports = BTreeSet::new();
    for _ in 0..connections {
        ports.insert(served_by(haproxy, pg).await.unwrap());
    }
    ports
}

#[tokio::test]
async fn haproxy_routes_only_to_the_node_whose_postgresql_is_healthy() {
    let (pg_a, _conn_a) = server_with_extension().await.unwrap();
    let (mut pg_b, _conn_b) = server_with_extension().await.unwrap();
    let (_daemon_a, http_a) = healthy_daemon("node-a", &pg_a);
    let (daemon_b, http_b) = healthy_daemon("node-b", &pg_b);
    let backend = |name: &str, pg: &PgServer, http: SocketAddr| Backend {
        name: name.to_string(),
        traffic: SocketAddr::from(([127, 0, 0, 1], pg.port)),
        // HAProxy never looks at PostgreSQL itself: the daemon's answer
        // to `OPTIONS /` on its HTTP port is the whole verdict.
        check_port: http.port(),
    };
    let haproxy = Haproxy::start(&[
        backend("node-a", &pg_a, http_a),
        backend("node-b", &pg_b, http_b),
    ])
    .unwrap();
    haproxy
        .wait_for_states(&[("node-a", "UP"), ("node-b", "UP")], WAIT)
        .unwrap();
    let both = BTreeSet::from([i32::from(pg_a.port), i32::from(pg_b.port)]);
    assert_eq!(ports_reached(&haproxy, &pg_a, 6).await, both);

    pg_b.stop().unwrap();
    haproxy
        .wait_for_states(&[("node-a", "UP"), ("node-b", "DOWN")], WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\ndaemon b log:\n{}", daemon_b.log()));
    assert_eq!(
        ports_reached(&haproxy, &pg_a, 6).await,
        BTreeSet::from([i32::from(pg_a.port)])
    );

    pg_b.start_again().unwrap();
    haproxy
        .wait_for_states(&[("node-a", "UP"), ("node-b", "UP")], WAIT)
        .unwrap();
    assert_eq!(ports_reached(&haproxy, &pg_a, 6).await, both);
}

/// Over the network `/health` shows states, not connection details (user,
/// database, pg_hba text); the local socket shows them, and so does HTTP
/// with `http.details: true`. `/metrics` names peers without addresses
/// unless asked (tests/src and actors unit tests cover the page).
#[tokio::test]
async fn health_over_http_hides_connection_details_unless_asked_while_ipc_shows_them() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg).with_http();
    options.pg_database = "no_such_db".into();
    let addr = options.http_addr().unwrap();
    let daemon = Daemon::start(&options).unwrap();
    let error_of = |body: &serde_json::Value| {
        body["components"]["postgresql"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // First the daemon meets the real failure (the local socket says it),
    // then HTTP is asked about the same state.
    let mut ipc = daemon.wait_for_ipc(WAIT).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let local = ipc.call("health.check", serde_json::json!({})).unwrap();
        if error_of(&local).contains("no_such_db") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{local}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = get(addr, "/health").unwrap().json().unwrap_or_default();
    let hidden = error_of(&body);
    assert!(!hidden.is_empty(), "{body}");
    assert!(!hidden.contains("no_such_db"), "{hidden}");
    assert!(hidden.contains("steep-repl health"), "{hidden}");

    let detailed = options.clone().with_http();
    let addr = detailed.http_addr().unwrap();
    let _daemon =
        Daemon::start_with_env(&detailed, &[("STEEP_REPL_HTTP__DETAILS", "true")]).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let body = get(addr, "/health").map(|r| r.json().unwrap_or_default());
        if body
            .as_ref()
            .is_ok_and(|b| error_of(b).contains("no_such_db"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Under a descriptor limit of 1 280 (a common service default), 1 300
/// idle HTTP clients used to take every descriptor: IPC, PostgreSQL
/// reconnects, gRPC and the spool failed. HTTP now holds at most a quarter
/// of the limit, so the rest keeps working while they hang on.
#[tokio::test]
async fn thirteen_hundred_idle_http_clients_leave_descriptors_for_everything_else() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let options = DaemonOptions::for_server("node-a", &pg).with_http();
    let addr = options.http_addr().unwrap();
    let daemon = Daemon::start_limited(&options, 1280).unwrap();
    // This process needs room for the clients too.
    steep_repl_actors::fd_limit::ensure_open_files(4096).unwrap();
    wait_for_status(addr, "/health", 200, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", daemon.log()));
    let mut idle = Vec::new();
    for _ in 0..1300 {
        // Those beyond the cap wait in the listen backlog or are refused.
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    // The local socket still answers, and PostgreSQL can be reconnected.
    let mut ipc = daemon.wait_for_ipc(WAIT).unwrap();
    ipc.call("status.get", serde_json::json!({})).unwrap();
    pg.stop().unwrap();
    pg.start_again().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let health = daemon
            .ipc()
            .and_then(|mut c| c.call("health.check", serde_json::json!({})));
        if health
            .as_ref()
            .is_ok_and(|h| h["components"]["postgresql"]["healthy"] == true)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect with {} idle HTTP clients: {health:?}\nlog:\n{}",
            idle.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
}

//! Daemon core measurements (issue "daemon core"), on a real PostgreSQL 18:
//!
//! 1. start-up: process spawn to "PostgreSQL connected and registered" (the
//!    `postgresql.connected` log line, written after registration), and to
//!    "connected and every listener up" as a client sees it (IPC
//!    `health.check` healthy with IPC, HTTP and gRPC over mTLS all
//!    listening); both polled every millisecond;
//! 2. idle RSS of a running daemon, and its RSS before and after a million
//!    IPC `status.get` and a million HTTP `/health` requests;
//! 3. reconnect: PostgreSQL stopped for 10 s (deep into the backoff), then
//!    started; time from its port opening to the daemon's `health.check`
//!    reporting PostgreSQL healthy again;
//! 4. audit throughput through the AuditActor (spool + batched INSERT via
//!    the `Db` handle), against a reference measured in the same run: the same
//!    rows written by a bare sqlx loop with the same batched statement and
//!    no spool.
//!
//! Run: `cargo build --release && target/release/core_bench`
//! (STEEP_DAEMON_BIN defaults to target/release/steep-repl here);
//! `target/release/core_bench audit` measures only the audit throughput,
//! `target/release/core_bench memory` only the memory (2).

use actix::Actor;
use anyhow::{bail, Context, Result};
use sqlx::Executor;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use steep_repl_actors::audit::{AuditActor, AuditSettings, Flush, GetAuditStatus, RecordBatch};
use steep_repl_actors::audit_event::{AuditAction, AuditEvent};
use steep_repl_actors::db::{Db, DbSettings};
use steep_repl_actors::health_state::{HealthSnapshot, PostgresHealth, SharedHealth};
use steep_repl_benches::ipc_load;
use steep_repl_tests::cluster::{grpc_yaml, Certificates};
use steep_repl_tests::daemon::{Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::ipc::IpcClient;
use steep_repl_tests::paths::repo_root;
use steep_repl_tests::pg::PgServer;
use steep_repl_tests::ports::free_port;

const STARTS: usize = 15;
const EVENTS: usize = 200_000;
const RECONNECTS: usize = 3;
const MILLION: usize = 1_000_000;
const POLL: Duration = Duration::from_millis(1);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(label: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    println!(
        "{label} ({} runs): median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        times.len(),
        percentile(times, 0.5),
        percentile(times, 0.9),
        times[0],
        times[times.len() - 1]
    );
}

/// A production-shaped daemon: IPC, HTTP and gRPC with mutual TLS.
fn full_options(node_id: &str, pg: &PgServer, certs: &Certificates) -> DaemonOptions {
    let mut options = DaemonOptions::for_server(node_id, pg).with_http();
    options.grpc = grpc_yaml(free_port(), &[], &certs.tls_yaml(node_id));
    options.log_level = "info";
    options
}

/// The `health.check` answer, or None while the socket is not there yet.
fn health(daemon: &Daemon) -> Option<serde_json::Value> {
    IpcClient::connect(&daemon.home.socket_path())
        .ok()?
        .call("health.check", serde_json::json!({}))
        .ok()
}

fn all_healthy(h: &serde_json::Value) -> bool {
    h["status"] == "healthy"
        && ["postgresql", "ipc", "http", "grpc"].iter().all(|c| {
            h["components"][c]["healthy"] == true && h["components"][c]["status"] != "disabled"
        })
}

/// Start-up times in ms: (to `postgresql.connected`, to every listener up).
fn startup(pg: &PgServer, certs: &Certificates) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut connected, mut all_up) = (Vec::new(), Vec::new());
    for i in 0..STARTS {
        let options = full_options(&format!("bench-{i}"), pg, certs);
        let started = Instant::now();
        let mut daemon = Daemon::start(&options)?;
        let (mut at_connected, mut at_all_up) = (None, None);
        while at_connected.is_none() || at_all_up.is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("start {i} not ready after 20 s; log:\n{}", daemon.log());
            }
            if at_connected.is_none() && daemon.log().contains("postgresql.connected") {
                at_connected = Some(started.elapsed());
            }
            if at_all_up.is_none() && health(&daemon).is_some_and(|h| all_healthy(&h)) {
                at_all_up = Some(started.elapsed());
            }
            std::thread::sleep(POLL);
        }
        connected.push(at_connected.unwrap_or_default().as_secs_f64() * 1000.0);
        all_up.push(at_all_up.unwrap_or_default().as_secs_f64() * 1000.0);
        daemon.stop()?;
    }
    Ok((connected, all_up))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `requests` keep-alive `GET /health` on `connections` connections; every
/// answer must be a 200 or a 503 (the daemon's verdict: under this load
/// PostgreSQL can miss its pings, see docs/BENCHMARKS.md). Returns the
/// number of 503s and the first 503's body.
fn http_load(
    addr: SocketAddr,
    requests: usize,
    connections: usize,
) -> Result<(usize, Option<String>)> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(move || -> Result<(usize, Option<String>)> {
                    let mut unavailable = (0, None);
                    let stream = TcpStream::connect(addr)?;
                    stream.set_nodelay(true)?;
                    let mut writer = stream.try_clone()?;
                    let mut reader = BufReader::new(stream);
                    let mut body = Vec::new();
                    for _ in 0..requests / connections {
                        writer.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")?;
                        let mut length = 0usize;
                        let mut line = String::new();
                        reader.read_line(&mut line)?;
                        let status = std::mem::take(&mut line);
                        loop {
                            line.clear();
                            if reader.read_line(&mut line)? == 0 {
                                bail!("connection closed");
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse()?;
                                }
                            }
                        }
                        body.resize(length, 0);
                        reader.read_exact(&mut body)?;
                        if status.starts_with("HTTP/1.1 503") {
                            unavailable.0 += 1;
                            if unavailable.1.is_none() {
                                unavailable.1 = Some(String::from_utf8_lossy(&body).into_owned());
                            }
                        } else if !status.starts_with("HTTP/1.1 200") {
                            bail!(
                                "answer: {} {}",
                                status.trim_end(),
                                String::from_utf8_lossy(&body)
                            );
                        }
                    }
                    Ok(unavailable)
                })
            })
            .collect();
        let mut unavailable = (0, None);
        for worker in workers {
            let (count, first) = worker
                .join()
                .map_err(|_| anyhow::anyhow!("an HTTP client panicked"))??;
            unavailable.0 += count;
            unavailable.1 = unavailable.1.or(first);
        }
        Ok(unavailable)
    })
}

/// RSS in KiB: (idle after 5 s, idle after 30 s, after a million IPC
/// requests, after a million HTTP requests).
fn memory(pg: &PgServer, certs: &Certificates) -> Result<[u64; 4]> {
    let options = full_options("bench-rss", pg, certs);
    let http = options.http_addr().context("http address")?;
    let mut daemon = Daemon::start(&options)?;
    daemon.wait_for_postgresql(Duration::from_secs(20))?;
    let pid = daemon.pid().context("pid")?;
    std::thread::sleep(Duration::from_secs(5));
    let after_5s = rss_kib(pid)?;
    std::thread::sleep(Duration::from_secs(25));
    let after_30s = rss_kib(pid)?;
    let started = Instant::now();
    let line = r#"{"id":1,"method":"status.get","params":{}}"#;
    ipc_load::run(
        &daemon.home.socket_path(),
        line,
        MILLION,
        2,
        100,
        |_| Ok(()),
    )?;
    let after_ipc = rss_kib(pid)?;
    println!(
        "  (a million status.get in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let unavailable = match http_load(http, MILLION, 2) {
        Ok(unavailable) => unavailable,
        Err(e) => return Err(e.context(format!("daemon log:\n{}", warnings(&daemon)))),
    };
    let after_http = rss_kib(pid)?;
    println!(
        "  (a million GET /health in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    if let (count, Some(first)) = unavailable {
        println!("  ({count} of them answered 503, the first: {first})");
        println!("  (the daemon's warnings:\n{})", warnings(&daemon));
    }
    daemon.stop()?;
    Ok([after_5s, after_30s, after_ipc, after_http])
}

/// The daemon's last warnings and PostgreSQL lines.
fn warnings(daemon: &Daemon) -> String {
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("postgresql") || l.contains("WARN") || l.contains("ERRO"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(50),
    )
    .is_ok()
}

/// Reconnect times in ms: PostgreSQL's port open to the daemon healthy again.
fn reconnect(pg: &mut PgServer, certs: &Certificates) -> Result<Vec<f64>> {
    let mut daemon = Daemon::start(&full_options("bench-reconnect", pg, certs))?;
    daemon.wait_for_postgresql(Duration::from_secs(20))?;
    let port = pg.port;
    let mut times = Vec::new();
    for _ in 0..RECONNECTS {
        pg.stop()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while health(&daemon).is_some_and(|h| h["components"]["postgresql"]["healthy"] == true) {
            if Instant::now() > deadline {
                bail!("the daemon never noticed PostgreSQL stopping");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_secs(10));
        let (opened, healthy) = std::thread::scope(|scope| -> Result<(Instant, Instant)> {
            let starting = scope.spawn(|| pg.start_again());
            while !port_open(port) {
                std::thread::sleep(POLL);
            }
            let opened = Instant::now();
            let deadline = opened + Duration::from_secs(30);
            while !health(&daemon).is_some_and(|h| h["components"]["postgresql"]["healthy"] == true)
            {
                if Instant::now() > deadline {
                    bail!(
                        "not reconnected 30 s after PostgreSQL returned; log:\n{}",
                        daemon.log()
                    );
                }
                std::thread::sleep(POLL);
            }
            let healthy = Instant::now();
            starting
                .join()
                .map_err(|_| anyhow::anyhow!("pg_ctl start panicked"))??;
            Ok((opened, healthy))
        })?;
        times.push((healthy - opened).as_secs_f64() * 1000.0);
    }
    daemon.stop()?;
    Ok(times)
}

fn events(n: usize) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            AuditEvent::new(AuditAction::NodeStatusChanged)
                .target("node", format!("node-{}", i % 10))
                .old_value(serde_json::json!({"status": "healthy"}))
                .new_value(serde_json::json!({"status": "degraded"}))
        })
        .collect()
}

fn db_settings(pg: &PgServer) -> DbSettings {
    DbSettings {
        enabled: true,
        // The daemon's own role, as in production (not a superuser).
        connect: pg
            .daemon_tcp_options("postgres")
            .options([("steep_repl.actor", "steep-repl@bench")]),
        host: "127.0.0.1".into(),
        port: pg.port,
        user: steep_repl_tests::pg::DAEMON_USER.into(),
        database: "postgres".into(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(1),
        password_source: None,
        node_id: "bench".into(),
    }
}

/// Events per second through AuditActor -> Db handle -> PostgreSQL, and the
/// number of spool fsyncs that took.
async fn audit_actor_rate(pg: &PgServer, spool_dir: &Path) -> Result<(f64, u64)> {
    pg.create_daemon_login()?;
    let health = SharedHealth::new(
        HealthSnapshot::starting(
            "bench",
            "bench",
            "bench",
            PostgresHealth::new("127.0.0.1", pg.port, "postgres"),
        ),
        Duration::from_secs(3),
    );
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let db = Db::start(db_settings(pg), health.clone(), log.clone());
    let settings = AuditSettings::new(
        spool_dir.join("audit.spool"),
        Duration::from_secs(86400 * 365),
        Duration::from_secs(3600),
    );
    let audit = AuditActor::new(settings, db, health.clone(), log).start();
    // Wait until connected (the first flush would otherwise wait for it).
    while !health.load().postgresql.registered {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batch = events(EVENTS);
    let started = Instant::now();
    for chunk in batch.chunks(1000) {
        audit.do_send(RecordBatch(chunk.to_vec()));
    }
    let flushed = audit
        .send(Flush {
            timeout: Duration::from_secs(120),
        })
        .await?;
    let elapsed = started.elapsed();
    let status = audit.send(GetAuditStatus).await?;
    anyhow::ensure!(
        flushed && status.written_total as usize >= EVENTS,
        "not all written: {status:?}"
    );
    Ok((EVENTS as f64 / elapsed.as_secs_f64(), status.spool_syncs))
}

/// The reference: the same statement in batches of 2000 from one
/// connection, no spool, no actors.
async fn bare_insert_rate(pg: &PgServer) -> Result<f64> {
    let mut conn = pg.connect().await?;
    let batch = events(EVENTS);
    let started = Instant::now();
    for chunk in batch.chunks(2000) {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        sqlx::query(steep_repl_actors::db::queries::INSERT_AUDIT_BATCH)
            .bind(chunk.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|e| e.action.clone()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|e| e.target_type.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|e| e.target_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|e| json(&e.old_value)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|e| json(&e.new_value)).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|e| e.client_ip.map(|ip| ip.to_string()))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|e| e.success).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|e| e.error_message.clone())
                    .collect::<Vec<_>>(),
            )
            .bind("steep-repl@reference")
            .execute(&mut conn)
            .await?;
    }
    Ok(EVENTS as f64 / started.elapsed().as_secs_f64())
}

/// One measure alone (`core_bench audit`, `core_bench memory`).
#[derive(Clone, Copy, PartialEq)]
enum Only {
    Audit,
    Memory,
}

fn main() -> Result<()> {
    if std::env::var_os("STEEP_DAEMON_BIN").is_none() {
        std::env::set_var(
            "STEEP_DAEMON_BIN",
            repo_root().join("target/release/steep-repl"),
        );
    }
    let only = match std::env::args().nth(1).as_deref() {
        None => None,
        Some("audit") => Some(Only::Audit),
        Some("memory") => Some(Only::Memory),
        Some(other) => bail!("unknown argument {other:?}; usage: core_bench [audit|memory]"),
    };
    let system = actix_rt::System::new();
    system.block_on(async {
        let (mut pg, mut conn) = server_with_extension().await?;
        conn.execute("SELECT 1").await?;
        if only == Some(Only::Audit) {
            return audit_throughput(&pg).await;
        }
        let ids: Vec<String> = (0..STARTS)
            .map(|i| format!("bench-{i}"))
            .chain(["bench-rss".into(), "bench-reconnect".into()])
            .collect();
        let certs = Certificates::new(&ids.iter().map(String::as_str).collect::<Vec<_>>())?;

        if only.is_none() {
            let (mut connected, mut all_up) = startup(&pg, &certs)?;
            summary("start-up to PostgreSQL connected+registered", &mut connected);
            summary("start-up to connected and IPC, HTTP, gRPC (mTLS) listening", &mut all_up);
        }

        let [rss5, rss30, rss_ipc, rss_http] = memory(&pg, &certs)?;
        println!(
            "RSS: idle {:.1} MiB after 5 s, {:.1} MiB after 30 s; {:.1} MiB after 1M IPC status.get; {:.1} MiB after 1M more HTTP /health",
            mib(rss5), mib(rss30), mib(rss_ipc), mib(rss_http)
        );
        if only == Some(Only::Memory) {
            return Ok(());
        }

        let mut back = reconnect(&mut pg, &certs)?;
        summary("reconnect: PostgreSQL port open to daemon healthy, after 10 s down", &mut back);

        audit_throughput(&pg).await
    })?;
    Ok(())
}

/// Measure 4: the reference first, then the AuditActor, in one run.
async fn audit_throughput(pg: &PgServer) -> Result<()> {
    let spool = tempfile::tempdir()?;
    let reference = bare_insert_rate(pg).await?;
    let (ours, syncs) = audit_actor_rate(pg, spool.path()).await?;
    println!(
        "audit throughput ({EVENTS} events): AuditActor {ours:.0} events/s ({syncs} spool fsyncs), bare batched INSERT {reference:.0} events/s, ratio {:.2}",
        ours / reference
    );
    Ok(())
}

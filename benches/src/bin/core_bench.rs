//! Daemon core measurements (issue "daemon core"), on a real PostgreSQL 18:
//!
//! 1. start-up: process spawn to "PostgreSQL connected and registered"
//!    (the `postgresql.connected` log line, written after registration);
//! 2. idle RSS of a running daemon;
//! 3. audit throughput through the AuditActor (spool + batched INSERT via
//!    the DbActor), against a reference measured in the same run: the same
//!    rows written by a bare sqlx loop with the same batched statement and
//!    no spool.
//!
//! Run: `cargo build --release && cargo run --release -p steep-repl-benches --bin core_bench`
//! (STEEP_DAEMON_BIN defaults to target/release/steep-repl here).

use actix::Actor;
use anyhow::{Context, Result};
use sqlx::Executor;
use std::time::{Duration, Instant};
use steep_repl_actors::audit::{AuditActor, AuditSettings, Flush, GetAuditStatus, RecordBatch};
use steep_repl_actors::audit_event::{AuditAction, AuditEvent};
use steep_repl_actors::db::{DbActor, DbSettings, SelfRegistration};
use steep_repl_actors::health_state::{HealthSnapshot, PostgresHealth, SharedHealth};
use steep_repl_tests::daemon::{Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::paths::repo_root;
use steep_repl_tests::pg::PgServer;

const STARTS: usize = 15;
const EVENTS: usize = 200_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn startup(pg: &PgServer) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for i in 0..STARTS {
        let started = Instant::now();
        let mut daemon = Daemon::start(&DaemonOptions::for_server(&format!("bench-{i}"), pg))?;
        daemon.wait_for_log("postgresql.connected", Duration::from_secs(20))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        daemon.stop()?;
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn idle_rss_kib(pg: &PgServer) -> Result<(u64, u64)> {
    let mut daemon = Daemon::start(&DaemonOptions::for_server("bench-rss", pg))?;
    daemon.wait_for_log("postgresql.connected", Duration::from_secs(20))?;
    let read = |pid: u32| -> Result<u64> {
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
    };
    let pid = daemon.pid().context("pid")?;
    std::thread::sleep(Duration::from_secs(5));
    let after_5s = read(pid)?;
    std::thread::sleep(Duration::from_secs(25));
    let after_30s = read(pid)?;
    daemon.stop()?;
    Ok((after_5s, after_30s))
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
        connect: pg
            .tcp_options("postgres")
            .options([("steep_repl.actor", "steep-repl@bench")]),
        host: "127.0.0.1".into(),
        port: pg.port,
        user: "postgres".into(),
        database: "postgres".into(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(1),
        node: SelfRegistration {
            node_id: "bench".into(),
            node_name: "bench".into(),
            host: "127.0.0.1".into(),
            port: pg.port,
            priority: 50,
            grpc_host: None,
            grpc_port: None,
        },
    }
}

/// Events per second through AuditActor -> DbActor -> PostgreSQL.
async fn audit_actor_rate(pg: &PgServer, spool_dir: &std::path::Path) -> Result<f64> {
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
    let db = DbActor::new(db_settings(pg), health.clone(), log.clone()).start();
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
    Ok(EVENTS as f64 / elapsed.as_secs_f64())
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

fn main() -> Result<()> {
    if std::env::var_os("STEEP_DAEMON_BIN").is_none() {
        std::env::set_var(
            "STEEP_DAEMON_BIN",
            repo_root().join("target/release/steep-repl"),
        );
    }
    let system = actix_rt::System::new();
    system.block_on(async {
        let (pg, mut conn) = server_with_extension().await?;
        conn.execute("SELECT 1").await?;

        let times = startup(&pg)?;
        println!(
            "start-up to PostgreSQL connected+registered ({STARTS} starts): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[times.len() - 1]
        );

        let (rss5, rss30) = idle_rss_kib(&pg)?;
        println!("idle RSS: {:.1} MiB after 5 s, {:.1} MiB after 30 s", rss5 as f64 / 1024.0, rss30 as f64 / 1024.0);

        let spool = tempfile::tempdir()?;
        let reference = bare_insert_rate(&pg).await?;
        let ours = audit_actor_rate(&pg, spool.path()).await?;
        println!(
            "audit throughput ({EVENTS} events): AuditActor {ours:.0} events/s, bare batched INSERT {reference:.0} events/s, ratio {:.2}",
            ours / reference
        );
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

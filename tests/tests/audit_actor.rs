//! The AuditActor against a real PostgreSQL 18, driven through its mailbox:
//! batches in flight concurrently, an event PostgreSQL refuses does not
//! block the others, and a flush reports what it could write.

use actix::Actor;
use std::time::Duration;
use steep_repl_actors::audit::{AuditActor, AuditSettings, Flush, GetAuditStatus, RecordBatch};
use steep_repl_actors::audit_event::{AuditAction, AuditEvent};
use steep_repl_actors::db::{Db, DbSettings};
use steep_repl_actors::health_state::{HealthSnapshot, PostgresHealth, SharedHealth};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::pg::PgServer;

fn start(
    pg: &PgServer,
    spool: &std::path::Path,
    batch_size: usize,
) -> (actix::Addr<AuditActor>, SharedHealth) {
    pg.create_daemon_login()
        .expect("creating the daemon's login role");
    let health = SharedHealth::new(
        HealthSnapshot::starting(
            "t",
            "a",
            "A",
            PostgresHealth::new("127.0.0.1", pg.port, "postgres"),
        ),
        Duration::from_secs(3),
    );
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let settings = DbSettings {
        enabled: true,
        // As the daemon connects (its own role, not a superuser): its
        // events are recorded under this actor.
        connect: pg
            .daemon_tcp_options("postgres")
            .options([("steep_repl.actor", "steep-repl@a")]),
        host: "127.0.0.1".into(),
        port: pg.port,
        user: steep_repl_tests::pg::DAEMON_USER.into(),
        database: "postgres".into(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(1),
        password_source: None,
        node_id: "a".into(),
    };
    let db = Db::start(settings, health.clone(), log.clone());
    let mut audit_settings = AuditSettings::new(
        spool.join("audit.spool"),
        Duration::from_secs(86400 * 400),
        Duration::from_secs(3600),
    );
    audit_settings.batch_size = batch_size;
    (
        AuditActor::new(audit_settings, db, health.clone(), log).start(),
        health,
    )
}

/// A flush before the first connection answers at once (nothing can be
/// written); these tests want the connected case.
async fn connected(health: &SharedHealth) {
    while !health.load().postgresql.registered {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(AuditAction::NodeStatusChanged).target("node", format!("n{n}"))
}

#[actix_rt::test]
async fn many_batches_in_flight_write_every_event_once() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (audit, health) = start(&pg, dir.path(), 100);
    connected(&health).await;
    let events: Vec<AuditEvent> = (0..5_000).map(event).collect();
    for chunk in events.chunks(250) {
        audit.do_send(RecordBatch(chunk.to_vec()));
    }
    assert!(audit
        .send(Flush {
            timeout: Duration::from_secs(60)
        })
        .await
        .unwrap());
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT event_id) FROM steep_repl.audit_log WHERE action = 'node.status_changed' AND actor = 'steep-repl@a'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored, 5_000);
    let status = audit.send(GetAuditStatus).await.unwrap();
    assert_eq!((status.queue_depth, status.dropped_total), (0, 0));
    assert_eq!(
        std::fs::metadata(dir.path().join("audit.spool"))
            .unwrap()
            .len(),
        0
    );
}

#[actix_rt::test]
async fn an_event_postgresql_refuses_is_dropped_and_the_others_are_written() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (audit, health) = start(&pg, dir.path(), 50);
    connected(&health).await;
    let mut events: Vec<AuditEvent> = (0..120).map(event).collect();
    // Violates audit_log_action_format: can never be written.
    events[37].action = "Not An Action".to_string();
    audit.do_send(RecordBatch(events));
    assert!(audit
        .send(Flush {
            timeout: Duration::from_secs(60)
        })
        .await
        .unwrap());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log WHERE action = 'node.status_changed' AND actor = 'steep-repl@a'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 119);
    let status = audit.send(GetAuditStatus).await.unwrap();
    assert_eq!(status.dropped_total, 1);
    assert!(status
        .last_error
        .unwrap()
        .contains("audit_log_action_format"));
}

#[actix_rt::test]
async fn a_flush_without_postgresql_returns_false_and_keeps_the_spool() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (audit, health) = start(&pg, dir.path(), 100);
    connected(&health).await;
    pg.stop().unwrap();
    audit.do_send(RecordBatch((0..10).map(event).collect()));
    let flushed = audit
        .send(Flush {
            timeout: Duration::from_secs(20),
        })
        .await
        .unwrap();
    assert!(!flushed);
    let spool = std::fs::read_to_string(dir.path().join("audit.spool")).unwrap();
    assert_eq!(spool.lines().count(), 10);
}

/// Events are on stable storage soon after they are recorded, before
/// PostgreSQL has them and without waiting for a flush or a clean stop:
/// a power loss loses none that were spooled a moment earlier.
#[actix_rt::test]
async fn recorded_events_are_fsynced_to_the_spool_without_waiting_for_postgresql() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (audit, health) = start(&pg, dir.path(), 100);
    connected(&health).await;
    pg.stop().unwrap();
    for n in 0..5 {
        audit.do_send(RecordBatch(vec![event(n)]));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = audit.send(GetAuditStatus).await.unwrap();
        if status.spool_syncs > 0 || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.spool_syncs > 0,
        "the spool was never fsynced: {status:?}"
    );
    assert_eq!(status.queue_depth, 5, "{status:?}");
}

//! The database keeper's reconnect schedule, read through its handle with a
//! paused clock: against a port where nothing listens, attempts follow the
//! backoff (100 ms doubling, capped at 5 s) instead of hammering the server.

use sqlx::postgres::PgConnectOptions;
use std::time::Duration;
use steep_repl_actors::db::{Db, DbSettings};
use steep_repl_actors::health_state::{DbPhase, HealthSnapshot, PostgresHealth, SharedHealth};

fn closed_port() -> u16 {
    // Bind and drop: nothing listens there for the length of the test.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn settings(port: u16) -> DbSettings {
    DbSettings {
        enabled: true,
        connect: PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(port)
            .username("u"),
        host: "127.0.0.1".into(),
        port,
        user: "u".into(),
        database: "postgres".into(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(1),
        password_source: None,
        node_id: "a".into(),
    }
}

#[actix_rt::test]
async fn reconnect_attempts_follow_the_backoff_schedule() {
    let port = closed_port();
    let pg = PostgresHealth::new("127.0.0.1", port, "postgres");
    let health = SharedHealth::new(
        HealthSnapshot::starting("t", "a", "A", pg),
        Duration::from_secs(3),
    );
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let db = Db::start(settings(port), health.clone(), log);

    // Let the first attempt fail for real, then run on virtual time.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::pause();
    let mut samples = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Real I/O (the refused connects) needs a moment of real time.
        tokio::time::resume();
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::time::pause();
        samples.push(db.status().await.unwrap().attempts);
    }
    let status = db.status().await.unwrap();
    assert_eq!(status.phase, DbPhase::Connecting);
    assert!(status.last_error.unwrap().contains("connection refused"));
    // Nominal schedule from the first failure: 0.1+0.2+0.4+0.8+1.6+3.2 = 6.3 s
    // for 7 attempts, then one every 5 s (with jitter between 50 and 100 %).
    eprintln!("attempts per virtual second: {samples:?}");
    let after_20s = *samples.last().unwrap();
    assert!(
        (8..=16).contains(&after_20s),
        "attempts after ~20 s: {samples:?}"
    );
    // The late part of the schedule is capped: at most one attempt a second
    // on average and at least one per 5 s.
    let late = samples[19] - samples[9];
    assert!(
        (2..=10).contains(&late),
        "attempts in the last 10 s: {samples:?}"
    );
    // Health says why.
    let snapshot = health.load();
    assert!(snapshot
        .postgresql
        .error
        .as_deref()
        .unwrap_or("")
        .contains("connection refused"));
}

//! The daemon core against real PostgreSQL servers: registration, the audit
//! trail through the spool, outages, crashes, bad settings, one instance.

use sqlx::postgres::PgConnection;
use sqlx::Executor;
use std::time::{Duration, Instant};
use steep_repl_tests::daemon::{run_cli, Daemon, DaemonHome, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::paths::pg15_bindir;
use steep_repl_tests::pg::PgServer;

const WAIT: Duration = Duration::from_secs(20);

async fn count(conn: &mut PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// Polls `sql` (a count) until it returns `expected`.
async fn wait_count(pg: &PgServer, sql: &'static str, expected: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut conn) = pg.connect().await {
            if let Ok(n) = sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await {
                if n == expected {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{sql} stayed at {n}, expected {expected}"
                );
            }
        }
        assert!(Instant::now() < deadline, "{sql} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_daemon_audits_its_start_and_stop_and_registers_nothing_by_itself() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let mut daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();

    wait_count(
        &pg,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'daemon.started'",
        1,
    )
    .await;
    let (actor, target): (String, String) = sqlx::query_as(
        "SELECT actor, target_id FROM steep_repl.audit_log WHERE action = 'daemon.started'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), target.as_str()),
        ("steep-repl@node-a", "node-a")
    );
    // It wrote that row as a member of steep_repl_daemon, not as a
    // superuser: through the extension's functions only.
    let roles: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT DISTINCT a.usename::text, r.rolsuper, pg_has_role(a.usename, 'steep_repl_daemon', 'MEMBER')
           FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
          WHERE a.application_name = 'steep-repl'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(roles, [("steep_daemon".to_string(), false, true)]);
    // The registry is the Raft membership's projection: a daemon in no
    // cluster writes no row for itself.
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM steep_repl.nodes").await,
        0
    );
    assert!(daemon.home.lock_path().exists());

    let status = daemon.stop().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'daemon.stopped'"
        )
        .await,
        1
    );
    assert!(
        !daemon.home.lock_path().exists(),
        "the lock file outlived the daemon"
    );
    let spool = std::fs::metadata(daemon.home.spool_path())
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(spool, 0, "a clean stop leaves an empty spool");
}

#[tokio::test]
async fn a_postgresql_outage_is_survived_and_events_raised_meanwhile_land_once() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg);
    let mut daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_log("postgresql.connected", WAIT).unwrap();

    pg.stop().unwrap();
    daemon
        .wait_for_log("postgresql.connection_lost", WAIT)
        .unwrap();
    // An event raised during the outage: a configuration reload.
    options.extra = "  priority: 77\n".to_string();
    daemon.home.write_config(&options).unwrap();
    daemon.signal(libc::SIGHUP).unwrap();
    daemon.wait_for_log("config.changed", WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        daemon.wait_exit(Duration::from_millis(10)).is_err(),
        "the daemon died during the outage"
    );

    pg.start_again().unwrap();
    let back = Instant::now();
    daemon.wait_for_log("reconnect: true", WAIT).unwrap();
    eprintln!(
        "reconnected {:?} after PostgreSQL came back",
        back.elapsed()
    );
    wait_count(
        &pg,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'config.changed'",
        1,
    )
    .await;
    let mut conn = pg.connect().await.unwrap();
    let change: serde_json::Value = sqlx::query_scalar(
        "SELECT new_value FROM steep_repl.audit_log WHERE action = 'config.changed'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(change["changes"][0]["key"], "repl.priority", "{change}");
    assert_eq!(change["changes"][0]["new"], 77);
    assert_eq!(daemon.stop().unwrap().code(), Some(0));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'config.changed'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn events_spooled_before_a_kill_9_land_once_after_the_restart() {
    let (mut pg, mut conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg);
    let mut daemon = Daemon::start(&options).unwrap();
    wait_count(
        &pg,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'daemon.started'",
        1,
    )
    .await;
    let started_id: String = sqlx::query_scalar(
        "SELECT event_id::text FROM steep_repl.audit_log WHERE action = 'daemon.started'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    drop(conn);

    pg.stop().unwrap();
    daemon
        .wait_for_log("postgresql.connection_lost", WAIT)
        .unwrap();
    options.extra = "  priority: 60\n".to_string();
    daemon.home.write_config(&options).unwrap();
    daemon.signal(libc::SIGHUP).unwrap();
    daemon.wait_for_log("config.changed", WAIT).unwrap();
    daemon.kill9().unwrap();

    let spool = std::fs::read_to_string(daemon.home.spool_path()).unwrap();
    assert!(spool.contains("config.changed"), "spool:\n{spool}");
    // A crash between the database commit and the spool truncation leaves an
    // event that is already stored: simulate it with a copy of daemon.started.
    let replayed = format!(
        "{{\"event_id\":\"{started_id}\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"action\":\"daemon.started\",\"success\":true}}\n"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(daemon.home.spool_path())
        .unwrap();
    std::io::Write::write_all(&mut file, replayed.as_bytes()).unwrap();
    drop(file);
    assert!(
        daemon.home.lock_path().exists(),
        "kill -9 leaves the lock file behind"
    );

    pg.start_again().unwrap();
    daemon.restart().unwrap();
    wait_count(
        &pg,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'daemon.started'",
        2,
    )
    .await;
    wait_count(
        &pg,
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'config.changed'",
        1,
    )
    .await;
    let mut conn = pg.connect().await.unwrap();
    let copies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM steep_repl.audit_log WHERE event_id::text = $1")
            .bind(&started_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(copies, 1, "a replayed event was stored twice");
    assert_eq!(daemon.stop().unwrap().code(), Some(0));
}

/// Starts a daemon that cannot use its PostgreSQL and returns its log once
/// `needle` appeared; the daemon must still be running then.
async fn failing_daemon_log(options: DaemonOptions, needle: &str) -> String {
    let mut daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_log(needle, WAIT).unwrap();
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_err(),
        "the daemon gave up instead of retrying"
    );
    let log = daemon.log();
    assert_eq!(
        daemon.stop().unwrap().code(),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
    log
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_such() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg);
    options.pg_password = "not the password".to_string();
    let log = failing_daemon_log(options, "password authentication failed").await;
    assert!(
        log.contains("password authentication failed for user \\\"steep_daemon\\\"")
            || log.contains("password authentication failed for user \"steep_daemon\""),
        "{log}"
    );
    assert!(
        !log.contains("not the password"),
        "the password leaked into the log"
    );
}

#[tokio::test]
async fn an_unknown_database_is_reported_as_such() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg);
    options.pg_database = "no_such_db".to_string();
    failing_daemon_log(options, "no_such_db").await;
}

#[tokio::test]
async fn a_missing_extension_names_the_sql_to_run() {
    let pg = PgServer::start().unwrap();
    let log = failing_daemon_log(
        DaemonOptions::for_server("node-a", &pg),
        "postgresql.extension_missing",
    )
    .await;
    assert!(log.contains("CREATE EXTENSION steep_repl"), "{log}");
}

#[tokio::test]
async fn postgresql_15_is_refused_with_a_clear_message_and_nothing_written() {
    let pg = PgServer::start_with(&pg15_bindir().unwrap()).unwrap();
    let log = failing_daemon_log(
        DaemonOptions::for_server("node-a", &pg),
        "postgresql.unsupported_version",
    )
    .await;
    assert!(
        log.contains("steep-repl needs PostgreSQL 18 or later"),
        "{log}"
    );
    assert!(log.contains("PostgreSQL 15."), "{log}");
    let mut conn = pg.connect().await.unwrap();
    let schemas: i64 = count(
        &mut conn,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'steep_repl'",
    )
    .await;
    assert_eq!(schemas, 0);
    conn.execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_second_daemon_with_the_same_configuration_is_refused_naming_the_first() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut first = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    first.wait_for_log("postgresql.connected", WAIT).unwrap();
    let (code, _, stderr) = run_cli(&["run"], Some(&first.home.config_path())).unwrap();
    assert_eq!(code, 6, "{stderr}");
    let pid = first.pid().unwrap();
    assert!(
        stderr.contains(&format!(
            "another steep-repl (pid {pid}) is already running with this configuration"
        )),
        "{stderr}"
    );
    // The first one is unharmed.
    assert!(first.wait_exit(Duration::from_millis(100)).is_err());
    assert_eq!(first.stop().unwrap().code(), Some(0));
}

/// sqlx, actix and openraft log through `log` or `tracing`, not slog: their
/// records reach the daemon's own log, as `dependency.log` events naming
/// their target (test daemons run at level debug, where dependencies' debug
/// records are shown too).
#[tokio::test]
async fn the_logs_of_sqlx_and_other_dependencies_reach_the_daemon_log() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_log("postgresql.connected", WAIT).unwrap();
    daemon.wait_for_log("target: sqlx::query", WAIT).unwrap();
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("target: sqlx::query"))
        .unwrap();
    assert!(
        line.contains("dependency.log") && line.contains("node_id: node-a"),
        "{line}"
    );
    assert_eq!(daemon.stop().unwrap().code(), Some(0));
}

/// Runs `steep-repl run` with a config file holding `yaml`; expects it to
/// stop before starting anything, and returns its stderr.
fn refused_config(yaml: &str) -> (DaemonHome, String) {
    let home = DaemonHome::new().unwrap();
    std::fs::write(home.config_path(), yaml).unwrap();
    let (code, _, stderr) = run_cli(&["run"], Some(&home.config_path())).unwrap();
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains(&home.config_path().display().to_string()),
        "the file is not named: {stderr}"
    );
    assert!(
        !home.lock_path().exists() && !home.spool_path().exists(),
        "something was started"
    );
    (home, stderr)
}

#[test]
fn malformed_incomplete_or_unknown_configuration_stops_the_daemon_before_it_starts() {
    let (_, stderr) = refused_config("repl:\n  node_id: [unclosed\n");
    assert!(
        stderr.contains("line"),
        "no position for malformed YAML: {stderr}"
    );

    let (_, stderr) = refused_config("repl:\n  node_name: lonely\n");
    assert!(stderr.contains("repl.node_id"), "{stderr}");

    let (_, stderr) =
        refused_config("repl:\n  node_id: a\n  grpc:\n    enabled: false\n    prot: 1\n");
    assert!(stderr.contains("repl.grpc.prot"), "{stderr}");

    let (_, stderr) = refused_config(
        "repl:\n  node_id: a\n  grpc:\n    enabled: false\n  http:\n    port: 70000\n",
    );
    assert!(stderr.contains("repl.http.port"), "{stderr}");
}

/// `password_command` runs again before every connection attempt: after the
/// password is rotated (in PostgreSQL and where the command reads it) and
/// the daemon's connections are cut, it reconnects with the new one.
#[tokio::test]
async fn a_rotated_password_is_picked_up_by_password_command_at_the_reconnection() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(
        &secret,
        format!("{}\n", steep_repl_tests::pg::DAEMON_PASSWORD),
    )
    .unwrap();
    let mut options = DaemonOptions::for_server("node-a", &pg);
    options.pg_password = String::new();
    options.pg_extra = format!("    password_command: cat {}\n", secret.display());
    let daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_postgresql(Duration::from_secs(20)).unwrap();
    // Its pool's connections are made lazily: wait until none is still
    // authenticating (with the password about to change).
    let settled = Instant::now() + Duration::from_secs(20);
    loop {
        let (ready, starting): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE application_name = 'steep-repl'), \
                    count(*) FILTER (WHERE state IS NULL OR state = 'starting') \
             FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if ready > 0 && starting == 0 {
            break;
        }
        assert!(
            Instant::now() < settled,
            "the daemon's connections never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rotated = "rotated p@ss";
    std::fs::write(&secret, format!("{rotated}\n")).unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {} PASSWORD '{rotated}'",
        steep_repl_tests::pg::DAEMON_USER
    )))
    .await
    .unwrap();
    let rotated_at: sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc> =
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fresh: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'steep-repl' AND backend_start > $1",
        )
        .bind(rotated_at)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if fresh > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection with the rotated password within 30 s; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.wait_for_postgresql(Duration::from_secs(20)).unwrap();
    assert!(
        !daemon.log().contains(rotated),
        "the password leaked into the log"
    );
}

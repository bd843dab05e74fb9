//! The IpcActor through its mailbox and its socket, inside one actix
//! System, with a DbActor whose PostgreSQL is unreachable (the daemon-level
//! tests in `tests/` cover a real server).

use super::*;
use crate::db::{Db, DbSettings};
use crate::health_state::{HealthSnapshot, PostgresHealth};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

fn log() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

fn health() -> SharedHealth {
    let pg = PostgresHealth::new("127.0.0.1", 1, "postgres");
    SharedHealth::new(
        HealthSnapshot::starting("0.1.0", "a", "Node A", pg),
        Duration::from_secs(3),
    )
}

fn db(health: &SharedHealth) -> Db {
    let port = closed_port();
    let settings = DbSettings {
        enabled: true,
        connect: PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("nobody"),
        host: "127.0.0.1".into(),
        port,
        user: "nobody".into(),
        database: "postgres".into(),
        pool_size: 1,
        connect_timeout: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(200),
        password_source: None,
        node_id: "a".into(),
    };
    Db::start(settings, health.clone(), log())
}

fn start(settings: IpcSettings, health: &SharedHealth) -> Addr<IpcActor> {
    IpcActor::new(settings, db(health), health.clone(), None, log()).start()
}

async fn wait_listening(health: &SharedHealth) {
    for _ in 0..200 {
        if health.load().ipc.listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("IPC never listened: {:?}", health.load().ipc);
}

async fn call(stream: &mut BufReader<UnixStream>, request: Value) -> Value {
    let mut line = serde_json::to_vec(&request).unwrap();
    line.push(b'\n');
    stream.get_mut().write_all(&line).await.unwrap();
    let mut answer = String::new();
    stream.read_line(&mut answer).await.unwrap();
    serde_json::from_str(&answer).unwrap()
}

async fn connect(path: &Path) -> BufReader<UnixStream> {
    BufReader::new(UnixStream::connect(path).await.unwrap())
}

#[actix_rt::test]
async fn the_socket_gets_the_configured_mode_and_answers_status_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    let health = health();
    let ipc = start(IpcSettings::new(&path, 0o640, None), &health);
    wait_listening(&health).await;

    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    let mut client = connect(&path).await;
    let answer = call(&mut client, json!({"id": "s", "method": "status.get"})).await;
    assert_eq!(answer["id"], "s");
    assert_eq!(answer["error"], Value::Null);
    assert_eq!(answer["result"]["node"]["node_id"], "a");
    let answer = call(&mut client, json!({"id": 2, "method": "health.check"})).await;
    assert_eq!(answer["result"]["status"], "unhealthy");
    assert_eq!(answer["result"]["components"]["ipc"]["status"], "listening");

    let status = ipc.send(GetStatus).await.unwrap();
    assert!(status.listening);
    assert_eq!(status.metrics.methods[0].requests, 1);
    assert_eq!(status.metrics.connections_open, 1);
}

#[actix_rt::test]
async fn database_methods_say_why_postgresql_is_not_connected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    let health = health();
    let _ipc = start(IpcSettings::new(&path, 0o600, None), &health);
    wait_listening(&health).await;
    let mut client = connect(&path).await;
    // Let the DbActor fail its first attempt, so there is a reason to give.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for method in ["nodes.list", "audit.query"] {
        let answer = call(&mut client, json!({"id": method, "method": method})).await;
        assert_eq!(answer["result"], Value::Null);
        assert_eq!(answer["error"]["code"], "NOT_CONNECTED", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("PostgreSQL is not available: "),
            "{message}"
        );
    }
}

#[actix_rt::test]
async fn a_stale_socket_is_replaced_but_a_live_one_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let health = health();
    let _ipc = start(IpcSettings::new(&path, 0o600, None), &health);
    wait_listening(&health).await;
    let mut client = connect(&path).await;
    assert_eq!(
        call(&mut client, json!({"id": 1, "method": "status.get"})).await["error"],
        Value::Null
    );

    // Someone else listens on the next path: refused, with the reason in health.
    let taken = dir.path().join("taken.sock");
    let _other = std::os::unix::net::UnixListener::bind(&taken).unwrap();
    let health2 = crate::ipc::tests::health();
    let _ipc2 = start(IpcSettings::new(&taken, 0o600, None), &health2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ipc = health2.load().ipc.clone();
    assert!(!ipc.listening);
    assert!(
        ipc.error
            .as_deref()
            .unwrap_or("")
            .contains("another process answers"),
        "{ipc:?}"
    );
    assert!(taken.exists(), "the live socket was removed");

    // A regular file is not ours to delete.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"data").unwrap();
    let health3 = crate::ipc::tests::health();
    let _ipc3 = start(IpcSettings::new(&file, 0o600, None), &health3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(health3
        .load()
        .ipc
        .error
        .as_deref()
        .unwrap_or("")
        .contains("is not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[actix_rt::test]
async fn an_unknown_group_is_refused_before_any_socket_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    let health = health();
    let _ipc = start(
        IpcSettings::new(&path, 0o660, Some("no-such-group-steep".into())),
        &health,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = health.load().ipc.error.clone().unwrap_or_default();
    assert!(
        error.contains("ipc.group \"no-such-group-steep\" does not exist"),
        "{error}"
    );
    assert!(!path.exists());
}

#[actix_rt::test]
async fn the_socket_goes_to_the_configured_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    // Our own primary group: a group we may always give a file to.
    let gid = nix::unistd::getegid().as_raw();
    let health = health();
    let _ipc = start(
        IpcSettings::new(&path, 0o660, Some(gid.to_string())),
        &health,
    );
    wait_listening(&health).await;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o660));
}

#[actix_rt::test]
async fn clients_over_the_limit_get_an_error_line_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    let health = health();
    let mut settings = IpcSettings::new(&path, 0o600, None);
    settings.max_connections = 2;
    let metrics = settings.metrics.clone();
    let _ipc = start(settings, &health);
    wait_listening(&health).await;
    let mut first = connect(&path).await;
    let _second = connect(&path).await;
    assert_eq!(
        call(&mut first, json!({"id": 1, "method": "status.get"})).await["error"],
        Value::Null
    );

    let mut third = connect(&path).await;
    let mut line = String::new();
    third.read_line(&mut line).await.unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["error"]["code"], "INTERNAL_ERROR");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too many IPC connections"));
    line.clear();
    assert_eq!(
        third.read_line(&mut line).await.unwrap(),
        0,
        "the third client is closed"
    );
    assert_eq!(metrics.snapshot().connections_rejected, 1);

    // A slot freed is a slot usable again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut fourth = connect(&path).await;
    assert_eq!(
        call(&mut fourth, json!({"id": 4, "method": "status.get"})).await["error"],
        Value::Null
    );
}

#[actix_rt::test]
async fn stop_accepting_removes_the_socket_and_waits_for_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc.sock");
    let health = health();
    let ipc = start(IpcSettings::new(&path, 0o600, None), &health);
    wait_listening(&health).await;
    let mut idle = connect(&path).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    ipc.send(StopAccepting { deadline }).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an idle connection held the stop"
    );
    assert!(!path.exists(), "the socket outlived StopAccepting");
    assert!(!health.load().ipc.listening);
    let mut line = String::new();
    assert_eq!(
        idle.read_line(&mut line).await.unwrap(),
        0,
        "idle connections are closed"
    );
    assert!(UnixStream::connect(&path).await.is_err());
}

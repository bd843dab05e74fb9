//! End-to-end tests of loading: a real file (tempfile), an injected
//! environment and machine facts (`Host`), never the process's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::keys;
use super::load::load_with;
use super::paths::Host;
use super::secret::{Secret, MASK};
use super::*;

const MIN: &str = "repl:\n  node_id: a\n  grpc:\n    tls:\n      insecure: true\n";

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(text: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    Fixture { dir, path }
}

/// A made-up machine: user `u` with home `/home/u`, host name `box1`.
fn host(vars: &[(&str, &str)]) -> Host {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("HOME".into(), "/home/u".into());
    for (k, v) in vars {
        env.insert(k.to_string(), v.to_string());
    }
    Host {
        env,
        is_root: false,
        home_fallback: None,
        hostname: Some("box1".into()),
        os_user: Some("u".into()),
        cwd: PathBuf::from("/work/cwd"),
    }
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let f = file(text);
    load_with(&f.path, &host(vars), None)
}

fn ok(text: &str, vars: &[(&str, &str)]) -> Config {
    load(text, vars).unwrap_or_else(|e| panic!("{e}"))
}

/// The error message, with the temp file's path replaced by `/x.yaml`.
fn err(text: &str, vars: &[(&str, &str)]) -> String {
    let f = file(text);
    let e = load_with(&f.path, &host(vars), None).expect_err("should fail");
    e.to_string()
        .replace(&f.path.display().to_string(), "/x.yaml")
}

fn with_repl(body: &str) -> String {
    format!("repl:\n  node_id: a\n  grpc:\n    tls:\n      insecure: true\n{body}")
}

// ---------------------------------------------------------------- defaults

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn a_minimal_file_gets_every_default() {
    let f = file(MIN);
    let c = load_with(&f.path, &host(&[]), None).unwrap();
    assert_eq!(c.source, f.path);
    assert_eq!(c.node_id, "a");
    assert_eq!(c.node_name, "a");
    assert_eq!(c.priority, 50);
    assert_eq!(c.advertise_host, "box1");

    let pg = &c.postgresql;
    assert!(pg.enabled);
    assert_eq!(pg.host, "localhost");
    assert_eq!(pg.port, 5432);
    assert_eq!(pg.database, "postgres");
    assert_eq!(pg.user, "u");
    assert_eq!(pg.password, None);
    assert_eq!(pg.password_command, None);
    assert_eq!(pg.sslmode, SslMode::Prefer);
    assert_eq!(pg.pool_size, 10);
    assert_eq!(pg.connect_timeout, Duration::from_secs(5));

    let g = &c.grpc;
    assert!(g.enabled);
    assert_eq!(g.bind.to_string(), "0.0.0.0");
    assert_eq!(g.port, 5433);
    assert!(g.peers.is_empty());
    assert_eq!(
        g.tls,
        TlsConfig {
            cert_file: None,
            key_file: None,
            ca_file: None,
            insecure: true,
            expiry_warning: Duration::from_secs(30 * 86_400),
        }
    );
    assert_eq!(g.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(g.degraded_rtt, Duration::from_millis(500));
    assert_eq!(g.unreachable_after, Duration::from_secs(3));
    assert_eq!(g.request_timeout, Duration::from_secs(10));
    assert_eq!(g.max_concurrent_requests, 256);
    assert_eq!(g.peer_rate_limit, 200);

    assert_eq!(
        c.raft,
        RaftConfig {
            dir: PathBuf::from("/home/u/.local/state/steep-repl/raft-a"),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_secs(1),
            election_timeout_max: Duration::from_secs(2),
            snapshot_every: 10_000,
        }
    );
    assert_eq!(
        c.raft.dir.parent(),
        c.audit.spool_path.parent(),
        "the Raft log lives beside the audit spool"
    );
    assert_eq!(
        c.coordinator,
        CoordinatorConfig {
            lease: Duration::from_secs(2),
            clock_error: 0.01,
            failback_after: Duration::from_secs(30),
        }
    );

    assert!(c.http.enabled);
    assert_eq!(c.http.bind.to_string(), "0.0.0.0");
    assert_eq!(c.http.port, 8080);

    assert!(c.ipc.enabled);
    assert_eq!(
        c.ipc.path,
        PathBuf::from("/home/u/.local/state/steep-repl/steep-repl.sock")
    );
    assert_eq!(c.ipc.mode, 0o660);
    assert_eq!(c.ipc.group, None);

    assert_eq!(c.audit.retention, Duration::from_secs(2 * 31_557_600));
    assert_eq!(c.audit.prune_interval, Duration::from_secs(3600));
    assert_eq!(
        c.audit.spool_path,
        PathBuf::from("/home/u/.local/state/steep-repl/audit-a.spool")
    );
    assert_eq!(c.audit.spool_max_events, 1_000_000);

    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.target, LogTarget::Auto);

    assert_eq!(
        c.lock_path(),
        PathBuf::from("/home/u/.local/state/steep-repl/steep-repl.sock.lock")
    );
    assert_eq!(*c.origins.get("node_id"), ValueOrigin::File);
    assert_eq!(*c.origins.get("grpc.port"), ValueOrigin::Default);
}

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn tls_paths_relative_to_the_file_are_made_absolute() {
    let c = ok(
        "repl:\n  node_id: a\n  grpc:\n    tls:\n      cert_file: certs/a.crt\n      key_file: ./certs/a.key\n      ca_file: /etc/steep/ca.crt\n",
        &[],
    );
    let t = &c.grpc.tls;
    let dir = c.source.parent().unwrap();
    assert_eq!(
        t.cert_file.as_deref(),
        Some(dir.join("certs/a.crt").as_path())
    );
    assert_eq!(
        t.key_file.as_deref(),
        Some(dir.join("certs/a.key").as_path())
    );
    assert_eq!(t.ca_file.as_deref(), Some(Path::new("/etc/steep/ca.crt")));
    assert!(!t.insecure);
}

#[test]
fn a_relative_config_path_is_taken_from_the_working_directory() {
    let f = file(MIN);
    let mut h = host(&[]);
    h.cwd = f.dir.path().to_path_buf();
    let c = load_with(Path::new("./config.yaml"), &h, None).unwrap();
    assert_eq!(c.source, f.path);
}

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn root_gets_its_spool_in_var_lib() {
    let f = file(MIN);
    let mut h = host(&[]);
    h.is_root = true;
    let c = load_with(&f.path, &h, None).unwrap();
    assert_eq!(
        c.audit.spool_path,
        PathBuf::from("/var/lib/steep-repl/audit-a.spool")
    );
    assert_eq!(c.raft.dir, PathBuf::from("/var/lib/steep-repl/raft-a"));
}

#[test]
fn other_top_level_sections_are_ignored() {
    let c = ok(
        "steep:\n  theme: dark\n  anything: [1, {x: y}]\ndefaults: &d\n  port: 1\nrepl:\n  node_id: a\n  grpc:\n    tls: {insecure: true}\nlater: *d\n",
        &[],
    );
    assert_eq!(c.node_id, "a");
}

#[test]
fn an_empty_repl_section_is_filled_from_the_environment() {
    let c = ok(
        "repl:\n",
        &[
            ("STEEP_REPL_NODE_ID", "env-node"),
            ("STEEP_REPL_GRPC__TLS__INSECURE", "yes"),
        ],
    );
    assert_eq!(c.node_id, "env-node");
    assert!(c.grpc.tls.insecure);
}

// -------------------------------------------------------------- precedence

const FULL: &str = "\
repl:
  node_id: n1
  node_name: Node One
  priority: 80
  advertise_host: db1.example.com
  postgresql:
    enabled: true
    host: pg.file
    port: 6000
    database: filedb
    user: fileuser
    password: filepw
    sslmode: require
    pool_size: 20
    connect_timeout: 2s
  grpc:
    bind: 10.0.0.1
    port: 7000
    peers: [db2.example.com:7000, '[fd00::3]:7000']
    tls:
      cert_file: /c/n1.crt
      key_file: /c/n1.key
      ca_file: /c/ca.crt
    heartbeat_interval: 2s
    degraded_rtt: 1s
    unreachable_after: 10s
  raft:
    dir: state/raft
    heartbeat_interval: 100ms
    election_timeout_min: 400ms
    election_timeout_max: 800ms
    snapshot_every: 5_000
  coordinator:
    lease: 900ms
    clock_error: 0.5%
    failback_after: 1m
  http:
    enabled: false
    bind: 127.0.0.1
    port: 9000
  ipc:
    enabled: false
    path: /run/steep/s.sock
    mode: '0600'
    group: steep
  audit:
    retention: 90d
    prune_interval: 30m
    spool_path: spool/audit.spool
    spool_max_events: 5_000
  log:
    level: debug
    target: terminal
";

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn the_file_overrides_every_default() {
    let c = ok(FULL, &[]);
    assert_eq!(c.node_name, "Node One");
    assert_eq!(c.priority, 80);
    assert_eq!(c.advertise_host, "db1.example.com");
    assert_eq!(c.postgresql.host, "pg.file");
    assert_eq!(c.postgresql.port, 6000);
    assert_eq!(c.postgresql.database, "filedb");
    assert_eq!(c.postgresql.user, "fileuser");
    assert_eq!(c.postgresql.password.as_ref().unwrap().expose(), "filepw");
    assert_eq!(c.postgresql.sslmode, SslMode::Require);
    assert_eq!(c.postgresql.pool_size, 20);
    assert_eq!(c.postgresql.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.grpc.bind.to_string(), "10.0.0.1");
    assert_eq!(c.grpc.port, 7000);
    let peers: Vec<String> = c.grpc.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["db2.example.com:7000", "[fd00::3]:7000"]);
    assert_eq!(c.grpc.peers[1].host, "fd00::3");
    assert_eq!(c.grpc.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(c.grpc.degraded_rtt, Duration::from_secs(1));
    assert_eq!(c.grpc.unreachable_after, Duration::from_secs(10));
    assert!(c.postgresql.enabled);
    assert_eq!(c.raft.dir, c.source.parent().unwrap().join("state/raft"));
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.raft.election_timeout_min, Duration::from_millis(400));
    assert_eq!(c.raft.election_timeout_max, Duration::from_millis(800));
    assert_eq!(c.raft.snapshot_every, 5000);
    assert_eq!(c.coordinator.lease, Duration::from_millis(900));
    assert_eq!(c.coordinator.clock_error, 0.005);
    assert_eq!(c.coordinator.failback_after, Duration::from_secs(60));
    assert!(!c.http.enabled);
    assert_eq!(c.http.port, 9000);
    assert!(!c.ipc.enabled);
    assert_eq!(c.ipc.path, PathBuf::from("/run/steep/s.sock"));
    assert_eq!(c.ipc.mode, 0o600);
    assert_eq!(c.ipc.group.as_deref(), Some("steep"));
    assert_eq!(c.lock_path(), PathBuf::from("/run/steep/s.sock.lock"));
    assert_eq!(c.audit.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(c.audit.prune_interval, Duration::from_secs(1800));
    assert_eq!(
        c.audit.spool_path,
        c.source.parent().unwrap().join("spool/audit.spool")
    );
    assert_eq!(c.audit.spool_max_events, 5000);
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(c.log.target, LogTarget::Terminal);
}

#[test]
fn libpq_variables_override_the_file() {
    let c = ok(
        FULL,
        &[
            ("PGHOST", "/var/run/postgresql"),
            ("PGPORT", "6432"),
            ("PGDATABASE", "envdb"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "verify-full"),
        ],
    );
    let pg = &c.postgresql;
    assert_eq!(pg.host, "/var/run/postgresql");
    assert_eq!(pg.port, 6432);
    assert_eq!(pg.database, "envdb");
    assert_eq!(pg.user, "envuser");
    assert_eq!(pg.password.as_ref().unwrap().expose(), "envpw");
    assert_eq!(pg.sslmode, SslMode::VerifyFull);
    assert_eq!(
        *c.origins.get("postgresql.port"),
        ValueOrigin::Env("PGPORT".into())
    );
}

#[test]
fn steep_variables_override_libpq_variables_and_the_file() {
    let c = ok(
        FULL,
        &[
            ("PGHOST", "pq.host"),
            ("PGPORT", "6432"),
            ("STEEP_REPL_POSTGRESQL__HOST", "steep.host"),
            ("STEEP_REPL_NODE_ID", "n9"),
            ("STEEP_REPL_GRPC__TLS__CERT_FILE", "/env/n9.crt"),
            ("STEEP_REPL_GRPC__PEERS", "a:5433, b:5433"),
        ],
    );
    assert_eq!(c.postgresql.host, "steep.host");
    assert_eq!(c.postgresql.port, 6432, "PGPORT still beats the file");
    assert_eq!(c.node_id, "n9");
    assert_eq!(c.node_name, "Node One");
    assert_eq!(
        c.grpc.tls.cert_file.as_deref(),
        Some(Path::new("/env/n9.crt"))
    );
    let peers: Vec<String> = c.grpc.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["a:5433", "b:5433"]);
}

#[test]
fn empty_libpq_variables_count_as_unset() {
    let c = ok(FULL, &[("PGHOST", ""), ("PGPASSWORD", "")]);
    assert_eq!(c.postgresql.host, "pg.file");
    assert_eq!(c.postgresql.password.as_ref().unwrap().expose(), "filepw");
}

#[test]
fn empty_steep_variables_clear_optional_keys() {
    let c = ok(
        FULL,
        &[
            ("STEEP_REPL_GRPC__PEERS", ""),
            ("STEEP_REPL_IPC__GROUP", ""),
            ("STEEP_REPL_GRPC__TLS__INSECURE", "true"),
            ("STEEP_REPL_GRPC__TLS__CA_FILE", ""),
        ],
    );
    assert!(c.grpc.peers.is_empty());
    assert_eq!(c.ipc.group, None);
    assert_eq!(c.grpc.tls.ca_file, None);
}

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn relative_paths_from_the_environment_use_the_working_directory() {
    let c = ok(MIN, &[("STEEP_REPL_AUDIT__SPOOL_PATH", "data/a.spool")]);
    assert_eq!(c.audit.spool_path, PathBuf::from("/work/cwd/data/a.spool"));
}

#[test]
fn booleans_from_the_environment_take_yes_no_one_zero() {
    for (text, want) in [
        ("true", true),
        ("yes", true),
        ("1", true),
        ("false", false),
        ("NO", false),
        ("0", false),
    ] {
        let c = ok(MIN, &[("STEEP_REPL_HTTP__ENABLED", text)]);
        assert_eq!(c.http.enabled, want, "{text}");
    }
}

#[test]
fn a_peer_list_may_also_be_one_comma_separated_string_in_the_file() {
    let c = ok(
        "repl:\n  node_id: a\n  grpc:\n    peers: 'a:1, [::1]:2'\n    tls: {insecure: true}\n",
        &[],
    );
    let peers: Vec<String> = c.grpc.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, ["a:1", "[::1]:2"]);
}

// Unix paths and Linux defaults (XDG, /var/lib, journald/syslog).
#[cfg(target_os = "linux")]
#[test]
fn every_key_can_be_set_from_its_environment_variable() {
    let values: &[(&str, &str)] = &[
        ("node_id", "envnode"),
        ("node_name", "Env Node"),
        ("priority", "99"),
        ("advertise_host", "10.1.2.3"),
        ("postgresql.enabled", "no"),
        ("postgresql.host", "pghost"),
        ("postgresql.port", "5555"),
        ("postgresql.database", "db"),
        ("postgresql.user", "usr"),
        ("postgresql.password", "pw"),
        ("postgresql.password_command", ""),
        ("postgresql.sslmode", "disable"),
        ("postgresql.pool_size", "3"),
        ("postgresql.connect_timeout", "750ms"),
        ("grpc.enabled", "no"),
        ("grpc.bind", "::"),
        ("grpc.port", "6001"),
        ("grpc.peers", "x:1,[::1]:2"),
        ("grpc.tls.cert_file", "/t/c"),
        ("grpc.tls.key_file", "/t/k"),
        ("grpc.tls.ca_file", "/t/ca"),
        ("grpc.tls.insecure", "0"),
        ("grpc.tls.expiry_warning", "60d"),
        ("grpc.heartbeat_interval", "250ms"),
        ("grpc.degraded_rtt", "100ms"),
        ("grpc.unreachable_after", "2s"),
        ("grpc.request_timeout", "3s"),
        ("grpc.max_concurrent_requests", "9"),
        ("grpc.peer_rate_limit", "40/s"),
        ("raft.dir", "/r/raft"),
        ("raft.heartbeat_interval", "100ms"),
        ("raft.election_timeout_min", "300ms"),
        ("raft.election_timeout_max", "900ms"),
        ("raft.snapshot_every", "7"),
        ("coordinator.lease", "1s"),
        ("coordinator.clock_error", "0.02"),
        ("coordinator.failback_after", "1s"),
        ("http.enabled", "1"),
        ("http.bind", "127.0.0.1"),
        ("http.port", "6002"),
        ("http.details", "true"),
        ("ipc.enabled", "false"),
        ("ipc.path", "/run/x.sock"),
        ("ipc.mode", "0640"),
        ("ipc.group", "wheel"),
        ("audit.retention", "30d"),
        ("audit.prune_interval", "10m"),
        ("audit.spool_path", "/s/a.spool"),
        ("audit.spool_max_events", "42"),
        ("log.level", "trace"),
        ("log.target", "syslog"),
    ];
    let covered: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        covered,
        keys::keys().collect::<Vec<_>>(),
        "keep this table in step with the schema"
    );

    let vars: Vec<(String, String)> = values
        .iter()
        .map(|(k, v)| (keys::env_var_for(k), v.to_string()))
        .collect();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let c = ok("repl: {}\n", &vars);

    assert_eq!(c.node_id, "envnode");
    assert_eq!(c.node_name, "Env Node");
    assert_eq!(c.priority, 99);
    assert_eq!(c.advertise_host, "10.1.2.3");
    assert!(!c.postgresql.enabled);
    assert_eq!(c.postgresql.host, "pghost");
    assert_eq!(c.postgresql.port, 5555);
    assert_eq!(c.postgresql.database, "db");
    assert_eq!(c.postgresql.user, "usr");
    assert_eq!(c.postgresql.password.as_ref().unwrap().expose(), "pw");
    assert_eq!(c.postgresql.password_command, None);
    assert_eq!(c.postgresql.sslmode, SslMode::Disable);
    assert_eq!(c.postgresql.pool_size, 3);
    assert_eq!(c.postgresql.connect_timeout, Duration::from_millis(750));
    assert!(!c.grpc.enabled);
    assert_eq!(c.grpc.bind.to_string(), "::");
    assert_eq!(c.grpc.port, 6001);
    assert_eq!(c.grpc.peers.len(), 2);
    assert_eq!(c.grpc.tls.cert_file.as_deref(), Some(Path::new("/t/c")));
    assert_eq!(c.grpc.tls.key_file.as_deref(), Some(Path::new("/t/k")));
    assert_eq!(c.grpc.tls.ca_file.as_deref(), Some(Path::new("/t/ca")));
    assert!(!c.grpc.tls.insecure);
    assert_eq!(c.grpc.tls.expiry_warning, Duration::from_secs(60 * 86_400));
    assert_eq!(c.grpc.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(c.grpc.degraded_rtt, Duration::from_millis(100));
    assert_eq!(c.grpc.unreachable_after, Duration::from_secs(2));
    assert_eq!(c.grpc.request_timeout, Duration::from_secs(3));
    assert_eq!(c.grpc.max_concurrent_requests, 9);
    assert_eq!(c.grpc.peer_rate_limit, 40);
    assert_eq!(c.raft.dir, PathBuf::from("/r/raft"));
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.raft.election_timeout_min, Duration::from_millis(300));
    assert_eq!(c.raft.election_timeout_max, Duration::from_millis(900));
    assert_eq!(c.raft.snapshot_every, 7);
    assert_eq!(c.coordinator.lease, Duration::from_secs(1));
    assert_eq!(c.coordinator.clock_error, 0.02);
    assert_eq!(c.coordinator.failback_after, Duration::from_secs(1));
    assert!(c.http.enabled);
    assert_eq!(c.http.bind.to_string(), "127.0.0.1");
    assert_eq!(c.http.port, 6002);
    assert!(c.http.details);
    assert!(!c.ipc.enabled);
    assert_eq!(c.ipc.path, PathBuf::from("/run/x.sock"));
    assert_eq!(c.ipc.mode, 0o640);
    assert_eq!(c.ipc.group.as_deref(), Some("wheel"));
    assert_eq!(c.audit.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.audit.prune_interval, Duration::from_secs(600));
    assert_eq!(c.audit.spool_path, PathBuf::from("/s/a.spool"));
    assert_eq!(c.audit.spool_max_events, 42);
    assert_eq!(c.log.level, LogLevel::Trace);
    assert_eq!(c.log.target, LogTarget::Syslog);

    for key in keys::keys() {
        assert_eq!(
            *c.origins.get(key),
            ValueOrigin::Env(keys::env_var_for(key)),
            "{key}"
        );
    }
}

// ---------------------------------------------------------- password pair

#[test]
fn password_and_password_command_together_are_refused() {
    assert_eq!(
        err(
            &with_repl("  postgresql:\n    password: x\n    password_command: echo y\n"),
            &[]
        ),
        "/x.yaml: repl.postgresql.password and repl.postgresql.password_command: both are set; keep one of them"
    );
    assert_eq!(
        err(
            MIN,
            &[
                ("STEEP_REPL_POSTGRESQL__PASSWORD", "x"),
                ("STEEP_REPL_POSTGRESQL__PASSWORD_COMMAND", "echo y"),
            ]
        ),
        "STEEP_REPL_POSTGRESQL__PASSWORD and STEEP_REPL_POSTGRESQL__PASSWORD_COMMAND: both are set; keep one of them"
    );
}

#[test]
fn a_higher_layer_password_source_replaces_both_lower_ones() {
    let file_cmd = with_repl("  postgresql:\n    password_command: echo from-file\n");
    let c = ok(&file_cmd, &[("PGPASSWORD", "from-env")]);
    assert_eq!(c.postgresql.password.as_ref().unwrap().expose(), "from-env");
    assert_eq!(c.postgresql.password_command, None);

    let file_pw = with_repl("  postgresql:\n    password: from-file\n");
    let c = ok(
        &file_pw,
        &[("STEEP_REPL_POSTGRESQL__PASSWORD_COMMAND", "echo from-cmd")],
    );
    assert_eq!(c.postgresql.password, None);
    assert_eq!(
        c.postgresql.password_command.as_deref(),
        Some("echo from-cmd")
    );
}

// ------------------------------------------------------------ file errors

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let e = load_with(&path, &host(&[]), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: config file not found", path.display())
    );
    let e = load_with(&path, &host(&[]), Some(&[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: config file not found (the default path; --config FILE names another)",
            path.display()
        )
    );
    let user = PathBuf::from("/root/.config/steep/config.yaml");
    let e = load_with(&path, &host(&[]), Some(std::slice::from_ref(&user))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: config file not found (nor /root/.config/steep/config.yaml; --config FILE names another)",
            path.display()
        )
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_with(dir.path(), &host(&[]), None).unwrap_err();
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "{}: cannot read the config file: ",
            dir.path().display()
        )),
        "{m}"
    );
}

#[test]
fn malformed_yaml_gives_the_line_and_column() {
    let m = err("repl:\n  node_id: a\n   port: 1\n", &[]);
    assert!(m.starts_with("/x.yaml: line 3 column "), "{m}");
    let m = err("repl:\n  node_id: [a\n", &[]);
    assert!(m.starts_with("/x.yaml: line "), "{m}");
}

#[test]
fn a_file_that_is_not_utf8_says_where() {
    let f = file("");
    std::fs::write(&f.path, b"repl:\n  node_id: \xff\n").unwrap();
    let e = load_with(&f.path, &host(&[]), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: line 2: the config file is not valid UTF-8 text",
            f.path.display()
        )
    );
}

#[test]
fn a_file_without_repl_says_so() {
    let want = "/x.yaml: no `repl:` section; steep-repl reads its settings from a top-level `repl:` key (for example `repl: {node_id: node1}`)";
    assert_eq!(err("steep:\n  theme: dark\n", &[]), want);
    assert_eq!(err("", &[]), want);
    assert_eq!(err("- a\n- b\n", &[]), want);
}

#[test]
fn sections_must_be_mappings() {
    assert_eq!(
        err("repl: 5\n", &[]),
        "/x.yaml: repl: expected a section of keys (node_id, node_name, priority, advertise_host, postgresql, grpc, raft, coordinator, http, ipc, audit, log), got 5"
    );
    assert_eq!(
        err(&with_repl("  http: [a]\n"), &[]),
        "/x.yaml: repl.http: expected a section of keys (enabled, bind, port, details), got a list"
    );
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    assert_eq!(
        err(&with_repl("  http:\n    prot: 1\n"), &[]),
        "/x.yaml: unknown key repl.http.prot (did you mean port?)"
    );
    assert_eq!(
        err("repl:\n  node_id: a\n  grpc:\n    prot: 1\n", &[]),
        "/x.yaml: unknown key repl.grpc.prot (did you mean port?)"
    );
    assert_eq!(
        err(&with_repl("  cert_file: x\n"), &[]),
        "/x.yaml: unknown key repl.cert_file (did you mean repl.grpc.tls.cert_file?)"
    );
    assert_eq!(
        err(&with_repl("  zzzzzz: 1\n"), &[]),
        "/x.yaml: unknown key repl.zzzzzz"
    );
}

#[test]
fn a_key_set_twice_is_refused() {
    assert_eq!(
        err("repl:\n  node_id: a\n  node_id: b\n", &[]),
        "/x.yaml: line 3: repl.node_id is set twice (first on line 2)"
    );
    assert_eq!(
        err("repl:\n  node_id: a\nrepl:\n  node_id: b\n", &[]),
        "/x.yaml: line 3: repl is set twice (first on line 1)"
    );
}

#[test]
fn node_id_is_required() {
    assert_eq!(
        err("repl:\n  grpc:\n    tls:\n      insecure: true\n", &[]),
        "/x.yaml: repl.node_id is required (set it under repl: in the file, or with STEEP_REPL_NODE_ID)"
    );
}

// ----------------------------------------------------------- value errors

#[test]
fn a_bad_port_in_the_file_is_shown_as_written() {
    assert_eq!(
        err(
            "repl:\n  node_id: a\n  grpc:\n    port: 70000\n    tls: {insecure: true}\n",
            &[]
        ),
        "/x.yaml: repl.grpc.port: expected a port number 1-65535, got 70000"
    );
    assert_eq!(
        err(&with_repl("  http:\n    port: abc\n"), &[]),
        "/x.yaml: repl.http.port: expected a port number 1-65535, got \"abc\""
    );
    assert_eq!(
        err(&with_repl("  http:\n    port: 0\n"), &[]),
        "/x.yaml: repl.http.port: expected a port number 1-65535, got 0"
    );
}

#[test]
fn a_bad_value_in_the_environment_names_the_variable() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__PORT", "abc")]),
        "STEEP_REPL_GRPC__PORT: expected a port number 1-65535, got \"abc\""
    );
    assert_eq!(
        err(MIN, &[("PGPORT", "70000")]),
        "PGPORT: expected a port number 1-65535, got \"70000\""
    );
    assert_eq!(
        err(MIN, &[("PGSSLMODE", "verify_full")]),
        "PGSSLMODE: expected one of disable, allow, prefer, require, verify-ca, verify-full, got \"verify_full\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_HTTP__ENABLED", "maybe")]),
        "STEEP_REPL_HTTP__ENABLED: expected true or false (yes/no and 1/0 work too), got \"maybe\""
    );
}

#[test]
fn unknown_environment_variables_are_named_with_a_suggestion() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC_PORT", "1")]),
        "STEEP_REPL_GRPC_PORT: unknown setting (did you mean STEEP_REPL_GRPC__PORT?)"
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__PROT", "1")]),
        "STEEP_REPL_GRPC__PROT: unknown setting (did you mean STEEP_REPL_GRPC__PORT?)"
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_WHATEVER_THIS_IS", "1")]),
        "STEEP_REPL_WHATEVER_THIS_IS: unknown setting"
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__TLS", "1")]),
        "STEEP_REPL_GRPC__TLS: repl.grpc.tls is a section, not a value; set one of its keys, for example STEEP_REPL_GRPC__TLS__CERT_FILE"
    );
    // The CLI's own variable is not a setting.
    ok(MIN, &[("STEEP_REPL_CONFIG", "/elsewhere.yaml")]);
}

#[test]
fn node_ids_are_checked() {
    assert_eq!(
        err("repl:\n  node_id: 'a b'\n", &[]),
        "/x.yaml: repl.node_id: expected a node id of 1-63 characters from A-Z, a-z, 0-9, '.', '_' and '-', got \"a b\""
    );
}

#[test]
fn durations_must_be_positive_and_in_range() {
    assert_eq!(
        err(&with_repl("  audit:\n    prune_interval: 0s\n"), &[]),
        "/x.yaml: repl.audit.prune_interval: expected a duration from 1s to 30d, like 1h or 30m, got \"0s\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__HEARTBEAT_INTERVAL", "-1s")]),
        "STEEP_REPL_GRPC__HEARTBEAT_INTERVAL: expected a duration from 10ms to 1h, like 1s or 500ms, got \"-1s\""
    );
    assert_eq!(
        err(&with_repl("  audit:\n    retention: 12h\n"), &[]),
        "/x.yaml: repl.audit.retention: expected a duration from 1d to 100y, like 90d or 2y, got \"12h\""
    );
    let c = ok(
        &with_repl("  audit:\n    retention: 1d\n    prune_interval: 1h 30m\n"),
        &[],
    );
    assert_eq!(c.audit.prune_interval, Duration::from_secs(5400));
}

#[test]
fn ipc_mode_is_an_octal_permission() {
    let c = ok(&with_repl("  ipc:\n    mode: 0600\n"), &[]);
    assert_eq!(c.ipc.mode, 0o600);
    assert_eq!(
        err(&with_repl("  ipc:\n    mode: 1777\n"), &[]),
        "/x.yaml: repl.ipc.mode: expected an octal permission like 0660 (at most 0777), got 1777"
    );
    assert_eq!(
        err(&with_repl("  ipc:\n    mode: 0o1000\n"), &[]),
        "/x.yaml: repl.ipc.mode: expected an octal permission like 0660 (at most 0777), got \"0o1000\""
    );
}

#[test]
fn a_bad_peer_names_the_item() {
    assert_eq!(
        err(
            "repl:\n  node_id: a\n  grpc:\n    peers: [a:1, 'fd00::1:5433']\n    tls: {insecure: true}\n",
            &[]
        ),
        "/x.yaml: repl.grpc.peers (item 2): expected HOST:PORT, like node2.example.com:5433 or [fd00::2]:5433, got \"fd00::1:5433\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__PEERS", "a:1,b")]),
        "STEEP_REPL_GRPC__PEERS (item 2): expected HOST:PORT, like node2.example.com:5433 or [fd00::2]:5433, got \"b\""
    );
    assert_eq!(
        err(
            "repl:\n  node_id: a\n  grpc:\n    peers: {a: 1}\n    tls: {insecure: true}\n",
            &[]
        ),
        "/x.yaml: repl.grpc.peers: expected a list of HOST:PORT addresses, got a mapping"
    );
}

#[test]
fn a_list_where_one_value_belongs_is_refused() {
    assert_eq!(
        err(&with_repl("  priority: [1, 2]\n"), &[]),
        "/x.yaml: repl.priority: expected a priority 1-100, got a list"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn log_targets_of_other_platforms_are_refused() {
    assert_eq!(
        err(&with_repl("  log:\n    target: eventlog\n"), &[]),
        "/x.yaml: repl.log.target: expected one of auto, terminal, journald, syslog, got \"eventlog\""
    );
}

// ------------------------------------------------------ cross-field rules

#[test]
fn unreachable_after_must_exceed_the_heartbeat_interval() {
    assert_eq!(
        err(
            "repl:\n  node_id: a\n  grpc:\n    heartbeat_interval: 5s\n    tls: {insecure: true}\n",
            &[]
        ),
        "/x.yaml: repl.grpc.unreachable_after (3s, the default) must be longer than repl.grpc.heartbeat_interval (5s), or a healthy peer would look unreachable between two heartbeats"
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__UNREACHABLE_AFTER", "1s")]),
        "/x.yaml: repl.grpc.unreachable_after (1s, from STEEP_REPL_GRPC__UNREACHABLE_AFTER) must be longer than repl.grpc.heartbeat_interval (1s, the default), or a healthy peer would look unreachable between two heartbeats"
    );
}

#[test]
fn degraded_rtt_must_be_below_unreachable_after() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__DEGRADED_RTT", "3s")]),
        "/x.yaml: repl.grpc.degraded_rtt (3s, from STEEP_REPL_GRPC__DEGRADED_RTT) must be shorter than repl.grpc.unreachable_after (3s, the default)"
    );
}

#[test]
fn grpc_limits_are_read_and_bounded() {
    let c = ok(
        "repl:\n  node_id: a\n  grpc:\n    request_timeout: 2s\n    max_concurrent_requests: 8\n    peer_rate_limit: 50/s\n    tls: {insecure: true}\n",
        &[],
    );
    assert_eq!(c.grpc.request_timeout, Duration::from_secs(2));
    assert_eq!(c.grpc.max_concurrent_requests, 8);
    assert_eq!(c.grpc.peer_rate_limit, 50);
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__REQUEST_TIMEOUT", "0s")]),
        "STEEP_REPL_GRPC__REQUEST_TIMEOUT: expected a duration from 10ms to 1h, like 10s or 30s, got \"0s\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__MAX_CONCURRENT_REQUESTS", "0")]),
        "STEEP_REPL_GRPC__MAX_CONCURRENT_REQUESTS: expected a number of requests from 1 to 100000, got \"0\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_GRPC__PEER_RATE_LIMIT", "lots")]),
        "STEEP_REPL_GRPC__PEER_RATE_LIMIT: expected a number of requests a second from 1 to 1000000, like 200 or 200/s, got \"lots\""
    );
}

#[test]
fn the_peer_rate_limit_must_leave_room_for_heartbeats() {
    assert_eq!(
        err(
            MIN,
            &[
                ("STEEP_REPL_GRPC__PEER_RATE_LIMIT", "10"),
                ("STEEP_REPL_GRPC__HEARTBEAT_INTERVAL", "100ms")
            ]
        ),
        "/x.yaml: repl.grpc.peer_rate_limit (10/s, from STEEP_REPL_GRPC__PEER_RATE_LIMIT) must allow at least 20 requests a second: a peer sends a heartbeat every repl.grpc.heartbeat_interval (100ms, from STEEP_REPL_GRPC__HEARTBEAT_INTERVAL) and more requests now and then, and would be refused"
    );
    // Twice the heartbeat rate is enough.
    let c = ok(
        MIN,
        &[
            ("STEEP_REPL_GRPC__PEER_RATE_LIMIT", "20"),
            ("STEEP_REPL_GRPC__HEARTBEAT_INTERVAL", "100ms"),
        ],
    );
    assert_eq!(c.grpc.peer_rate_limit, 20);
}

#[test]
fn mutual_tls_needs_all_three_files() {
    assert_eq!(
        err("repl:\n  node_id: n1\n", &[]),
        "/x.yaml: gRPC uses mutual TLS, but repl.grpc.tls.cert_file, repl.grpc.tls.key_file and repl.grpc.tls.ca_file are not set; create the files with `steep-repl tls init` (the cluster CA) and `steep-repl tls issue n1` (this node's certificate and key), or set repl.grpc.tls.insecure: true for plaintext gRPC"
    );
    let m = err(
        "repl:\n  node_id: n1\n  grpc:\n    tls:\n      cert_file: a\n      key_file: b\n",
        &[],
    );
    assert!(
        m.starts_with("/x.yaml: gRPC uses mutual TLS, but repl.grpc.tls.ca_file is not set; "),
        "{m}"
    );
    // Not needed when gRPC is off.
    ok("repl:\n  node_id: n1\n  grpc:\n    enabled: false\n", &[]);
}

#[test]
fn grpc_and_http_may_not_share_a_port_on_overlapping_binds() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_HTTP__PORT", "5433")]),
        "/x.yaml: repl.grpc.port (5433, the default) and repl.http.port (5433, from STEEP_REPL_HTTP__PORT) would listen on the same port (binds 0.0.0.0 and 0.0.0.0); give them different ports"
    );
    ok(
        MIN,
        &[
            ("STEEP_REPL_HTTP__PORT", "5433"),
            ("STEEP_REPL_HTTP__BIND", "127.0.0.1"),
            ("STEEP_REPL_GRPC__BIND", "10.0.0.1"),
        ],
    );
    ok(
        MIN,
        &[
            ("STEEP_REPL_HTTP__PORT", "5433"),
            ("STEEP_REPL_HTTP__ENABLED", "false"),
        ],
    );
}

#[cfg(target_os = "linux")]
#[test]
fn an_ipc_socket_path_must_fit_a_unix_socket_address() {
    let long = format!("/tmp/{}.sock", "s".repeat(110));
    let m = err(MIN, &[("STEEP_REPL_IPC__PATH", &long)]);
    assert_eq!(
        m,
        format!("STEEP_REPL_IPC__PATH: expected a socket path of at most 107 bytes, got {long} (120 bytes)")
    );
    // Only the socket is bound by that limit.
    ok(
        MIN,
        &[
            ("STEEP_REPL_IPC__PATH", &long),
            ("STEEP_REPL_IPC__ENABLED", "no"),
        ],
    );
}

// ------------------------------------------ consensus: raft, coordinator

const CLOCK_EXPECTED: &str = "expected a clock error from 0% to below 10%, like 1% or 0.01 (clocks further apart than that cannot bound a lease)";

#[test]
fn raft_and_coordinator_keys_come_from_the_file_and_from_their_variables() {
    let file = with_repl(
        "  postgresql:\n    enabled: false\n  raft:\n    dir: /f/raft\n    heartbeat_interval: 200ms\n    election_timeout_min: 700ms\n    election_timeout_max: 1500ms\n    snapshot_every: 250\n  coordinator:\n    lease: 3s\n    clock_error: 2%\n    failback_after: 1m\n",
    );
    let c = ok(&file, &[]);
    assert!(!c.postgresql.enabled);
    assert_eq!(c.raft.dir, PathBuf::from("/f/raft"));
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(200));
    assert_eq!(c.raft.election_timeout_min, Duration::from_millis(700));
    assert_eq!(c.raft.election_timeout_max, Duration::from_millis(1500));
    assert_eq!(c.raft.snapshot_every, 250);
    assert_eq!(c.coordinator.lease, Duration::from_secs(3));
    assert_eq!(c.coordinator.clock_error, 0.02);
    assert_eq!(c.coordinator.failback_after, Duration::from_secs(60));
    assert_eq!(*c.origins.get("raft.dir"), ValueOrigin::File);

    let vars = [
        ("STEEP_REPL_POSTGRESQL__ENABLED", "true"),
        ("STEEP_REPL_RAFT__DIR", "/e/raft"),
        ("STEEP_REPL_RAFT__HEARTBEAT_INTERVAL", "50ms"),
        ("STEEP_REPL_RAFT__ELECTION_TIMEOUT_MIN", "150ms"),
        ("STEEP_REPL_RAFT__ELECTION_TIMEOUT_MAX", "300ms"),
        ("STEEP_REPL_RAFT__SNAPSHOT_EVERY", "20_000"),
        ("STEEP_REPL_COORDINATOR__LEASE", "150ms"),
        ("STEEP_REPL_COORDINATOR__CLOCK_ERROR", "0.005"),
        ("STEEP_REPL_COORDINATOR__FAILBACK_AFTER", "150ms"),
    ];
    let c = ok(&file, &vars);
    assert!(c.postgresql.enabled);
    assert_eq!(c.raft.dir, PathBuf::from("/e/raft"));
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(c.raft.election_timeout_min, Duration::from_millis(150));
    assert_eq!(c.raft.election_timeout_max, Duration::from_millis(300));
    assert_eq!(c.raft.snapshot_every, 20_000);
    assert_eq!(c.coordinator.lease, Duration::from_millis(150));
    assert_eq!(c.coordinator.clock_error, 0.005);
    assert_eq!(c.coordinator.failback_after, Duration::from_millis(150));
    for (var, _) in vars {
        let key = keys::dotted_for_env_var(var).unwrap();
        assert_eq!(*c.origins.get(&key), ValueOrigin::Env(var.into()), "{key}");
    }
}

#[test]
fn a_relative_raft_dir_is_taken_from_the_file_or_the_working_directory() {
    let c = ok(&with_repl("  raft:\n    dir: ./data/raft\n"), &[]);
    assert_eq!(c.raft.dir, c.source.parent().unwrap().join("data/raft"));
    let c = ok(MIN, &[("STEEP_REPL_RAFT__DIR", "data/raft")]);
    assert_eq!(c.raft.dir, Path::new("/work/cwd").join("data/raft"));
    assert_eq!(
        err(&with_repl("  raft:\n    dir: [a, b]\n"), &[]),
        "/x.yaml: repl.raft.dir: expected a directory path, got a list"
    );
    // Empty text leaves the default, as for every optional path.
    let c = ok(MIN, &[("STEEP_REPL_RAFT__DIR", "")]);
    assert!(
        c.raft.dir.ends_with("steep-repl/raft-a"),
        "{}",
        c.raft.dir.display()
    );
}

#[test]
fn the_raft_dir_has_no_default_without_a_state_directory() {
    let f = file(MIN);
    let mut h = host(&[]);
    h.env.remove("HOME");
    let e = load_with(&f.path, &h, None).unwrap_err().to_string();
    assert!(
        e.contains("repl.raft.dir has no default on this machine"),
        "{e}"
    );
    assert!(e.contains("STEEP_REPL_RAFT__DIR"), "{e}");
    h.env.insert("STEEP_REPL_RAFT__DIR".into(), "/r".into());
    h.env
        .insert("STEEP_REPL_AUDIT__SPOOL_PATH".into(), "/s".into());
    let e = load_with(&f.path, &h, None).unwrap_err().to_string();
    assert!(
        e.contains("repl.ipc.path has no default on this machine"),
        "{e}"
    );
    h.env
        .insert("STEEP_REPL_IPC__PATH".into(), "/run/x.sock".into());
    let c = load_with(&f.path, &h, None).unwrap();
    assert_eq!(c.raft.dir, PathBuf::from("/r"));
}

#[test]
fn the_clock_error_is_a_percentage_or_a_fraction() {
    let c = ok(&with_repl("  coordinator:\n    clock_error: 1%\n"), &[]);
    assert_eq!(c.coordinator.clock_error, 0.01);
    let c = ok(&with_repl("  coordinator:\n    clock_error: 0.01\n"), &[]);
    assert_eq!(c.coordinator.clock_error, 0.01);
    let c = ok(MIN, &[("STEEP_REPL_COORDINATOR__CLOCK_ERROR", "2.5%")]);
    assert_eq!(c.coordinator.clock_error, 0.025);
    let c = ok(MIN, &[("STEEP_REPL_COORDINATOR__CLOCK_ERROR", "0")]);
    assert_eq!(c.coordinator.clock_error, 0.0);

    assert_eq!(
        err(&with_repl("  coordinator:\n    clock_error: 15%\n"), &[]),
        format!("/x.yaml: repl.coordinator.clock_error: {CLOCK_EXPECTED}, got \"15%\"")
    );
    assert_eq!(
        err(&with_repl("  coordinator:\n    clock_error: 0.15\n"), &[]),
        format!("/x.yaml: repl.coordinator.clock_error: {CLOCK_EXPECTED}, got 0.15")
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_COORDINATOR__CLOCK_ERROR", "10%")]),
        format!("STEEP_REPL_COORDINATOR__CLOCK_ERROR: {CLOCK_EXPECTED}, got \"10%\"")
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_COORDINATOR__CLOCK_ERROR", "-1%")]),
        format!("STEEP_REPL_COORDINATOR__CLOCK_ERROR: {CLOCK_EXPECTED}, got \"-1%\"")
    );
}

#[test]
fn raft_timers_and_the_snapshot_count_have_single_key_bounds() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_RAFT__HEARTBEAT_INTERVAL", "5ms")]),
        "STEEP_REPL_RAFT__HEARTBEAT_INTERVAL: expected a duration from 10ms to 20s, like 250ms or 100ms, got \"5ms\""
    );
    assert_eq!(
        err(&with_repl("  raft:\n    election_timeout_max: 61s\n"), &[]),
        "/x.yaml: repl.raft.election_timeout_max: expected a duration from 30ms to 1m, like 1s or 2s, got \"61s\""
    );
    assert_eq!(
        err(&with_repl("  raft:\n    election_timeout_min: 2m\n"), &[]),
        "/x.yaml: repl.raft.election_timeout_min: expected a duration from 30ms to 1m, like 1s or 2s, got \"2m\""
    );
    assert_eq!(
        err(&with_repl("  raft:\n    snapshot_every: 0\n"), &[]),
        "/x.yaml: repl.raft.snapshot_every: expected a whole number of at least 1, got 0"
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_COORDINATOR__LEASE", "soon")]),
        "STEEP_REPL_COORDINATOR__LEASE: expected a duration from 30ms to 1h, like 2s or 900ms, got \"soon\""
    );
    assert_eq!(
        err(MIN, &[("STEEP_REPL_POSTGRESQL__ENABLED", "witness")]),
        "STEEP_REPL_POSTGRESQL__ENABLED: expected true or false (yes/no and 1/0 work too), got \"witness\""
    );
}

#[test]
fn an_election_timeout_below_three_heartbeats_is_refused() {
    let m = err(MIN, &[("STEEP_REPL_RAFT__HEARTBEAT_INTERVAL", "400ms")]);
    assert_eq!(
        m,
        "/x.yaml: repl.raft.election_timeout_min (1s, the default) is shorter than three of \
         repl.raft.heartbeat_interval (400ms, from STEEP_REPL_RAFT__HEARTBEAT_INTERVAL): a follower \
         must miss a few heartbeats before it campaigns, or a late packet starts an election; make \
         the election timeout at least 1s 200ms or the heartbeat shorter"
    );
    let m = err(
        &with_repl("  raft:\n    heartbeat_interval: 100ms\n    election_timeout_min: 250ms\n"),
        &[],
    );
    assert!(m.contains("repl.raft.election_timeout_min (250ms)"), "{m}");
    assert!(m.contains("repl.raft.heartbeat_interval (100ms)"), "{m}");
    assert!(m.contains("at least 300ms"), "{m}");
    // Exactly three heartbeats is enough.
    ok(
        &with_repl("  raft:\n    heartbeat_interval: 100ms\n    election_timeout_min: 300ms\n"),
        &[],
    );
}

#[test]
fn an_empty_election_range_is_refused() {
    assert_eq!(
        err(&with_repl("  raft:\n    election_timeout_max: 1s\n"), &[]),
        "/x.yaml: repl.raft.election_timeout_max (1s) must be greater than \
         repl.raft.election_timeout_min (1s, the default): each node draws its timeout from that \
         range, and with no range the nodes campaign together and split the vote; for example 2s"
    );
    let m = err(
        MIN,
        &[
            ("STEEP_REPL_RAFT__ELECTION_TIMEOUT_MIN", "3s"),
            ("STEEP_REPL_RAFT__ELECTION_TIMEOUT_MAX", "2s"),
        ],
    );
    assert!(m.contains("must be greater than"), "{m}");
    assert!(
        m.contains(
            "repl.raft.election_timeout_max (2s, from STEEP_REPL_RAFT__ELECTION_TIMEOUT_MAX)"
        ),
        "{m}"
    );
    assert!(m.ends_with("for example 6s"), "{m}");
    let m = err(
        &with_repl("  raft:\n    election_timeout_min: 1m\n    election_timeout_max: 1m\n"),
        &[],
    );
    assert!(
        m.ends_with(
            "lower repl.raft.election_timeout_min to leave room for a range (both are at most 1m)"
        ),
        "{m}"
    );
}

#[test]
fn a_lease_that_cannot_be_renewed_three_times_within_itself_is_refused() {
    assert_eq!(
        err(&with_repl("  coordinator:\n    lease: 500ms\n"), &[]),
        "/x.yaml: repl.coordinator.lease (500ms) cannot be renewed three times within itself at \
         repl.raft.heartbeat_interval (250ms, the default): make the lease at least 750ms or the \
         heartbeat shorter (the holder renews it every third of the lease, and each renewal is a \
         replicated write that needs a heartbeat round)"
    );
    let m = err(
        &with_repl("  raft:\n    heartbeat_interval: 1s\n    election_timeout_min: 3s\n    election_timeout_max: 6s\n"),
        &[],
    );
    assert!(
        m.contains(
            "repl.coordinator.lease (2s, the default) cannot be renewed three times within itself"
        ),
        "{m}"
    );
    assert!(m.contains("at least 3s"), "{m}");
    ok(&with_repl("  coordinator:\n    lease: 750ms\n"), &[]);
}

#[test]
fn a_failback_shorter_than_the_lease_is_refused() {
    assert_eq!(
        err(MIN, &[("STEEP_REPL_COORDINATOR__FAILBACK_AFTER", "1s")]),
        "/x.yaml: repl.coordinator.failback_after (1s, from STEEP_REPL_COORDINATOR__FAILBACK_AFTER) \
         must be at least repl.coordinator.lease (2s, the default): a preferred node must stay \
         healthy for a whole lease before the coordinator role moves back to it, or a flapping \
         node would move it back and forth; make it at least 2s"
    );
    ok(MIN, &[("STEEP_REPL_COORDINATOR__FAILBACK_AFTER", "2s")]);
}

#[test]
fn the_fast_failover_profile_from_the_docs_is_accepted() {
    let c = ok(
        &with_repl("  raft:\n    heartbeat_interval: 100ms\n    election_timeout_min: 400ms\n    election_timeout_max: 800ms\n  coordinator:\n    lease: 900ms\n"),
        &[],
    );
    assert_eq!(c.coordinator.lease, Duration::from_millis(900));
}

#[test]
fn a_witness_needs_no_postgresql_but_its_keys_are_still_checked_for_form() {
    let f = file(&with_repl(
        "  postgresql:\n    enabled: false\n    host: db.example.com\n    password: pw\n",
    ));
    let mut h = host(&[]);
    h.os_user = None;
    let c = load_with(&f.path, &h, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.postgresql.enabled);
    assert_eq!(c.postgresql.host, "db.example.com");
    assert_eq!(c.postgresql.user, "");
    // A node with PostgreSQL still needs a user.
    h.env
        .insert("STEEP_REPL_POSTGRESQL__ENABLED".into(), "true".into());
    let e = load_with(&f.path, &h, None).unwrap_err().to_string();
    assert!(e.contains("repl.postgresql.user has no default"), "{e}");
    // A typo is a typo, witness or not.
    assert_eq!(
        err(
            &with_repl("  postgresql:\n    enabled: false\n    port: abc\n"),
            &[]
        ),
        "/x.yaml: repl.postgresql.port: expected a port number 1-65535, got \"abc\""
    );
}

#[cfg(target_os = "linux")]
#[test]
fn config_check_prints_the_raft_and_coordinator_keys() {
    let c = ok(MIN, &[("STEEP_REPL_COORDINATOR__LEASE", "900ms")]);
    let yaml = c.to_masked_yaml();
    assert!(
        yaml.contains("\n  postgresql:\n    enabled: true  # default\n    host: "),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "\n  raft:\n    dir: \"/home/u/.local/state/steep-repl/raft-a\"  # default\n    \
             heartbeat_interval: 250ms  # default\n    election_timeout_min: 1s  # default\n    \
             election_timeout_max: 2s  # default\n    snapshot_every: 10000  # default\n  \
             coordinator:\n    lease: 900ms  # from STEEP_REPL_COORDINATOR__LEASE\n    \
             clock_error: \"1%\"  # default\n    failback_after: 30s  # default\n  http:\n"
        ),
        "{yaml}"
    );
    // A fraction prints as a percentage when that reads back exactly, and
    // whatever it prints as loads back to the same number.
    for (written, printed) in [("0.0123", "1.23%"), ("0.5%", "0.5%"), ("0", "0%")] {
        let c = ok(
            &with_repl(&format!("  coordinator:\n    clock_error: {written}\n")),
            &[],
        );
        let yaml = c.to_masked_yaml();
        assert!(
            yaml.contains(&format!("    clock_error: \"{printed}\"\n")),
            "{yaml}"
        );
        assert_eq!(ok(&yaml, &[]).coordinator, c.coordinator, "{written}");
    }
}

// ------------------------------------------------------------ secrets

#[test]
fn secrets_stay_out_of_debug_yaml_and_errors() {
    let c = ok(
        &with_repl("  postgresql:\n    password: hunter2-file\n"),
        &[],
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{c:#?}").contains("hunter2"));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    let yaml = c.to_masked_yaml();
    assert!(!yaml.contains("hunter2"), "{yaml}");
    assert!(yaml.contains("    password: \"********\"\n"), "{yaml}");

    let c = ok(MIN, &[("PGPASSWORD", "hunter2-env")]);
    let yaml = c.to_masked_yaml();
    assert!(!yaml.contains("hunter2"));
    assert!(
        yaml.contains("    password: \"********\"  # from PGPASSWORD\n"),
        "{yaml}"
    );

    let m = err(
        &with_repl("  postgresql:\n    password: [hunter2-list]\n"),
        &[],
    );
    assert_eq!(
        m,
        "/x.yaml: repl.postgresql.password: expected a password, got a list"
    );
    // A later error in the same file does not echo the password either.
    let m = err(
        &with_repl("  postgresql:\n    password: hunter2-file\n    port: x\n"),
        &[],
    );
    assert!(!m.contains("hunter2"), "{m}");
}

#[test]
fn masked_yaml_lists_every_key_and_marks_where_values_came_from() {
    let c = ok(&with_repl("  priority: 7\n"), &[("PGHOST", "db.local")]);
    let yaml = c.to_masked_yaml();
    for key in keys::keys() {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            yaml.contains(&format!("{leaf}: ")),
            "{key} missing in\n{yaml}"
        );
    }
    assert!(yaml.starts_with("# steep-repl effective configuration, loaded from "));
    assert!(
        yaml.contains("\nrepl:\n  node_id: \"a\"\n  node_name: \"a\"  # default\n  priority: 7\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "\n  postgresql:\n    enabled: true  # default\n    host: \"db.local\"  # from PGHOST\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("\n    tls:\n      cert_file: null  # default\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "\n      insecure: true\n      expiry_warning: 30d  # default\n    heartbeat_interval: 1s  # default\n"
        ),
        "{yaml}"
    );
    assert!(yaml.contains("    mode: \"0660\"  # default\n"), "{yaml}");
    assert!(yaml.contains("    retention: 2y  # default\n"), "{yaml}");
}

#[test]
fn masked_yaml_loads_back_into_the_same_configuration() {
    let original = ok(FULL, &[("STEEP_REPL_HTTP__ENABLED", "true")]);
    let printed = original.to_masked_yaml();
    let f = file(&printed);
    let again = load_with(&f.path, &host(&[]), None).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    let mut expected = original.clone();
    expected.source = again.source.clone();
    expected.origins = again.origins.clone();
    expected.postgresql.password = Some(Secret::new(MASK));
    assert_eq!(again, expected, "{printed}");
}

#[test]
fn masked_yaml_masks_the_password_command_too() {
    let c = ok(
        &with_repl(
            "  postgresql:\n    password_command: vault read -field=pw secret/token-abc123\n",
        ),
        &[],
    );
    let yaml = c.to_masked_yaml();
    assert!(!yaml.contains("token-abc123"), "{yaml}");
    assert!(
        yaml.contains(&format!("    password_command: \"{MASK}\"\n")),
        "{yaml}"
    );
}

// ------------------------------------------------------- resolve_password

#[cfg(unix)]
#[test]
fn the_password_source_runs_the_command_at_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "first\n").unwrap();
    let c = ok(
        &with_repl(&format!(
            "  postgresql:\n    password_command: cat {}\n",
            secret.display()
        )),
        &[],
    );
    let source = c.password_source().expect("a command is a source");
    assert_eq!(source().unwrap(), "first");
    std::fs::write(&secret, "rotated\n").unwrap();
    assert_eq!(source().unwrap(), "rotated");
    std::fs::remove_file(&secret).unwrap();
    let why = source().unwrap_err();
    assert!(why.starts_with("exited with status 1"), "{why}");

    // A fixed password, or none, needs no source.
    assert!(ok(&with_repl("  postgresql:\n    password: direct\n"), &[])
        .password_source()
        .is_none());
    assert!(ok(MIN, &[]).password_source().is_none());
}

#[cfg(unix)]
#[test]
fn resolve_password_uses_the_password_or_runs_the_command() {
    let c = ok(&with_repl("  postgresql:\n    password: direct\n"), &[]);
    assert_eq!(c.resolve_password().unwrap().unwrap().expose(), "direct");

    let c = ok(
        &with_repl("  postgresql:\n    password_command: sh -c 'echo \"p w\"'\n"),
        &[],
    );
    assert_eq!(c.resolve_password().unwrap().unwrap().expose(), "p w");

    let c = ok(MIN, &[]);
    assert_eq!(c.resolve_password().unwrap(), None);

    let c = ok(
        MIN,
        &[("STEEP_REPL_POSTGRESQL__PASSWORD_COMMAND", "sh -c 'exit 3'")],
    );
    assert_eq!(
        c.resolve_password().unwrap_err().to_string(),
        "STEEP_REPL_POSTGRESQL__PASSWORD_COMMAND: password command `sh -c 'exit 3'` exited with status 3 and printed nothing on stderr"
    );
}

#[test]
fn an_unsplittable_password_command_is_refused_at_load() {
    assert_eq!(
        err(&with_repl("  postgresql:\n    password_command: \"pass show 'db\"\n"), &[]),
        "/x.yaml: repl.postgresql.password_command: expected a command line with balanced quotes, like `pass show postgres/steep`, got \"pass show 'db\""
    );
}

// ------------------------------------------------------------- warnings

#[cfg(unix)]
#[test]
fn warnings_cover_plaintext_grpc_and_a_readable_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let f = file(&with_repl("  postgresql:\n    password: pw\n"));
    std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = load_with(&f.path, &host(&[]), None).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("repl.grpc.tls.insecure is true"));
    assert!(w[1].contains("(mode 0644)"), "{w:?}");
    std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(c.warnings().len(), 1);
}

#[test]
fn timings_that_work_but_cost_something_are_warned_about_and_the_defaults_are_not() {
    let timing_warnings = |c: &Config| -> Vec<String> {
        c.warnings()
            .into_iter()
            .filter(|w| !w.starts_with("repl.grpc.tls.insecure"))
            .collect()
    };
    assert_eq!(
        timing_warnings(&ok(&with_repl(""), &[])),
        Vec::<String>::new()
    );
    let short_lease = ok(
        &with_repl("  raft:\n    heartbeat_interval: 100ms\n    election_timeout_min: 1s\n    election_timeout_max: 3s\n  coordinator:\n    lease: 1s\n"),
        &[],
    );
    let w = timing_warnings(&short_lease);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(
            "repl.coordinator.lease (1s) is shorter than repl.raft.election_timeout_max (3s)"
        ),
        "{w:?}"
    );
    let slow = ok(
        &with_repl("  raft:\n    election_timeout_min: 2s\n    election_timeout_max: 5s\n  coordinator:\n    lease: 6s\n    failback_after: 1m\n"),
        &[],
    );
    let w = timing_warnings(&slow);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("may take up to 6s 310ms to be replaced"),
        "{w:?}"
    );
}

// ------------------------------------------------------------- public API

#[test]
fn load_from_takes_the_environment_as_a_map() {
    let f = file("repl:\n  grpc:\n    tls:\n      insecure: true\n");
    let env: HashMap<String, String> = [("STEEP_REPL_NODE_ID".to_string(), "m1".to_string())]
        .into_iter()
        .collect();
    let c = Config::load_from(&f.path, &env).unwrap();
    assert_eq!(c.node_id, "m1");
    assert!(!c.advertise_host.is_empty());
    assert!(!c.postgresql.user.is_empty());
}

// ------------------------------------------------------------ random input

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any value of any key, from the environment: a configuration, or
        /// an error that names the variable it came from.
        #[test]
        fn any_value_of_any_key_loads_or_names_the_key(
            key in prop::sample::select(keys::keys().collect::<Vec<_>>()),
            value in prop_oneof![".{0,40}", "[0-9a-z%.:/ -]{0,12}", Just(String::new())],
        ) {
            let var = keys::env_var_for(key);
            if let Err(e) = load(MIN, &[(var.as_str(), value.as_str())]) {
                let message = e.to_string();
                prop_assert!(message.contains(&var), "{key}={value:?}: {message}");
            }
        }

        /// Any text as the file: a configuration, or an error that names
        /// the file.
        #[test]
        fn any_file_loads_or_names_the_file(text in prop_oneof![
            ".{0,200}",
            prop::collection::vec(
                ("[a-z_]{1,10}", "[ ]{0,6}", ".{0,20}")
                    .prop_map(|(k, indent, v)| format!("{indent}{k}: {v}")),
                0..8,
            )
            .prop_map(|lines| format!("repl:\n{}\n", lines.join("\n"))),
        ]) {
            let f = file(&text);
            if let Err(e) = load_with(&f.path, &host(&[]), None) {
                let message = e.to_string();
                prop_assert!(
                    message.contains(&f.path.display().to_string()),
                    "{text:?}: {message}"
                );
            }
        }
    }
}

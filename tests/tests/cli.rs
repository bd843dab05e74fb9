//! The read-only commands (`status`, `health`, `nodes`, `audit`) run as
//! an operator runs them, against real daemons and against none.

use serde_json::Value;
use sqlx::Executor;
use std::process::{Command, Stdio};
use std::time::Duration;
use steep_repl_tests::daemon::{
    run_cli, run_cli_env, steep_repl_bin, Daemon, DaemonHome, DaemonOptions,
};
use steep_repl_tests::ext::server_with_extension;

const WAIT: Duration = Duration::from_secs(20);

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{stdout}"))
}

#[tokio::test]
async fn json_output_parses_and_carries_the_documented_fields() {
    let (_pg, _conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &_pg)).unwrap();
    daemon.wait_for_postgresql(WAIT).unwrap();
    let config = daemon.home.config_path();

    let (code, out, err) = run_cli(&["status", "--json"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{err}");
    let status = json(&out);
    for field in [
        "state",
        "pid",
        "uptime_seconds",
        "start_time",
        "version",
        "postgresql",
        "grpc",
        "node",
    ] {
        assert!(!status[field].is_null(), "status lacks {field}: {status}");
    }
    assert_eq!(status["pid"], serde_json::json!(daemon.pid().unwrap()));
    assert_eq!(status["postgresql"]["connected"], true);
    assert_eq!(status["node"]["node_id"], "node-a");

    let (code, out, err) = run_cli(&["health", "--json"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{err}");
    let health = json(&out);
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        health["components"]["postgresql"]["healthy"], true,
        "{health}"
    );
    assert!(
        health["components"]["postgresql"]["version"]
            .as_str()
            .unwrap()
            .starts_with("18."),
        "{health}"
    );

    let (code, out, err) =
        run_cli(&["nodes", "--json", "--status", "healthy"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{err}");
    let nodes = json(&out);
    // The registry is the cluster's membership: a daemon in no cluster
    // lists nobody (tests/tests/peers.rs lists members).
    assert_eq!(nodes["nodes"], serde_json::json!([]), "{nodes}");
    assert_eq!(status["node"]["coordinator_id"], Value::Null);
    assert_eq!(status["node"]["role"], "data");

    let (code, out, err) = run_cli(
        &[
            "audit", "--json", "--action", "daemon.*", "--limit", "5", "--since", "1h",
        ],
        Some(&config),
    )
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let audit = json(&out);
    assert!(
        audit["total"].is_u64() && audit["has_more"].is_boolean(),
        "{audit}"
    );
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("daemon.")));
}

#[tokio::test]
async fn tables_show_the_node_and_its_state() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_postgresql(WAIT).unwrap();
    let config = daemon.home.config_path();

    // In no cluster yet: nobody in the registry.
    let (code, out, err) = run_cli(&["nodes"], Some(&config)).unwrap();
    assert_eq!((code, out.as_str()), (0, "no nodes\n"), "{err}");

    let (code, out, _) = run_cli(&["nodes", "--status", "offline"], Some(&config)).unwrap();
    assert_eq!((code, out.as_str()), (0, "no nodes\n"));

    let (code, out, err) = run_cli(&["status"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("node-a")
            && out.contains("running")
            && out.contains("connected, PostgreSQL 18")
            && out.contains("none known"),
        "{out}"
    );

    let (code, out, _) = run_cli(&["health"], Some(&config)).unwrap();
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("postgresql") && l.contains("yes")),
        "{out}"
    );

    let (code, out, err) =
        run_cli(&["audit", "--action", "daemon.started"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("daemon.started") && out.contains("steep-repl@node-a"),
        "{out}"
    );
}

#[tokio::test]
async fn health_exits_4_when_the_node_is_unhealthy() {
    let (mut pg, _conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_postgresql(WAIT).unwrap();
    pg.stop().unwrap();
    daemon
        .wait_for_log("postgresql.connection_lost", WAIT)
        .unwrap();
    let config = daemon.home.config_path();
    let (code, out, _) = run_cli(&["health"], Some(&config)).unwrap();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("unhealthy"), "{out}");
    let (code, _, err) = run_cli(&["nodes"], Some(&config)).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("PostgreSQL is not available"), "{err}");
}

#[test]
fn status_without_a_daemon_says_so_and_exits_3() {
    let home = DaemonHome::new().unwrap();
    // No server behind port 1: the daemon is simply not running.
    home.write_config(&DaemonOptions::for_port("node-a", 1))
        .unwrap();
    let config = home.config_path();
    let socket = home.socket_path().display().to_string();

    let (code, out, err) = run_cli(&["status"], Some(&config)).unwrap();
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("the daemon is not running") && err.contains(&socket),
        "{err}"
    );
    assert!(err.contains("service manager:"), "{err}");

    let (code, out, _) = run_cli(&["status", "--json"], Some(&config)).unwrap();
    assert_eq!(code, 3);
    assert_eq!(json(&out)["state"], "not_running");

    // A socket file left behind by a crash is not a running daemon either.
    drop(std::os::unix::net::UnixListener::bind(home.socket_path()).unwrap());
    let (code, _, err) = run_cli(&["health"], Some(&config)).unwrap();
    assert_eq!(code, 3);
    assert!(err.contains("nothing answers"), "{err}");

    // A peer's health needs this node's certificates; this config has none.
    let (code, _, err) = run_cli(&["health", "--remote", "db2:5433"], Some(&config)).unwrap();
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("repl.grpc.tls.cert_file"), "{err}");
}

#[test]
fn an_unloadable_configuration_falls_back_to_the_default_socket_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let (code, _, err) = run_cli(&["nodes"], Some(&missing)).unwrap();
    assert!(
        err.contains("cannot load the configuration")
            && err.contains("/run/steep-repl/steep-repl.sock"),
        "{err}"
    );
    // Nothing normally runs on the default socket on a test machine.
    assert!(code == 3 || code == 0, "exit {code}: {err}");
}

/// Each message once, each on its own line: the missing file is named in
/// the note that says which socket is tried instead, and nowhere else.
#[test]
fn status_without_a_config_file_names_it_once_on_its_own_line() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing.yaml");
    let home_text = home.path().display().to_string();
    let env = [
        ("HOME", home_text.as_str()),
        ("XDG_CONFIG_HOME", home_text.as_str()),
    ];
    let runs = [
        run_cli_env(&["status"], Some(&missing), &env).unwrap(),
        run_cli_env(&["status"], None, &env).unwrap(),
    ];
    for (code, out, err) in runs {
        assert!(code == 3 || code == 0, "exit {code}: {out}{err}");
        assert_eq!(
            err.matches("config file not found").count(),
            1,
            "the missing file named more than once: {err:?}"
        );
        assert!(err.ends_with('\n'), "{err:?}");
        for line in err.lines() {
            assert!(
                line.starts_with("steep-repl: ") || line.starts_with("  "),
                "a message run into another: {line:?} in {err:?}"
            );
        }
    }
}

#[test]
fn help_lists_the_exit_codes() {
    let (code, out, _) = run_cli(&["--help"], None).unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("3  the daemon is not running") && out.contains("4  the daemon is unhealthy"),
        "{out}"
    );
    for command in ["status", "health", "nodes", "audit"] {
        assert!(out.contains(command), "--help lacks {command}");
    }
}

#[tokio::test]
async fn watch_redraws_in_place_until_interrupted() {
    let (pg, _conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_ipc(WAIT).unwrap();
    let child = Command::new(steep_repl_bin().unwrap())
        .arg("--config")
        .arg(daemon.home.config_path())
        .args(["status", "--watch", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let frames = out.matches("\x1b[2J\x1b[H").count();
    assert!(frames >= 2, "{frames} frames:\n{out}");
    assert!(out.matches("node-a").count() >= 2, "{out}");
}

/// Names and values come from peers, PostgreSQL and other sessions: a
/// terminal escape sequence among them is shown, never sent to the
/// terminal (it could clear the screen or rewrite earlier lines).
#[tokio::test]
async fn control_characters_from_the_registry_are_shown_escaped_not_sent_to_the_terminal() {
    let (pg, mut conn) = server_with_extension().await.unwrap();
    let daemon = Daemon::start(&DaemonOptions::for_server("node-a", &pg)).unwrap();
    daemon.wait_for_postgresql(WAIT).unwrap();
    let config = daemon.home.config_path();
    conn.execute(
        "SELECT steep_repl.register_node('n1', E'Evil\\x1b[2J\\x1b]0;owned\\x07 \\u202Eedoc', 'db1', 5432, 50)",
    )
    .await
    .unwrap();
    {
        let args = ["nodes"];
        let (code, out, err) = run_cli(&args, Some(&config)).unwrap();
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{202e}'),
            "{args:?} sent a control character to the terminal: {out:?}"
        );
        assert!(
            out.contains("Evil\\u{1b}[2J\\u{1b}]0;owned\\u{7} \\u{202e}edoc"),
            "{args:?} shows the name with its escapes visible: {out}"
        );
    }
    // --json stays JSON: the characters are escaped by JSON itself.
    let (code, out, _) = run_cli(&["nodes", "--json"], Some(&config)).unwrap();
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(json(&out).to_string().contains("Evil\\u001b[2J"), "{out}");
}

/// Someone else bound the socket path in a directory everyone can write
/// to (as anyone can in `/tmp`) and answers like a daemon: the CLI sees
/// from the socket's peer credentials that the answer comes from another
/// user and refuses it instead of printing what it was told.
#[test]
fn an_answer_from_a_socket_another_user_bound_in_a_shared_directory_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to answer as another user");
        return;
    }
    let home = DaemonHome::new().unwrap();
    let mut options = DaemonOptions::for_port("node-a", 5432);
    options.pg_password = "x".into();
    home.write_config(&options).unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = shared.path().join("steep-repl.sock");

    // The impostor: a thread that takes another user's identity for itself
    // alone (a raw setresuid changes the calling thread only; glibc's
    // wrapper would change every thread of the test) before it listens, so
    // the kernel records that user as the socket's peer.
    let listening = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = listening.clone();
    let path = sock.clone();
    let impostor = std::thread::spawn(move || {
        // SAFETY: a raw system call on this thread's own credentials; root
        // stays the saved uid, nothing else is touched.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, 65534i32, -1i32) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        let listener = UnixListener::bind(&path).unwrap();
        ready.wait();
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let mut stream = stream;
        let _ = stream.write_all(
            b"{\"id\":1,\"result\":{\"state\":\"running\",\"node\":{\"node_id\":\"forged\"}}}\n",
        );
    });
    listening.wait();
    let (code, out, err) = steep_repl_tests::daemon::run_cli_env(
        &["status"],
        Some(&home.config_path()),
        &[("STEEP_REPL_IPC__PATH", sock.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("refusing to talk to the process on") && err.contains("uid 65534"),
        "{err}"
    );
    assert!(!out.contains("forged"), "{out}");
    let _ = impostor.join();
}

//! The peer certificates of running daemons: a peer reached at a host its
//! certificate does not carry is reported with both named; a certificate
//! close to its expiry shows in the metric, the log and the audit; a
//! rotated certificate is put in use on SIGHUP without a restart, and a
//! broken one is refused while the old one keeps serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use steep_repl_tests::cluster::{grpc_yaml, issue_certificates, tls_yaml};
use steep_repl_tests::daemon::{run_cli, Daemon, DaemonOptions};
use steep_repl_tests::ext::server_with_extension;
use steep_repl_tests::http::{get, parse_prometheus};
use steep_repl_tests::ports::free_port;

const START: Duration = Duration::from_secs(30);
const DAY: f64 = 86_400.0;

/// A witness (no PostgreSQL) with mTLS from `dir`, dialling `seeds`.
fn witness(dir: &Path, node_id: &str, port: u16, seeds: &[u16]) -> Daemon {
    let mut options = DaemonOptions::for_port(node_id, free_port());
    options.pg_extra = "    enabled: false\n".into();
    options.grpc = grpc_yaml(port, seeds, &tls_yaml(dir, node_id));
    Daemon::start(&options).unwrap()
}

/// `steep-repl tls issue` into `dir`, after moving an older pair aside.
fn reissue(dir: &Path, node_id: &str, hosts: &[&str], days: u32) {
    for ext in ["crt", "key"] {
        let file = dir.join(format!("{node_id}.{ext}"));
        if file.exists() {
            std::fs::rename(&file, dir.join(format!("{node_id}.{ext}.old"))).unwrap();
        }
    }
    let d = dir.display().to_string();
    let days = days.to_string();
    let mut args = vec!["tls", "issue", node_id, "--dir", &d, "--days", &days];
    for host in hosts {
        args.extend(["--host", host]);
    }
    let (code, out, err) = run_cli(&args, None).unwrap();
    assert_eq!(code, 0, "{out}{err}");
}

/// The end-entity certificate a fresh TLS connection to `port` is shown
/// (the client presents `client`'s certificate from `dir`).
async fn presented_certificate(dir: &Path, client: &str, port: u16) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{client}.crt")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{client}.key"))).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn file_certificate(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// `steep_repl_tls_certificate_expiry_seconds{certificate=which}`.
fn expiry_seconds(http: std::net::SocketAddr, which: &str) -> Option<f64> {
    let page = get(http, "/metrics").unwrap().text();
    let families = parse_prometheus(&page).unwrap();
    families
        .get("steep_repl_tls_certificate_expiry_seconds")?
        .samples
        .iter()
        .find(|s| s.labels.get("certificate").map(String::as_str) == Some(which))
        .map(|s| s.value)
}

/// Polls until `check` holds (the daemon acts on a signal asynchronously).
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_peer_whose_certificate_lacks_the_host_dialled_is_named_with_its_names() {
    // node-b's certificate names it localhost only; node-a dials 127.0.0.1.
    let dir = issue_certificates(
        "steep-tls-",
        &[("node-a", &["127.0.0.1"]), ("node-b", &["localhost"])],
    )
    .unwrap();
    let port_b = free_port();
    let node_b = witness(dir.path(), "node-b", port_b, &[]);
    node_b.wait_for_log("grpc.listening", START).unwrap();
    let node_a = witness(dir.path(), "node-a", free_port(), &[port_b]);

    node_a.wait_for_log("peer.tls_failed", START).unwrap();
    let log = node_a.log();
    let line = log.lines().find(|l| l.contains("peer.tls_failed")).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port_b}")), "{line}");
    assert!(
        line.contains("does not carry the host 127.0.0.1 that was dialled"),
        "{line}"
    );
    assert!(line.contains("CN=node-b"), "{line}");
    assert!(line.contains("its names are: node-b, localhost"), "{line}");

    // The same from the command line, with node-a's certificates.
    let remote = format!("127.0.0.1:{port_b}");
    let (code, out, err) = run_cli(
        &["health", "--remote", &remote],
        Some(&node_a.home.config_path()),
    )
    .unwrap();
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("does not carry the host 127.0.0.1 that was dialled")
            && err.contains("its names are: node-b, localhost")
            && err.contains("steep-repl tls issue node-b --host 127.0.0.1"),
        "{err}"
    );
    // node-b was told at its start that peers cannot reach it this way.
    assert!(
        node_b
            .log()
            .contains("tls.advertise_host_not_in_certificate"),
        "{}",
        node_b.log()
    );
}

#[tokio::test]
async fn a_certificate_close_to_expiry_is_measured_warned_about_and_audited() {
    let dir = issue_certificates("steep-tls-", &[]).unwrap();
    reissue(dir.path(), "node-1", &["127.0.0.1"], 5);
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-1", &pg).with_http();
    options.grpc = grpc_yaml(free_port(), &[], &tls_yaml(dir.path(), "node-1"));
    let daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_postgresql(START).unwrap();
    let http = options.http_addr().unwrap();

    let node = expiry_seconds(http, "node").expect("a node sample");
    assert!(node > 4.9 * DAY && node <= 5.0 * DAY, "{node}");
    let ca = expiry_seconds(http, "ca").expect("a ca sample");
    assert!(ca > 3649.0 * DAY, "{ca}");

    daemon
        .wait_for_log("tls.certificate_expiring", START)
        .unwrap();
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("tls.certificate_expiring"))
        .unwrap();
    assert!(line.contains("node-1.crt"), "{line}");
    assert!(line.contains("expires in 4d 23h"), "{line}");
    assert!(
        !log.lines()
            .any(|l| l.contains("tls.certificate_exp") && l.contains("ca.crt")),
        "the CA is far from its expiry: {log}"
    );

    let mut conn = pg.connect().await.unwrap();
    let mut rows: Vec<(serde_json::Value, bool)> = Vec::new();
    for _ in 0..100 {
        rows = sqlx::query_as(
            "SELECT new_value, success FROM steep_repl.audit_log \
             WHERE action = 'tls.certificate_expiring'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (value, success) = &rows[0];
    assert!(*success);
    assert_eq!(value["certificate"], "node", "{value}");
    let left = value["seconds_left"].as_f64().unwrap();
    assert!(left > 4.9 * DAY && left <= 5.0 * DAY, "{value}");
}

#[tokio::test]
async fn a_rotated_certificate_is_used_after_sighup_and_a_broken_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = issue_certificates("steep-tls-", &[("node-2", &["127.0.0.1"])]).unwrap();
    reissue(dir.path(), "node-1", &["127.0.0.1"], 100);
    let (pg, _conn) = server_with_extension().await.unwrap();
    let mut options = DaemonOptions::for_server("node-1", &pg).with_http();
    let port = free_port();
    options.grpc = grpc_yaml(port, &[], &tls_yaml(dir.path(), "node-1"));
    let daemon = Daemon::start(&options).unwrap();
    daemon.wait_for_postgresql(START).unwrap();
    daemon.wait_for_log("grpc.listening", START).unwrap();
    let http = options.http_addr().unwrap();
    let cert_file = dir.path().join("node-1.crt");
    let first = file_certificate(&cert_file);
    assert_eq!(
        presented_certificate(dir.path(), "node-2", port).await,
        first
    );
    let before = expiry_seconds(http, "node").unwrap();
    assert!(before < 100.0 * DAY, "{before}");

    // Rotation: a new pair in place of the old one, then SIGHUP.
    reissue(dir.path(), "node-1", &["127.0.0.1"], 200);
    let second = file_certificate(&cert_file);
    assert_ne!(second, first);
    daemon.signal(libc::SIGHUP).unwrap();
    daemon.wait_for_log("tls.reloaded", START).unwrap();
    let after = expiry_seconds(http, "node").unwrap();
    assert!(after > 199.0 * DAY && after <= 200.0 * DAY, "{after}");
    assert_eq!(
        presented_certificate(dir.path(), "node-2", port).await,
        second,
        "a fresh connection is shown the new certificate"
    );

    // Broken files, one at a time: each is refused with the file named,
    // and the daemon keeps serving the certificate in use.
    let key_file = dir.path().join("node-1.key");
    let good_cert = std::fs::read(&cert_file).unwrap();
    let good_key = std::fs::read(&key_file).unwrap();
    let other_key = std::fs::read(dir.path().join("node-2.key")).unwrap();
    let breakages: [(&str, &dyn Fn(), String); 3] = [
        (
            "unparsable certificate",
            &|| std::fs::write(&cert_file, b"-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap(),
            format!("{}: malformed PEM", cert_file.display()),
        ),
        (
            "key of another certificate",
            &|| std::fs::write(&key_file, &other_key).unwrap(),
            format!(
                "private key {} does not match the certificate {}",
                key_file.display(),
                cert_file.display()
            ),
        ),
        (
            "key readable by others",
            &|| {
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap()
            },
            format!("{}: other users may read it", key_file.display()),
        ),
    ];
    for (n, (what, break_it, expected)) in breakages.iter().enumerate() {
        break_it();
        daemon.signal(libc::SIGHUP).unwrap();
        wait_until(what, START, || {
            daemon.log().matches("tls.reload_failed").count() > n
        });
        let log = daemon.log();
        let line = log
            .lines()
            .filter(|l| l.contains("tls.reload_failed"))
            .nth(n)
            .unwrap();
        assert!(line.contains(expected.as_str()), "{what}: {line}");
        assert_eq!(
            presented_certificate(dir.path(), "node-2", port).await,
            second,
            "{what}: the certificate in use stays"
        );
        let now = expiry_seconds(http, "node").unwrap();
        assert!(now > 199.0 * DAY, "{what}: {now}");
        // Repair before the next breakage.
        std::fs::write(&cert_file, &good_cert).unwrap();
        std::fs::write(&key_file, &good_key).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Both the rotation and the refusals are audited, in the order they
    // happened (batches may land in any order, so not by id).
    let mut conn = pg.connect().await.unwrap();
    let mut rows: Vec<(bool, Option<String>, Option<serde_json::Value>)> = Vec::new();
    for _ in 0..100 {
        rows = sqlx::query_as(
            "SELECT success, error_message, new_value FROM steep_repl.audit_log \
             WHERE action = 'tls.reloaded' ORDER BY occurred_at, id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if rows.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows[0].0, "{rows:?}");
    let new_value = rows[0].2.as_ref().unwrap();
    assert!(
        new_value["cert_file"]
            .as_str()
            .unwrap()
            .ends_with("node-1.crt"),
        "{new_value}"
    );
    for (success, error, _) in &rows[1..] {
        assert!(!success);
        assert!(
            error.as_deref().unwrap_or("").contains("node-1."),
            "{error:?}"
        );
    }
}

//! Refused peers: a certificate from another CA, no certificate at all, and
//! a certificate whose identity is not the node_id it claims are each
//! refused, logged with the peer's address and audited as peer.auth_failed.

use std::sync::Arc;
use std::time::Duration;
use steep_repl_actors::peer_tls::{ConnectOptions, PeerTransport, TlsPaths};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::{HealthCheckRequest, HeartbeatRequest};
use steep_repl_tests::cluster::{Certificates, TestCluster};
use steep_repl_tests::daemon::run_cli;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn paths(dir: &std::path::Path, node: &str) -> TlsPaths {
    TlsPaths {
        cert_file: dir.join(format!("{node}.crt")),
        key_file: dir.join(format!("{node}.key")),
        ca_file: dir.join("ca.crt"),
    }
}

async fn audited_failures(cluster: &TestCluster) -> Vec<(String, Option<String>, bool)> {
    let mut conn = cluster.nodes[0].pg.connect().await.unwrap();
    sqlx::query_as(
        "SELECT error_message, host(client_ip), success FROM steep_repl.audit_log
          WHERE action = 'peer.auth_failed' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

async fn wait_for_failures(cluster: &TestCluster, n: usize) -> Vec<(String, Option<String>, bool)> {
    for _ in 0..100 {
        let rows = audited_failures(cluster).await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    audited_failures(cluster).await
}

/// A TLS 1.3 client that trusts the cluster CA and presents `identity`
/// (certificate and key PEM) or nothing; the server must not serve it.
async fn raw_tls_attempt(cluster: &TestCluster, port: u16, identity: Option<(Vec<u8>, Vec<u8>)>) {
    use rustls_pki_types::pem::PemObject;
    let ca = std::fs::read(cluster.certs.path("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(&cert)
                .map(Result::unwrap)
                .collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    // TLS 1.3: the client may finish its side before the server refuses,
    // so the refusal shows on the first read.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tls.read(&mut buf).await;
        assert!(
            !matches!(read, Ok(n) if n > 0),
            "the server talked to a client it should refuse"
        );
    }
}

#[tokio::test]
async fn wrong_ca_missing_certificate_and_false_identity_are_refused_and_audited() {
    let cluster = TestCluster::start(&[50]).await.unwrap();
    let node = &cluster.nodes[0];
    node.daemon
        .wait_for_log("grpc.listening", Duration::from_secs(20))
        .unwrap();
    let port = node.grpc_port;
    let options = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };

    // 1. A certificate from another cluster's CA (the client trusts ours, so
    //    it is the server that refuses).
    let stranger = Certificates::new(&["node-1"]).unwrap();
    let stranger_identity = (
        std::fs::read(stranger.path("node-1.crt")).unwrap(),
        std::fs::read(stranger.path("node-1.key")).unwrap(),
    );
    raw_tls_attempt(&cluster, port, Some(stranger_identity)).await;
    let rows = wait_for_failures(&cluster, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");

    // 2. No client certificate.
    raw_tls_attempt(&cluster, port, None).await;
    let rows = wait_for_failures(&cluster, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");

    // 3. A certificate of this cluster for node-x, claiming to be node-1.
    let dir = cluster.certs.dir.path().to_str().unwrap().to_string();
    let (code, _, err) = run_cli(
        &[
            "tls",
            "issue",
            "node-x",
            "--host",
            "127.0.0.1",
            "--dir",
            &dir,
        ],
        None,
    )
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let transport =
        PeerTransport::mtls_from_files(&paths(cluster.certs.dir.path(), "node-x")).unwrap();
    let channel = transport
        .connect("127.0.0.1", port, &options)
        .await
        .unwrap();
    let mut client = CoordinatorClient::new(channel);
    // Asking is fine (no claim)...
    client
        .health_check(HealthCheckRequest::default())
        .await
        .unwrap();
    // ...claiming another node's identity is not.
    let status = client
        .heartbeat(HeartbeatRequest {
            node_id: "node-1".into(),
            node_status: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let rows = wait_for_failures(&cluster, 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}");

    let messages: Vec<&str> = rows.iter().map(|(m, _, _)| m.as_str()).collect();
    assert!(messages[0].contains("unknown CA"), "{messages:?}");
    assert!(
        messages[1].contains("no client certificate"),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("claims node_id \"node-1\""),
        "{messages:?}"
    );
    for (_, ip, success) in &rows {
        assert_eq!(ip.as_deref(), Some("127.0.0.1"));
        assert!(!success);
    }
    let log = node.daemon.log();
    assert_eq!(log.matches("peer.auth_failed").count(), 3, "{log}");
}

/// Peers check this node's certificate against its advertise_host: a
/// certificate that does not name it is said at start, with its names.
#[tokio::test]
async fn an_advertise_host_missing_from_the_certificate_is_warned_about_at_start() {
    use steep_repl_tests::cluster::{grpc_yaml, issue_certificates, tls_yaml};
    use steep_repl_tests::daemon::{Daemon, DaemonOptions};
    use steep_repl_tests::ports::free_port;

    let start = |hosts: &'static [&'static str]| {
        let dir = issue_certificates("steep-tls-", &[("node-a", hosts)]).unwrap();
        let mut options = DaemonOptions::for_port("node-a", free_port());
        options.pg_extra = "    enabled: false\n".into();
        options.grpc = grpc_yaml(free_port(), &[], &tls_yaml(dir.path(), "node-a"));
        let daemon = Daemon::start(&options).unwrap();
        (dir, daemon)
    };
    // advertise_host is 127.0.0.1 in every test daemon's configuration.
    let (_dir, daemon) = start(&["db9.example.net", "10.9.9.9"]);
    daemon
        .wait_for_log(
            "tls.advertise_host_not_in_certificate",
            Duration::from_secs(20),
        )
        .unwrap();
    let log = daemon.log();
    assert!(
        log.contains("advertise_host 127.0.0.1 is not among the names of")
            && log.contains("db9.example.net, 10.9.9.9")
            && log.contains("steep-repl tls issue node-a --host 127.0.0.1"),
        "{log}"
    );

    let (_dir, named) = start(&["127.0.0.1"]);
    named
        .wait_for_log("daemon.running", Duration::from_secs(20))
        .unwrap();
    assert!(
        !named.log().contains("advertise_host_not_in_certificate"),
        "{}",
        named.log()
    );
}

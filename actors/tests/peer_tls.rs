//! The peer transport end to end: a real tonic server (the generated
//! Coordinator service and the standard health service) behind
//! `PeerIncoming` on 127.0.0.1, and clients good and bad dialling it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use steep_repl_actors::peer_tls::{
    ConnectOptions, HandshakeFailure, HandshakeFailureReason, IncomingOptions, NodeTlsMaterial,
    PeerInfo, PeerTlsError, PeerTransport, TlsPaths,
};
use steep_repl_actors::pki::testing::{TestCa, TestNode};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::coordinator_server::{Coordinator, CoordinatorServer};
use steep_repl_proto::{
    health_check_response::ServingStatus, GetNodesRequest, GetNodesResponse, HealthCheckRequest,
    HealthCheckResponse, HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest,
    RegisterNodeResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// A Coordinator that remembers who called it and enforces the identity
/// rule on the node_id a caller claims.
#[derive(Clone, Default)]
struct TestCoordinator {
    seen: Arc<Mutex<Vec<PeerInfo>>>,
}

impl TestCoordinator {
    fn record<T>(&self, request: &Request<T>) -> Result<PeerInfo, Status> {
        let info = PeerInfo::from_request(request)
            .cloned()
            .ok_or_else(|| Status::internal("no PeerInfo on the request"))?;
        self.seen.lock().unwrap().push(info.clone());
        Ok(info)
    }
}

#[tonic::async_trait]
impl Coordinator for TestCoordinator {
    async fn health_check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.record(&request)?;
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
            node_id: "node-a".into(),
            ..Default::default()
        }))
    }

    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let info = self.record(&request)?;
        info.verify_claim(&request.get_ref().node_id)?;
        Ok(Response::new(RegisterNodeResponse {
            success: true,
            coordinator_id: "node-a".into(),
            ..Default::default()
        }))
    }

    async fn get_nodes(
        &self,
        request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        self.record(&request)?;
        Ok(Response::new(GetNodesResponse::default()))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let info = self.record(&request)?;
        info.verify_claim(&request.get_ref().node_id)?;
        Ok(Response::new(HeartbeatResponse {
            acknowledged: true,
            ..Default::default()
        }))
    }
}

struct TestServer {
    addr: SocketAddr,
    failures: mpsc::UnboundedReceiver<HandshakeFailure>,
    seen: Arc<Mutex<Vec<PeerInfo>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    async fn start(transport: &PeerTransport, options: IncomingOptions) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (failure_tx, failures) = mpsc::unbounded_channel();
        let incoming = transport.incoming(listener, options, move |failure| {
            let _ = failure_tx.send(failure);
        });
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<CoordinatorServer<TestCoordinator>>()
            .await;
        let coordinator = TestCoordinator::default();
        let seen = coordinator.seen.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(CoordinatorServer::new(coordinator))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        TestServer {
            addr,
            failures,
            seen,
            stop: Some(stop),
            task,
        }
    }

    async fn next_failure(&mut self) -> HandshakeFailure {
        tokio::time::timeout(Duration::from_secs(10), self.failures.recv())
            .await
            .expect("a handshake failure is reported within 10 s")
            .expect("the failure channel is open")
    }

    fn no_failure_yet(&mut self) -> bool {
        self.failures.try_recv().is_err()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A cluster: its CA, the server node-a (answering on 127.0.0.1) and a
/// client node-b, both from the same CA.
struct Cluster {
    ca: TestCa,
    server: PeerTransport,
    client: PeerTransport,
    _dir: tempfile::TempDir,
}

fn load(node: &TestNode, dir: &std::path::Path, name: &str) -> NodeTlsMaterial {
    let files = node.write_to(dir, name);
    NodeTlsMaterial::load(&TlsPaths {
        cert_file: files.cert,
        key_file: files.key,
        ca_file: files.ca,
    })
    .unwrap()
}

fn cluster() -> Cluster {
    let ca = TestCa::new("steep test cluster");
    let dir = tempfile::tempdir().unwrap();
    let server = load(&ca.issue("node-a", &["127.0.0.1"]), dir.path(), "node-a");
    let client = load(&ca.issue("node-b", &["127.0.0.1"]), dir.path(), "node-b");
    Cluster {
        server: PeerTransport::mtls(&server).unwrap(),
        client: PeerTransport::mtls(&client).unwrap(),
        ca,
        _dir: dir,
    }
}

fn options() -> IncomingOptions {
    IncomingOptions {
        handshake_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn der_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in der_chain(ca_pem) {
        roots.add(cert).unwrap();
    }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `trusted_ca_pem` and presents `identity` (or no
/// certificate), speaking only the given TLS versions.
fn rogue_client_config(
    trusted_ca_pem: &str,
    identity: Option<&TestNode>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(trusted_ca_pem));
    let mut config = match identity {
        Some(node) => builder
            .with_client_auth_cert(
                der_chain(&node.cert_pem),
                PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Dials with a raw TLS client, then tries to read: under TLS 1.3 the client
/// may finish its side of the handshake before the server has judged its
/// certificate, so refusal shows up as an alert or EOF on the first read.
/// Returns the client's own address, which the server must report.
async fn raw_tls_attempt(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> SocketAddr {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("the server answers a refused client within 5 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a refused client must not get data: {read:?}"
        );
    }
    local
}

async fn health_check(channel: tonic::transport::Channel) -> Result<HealthCheckResponse, Status> {
    CoordinatorClient::new(channel)
        .health_check(HealthCheckRequest::default())
        .await
        .map(Response::into_inner)
}

#[tokio::test]
async fn a_client_from_the_cluster_ca_is_served_and_identified() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let channel = cluster
        .client
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
        .unwrap();

    let answer = health_check(channel.clone()).await.unwrap();
    assert_eq!(answer.node_id, "node-a");

    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let identity = seen[0]
        .identity
        .as_ref()
        .expect("an mTLS peer has an identity");
    assert_eq!(identity.common_name.as_deref(), Some("node-b"));
    assert_eq!(identity.dns_names, ["node-b"]);
    assert_eq!(
        identity.ip_addresses,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(seen[0].remote_addr.ip().to_string(), "127.0.0.1");
    assert_eq!(seen[0].local_addr, Some(server.addr));

    // The standard health service is served on the same port and channel.
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: steep_repl_proto::COORDINATOR_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    assert!(server.no_failure_yet());
    server.stop().await;
}

#[tokio::test]
async fn a_client_claiming_another_node_id_is_denied() {
    let cluster = cluster();
    let server = TestServer::start(&cluster.server, options()).await;
    let channel = cluster
        .client
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
        .unwrap();
    let mut client = CoordinatorClient::new(channel);

    let ok = client
        .register_node(RegisterNodeRequest {
            node_id: "node-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(ok.into_inner().success);

    let denied = client
        .heartbeat(HeartbeatRequest {
            node_id: "node-a".into(),
            node_status: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("claims node_id \"node-a\""),
        "{denied}"
    );
    assert!(denied.message().contains("CN=node-b"), "{denied}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_with_a_certificate_from_another_ca_is_refused_and_reported() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let stranger = TestCa::new("another cluster").issue("node-b", &["127.0.0.1"]);

    // The stranger knows our CA certificate (it is not secret) and so gets
    // as far as presenting its own certificate, which our CA did not sign.
    let config = rogue_client_config(
        &cluster.ca.cert_pem,
        Some(&stranger),
        &[&rustls::version::TLS13],
    );
    let client_addr = raw_tls_attempt(server.addr, config.clone()).await;
    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, client_addr);
    assert_eq!(failure.reason, HandshakeFailureReason::UnknownCa);
    assert!(
        failure
            .to_string()
            .ends_with("failed: certificate signed by an unknown CA"),
        "{failure}"
    );

    // Through tonic the call fails too.
    let rogue = PeerTransport::mtls_with_configs(dummy_server_config(), config);
    let refused = match rogue
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
    {
        Ok(channel) => health_check(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused);
    assert_eq!(
        server.next_failure().await.reason,
        HandshakeFailureReason::UnknownCa
    );

    assert!(
        server.seen.lock().unwrap().is_empty(),
        "no request reached a handler"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_gives_up_and_is_reported() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let other_ca = TestCa::new("another cluster");
    let stranger = other_ca.issue("node-x", &["127.0.0.1"]);
    let config = rogue_client_config(
        &other_ca.cert_pem,
        Some(&stranger),
        &[&rustls::version::TLS13],
    );
    let client_addr = raw_tls_attempt(server.addr, config).await;
    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, client_addr);
    assert!(
        matches!(failure.reason, HandshakeFailureReason::PeerAlert(_)),
        "{failure}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_and_reported() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let config = rogue_client_config(&cluster.ca.cert_pem, None, &[&rustls::version::TLS13]);
    let client_addr = raw_tls_attempt(server.addr, config.clone()).await;
    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, client_addr);
    assert_eq!(failure.reason, HandshakeFailureReason::NoClientCertificate);
    assert!(
        failure
            .to_string()
            .ends_with("failed: no client certificate"),
        "{failure}"
    );

    let anonymous = PeerTransport::mtls_with_configs(dummy_server_config(), config);
    let refused = match anonymous
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
    {
        Ok(channel) => health_check(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused);
    assert_eq!(
        server.next_failure().await.reason,
        HandshakeFailureReason::NoClientCertificate
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tls12_only_client_is_refused_and_reported() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let me = cluster.ca.issue("node-b", &["127.0.0.1"]);
    let config = rogue_client_config(&cluster.ca.cert_pem, Some(&me), &[&rustls::version::TLS12]);

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let result = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(result.is_err(), "TLS 1.2 must not complete a handshake");

    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, client_addr);
    assert_eq!(failure.reason, HandshakeFailureReason::NoTls13);
    server.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_mtls_port_is_told_apart() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, client_addr);
    assert!(
        matches!(failure.reason, HandshakeFailureReason::NotTls(_)),
        "{failure}"
    );
    assert!(
        failure.to_string().contains("grpc.tls.insecure"),
        "{failure}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_client_does_not_block_a_good_one_and_times_out() {
    let cluster = cluster();
    // Generous, so a loaded CI machine does not make the good client look slow.
    let handshake_timeout = Duration::from_secs(3);
    let mut server = TestServer::start(
        &cluster.server,
        IncomingOptions {
            handshake_timeout,
            ..Default::default()
        },
    )
    .await;

    // Opens TCP and says nothing, holding its handshake slot open.
    let stalled = TcpStream::connect(server.addr).await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = std::time::Instant::now();
    let channel = cluster
        .client
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
        .unwrap();
    health_check(channel).await.unwrap();
    assert!(
        started.elapsed() < handshake_timeout / 2,
        "the good client waited {:?}, about as long as the stalled one's timeout",
        started.elapsed()
    );
    assert!(
        server.no_failure_yet(),
        "the stalled client is still within its time"
    );

    let failure = server.next_failure().await;
    assert_eq!(failure.peer_addr, stalled_addr);
    assert_eq!(
        failure.reason,
        HandshakeFailureReason::Timeout(handshake_timeout)
    );
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn the_client_checks_the_server_certificate_against_the_host_dialled() {
    let cluster = cluster();
    let server = TestServer::start(&cluster.server, options()).await;
    // node-a's certificate names node-a and 127.0.0.1, not "localhost".
    let err = cluster
        .client
        .connect("localhost", server.addr.port(), &ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PeerTlsError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("localhost:"), "{err}");
    // Both sides of the mismatch are named: the host and the certificate.
    assert!(
        err.to_string()
            .contains("does not carry the host localhost that was dialled"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("(CN=node-a) does not carry the host localhost"),
        "{err}"
    );
    assert!(
        err.to_string().contains("its names are: node-a, 127.0.0.1"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_lazy_channel_connects_on_first_use() {
    let cluster = cluster();
    let server = TestServer::start(&cluster.server, options()).await;
    let channel = cluster
        .client
        .connect_lazy("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .unwrap();
    assert!(server.seen.lock().unwrap().is_empty());
    health_check(channel).await.unwrap();
    assert_eq!(server.seen.lock().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn plaintext_serves_without_identity() {
    let transport = PeerTransport::plaintext();
    let server = TestServer::start(&transport, options()).await;
    let channel = transport
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
        .unwrap();
    let mut client = CoordinatorClient::new(channel);
    // Without certificates any claim passes: that is what insecure means.
    let ok = client
        .register_node(RegisterNodeRequest {
            node_id: "whoever".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(ok.into_inner().success);
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen[0].identity.is_none());
    server.stop().await;
}

#[tokio::test]
async fn an_mtls_client_cannot_talk_to_a_plaintext_server() {
    let cluster = cluster();
    let server = TestServer::start(&PeerTransport::plaintext(), options()).await;
    let failed = match cluster
        .client
        .connect("127.0.0.1", server.addr.port(), &ConnectOptions::default())
        .await
    {
        Ok(channel) => health_check(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(failed);
    server.stop().await;
}

#[tokio::test]
async fn stopping_the_server_closes_the_port() {
    let cluster = cluster();
    let server = TestServer::start(&cluster.server, options()).await;
    let addr = server.addr;
    server.stop().await;
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A server config for a `PeerTransport` used only as a client in a test.
fn dummy_server_config() -> Arc<rustls::ServerConfig> {
    let ca = TestCa::new("unused");
    let node = ca.issue("unused", &[]);
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                der_chain(&node.cert_pem),
                PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    )
}

/// The dialling side of a reload: a channel made before it keeps its
/// connection, a new connection presents the new certificate, and the
/// server side of the same transport shows the new one too.
#[tokio::test]
async fn a_reload_puts_the_new_certificate_in_use_for_new_connections() {
    let cluster = cluster();
    let mut server = TestServer::start(&cluster.server, options()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = cluster
        .ca
        .issue("node-b", &["127.0.0.1"])
        .write_to(dir.path(), "node-b");
    let paths = TlsPaths {
        cert_file: files.cert.clone(),
        key_file: files.key.clone(),
        ca_file: files.ca.clone(),
    };
    let client = PeerTransport::mtls_from_files(&paths).unwrap();
    let port = server.addr.port();
    let before = client
        .connect("127.0.0.1", port, &ConnectOptions::default())
        .await
        .unwrap();
    health_check(before.clone()).await.unwrap();
    let first_serial = client.certificates().unwrap().serial;

    // The same node, a new certificate that also names "rotated".
    cluster
        .ca
        .issue("node-b", &["127.0.0.1", "rotated"])
        .write_to(dir.path(), "node-b");
    let reloaded = client.reload().unwrap().unwrap();
    assert!(reloaded.changed());
    assert_eq!(reloaded.before.unwrap().serial, first_serial);
    assert_ne!(client.certificates().unwrap().serial, first_serial);

    // The established connection stays; a new one presents the new names.
    health_check(before).await.unwrap();
    let after = client
        .connect("127.0.0.1", port, &ConnectOptions::default())
        .await
        .unwrap();
    health_check(after).await.unwrap();
    let seen = server.seen.lock().unwrap().clone();
    let names = |info: &PeerInfo| info.identity.as_ref().unwrap().dns_names.clone();
    assert_eq!(names(&seen[0]), ["node-b"]);
    assert_eq!(
        names(&seen[1]),
        names(&seen[0]),
        "the old connection kept its certificate"
    );
    assert!(names(&seen[2]).contains(&"rotated".to_string()), "{seen:?}");
    assert!(server.no_failure_yet());
    server.stop().await;
}

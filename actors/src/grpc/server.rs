//! The gRPC server on the peers' port: `steep.repl.v1.Coordinator`, the
//! standard `grpc.health.v1.Health` and, on a cluster member,
//! `steep.repl.v1.Raft`, over mutual TLS unless `grpc.tls.insecure`.
//! Handshake failures are audited through the per-address rate limit;
//! requests pass the timeout, concurrency and per-peer limits of `limits`.

use super::auth_failures::AuthFailures;
use super::limits::{GrpcLimits, LimitMetrics, LimitsLayer};
use super::service::CoordinatorService;
use super::GrpcPeerActor;
use crate::db::Db;
use crate::health_state::SharedHealth;
use crate::peer_tls::{IncomingOptions, PeerTransport};
use crate::raft::ClusterNode;
use actix::Addr;
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_proto::coordinator_server::CoordinatorServer;
use steep_repl_proto::raft_server::RaftServer;

/// What the server needs from its owner.
pub struct ServerParts {
    pub listener: std::net::TcpListener,
    pub port: u16,
    pub transport: PeerTransport,
    pub health: SharedHealth,
    pub db: Db,
    pub peers: Addr<GrpcPeerActor>,
    pub auth_failures: Arc<AuthFailures>,
    pub cluster: Option<ClusterNode>,
    pub limits: GrpcLimits,
    pub limit_metrics: Arc<LimitMetrics>,
    pub log: Logger,
}

/// A running server.
pub struct Server {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    reporter: tonic_health::server::HealthReporter,
    serving: Option<bool>,
}

impl Server {
    /// Starts serving on the listener the daemon bound; the error says why
    /// the socket could not be used.
    pub fn start(parts: ServerParts) -> Result<Server, String> {
        let ServerParts {
            listener,
            port,
            transport,
            health,
            db,
            peers,
            auth_failures,
            cluster,
            limits,
            limit_metrics,
            log,
        } = parts;
        let listener = listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| format!("cannot use the gRPC socket: {e}"))?;
        let failures = auth_failures.clone();
        let incoming = transport.incoming(listener, IncomingOptions::default(), move |failure| {
            failures.record(
                failure.peer_addr.ip(),
                failure.reason.kind(),
                None,
                &failure.reason.to_string(),
            );
        });
        let service = CoordinatorService {
            health,
            db,
            peers,
            auth_failures: auth_failures.clone(),
            db_timeout: limits.request_timeout,
        };
        let limits_layer = LimitsLayer::new(limits, limit_metrics, log.clone());
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let raft_service = cluster.map(|node| {
            RaftServer::new(crate::raft::service::RaftService {
                node,
                auth_failures,
            })
            .max_decoding_message_size(crate::raft::transport::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::raft::transport::MAX_MESSAGE_BYTES)
        });
        let tls = transport.is_tls();
        let server_log = log.clone();
        let task = actix::spawn(async move {
            let served = tonic::transport::Server::builder()
                .layer(limits_layer)
                .add_service(health_service)
                .add_service(CoordinatorServer::new(service))
                .add_optional_service(raft_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                warn!(server_log, "grpc.server_failed"; "error" => %e);
            }
        });
        info!(log, "grpc.listening"; "port" => port, "tls" => tls);
        Ok(Server {
            shutdown: Some(tx),
            task: Some(task),
            reporter,
            serving: None,
        })
    }

    /// Keeps the standard health service in line with the daemon's verdict.
    pub fn set_serving(&mut self, healthy: bool) {
        if self.serving == Some(healthy) {
            return;
        }
        self.serving = Some(healthy);
        let reporter = self.reporter.clone();
        let status = if healthy {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        actix::spawn(async move {
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(steep_repl_proto::COORDINATOR_SERVICE, status)
                .await;
        });
    }

    /// Stops accepting and waits for the calls in flight until `deadline`.
    pub fn stop(&mut self, deadline: Instant) -> impl std::future::Future<Output = ()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take();
        async move {
            if let Some(task) = task {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left.max(Duration::ZERO), task).await;
            }
        }
    }
}

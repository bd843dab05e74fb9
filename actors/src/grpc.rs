//! The peers' side of the daemon, on one gRPC port: the server
//! (`server`: the Coordinator service in `service`, the standard health
//! service, the Raft service on a member), the observation of the peers
//! (`peers`: GrpcPeerActor), the conversions to the wire (`convert`) and
//! the checks of what comes from it (`inbound`), and the server's limits
//! (`limits`).
//! Who is coordinator is the cluster's decision (`crate::raft`), read here
//! only to answer.

pub mod auth_failures;
pub mod certificates;
pub mod convert;
pub mod inbound;
pub mod limits;
pub mod peers;
pub mod server;
pub mod service;

pub use certificates::ReloadCertificates;
pub use peers::{GrpcPeerActor, PeerReported};

use crate::peer_tls::PeerTransport;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the GrpcPeerActor needs; built by the daemon from its config.
#[derive(Clone)]
pub struct GrpcSettings {
    /// Bound by the daemon before anything starts (so that a port in use
    /// stops it with a clear message); taken once by the actor.
    pub listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    pub port: u16,
    pub transport: PeerTransport,
    /// `grpc.peers`: nodes to watch besides the cluster's members.
    pub seeds: Vec<(String, u16)>,
    pub heartbeat_interval: Duration,
    pub degraded_rtt: Duration,
    pub unreachable_after: Duration,
    /// This node's node_id.
    pub node_id: String,
    /// This node's member of the cluster: its Raft service is served on
    /// the same port, and the members are peers to watch.
    pub cluster: Option<crate::raft::ClusterNode>,
    /// `grpc.tls.expiry_warning`: how long before a certificate expires
    /// the daemon starts warning.
    pub certificate_warning: Duration,
    /// The server's request timeout, concurrency and per-peer rate limits.
    pub limits: limits::GrpcLimits,
    /// Their refusals, for `/metrics`.
    pub limit_metrics: Arc<limits::LimitMetrics>,
}

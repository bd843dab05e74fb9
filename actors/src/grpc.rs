//! GrpcPeerActor: this node's side of the cluster.
//!
//! It owns the tonic server (`steep.repl.v1.Coordinator` and the standard
//! `grpc.health.v1.Health`, over mutual TLS unless `grpc.tls.insecure`) and
//! one channel per peer. Peers are found from `grpc.peers` and then from what
//! peers tell (RegisterNode and Heartbeat answers list the registry). Every
//! `heartbeat_interval` a self-scheduled tick sends each peer its next
//! request (HealthCheck to learn who it is, RegisterNode, then Heartbeat),
//! turns answers or silence into statuses (`peer_status`), writes changes to
//! the registry, and runs the election: the extension's rule while this
//! node sees a strict majority of the nodes that count, no coordinator
//! otherwise.

pub mod auth_failures;
pub mod convert;
pub mod service;

use crate::audit::AuditActor;
use crate::db::{DbActor, Elect, HeartbeatSelf, SelfRegistration, SetPeerStatus};
use crate::health_state::{DbPhase, PeerHealth, SharedHealth};
use crate::lifecycle::StopAccepting;
use crate::peer_status::{PeerStatus, PeerTracker, Thresholds};
use crate::peer_tls::{ConnectOptions, IncomingOptions, PeerTransport};
use actix::prelude::*;
use auth_failures::AuthFailures;
use chrono::Utc;
use convert::upsert_from_info;
use service::CoordinatorService;
use slog::{debug, info, warn, Logger};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::coordinator_server::CoordinatorServer;
use steep_repl_proto::raft_server::RaftServer;
use steep_repl_proto::{
    HealthCheckRequest, HeartbeatRequest, NodeInfo, NodeStatus, RegisterNodeRequest,
};
use tonic::transport::Channel;

/// What the GrpcPeerActor needs; built by the daemon from its config.
#[derive(Clone)]
pub struct GrpcSettings {
    /// Bound by the daemon before anything starts (so that a port in use
    /// stops it with a clear message); taken once by the actor.
    pub listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    pub port: u16,
    pub transport: PeerTransport,
    /// `grpc.peers`: where to start looking for the cluster.
    pub seeds: Vec<(String, u16)>,
    pub heartbeat_interval: Duration,
    pub degraded_rtt: Duration,
    pub unreachable_after: Duration,
    /// How this node registers with peers.
    pub node: SelfRegistration,
    /// This node's member of the cluster: its Raft service is served on
    /// the same port, and the members are peers to watch.
    pub cluster: Option<crate::raft::ClusterNode>,
}

// --- messages --------------------------------------------------------------

/// Nodes another daemon described (RegisterNode from it, or the node lists
/// it returned): unknown gRPC addresses become peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerAnnounced(pub Vec<NodeInfo>);

/// A peer's own report from its heartbeat.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerReported {
    pub node_id: String,
    pub postgresql_connected: bool,
}

/// The peer table, for status and tests.
#[derive(Message)]
#[rtype(result = "Vec<PeerHealth>")]
pub struct GetPeers;

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// Re-evaluates the peers' statuses from the clock alone (no requests).
#[derive(Message)]
#[rtype(result = "()")]
struct Evaluate;

#[derive(Message)]
#[rtype(result = "()")]
struct ElectNow;

/// How often statuses are re-evaluated between heartbeats, so that a peer
/// turns unreachable close to `unreachable_after`, not up to an interval later.
const EVALUATE_EVERY: Duration = Duration::from_millis(100);

// --- the actor -------------------------------------------------------------

/// What we last did with a peer, and what it answered.
enum Step {
    /// Learn its node_id (HealthCheck).
    Identify,
    /// Tell it who we are (RegisterNode).
    Register,
    /// Heartbeat.
    Beat,
}

struct Peer {
    host: String,
    port: u16,
    channel: Option<Channel>,
    node_id: Option<String>,
    step: Step,
    tracker: PeerTracker,
    in_flight: bool,
    last_error: Option<String>,
    last_seen: Option<chrono::DateTime<Utc>>,
    /// The status the registry holds for this peer, as far as we know; the
    /// tick writes the tracker's status until they match (the peer's row
    /// may not exist yet when its status is first known).
    synced: Option<PeerStatus>,
    sync_in_flight: bool,
}

impl Peer {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The result of one request to a peer.
enum Answer {
    Identified {
        node_id: String,
        postgresql_ok: bool,
    },
    Registered {
        nodes: Vec<NodeInfo>,
    },
    Beat {
        acknowledged: bool,
        nodes: Vec<NodeInfo>,
    },
    Failed(String),
}

pub struct GrpcPeerActor {
    settings: GrpcSettings,
    health: SharedHealth,
    db: Addr<DbActor>,
    log: Logger,
    auth_failures: Arc<AuthFailures>,
    peers: HashMap<String, Peer>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    reporter: Option<tonic_health::server::HealthReporter>,
    serving: Option<bool>,
    electing: bool,
    stopping: bool,
}

impl GrpcPeerActor {
    pub fn new(
        settings: GrpcSettings,
        health: SharedHealth,
        db: Addr<DbActor>,
        audit: Addr<AuditActor>,
        log: Logger,
    ) -> Self {
        let auth_failures = Arc::new(AuthFailures::new(audit, log.clone()));
        GrpcPeerActor {
            settings,
            health,
            db,
            log,
            auth_failures,
            peers: HashMap::new(),
            shutdown: None,
            server: None,
            reporter: None,
            serving: None,
            electing: false,
            stopping: false,
        }
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            degraded_rtt: self.settings.degraded_rtt,
            unreachable_after: self.settings.unreachable_after,
        }
    }

    fn add_peer(&mut self, host: &str, port: u16, node_id: Option<&str>) {
        if node_id == Some(self.settings.node.node_id.as_str()) {
            return;
        }
        if let Some(id) = node_id {
            if self
                .peers
                .values()
                .any(|p| p.node_id.as_deref() == Some(id))
            {
                return;
            }
        }
        let peer = Peer {
            host: host.to_string(),
            port,
            channel: None,
            node_id: node_id.map(str::to_string),
            step: Step::Identify,
            tracker: PeerTracker::new(self.thresholds(), Instant::now()),
            in_flight: false,
            last_error: None,
            last_seen: None,
            synced: None,
            sync_in_flight: false,
        };
        let address = peer.address();
        if self.peers.contains_key(&address) {
            return;
        }
        info!(self.log, "peer.added"; "peer" => &address, "node_id" => node_id.unwrap_or("?"));
        self.peers.insert(address, peer);
        self.publish_peers();
    }

    fn start_server(&mut self, ctx: &mut Context<Self>) {
        let taken = self
            .settings
            .listener
            .lock()
            .ok()
            .and_then(|mut l| l.take());
        let Some(std_listener) = taken else {
            warn!(self.log, "grpc.no_listener");
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                let error = format!("cannot use the gRPC socket: {e}");
                warn!(self.log, "grpc.listen_failed"; "error" => &error);
                self.health.update(|s| s.grpc.error = Some(error.clone()));
                return;
            }
        };
        let failures = self.auth_failures.clone();
        let incoming = self.settings.transport.incoming(
            listener,
            IncomingOptions::default(),
            move |failure| {
                failures.record(
                    failure.peer_addr.ip(),
                    failure.reason.kind(),
                    None,
                    &failure.reason.to_string(),
                );
            },
        );
        let service = CoordinatorService {
            health: self.health.clone(),
            db: self.db.clone(),
            peers: ctx.address(),
            auth_failures: self.auth_failures.clone(),
        };
        let (reporter, health_service) = tonic_health::server::health_reporter();
        self.reporter = Some(reporter);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        let log = self.log.clone();
        let raft_service = self.settings.cluster.clone().map(|node| {
            RaftServer::new(crate::raft::service::RaftService {
                node,
                auth_failures: self.auth_failures.clone(),
            })
            .max_decoding_message_size(crate::raft::transport::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::raft::transport::MAX_MESSAGE_BYTES)
        });
        self.server = Some(actix::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(CoordinatorServer::new(service))
                .add_optional_service(raft_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                warn!(log, "grpc.server_failed"; "error" => %e);
            }
        }));
        self.health.update(|s| {
            s.grpc.listening = true;
            s.grpc.error = None;
        });
        info!(self.log, "grpc.listening"; "port" => self.settings.port, "tls" => self.settings.transport.is_tls());
    }

    /// Keeps the standard health service in line with our own verdict.
    fn update_serving(&mut self) {
        let healthy = {
            let s = self.health.load();
            s.is_healthy(Instant::now(), self.health.stale_after)
        };
        if self.serving == Some(healthy) {
            return;
        }
        self.serving = Some(healthy);
        if let Some(reporter) = self.reporter.clone() {
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
    }

    fn node_status(&self) -> NodeStatus {
        let s = self.health.load();
        NodeStatus {
            postgresql_connected: s.postgresql.phase == DbPhase::Connected,
            postgresql_version: s.postgresql.server_version.clone().unwrap_or_default(),
            memory_used_bytes: crate::proc_stats::rss_bytes(),
            cpu_percent: 0.0,
        }
    }

    fn register_request(&self) -> RegisterNodeRequest {
        let n = &self.settings.node;
        RegisterNodeRequest {
            node_id: n.node_id.clone(),
            node_name: n.node_name.clone(),
            host: n.host.clone(),
            port: i32::from(n.port),
            priority: i32::from(n.priority),
            grpc_host: n.grpc_host.clone().unwrap_or_default(),
            grpc_port: n.grpc_port.map(i32::from).unwrap_or(0),
        }
    }

    fn publish_peers(&self) {
        let mut peers: Vec<PeerHealth> = self
            .peers
            .values()
            .map(|p| PeerHealth {
                node_id: p.node_id.clone(),
                address: p.address(),
                status: p.tracker.status().as_str().to_string(),
                rtt_ms: p.tracker.last_rtt().map(|d| d.as_secs_f64() * 1000.0),
                last_seen: p.last_seen,
                error: p.last_error.clone(),
            })
            .collect();
        peers.sort_by(|a, b| a.address.cmp(&b.address));
        self.health.update(|s| s.peers = peers.clone());
    }

    fn status_changed(&self, address: &str, node_id: Option<&str>, status: PeerStatus) {
        info!(self.log, "peer.status_changed"; "peer" => address, "node_id" => node_id.unwrap_or("?"),
              "status" => status.as_str());
    }

    /// Brings the registry in line with what the trackers say (the write
    /// is audited there as node.status_changed).
    fn sync_registry(&mut self, ctx: &mut Context<Self>) {
        let mut owed = Vec::new();
        for (address, peer) in self.peers.iter_mut() {
            let status = peer.tracker.status();
            let Some(node_id) = peer.node_id.clone() else {
                continue;
            };
            if peer.synced == Some(status) || peer.sync_in_flight || status == PeerStatus::Unknown {
                continue;
            }
            peer.sync_in_flight = true;
            owed.push((address.clone(), node_id, status));
        }
        for (address, node_id, status) in owed {
            self.db
                .send(SetPeerStatus {
                    node_id,
                    status: status.as_str().to_string(),
                })
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let Some(peer) = act.peers.get_mut(&address) else {
                        return;
                    };
                    peer.sync_in_flight = false;
                    match result {
                        Ok(Ok(true)) => {
                            peer.synced = Some(status);
                            // The registry changed: elect now, not at the next tick.
                            ctx.notify(ElectNow);
                        }
                        Ok(Ok(false)) => {} // not in the registry yet: next tick
                        Ok(Err(e)) => debug!(act.log, "peer.status_not_written"; "error" => %e),
                        Err(_) => {}
                    }
                })
                .spawn(ctx);
        }
    }

    fn send_next(&mut self, address: String, ctx: &mut Context<Self>) {
        let connect = ConnectOptions {
            connect_timeout: self.settings.unreachable_after,
            ..Default::default()
        };
        let timeout = self.settings.unreachable_after;
        let register = self.register_request();
        let node_status = self.node_status();
        let own_id = self.settings.node.node_id.clone();
        let transport = self.settings.transport.clone();
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        if peer.in_flight {
            return;
        }
        if peer.channel.is_none() {
            match transport.connect_lazy(&peer.host, peer.port, &connect) {
                Ok(channel) => peer.channel = Some(channel),
                Err(e) => {
                    peer.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        let Some(channel) = peer.channel.clone() else {
            return;
        };
        peer.in_flight = true;
        let step = match peer.step {
            Step::Identify => 0,
            Step::Register => 1,
            Step::Beat => 2,
        };
        let started = Instant::now();
        let call = async move {
            let mut client = CoordinatorClient::new(channel);
            let answer = async {
                match step {
                    0 => {
                        let r = client
                            .health_check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await?
                            .into_inner();
                        let postgresql_ok =
                            r.components.get("postgresql").is_some_and(|c| c.healthy);
                        Ok::<_, tonic::Status>(Answer::Identified {
                            node_id: r.node_id,
                            postgresql_ok,
                        })
                    }
                    1 => {
                        let r = client.register_node(register).await?.into_inner();
                        if !r.success {
                            return Ok(Answer::Failed(format!(
                                "registration refused: {}",
                                r.error
                            )));
                        }
                        Ok(Answer::Registered { nodes: r.nodes })
                    }
                    _ => {
                        let r = client
                            .heartbeat(HeartbeatRequest {
                                node_id: own_id,
                                node_status: Some(node_status),
                            })
                            .await?
                            .into_inner();
                        Ok(Answer::Beat {
                            acknowledged: r.acknowledged,
                            nodes: r.updated_nodes,
                        })
                    }
                }
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(status)) => {
                    Answer::Failed(format!("{}: {}", status.code(), status.message()))
                }
                Err(_) => Answer::Failed(format!("no answer within {}ms", timeout.as_millis())),
            }
        };
        ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
            act.handle_answer(&address, answer, started.elapsed(), ctx);
        }));
    }

    fn handle_answer(
        &mut self,
        address: &str,
        answer: Answer,
        rtt: Duration,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let own_id = self.settings.node.node_id.clone();
        let mut announced = Vec::new();
        let mut duplicate = false;
        let known_ids: Vec<String> = self
            .peers
            .iter()
            .filter(|(a, _)| a.as_str() != address)
            .filter_map(|(_, p)| p.node_id.clone())
            .collect();
        let Some(peer) = self.peers.get_mut(address) else {
            return;
        };
        peer.in_flight = false;
        let was_setup = matches!(
            answer,
            Answer::Identified { .. } | Answer::Registered { .. }
        );
        let change = match answer {
            Answer::Failed(reason) => {
                if peer.last_error.as_deref() != Some(reason.as_str()) {
                    debug!(self.log, "peer.request_failed"; "peer" => address, "error" => &reason);
                }
                peer.last_error = Some(reason);
                // A refused registration is retried from the start.
                if matches!(peer.step, Step::Register) {
                    peer.step = Step::Identify;
                }
                peer.tracker.tick(now)
            }
            Answer::Identified {
                node_id,
                postgresql_ok,
            } => {
                if node_id == own_id || known_ids.contains(&node_id) {
                    duplicate = true;
                    None
                } else {
                    peer.node_id = Some(node_id);
                    peer.step = Step::Register;
                    peer.last_error = None;
                    peer.last_seen = Some(Utc::now());
                    peer.tracker.reported_postgres(now, postgresql_ok);
                    peer.tracker.answered(now, rtt)
                }
            }
            Answer::Registered { nodes } => {
                peer.step = Step::Beat;
                peer.last_error = None;
                peer.last_seen = Some(Utc::now());
                announced = nodes;
                peer.tracker.answered(now, rtt)
            }
            Answer::Beat {
                acknowledged,
                nodes,
            } => {
                peer.last_error = None;
                peer.last_seen = Some(Utc::now());
                if !acknowledged {
                    // It does not know us (e.g. its registry was reset).
                    peer.step = Step::Register;
                }
                announced = nodes;
                peer.tracker.answered(now, rtt)
            }
        };
        let node_id = peer.node_id.clone();
        // Identify and Register lead straight to the next step instead of
        // waiting a heartbeat interval: a new peer is fully known in one
        // round of requests.
        let chain = !duplicate && was_setup && peer.last_error.is_none();
        if duplicate {
            info!(self.log, "peer.duplicate_address"; "peer" => address,
                  "note" => "this address leads to a node already known (or to this node itself)");
            self.peers.remove(address);
        } else if let Some(status) = change {
            self.status_changed(address, node_id.as_deref(), status);
        }
        if !announced.is_empty() {
            self.announce(announced, ctx);
        }
        if chain {
            self.send_next(address.to_string(), ctx);
        }
        if change.is_some() {
            self.sync_registry(ctx);
        }
        self.publish_peers();
    }

    fn announce(&mut self, nodes: Vec<NodeInfo>, _ctx: &mut Context<Self>) {
        let own_id = self.settings.node.node_id.clone();
        for node in nodes {
            if node.node_id == own_id {
                continue;
            }
            let Some(upsert) = upsert_from_info(&node) else {
                continue;
            };
            // Every node told of is kept in the registry (an unchanged
            // registration writes nothing), known peers included.
            let address = (upsert.grpc_host.clone(), upsert.grpc_port);
            self.db.do_send(upsert);
            let known = self
                .peers
                .values()
                .any(|p| p.node_id.as_deref() == Some(node.node_id.as_str()));
            if let (false, (Some(host), Some(port))) = (known, address) {
                self.add_peer(&host, port, None);
            }
        }
    }

    /// Watches every member of the cluster, whether or not `grpc.peers`
    /// or a peer's answer named it.
    fn watch_members(&mut self) {
        let Some(cluster) = self.settings.cluster.clone() else {
            return;
        };
        for member in cluster.members().into_values() {
            let known = self
                .peers
                .values()
                .any(|p| p.node_id.as_deref() == Some(member.node_id.as_str()));
            if known {
                continue;
            }
            if let Some((host, port)) = crate::raft::transport::split_address(&member.grpc) {
                self.add_peer(&host, port, Some(&member.node_id));
            }
        }
    }

    fn elect(&mut self, ctx: &mut Context<Self>) {
        if self.electing {
            return;
        }
        if self.health.load().postgresql.phase != DbPhase::Connected {
            // Without the registry this node cannot claim anything.
            self.health.update(|s| s.node.coordinator_id = None);
            return;
        }
        self.electing = true;
        let mut visible = vec![self.settings.node.node_id.clone()];
        visible.extend(
            self.peers
                .values()
                .filter(|p| p.tracker.status().answering())
                .filter_map(|p| p.node_id.clone()),
        );
        self.db.do_send(HeartbeatSelf);
        self.db
            .send(Elect { visible })
            .into_actor(self)
            .map(|result, act, _| {
                act.electing = false;
                let Ok(Ok(election)) = result else { return };
                let previous = act.health.load().node.coordinator_id.clone();
                if previous != election.coordinator {
                    info!(act.log, "coordinator.view_changed";
                          "coordinator" => election.coordinator.as_deref().unwrap_or("none"),
                          "visible" => election.visible, "total" => election.total);
                }
                let size = usize::try_from(election.total).unwrap_or(0).max(1);
                act.health.update(|s| {
                    s.node.coordinator_id = election.coordinator.clone();
                    s.node.cluster_size = size;
                });
            })
            .spawn(ctx);
    }
}

impl Actor for GrpcPeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_server(ctx);
        for (host, port) in self.settings.seeds.clone() {
            self.add_peer(&host, port, None);
        }
        ctx.notify(Tick);
        ctx.run_interval(self.settings.heartbeat_interval, |_, ctx| ctx.notify(Tick));
        ctx.run_interval(EVALUATE_EVERY, |_, ctx| ctx.notify(Evaluate));
    }
}

impl Handler<Evaluate> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, _: Evaluate, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let mut changes = Vec::new();
        for (address, peer) in self.peers.iter_mut() {
            if let Some(status) = peer.tracker.tick(now) {
                changes.push((address.clone(), peer.node_id.clone(), status));
            }
        }
        if changes.is_empty() {
            return;
        }
        for (address, node_id, status) in changes {
            self.status_changed(&address, node_id.as_deref(), status);
        }
        self.sync_registry(ctx);
        self.publish_peers();
    }
}

impl Handler<ElectNow> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, _: ElectNow, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.elect(ctx);
        }
    }
}

impl Handler<Tick> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let mut changes = Vec::new();
        for (address, peer) in self.peers.iter_mut() {
            if let Some(status) = peer.tracker.tick(now) {
                changes.push((address.clone(), peer.node_id.clone(), status));
            }
        }
        for (address, node_id, status) in changes {
            self.status_changed(&address, node_id.as_deref(), status);
        }
        self.watch_members();
        let addresses: Vec<String> = self.peers.keys().cloned().collect();
        for address in addresses {
            self.send_next(address, ctx);
        }
        self.sync_registry(ctx);
        self.publish_peers();
        self.update_serving();
        self.elect(ctx);
    }
}

impl Handler<PeerAnnounced> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerAnnounced, ctx: &mut Context<Self>) {
        self.announce(msg.0, ctx);
    }
}

impl Handler<PeerReported> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerReported, _: &mut Context<Self>) {
        let now = Instant::now();
        let mut change = None;
        for (address, peer) in self.peers.iter_mut() {
            if peer.node_id.as_deref() == Some(msg.node_id.as_str()) {
                if let Some(status) = peer
                    .tracker
                    .reported_postgres(now, msg.postgresql_connected)
                {
                    change = Some((address.clone(), status));
                }
            }
        }
        if let Some((address, status)) = change {
            self.status_changed(&address, Some(&msg.node_id), status);
            self.publish_peers();
        }
    }
}

impl Handler<GetPeers> for GrpcPeerActor {
    type Result = MessageResult<GetPeers>;

    fn handle(&mut self, _: GetPeers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.health.load().peers.clone())
    }
}

impl Handler<StopAccepting> for GrpcPeerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopAccepting, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.health.update(|s| s.grpc.listening = false);
        let server = self.server.take();
        Box::pin(async move {
            if let Some(server) = server {
                let left = msg.deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, server).await;
            }
        })
    }
}

//! GrpcPeerActor: this node's observation of its peers, and the owner of
//! the gRPC server (`server`).
//!
//! Peers are the members of the Raft cluster and the seeds of
//! `grpc.peers`. Every `heartbeat_interval` a self-scheduled tick sends
//! each peer its next request (HealthCheck to learn who it is, then
//! Heartbeat), turns answers or silence into statuses (`peer_status`) and
//! writes status changes to the registry. The statuses are what the lease
//! keeper's fitness reads (`raft::fitness`); who coordinates is decided by
//! the cluster (`steep_repl_consensus::lease_keeper`), not here.

use super::auth_failures::AuthFailures;
use super::certificates::{CertificateWatch, ReloadCertificates};
use super::server::{Server, ServerParts};
use super::GrpcSettings;
use crate::audit::AuditActor;
use crate::db::Db;
use crate::health_state::{DbPhase, PeerHealth, SharedHealth};
use crate::listener::{Face, ListenerReport, ListenerStarted, StopAccepting};
use crate::node_status::NodeStatus;
use crate::peer_status::{PeerTracker, Thresholds};
use crate::peer_tls::ConnectOptions;
use actix::prelude::*;
use chrono::Utc;
use slog::{debug, info, warn, Logger};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_proto::coordinator_client::CoordinatorClient;
use steep_repl_proto::{HealthCheckRequest, HeartbeatRequest};
use tonic::transport::Channel;

// --- messages --------------------------------------------------------------

/// A peer's own report from its heartbeat.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerReported {
    pub node_id: String,
    pub postgresql_connected: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// Re-evaluates the peers' statuses from the clock alone (no requests).
#[derive(Message)]
#[rtype(result = "()")]
struct Evaluate;

/// How often statuses are re-evaluated between heartbeats, so that a peer
/// turns unreachable close to `unreachable_after`, not up to an interval later.
const EVALUATE_EVERY: Duration = Duration::from_millis(100);

// --- the actor -------------------------------------------------------------

/// What we last did with a peer, and what it answered.
enum Step {
    /// Learn its node_id (HealthCheck).
    Identify,
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
    synced: Option<NodeStatus>,
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
    Beat,
    Failed(String),
}

pub struct GrpcPeerActor {
    settings: GrpcSettings,
    health: SharedHealth,
    report: ListenerReport,
    db: Db,
    log: Logger,
    auth_failures: Arc<AuthFailures>,
    certificates: CertificateWatch,
    peers: HashMap<String, Peer>,
    server: Option<Server>,
    stopping: bool,
    /// The status this node's own row holds, as far as we know.
    own_synced: Option<NodeStatus>,
    own_sync_in_flight: bool,
}

impl GrpcPeerActor {
    /// Announces the gRPC listener as pending in health at once (the
    /// daemon is not "running" before it serves); `parent` hears whether
    /// the server started.
    pub fn new(
        settings: GrpcSettings,
        health: SharedHealth,
        db: Db,
        audit: Addr<AuditActor>,
        parent: Option<Recipient<ListenerStarted>>,
        log: Logger,
    ) -> Self {
        let port = settings.port;
        let report = ListenerReport::pending(
            Face::Grpc,
            health.clone(),
            parent,
            Some(port),
            format!("port {port}"),
            settings.transport.is_tls(),
        );
        let auth_failures = Arc::new(AuthFailures::new(audit.clone(), log.clone()));
        let certificates = CertificateWatch {
            transport: settings.transport.clone(),
            health: health.clone(),
            audit,
            log: log.clone(),
            node_id: settings.node_id.clone(),
            warning: settings.certificate_warning,
        };
        GrpcPeerActor {
            certificates,
            settings,
            health,
            report,
            db,
            log,
            auth_failures,
            peers: HashMap::new(),
            server: None,
            stopping: false,
            own_synced: None,
            own_sync_in_flight: false,
        }
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            degraded_rtt: self.settings.degraded_rtt,
            unreachable_after: self.settings.unreachable_after,
        }
    }

    fn add_peer(&mut self, host: &str, port: u16, node_id: Option<&str>) {
        if node_id == Some(self.settings.node_id.as_str()) {
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
        let Some(listener) = taken else {
            let reason = "the gRPC listening socket was already taken";
            warn!(self.log, "grpc.no_listener"; "error" => reason);
            self.report.failed(reason);
            return;
        };
        let parts = ServerParts {
            listener,
            port: self.settings.port,
            transport: self.settings.transport.clone(),
            health: self.health.clone(),
            db: self.db.clone(),
            peers: ctx.address(),
            auth_failures: self.auth_failures.clone(),
            cluster: self.settings.cluster.clone(),
            limits: self.settings.limits,
            limit_metrics: self.settings.limit_metrics.clone(),
            log: self.log.clone(),
        };
        match Server::start(parts) {
            Ok(server) => {
                self.server = Some(server);
                self.report.up(None, None);
            }
            Err(error) => {
                warn!(self.log, "grpc.listen_failed"; "error" => &error);
                self.report.failed(&error);
            }
        }
    }

    /// Lets every peer's tracker see the time pass (a missed heartbeat
    /// turns a peer degraded, then unreachable); true when a status changed.
    fn tick_trackers(&mut self) -> bool {
        let now = Instant::now();
        let mut changes = Vec::new();
        for (address, peer) in self.peers.iter_mut() {
            if let Some(status) = peer.tracker.tick(now) {
                changes.push((address.clone(), peer.node_id.clone(), status));
            }
        }
        let changed = !changes.is_empty();
        for (address, node_id, status) in changes {
            self.status_changed(&address, node_id.as_deref(), status);
        }
        changed
    }

    /// Keeps the standard health service in line with our own verdict.
    fn update_serving(&mut self) {
        let healthy = {
            let s = self.health.load_stored();
            s.is_healthy(Instant::now(), self.health.stale_after)
        };
        if let Some(server) = self.server.as_mut() {
            server.set_serving(healthy);
        }
    }

    fn node_status(&self) -> steep_repl_proto::NodeStatus {
        let s = self.health.load_stored();
        steep_repl_proto::NodeStatus {
            // A witness has none and needs none: not a reason to mark it
            // degraded.
            postgresql_connected: matches!(
                s.postgresql.phase,
                DbPhase::Connected | DbPhase::Disabled
            ),
            postgresql_version: s.postgresql.server_version.clone().unwrap_or_default(),
            memory_used_bytes: crate::proc_stats::rss_bytes(),
        }
    }

    fn publish_peers(&self) {
        let mut peers: Vec<PeerHealth> = self
            .peers
            .values()
            .map(|p| PeerHealth {
                node_id: p.node_id.clone(),
                address: p.address(),
                status: p.tracker.status(),
                rtt_ms: p.tracker.last_rtt().map(|d| d.as_secs_f64() * 1000.0),
                last_seen: p.last_seen,
                error: p.last_error.clone(),
                postgresql_up: p.tracker.postgres_up(),
            })
            .collect();
        peers.sort_by(|a, b| a.address.cmp(&b.address));
        self.health.update(|s| s.peers = peers.clone());
    }

    fn status_changed(&self, address: &str, node_id: Option<&str>, status: NodeStatus) {
        info!(self.log, "peer.status_changed"; "peer" => address, "node_id" => node_id.unwrap_or("?"),
              "status" => status.as_str());
    }

    /// Brings the registry in line with what the trackers say (the write
    /// is audited there as node.status_changed).
    /// Writes this node's own status in its registry row (the row exists
    /// once the membership is projected): healthy while its PostgreSQL
    /// answers, which is also when the write can land.
    fn sync_own_status(&mut self, ctx: &mut Context<Self>) {
        let status = NodeStatus::Healthy;
        if self.own_synced == Some(status) || self.own_sync_in_flight {
            return;
        }
        if self.health.load_stored().postgresql.phase != DbPhase::Connected {
            self.own_synced = None;
            return;
        }
        self.own_sync_in_flight = true;
        let (db, node_id) = (self.db.clone(), self.settings.node_id.clone());
        async move { db.set_peer_status(&node_id, status).await }
            .into_actor(self)
            .map(move |result, act, _| {
                act.own_sync_in_flight = false;
                match result {
                    Ok(true) => act.own_synced = Some(status),
                    // Not written: the row is not projected yet, or was
                    // projected after the update looked. Next tick.
                    Ok(false) => {}
                    Err(e) => debug!(act.log, "node.own_status_not_written"; "error" => %e),
                }
            })
            .spawn(ctx);
    }

    fn sync_registry(&mut self, ctx: &mut Context<Self>) {
        let mut owed = Vec::new();
        for (address, peer) in self.peers.iter_mut() {
            let status = peer.tracker.status();
            let Some(node_id) = peer.node_id.clone() else {
                continue;
            };
            if peer.synced == Some(status) || peer.sync_in_flight || status == NodeStatus::Unknown {
                continue;
            }
            peer.sync_in_flight = true;
            owed.push((address.clone(), node_id, status));
        }
        for (address, node_id, status) in owed {
            let db = self.db.clone();
            async move { db.set_peer_status(&node_id, status).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    let Some(peer) = act.peers.get_mut(&address) else {
                        return;
                    };
                    peer.sync_in_flight = false;
                    match result {
                        Ok(true) => peer.synced = Some(status),
                        Ok(false) => {} // not in the registry yet: next tick
                        Err(e) => debug!(act.log, "peer.status_not_written"; "error" => %e),
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
        let node_status = self.node_status();
        let own_id = self.settings.node_id.clone();
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
        let identify = matches!(peer.step, Step::Identify);
        let started = Instant::now();
        let call = async move {
            let mut client = CoordinatorClient::new(channel);
            let answer = async {
                if identify {
                    let r = client
                        .health_check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await?
                        .into_inner();
                    let peer = super::inbound::identified(&r).map_err(|e| {
                        tonic::Status::invalid_argument(format!("its HealthCheck answer: {e}"))
                    })?;
                    return Ok::<_, tonic::Status>(Answer::Identified {
                        node_id: peer.node_id,
                        postgresql_ok: peer.postgresql_ok,
                    });
                }
                client
                    .heartbeat(HeartbeatRequest {
                        node_id: own_id,
                        node_status: Some(node_status),
                    })
                    .await?;
                Ok(Answer::Beat)
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(status)) => Answer::Failed(status_text(&status)),
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
        let own_id = self.settings.node_id.clone();
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
        let was_setup = matches!(answer, Answer::Identified { .. });
        let change = match answer {
            Answer::Failed(reason) => {
                if peer.last_error.as_deref() != Some(reason.as_str()) {
                    let node_id = peer.node_id.as_deref().unwrap_or("?");
                    // A certificate problem needs the operator; a peer that
                    // is down is reported by its status already.
                    if reason.contains("certificate") {
                        warn!(self.log, "peer.tls_failed"; "peer" => address, "node_id" => node_id,
                              "error" => &reason);
                    } else {
                        debug!(self.log, "peer.request_failed"; "peer" => address,
                               "node_id" => node_id, "error" => &reason);
                    }
                }
                peer.last_error = Some(reason);
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
                    peer.step = Step::Beat;
                    peer.last_error = None;
                    peer.last_seen = Some(Utc::now());
                    peer.tracker.reported_postgres(now, postgresql_ok);
                    peer.tracker.answered(now, rtt)
                }
            }
            Answer::Beat => {
                peer.last_error = None;
                peer.last_seen = Some(Utc::now());
                peer.tracker.answered(now, rtt)
            }
        };
        let node_id = peer.node_id.clone();
        // Identify leads straight to the first heartbeat instead of waiting
        // a heartbeat interval: a new peer is fully known in one round.
        let chain = !duplicate && was_setup && peer.last_error.is_none();
        if duplicate {
            info!(self.log, "peer.duplicate_address"; "peer" => address,
                  "note" => "this address leads to a node already known (or to this node itself)");
            self.peers.remove(address);
        } else if let Some(status) = change {
            self.status_changed(address, node_id.as_deref(), status);
        }
        if chain {
            self.send_next(address.to_string(), ctx);
        }
        if change.is_some() {
            self.sync_registry(ctx);
        }
        self.publish_peers();
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
}

impl Actor for GrpcPeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.certificates.publish();
        self.certificates.check_expiry();
        ctx.run_interval(super::certificates::CHECK_EVERY, |act, _| {
            act.certificates.check_expiry()
        });
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
        if self.stopping || !self.tick_trackers() {
            return;
        }
        self.sync_registry(ctx);
        self.publish_peers();
    }
}

impl Handler<Tick> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.tick_trackers();
        self.watch_members();
        let addresses: Vec<String> = self.peers.keys().cloned().collect();
        for address in addresses {
            self.send_next(address, ctx);
        }
        self.sync_registry(ctx);
        self.sync_own_status(ctx);
        self.publish_peers();
        self.update_serving();
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

impl Handler<ReloadCertificates> for GrpcPeerActor {
    type Result = ();

    fn handle(&mut self, _: ReloadCertificates, _: &mut Context<Self>) {
        self.certificates.reload();
    }
}

/// A failed call as operators need it: the code, the message and the
/// causes under it (a failed handshake's reason is only in the causes).
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Handler<StopAccepting> for GrpcPeerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopAccepting, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.report.down();
        let stopped = self.server.as_mut().map(|server| server.stop(msg.deadline));
        Box::pin(async move {
            if let Some(stopped) = stopped {
                stopped.await;
            }
        })
    }
}

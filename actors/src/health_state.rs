//! The daemon's cached view of itself: one immutable [`HealthSnapshot`]
//! behind an `ArcSwap`, replaced whole whenever a component reports a change.
//!
//! Actors push what they know (`SharedHealth::update`); HTTP probes, IPC
//! `status.get` and gRPC `HealthCheck` read it with a pointer load, so a probe
//! never waits on PostgreSQL or on an actor's mailbox. Freshness is part of
//! the answer: a PostgreSQL result older than `stale_after` counts as
//! unhealthy, and the loop tick tells whether the daemon's own loops turn.

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    Starting,
    Running,
    Stopping,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Running => "running",
            DaemonState::Stopping => "stopping",
        }
    }
}

/// The PostgreSQL connection state machine of the database keeper (`db::DbActor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbPhase {
    /// Not connected; attempts run with backoff.
    Connecting,
    /// Connected, supported version, extension present.
    Connected,
    /// Connected to a server older than PostgreSQL 18: nothing is written.
    UnsupportedVersion,
    /// Connected, but `steep_repl` is not installed in the database.
    ExtensionMissing,
    /// Closed by shutdown.
    Stopped,
    /// A witness (`postgresql.enabled: false`): no PostgreSQL at all.
    Disabled,
}

impl DbPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            DbPhase::Connecting => "connecting",
            DbPhase::Connected => "connected",
            DbPhase::UnsupportedVersion => "unsupported_version",
            DbPhase::ExtensionMissing => "extension_missing",
            DbPhase::Stopped => "stopped",
            DbPhase::Disabled => "disabled",
        }
    }
}

/// What the daemon knows about its local PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresHealth {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub phase: DbPhase,
    /// `server_version` as the server reports it (e.g. "18.6").
    pub server_version: Option<String>,
    pub extension_version: Option<String>,
    /// Round trip of the last successful ping.
    pub latency: Option<Duration>,
    /// Why it is not usable, in words for an operator.
    pub error: Option<String>,
    /// When this was last confirmed (a ping or a state change).
    pub checked_at: Option<Instant>,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// This node's row is in the registry.
    pub registered: bool,
}

impl PostgresHealth {
    pub fn new(host: &str, port: u16, database: &str) -> Self {
        PostgresHealth {
            host: host.to_string(),
            port,
            database: database.to_string(),
            phase: DbPhase::Connecting,
            server_version: None,
            extension_version: None,
            latency: None,
            error: None,
            checked_at: None,
            reconnects: 0,
            registered: false,
        }
    }

    /// True when the socket is open, whatever the version or extension.
    pub fn connected(&self) -> bool {
        matches!(
            self.phase,
            DbPhase::Connected | DbPhase::UnsupportedVersion | DbPhase::ExtensionMissing
        )
    }
}

/// A listener (gRPC, IPC, HTTP) as its owner last reported it.
#[derive(Debug, Clone, Default)]
pub struct ListenerHealth {
    pub enabled: bool,
    pub listening: bool,
    /// TCP port, when it is a TCP listener.
    pub port: Option<u16>,
    /// Where it listens (address:port or socket path).
    pub address: Option<String>,
    pub tls: bool,
    pub error: Option<String>,
}

impl ListenerHealth {
    /// A listener the configuration turned off.
    pub fn disabled() -> Self {
        ListenerHealth::default()
    }

    /// A listener that will start; not listening yet.
    pub fn pending(port: Option<u16>, address: impl Into<String>, tls: bool) -> Self {
        ListenerHealth {
            enabled: true,
            listening: false,
            port,
            address: Some(address.into()),
            tls,
            error: None,
        }
    }

    /// Healthy when disabled or listening.
    pub fn ok(&self) -> bool {
        !self.enabled || self.listening
    }
}

/// The audit path's counters.
#[derive(Debug, Clone, Default)]
pub struct AuditHealth {
    /// Events spooled and not yet written to PostgreSQL.
    pub queue_depth: u64,
    pub written_total: u64,
    /// Events refused because the spool was full.
    pub dropped_total: u64,
    pub last_error: Option<String>,
}

/// One peer as seen by this node.
#[derive(Debug, Clone, Serialize)]
pub struct PeerHealth {
    pub node_id: Option<String>,
    pub address: String,
    pub status: crate::node_status::NodeStatus,
    pub rtt_ms: Option<f64>,
    pub last_seen: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Its PostgreSQL as it last reported it (`None`: not told yet).
    pub postgresql_up: Option<bool>,
}

/// This node's place in the cluster.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub node_id: String,
    pub node_name: String,
    /// The coordinator as this node may name it at the instant the
    /// snapshot was loaded (see `SharedHealth::load`).
    pub coordinator_id: Option<String>,
    /// The coordinator's epoch, with `coordinator_id`.
    pub epoch: Option<u64>,
    /// On the coordinator: how long its lease has left.
    pub lease_remaining: Option<Duration>,
    /// Members of the cluster (this one included); 1 until known.
    pub cluster_size: usize,
    /// A witness: votes, has no PostgreSQL, never coordinator.
    pub witness: bool,
    /// Why this node is not a caught-up member of a cluster (`None`: it
    /// is, or it runs no cluster member at all). `/ready` says it.
    pub cluster_unready: Option<String>,
}

/// The coordinator as this node may answer at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoordinatorView {
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    pub lease_remaining: Option<Duration>,
    /// Members of the cluster (0: not in one yet).
    pub members: usize,
    /// This node is a member.
    pub member: bool,
    /// It has caught up with a leader since it started.
    pub caught_up: bool,
}

/// Asked at every load of the health snapshot.
pub type CoordinatorSource = Arc<dyn Fn() -> CoordinatorView + Send + Sync>;

/// The cluster member's numbers for `/metrics`, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterMetrics {
    pub term: u64,
    /// The leader's node_id, as this node knows it.
    pub leader: Option<String>,
    pub is_leader: bool,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// On the leader: how long since a majority last answered.
    pub quorum_ack_age: Option<Duration>,
    /// On the leader: entries each follower has not stored yet.
    pub follower_lag: Vec<(String, u64)>,
    pub log_bytes: u64,
    pub snapshot_bytes: u64,
    /// Requests this node answered NO_QUORUM.
    pub no_quorum_total: u64,
    /// The slowest log fsync of the last ones measured (p99 over a window).
    pub fsync_p99: Option<Duration>,
    /// How far the PostgreSQL projection follows the replicated state.
    pub projection: crate::raft::projection_status::ProjectionReport,
}

/// Read at every scrape.
pub type ClusterMetricsSource = Arc<dyn Fn() -> ClusterMetrics + Send + Sync>;

impl NodeView {
    pub fn is_coordinator(&self) -> bool {
        self.coordinator_id.as_deref() == Some(self.node_id.as_str())
    }

    pub fn role(&self) -> &'static str {
        if self.witness {
            "witness"
        } else {
            "data"
        }
    }
}

/// Everything probes and status report, at one instant.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub version: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub started: Instant,
    pub state: DaemonState,
    pub node: NodeView,
    pub postgresql: PostgresHealth,
    pub grpc: ListenerHealth,
    pub ipc: ListenerHealth,
    pub http: ListenerHealth,
    pub audit: AuditHealth,
    pub peers: Vec<PeerHealth>,
    /// The peer TLS certificates in use (`None` without mTLS), for the
    /// expiry metric.
    pub tls: Option<crate::peer_tls::CertificateInfo>,
}

/// The verdict on PostgreSQL, from a snapshot and the current time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgVerdict {
    Usable,
    Unusable(String),
}

impl HealthSnapshot {
    /// A fresh snapshot for a daemon that is starting.
    pub fn starting(version: &str, node_id: &str, node_name: &str, pg: PostgresHealth) -> Self {
        HealthSnapshot {
            version: version.to_string(),
            pid: std::process::id(),
            started_at: Utc::now(),
            started: Instant::now(),
            state: DaemonState::Starting,
            node: NodeView {
                node_id: node_id.to_string(),
                node_name: node_name.to_string(),
                coordinator_id: None,
                epoch: None,
                lease_remaining: None,
                cluster_size: 1,
                witness: false,
                cluster_unready: None,
            },
            postgresql: pg,
            grpc: ListenerHealth::disabled(),
            ipc: ListenerHealth::disabled(),
            http: ListenerHealth::disabled(),
            audit: AuditHealth::default(),
            peers: Vec::new(),
            tls: None,
        }
    }

    /// Whole seconds since start.
    pub fn uptime_seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    /// Is PostgreSQL usable (connected, supported version, extension
    /// present) according to a result no older than `stale_after`?
    pub fn postgres_verdict(&self, now: Instant, stale_after: Duration) -> PgVerdict {
        let pg = &self.postgresql;
        if pg.phase == DbPhase::Disabled {
            // A witness needs none: nothing it does waits for a database.
            return PgVerdict::Usable;
        }
        if pg.phase != DbPhase::Connected {
            let reason = pg
                .error
                .clone()
                .unwrap_or_else(|| format!("PostgreSQL is {}", pg.phase.as_str()));
            return PgVerdict::Unusable(reason);
        }
        match pg.checked_at {
            Some(at) if now.saturating_duration_since(at) <= stale_after => PgVerdict::Usable,
            Some(at) => PgVerdict::Unusable(format!(
                "PostgreSQL status is stale (last confirmed {:.1}s ago)",
                now.saturating_duration_since(at).as_secs_f64()
            )),
            None => PgVerdict::Unusable("PostgreSQL has not been checked yet".to_string()),
        }
    }

    /// `/health`: PostgreSQL usable and every enabled listener listening.
    pub fn is_healthy(&self, now: Instant, stale_after: Duration) -> bool {
        self.postgres_verdict(now, stale_after) == PgVerdict::Usable
            && self.grpc.ok()
            && self.ipc.ok()
    }

    /// `/ready`: fully started, PostgreSQL usable, this node registered.
    /// The error is the reason, for the probe's body.
    pub fn readiness(&self, now: Instant, stale_after: Duration) -> Result<(), String> {
        if self.state != DaemonState::Running {
            return Err(format!("daemon is {}", self.state.as_str()));
        }
        if let PgVerdict::Unusable(reason) = self.postgres_verdict(now, stale_after) {
            return Err(reason);
        }
        if !self.postgresql.registered && self.postgresql.phase != DbPhase::Disabled {
            return Err("this node is not registered yet".to_string());
        }
        if let Some(reason) = &self.node.cluster_unready {
            return Err(reason.clone());
        }
        Ok(())
    }
}

/// `stored` with the coordinator of `view` (see `SharedHealth::load`).
pub fn with_coordinator(stored: &HealthSnapshot, view: CoordinatorView) -> HealthSnapshot {
    let mut snapshot = stored.clone();
    snapshot.node.coordinator_id = view.holder;
    snapshot.node.epoch = view.epoch;
    snapshot.node.lease_remaining = view.lease_remaining;
    snapshot.node.cluster_size = view.members.max(1);
    snapshot.node.cluster_unready = if !view.member {
        Some(
            "this node is not a member of a cluster yet (steep-repl cluster init, or cluster add from a member)"
                .to_string(),
        )
    } else if !view.caught_up {
        Some("this node has not caught up with a leader yet".to_string())
    } else {
        None
    };
    snapshot
}

/// The shared, lock-free home of the current snapshot plus the heartbeat of
/// the daemon's own loops. Cheap to clone.
#[derive(Clone)]
pub struct SharedHealth {
    snapshot: Arc<ArcSwap<HealthSnapshot>>,
    /// Milliseconds since `epoch` of the last loop tick.
    loop_tick_ms: Arc<AtomicU64>,
    epoch: Instant,
    /// A cached PostgreSQL result older than this counts as unhealthy.
    pub stale_after: Duration,
    /// Where the coordinator comes from (the cluster member), once known.
    coordinator: Arc<std::sync::OnceLock<CoordinatorSource>>,
    /// Where the cluster's metrics come from, once known.
    cluster_metrics: Arc<std::sync::OnceLock<ClusterMetricsSource>>,
}

impl SharedHealth {
    pub fn new(initial: HealthSnapshot, stale_after: Duration) -> Self {
        SharedHealth {
            snapshot: Arc::new(ArcSwap::from_pointee(initial)),
            loop_tick_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            stale_after,
            coordinator: Arc::new(std::sync::OnceLock::new()),
            cluster_metrics: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Makes `/metrics` carry the cluster member's numbers.
    pub fn set_cluster_metrics_source(&self, source: ClusterMetricsSource) {
        let _ = self.cluster_metrics.set(source);
    }

    /// The cluster member's numbers now (`None`: no member runs here).
    pub fn cluster_metrics(&self) -> Option<ClusterMetrics> {
        self.cluster_metrics.get().map(|source| source())
    }

    /// Makes every later `load` name the coordinator from `source`, asked
    /// at that instant (set once, by the daemon, when its member starts).
    pub fn set_coordinator_source(&self, source: CoordinatorSource) {
        let _ = self.coordinator.set(source);
    }

    /// The current snapshot, with the coordinator as this node may name it
    /// at this very instant: every answer built from it (HTTP, IPC, gRPC)
    /// is built while a lease it reports is valid.
    pub fn load(&self) -> Arc<HealthSnapshot> {
        let stored = self.snapshot.load_full();
        match self.coordinator_view() {
            None => stored,
            Some(view) => Arc::new(with_coordinator(&stored, view)),
        }
    }

    /// The snapshot as stored, borrowed: no reference count taken (the
    /// probes' path, where every worker would otherwise write the same
    /// counter at every request). Hold it briefly.
    pub fn peek(&self) -> arc_swap::Guard<Arc<HealthSnapshot>> {
        self.snapshot.load()
    }

    /// When a cluster member runs here, the coordinator as this node may
    /// name it at this very instant: what `load` adds to the stored
    /// snapshot, for a caller that can often skip the combining (the
    /// `/health` probe, whose body it caches).
    pub fn coordinator_view(&self) -> Option<CoordinatorView> {
        self.coordinator.get().map(|source| source())
    }

    /// The snapshot as stored, without asking the cluster member (for the
    /// member itself: its fitness checks must not call back into it).
    pub fn load_stored(&self) -> Arc<HealthSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot with a modified copy.
    pub fn update(&self, change: impl Fn(&mut HealthSnapshot)) {
        self.snapshot.rcu(|current| {
            let mut next = HealthSnapshot::clone(current);
            change(&mut next);
            next
        });
    }

    /// Records that the daemon's main loop turned just now.
    pub fn touch_loop(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.loop_tick_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the main loop last turned.
    pub fn loop_age(&self) -> Duration {
        let last = Duration::from_millis(self.loop_tick_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> HealthSnapshot {
        HealthSnapshot::starting(
            "0.1.0",
            "a",
            "A",
            PostgresHealth::new("localhost", 5432, "postgres"),
        )
    }

    fn connected(mut s: HealthSnapshot, at: Instant) -> HealthSnapshot {
        s.postgresql.phase = DbPhase::Connected;
        s.postgresql.checked_at = Some(at);
        s.postgresql.registered = true;
        s.state = DaemonState::Running;
        s
    }

    const STALE: Duration = Duration::from_secs(3);

    #[test]
    fn a_fresh_connected_postgres_with_listeners_up_is_healthy_and_ready() {
        let now = Instant::now();
        let mut s = connected(snapshot(), now);
        s.ipc = ListenerHealth {
            enabled: true,
            listening: true,
            ..Default::default()
        };
        assert!(s.is_healthy(now, STALE));
        assert_eq!(s.readiness(now, STALE), Ok(()));
    }

    #[test]
    fn a_stale_postgres_result_counts_as_unhealthy() {
        let then = Instant::now();
        let s = connected(snapshot(), then);
        let later = then + Duration::from_secs(4);
        assert!(!s.is_healthy(later, STALE));
        match s.postgres_verdict(later, STALE) {
            PgVerdict::Unusable(reason) => assert!(reason.contains("stale"), "{reason}"),
            PgVerdict::Usable => panic!("stale result accepted"),
        }
    }

    #[test]
    fn an_enabled_listener_that_is_not_listening_makes_the_node_unhealthy() {
        let now = Instant::now();
        let mut s = connected(snapshot(), now);
        s.grpc = ListenerHealth::pending(Some(5433), "0.0.0.0:5433", true);
        assert!(!s.is_healthy(now, STALE));
        s.grpc.listening = true;
        assert!(s.is_healthy(now, STALE));
    }

    #[test]
    fn readiness_names_the_reason() {
        let now = Instant::now();
        let mut s = snapshot();
        assert_eq!(
            s.readiness(now, STALE),
            Err("daemon is starting".to_string())
        );
        s.state = DaemonState::Running;
        s.postgresql.error = Some("connection refused".to_string());
        assert_eq!(
            s.readiness(now, STALE),
            Err("connection refused".to_string())
        );
        let mut s = connected(snapshot(), now);
        s.postgresql.registered = false;
        assert_eq!(
            s.readiness(now, STALE),
            Err("this node is not registered yet".to_string())
        );
    }

    #[test]
    fn shared_updates_are_seen_by_readers() {
        let shared = SharedHealth::new(snapshot(), STALE);
        let before = shared.load();
        shared.update(|s| s.node.coordinator_id = Some("a".into()));
        assert!(!before.node.is_coordinator());
        assert!(shared.load().node.is_coordinator());
    }

    #[test]
    fn the_loop_age_grows_until_touched() {
        let shared = SharedHealth::new(snapshot(), STALE);
        shared.touch_loop();
        assert!(shared.loop_age() < Duration::from_secs(1));
    }
}

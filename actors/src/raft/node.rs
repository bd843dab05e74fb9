//! ClusterNode: this daemon's member of the cluster, as one cloneable handle.
//!
//! It owns the openraft node and the thread and runtime it runs on (Raft's
//! timers never wait for the actors' thread), the store's identity, and the
//! client side that forwards writes and read-index requests to the leader.
//! The faces (IPC, the gRPC Raft service, health) call it directly, the way
//! they read the health snapshot: no mailbox between a request and Raft.

use super::core_stop::{self, OnCoreStopped};
use super::projection_status::{ProjectionReport, ProjectionStatus};
use super::transport::{split_address, GrpcRaftTransport, Sender};
use crate::peer_tls::PeerTransport;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steep_repl_consensus::client::{ClientError, ClusterClient, Consistency};
use steep_repl_consensus::coordinator::CoordinatorCommand;
use steep_repl_consensus::lease::LeaseSettings;
use steep_repl_consensus::lease_keeper::{
    self, CoordinatorHandle, CoordinatorReport, Fitness, KeeperConfig,
};
use steep_repl_consensus::network::{MembershipChange, Network};
use steep_repl_consensus::openraft::{self, ServerState, SnapshotPolicy};
use steep_repl_consensus::types::{LogId, Raft};
use steep_repl_consensus::{
    Command, Member, Outcome, Proposal, RaftId, Requester, Role, SharedState, StoreError,
    StoreIdentity,
};
use steep_repl_proto::JoinRequest;

/// What the member needs; built by the daemon from its config.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// `raft.dir`: log, vote, snapshots, identity.
    pub dir: PathBuf,
    pub node_id: String,
    /// `host:port` where peers reach this daemon's gRPC.
    pub grpc_address: String,
    pub priority: u8,
    /// `postgresql.enabled: false`.
    pub witness: bool,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// `coordinator.lease`, `coordinator.clock_error`, `coordinator.failback_after`.
    pub lease: LeaseSettings,
}

/// Why the member could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("cannot start the Raft runtime: {0}")]
    Runtime(String),
    #[error("another steep-repl uses the Raft directory {0} (each node needs its own raft.dir)")]
    DirInUse(PathBuf),
    #[error("cannot lock the Raft directory {0}: {1}")]
    Lock(PathBuf, String),
}

/// Why a cluster request failed; each maps to an IPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    NotAMember(String),
    #[error("{0}")]
    NoQuorum(String),
    #[error("{0}")]
    UnknownOutcome(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// Requests answered NO_QUORUM by this process (one member per daemon),
/// for `/metrics`.
static NO_QUORUM_ANSWERS: AtomicU64 = AtomicU64::new(0);

/// How many log fsync durations the p99 is taken over.
const FSYNC_WINDOW: usize = 1024;

impl From<ClientError> for ClusterError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotAMember => ClusterError::NotAMember(e.to_string()),
            ClientError::NoQuorum(_) => {
                NO_QUORUM_ANSWERS.fetch_add(1, Ordering::Relaxed);
                ClusterError::NoQuorum(e.to_string())
            }
            ClientError::UnknownOutcome(_) => ClusterError::UnknownOutcome(e.to_string()),
            ClientError::Failed(_) => ClusterError::Failed(e.to_string()),
        }
    }
}

/// One member as `cluster.status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub node_id: String,
    /// The Raft id in hex (an incarnation of the node's store).
    pub raft_id: String,
    pub grpc: String,
    pub priority: u8,
    pub role: Role,
    /// A voter, or a learner still catching up.
    pub voter: bool,
    pub leader: bool,
    /// Entries the leader has not yet seen it store (on the leader only).
    pub lag: Option<u64>,
}

/// `cluster.status`: this node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    pub node_id: String,
    pub raft_id: String,
    /// leader, follower, candidate, learner, or none (not in a cluster).
    pub state: std::borrow::Cow<'static, str>,
    pub witness: bool,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    /// The last entry known committed (on a follower: as far as the
    /// leader has said).
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// How far behind the leader this node's applied index is, as far as
    /// it knows (on the leader: 0).
    pub lag: Option<u64>,
    /// On the leader: how long since a majority last answered.
    pub quorum_ack_ms: Option<u64>,
    /// The coordinator as this node may name it now (`None`: none known).
    pub coordinator: Option<String>,
    pub epoch: Option<u64>,
    /// On the coordinator: how long its lease has left.
    pub lease_remaining_ms: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// How far this node's PostgreSQL tables follow the replicated state.
    pub projection: ProjectionReport,
}

/// A value in the replicated map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateEntry {
    pub key: String,
    pub value: Value,
}

#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RaftSettings,
    raft: Raft,
    client: ClusterClient<GrpcRaftTransport>,
    transport: GrpcRaftTransport,
    shared: SharedState,
    identity: Arc<Mutex<StoreIdentity>>,
    /// The coordinator as this node may answer it.
    coordinator: CoordinatorHandle,
    /// The log store (shared with Raft) and the state machine, for sizes.
    log_store: steep_repl_consensus::LogStore,
    state_machine: steep_repl_consensus::StateMachineStore,
    /// The last log fsync durations.
    fsyncs: Arc<Mutex<VecDeque<Duration>>>,
    /// Kept by the projector, read by cluster.status and /metrics.
    projection: ProjectionStatus,
    /// Dropped to stop the Raft runtime's thread.
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// Set before `stop` is dropped: the core's stop was asked for.
    stop_requested: Arc<AtomicBool>,
    /// The Raft runtime, for the watch of its core.
    runtime: tokio::runtime::Handle,
    /// Held for the life of the process: one daemon per Raft directory.
    _dir_lock: DirLock,
}

/// Dropping the last handle stops the core too (its sender goes): that is
/// asked for, not a failure.
impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }
}

#[cfg(unix)]
pub type DirLock = nix::fcntl::Flock<std::fs::File>;
#[cfg(not(unix))]
pub type DirLock = ();

/// An exclusive lock on `dir/lock`: two daemons sharing a store would
/// interleave their logs and votes.
#[cfg(unix)]
pub fn lock_dir(dir: &std::path::Path) -> Result<DirLock, RaftStartError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RaftStartError::Lock(dir.to_path_buf(), e.to_string()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            RaftStartError::DirInUse(dir.to_path_buf())
        } else {
            RaftStartError::Lock(dir.to_path_buf(), errno.to_string())
        }
    })
}

#[cfg(not(unix))]
pub fn lock_dir(_: &std::path::Path) -> Result<DirLock, RaftStartError> {
    Ok(())
}

/// Logs what an operator needs to follow the cluster: leader, term,
/// membership and this node's state as they change.
async fn log_changes(raft: Raft, log: slog::Logger) {
    let mut metrics = raft.metrics();
    let mut seen: Option<(Option<RaftId>, u64, ServerState, Option<u64>)> = None;
    loop {
        let (now, members) = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            let members: Vec<String> = membership
                .nodes()
                .map(|(id, member)| {
                    let voter = membership.voter_ids().any(|v| v == *id);
                    format!(
                        "{}{}",
                        member.node_id,
                        if voter { "" } else { " (learner)" }
                    )
                })
                .collect();
            let leader = m
                .current_leader
                .and_then(|id| membership.get_node(&id))
                .map(|member| member.node_id.clone());
            (
                (
                    m.current_leader,
                    m.current_term,
                    m.state,
                    m.membership_config.log_id().map(|l| l.index),
                ),
                (members, leader),
            )
        };
        if seen.as_ref() != Some(&now) {
            let (members, leader) = members;
            slog::info!(log, "raft.changed";
                "state" => format!("{:?}", now.2).to_lowercase(),
                "term" => now.1,
                "leader" => leader.unwrap_or_else(|| "none".into()),
                "members" => members.join(","));
            seen = Some(now);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How long a client request (IPC, CLI) may wait for the cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn hex(id: RaftId) -> String {
    format!("{id:016x}")
}

impl ClusterNode {
    /// Opens the store in `settings.dir` and starts the Raft node on a
    /// runtime of its own. An empty store starts as no member of anything
    /// and stays so until `cluster init` here or `cluster add` elsewhere.
    pub fn start(
        settings: RaftSettings,
        peers: PeerTransport,
        fitness: Arc<dyn Fitness>,
        log: slog::Logger,
    ) -> Result<Self, RaftStartError> {
        let config = openraft::Config {
            cluster_name: "steep-repl".into(),
            heartbeat_interval: settings.heartbeat_interval.as_millis() as u64,
            election_timeout_min: settings.election_timeout_min.as_millis() as u64,
            election_timeout_max: settings.election_timeout_max.as_millis() as u64,
            // Chunks well under the gRPC message limit (JSON doubles bytes).
            snapshot_max_chunk_size: 256 * 1024,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: settings.snapshot_every.max(1),
            install_snapshot_timeout: 5_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStartError::Config(e.to_string()))?;
        // The store creates its directory (private) and identity first.
        let (identity, log_store, state_machine) = steep_repl_consensus::open(&settings.dir)?;
        let dir_lock = lock_dir(&settings.dir)?;
        if let Some(torn) = log_store.torn_tail() {
            slog::warn!(log, "raft.torn_tail_dropped"; "offset" => torn.offset, "bytes" => torn.bytes,
                "reason" => torn.reason.clone(),
                "note" => "the end of the log was never acknowledged (a crash mid-write); it was cut off");
        }
        let raft_id = identity.raft_id;
        let shared = state_machine.shared();
        let renewal_stamp = log_store.renewal_stamp();
        let log_store_view = log_store.clone();
        let state_machine_view = state_machine.clone();
        let fsyncs: Arc<Mutex<VecDeque<Duration>>> = Arc::new(Mutex::new(VecDeque::new()));
        {
            let fsyncs = fsyncs.clone();
            log_store.observe_fsync(Arc::new(move |took| {
                if let Ok(mut window) = fsyncs.lock() {
                    if window.len() >= FSYNC_WINDOW {
                        window.pop_front();
                    }
                    window.push_back(took);
                }
            }));
        }
        let keeper_config = KeeperConfig {
            node_id: settings.node_id.clone(),
            settings: settings.lease,
        };
        let keeper_shared = shared.clone();
        let identity = Arc::new(Mutex::new(identity));
        let sender = Sender {
            node_id: settings.node_id.clone(),
            identity: identity.clone(),
        };
        let connect_timeout = settings.election_timeout_min;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("raft-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(RaftStartError::Runtime(e.to_string())));
                        return;
                    }
                };
                let transport = GrpcRaftTransport::new(
                    peers,
                    sender,
                    runtime.handle().clone(),
                    connect_timeout,
                );
                let started = runtime.block_on(Raft::new(
                    raft_id,
                    Arc::new(config),
                    Network::new(transport.clone()),
                    log_store,
                    state_machine,
                ));
                let raft = match started {
                    Ok(raft) => raft,
                    Err(e) => {
                        let _ = ready_tx.send(Err(RaftStartError::Runtime(e.to_string())));
                        return;
                    }
                };
                runtime.spawn(log_changes(raft.clone(), log));
                let client = ClusterClient::new(raft.clone(), transport.clone());
                let (coordinator, _keeper) = {
                    let _entered = runtime.enter();
                    lease_keeper::spawn(
                        client,
                        keeper_shared,
                        renewal_stamp,
                        keeper_config,
                        fitness,
                    )
                };
                let _ = ready_tx.send(Ok((
                    raft.clone(),
                    transport,
                    coordinator,
                    runtime.handle().clone(),
                )));
                // Until the daemon stops (or drops the handle).
                let _ = stop_rx.recv();
                let _ = runtime.block_on(raft.shutdown());
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| RaftStartError::Runtime(e.to_string()))?;
        let (raft, transport, coordinator, runtime) = ready_rx
            .recv()
            .map_err(|e| RaftStartError::Runtime(e.to_string()))??;
        let client = ClusterClient::new(raft.clone(), transport.clone());
        Ok(ClusterNode {
            inner: Arc::new(Inner {
                settings,
                raft,
                client,
                transport,
                shared,
                identity,
                coordinator,
                log_store: log_store_view,
                state_machine: state_machine_view,
                fsyncs,
                projection: ProjectionStatus::default(),
                stop: Mutex::new(Some(stop_tx)),
                stop_requested: Arc::new(AtomicBool::new(false)),
                runtime,
                _dir_lock: dir_lock,
            }),
        })
    }

    /// Stops Raft (at daemon shutdown). Idempotent.
    pub fn stop(&self) {
        self.inner.stop_requested.store(true, Ordering::SeqCst);
        if let Ok(mut stop) = self.inner.stop.lock() {
            stop.take();
        }
    }

    /// Calls `on_stop` once, with openraft's fatal error, if the Raft core
    /// stops without [`ClusterNode::stop`] (a storage error, or a panic in
    /// the core). Registered after the core already stopped, it is called
    /// at once.
    pub fn on_unrequested_stop(&self, on_stop: OnCoreStopped) {
        self.inner.runtime.spawn(core_stop::watch(
            self.inner.raft.clone(),
            self.inner.stop_requested.clone(),
            on_stop,
        ));
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The numbers of `/metrics`, now.
    pub fn metrics(&self) -> crate::health_state::ClusterMetrics {
        let status = self.status();
        let fsync_p99 = self.inner.fsyncs.lock().ok().and_then(|window| {
            let mut sorted: Vec<Duration> = window.iter().copied().collect();
            sorted.sort();
            let at = (sorted.len() * 99).div_ceil(100).checked_sub(1)?;
            sorted.get(at).copied()
        });
        crate::health_state::ClusterMetrics {
            term: status.term,
            is_leader: status.state == "leader",
            leader: status.leader,
            last_log_index: status.last_log_index.unwrap_or(0),
            commit_index: status.commit_index.unwrap_or(0),
            applied_index: status.applied_index.unwrap_or(0),
            quorum_ack_age: status.quorum_ack_ms.map(Duration::from_millis),
            follower_lag: status
                .members
                .iter()
                .filter(|m| !m.leader)
                .filter_map(|m| m.lag.map(|lag| (m.node_id.clone(), lag)))
                .collect(),
            log_bytes: self.inner.log_store.stats().file_bytes,
            snapshot_bytes: self.inner.state_machine.snapshot_bytes().unwrap_or(0),
            no_quorum_total: NO_QUORUM_ANSWERS.load(Ordering::Relaxed),
            fsync_p99,
            projection: status.projection,
        }
    }

    /// Who is coordinator, as this node may answer at this instant.
    pub fn coordinator(&self) -> CoordinatorReport {
        self.inner.coordinator.report()
    }

    /// The coordinator record as last applied here (possibly stale).
    pub fn applied_coordinator(&self) -> steep_repl_consensus::coordinator::CoordinatorRecord {
        self.inner.coordinator.applied_record()
    }

    /// Stops claiming the role and releases it when held (clean stop).
    pub async fn step_down(&self, timeout: Duration) {
        self.inner.coordinator.step_down(timeout).await;
    }

    pub fn shared(&self) -> &SharedState {
        &self.inner.shared
    }

    pub fn settings(&self) -> &RaftSettings {
        &self.inner.settings
    }

    /// This store's identity (Raft id, cluster id) now.
    pub fn identity(&self) -> StoreIdentity {
        match self.inner.identity.lock() {
            Ok(identity) => identity.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn own_member(&self) -> Member {
        let s = &self.inner.settings;
        Member {
            node_id: s.node_id.clone(),
            grpc: s.grpc_address.clone(),
            priority: s.priority,
            role: if s.witness { Role::Witness } else { Role::Data },
        }
    }

    /// The members of the latest membership this node knows.
    pub fn members(&self) -> BTreeMap<RaftId, Member> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, m)| (*id, m.clone()))
            .collect()
    }

    /// How many members the latest membership this node knows has, and
    /// whether `id` is one of them, read in place (this runs at every
    /// probe: no copy of the metrics).
    pub fn membership_size(&self, id: RaftId) -> (usize, bool) {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        (
            membership.nodes().count(),
            membership.get_node(&id).is_some(),
        )
    }

    /// `cluster.status`.
    pub fn status(&self) -> ClusterStatus {
        let coordinator = self.coordinator();
        let metrics = self.inner.raft.metrics().borrow().clone();
        let identity = self.identity();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let leader_last = metrics.last_log_index;
        let members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, m)| {
                let lag = metrics.replication.as_ref().and_then(|r| {
                    let matched = r.get(id)?.as_ref().map(|l| l.index).unwrap_or(0);
                    Some(leader_last.unwrap_or(0).saturating_sub(matched))
                });
                MemberStatus {
                    node_id: m.node_id.clone(),
                    raft_id: hex(*id),
                    grpc: m.grpc.clone(),
                    priority: m.priority,
                    role: m.role,
                    voter: voters.contains(id),
                    leader: metrics.current_leader == Some(*id),
                    lag: if metrics.current_leader == Some(*id) {
                        Some(0)
                    } else {
                        lag
                    },
                }
            })
            .collect();
        let in_cluster = membership.get_node(&identity.raft_id).is_some();
        let state = match metrics.state {
            _ if !in_cluster => "none",
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Follower => "follower",
            ServerState::Shutdown => "shutdown",
        };
        let leader = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|m| m.node_id.clone());
        let applied = metrics.last_applied.map(|l| l.index);
        ClusterStatus {
            cluster_id: identity.cluster_id.clone(),
            node_id: self.inner.settings.node_id.clone(),
            raft_id: hex(identity.raft_id),
            state: state.into(),
            witness: self.inner.settings.witness,
            term: metrics.current_term,
            leader,
            last_log_index: metrics.last_log_index,
            commit_index: self.inner.log_store.committed().map(|l| l.index),
            applied_index: applied,
            lag: metrics
                .last_log_index
                .map(|last| last.saturating_sub(applied.unwrap_or(0))),
            quorum_ack_ms: metrics.millis_since_quorum_ack,
            coordinator: coordinator.holder,
            epoch: coordinator.epoch,
            lease_remaining_ms: coordinator
                .lease_remaining
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            members,
            projection: self.inner.projection.report(),
        }
    }

    /// The projection's progress, kept by the projector.
    pub fn projection(&self) -> &ProjectionStatus {
        &self.inner.projection
    }

    /// `cluster init`: makes a new cluster of this one node.
    pub async fn init(&self) -> Result<ClusterStatus, ClusterError> {
        let cluster_id = uuid::Uuid::new_v4().to_string();
        {
            let mut identity = self
                .inner
                .identity
                .lock()
                .map_err(|_| ClusterError::Failed("identity lock poisoned".into()))?;
            if let Some(existing) = &identity.cluster_id {
                return Err(ClusterError::Invalid(format!(
                    "this node already belongs to cluster {existing}; `cluster init` creates a new cluster only on an empty store"
                )));
            }
            identity
                .set_cluster_id(&self.inner.settings.dir, cluster_id.clone())
                .map_err(|e| ClusterError::Failed(e.to_string()))?;
        }
        let raft_id = self.identity().raft_id;
        let members: BTreeMap<RaftId, Member> = [(raft_id, self.own_member())].into();
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Failed(format!("cannot initialise the cluster: {e}")))?;
        Ok(self.status())
    }

    /// The receiving side of `cluster add`: adopt the cluster id of the
    /// member asking, once, and answer this store's Raft id.
    pub fn accept_join(
        &self,
        from_node_id: &str,
        cluster_id: &str,
        node_id: &str,
    ) -> Result<(RaftId, bool), ClusterError> {
        let settings = &self.inner.settings;
        if node_id != settings.node_id {
            return Err(ClusterError::Invalid(format!(
                "this is node {:?}, not {node_id:?}: check the address given to `cluster add`",
                settings.node_id
            )));
        }
        if cluster_id.is_empty() || from_node_id.is_empty() {
            return Err(ClusterError::Invalid(
                "cluster_id and from_node_id are required".into(),
            ));
        }
        let mut identity = self
            .inner
            .identity
            .lock()
            .map_err(|_| ClusterError::Failed("identity lock poisoned".into()))?;
        match identity.cluster_id.as_deref() {
            Some(ours) if ours == cluster_id => {}
            Some(ours) => {
                return Err(ClusterError::Invalid(format!(
                    "node {} already belongs to cluster {ours}; to move it, stop it, move its raft directory away and start it again",
                    settings.node_id
                )))
            }
            None => identity
                .set_cluster_id(&settings.dir, cluster_id.to_string())
                .map_err(|e| ClusterError::Failed(e.to_string()))?,
        }
        Ok((identity.raft_id, settings.witness))
    }

    /// `cluster add`: asks the node at `grpc` to join, adds it as a learner,
    /// and promotes it to voter once it has caught up. If it cannot be
    /// promoted, the learner is removed again.
    pub async fn add(
        &self,
        node_id: &str,
        grpc: &str,
        priority: u8,
        witness: bool,
    ) -> Result<ClusterStatus, ClusterError> {
        let Some(cluster_id) = self.identity().cluster_id else {
            return Err(ClusterError::NotAMember(
                "this node is not a member of a cluster: run `cluster add` on a member (or `cluster init` to create one)".into(),
            ));
        };
        if split_address(grpc).is_none() {
            return Err(ClusterError::Invalid(format!(
                "--grpc {grpc:?} is not a host:port address"
            )));
        }
        if !(1..=100).contains(&priority) {
            return Err(ClusterError::Invalid(format!(
                "priority {priority} is outside 1..100"
            )));
        }
        if let Some((id, _)) = self
            .members()
            .into_iter()
            .find(|(_, m)| m.node_id == node_id)
        {
            return Err(ClusterError::Invalid(format!(
                "{node_id} is already a member (Raft id {}); to replace it, `cluster remove {node_id}` first",
                hex(id)
            )));
        }
        let request = JoinRequest {
            cluster_id,
            from_node_id: self.inner.settings.node_id.clone(),
            node_id: node_id.to_string(),
        };
        let reply = self
            .inner
            .transport
            .join(grpc, request, REQUEST_TIMEOUT)
            .await
            .map_err(|status| {
                ClusterError::Failed(format!(
                    "{node_id} at {grpc} did not join: {}",
                    status.message()
                ))
            })?;
        if reply.node_id != node_id {
            return Err(ClusterError::Invalid(format!(
                "the node at {grpc} is {:?}, not {node_id:?}",
                reply.node_id
            )));
        }
        if witness != reply.witness {
            return Err(ClusterError::Invalid(if reply.witness {
                format!("{node_id} runs without PostgreSQL (postgresql.enabled: false): add it with --witness")
            } else {
                format!("{node_id} has PostgreSQL enabled: a witness needs postgresql.enabled: false in its configuration")
            }));
        }
        let member = Member {
            node_id: node_id.to_string(),
            grpc: grpc.to_string(),
            priority,
            role: if witness { Role::Witness } else { Role::Data },
        };
        let raft_id = reply.raft_id;
        let client = &self.inner.client;
        let catch_up = steep_repl_consensus::network::CATCH_UP_TIMEOUT + REQUEST_TIMEOUT;
        client
            .change_membership(MembershipChange::AddLearner { raft_id, member }, catch_up)
            .await
            .map_err(|e| self.rolled_back(raft_id, node_id, "added as a learner", e))?;
        if let Err(e) = client
            .change_membership(MembershipChange::Promote { raft_id }, REQUEST_TIMEOUT)
            .await
        {
            let _ = client
                .change_membership(MembershipChange::Remove { raft_id }, REQUEST_TIMEOUT)
                .await;
            return Err(self.rolled_back(raft_id, node_id, "promoted to voter", e));
        }
        Ok(self.status())
    }

    fn rolled_back(
        &self,
        raft_id: RaftId,
        node_id: &str,
        step: &str,
        e: ClientError,
    ) -> ClusterError {
        let detail = format!(
            "{node_id} (Raft id {}) could not be {step}: {e}; the change was undone where it could be",
            hex(raft_id)
        );
        match ClusterError::from(e) {
            ClusterError::NoQuorum(_) => ClusterError::NoQuorum(detail),
            ClusterError::UnknownOutcome(_) => ClusterError::UnknownOutcome(detail),
            _ => ClusterError::Failed(detail),
        }
    }

    /// `cluster remove`.
    pub async fn remove(&self, node_id: &str) -> Result<ClusterStatus, ClusterError> {
        let Some((raft_id, _)) = self
            .members()
            .into_iter()
            .find(|(_, m)| m.node_id == node_id)
        else {
            return Err(ClusterError::Invalid(format!(
                "{node_id} is not a member of this cluster"
            )));
        };
        let voters = self
            .inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if voters <= 1 && self.identity().raft_id == raft_id {
            return Err(ClusterError::Invalid(
                "the last voter cannot be removed: the cluster would have no one to decide".into(),
            ));
        }
        self.release_before_removal(node_id).await?;
        self.inner
            .client
            .change_membership(MembershipChange::Remove { raft_id }, REQUEST_TIMEOUT)
            .await?;
        Ok(self.status())
    }

    /// The coordinator is never removed before it released the role.
    /// The leader asks it to hand over; a dead holder's lease runs out and
    /// the role moves on without it.
    async fn release_before_removal(&self, node_id: &str) -> Result<(), ClusterError> {
        self.inner
            .client
            .read_barrier(Consistency::Linearizable, REQUEST_TIMEOUT)
            .await?;
        let record = self.applied_coordinator();
        if record.holder.as_deref() != Some(node_id) {
            return Ok(());
        }
        if record.handover.is_none() {
            let handover = Proposal {
                command: Command::Coordinator(CoordinatorCommand::Handover {
                    epoch: record.epoch,
                    to: None,
                    reason: format!("{node_id} is being removed from the cluster"),
                }),
                request_id: None,
                requester: Requester {
                    actor: format!("steep-repl@{}", self.inner.settings.node_id),
                    client_addr: None,
                    node_id: self.inner.settings.node_id.clone(),
                },
            };
            self.inner.client.write(handover, REQUEST_TIMEOUT).await?;
        }
        let lease = self.inner.settings.lease;
        let wait = lease.grant_wait() + lease.settle + Duration::from_secs(3);
        let deadline = std::time::Instant::now() + wait;
        while self.applied_coordinator().holder.as_deref() == Some(node_id) {
            if std::time::Instant::now() >= deadline {
                return Err(ClusterError::Failed(format!(
                    "{node_id} is the coordinator and did not give the role up within {wait:?}; it is not removed (try again once another member is coordinator)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `state.get`.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Value>, ClusterError> {
        self.inner
            .client
            .read_barrier(consistency, REQUEST_TIMEOUT)
            .await?;
        Ok(self.inner.shared.read(|view| view.kv().get(key).cloned()))
    }

    /// `state.list`.
    pub async fn list(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<StateEntry>, ClusterError> {
        self.inner
            .client
            .read_barrier(consistency, REQUEST_TIMEOUT)
            .await?;
        Ok(self.inner.shared.read(|view| {
            view.kv()
                .list(prefix)
                .map(|(key, value)| StateEntry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect()
        }))
    }

    /// `state.set`, `state.cas`, `state.delete`. A request id makes a retry
    /// apply once; without one, the daemon draws one so that its own
    /// forwarding can never apply a write twice.
    pub async fn write(
        &self,
        command: Command,
        request_id: Option<String>,
        requester: Requester,
    ) -> Result<(LogId, Outcome), ClusterError> {
        let proposal = Proposal {
            command,
            request_id: Some(request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
            requester,
        };
        Ok(self.inner.client.write(proposal, REQUEST_TIMEOUT).await?)
    }
}

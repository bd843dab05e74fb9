//! openraft's network over any request/response transport.
//!
//! The daemon's transport is gRPC over mutual TLS (its own service on the
//! peers' port, with the identity envelope of `admission`); tests use an
//! in-process router they can cut and pause. Both carry opaque bytes: this
//! module turns Raft RPCs into JSON and back, on the sending side
//! (`Network`, `Connection`) and the receiving side (`serve`).
//!
//! Besides Raft's own three RPCs, two client RPCs travel the same way: a
//! follower forwards a write to the leader (openraft 0.9 only answers
//! `ForwardToLeader`), and asks the leader for a read index before it
//! answers a linearizable read from its own state machine.

use crate::command::{Outcome, Proposal};
use crate::types::{LogId, Member, RaftId, TypeConfig};
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What a message asks of its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A follower forwards a client's write to the leader.
    ForwardWrite,
    /// A follower asks the leader for the index a linearizable read waits for.
    ReadIndex,
    /// A member forwards a membership change (cluster add/remove) to the leader.
    ForwardMembership,
}

impl RpcKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcKind::AppendEntries => "append_entries",
            RpcKind::Vote => "vote",
            RpcKind::InstallSnapshot => "install_snapshot",
            RpcKind::ForwardWrite => "forward_write",
            RpcKind::ReadIndex => "read_index",
            RpcKind::ForwardMembership => "forward_membership",
        }
    }

    /// The kind a message names (the `kind` field of the wire envelope).
    pub fn parse(name: &str) -> Option<RpcKind> {
        [
            RpcKind::AppendEntries,
            RpcKind::Vote,
            RpcKind::InstallSnapshot,
            RpcKind::ForwardWrite,
            RpcKind::ReadIndex,
            RpcKind::ForwardMembership,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// Why a message got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// It was certainly not delivered (no connection, handshake refused).
    #[error("{0}")]
    Unreachable(String),
    /// It may have been delivered and acted on; no answer came in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The receiver refused it (see `admission::Refusal`).
    #[error("refused by the receiver: {0}")]
    Refused(String),
}

/// Carries one message to a member and brings its answer back.
pub trait RaftTransport: Clone + Send + Sync + 'static {
    fn call(
        &self,
        target: RaftId,
        member: &Member,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// The answer of a leader to a forwarded client request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader (it names the one it knows, if any).
    /// Nothing was proposed: the request may be sent elsewhere.
    NotLeader { leader: Option<(RaftId, Member)> },
    /// The leader cannot reach a majority. Nothing was proposed.
    NoQuorum,
    /// The write was proposed and its outcome is unknown.
    UnknownOutcome,
    /// The receiver lost the leadership while the request was with it: it
    /// may have been appended and may still be committed by a later leader
    /// that holds the entry. Sending it again is safe only because a
    /// proposal carries a request id (applied once).
    MaybeProposed { leader: Option<(RaftId, Member)> },
    /// Anything else (the Raft node is stopping, a malformed message).
    Failed(String),
}

/// The result of a forwarded write: the entry's log id and outcome.
pub type ForwardWriteReply = Result<(LogId, Outcome), ForwardError>;
/// The result of a read-index request.
pub type ReadIndexReply = Result<Option<LogId>, ForwardError>;

/// One step of a membership change, executed by the leader. openraft runs
/// one change at a time and refuses another while one is in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a learner and waits until it has caught up with the log.
    AddLearner { raft_id: RaftId, member: Member },
    /// Makes a caught-up learner a voter.
    Promote { raft_id: RaftId },
    /// Removes a member (voter or learner) entirely.
    Remove { raft_id: RaftId },
}

/// The result of a membership change: the log id of its entry.
pub type MembershipReply = Result<LogId, ForwardError>;

/// How long a learner may take to catch up before its addition is undone.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates a `Connection` per target; openraft asks for one per follower.
#[derive(Clone)]
pub struct Network<T> {
    transport: T,
}

impl<T: RaftTransport> Network<T> {
    pub fn new(transport: T) -> Self {
        Network { transport }
    }
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> Connection<T> {
        Connection {
            transport: self.transport.clone(),
            target,
            member: node.clone(),
        }
    }
}

/// The way to one member.
pub struct Connection<T> {
    transport: T,
    target: RaftId,
    member: Member,
}

type RpcResult<R, E> = Result<R, RPCError<RaftId, Member, RaftError<RaftId, E>>>;

impl<T: RaftTransport> Connection<T> {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: RpcKind,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: for<'de> Deserialize<'de>,
        E: std::error::Error + for<'de> Deserialize<'de>,
    {
        let payload =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .transport
            .call(self.target, &self.member, kind, payload, option.hard_ttl())
            .await
            .map_err(|e| match e {
                // Raft backs off from an unreachable peer; a timeout and a
                // refusal are retried at its own pace too.
                TransportError::Unreachable(_) | TransportError::Refused(_) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                TransportError::Timeout(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let reply: Result<Resp, RaftError<RaftId, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for Connection<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>, openraft::error::Infallible> {
        self.rpc(RpcKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        self.rpc(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftId>, openraft::error::Infallible> {
        self.rpc(RpcKind::Vote, &rpc, &option).await
    }
}

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed {kind} message: {source}")]
pub struct MalformedMessage {
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Answers one message on the receiving side: the reply's bytes.
pub async fn serve(
    raft: &crate::types::Raft,
    kind: RpcKind,
    payload: &[u8],
) -> Result<Vec<u8>, MalformedMessage> {
    let malformed = |source| MalformedMessage {
        kind: kind.as_str(),
        source,
    };
    let encode = |v: Result<Vec<u8>, serde_json::Error>| v.map_err(malformed);
    match kind {
        RpcKind::AppendEntries => {
            let req: AppendEntriesRequest<TypeConfig> =
                serde_json::from_slice(payload).map_err(malformed)?;
            encode(serde_json::to_vec(&raft.append_entries(req).await))
        }
        RpcKind::Vote => {
            let req: VoteRequest<RaftId> = serde_json::from_slice(payload).map_err(malformed)?;
            encode(serde_json::to_vec(&raft.vote(req).await))
        }
        RpcKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> =
                serde_json::from_slice(payload).map_err(malformed)?;
            encode(serde_json::to_vec(&raft.install_snapshot(req).await))
        }
        RpcKind::ForwardWrite => {
            let proposal: Proposal = serde_json::from_slice(payload).map_err(malformed)?;
            let reply: ForwardWriteReply = leader_write(raft, proposal).await;
            encode(serde_json::to_vec(&reply))
        }
        RpcKind::ReadIndex => {
            let reply: ReadIndexReply = leader_read_index(raft).await;
            encode(serde_json::to_vec(&reply))
        }
        RpcKind::ForwardMembership => {
            let change: MembershipChange = serde_json::from_slice(payload).map_err(malformed)?;
            let reply: MembershipReply = leader_change_membership(raft, change).await;
            encode(serde_json::to_vec(&reply))
        }
    }
}

/// How long a leader may go without hearing from a majority before it
/// refuses writes with `NoQuorum` instead of proposing them (at least; the
/// election timeout's maximum when that is longer).
pub const QUORUM_ACK_LIMIT: Duration = Duration::from_millis(1_500);

/// How long a proposal may wait for its commit before its outcome is
/// reported unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this node is the leader and has heard from a majority recently.
pub fn leader_with_quorum(raft: &crate::types::Raft) -> Result<(), ForwardError> {
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        let leader = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|m| (id, m.clone()))
        });
        return Err(ForwardError::NotLeader { leader });
    }
    // A single-voter cluster has no one to hear from.
    let voters = metrics.membership_config.membership().voter_ids().count();
    // A leader this long without a majority would have been replaced by
    // now if the others could hear each other: it refuses instead of
    // proposing into the void. Never below the election timeout, which the
    // operator sized for this network and these machines.
    let limit = QUORUM_ACK_LIMIT.max(Duration::from_millis(raft.config().election_timeout_max));
    match metrics.millis_since_quorum_ack {
        Some(ms) if Duration::from_millis(ms) <= limit => Ok(()),
        _ if voters <= 1 => Ok(()),
        _ => Err(ForwardError::NoQuorum),
    }
}

/// Proposes a write on the leader and waits for its outcome.
pub async fn leader_write(raft: &crate::types::Raft, proposal: Proposal) -> ForwardWriteReply {
    leader_with_quorum(raft)?;
    match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(proposal)).await {
        Ok(Ok(response)) => Ok((response.log_id, response.data)),
        // openraft answers this both before appending and for an entry a
        // newer leader truncated; the second may still be committed.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ForwardError::MaybeProposed {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        Err(_) => Err(ForwardError::UnknownOutcome),
    }
}

/// How long the leader may take to confirm it still leads a majority.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);

/// The log id a linearizable read must wait for, confirmed by a majority.
pub async fn leader_read_index(raft: &crate::types::Raft) -> ReadIndexReply {
    leader_with_quorum(raft)?;
    match tokio::time::timeout(READ_INDEX_TIMEOUT, raft.get_read_log_id()).await {
        Ok(Ok((read_log_id, _applied))) => Ok(read_log_id),
        Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(ForwardError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(ForwardError::NoQuorum)
        }
        Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        Err(_) => Err(ForwardError::NoQuorum),
    }
}

/// Executes one membership change on the leader.
pub async fn leader_change_membership(
    raft: &crate::types::Raft,
    change: MembershipChange,
) -> MembershipReply {
    leader_with_quorum(raft)?;
    let done = match change {
        MembershipChange::AddLearner { raft_id, member } => {
            tokio::time::timeout(CATCH_UP_TIMEOUT, raft.add_learner(raft_id, member, true)).await
        }
        MembershipChange::Promote { raft_id } => {
            let ids: std::collections::BTreeSet<RaftId> = [raft_id].into();
            tokio::time::timeout(
                WRITE_TIMEOUT,
                raft.change_membership(openraft::ChangeMembers::AddVoterIds(ids), false),
            )
            .await
        }
        MembershipChange::Remove { raft_id } => {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let is_voter = membership.voter_ids().any(|id| id == raft_id);
            let ids: std::collections::BTreeSet<RaftId> = [raft_id].into();
            let change = if is_voter {
                openraft::ChangeMembers::RemoveVoters(ids)
            } else {
                openraft::ChangeMembers::RemoveNodes(ids)
            };
            tokio::time::timeout(WRITE_TIMEOUT, raft.change_membership(change, false)).await
        }
    };
    match done {
        Ok(Ok(response)) => Ok(response.log_id),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ForwardError::MaybeProposed {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        Err(_) => Err(ForwardError::UnknownOutcome),
    }
}

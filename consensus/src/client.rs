//! Writes and linearizable reads from any member.
//!
//! openraft 0.9 accepts writes and confirms reads only on the leader. A
//! follower forwards a write to the leader it knows and asks it for a read
//! index, then waits until its own state machine has applied that far
//! before it reads locally (etcd's ReadIndex). A write is re-sent only when
//! it certainly was not proposed (the receiver was not the leader, or could
//! not be reached at all); once it may have been proposed, a missing answer
//! is `UnknownOutcome` and the daemon never retries it: the client may, with
//! the same request id, and it is applied once.

use crate::command::{Outcome, Proposal};
use crate::network::{
    leader_change_membership, leader_read_index, leader_write, ForwardError, MembershipChange,
    RaftTransport, RpcKind, TransportError,
};
use crate::types::{LogId, Member, Raft, RaftId};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::{Duration, Instant};

/// How a read may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// As of a moment between the request and the answer (read index).
    #[default]
    Linearizable,
    /// Whatever this node has applied; possibly stale.
    Local,
}

/// Why a request was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("the write may or may not have been applied (no answer within {0:?}); retry with the same request_id to be sure it is applied once")]
    UnknownOutcome(Duration),
    #[error("this node is not a member of a cluster (steep-repl cluster init, or cluster add from a member)")]
    NotAMember,
    #[error("{0}")]
    Failed(String),
}

/// How often a request looks again for a leader while there is none.
const LEADER_POLL: Duration = Duration::from_millis(50);

/// Sends writes and read-index requests where they must go.
#[derive(Clone)]
pub struct ClusterClient<T> {
    raft: Raft,
    transport: T,
}

impl<T: RaftTransport> ClusterClient<T> {
    pub fn new(raft: Raft, transport: T) -> Self {
        ClusterClient { raft, transport }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The leader as this node knows it, with its member data.
    fn leader(&self) -> Option<(RaftId, Member, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member, id == m.id))
    }

    fn is_member(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config.membership().get_node(&m.id).is_some()
    }

    /// Proposes a write and returns its log id and outcome.
    pub async fn write(
        &self,
        proposal: Proposal,
        timeout: Duration,
    ) -> Result<(LogId, Outcome), ClientError> {
        let payload = encode(&proposal)?;
        self.on_leader(RpcKind::ForwardWrite, payload, timeout, || {
            leader_write(&self.raft, proposal.clone())
        })
        .await
    }

    /// Runs one membership change on the leader, wherever it is.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<LogId, ClientError> {
        let payload = encode(&change)?;
        self.on_leader(RpcKind::ForwardMembership, payload, timeout, || {
            leader_change_membership(&self.raft, change.clone())
        })
        .await
    }

    /// Waits until this node's state machine may answer a read with the
    /// asked consistency; the caller then reads its local state.
    pub async fn read_barrier(
        &self,
        consistency: Consistency,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        if consistency == Consistency::Local {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let read_log_id: Option<LogId> = self
            .on_leader(RpcKind::ReadIndex, Vec::new(), timeout, || {
                leader_read_index(&self.raft)
            })
            .await
            .map_err(|e| match e {
                // A read changes nothing: an unanswered one simply failed.
                ClientError::UnknownOutcome(_) => {
                    ClientError::NoQuorum("no leader confirmed a read index in time".into())
                }
                other => other,
            })?;
        let Some(read_log_id) = read_log_id else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(read_log_id.index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| {
                ClientError::NoQuorum(format!(
                    "this node did not apply up to index {} in time",
                    read_log_id.index
                ))
            })
    }

    /// Runs a request on the leader: locally with `local` when this node
    /// leads, otherwise forwarded as `kind`. It is sent again only while it
    /// certainly was not acted on (the receiver was not the leader, or was
    /// not reached at all).
    async fn on_leader<R, F, Fut>(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
        local: F,
    ) -> Result<R, ClientError>
    where
        R: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<R, ForwardError>>,
    {
        let deadline = Instant::now() + timeout;
        // Once the request may have been appended somewhere, no later
        // failure can say it was not applied.
        let mut maybe_proposed = false;
        let no_quorum = |maybe_proposed: bool, why: &str| {
            if maybe_proposed {
                ClientError::UnknownOutcome(timeout)
            } else {
                ClientError::NoQuorum(why.to_string())
            }
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_quorum(
                    maybe_proposed,
                    "no leader could be reached in time",
                ));
            }
            let reply: Result<R, ForwardError> = match self.leader() {
                None => {
                    if !self.is_member() {
                        return Err(ClientError::NotAMember);
                    }
                    tokio::time::sleep(LEADER_POLL.min(left)).await;
                    continue;
                }
                Some((_, _, true)) => match tokio::time::timeout(left, local()).await {
                    Ok(reply) => reply,
                    Err(_) => return Err(ClientError::UnknownOutcome(timeout)),
                },
                Some((id, member, false)) => {
                    match self
                        .transport
                        .call(id, &member, kind, payload.clone(), left)
                        .await
                    {
                        Ok(bytes) => serde_json::from_slice(&bytes)
                            .map_err(|e| ClientError::Failed(format!("leader's answer: {e}")))?,
                        // Never delivered: the leader may have changed.
                        Err(TransportError::Unreachable(_)) | Err(TransportError::Refused(_)) => {
                            tokio::time::sleep(LEADER_POLL.min(left)).await;
                            continue;
                        }
                        Err(TransportError::Timeout(_)) => {
                            return Err(ClientError::UnknownOutcome(timeout))
                        }
                    }
                }
            };
            match reply {
                Ok(done) => return Ok(done),
                // Not acted on anywhere: look for the leader again.
                Err(ForwardError::NotLeader { .. }) => {
                    tokio::time::sleep(LEADER_POLL.min(left)).await;
                }
                // Sent again with the same request id: applied once.
                Err(ForwardError::MaybeProposed { .. }) => {
                    maybe_proposed = true;
                    tokio::time::sleep(LEADER_POLL.min(left)).await;
                }
                Err(ForwardError::NoQuorum) => {
                    return Err(no_quorum(
                        maybe_proposed,
                        "the leader cannot reach a majority of the members",
                    ))
                }
                Err(ForwardError::UnknownOutcome) => {
                    return Err(ClientError::UnknownOutcome(timeout))
                }
                Err(ForwardError::Failed(_)) if maybe_proposed => {
                    return Err(ClientError::UnknownOutcome(timeout))
                }
                Err(ForwardError::Failed(e)) => return Err(ClientError::Failed(e)),
            }
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Failed(e.to_string()))
}

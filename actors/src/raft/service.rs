//! The `steep.repl.v1.Raft` service: what members send this node.
//!
//! Every message is judged by `steep_repl_consensus::admission` before Raft
//! sees it: the cluster id, the Raft id it is meant for, the certificate
//! that must name the sender, and the membership that must hold the sender
//! under that Raft id. A refusal answers PERMISSION_DENIED, is logged with
//! the peer's address and audited as `peer.auth_failed` (rate-limited per
//! address like every authentication failure).

use super::node::ClusterNode;
use crate::grpc::auth_failures::AuthFailures;
use crate::peer_tls::PeerInfo;
use std::sync::Arc;
use steep_repl_consensus::admission::{admit, Envelope, Receiver};
use steep_repl_consensus::network::{serve, RpcKind};
use steep_repl_proto::raft_server::Raft as RaftApi;
use steep_repl_proto::{JoinReply, JoinRequest, RaftMessage, RaftReply};
use tonic::{Request, Response, Status};

pub struct RaftService {
    pub node: ClusterNode,
    pub auth_failures: Arc<AuthFailures>,
}

impl RaftService {
    /// The certificate names of the caller; `None` on plaintext gRPC.
    fn cert_names<T>(request: &Request<T>) -> Option<Vec<String>> {
        let info = PeerInfo::from_request(request)?;
        let identity = info.identity.as_ref()?;
        Some(identity.names().collect())
    }

    fn refuse<T>(
        &self,
        request: &Request<T>,
        kind: &'static str,
        claimed: &str,
        reason: String,
    ) -> Status {
        if let Some(info) = PeerInfo::from_request(request) {
            self.auth_failures
                .record(info.remote_addr.ip(), kind, Some(claimed), &reason);
        }
        Status::permission_denied(reason)
    }
}

#[tonic::async_trait]
impl RaftApi for RaftService {
    async fn call(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let names = Self::cert_names(&request);
        let message = request.get_ref();
        let envelope = Envelope {
            cluster_id: message.cluster_id.clone(),
            from_node_id: message.from_node_id.clone(),
            from_raft_id: message.from_raft_id,
            to_raft_id: message.to_raft_id,
        };
        let identity = self.node.identity();
        let members = self.node.members();
        let receiver = Receiver {
            raft_id: identity.raft_id,
            cluster_id: identity.cluster_id.as_deref(),
            members: &members,
        };
        if let Err(refusal) = admit(&envelope, names.as_deref(), &receiver) {
            let claimed = envelope.from_node_id.clone();
            return Err(self.refuse(
                &request,
                refusal.kind(),
                &claimed,
                format!("raft message refused: {refusal}"),
            ));
        }
        let Some(kind) = RpcKind::parse(&message.kind) else {
            return Err(Status::invalid_argument(format!(
                "unknown raft message kind {:?}",
                message.kind
            )));
        };
        let payload = serve(self.node.raft(), kind, &message.payload)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let join = request.get_ref().clone();
        if let Some(names) = Self::cert_names(&request) {
            if !names.iter().any(|n| n == &join.from_node_id) {
                let reason = format!(
                    "join refused: the caller claims node_id {:?} but its certificate names {names:?}",
                    join.from_node_id
                );
                return Err(self.refuse(&request, "identity", &join.from_node_id, reason));
            }
        }
        let (raft_id, witness) = self
            .node
            .accept_join(&join.from_node_id, &join.cluster_id, &join.node_id)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(JoinReply {
            raft_id,
            node_id: self.node.settings().node_id.clone(),
            witness,
        }))
    }
}

//! The `steep.repl.v1.Coordinator` service: what peers and tools ask this
//! node (wire-compatible with the first release).
//!
//! Every request that names a node is checked against the caller's
//! certificate (CN or SAN must be that node_id); a mismatch is refused,
//! logged and audited as `peer.auth_failed`. Answers come from the health
//! snapshot (HealthCheck; the coordinator and its epoch as this node may
//! name them at that instant) or from the registry through the `Db` handle.
//! Membership is Raft's now: RegisterNode registers nothing and names the
//! command that does, and no answer carries node lists for discovery.

use super::auth_failures::AuthFailures;
use super::convert::{health_check, node_info};
use super::inbound;
use super::{GrpcPeerActor, PeerReported};
use crate::db::{Db, DbError};
use crate::health_state::SharedHealth;
use crate::node_status::NodeStatus;
use crate::peer_tls::PeerInfo;
use actix::Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_proto::coordinator_server::Coordinator;
use steep_repl_proto::{
    GetNodesRequest, GetNodesResponse, HealthCheckRequest, HealthCheckResponse, HeartbeatRequest,
    HeartbeatResponse, NodeInfo, RegisterNodeRequest, RegisterNodeResponse,
};
use tonic::{Request, Response, Status};

pub struct CoordinatorService {
    pub(super) health: SharedHealth,
    pub(super) db: Db,
    pub(super) peers: Addr<GrpcPeerActor>,
    pub(super) auth_failures: Arc<AuthFailures>,
    /// PostgreSQL's bound on a request's queries: the request timeout, so
    /// that a request the server gave up on leaves nothing running.
    pub(super) db_timeout: Duration,
}

impl CoordinatorService {
    /// Refuses (and reports) a request whose claimed node_id is not the
    /// caller's certificate identity.
    fn check_claim<T>(&self, request: &Request<T>, claimed: &str) -> Result<(), Status> {
        if claimed.is_empty() {
            return Err(Status::invalid_argument("node_id is required"));
        }
        let Some(info) = PeerInfo::from_request(request) else {
            return Ok(());
        };
        info.verify_claim(claimed).map_err(|mismatch| {
            self.auth_failures.record(
                info.remote_addr.ip(),
                "identity",
                Some(claimed),
                &mismatch.to_string(),
            );
            Status::from(mismatch)
        })
    }

    async fn nodes(&self, status_filter: Vec<NodeStatus>) -> Result<Vec<NodeInfo>, Status> {
        let rows = self.db.list_nodes(&status_filter, self.db_timeout).await?;
        let node = self.health.load().node.clone();
        Ok(rows.iter().map(|row| node_info(row, &node)).collect())
    }

    /// The coordinator and its epoch as this node may name them now
    /// (empty and 0: none known).
    fn coordinator(&self) -> (String, u64) {
        let node = self.health.load().node.clone();
        (
            node.coordinator_id.unwrap_or_default(),
            node.epoch.unwrap_or(0),
        )
    }
}

/// What RegisterNode answers: membership is decided by Raft.
pub const REGISTER_REFUSED: &str = "nodes join the cluster by Raft membership now: run `steep-repl cluster add NODE_ID --grpc HOST:PORT` on a member (see docs/operations.md)";

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let snapshot = self.health.load();
        Ok(Response::new(health_check(
            &snapshot,
            Instant::now(),
            self.health.stale_after,
        )))
    }

    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        inbound::register_node(request.get_ref())?;
        self.check_claim(&request, &request.get_ref().node_id)?;
        let (coordinator_id, coordinator_epoch) = self.coordinator();
        Ok(Response::new(RegisterNodeResponse {
            success: false,
            error: REGISTER_REFUSED.into(),
            nodes: Vec::new(),
            coordinator_id,
            coordinator_epoch,
        }))
    }

    async fn get_nodes(
        &self,
        request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let filter = inbound::status_filter(request.get_ref())?;
        let nodes = self.nodes(filter).await?;
        let (coordinator_id, coordinator_epoch) = self.coordinator();
        Ok(Response::new(GetNodesResponse {
            nodes,
            coordinator_id,
            coordinator_epoch,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let beat = inbound::heartbeat(request.get_ref())?;
        self.check_claim(&request, &beat.node_id)?;
        if let Some(status) = &beat.status {
            self.peers.do_send(PeerReported {
                node_id: beat.node_id.clone(),
                postgresql_connected: status.postgresql_connected,
            });
        }
        // Kept for operators reading the registry: when a peer last beat.
        // Without its PostgreSQL this node still answers (its own beats
        // report the database down so that its peers mark it degraded).
        match self.db.touch_peer(&beat.node_id, self.db_timeout).await {
            Ok(_) | Err(DbError::NotConnected(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let (coordinator_id, coordinator_epoch) = self.coordinator();
        Ok(Response::new(HeartbeatResponse {
            acknowledged: true,
            coordinator_id,
            updated_nodes: Vec::new(),
            coordinator_epoch,
        }))
    }
}

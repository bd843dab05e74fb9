//! The `steep.repl.v1.Coordinator` service: what peers ask this node.
//!
//! Every request that names a node is checked against the caller's
//! certificate (CN or SAN must be that node_id); a mismatch is refused,
//! logged and audited as `peer.auth_failed`. Answers come from the cached
//! health (HealthCheck) or from the registry through the DbActor.

use super::auth_failures::AuthFailures;
use super::convert::{health_check, node_info, upsert_from_info};
use super::{GrpcPeerActor, PeerAnnounced, PeerReported};
use crate::db::{DbActor, DbError, ListNodes, TouchPeer};
use crate::health_state::SharedHealth;
use crate::peer_tls::PeerInfo;
use actix::Addr;
use std::sync::Arc;
use std::time::Instant;
use steep_repl_proto::coordinator_server::Coordinator;
use steep_repl_proto::{
    GetNodesRequest, GetNodesResponse, HealthCheckRequest, HealthCheckResponse, HeartbeatRequest,
    HeartbeatResponse, NodeInfo, RegisterNodeRequest, RegisterNodeResponse,
};
use tonic::{Request, Response, Status};

pub struct CoordinatorService {
    pub(super) health: SharedHealth,
    pub(super) db: Addr<DbActor>,
    pub(super) peers: Addr<GrpcPeerActor>,
    pub(super) auth_failures: Arc<AuthFailures>,
}

fn db_status(e: DbError) -> Status {
    match e {
        DbError::NotConnected(reason) => {
            Status::unavailable(format!("this node's PostgreSQL is not available: {reason}"))
        }
        DbError::Query(reason) => Status::internal(reason),
    }
}

fn mailbox(e: actix::MailboxError) -> Status {
    Status::unavailable(format!("the daemon is stopping: {e}"))
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

    async fn nodes(&self, status_filter: Vec<String>) -> Result<Vec<NodeInfo>, Status> {
        let rows = self
            .db
            .send(ListNodes { status_filter })
            .await
            .map_err(mailbox)?
            .map_err(db_status)?;
        Ok(rows.iter().map(node_info).collect())
    }

    fn coordinator_id(&self) -> String {
        self.health
            .load()
            .node
            .coordinator_id
            .clone()
            .unwrap_or_default()
    }
}

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
        let req = request.get_ref();
        self.check_claim(&request, &req.node_id)?;
        let info = NodeInfo {
            node_id: req.node_id.clone(),
            node_name: req.node_name.clone(),
            host: req.host.clone(),
            port: req.port,
            priority: req.priority,
            grpc_host: req.grpc_host.clone(),
            grpc_port: req.grpc_port,
            ..Default::default()
        };
        let Some(upsert) = upsert_from_info(&info) else {
            return Ok(Response::new(RegisterNodeResponse {
                success: false,
                error: "invalid registration: node_id and host are required, port 1-65535, priority 1-100".into(),
                nodes: Vec::new(),
                coordinator_id: self.coordinator_id(),
            }));
        };
        let result = self.db.send(upsert.clone()).await.map_err(mailbox)?;
        if let Err(e) = result {
            return Ok(Response::new(RegisterNodeResponse {
                success: false,
                error: e.to_string(),
                nodes: Vec::new(),
                coordinator_id: self.coordinator_id(),
            }));
        }
        // Talk back to whoever registers, so both sides heartbeat each other.
        self.peers.do_send(PeerAnnounced(vec![info]));
        let nodes = self.nodes(Vec::new()).await?;
        Ok(Response::new(RegisterNodeResponse {
            success: true,
            error: String::new(),
            nodes,
            coordinator_id: self.coordinator_id(),
        }))
    }

    async fn get_nodes(
        &self,
        request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let filter = request.into_inner().status_filter;
        let nodes = self.nodes(filter).await?;
        Ok(Response::new(GetNodesResponse {
            nodes,
            coordinator_id: self.coordinator_id(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.get_ref();
        self.check_claim(&request, &req.node_id)?;
        if let Some(status) = &req.node_status {
            self.peers.do_send(PeerReported {
                node_id: req.node_id.clone(),
                postgresql_connected: status.postgresql_connected,
            });
        }
        // Unknown senders are told so (acknowledged: false) and register.
        let touched = self
            .db
            .send(TouchPeer {
                node_id: req.node_id.clone(),
            })
            .await
            .map_err(mailbox)?;
        let known = match touched {
            Ok(known) => known,
            // Without its PostgreSQL this node is still alive and answers:
            // an error here would make the sender count it unreachable,
            // while its own heartbeats report the database down so that its
            // peers mark it degraded (SPEC: degraded when a peer "reports
            // its PostgreSQL down"). Whether it knows the sender cannot be
            // read now, and asking it to register again would fail the same
            // way, so the beat is acknowledged without a node list.
            Err(DbError::NotConnected(_)) => {
                return Ok(Response::new(HeartbeatResponse {
                    acknowledged: true,
                    coordinator_id: self.coordinator_id(),
                    updated_nodes: Vec::new(),
                }))
            }
            Err(e) => return Err(db_status(e)),
        };
        let updated_nodes = if known {
            self.nodes(Vec::new()).await?
        } else {
            Vec::new()
        };
        Ok(Response::new(HeartbeatResponse {
            acknowledged: known,
            coordinator_id: self.coordinator_id(),
            updated_nodes,
        }))
    }
}

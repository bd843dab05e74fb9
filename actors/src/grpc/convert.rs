//! Conversions between registry rows, health snapshots, database errors
//! and the `steep.repl.v1` wire types.

use crate::db::queries::NodeRow;
use crate::db::DbError;
use crate::health_report::health_report;
use crate::health_state::{HealthSnapshot, NodeView};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use steep_repl_proto::health_check_response::ServingStatus;
use steep_repl_proto::{ComponentHealth, HealthCheckResponse, NodeInfo};

/// How a failed query reaches a gRPC caller (the one mapping for every
/// method).
impl From<DbError> for tonic::Status {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotConnected(reason) => tonic::Status::unavailable(format!(
                "this node's PostgreSQL is not available: {reason}"
            )),
            DbError::Query(reason) => tonic::Status::internal(reason),
        }
    }
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A registry row on the wire. Whether it is the coordinator comes from
/// `node` (this node's live answer), not from the row, which is a
/// projection and may be stale.
pub fn node_info(row: &NodeRow, node: &NodeView) -> NodeInfo {
    let is_coordinator = node.coordinator_id.as_deref() == Some(row.node_id.as_str());
    NodeInfo {
        node_id: row.node_id.clone(),
        node_name: row.node_name.clone(),
        host: row.host.clone(),
        port: row.port,
        priority: row.priority,
        is_coordinator,
        last_seen: row.last_seen.map(timestamp),
        status: row.status.as_str().to_string(),
        grpc_host: row.grpc_host.clone().unwrap_or_default(),
        grpc_port: row.grpc_port.unwrap_or(0),
        coordinator_epoch: if is_coordinator {
            node.epoch.unwrap_or(0)
        } else {
            0
        },
        role: row.role.clone().unwrap_or_default(),
    }
}

/// The Coordinator HealthCheck answer, from the cached snapshot.
pub fn health_check(
    s: &HealthSnapshot,
    now: Instant,
    stale_after: Duration,
) -> HealthCheckResponse {
    let report = health_report(s, now, stale_after);
    let components = report
        .components
        .iter()
        .map(|(name, c)| {
            (
                name.to_string(),
                ComponentHealth {
                    healthy: c.healthy,
                    status: c.status.clone(),
                    message: c.error.clone().unwrap_or_default(),
                },
            )
        })
        .collect();
    HealthCheckResponse {
        status: if report.healthy() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        } as i32,
        components,
        node_id: s.node.node_id.clone(),
        node_name: s.node.node_name.clone(),
        version: s.version.clone(),
        uptime_since: Some(timestamp(s.started_at)),
        coordinator_id: s.node.coordinator_id.clone().unwrap_or_default(),
        coordinator_epoch: s.node.epoch.unwrap_or(0),
        witness: s.node.witness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_status::NodeStatus;

    fn row(node_id: &str, is_coordinator: bool) -> NodeRow {
        NodeRow {
            node_id: node_id.into(),
            node_name: node_id.into(),
            host: "db".into(),
            port: 5432,
            priority: 50,
            is_coordinator,
            last_seen: None,
            status: NodeStatus::Healthy,
            grpc_host: None,
            grpc_port: None,
            role: Some("data".into()),
            coordinator_epoch: None,
        }
    }

    #[test]
    fn the_coordinator_flag_comes_from_the_live_answer_not_the_stale_row() {
        let view = NodeView {
            coordinator_id: Some("b".into()),
            epoch: Some(7),
            ..Default::default()
        };
        // The projection still says a.
        let a = node_info(&row("a", true), &view);
        assert!(!a.is_coordinator);
        assert_eq!(a.coordinator_epoch, 0);
        let b = node_info(&row("b", false), &view);
        assert!(b.is_coordinator);
        assert_eq!(b.coordinator_epoch, 7);
        assert_eq!(b.role, "data");
    }
}

//! Conversions between registry rows, health snapshots and the
//! `steep.repl.v1` wire types.

use crate::db::queries::NodeRow;
use crate::db::UpsertPeer;
use crate::health_report::health_report;
use crate::health_state::HealthSnapshot;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use steep_repl_proto::health_check_response::ServingStatus;
use steep_repl_proto::{ComponentHealth, HealthCheckResponse, NodeInfo};

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn node_info(row: &NodeRow) -> NodeInfo {
    NodeInfo {
        node_id: row.node_id.clone(),
        node_name: row.node_name.clone(),
        host: row.host.clone(),
        port: row.port,
        priority: row.priority,
        is_coordinator: row.is_coordinator,
        last_seen: row.last_seen.map(timestamp),
        status: row.status.clone(),
        grpc_host: row.grpc_host.clone().unwrap_or_default(),
        grpc_port: row.grpc_port.unwrap_or(0),
    }
}

/// A node another daemon told us about, as a registry upsert; `None` when
/// the message does not describe a usable node.
pub fn upsert_from_info(info: &NodeInfo) -> Option<UpsertPeer> {
    let port = u16::try_from(info.port).ok().filter(|p| *p > 0)?;
    let priority = u8::try_from(info.priority)
        .ok()
        .filter(|p| (1..=100).contains(p))?;
    if info.node_id.is_empty() || info.host.is_empty() {
        return None;
    }
    let grpc_port = u16::try_from(info.grpc_port).ok().filter(|p| *p > 0);
    Some(UpsertPeer {
        node_id: info.node_id.clone(),
        node_name: if info.node_name.is_empty() {
            info.node_id.clone()
        } else {
            info.node_name.clone()
        },
        host: info.host.clone(),
        port,
        priority,
        grpc_host: Some(info.grpc_host.clone()).filter(|h| !h.is_empty() && grpc_port.is_some()),
        grpc_port: grpc_port.filter(|_| !info.grpc_host.is_empty()),
    })
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            node_id: "b".into(),
            node_name: "".into(),
            host: "db-b".into(),
            port: 5432,
            priority: 60,
            grpc_host: "10.0.0.2".into(),
            grpc_port: 5433,
            ..Default::default()
        }
    }

    #[test]
    fn a_described_node_becomes_an_upsert_with_its_grpc_address() {
        let upsert = upsert_from_info(&info()).unwrap();
        assert_eq!(upsert.node_name, "b");
        assert_eq!(
            (upsert.grpc_host.as_deref(), upsert.grpc_port),
            (Some("10.0.0.2"), Some(5433))
        );
    }

    #[test]
    fn nonsense_from_the_wire_is_ignored() {
        let mut bad = info();
        bad.port = 70000;
        assert!(upsert_from_info(&bad).is_none());
        let mut bad = info();
        bad.priority = 0;
        assert!(upsert_from_info(&bad).is_none());
        let mut no_grpc = info();
        no_grpc.grpc_port = 0;
        let upsert = upsert_from_info(&no_grpc).unwrap();
        assert_eq!((upsert.grpc_host, upsert.grpc_port), (None, None));
    }
}

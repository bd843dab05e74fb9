//! The JSON documents built from the cached health: the `/health` body
//! (also IPC `health.check`) and IPC `status.get`. One place, so that HTTP,
//! IPC and gRPC always tell the same story.
//!
//! Conventions (a contract with the Steep TUI): timestamps are RFC 3339 in
//! UTC, durations whole seconds, absent values `null`, never "".

use crate::health_state::{ClusterMetrics, DbPhase, HealthSnapshot, ListenerHealth, PgVerdict};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One component in `/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentReport {
    pub healthy: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeReport {
    pub node_id: String,
    pub node_name: String,
    /// This node holds a valid coordinator lease at this instant. (It and
    /// `role` may be absent from a peer's body built from its gRPC
    /// HealthCheck, which carries neither: `steep-repl health --remote`.)
    #[serde(default)]
    pub is_coordinator: bool,
    /// The coordinator this node names now (`null`: none known).
    pub coordinator_id: Option<String>,
    /// Its epoch; fence on it (ignore anything from a lower epoch).
    pub epoch: Option<u64>,
    /// `data`, or `witness` (votes, no PostgreSQL, never coordinator).
    #[serde(default)]
    pub role: Cow<'static, str>,
}

/// The `/health` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    /// `healthy` or `unhealthy`.
    pub status: Cow<'static, str>,
    pub components: BTreeMap<Cow<'static, str>, ComponentReport>,
    pub node: NodeReport,
    pub uptime_seconds: u64,
    pub version: String,
    /// This node's view of the Raft cluster (local faces only: IPC and
    /// `steep-repl health`), absent without a cluster member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftReport>,
}

/// What `/health` shows instead of an error text (`http.details: false`).
pub const HIDDEN_ERROR: &str = "details on the node: `steep-repl health` (or http.details: true)";

/// The Raft view in a health report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RaftReport {
    /// A caught-up member of a cluster.
    pub ready: bool,
    /// Why it is not, when it is not.
    pub reason: Option<String>,
    pub is_leader: bool,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// On the leader: how long since a majority last answered, in ms.
    pub quorum_ack_ms: Option<u64>,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.status == "healthy"
    }

    /// Replaces each component's error text by a pointer to the local
    /// faces: over the network a probe shows states, not the connection
    /// details (user, database, pg_hba lines) an error may carry.
    pub fn hide_errors(&mut self) {
        for c in self.components.values_mut() {
            if c.error.is_some() {
                c.error = Some(HIDDEN_ERROR.to_string());
            }
        }
    }

    /// The same report with the Raft view of `metrics` (when there is a
    /// cluster member).
    pub fn with_raft(mut self, s: &HealthSnapshot, metrics: Option<ClusterMetrics>) -> Self {
        self.raft = metrics.map(|m| RaftReport {
            ready: s.node.cluster_unready.is_none(),
            reason: s.node.cluster_unready.clone(),
            is_leader: m.is_leader,
            leader: m.leader,
            term: m.term,
            last_log_index: m.last_log_index,
            commit_index: m.commit_index,
            applied_index: m.applied_index,
            quorum_ack_ms: m
                .quorum_ack_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        self
    }
}

fn listener_report(listener: &ListenerHealth) -> ComponentReport {
    let status = match (listener.enabled, listener.listening) {
        (false, _) => "disabled",
        (true, true) => "listening",
        (true, false) => "not_listening",
    };
    ComponentReport {
        healthy: listener.ok(),
        status: status.to_string(),
        version: None,
        port: listener.port,
        latency_ms: None,
        error: listener.error.clone(),
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Builds the `/health` body from a snapshot at `now`.
pub fn health_report(s: &HealthSnapshot, now: Instant, stale_after: Duration) -> HealthReport {
    let pg = &s.postgresql;
    let verdict = s.postgres_verdict(now, stale_after);
    let pg_report = ComponentReport {
        healthy: verdict == PgVerdict::Usable,
        status: match (&verdict, pg.phase) {
            (PgVerdict::Unusable(_), DbPhase::Connected) => "stale".to_string(),
            (_, phase) => phase.as_str().to_string(),
        },
        version: pg.server_version.clone(),
        port: Some(pg.port),
        latency_ms: pg.latency.map(round_ms),
        error: match verdict {
            PgVerdict::Usable => None,
            PgVerdict::Unusable(reason) => Some(reason),
        },
    };
    let audit = &s.audit;
    let audit_report = ComponentReport {
        healthy: audit.last_error.is_none(),
        status: if audit.queue_depth == 0 {
            "idle".to_string()
        } else {
            "queued".to_string()
        },
        version: None,
        port: None,
        latency_ms: None,
        error: audit.last_error.clone(),
    };
    let mut components = BTreeMap::new();
    components.insert("postgresql".into(), pg_report);
    components.insert("grpc".into(), listener_report(&s.grpc));
    components.insert("ipc".into(), listener_report(&s.ipc));
    components.insert("http".into(), listener_report(&s.http));
    components.insert("audit".into(), audit_report);
    HealthReport {
        status: if s.is_healthy(now, stale_after) {
            "healthy".into()
        } else {
            "unhealthy".into()
        },
        components,
        node: NodeReport {
            node_id: s.node.node_id.clone(),
            node_name: s.node.node_name.clone(),
            is_coordinator: s.node.is_coordinator(),
            coordinator_id: s.node.coordinator_id.clone(),
            epoch: s.node.epoch,
            role: s.node.role().into(),
        },
        uptime_seconds: s.uptime_seconds(now),
        version: s.version.clone(),
        raft: None,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostgresStatus {
    pub connected: bool,
    pub version: Option<String>,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrpcStatus {
    pub listening: bool,
    pub port: Option<u16>,
    pub tls_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatusReport {
    pub node_id: String,
    pub node_name: String,
    pub is_coordinator: bool,
    pub cluster_size: usize,
    /// The coordinator this node names now (`null`: none known).
    pub coordinator_id: Option<String>,
    /// Its epoch; fence on it.
    pub epoch: Option<u64>,
    /// `data` or `witness`.
    pub role: Cow<'static, str>,
}

/// The IPC `status.get` result (field names are a contract with the TUI).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub state: Cow<'static, str>,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub start_time: String,
    pub version: String,
    pub postgresql: PostgresStatus,
    pub grpc: GrpcStatus,
    pub node: NodeStatusReport,
}

/// Builds the `status.get` result from a snapshot at `now`.
pub fn status_report(s: &HealthSnapshot, now: Instant) -> StatusReport {
    StatusReport {
        state: s.state.as_str().into(),
        pid: s.pid,
        uptime_seconds: s.uptime_seconds(now),
        start_time: s.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        version: s.version.clone(),
        postgresql: PostgresStatus {
            connected: s.postgresql.connected(),
            version: s.postgresql.server_version.clone(),
            host: s.postgresql.host.clone(),
            port: s.postgresql.port,
        },
        grpc: GrpcStatus {
            listening: s.grpc.listening,
            port: s.grpc.port,
            tls_enabled: s.grpc.tls,
        },
        node: NodeStatusReport {
            node_id: s.node.node_id.clone(),
            node_name: s.node.node_name.clone(),
            is_coordinator: s.node.is_coordinator(),
            cluster_size: s.node.cluster_size,
            coordinator_id: s.node.coordinator_id.clone(),
            epoch: s.node.epoch,
            role: s.node.role().into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_state::{DaemonState, PostgresHealth};
    use serde_json::json;

    fn snapshot() -> HealthSnapshot {
        let mut s = HealthSnapshot::starting(
            "0.1.0",
            "a",
            "Node A",
            PostgresHealth::new("db", 5432, "postgres"),
        );
        s.state = DaemonState::Running;
        s
    }

    #[test]
    fn health_names_every_component_and_why_postgres_is_down() {
        let mut s = snapshot();
        s.postgresql.error = Some("connection refused by db:5432".into());
        let report = health_report(&s, Instant::now(), Duration::from_secs(3));
        let body = serde_json::to_value(&report).unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["components"]["postgresql"]["healthy"], false);
        assert_eq!(body["components"]["postgresql"]["status"], "connecting");
        assert_eq!(
            body["components"]["postgresql"]["error"],
            "connection refused by db:5432"
        );
        assert_eq!(body["components"]["grpc"]["status"], "disabled");
        assert_eq!(
            body["node"],
            json!({"node_id": "a", "node_name": "Node A", "is_coordinator": false,
                   "coordinator_id": null, "epoch": null, "role": "data"})
        );
        assert_eq!(body["version"], "0.1.0");
    }

    #[test]
    fn a_connected_fresh_node_is_healthy_with_version_and_latency() {
        let mut s = snapshot();
        let now = Instant::now();
        s.postgresql.phase = DbPhase::Connected;
        s.postgresql.checked_at = Some(now);
        s.postgresql.server_version = Some("18.6".into());
        s.postgresql.latency = Some(Duration::from_micros(420));
        let body = serde_json::to_value(health_report(&s, now, Duration::from_secs(3))).unwrap();
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["components"]["postgresql"]["version"], "18.6");
        assert_eq!(body["components"]["postgresql"]["latency_ms"], 0.42);
        assert_eq!(
            body["components"]["postgresql"]["error"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn status_uses_the_documented_field_names_and_formats() {
        let s = snapshot();
        let body = serde_json::to_value(status_report(&s, Instant::now())).unwrap();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "grpc",
                "node",
                "pid",
                "postgresql",
                "start_time",
                "state",
                "uptime_seconds",
                "version"
            ]
        );
        assert_eq!(body["state"], "running");
        assert_eq!(body["postgresql"]["version"], serde_json::Value::Null);
        assert_eq!(
            body["grpc"],
            json!({"listening": false, "port": null, "tls_enabled": false})
        );
        assert_eq!(body["node"]["cluster_size"], 1);
        let start = body["start_time"].as_str().unwrap();
        assert!(start.ends_with('Z') && start.len() == 20, "{start}");
    }
}

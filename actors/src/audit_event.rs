//! The audit events the daemon records, and the actions of the audit
//! vocabulary shared with the extension (`steep_repl.audit_log.action`).
//!
//! An event gets its `event_id` when it is created, so that writing it from
//! the durable spool more than once (after a crash between the database
//! commit and the spool truncation) still stores it once.

use actix::Message;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use uuid::Uuid;

/// Every action the audit log knows (docs/operations.md, "The audit trail").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    NodeRegistered,
    NodeUpdated,
    NodeRemoved,
    NodeStatusChanged,
    CoordinatorElected,
    StateUpdated,
    DaemonStarted,
    DaemonStopped,
    PeerAuthFailed,
    ConfigChanged,
    AuditPruned,
    /// `cluster force-new` made this node the only member of a new cluster.
    ClusterForcedNew,
    /// A TLS certificate in use expires within `grpc.tls.expiry_warning`
    /// (success) or has expired (failure).
    TlsCertificateExpiring,
    /// The certificate files were read again on SIGHUP: put in use
    /// (success) or refused, the old ones staying in use (failure).
    TlsReloaded,
}

impl AuditAction {
    /// All actions, in the order the audit trail first listed them.
    pub const ALL: [AuditAction; 14] = [
        AuditAction::NodeRegistered,
        AuditAction::NodeUpdated,
        AuditAction::NodeRemoved,
        AuditAction::NodeStatusChanged,
        AuditAction::CoordinatorElected,
        AuditAction::StateUpdated,
        AuditAction::DaemonStarted,
        AuditAction::DaemonStopped,
        AuditAction::PeerAuthFailed,
        AuditAction::ConfigChanged,
        AuditAction::AuditPruned,
        AuditAction::ClusterForcedNew,
        AuditAction::TlsCertificateExpiring,
        AuditAction::TlsReloaded,
    ];

    /// The dotted name stored in `audit_log.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::NodeRegistered => "node.registered",
            AuditAction::NodeUpdated => "node.updated",
            AuditAction::NodeRemoved => "node.removed",
            AuditAction::NodeStatusChanged => "node.status_changed",
            AuditAction::CoordinatorElected => "coordinator.elected",
            AuditAction::StateUpdated => "state.updated",
            AuditAction::DaemonStarted => "daemon.started",
            AuditAction::DaemonStopped => "daemon.stopped",
            AuditAction::PeerAuthFailed => "peer.auth_failed",
            AuditAction::ConfigChanged => "config.changed",
            AuditAction::AuditPruned => "audit.pruned",
            AuditAction::ClusterForcedNew => "cluster.forced_new",
            AuditAction::TlsCertificateExpiring => "tls.certificate_expiring",
            AuditAction::TlsReloaded => "tls.reloaded",
        }
    }

    /// The action with this dotted name, if it is one of ours.
    pub fn parse(name: &str) -> Option<AuditAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event raised by the daemon. Sent to the AuditActor, which
/// spools it durably and writes it to `steep_repl.audit_log` in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
pub struct AuditEvent {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl AuditEvent {
    /// A successful event of `action` happening now.
    pub fn new(action: AuditAction) -> Self {
        AuditEvent {
            event_id: Uuid::new_v4(),
            occurred_at: Utc::now(),
            action: action.as_str().to_string(),
            target_type: None,
            target_id: None,
            old_value: None,
            new_value: None,
            client_ip: None,
            success: true,
            error_message: None,
        }
    }

    /// Sets what the event is about (`node`, `state` or `daemon`, and its id).
    pub fn target(mut self, target_type: &str, target_id: impl Into<String>) -> Self {
        self.target_type = Some(target_type.to_string());
        self.target_id = Some(target_id.into());
        self
    }

    /// Sets the value before the change.
    pub fn old_value(mut self, value: Value) -> Self {
        self.old_value = Some(value);
        self
    }

    /// Sets the value after the change.
    pub fn new_value(mut self, value: Value) -> Self {
        self.new_value = Some(value);
        self
    }

    /// Sets the address of the remote party (a peer, a client).
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Marks the event as a failed operation, with the reason.
    pub fn failed(mut self, error: impl Into<String>) -> Self {
        self.success = false;
        self.error_message = Some(error.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_action_round_trips_through_its_name() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(AuditAction::parse("node.exploded"), None);
    }

    #[test]
    fn an_event_serializes_to_one_json_line_and_back() {
        let event = AuditEvent::new(AuditAction::PeerAuthFailed)
            .target("node", "node-b")
            .client_ip("10.0.0.7".parse().unwrap())
            .new_value(json!({"claimed": "node-b"}))
            .failed("certificate signed by an unknown CA");
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains('\n'));
        let back: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, event);
        assert!(!back.success);
    }

    #[test]
    fn new_events_have_distinct_ids() {
        let a = AuditEvent::new(AuditAction::DaemonStarted);
        let b = AuditEvent::new(AuditAction::DaemonStarted);
        assert_ne!(a.event_id, b.event_id);
    }
}

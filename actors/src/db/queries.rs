//! The SQL the daemon runs against the `steep_repl` extension, and the rows
//! it reads back. Kept in one place so that a test can check every statement
//! against the extension's schema.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// PostgreSQL 18 is the first supported version.
pub const MIN_SERVER_VERSION_NUM: i32 = 180_000;

pub const SERVER_VERSION: &str =
    "SELECT current_setting('server_version_num')::int4, current_setting('server_version')";

/// Installed version of the extension in this database, if any, and
/// whether the server has it available at all.
pub const EXTENSION_STATE: &str = "SELECT \
       (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'steep_repl'), \
       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'steep_repl')";

pub const PING: &str = "SELECT 1";

pub const LIST_NODES: &str = "SELECT node_id, node_name, host, port, priority, is_coordinator, \
       last_seen, status, grpc_host, grpc_port, role \
     FROM steep_repl.nodes \
     WHERE cardinality($1::text[]) = 0 OR status = ANY($1::text[]) \
     ORDER BY node_id COLLATE \"C\"";

pub const GET_NODE: &str = "SELECT node_id, node_name, host, port, priority, is_coordinator, \
       last_seen, status, grpc_host, grpc_port, role \
     FROM steep_repl.nodes WHERE node_id = $1";

/// Audit page: filters are LIKE patterns (`node.%` for `node.*`); an empty
/// array means every action.
pub const QUERY_AUDIT: &str = "SELECT id, occurred_at, action, actor, target_type, target_id, \
       old_value, new_value, host(client_ip) AS client_ip, success, error_message \
     FROM steep_repl.audit_log \
     WHERE (cardinality($1::text[]) = 0 OR action LIKE ANY($1::text[])) \
       AND ($2::timestamptz IS NULL OR occurred_at >= $2) \
     ORDER BY occurred_at DESC, id DESC LIMIT $3 OFFSET $4";

/// The statement timeout of the current transaction only.
pub const SET_LOCAL_STATEMENT_TIMEOUT: &str = "SELECT set_config('statement_timeout', $1, true)";

pub const COUNT_AUDIT: &str = "SELECT count(*) FROM steep_repl.audit_log \
     WHERE (cardinality($1::text[]) = 0 OR action LIKE ANY($1::text[])) \
       AND ($2::timestamptz IS NULL OR occurred_at >= $2)";

/// One call for a whole batch, through the extension's function (the
/// daemon's role has no INSERT on audit_log): a replayed event (same
/// event_id) is skipped, which makes spool replays idempotent. The actor is
/// the connection's `steep_repl.actor`; the extension takes the id from its
/// sequence and keeps occurred_at at or before its own now().
pub const INSERT_AUDIT_BATCH: &str = "SELECT steep_repl.append_daemon_events( \
       $1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
       $6::text[]::jsonb[], $7::text[]::jsonb[], $8::text[]::inet[], $9::bool[], $10::text[])";

/// A peer's status as this node sees it. `offline` is an operator's
/// decision and is never overwritten; an unchanged status writes nothing.
/// Audited by the extension's trigger as node.status_changed. Answers
/// whether the node is in the registry (if not, the write is owed).
pub const SET_PEER_STATUS: &str = "SELECT steep_repl.record_peer_status($1, $2)";

/// A heartbeat from a peer: last_seen only (not audited). Answers whether
/// the node is in the registry.
pub const TOUCH_PEER: &str = "SELECT steep_repl.record_peer_seen($1)";

pub const PRUNE_AUDIT: &str = "SELECT steep_repl.prune_audit(make_interval(secs => $1))";

/// A row of `steep_repl.nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub node_name: String,
    pub host: String,
    pub port: i32,
    pub priority: i32,
    pub is_coordinator: bool,
    pub last_seen: Option<DateTime<Utc>>,
    pub status: String,
    pub grpc_host: Option<String>,
    pub grpc_port: Option<i32>,
    /// `data` or `witness` (`None`: not a member of the Raft cluster).
    pub role: Option<String>,
    /// With `is_coordinator`: the epoch under which it holds the role.
    #[sqlx(skip)]
    pub coordinator_epoch: Option<u64>,
}

impl NodeRow {
    /// Replaces the row's coordinator flag (a projection, possibly stale)
    /// with this node's live answer.
    pub fn with_live_coordinator(mut self, holder: Option<&str>, epoch: Option<u64>) -> Self {
        self.is_coordinator = holder == Some(self.node_id.as_str());
        self.coordinator_epoch = if self.is_coordinator { epoch } else { None };
        self
    }
}

/// A row of `steep_repl.audit_log`, as IPC clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub actor: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub client_ip: Option<String>,
    pub success: bool,
    pub error_message: Option<String>,
}

/// One page of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditRow>,
    /// Entries matching the filters, all pages together.
    pub total: i64,
    pub has_more: bool,
}

/// `node.*` style filters to LIKE patterns; LIKE's own wildcards in a name
/// are escaped so that a filter matches literally.
pub fn action_patterns(filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .map(|f| {
            let escaped = f
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            match escaped.strip_suffix('*') {
                Some(prefix) => format!("{prefix}%"),
                None => escaped,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filters_become_literal_like_patterns() {
        let filters = vec![
            "node.registered".to_string(),
            "node.*".to_string(),
            " ".to_string(),
            "peer.auth_failed".to_string(),
        ];
        assert_eq!(
            action_patterns(&filters),
            ["node.registered", "node.%", "peer.auth\\_failed"]
        );
    }
}

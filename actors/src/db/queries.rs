//! The SQL the daemon runs against the `steep_repl` extension, the rows it
//! reads back, and the [`Db`] method that runs each statement. Kept in one
//! place so that a test can check every statement against the extension's
//! schema.

use super::{Db, DbResult};
use crate::audit_event::AuditEvent;
use crate::node_status::NodeStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPool;
use std::time::Duration;

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

/// A row of `steep_repl.nodes` (also the IPC `nodes.*` result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub node_name: String,
    pub host: String,
    pub port: i32,
    pub priority: i32,
    pub is_coordinator: bool,
    pub last_seen: Option<DateTime<Utc>>,
    #[sqlx(try_from = "String")]
    pub status: NodeStatus,
    pub grpc_host: Option<String>,
    pub grpc_port: Option<i32>,
    /// `data` or `witness` (`None`: not a member of the Raft cluster).
    pub role: Option<String>,
    /// With `is_coordinator`: the epoch under which it holds the role.
    #[sqlx(skip)]
    #[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
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

/// One page of the audit log (the IPC `audit.query` result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// An `audit.query` page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: i64,
    pub offset: i64,
    /// Action names; `node.*` matches a prefix. Empty: all.
    pub action_filter: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    /// PostgreSQL cancels the query after this long: a caller that stops
    /// waiting must not leave it running on a pooled connection.
    pub timeout: Duration,
}

/// A transaction whose statements PostgreSQL cancels after `timeout`
/// (`SET LOCAL statement_timeout`, which ends with the transaction).
async fn begin_bounded(
    pool: &PgPool,
    timeout: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(SET_LOCAL_STATEMENT_TIMEOUT)
        .bind(format!("{}ms", timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

impl Db {
    /// All registry rows, or those whose status is in `status_filter`;
    /// PostgreSQL cancels the query after `timeout` (the caller's own bound).
    pub async fn list_nodes(
        &self,
        status_filter: &[NodeStatus],
        timeout: Duration,
    ) -> DbResult<Vec<NodeRow>> {
        let status_filter: Vec<&str> = status_filter.iter().map(|s| s.as_str()).collect();
        self.run(|pool| async move {
            let mut tx = begin_bounded(&pool, timeout).await?;
            let rows = sqlx::query_as(LIST_NODES)
                .bind(status_filter)
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok(rows)
        })
        .await
    }

    /// One registry row.
    pub async fn get_node(&self, node_id: &str) -> DbResult<Option<NodeRow>> {
        self.run(|pool| async move {
            sqlx::query_as(GET_NODE)
                .bind(node_id)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// A page of the audit log, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> DbResult<AuditPage> {
        self.run(|pool| async move {
            let patterns = action_patterns(&q.action_filter);
            // Both statements in one read-only transaction whose
            // statement_timeout (SET LOCAL) ends with it.
            let mut tx = begin_bounded(&pool, q.timeout).await?;
            let entries: Vec<AuditRow> = sqlx::query_as(QUERY_AUDIT)
                .bind(&patterns)
                .bind(q.since)
                .bind(q.limit)
                .bind(q.offset)
                .fetch_all(&mut *tx)
                .await?;
            let total: i64 = sqlx::query_scalar(COUNT_AUDIT)
                .bind(&patterns)
                .bind(q.since)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            let has_more = q.offset + (entries.len() as i64) < total;
            Ok(AuditPage {
                entries,
                total,
                has_more,
            })
        })
        .await
    }

    /// Writes a batch of daemon audit events; returns how many were new.
    pub async fn insert_audit_batch(&self, events: &[AuditEvent]) -> DbResult<u64> {
        /// One column of the batch.
        fn column<T>(events: &[AuditEvent], f: impl Fn(&AuditEvent) -> T) -> Vec<T> {
            events.iter().map(f).collect()
        }
        let json = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
        self.run(|pool| async move {
            let inserted: i64 = sqlx::query_scalar(INSERT_AUDIT_BATCH)
                .bind(column(events, |e| e.event_id))
                .bind(column(events, |e| e.occurred_at))
                .bind(column(events, |e| e.action.clone()))
                .bind(column(events, |e| e.target_type.clone()))
                .bind(column(events, |e| e.target_id.clone()))
                .bind(column(events, |e| json(&e.old_value)))
                .bind(column(events, |e| json(&e.new_value)))
                .bind(column(events, |e| e.client_ip.map(|ip| ip.to_string())))
                .bind(column(events, |e| e.success))
                .bind(column(events, |e| e.error_message.clone()))
                .fetch_one(&pool)
                .await?;
            // A row count: never negative.
            Ok(u64::try_from(inserted).unwrap_or(0))
        })
        .await
    }

    /// Deletes audit entries older than the retention; returns the count.
    pub async fn prune_audit(&self, older_than: Duration) -> DbResult<i64> {
        self.run(|pool| async move {
            sqlx::query_scalar(PRUNE_AUDIT)
                .bind(older_than.as_secs_f64())
                .fetch_one(&pool)
                .await
        })
        .await
    }

    /// Writes a peer's status as seen from here; answers whether the
    /// registry holds it now (false: not in the registry yet, or its row
    /// was projected after the write looked: try again).
    pub async fn set_peer_status(&self, node_id: &str, status: NodeStatus) -> DbResult<bool> {
        self.run(|pool| async move {
            sqlx::query_scalar(SET_PEER_STATUS)
                .bind(node_id)
                .bind(status.as_str())
                .fetch_one(&pool)
                .await
        })
        .await
    }

    /// A peer's heartbeat arrived: bump its last_seen. Answers whether the
    /// peer is in the registry. PostgreSQL cancels the update after
    /// `timeout` (the gRPC request timeout): a heartbeat that waits on a
    /// lock must not wait forever.
    pub async fn touch_peer(&self, node_id: &str, timeout: Duration) -> DbResult<bool> {
        self.run(|pool| async move {
            let mut tx = begin_bounded(&pool, timeout).await?;
            let touched: bool = sqlx::query_scalar(TOUCH_PEER)
                .bind(node_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(touched)
        })
        .await
    }
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

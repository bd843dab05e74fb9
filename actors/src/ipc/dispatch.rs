//! Routes a decoded request to what answers it: `status.get` and
//! `health.check` are built from the cached health snapshot (a pointer
//! load, never the database); `nodes.*` and `audit.query` are queries of the
//! `Db` handle, whose errors become protocol error codes. Every answer is
//! counted in the shared [`IpcMetrics`].

use super::connection::Answer;
use super::metrics::IpcMetrics;
use super::protocol::{
    self, encode_error, encode_result, AuditPage, ClusterCreated, ClusterStatus, ErrorBody,
    ErrorCode, HealthReport, Method, NodeAnswer, NodeList, StateEntries, StateValue, StateWritten,
    StatusReport,
};
use crate::db::queries::AuditQuery;
use crate::db::{Db, DbError, DbResult};
use crate::health_report::{health_report, status_report};
use crate::health_state::SharedHealth;
use crate::raft::{ClusterError, ClusterNode};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_consensus::client::Consistency;
use steep_repl_consensus::{Command, Outcome, Requester};

/// How long `cluster.init` waits for its new cluster to take the seed.
const SEED_PATIENCE: Duration = Duration::from_secs(15);

/// The result member of a successful answer (the types of the contract).
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Status(StatusReport),
    Health(HealthReport),
    Nodes(NodeList),
    Node(NodeAnswer),
    Audit(AuditPage),
    Cluster(ClusterStatus),
    ClusterCreated(ClusterCreated),
    StateValue(StateValue),
    StateList(StateEntries),
    StateWritten(StateWritten),
}

/// Shared by every connection of one listener.
pub(crate) struct Dispatcher {
    pub(crate) health: SharedHealth,
    pub(crate) db: Db,
    pub(crate) metrics: Arc<IpcMetrics>,
    /// Bound on one database request, so a hung server cannot hold a client forever.
    pub(crate) db_timeout: Duration,
    /// Database requests in flight from IPC at once. Clients queue here
    /// rather than in the pool, so that a burst of clients cannot take every
    /// pooled connection from the daemon's own work (its health ping has a
    /// short bound and would declare PostgreSQL lost).
    pub(crate) db_slots: tokio::sync::Semaphore,
    /// This node's member of the cluster (`cluster.*`, `state.*`).
    pub(crate) cluster: Option<ClusterNode>,
}

impl Answer for Dispatcher {
    async fn answer(&self, line: &[u8], out: &mut Vec<u8>) {
        let started = Instant::now();
        let request = match protocol::decode(line) {
            Ok(request) => request,
            Err(rejected) => {
                encode_error(&rejected.id, &rejected.error, out);
                self.metrics.record(
                    rejected.method,
                    started.elapsed(),
                    Some(rejected.error.code),
                );
                return;
            }
        };
        let kind = request.method.kind();
        let code = match self.call(request.method).await {
            Ok(reply) => {
                encode_result(&request.id, &reply, out);
                None
            }
            Err(error) => {
                encode_error(&request.id, &error, out);
                Some(error.code)
            }
        };
        self.metrics.record(Some(kind), started.elapsed(), code);
    }
}

impl Dispatcher {
    async fn call(&self, method: Method) -> Result<Reply, ErrorBody> {
        match method {
            Method::StatusGet(_) => Ok(Reply::Status(status_report(
                &self.health.load(),
                Instant::now(),
            ))),
            Method::HealthCheck(_) => {
                let snapshot = self.health.load();
                Ok(Reply::Health(
                    health_report(&snapshot, Instant::now(), self.health.stale_after)
                        .with_raft(&snapshot, self.health.cluster_metrics()),
                ))
            }
            Method::NodesList(p) => {
                let rows = self
                    .ask(self.db.list_nodes(&p.status_filter, self.db_timeout))
                    .await?;
                // Taken after the rows: the live answer, not the projection's.
                let node = self.health.load().node.clone();
                let nodes = rows
                    .into_iter()
                    .map(|row| {
                        row.with_live_coordinator(node.coordinator_id.as_deref(), node.epoch)
                    })
                    .collect();
                Ok(Reply::Nodes(NodeList { nodes }))
            }
            Method::NodesGet(p) => match self.ask(self.db.get_node(&p.node_id)).await? {
                Some(row) => {
                    let live = self.health.load().node.clone();
                    let node =
                        row.with_live_coordinator(live.coordinator_id.as_deref(), live.epoch);
                    Ok(Reply::Node(NodeAnswer { node }))
                }
                None => Err(ErrorBody::new(
                    ErrorCode::NodeNotFound,
                    format!("no node \"{}\" in the registry", p.node_id),
                )),
            },
            Method::AuditQuery(q) => {
                // Both were validated to fit (limit <= 1000, offset <= i64::MAX).
                let query = AuditQuery {
                    limit: i64::try_from(q.limit()).unwrap_or(i64::MAX),
                    offset: i64::try_from(q.offset()).unwrap_or(i64::MAX),
                    action_filter: q.action_filter,
                    since: q.since,
                    // PostgreSQL gives up just before this answer would.
                    timeout: self
                        .db_timeout
                        .saturating_sub(Duration::from_millis(500))
                        .max(Duration::from_millis(100)),
                };
                Ok(Reply::Audit(self.ask(self.db.query_audit(&query)).await?))
            }
            Method::ClusterStatus(_) => Ok(Reply::Cluster(self.cluster()?.status())),
            Method::ClusterInit(_) => self.cluster_init().await,
            Method::ClusterAdd(p) => Ok(Reply::Cluster(
                self.cluster()?
                    .add(&p.node_id, &p.grpc, p.priority(), p.witness)
                    .await
                    .map_err(cluster_error)?,
            )),
            Method::ClusterRemove(p) => Ok(Reply::Cluster(
                self.cluster()?
                    .remove(&p.node_id)
                    .await
                    .map_err(cluster_error)?,
            )),
            Method::StateGet(p) => {
                let value = self
                    .cluster()?
                    .get(&p.key, p.consistency.into())
                    .await
                    .map_err(cluster_error)?;
                Ok(Reply::StateValue(StateValue {
                    key: p.key,
                    found: value.is_some(),
                    value: value.unwrap_or(Value::Null),
                }))
            }
            Method::StateList(p) => Ok(Reply::StateList(StateEntries {
                entries: self
                    .cluster()?
                    .list(&p.prefix, p.consistency.into())
                    .await
                    .map_err(cluster_error)?,
            })),
            Method::StateSet(p) => {
                let command = Command::Set {
                    key: p.key.clone(),
                    value: p.value,
                };
                self.state_write(p.key, command, p.request_id).await
            }
            Method::StateCas(p) => {
                // A null expected value means "absent".
                let command = Command::Cas {
                    key: p.key.clone(),
                    expected: (!p.expected.is_null()).then_some(p.expected),
                    value: p.value,
                };
                self.state_write(p.key, command, p.request_id).await
            }
            Method::StateDelete(p) => {
                let command = Command::Delete { key: p.key.clone() };
                self.state_write(p.key, command, p.request_id).await
            }
        }
    }

    /// `cluster.init`, seeding the new map from the `coordinator_state`
    /// rows of a 0.1.0 node (an upgrade, docs/operations.md). The rows are read first,
    /// so a data node whose PostgreSQL is down is refused rather than
    /// starting a cluster without its old state.
    async fn cluster_init(&self) -> Result<Reply, ErrorBody> {
        let cluster = self.cluster()?;
        let legacy = if cluster.settings().witness {
            Vec::new()
        } else {
            // A daemon just started may still be connecting.
            let deadline = Instant::now() + SEED_PATIENCE;
            loop {
                match self.ask(self.db.legacy_state()).await {
                    Ok(rows) => break rows,
                    Err(e) if e.code == ErrorCode::NotConnected && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(mut e) => {
                        e.message = format!(
                            "{}; cluster init reads this node's coordinator_state first (a 0.1.0 node's state seeds the cluster): start PostgreSQL, then run it again",
                            e.message
                        );
                        return Err(e);
                    }
                }
            }
        };
        let status = cluster.init().await.map_err(cluster_error)?;
        let node_id = cluster.settings().node_id.clone();
        let requester = Requester {
            actor: format!("upgrade@{node_id}"),
            client_addr: None,
            node_id,
        };
        let seeded_keys = legacy.len();
        for (key, value) in legacy {
            let request_id = Some(format!("seed.{key}"));
            let deadline = Instant::now() + SEED_PATIENCE;
            loop {
                let command = Command::Set {
                    key: key.clone(),
                    value: value.clone(),
                };
                // A new cluster elects its one member within moments; the
                // request id makes a retry of an unknown outcome apply once.
                match cluster
                    .write(command, request_id.clone(), requester.clone())
                    .await
                {
                    Ok(_) => break,
                    // Until its initial membership is applied it is no
                    // member yet, then until it has elected itself none leads.
                    Err(
                        ClusterError::NotAMember(_)
                        | ClusterError::NoQuorum(_)
                        | ClusterError::UnknownOutcome(_),
                    ) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => {
                        let mut body = cluster_error(e);
                        body.message = format!(
                            "the cluster was created, but seeding it with key {key} of this node's 0.1.0 state failed: {}",
                            body.message
                        );
                        return Err(body);
                    }
                }
            }
        }
        Ok(Reply::ClusterCreated(ClusterCreated {
            status: if seeded_keys > 0 {
                cluster.status()
            } else {
                status
            },
            seeded_keys,
        }))
    }

    fn cluster(&self) -> Result<&ClusterNode, ErrorBody> {
        self.cluster.as_ref().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotAMember,
                "this daemon runs without the cluster layer (grpc.enabled: false)",
            )
        })
    }

    async fn state_write(
        &self,
        key: String,
        command: Command,
        request_id: Option<String>,
    ) -> Result<Reply, ErrorBody> {
        let cluster = self.cluster()?;
        let node_id = cluster.settings().node_id.clone();
        let requester = Requester {
            actor: format!("ipc@{node_id}"),
            client_addr: None,
            node_id,
        };
        let (log_id, outcome) = cluster
            .write(command, request_id, requester)
            .await
            .map_err(cluster_error)?;
        let previous = match outcome {
            Outcome::Written { previous } | Outcome::Deleted { previous } => previous,
            Outcome::CasFailed { current } => {
                let current = current.map_or("absent".to_string(), |v| v.to_string());
                return Err(ErrorBody::new(
                    ErrorCode::CasFailed,
                    format!("{key} holds {current}, not the expected value"),
                ));
            }
            // Not the outcome of a state command.
            Outcome::Nothing | Outcome::Coordinator { .. } => None,
        };
        Ok(Reply::StateWritten(StateWritten {
            key,
            applied_index: log_id.index,
            previous: previous.unwrap_or(Value::Null),
        }))
    }

    /// Runs a query in one of the IPC database slots, bounded by the
    /// database timeout.
    async fn ask<T>(&self, query: impl Future<Output = DbResult<T>>) -> Result<T, ErrorBody> {
        let request = async {
            // Never closed, so acquiring only waits.
            let _slot = self.db_slots.acquire().await;
            query.await
        };
        match tokio::time::timeout(self.db_timeout, request).await {
            Ok(result) => result.map_err(ErrorBody::from),
            Err(_) => Err(ErrorBody::new(
                ErrorCode::NotConnected,
                format!(
                    "PostgreSQL did not answer within {}s",
                    self.db_timeout.as_secs_f64()
                ),
            )),
        }
    }
}

impl From<protocol::ReadConsistency> for Consistency {
    fn from(c: protocol::ReadConsistency) -> Self {
        match c {
            protocol::ReadConsistency::Linearizable => Consistency::Linearizable,
            protocol::ReadConsistency::Local => Consistency::Local,
        }
    }
}

/// How a failed query reaches an IPC client (the one mapping for every
/// method).
impl From<DbError> for ErrorBody {
    fn from(e: DbError) -> Self {
        let code = match &e {
            DbError::NotConnected(_) => ErrorCode::NotConnected,
            DbError::Query(_) => ErrorCode::InternalError,
        };
        ErrorBody::new(code, e.to_string())
    }
}

fn cluster_error(e: ClusterError) -> ErrorBody {
    let code = match &e {
        ClusterError::NotAMember(_) => ErrorCode::NotAMember,
        ClusterError::NoQuorum(_) => ErrorCode::NoQuorum,
        ClusterError::UnknownOutcome(_) => ErrorCode::UnknownOutcome,
        ClusterError::Invalid(_) => ErrorCode::InvalidRequest,
        ClusterError::Failed(_) => ErrorCode::InternalError,
    };
    ErrorBody::new(code, e.to_string())
}

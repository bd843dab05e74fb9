//! Routes a decoded request to what answers it: `status.get` and
//! `health.check` are built from the cached health snapshot (a pointer
//! load, never the database); `nodes.*` and `audit.query` are typed messages
//! to the DbActor, whose errors become protocol error codes. Every answer
//! is counted in the shared [`IpcMetrics`].

use super::connection::Answer;
use super::metrics::IpcMetrics;
use super::protocol::{self, encode_error, encode_result, ErrorBody, ErrorCode, Method};
use crate::db::queries::{AuditPage, NodeRow};
use crate::db::{DbActor, DbError, GetNode, ListNodes, QueryAudit};
use crate::health_report::{health_report, status_report, HealthReport, StatusReport};
use crate::health_state::SharedHealth;
use actix::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The result member of a successful answer.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Status(StatusReport),
    Health(HealthReport),
    Nodes { nodes: Vec<NodeRow> },
    Node { node: NodeRow },
    Audit(AuditPage),
}

/// Shared by every connection of one listener.
pub(crate) struct Dispatcher {
    pub(crate) health: SharedHealth,
    pub(crate) db: Addr<DbActor>,
    pub(crate) metrics: Arc<IpcMetrics>,
    /// Bound on one database request, so a hung server cannot hold a client forever.
    pub(crate) db_timeout: Duration,
    /// Database requests in flight from IPC at once. Clients queue here
    /// rather than in the pool, so that a burst of clients cannot take every
    /// pooled connection from the daemon's own work (its health ping has a
    /// short bound and would declare PostgreSQL lost).
    pub(crate) db_slots: tokio::sync::Semaphore,
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
            Method::StatusGet => Ok(Reply::Status(status_report(
                &self.health.load(),
                Instant::now(),
            ))),
            Method::HealthCheck => {
                let snapshot = self.health.load();
                Ok(Reply::Health(health_report(
                    &snapshot,
                    Instant::now(),
                    self.health.stale_after,
                )))
            }
            Method::NodesList { status_filter } => {
                let nodes = self.ask(ListNodes { status_filter }).await?;
                Ok(Reply::Nodes { nodes })
            }
            Method::NodesGet { node_id } => match self
                .ask(GetNode {
                    node_id: node_id.clone(),
                })
                .await?
            {
                Some(node) => Ok(Reply::Node { node }),
                None => Err(ErrorBody::new(
                    ErrorCode::NodeNotFound,
                    format!("no node \"{node_id}\" in the registry"),
                )),
            },
            Method::AuditQuery(q) => {
                // Both were validated to fit (limit <= 1000, offset <= i64::MAX).
                let query = QueryAudit {
                    limit: i64::try_from(q.limit).unwrap_or(i64::MAX),
                    offset: i64::try_from(q.offset).unwrap_or(i64::MAX),
                    action_filter: q.action_filter,
                    since: q.since,
                };
                Ok(Reply::Audit(self.ask(query).await?))
            }
        }
    }

    /// Sends `msg` to the DbActor and maps every way it can fail.
    async fn ask<M, T>(&self, msg: M) -> Result<T, ErrorBody>
    where
        M: Message<Result = Result<T, DbError>> + Send + 'static,
        T: Send + 'static,
        DbActor: Handler<M>,
    {
        let request = async {
            // Never closed, so acquiring only waits.
            let _slot = self.db_slots.acquire().await;
            self.db.send(msg).await
        };
        match tokio::time::timeout(self.db_timeout, request).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e @ DbError::NotConnected(_)))) => {
                Err(ErrorBody::new(ErrorCode::NotConnected, e.to_string()))
            }
            Ok(Ok(Err(e @ DbError::Query(_)))) => {
                Err(ErrorBody::new(ErrorCode::InternalError, e.to_string()))
            }
            Ok(Err(mailbox)) => Err(ErrorBody::new(
                ErrorCode::InternalError,
                format!("the database actor did not take the request: {mailbox}"),
            )),
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

//! Writes the replicated state map into PostgreSQL (the projection, SPEC 7).
//!
//! The extension's apply functions do the work, each in one transaction
//! with the log index it applies: an entry already applied is skipped, so
//! a replay after a restart writes nothing twice, and every node writes the
//! same audit row for the same entry.

use super::{DbActor, DbResult};
use actix::prelude::*;
use serde_json::Value;

/// One step of the projection, in log order.
#[derive(Debug, Clone)]
pub enum ProjectionStep {
    /// One applied change of a key (`value: None` deletes it).
    State {
        index: u64,
        term: u64,
        key: String,
        value: Option<Value>,
        actor: String,
        client_ip: Option<String>,
        request_id: Option<String>,
    },
    /// The whole map as of `index` (after a snapshot install or a gap).
    Snapshot { index: u64, term: u64, state: Value },
    /// Entries up to `index` changed nothing in the map.
    Advance { index: u64, term: u64 },
    /// The coordinator record changed at `index` (`method`: the command, or
    /// `snapshot` when the whole state was written).
    Coordinator {
        index: u64,
        term: u64,
        holder: Option<String>,
        epoch: u64,
        previous: Option<String>,
        method: String,
        actor: String,
    },
    /// The membership of the entry at `index` (a JSON array of members).
    Membership { index: u64, members: Value },
}

/// Applies steps for cluster `cluster_id`, in order.
#[derive(Message)]
#[rtype(result = "DbResult<()>")]
pub struct ApplyProjection {
    pub cluster_id: String,
    pub steps: Vec<ProjectionStep>,
}

/// Where the projection stands: (cluster id, applied index).
#[derive(Message)]
#[rtype(result = "DbResult<(Option<String>, i64)>")]
pub struct GetProjection;

const APPLY_STATE: &str = "SELECT steep_repl.apply_state($1, $2, $3, $4, $5, $6, $7, $8::inet, $9)";
const APPLY_SNAPSHOT: &str = "SELECT steep_repl.apply_state_snapshot($1, $2, $3, $4)";
const ADVANCE: &str = "SELECT steep_repl.advance_projection($1, $2, $3)";
const APPLY_COORDINATOR: &str =
    "SELECT steep_repl.apply_coordinator($1, $2, $3, $4, $5, $6, $7, $8)";
const APPLY_MEMBERSHIP: &str = "SELECT steep_repl.apply_membership($1, $2)";
const PROJECTION: &str = "SELECT cluster_id, applied_index FROM steep_repl.projection()";

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Handler<ApplyProjection> for DbActor {
    type Result = ResponseFuture<DbResult<()>>;

    fn handle(&mut self, msg: ApplyProjection, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let cluster = msg.cluster_id;
            for step in msg.steps {
                match step {
                    ProjectionStep::State {
                        index,
                        term,
                        key,
                        value,
                        actor,
                        client_ip,
                        request_id,
                    } => {
                        let deleted = value.is_none();
                        sqlx::query(APPLY_STATE)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .bind(key)
                            .bind(value.map(sqlx::types::Json))
                            .bind(deleted)
                            .bind(actor)
                            .bind(client_ip)
                            .bind(request_id)
                            .execute(&pool)
                            .await?;
                    }
                    ProjectionStep::Snapshot { index, term, state } => {
                        sqlx::query(APPLY_SNAPSHOT)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .bind(sqlx::types::Json(state))
                            .execute(&pool)
                            .await?;
                    }
                    ProjectionStep::Advance { index, term } => {
                        sqlx::query(ADVANCE)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .execute(&pool)
                            .await?;
                    }
                    ProjectionStep::Coordinator {
                        index,
                        term,
                        holder,
                        epoch,
                        previous,
                        method,
                        actor,
                    } => {
                        sqlx::query(APPLY_COORDINATOR)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .bind(holder)
                            .bind(signed(epoch))
                            .bind(previous)
                            .bind(method)
                            .bind(actor)
                            .execute(&pool)
                            .await?;
                    }
                    ProjectionStep::Membership { index, members } => {
                        sqlx::query(APPLY_MEMBERSHIP)
                            .bind(signed(index))
                            .bind(sqlx::types::Json(members))
                            .execute(&pool)
                            .await?;
                    }
                }
            }
            Ok(())
        })
    }
}

impl Handler<GetProjection> for DbActor {
    type Result = ResponseFuture<DbResult<(Option<String>, i64)>>;

    fn handle(&mut self, _: GetProjection, ctx: &mut Context<Self>) -> Self::Result {
        self.run(ctx, move |pool| async move {
            let row: Option<(Option<String>, i64)> =
                sqlx::query_as(PROJECTION).fetch_optional(&pool).await?;
            Ok(row.unwrap_or((None, 0)))
        })
    }
}

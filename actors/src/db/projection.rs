//! Writes the replicated state map into PostgreSQL (the projection).
//!
//! The extension's apply functions do the work, each with the log index it
//! applies: an entry already applied is skipped, so a replay after a
//! restart writes nothing twice, and every node writes the same audit row
//! for the same entry.
//!
//! A batch of steps is one transaction (a batch of changes alone, the
//! usual pass under a write load, is one statement: one round trip),
//! committed without waiting for PostgreSQL's WAL flush
//! (`synchronous_commit = off`): the rows and the applied index they carry
//! are lost or kept together, so a crash of PostgreSQL only makes the
//! projector write the same entries again. The
//! replicated state itself is durable in the Raft log before any write is
//! acknowledged; its projection need not pay a second fsync per entry.

use super::{Db, DbResult};
use serde_json::{json, Value};

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

const APPLY_STATE_BATCH: &str = "SELECT steep_repl.apply_state_batch($1, $2)";
const APPLY_SNAPSHOT: &str = "SELECT steep_repl.apply_state_snapshot($1, $2, $3, $4)";
const ADVANCE: &str = "SELECT steep_repl.advance_projection($1, $2, $3)";
const APPLY_COORDINATOR: &str =
    "SELECT steep_repl.apply_coordinator($1, $2, $3, $4, $5, $6, $7, $8)";
const APPLY_MEMBERSHIP: &str = "SELECT steep_repl.apply_membership($1, $2)";
const LEGACY_STATE: &str = "SELECT s.key, s.value FROM steep_repl.coordinator_state s \
     WHERE (SELECT p.cluster_id FROM steep_repl.projection() p) IS NULL ORDER BY s.key";
/// The batch call alone in its own transaction, committed without waiting
/// for the WAL flush like the projector's transactions (`set_config` local
/// to the statement's transaction, which it outlives only until the commit).
pub const APPLY_STATE_BATCH_ALONE: &str =
    "SELECT pg_catalog.set_config('synchronous_commit', 'off', true), \
     steep_repl.apply_state_batch($1, $2)";
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit = off";
const PROJECTION: &str = "SELECT cluster_id, applied_index FROM steep_repl.projection()";

/// Applies the changes gathered so far, if any.
async fn apply_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    cluster: &str,
    run: &mut Vec<Value>,
) -> Result<(), sqlx::Error> {
    if run.is_empty() {
        return Ok(());
    }
    sqlx::query(APPLY_STATE_BATCH)
        .bind(cluster)
        .bind(sqlx::types::Json(Value::Array(std::mem::take(run))))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A change as `steep_repl.apply_state_batch` takes it; None for any other step.
pub fn state_entry(step: &ProjectionStep) -> Option<Value> {
    let ProjectionStep::State {
        index,
        term,
        key,
        value,
        actor,
        client_ip,
        request_id,
    } = step
    else {
        return None;
    };
    Some(json!({
        "index": index,
        "term": term,
        "key": key,
        "deleted": value.is_none(),
        "value": value,
        "actor": actor,
        "client_ip": client_ip,
        "request_id": request_id,
    }))
}

/// The entries of steps that are all changes (the usual pass under a write
/// load); None when any step is something else, or there is none.
fn state_run(steps: &[ProjectionStep]) -> Option<Vec<Value>> {
    if steps.is_empty() {
        return None;
    }
    steps.iter().map(state_entry).collect()
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Db {
    /// Applies `steps` for cluster `cluster`, in order, in one transaction.
    pub async fn apply_projection(
        &self,
        cluster: &str,
        steps: Vec<ProjectionStep>,
    ) -> DbResult<()> {
        if let Some(entries) = state_run(&steps) {
            // Changes alone: one statement, its own transaction, one round
            // trip (the batch call records the index itself).
            return self
                .run(|pool| async move {
                    sqlx::query(APPLY_STATE_BATCH_ALONE)
                        .bind(cluster)
                        .bind(sqlx::types::Json(Value::Array(entries)))
                        .execute(&pool)
                        .await?;
                    Ok(())
                })
                .await;
        }
        self.run(|pool| async move {
            let cluster = cluster.to_string();
            let mut tx = pool.begin().await?;
            let mut run: Vec<Value> = Vec::new();
            sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
            for step in steps {
                // Consecutive changes go to the database in one call.
                if let Some(entry) = state_entry(&step) {
                    run.push(entry);
                    continue;
                }
                apply_run(&mut tx, &cluster, &mut run).await?;
                match step {
                    ProjectionStep::State { .. } => {}
                    ProjectionStep::Snapshot { index, term, state } => {
                        sqlx::query(APPLY_SNAPSHOT)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .bind(sqlx::types::Json(state))
                            .execute(&mut *tx)
                            .await?;
                    }
                    ProjectionStep::Advance { index, term } => {
                        sqlx::query(ADVANCE)
                            .bind(&cluster)
                            .bind(signed(index))
                            .bind(signed(term))
                            .execute(&mut *tx)
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
                            .execute(&mut *tx)
                            .await?;
                    }
                    ProjectionStep::Membership { index, members } => {
                        sqlx::query(APPLY_MEMBERSHIP)
                            .bind(signed(index))
                            .bind(sqlx::types::Json(members))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            apply_run(&mut tx, &cluster, &mut run).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Where the projection stands: (cluster id, applied index).
    pub async fn projection(&self) -> DbResult<(Option<String>, i64)> {
        self.run(|pool| async move {
            let row: Option<(Option<String>, i64)> =
                sqlx::query_as(PROJECTION).fetch_optional(&pool).await?;
            Ok(row.unwrap_or((None, 0)))
        })
        .await
    }

    /// The rows of `coordinator_state` written before this node's
    /// projection followed any cluster: the state of a 0.1.0 node, which
    /// `cluster init` seeds the new cluster's map from (docs/operations.md,
    /// "Upgrade a 0.1.0 cluster").
    pub async fn legacy_state(&self) -> DbResult<Vec<(String, Value)>> {
        self.run(|pool| async move {
            let rows: Vec<(String, sqlx::types::Json<Value>)> =
                sqlx::query_as(LEGACY_STATE).fetch_all(&pool).await?;
            Ok(rows.into_iter().map(|(k, v)| (k, v.0)).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u64, value: Option<Value>) -> ProjectionStep {
        ProjectionStep::State {
            index,
            term: 2,
            key: format!("k{index}"),
            value,
            actor: "steep@local".into(),
            client_ip: None,
            request_id: Some(format!("r{index}")),
        }
    }

    #[test]
    fn a_pass_of_changes_alone_goes_as_one_batch_in_log_order() {
        let steps = vec![change(7, Some(json!(1))), change(8, None)];
        let entries = state_run(&steps).expect("changes alone make one run");
        assert_eq!(
            entries,
            vec![
                json!({"index": 7, "term": 2, "key": "k7", "deleted": false, "value": 1,
                       "actor": "steep@local", "client_ip": null, "request_id": "r7"}),
                json!({"index": 8, "term": 2, "key": "k8", "deleted": true, "value": null,
                       "actor": "steep@local", "client_ip": null, "request_id": "r8"}),
            ]
        );
    }

    #[test]
    fn a_pass_with_any_other_step_or_none_keeps_the_transaction() {
        assert!(state_run(&[]).is_none());
        let advance = vec![
            change(7, Some(json!(1))),
            ProjectionStep::Advance { index: 9, term: 2 },
        ];
        assert!(state_run(&advance).is_none());
        let membership = vec![
            ProjectionStep::Membership {
                index: 6,
                members: json!([]),
            },
            change(7, Some(json!(1))),
        ];
        assert!(state_run(&membership).is_none());
    }
}

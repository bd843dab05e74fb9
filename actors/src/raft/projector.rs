//! Keeps this node's PostgreSQL tables in step with the replicated state
//! map: the projection (SPEC 7), readable by SQL, possibly stale, never a
//! source of truth.
//!
//! It follows the state machine's journal of applied entries and hands
//! them to the DbActor in order; the extension skips what it already has,
//! so a replay writes nothing twice. When the journal cannot say what came
//! after the stored index (a snapshot from the leader, a restart from a
//! snapshot, a projection from another cluster), it writes the whole map
//! at once instead. While PostgreSQL is down it waits and catches up later.

use super::node::ClusterNode;
use super::transport::split_address;
use crate::db::projection::{ApplyProjection, GetProjection, ProjectionStep};
use crate::db::{DbActor, DbError};
use actix::Addr;
use serde_json::{json, Value};
use slog::{debug, info, warn, Logger};
use std::time::Duration;
use steep_repl_consensus::types::{LogId, StoredMembership};
use steep_repl_consensus::AppliedEvent;

/// How often it looks again when nothing woke it (PostgreSQL back, ...).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Journal events read at once (the rest on the next turn).
const PAGE: usize = 4096;
/// Steps handed to the database at once.
const BATCH: usize = 256;

/// Starts the projection on the current (actix) runtime.
pub fn start(node: ClusterNode, db: Addr<DbActor>, log: Logger) {
    actix::spawn(run(node, db, log));
}

async fn run(node: ClusterNode, db: Addr<DbActor>, log: Logger) {
    let mut applied = node.shared().subscribe();
    // What the projection holds, once read from the database.
    let mut stored: Option<(Option<String>, u64)> = None;
    let mut failing = false;
    let mut more = false;
    loop {
        if !more {
            let _ = tokio::time::timeout(RETRY_EVERY, applied.changed()).await;
        }
        more = false;
        let Some(cluster_id) = node.identity().cluster_id else {
            continue;
        };
        match project(&node, &db, &cluster_id, &mut stored).await {
            Ok(rest) => {
                more = rest;
                if failing {
                    info!(log, "projection.resumed");
                }
                failing = false;
            }
            Err(e) => {
                stored = None;
                match e {
                    DbError::NotConnected(reason) => {
                        debug!(log, "projection.waiting"; "reason" => reason)
                    }
                    DbError::Query(e) if !failing => {
                        warn!(log, "projection.failed"; "error" => e, "note" => "retried every second")
                    }
                    DbError::Query(_) => {}
                }
                failing = true;
            }
        }
    }
}

fn index_of(log_id: Option<LogId>) -> (u64, u64) {
    log_id.map_or((0, 0), |l| (l.index, l.leader_id.term))
}

/// Writes everything applied after what the projection holds.
async fn project(
    node: &ClusterNode,
    db: &Addr<DbActor>,
    cluster_id: &str,
    stored: &mut Option<(Option<String>, u64)>,
) -> Result<bool, DbError> {
    let mailbox = |e: actix::MailboxError| DbError::NotConnected(e.to_string());
    if stored.is_none() {
        let (cluster, index) = db.send(GetProjection).await.map_err(mailbox)??;
        *stored = Some((cluster, u64::try_from(index).unwrap_or(0)));
    }
    let Some((stored_cluster, stored_index)) = stored.clone() else {
        return Ok(false);
    };
    let (last_index, last_term) = index_of(node.shared().last_applied());
    if stored_cluster.as_deref() == Some(cluster_id) && stored_index >= last_index {
        return Ok(false);
    }
    let events = if stored_cluster.as_deref() == Some(cluster_id) {
        node.shared().events_page(Some(stored_index), PAGE).ok()
    } else {
        None
    };
    let whole = events.as_ref().is_none_or(|e| {
        e.iter()
            .any(|a| matches!(a.event, AppliedEvent::SnapshotInstalled))
    });
    let mut more = false;
    let steps = if whole {
        // The map and its log id, read together.
        let (state, log_id) = node.shared().read(|view| {
            let map: serde_json::Map<String, Value> = view
                .kv()
                .entries()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (Value::Object(map), view.last_applied())
        });
        let (index, term) = index_of(log_id);
        let record = node.applied_coordinator();
        let mut steps = vec![ProjectionStep::Snapshot { index, term, state }];
        let membership = node.shared().read(|view| view.membership().clone());
        if let Some(step) = membership_step(&membership) {
            steps.push(step);
        }
        steps.push(ProjectionStep::Coordinator {
            index,
            term,
            holder: record.holder,
            epoch: record.epoch,
            previous: None,
            method: "snapshot".into(),
            actor: format!("steep-repl@{}", node.settings().node_id),
        });
        steps
    } else {
        let mut steps: Vec<ProjectionStep> = Vec::new();
        let events = events.unwrap_or_default();
        let page_end = (events.len() >= PAGE)
            .then(|| {
                events
                    .last()
                    .map(|a| (a.log_id.index, a.log_id.leader_id.term))
            })
            .flatten();
        for applied in events {
            if applied.log_id.index <= stored_index {
                continue;
            }
            let (index, term) = (applied.log_id.index, applied.log_id.leader_id.term);
            match applied.event {
                AppliedEvent::Change {
                    change,
                    request_id,
                    requester,
                    ..
                } => steps.push(ProjectionStep::State {
                    index,
                    term,
                    key: change.key,
                    value: change.new,
                    actor: requester.actor,
                    client_ip: requester.client_addr,
                    request_id,
                }),
                AppliedEvent::Coordinator {
                    previous,
                    record,
                    method,
                    requester,
                } => steps.push(ProjectionStep::Coordinator {
                    index,
                    term,
                    holder: record.holder,
                    epoch: record.epoch,
                    previous: previous.holder,
                    method: method.to_string(),
                    actor: requester.actor,
                }),
                AppliedEvent::Membership(membership) => {
                    if let Some(step) = membership_step(&membership) {
                        steps.push(step);
                    }
                }
                AppliedEvent::SnapshotInstalled => {}
            }
        }
        // A full page may stop short of what was applied: advance only to
        // its end, and come back for the rest at once.
        more = page_end.is_some();
        let (index, term) = match &page_end {
            Some(end) => *end,
            None => (last_index, last_term),
        };
        steps.push(ProjectionStep::Advance { index, term });
        steps
    };
    let mut target = stored_index;
    for chunk in steps.chunks(BATCH) {
        db.send(ApplyProjection {
            cluster_id: cluster_id.to_string(),
            steps: chunk.to_vec(),
        })
        .await
        .map_err(mailbox)??;
        target = chunk
            .iter()
            .map(|s| match s {
                ProjectionStep::State { index, .. }
                | ProjectionStep::Snapshot { index, .. }
                | ProjectionStep::Advance { index, .. }
                | ProjectionStep::Coordinator { index, .. }
                | ProjectionStep::Membership { index, .. } => *index,
            })
            .max()
            .unwrap_or(target);
    }
    *stored = Some((Some(cluster_id.to_string()), target));
    Ok(more)
}

/// The identity columns of the registry from a membership: one member per
/// row (SPEC 7: the registry is the membership's projection).
fn membership_step(membership: &StoredMembership) -> Option<ProjectionStep> {
    let index = membership.log_id().map(|l| l.index)?;
    let members: Vec<Value> = membership
        .membership()
        .nodes()
        .filter_map(|(_, m)| {
            let (host, port) = split_address(&m.grpc)?;
            Some(json!({
                "node_id": m.node_id,
                "grpc_host": host,
                "grpc_port": port,
                "priority": m.priority,
                "role": m.role.as_str(),
            }))
        })
        .collect();
    (!members.is_empty()).then_some(ProjectionStep::Membership {
        index,
        members: Value::Array(members),
    })
}

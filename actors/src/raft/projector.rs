//! Keeps this node's PostgreSQL tables in step with the replicated state
//! map: the projection, readable by SQL, possibly stale, never a
//! source of truth.
//!
//! It follows the state machine's journal of applied entries and hands
//! them to PostgreSQL (through the `Db` handle) in order; the extension skips what it already has,
//! so a replay writes nothing twice. When the journal cannot say what came
//! after the stored index (a snapshot from the leader, a restart from a
//! snapshot, a projection from another cluster that this node did not
//! follow from the first entry), it writes the whole map at once instead.
//! While PostgreSQL is down it waits and catches up later.
//!
//! An entry the database refuses (a DBA's trigger, a revoked privilege, a
//! full disk) stops the projection at that entry, not the cluster: the
//! replicated state goes on, and the projection retries with a backoff (1 s
//! doubling to a minute), says so in `cluster.status` and `/metrics`, and
//! logs the failure when it starts, when its reason changes, every ten
//! minutes while it lasts, and when it ends.

use super::node::ClusterNode;
use super::transport::split_address;
use crate::db::projection::ProjectionStep;
use crate::db::{Db, DbError};
use serde_json::{json, Value};
use slog::{debug, info, warn, Logger};
use std::time::Duration;
use steep_repl_consensus::types::{LogId, StoredMembership};
use steep_repl_consensus::AppliedEvent;

/// How often it looks again when nothing woke it (PostgreSQL back, ...).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two passes: entries applied meanwhile go into
/// one transaction instead of one each (under a steady write load, a pass
/// per entry on every node costs more CPU than the writes themselves).
pub const COALESCE: Duration = Duration::from_millis(100);
/// The longest wait between two attempts at an entry the database refused.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often a projection that keeps failing is logged again.
const REMIND_EVERY: Duration = Duration::from_secs(600);
/// Journal events read at once (the rest on the next turn).
const PAGE: usize = 4096;
/// Steps handed to the database at once.
pub const BATCH: usize = 256;

/// Starts the projection on the current (actix) runtime.
pub fn start(node: ClusterNode, db: Db, log: Logger) {
    actix::spawn(run(node, db, log));
}

async fn run(node: ClusterNode, db: Db, log: Logger) {
    let mut applied = node.shared().subscribe();
    // What the projection holds, once read from the database.
    let mut stored: Option<(Option<String>, u64)> = None;
    let mut refused = Refusals::default();
    let mut more = false;
    let mut last_pass: Option<std::time::Instant> = None;
    loop {
        if let Some(wait) = refused.backoff() {
            // Woken by nothing: new entries cannot mend a refused one.
            tokio::time::sleep(wait).await;
        } else if !more {
            let _ = tokio::time::timeout(RETRY_EVERY, applied.changed()).await;
            if let Some(rest) = last_pass.and_then(|t| COALESCE.checked_sub(t.elapsed())) {
                tokio::time::sleep(rest).await;
            }
        }
        more = false;
        last_pass = Some(std::time::Instant::now());
        let Some(cluster_id) = node.identity().cluster_id else {
            continue;
        };
        match project(&node, &db, &cluster_id, &mut stored).await {
            Ok(rest) => {
                more = rest;
                if let Some((_, index)) = &stored {
                    node.projection().applied(*index);
                }
                if let Some(attempts) = refused.ended() {
                    info!(log, "projection.resumed"; "failed_attempts" => attempts);
                }
            }
            Err(e) => {
                stored = None;
                match e {
                    DbError::NotConnected(reason) => {
                        debug!(log, "projection.waiting"; "reason" => reason)
                    }
                    DbError::Query(e) => {
                        node.projection().failed(&e);
                        if refused.failed(&e) {
                            warn!(log, "projection.failed";
                                "error" => e,
                                "applied_index" => node.projection().report().applied_index,
                                "note" => "the replicated state is unaffected; PostgreSQL's tables stay behind until this is mended (retried with a backoff up to a minute; cluster.status shows it)");
                        }
                    }
                }
            }
        }
    }
}

/// Consecutive attempts the database refused, for the backoff and the log.
#[derive(Default)]
struct Refusals {
    attempts: u32,
    last_error: String,
    last_logged: Option<std::time::Instant>,
}

impl Refusals {
    /// Records a refusal; true when it is worth a log line (the first, a
    /// new reason, or a reminder).
    fn failed(&mut self, error: &str) -> bool {
        self.attempts = self.attempts.saturating_add(1);
        let changed = self.last_error != error;
        let remind = self.last_logged.is_none_or(|t| t.elapsed() >= REMIND_EVERY);
        self.last_error = error.to_string();
        if changed || remind {
            self.last_logged = Some(std::time::Instant::now());
        }
        changed || remind
    }

    /// How long to wait before the next attempt, while refused.
    fn backoff(&self) -> Option<Duration> {
        let doublings = self.attempts.checked_sub(1)?.min(6);
        Some((RETRY_EVERY * 2u32.pow(doublings)).min(RETRY_MAX))
    }

    /// The refusals ended: how many attempts failed, if any did.
    fn ended(&mut self) -> Option<u32> {
        let attempts = std::mem::take(self).attempts;
        (attempts > 0).then_some(attempts)
    }
}

fn index_of(log_id: Option<LogId>) -> (u64, u64) {
    log_id.map_or((0, 0), |l| (l.index, l.leader_id.term))
}

/// Writes everything applied after what the projection holds.
async fn project(
    node: &ClusterNode,
    db: &Db,
    cluster_id: &str,
    stored: &mut Option<(Option<String>, u64)>,
) -> Result<bool, DbError> {
    if stored.is_none() {
        let (cluster, index) = db.projection().await?;
        *stored = Some((cluster, u64::try_from(index).unwrap_or(0)));
    }
    let Some((stored_cluster, stored_index)) = stored.clone() else {
        return Ok(false);
    };
    let (last_index, last_term) = index_of(node.shared().last_applied());
    if stored_cluster.as_deref() == Some(cluster_id) && stored_index >= last_index {
        return Ok(false);
    }
    // The journal after what the projection holds; for a projection of no
    // cluster yet (or of another one), the journal from the first entry,
    // which it holds whole when this node applied every entry itself: then
    // each entry is written and audited once, as on every node that
    // followed the log (the node that ran `cluster init` on an upgraded
    // table audits its seed key by key, however early its first pass).
    let same_cluster = stored_cluster.as_deref() == Some(cluster_id);
    let after = same_cluster.then_some(stored_index);
    let events = node.shared().events_page(after, PAGE).ok();
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
        if !same_cluster {
            // The table as the log starts it: empty, this cluster's.
            steps.push(ProjectionStep::Snapshot {
                index: 0,
                term: 0,
                state: Value::Object(serde_json::Map::new()),
            });
        }
        let events = events.unwrap_or_default();
        let page_end = (events.len() >= PAGE)
            .then(|| {
                events
                    .last()
                    .map(|a| (a.log_id.index, a.log_id.leader_id.term))
            })
            .flatten();
        for applied in events {
            if after.is_some_and(|stored| applied.log_id.index <= stored) {
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
        // A run that ends with a change at the target already records the
        // index (the batch call does): an advance would be one more
        // statement for nothing.
        let ends_at_target = matches!(
            steps.last(),
            Some(ProjectionStep::State { index: last, .. }) if *last == index
        );
        if !ends_at_target {
            steps.push(ProjectionStep::Advance { index, term });
        }
        steps
    };
    let mut target = stored_index;
    for chunk in steps.chunks(BATCH) {
        db.apply_projection(cluster_id, chunk.to_vec()).await?;
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
/// row (the registry is the membership's projection).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_from_a_second_to_a_minute_and_log_only_what_is_new() {
        let mut r = Refusals::default();
        assert_eq!(r.backoff(), None);
        assert!(r.failed("trigger refused key a.b"));
        assert_eq!(r.backoff(), Some(Duration::from_secs(1)));
        assert!(!r.failed("trigger refused key a.b"));
        assert_eq!(r.backoff(), Some(Duration::from_secs(2)));
        assert!(r.failed("disk full"));
        for _ in 0..20 {
            r.failed("disk full");
        }
        assert_eq!(r.backoff(), Some(RETRY_MAX));
        assert_eq!(r.ended(), Some(23));
        assert_eq!(r.backoff(), None);
        assert_eq!(r.ended(), None);
    }
}

//! `cluster force-new`: a survivor of a cluster that lost its majority for
//! good becomes the only member of a new cluster (docs/operations.md,
//! "Recover after losing a majority for good"), offline, with everything its store holds.
//!
//! The survivor's state is its snapshot plus every entry of its log, the
//! entries it did not know to be committed included: a write acknowledged
//! before the loss reached a majority, and a survivor holding it may not
//! have heard it was committed. (An entry that was never acknowledged may
//! come back this way; its client was told UNKNOWN_OUTCOME or nothing.)
//! Which survivor to choose: the one whose log goes furthest (`inspect`
//! says, without changing anything).
//!
//! The new store keeps the survivor's Raft id and member data, gets a new
//! cluster id (messages of the old cluster are refused from then on), a
//! snapshot of the recovered state whose only member is this node, an empty
//! log after it, and a vote in a later term. The coordinator record is
//! released and its epoch moved `epoch_gap` above the highest epoch the
//! survivor knew, so that the next grant is above any epoch the lost nodes
//! might have granted after the survivor stopped hearing them (a consumer
//! fencing on epochs must never see an old epoch again with a new holder).
//! The old store is copied aside first; a `force_new.json` marker tells the
//! daemon to audit what happened when it starts.

use crate::coordinator::CoordinatorRecord;
use crate::kv::KvState;
use crate::log_store::LogStore;
use crate::state_machine::{SnapshotStateRef, StateMachineStore};
use crate::store::{self, StoreError};
use crate::store_identity::StoreIdentity;
use crate::types::{LogId, Member, RaftId, SnapshotMeta, StoredMembership, Vote};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Membership, RaftLogReader};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The marker the daemon audits at its next start, then removes.
pub const MARKER_FILE: &str = "force_new.json";

/// How far above the highest known epoch the new cluster's epochs start,
/// by default.
pub const DEFAULT_EPOCH_GAP: u64 = 1000;

/// Why the store cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum ForceNewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Storage(String),
    #[error("the store in {} belongs to no cluster: there is nothing to recover (use `cluster init` for a new cluster)", .0.display())]
    NoCluster(PathBuf),
    #[error("this store (Raft id {raft_id:016x}) is not a member of its cluster's last membership: it cannot stand for the cluster")]
    NotAMember { raft_id: RaftId },
    #[error("cannot copy the store to {}: {source}", .path.display())]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn storage(e: impl std::fmt::Display) -> ForceNewError {
    ForceNewError::Storage(e.to_string())
}

/// What a survivor's store holds, to choose a survivor and to report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Survivor {
    pub cluster_id: Option<String>,
    pub raft_id: String,
    pub node_id: Option<String>,
    /// The last entry in its log (or of its snapshot).
    pub last_log_index: Option<u64>,
    pub last_log_term: Option<u64>,
    /// The last entry it knew to be committed.
    pub committed_index: Option<u64>,
    /// The members of its last membership (node_ids).
    pub members: Vec<String>,
    /// Keys of the state map, everything in the log applied.
    pub keys: usize,
    /// The coordinator record, everything in the log applied.
    pub coordinator: Option<String>,
    pub epoch: u64,
}

/// What `force_new` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forced {
    pub old_cluster_id: String,
    pub new_cluster_id: String,
    pub node_id: String,
    /// The last log index recovered (entries after the snapshot included).
    pub recovered_index: u64,
    pub keys: usize,
    /// The highest epoch the survivor knew.
    pub old_epoch: u64,
    /// The epoch the new cluster's record starts from (the next grant is
    /// one above).
    pub epoch_floor: u64,
    /// Where the old store was copied.
    pub backup: PathBuf,
    /// When it was done, seconds since the Unix epoch.
    pub at_unix: u64,
}

/// The store opened, with every entry of its log applied in memory.
struct Recovered {
    identity: StoreIdentity,
    log: LogStore,
    sm: StateMachineStore,
    last_log_id: Option<LogId>,
    committed: Option<LogId>,
    vote: Option<Vote>,
}

async fn recover(dir: &Path) -> Result<Recovered, ForceNewError> {
    let (identity, mut log, mut sm) = store::open(dir)?;
    let state = log.get_log_state().await.map_err(storage)?;
    let applied = sm.applied_state().await.map_err(storage)?.0;
    let from = applied.map_or(0, |l| l.index + 1);
    let entries = log.try_get_log_entries(from..).await.map_err(storage)?;
    if !entries.is_empty() {
        // In memory only: nothing of the state machine is written here.
        sm.apply(entries).await.map_err(storage)?;
    }
    let committed = log.read_committed().await.map_err(storage)?;
    let vote = log.read_vote().await.map_err(storage)?;
    Ok(Recovered {
        identity,
        log,
        sm,
        last_log_id: state.last_log_id.or(applied),
        committed,
        vote,
    })
}

/// What the store in `dir` holds, changing nothing.
pub async fn inspect(dir: &Path) -> Result<Survivor, ForceNewError> {
    let r = recover(dir).await?;
    let shared = r.sm.shared();
    let (members, node_id, keys, record) = shared.read(|view| {
        let membership = view.membership().membership();
        let members: Vec<String> = membership.nodes().map(|(_, m)| m.node_id.clone()).collect();
        let own = membership
            .get_node(&r.identity.raft_id)
            .map(|m| m.node_id.clone());
        (
            members,
            own,
            view.kv().len(),
            view.kv().coordinator().clone(),
        )
    });
    Ok(Survivor {
        cluster_id: r.identity.cluster_id.clone(),
        raft_id: format!("{:016x}", r.identity.raft_id),
        node_id,
        last_log_index: r.last_log_id.map(|l| l.index),
        last_log_term: r.last_log_id.map(|l| l.leader_id.term),
        committed_index: r.committed.map(|l| l.index),
        members,
        keys,
        coordinator: record.holder,
        epoch: record.epoch,
    })
}

/// Makes the survivor in `dir` the only member of cluster `new_cluster_id`
/// (see the module's documentation). The daemon must not be running: the
/// caller holds the store directory's lock.
pub async fn force_new(
    dir: &Path,
    new_cluster_id: &str,
    epoch_gap: u64,
    at_unix: u64,
) -> Result<Forced, ForceNewError> {
    let recovered = recover(dir).await?;
    let Some(old_cluster_id) = recovered.identity.cluster_id.clone() else {
        return Err(ForceNewError::NoCluster(dir.to_path_buf()));
    };
    let raft_id = recovered.identity.raft_id;
    let (member, mut kv): (Option<Member>, KvState) = recovered.sm.shared().read(|view| {
        (
            view.membership().membership().get_node(&raft_id).cloned(),
            view.kv().clone(),
        )
    });
    let Some(member) = member else {
        return Err(ForceNewError::NotAMember { raft_id });
    };
    let backup = backup(dir, at_unix)?;

    let old_epoch = kv.coordinator().epoch;
    let epoch_floor = old_epoch.saturating_add(epoch_gap);
    kv.restart_coordinator(CoordinatorRecord {
        holder: None,
        epoch: epoch_floor,
        renewals: 0,
        handover: None,
    });
    let last = recovered.last_log_id;
    let term = last
        .map_or(0, |l| l.leader_id.term)
        .max(recovered.vote.map_or(0, |v| v.leader_id().term))
        + 1;
    let index = last.map_or(0, |l| l.index) + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term, raft_id), index);
    let membership = StoredMembership::new(
        Some(log_id),
        Membership::new(
            vec![BTreeSet::from([raft_id])],
            BTreeMap::from([(raft_id, member.clone())]),
        ),
    );
    let data = serde_json::to_vec(&SnapshotStateRef {
        last_applied: &Some(log_id),
        membership: &membership,
        kv: &kv,
    })
    .map_err(storage)?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("force-new-{new_cluster_id}"),
    };
    let Recovered {
        mut identity,
        mut log,
        mut sm,
        ..
    } = recovered;
    sm.install_snapshot(&meta, Box::new(Cursor::new(data)))
        .await
        .map_err(storage)?;
    // Everything the log held is in the snapshot now.
    log.purge(log_id).await.map_err(storage)?;
    log.compact()?;
    log.save_committed(Some(log_id)).await.map_err(storage)?;
    log.save_vote(&Vote::new(term, raft_id))
        .await
        .map_err(storage)?;
    identity.set_cluster_id(dir, new_cluster_id)?;

    let forced = Forced {
        old_cluster_id,
        new_cluster_id: new_cluster_id.to_string(),
        node_id: member.node_id,
        recovered_index: last.map_or(0, |l| l.index),
        keys: kv.len(),
        old_epoch,
        epoch_floor,
        backup,
        at_unix,
    };
    let marker = dir.join(MARKER_FILE);
    let bytes = serde_json::to_vec_pretty(&forced).map_err(storage)?;
    crate::durable::atomic_write(&marker, &bytes).map_err(|e| StoreError::write(&marker, e))?;
    Ok(forced)
}

/// The marker a forced store carries until the daemon has audited it.
pub fn read_marker(dir: &Path) -> Option<Forced> {
    let bytes = std::fs::read(dir.join(MARKER_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the marker once its audit event is recorded.
pub fn clear_marker(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(MARKER_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies the store's files to `<dir>.before-force-new-<at_unix>`.
fn backup(dir: &Path, at_unix: u64) -> Result<PathBuf, ForceNewError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "raft".into());
    let target = dir.with_file_name(format!("{name}.before-force-new-{at_unix}"));
    let fail = |source| ForceNewError::Backup {
        path: target.clone(),
        source,
    };
    crate::durable::create_private_dir(&target).map_err(fail)?;
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        if entry.file_type().map_err(fail)?.is_file() {
            std::fs::copy(entry.path(), target.join(entry.file_name())).map_err(fail)?;
        }
    }
    crate::durable::sync_dir(&target).map_err(fail)?;
    Ok(target)
}

//! The state machine: the replicated state map, the last applied log id and
//! membership, and its snapshots (what openraft's `RaftStateMachine` and
//! `RaftSnapshotBuilder` ask of a node).
//!
//! Applying an entry changes memory only; the state is persisted by
//! snapshots, in `snapshot.json` replaced atomically. A restarted node
//! starts from its latest snapshot and openraft re-applies the committed
//! entries the log still holds (see `LogStore::read_committed`).
//!
//! The daemon reads the state through `SharedState`: the map, the last
//! applied log id and membership, a watch channel of the applied log id,
//! and a bounded journal of what each applied entry changed, which the
//! projection into PostgreSQL and the audit rows are written from.

use crate::command::{Outcome, Requester};
use crate::coordinator::CoordinatorRecord;
use crate::durable;
use crate::kv::{Change, KvState};
use crate::lease::RenewalStamp;
use crate::store::StoreError;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// The snapshot file in the store directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// How many applied events the journal holds. The projection reads it
/// within moments; a consumer this far behind rewrites its table instead.
pub const JOURNAL_CAPACITY: usize = 65_536;

/// What one applied entry did, in the order entries were applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub log_id: LogId,
    pub event: AppliedEvent,
}

/// What an applied entry did to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum AppliedEvent {
    /// A proposal changed the map (proposals that changed nothing, such as
    /// a failed compare-and-set or a retried request id, leave no event).
    Change {
        change: Change,
        /// The method it was asked for by (`state.set`, ...).
        method: &'static str,
        request_id: Option<String>,
        requester: Requester,
    },
    /// The coordinator record changed: a grant (the epoch grew), a
    /// handover request or a release.
    Coordinator {
        previous: CoordinatorRecord,
        record: CoordinatorRecord,
        /// `coordinator.grant`, `coordinator.handover`, `coordinator.release`.
        method: &'static str,
        requester: Requester,
    },
    /// The membership changed.
    Membership(StoredMembership),
    /// The whole state was replaced by a snapshot from the leader, up to
    /// this log id: the entries before it were never applied one by one
    /// here, so a consumer rewrites what it keeps from the whole map.
    SnapshotInstalled,
}

/// The journal no longer holds what was applied right after the index a
/// consumer asked from: it rewrites what it keeps from the whole map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the journal of applied entries no longer holds what came after index {after:?}: it holds only what came after index {floor}")]
pub struct Gap {
    /// The index asked from (`None`: from the beginning).
    pub after: Option<u64>,
    /// The journal is complete only for what came after this index.
    pub floor: u64,
}

/// The state as the daemon reads it.
#[derive(Debug)]
pub struct StateView {
    kv: KvState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    journal: VecDeque<Applied>,
    /// What came after this index is all in the journal; what came at or
    /// before it may not be (dropped for room, or before a restart).
    journal_floor: Option<u64>,
    journal_capacity: usize,
}

impl StateView {
    /// The replicated state map.
    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// The log id of the last applied entry (or of the snapshot loaded).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// The last applied membership.
    pub fn membership(&self) -> &StoredMembership {
        &self.membership
    }

    fn push(&mut self, applied: Applied) {
        while self.journal.len() >= self.journal_capacity {
            match self.journal.pop_front() {
                Some(old) => self.journal_floor = Some(old.log_id.index),
                None => break,
            }
        }
        self.journal.push_back(applied);
    }
}

/// A cloneable, read-only handle on the applied state, published after
/// every apply and snapshot install.
#[derive(Clone)]
pub struct SharedState {
    view: Arc<RwLock<StateView>>,
    /// Sent the last applied log id after every change (a `watch` keeps
    /// only the newest: a consumer wakes up and reads the journal).
    applied: Arc<watch::Sender<Option<LogId>>>,
}

impl SharedState {
    fn new(view: StateView) -> Self {
        let (applied, _) = watch::channel(view.last_applied);
        SharedState {
            view: Arc::new(RwLock::new(view)),
            applied: Arc::new(applied),
        }
    }

    /// A receiver of the last applied log id, which changes after every
    /// apply or snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<Option<LogId>> {
        self.applied.subscribe()
    }

    /// Reads the state under its lock; what `f` returns is consistent (the
    /// map and the last applied log id belong together). Keep `f` short:
    /// applying waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&StateView) -> R) -> R {
        f(&self.read_guard())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.read_guard().last_applied
    }

    /// What was applied after log index `after` (`None`: everything the
    /// journal holds), oldest first, or `Gap` when the journal no longer
    /// holds all of it.
    ///
    /// After a restart, entries re-applied from the log appear again: a
    /// consumer skips those at or below the index it stored.
    pub fn events_after(&self, after: Option<u64>) -> Result<Vec<Applied>, Gap> {
        self.events_page(after, usize::MAX)
    }

    /// The same, at most `limit` events: a consumer far behind copies a
    /// page at a time under the lock instead of the whole journal (applying
    /// waits while it copies).
    pub fn events_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<Applied>, Gap> {
        let view = self.read_guard();
        if let Some(floor) = view.journal_floor {
            if after.is_none_or(|a| a < floor) {
                return Err(Gap { after, floor });
            }
        }
        let start = match after {
            Some(a) => view.journal.partition_point(|e| e.log_id.index <= a),
            None => 0,
        };
        Ok(view.journal.range(start..).take(limit).cloned().collect())
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, StateView> {
        // A panic while applying cannot be undone by refusing to read:
        // the state is as far as it got.
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, StateView> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self) {
        let last = self.last_applied();
        self.applied.send_replace(last);
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.read_guard();
        f.debug_struct("SharedState")
            .field("last_applied", &view.last_applied)
            .field("keys", &view.kv.len())
            .field("journal", &view.journal.len())
            .finish()
    }
}

/// What a snapshot holds, as it is read back.
#[derive(Deserialize)]
struct SnapshotState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    kv: KvState,
}

/// What a snapshot holds, as it is written from the live state.
#[derive(Serialize)]
pub(crate) struct SnapshotStateRef<'a> {
    pub(crate) last_applied: &'a Option<LogId>,
    pub(crate) membership: &'a StoredMembership,
    pub(crate) kv: &'a KvState,
}

/// `snapshot.json`: the metadata and the state.
#[derive(Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    state: SnapshotState,
}

/// The latest snapshot: its metadata and the bytes sent to followers.
#[derive(Clone)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine openraft drives. Cheap to clone: clones (the snapshot
/// builder) share the state and the current snapshot.
#[derive(Clone)]
pub struct StateMachineStore {
    dir: PathBuf,
    shared: SharedState,
    /// Also serializes the writes of `snapshot.json`.
    snapshot: Arc<Mutex<Option<CurrentSnapshot>>>,
    /// Moved on at every snapshot install (see `lease::RenewalStamp`).
    renewal_stamp: Option<RenewalStamp>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, starting from its latest snapshot
    /// when it has one.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        durable::create_private_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = durable::tmp_path(&path);
        if tmp.exists() {
            // An interrupted write, never the snapshot.
            fs::remove_file(&tmp).map_err(|e| StoreError::write(&tmp, e))?;
        }
        let mut view = StateView {
            kv: KvState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            journal: VecDeque::new(),
            journal_floor: None,
            journal_capacity: JOURNAL_CAPACITY,
        };
        let mut current = None;
        match fs::read(&path) {
            Ok(bytes) => {
                // The log is purged up to the snapshot: a damaged one
                // cannot be replaced by anything here, so refuse to start.
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&path, e))?;
                let data = serde_json::to_vec(&SnapshotStateRef {
                    last_applied: &file.state.last_applied,
                    membership: &file.state.membership,
                    kv: &file.state.kv,
                })
                .map_err(|e| StoreError::corrupt(&path, e))?;
                view.kv = file.state.kv;
                view.last_applied = file.meta.last_log_id;
                view.membership = file.meta.last_membership.clone();
                // Nothing before the snapshot was applied one by one here.
                view.journal_floor = file.meta.last_log_id.map(|l| l.index);
                current = Some(CurrentSnapshot {
                    meta: file.meta,
                    data,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::read(&path, e)),
        }
        Ok(StateMachineStore {
            renewal_stamp: None,
            dir: dir.to_path_buf(),
            shared: SharedState::new(view),
            snapshot: Arc::new(Mutex::new(current)),
        })
    }

    /// The read-only handle the daemon keeps.
    /// Moves `stamp` on at every snapshot install.
    pub fn with_renewal_stamp(mut self, stamp: RenewalStamp) -> Self {
        self.renewal_stamp = Some(stamp);
        self
    }

    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    /// The size of the latest snapshot's state, for the metric.
    pub fn snapshot_bytes(&self) -> Option<u64> {
        self.lock_snapshot().as_ref().map(|s| s.data.len() as u64)
    }

    /// The latest snapshot's metadata.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock_snapshot().as_ref().map(|s| s.meta.clone())
    }

    fn lock_snapshot(&self) -> MutexGuard<'_, Option<CurrentSnapshot>> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `snapshot.json` and makes it the current snapshot, unless a
    /// newer one is current already.
    fn save_snapshot(&self, snapshot: CurrentSnapshot) -> Result<(), StoreError> {
        let mut current = self.lock_snapshot();
        if let Some(existing) = current.as_ref() {
            if existing.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        let path = self.dir.join(SNAPSHOT_FILE);
        let meta = serde_json::to_vec(&snapshot.meta).map_err(|e| StoreError::corrupt(&path, e))?;
        // Both halves are JSON already: joining them avoids parsing the
        // state again to embed it.
        let mut bytes = Vec::with_capacity(meta.len() + snapshot.data.len() + 32);
        bytes.extend_from_slice(b"{\"meta\":");
        bytes.extend_from_slice(&meta);
        bytes.extend_from_slice(b",\"state\":");
        bytes.extend_from_slice(&snapshot.data);
        bytes.extend_from_slice(b"}\n");
        durable::atomic_write(&path, &bytes).map_err(|e| StoreError::write(&path, e))?;
        *current = Some(snapshot);
        Ok(())
    }
}

fn snapshot_id(last: Option<LogId>) -> String {
    // Two snapshots at the same log id may differ in bytes (the order of
    // the remembered request ids): a random part tells them apart.
    match last {
        Some(l) => format!("{}-{}-{:016x}", l.leader_id, l.index, fastrand::u64(..)),
        None => format!("empty-{:016x}", fastrand::u64(..)),
    }
}

impl StateMachineStore {
    /// Serializes and saves a snapshot of a copy of the state (on a
    /// blocking thread: see `build_snapshot`).
    fn write_built_snapshot(
        &self,
        last_applied: Option<LogId>,
        membership: StoredMembership,
        kv: KvState,
    ) -> Result<CurrentSnapshot, StoreError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let data = serde_json::to_vec(&SnapshotStateRef {
            last_applied: &last_applied,
            membership: &membership,
            kv: &kv,
        })
        .map_err(|e| StoreError::corrupt(&path, e))?;
        let snapshot = CurrentSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id: snapshot_id(last_applied),
            },
            data,
        };
        self.save_snapshot(snapshot.clone())?;
        Ok(snapshot)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // The state is copied under the lock (applying waits only for the
        // copy); its JSON (some 2 MB with the remembered request ids) and
        // the file's write and fsyncs are made on a blocking thread, so
        // that the Raft runtime's thread goes on appending, replicating
        // and answering meanwhile instead of stalling every write in
        // flight each `snapshot_every` entries.
        let (last_applied, membership, kv) = self
            .shared
            .read(|view| (view.last_applied, view.membership.clone(), view.kv.clone()));
        let store = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            store.write_built_snapshot(last_applied, membership, kv)
        })
        .await
        .map_err(|e| {
            StoreError::write(
                &self.dir.join(SNAPSHOT_FILE),
                io::Error::other(e.to_string()),
            )
            .write_snapshot()
        })?
        .map_err(|e| e.write_snapshot())?;
        Ok(Snapshot {
            meta: built.meta,
            snapshot: Box::new(Cursor::new(built.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let view = self.shared.read_guard();
        Ok((view.last_applied, view.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        {
            let mut guard = self.shared.write_guard();
            let view = &mut *guard;
            for entry in entries {
                let log_id = entry.log_id;
                view.last_applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Blank => outcomes.push(Outcome::Nothing),
                    EntryPayload::Normal(proposal) => {
                        let (outcome, applied) = view.kv.apply(&proposal);
                        let event = match applied {
                            Some(crate::kv::Applied::Key(change)) => Some(AppliedEvent::Change {
                                change,
                                method: proposal.command.method(),
                                request_id: proposal.request_id,
                                requester: proposal.requester,
                            }),
                            Some(crate::kv::Applied::Coordinator { previous, record }) => {
                                Some(AppliedEvent::Coordinator {
                                    previous,
                                    record,
                                    method: proposal.command.method(),
                                    requester: proposal.requester,
                                })
                            }
                            None => None,
                        };
                        if let Some(event) = event {
                            view.push(Applied { log_id, event });
                        }
                        outcomes.push(outcome);
                    }
                    EntryPayload::Membership(membership) => {
                        view.membership = StoredMembership::new(Some(log_id), membership);
                        let event = AppliedEvent::Membership(view.membership.clone());
                        view.push(Applied { log_id, event });
                        outcomes.push(Outcome::Nothing);
                    }
                }
            }
        }
        self.shared.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: SnapshotState = serde_json::from_slice(&data).map_err(|e| {
            StoreError::BadSnapshot {
                reason: e.to_string(),
            }
            .read_snapshot()
        })?;
        // On disk before the state changes: once openraft hears back it
        // purges the log up to the snapshot.
        self.save_snapshot(CurrentSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(|e| e.write_snapshot())?;
        // The snapshot may cover renewals this node never appended: they
        // were sent before now (see `lease::RenewalStamp`).
        if let Some(stamp) = &self.renewal_stamp {
            stamp.observe();
        }
        {
            let mut view = self.shared.write_guard();
            view.kv = state.kv;
            // openraft's metadata is the authority on what the snapshot
            // covers; the copy inside the state is for operators reading
            // the file.
            view.last_applied = meta.last_log_id;
            view.membership = meta.last_membership.clone();
            if let Some(log_id) = meta.last_log_id {
                view.push(Applied {
                    log_id,
                    event: AppliedEvent::SnapshotInstalled,
                });
            }
        }
        self.shared.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.lock_snapshot().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("dir", &self.dir)
            .field("shared", &self.shared)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};
    use crate::types::Member;
    use openraft::testing::log_id;
    use openraft::Membership;
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    fn set(index: u64, key: &str, value: serde_json::Value) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Proposal {
                command: Command::Set {
                    key: key.into(),
                    value,
                },
                request_id: Some(format!("r{index}")),
                requester: Requester {
                    actor: "postgres@a".into(),
                    client_addr: None,
                    node_id: "a".into(),
                },
            }),
        }
    }

    fn membership(index: u64) -> Entry {
        let nodes: BTreeMap<u64, Member> = [(
            1,
            Member {
                node_id: "a".into(),
                grpc: "a:7400".into(),
                priority: 50,
                role: crate::types::Role::Data,
            },
        )]
        .into();
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
        }
    }

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_built_snapshot_restores_the_map_membership_and_last_applied_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply([
            blank(1),
            membership(2),
            set(3, "a", json!(1)),
            set(4, "b", json!("x")),
        ])
        .await
        .unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 4)));
        let before = sm.shared().read(|v| v.kv().clone());
        let members = sm.applied_state().await.unwrap().1;
        drop(sm);

        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 4)));
        assert_eq!(membership, members);
        assert_eq!(membership.log_id(), &Some(log_id(1, 1, 2)));
        assert_eq!(sm.shared().read(|v| v.kv().clone()), before);
        assert_eq!(
            sm.get_current_snapshot().await.unwrap().unwrap().meta,
            built.meta
        );
        // The request ids travel in the snapshot too: a retry after a
        // restart is still applied once.
        let mut retry = set(5, "a", json!(99));
        if let EntryPayload::Normal(p) = &mut retry.payload {
            p.request_id = Some("r3".into());
        }
        let outcomes = sm.apply([retry]).await.unwrap();
        assert_eq!(outcomes[0], Outcome::Written { previous: None });
        assert_eq!(
            sm.shared().read(|v| v.kv().get("a").cloned()),
            Some(json!(1))
        );
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_state_and_survives_a_reopen() {
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = StateMachineStore::open(leader_dir.path()).unwrap();
        leader
            .apply([membership(1), set(2, "k", json!("leader"))])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut follower = StateMachineStore::open(dir.path()).unwrap();
        follower
            .apply([set(1, "stale", json!(true))])
            .await
            .unwrap();
        let shared = follower.shared();
        let mut applied = shared.subscribe();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();

        assert!(applied.has_changed().unwrap());
        assert_eq!(*applied.borrow_and_update(), Some(log_id(1, 1, 2)));
        assert_eq!(shared.read(|v| v.kv().get("stale").cloned()), None);
        assert_eq!(
            shared.read(|v| v.kv().get("k").cloned()),
            Some(json!("leader"))
        );
        let events = shared.events_after(Some(1)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, AppliedEvent::SnapshotInstalled);
        drop(follower);

        let mut follower = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 1, 2))
        );
        assert_eq!(
            follower.shared().read(|v| v.kv().get("k").cloned()),
            Some(json!("leader"))
        );
        assert_eq!(follower.snapshot_meta(), Some(snapshot.meta));
    }

    #[tokio::test]
    async fn a_snapshot_that_cannot_be_read_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply([set(1, "a", json!(1))]).await.unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(1, 1, 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "x".into(),
        };
        let err = sm
            .install_snapshot(&meta, Box::new(Cursor::new(b"{oops".to_vec())))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 1)));
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_journal_lists_changes_and_memberships_in_order_with_who_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let shared = sm.shared();
        let mut applied = shared.subscribe();
        sm.apply([
            blank(1),
            membership(2),
            set(3, "a", json!(1)),
            set(4, "a", json!(2)),
        ])
        .await
        .unwrap();
        assert_eq!(*applied.borrow_and_update(), Some(log_id(1, 1, 4)));

        let events = shared.events_after(None).unwrap();
        let indexes: Vec<u64> = events.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [2, 3, 4]);
        assert!(matches!(events[0].event, AppliedEvent::Membership(_)));
        match &events[2].event {
            AppliedEvent::Change {
                change,
                method,
                request_id,
                requester,
            } => {
                assert_eq!(change.old, Some(json!(1)));
                assert_eq!(change.new, Some(json!(2)));
                assert_eq!(*method, "state.set");
                assert_eq!(request_id.as_deref(), Some("r4"));
                assert_eq!(requester.actor, "postgres@a");
            }
            other => panic!("expected a change, got {other:?}"),
        }
        let later: Vec<u64> = shared
            .events_after(Some(3))
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(later, [4]);
        assert!(shared.events_after(Some(4)).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_consumer_behind_what_the_journal_holds_is_told_of_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let shared = sm.shared();
        shared.write_guard().journal_capacity = 3;
        sm.apply((1..=5).map(|i| set(i, &format!("k{i}"), json!(i))))
            .await
            .unwrap();
        // Entries 1 and 2 were dropped for room.
        assert_eq!(
            shared.events_after(None),
            Err(Gap {
                after: None,
                floor: 2
            })
        );
        assert_eq!(
            shared.events_after(Some(1)),
            Err(Gap {
                after: Some(1),
                floor: 2
            })
        );
        let from_two: Vec<u64> = shared
            .events_after(Some(2))
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(from_two, [3, 4, 5]);
    }

    #[tokio::test]
    async fn after_a_restart_from_a_snapshot_only_later_entries_are_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply([set(1, "a", json!(1)), set(2, "b", json!(2))])
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply([set(3, "c", json!(3))]).await.unwrap();
        drop(sm);

        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let shared = sm.shared();
        assert_eq!(
            shared.events_after(Some(1)),
            Err(Gap {
                after: Some(1),
                floor: 2
            })
        );
        assert!(shared.events_after(Some(2)).unwrap().is_empty());
        // openraft re-applies the committed entry 3 from the log.
        sm.apply([set(3, "c", json!(3))]).await.unwrap();
        let again = shared.events_after(Some(2)).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].log_id.index, 3);
    }
}

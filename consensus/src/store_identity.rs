//! Who this store is: its Raft id (one incarnation of the node, drawn at
//! random when the store is created) and the cluster it belongs to, kept in
//! `identity.json` in the store directory.
//!
//! A wiped store comes back with a new Raft id, so the cluster refuses it
//! until it is removed and added again. The daemon reads the identity at
//! start and sets the cluster id at `cluster init` and when it is added.

use crate::durable;
use crate::store::StoreError;
use crate::types::RaftId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The file name of the identity in the store directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// This store's incarnation and cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// Never zero: zero is what an unset id looks like.
    pub raft_id: RaftId,
    /// `None` until `cluster init` or `cluster add` gave it one.
    pub cluster_id: Option<String>,
}

impl StoreIdentity {
    /// Reads the identity in `dir`, or creates the directory and a new
    /// identity with a fresh random Raft id when there is none.
    pub fn open_or_create(dir: &Path) -> Result<Self, StoreError> {
        durable::create_private_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = Self::path(dir);
        match fs::read(&path) {
            Ok(bytes) => {
                let identity: StoreIdentity =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&path, e))?;
                if identity.raft_id == 0 {
                    return Err(StoreError::corrupt(&path, "its raft_id is 0"));
                }
                Ok(identity)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = StoreIdentity {
                    raft_id: fastrand::u64(1..=u64::MAX),
                    cluster_id: None,
                };
                identity.save(dir)?;
                Ok(identity)
            }
            Err(e) => Err(StoreError::read(&path, e)),
        }
    }

    /// Records the cluster this store belongs to, durably.
    pub fn set_cluster_id(
        &mut self,
        dir: &Path,
        cluster_id: impl Into<String>,
    ) -> Result<(), StoreError> {
        let mut next = self.clone();
        next.cluster_id = Some(cluster_id.into());
        next.save(dir)?;
        *self = next;
        Ok(())
    }

    /// Forgets the cluster (the store waits to be added again), durably.
    pub fn clear_cluster_id(&mut self, dir: &Path) -> Result<(), StoreError> {
        let mut next = self.clone();
        next.cluster_id = None;
        next.save(dir)?;
        *self = next;
        Ok(())
    }

    /// Where the identity of the store in `dir` lives.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_FILE)
    }

    fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = Self::path(dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StoreError::corrupt(&path, e))?;
        durable::atomic_write(&path, &bytes).map_err(|e| StoreError::write(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_a_non_zero_raft_id_and_no_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let identity = StoreIdentity::open_or_create(&dir.path().join("raft")).unwrap();
        assert_ne!(identity.raft_id, 0);
        assert_eq!(identity.cluster_id, None);
    }

    #[test]
    fn the_cluster_id_survives_a_reopen_and_can_be_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = StoreIdentity::open_or_create(dir.path()).unwrap();
        identity.set_cluster_id(dir.path(), "c-1").unwrap();
        let again = StoreIdentity::open_or_create(dir.path()).unwrap();
        assert_eq!(again, identity);
        assert_eq!(again.cluster_id.as_deref(), Some("c-1"));
        identity.clear_cluster_id(dir.path()).unwrap();
        let cleared = StoreIdentity::open_or_create(dir.path()).unwrap();
        assert_eq!(cleared.cluster_id, None);
        assert_eq!(cleared.raft_id, identity.raft_id);
    }

    #[test]
    fn a_wiped_store_comes_back_with_another_raft_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreIdentity::open_or_create(dir.path()).unwrap();
        fs::remove_file(StoreIdentity::path(dir.path())).unwrap();
        let second = StoreIdentity::open_or_create(dir.path()).unwrap();
        assert_ne!(first.raft_id, second.raft_id);
    }

    #[test]
    fn a_damaged_identity_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(StoreIdentity::path(dir.path()), b"{not json").unwrap();
        let err = StoreIdentity::open_or_create(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("identity.json is damaged"),
            "{err}"
        );
    }
}

//! The Raft store in one directory (`raft.dir`): opens its identity,
//! its log (with the vote and the committed log id) and its state machine
//! together, and names what went wrong when it cannot.
//!
//! Files in the directory:
//! - `identity.json`: this incarnation's Raft id and cluster id;
//! - `log.bin`: the Raft log, framed records with checksums;
//! - `vote.json`, `committed.json`: the vote and the committed log id;
//! - `snapshot.json`: the latest snapshot of the state machine.
//!
//! The daemon calls `open` once at start and hands the log store and the
//! state machine to openraft.

use crate::log_store::{LogStore, LOG_FILE};
use crate::state_machine::StateMachineStore;
use crate::store_identity::{StoreIdentity, IDENTITY_FILE};
use crate::types::StorageError;
use openraft::{AnyError, StorageIOError};
use std::io;
use std::path::{Path, PathBuf};

/// Why the store cannot be used, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the Raft store directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is damaged ({reason}); the store cannot be opened", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} holds a Raft log or vote but no {IDENTITY_FILE}: the store is incomplete; \
         move the directory away and add this node to the cluster again",
        .dir.display()
    )]
    IdentityMissing { dir: PathBuf },
    #[error("a snapshot received from the leader cannot be read ({reason})")]
    BadSnapshot { reason: String },
    #[error(
        "an earlier write to {} failed ({reason}); the log refuses further writes \
         until the daemon restarts and reads it back from disk",
        .path.display()
    )]
    Broken { path: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        StoreError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        StoreError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl ToString) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// As openraft's error for a failed write of log entries.
    pub(crate) fn write_logs(&self) -> StorageError {
        StorageIOError::write_logs(AnyError::new(self)).into()
    }

    /// As openraft's error for a failed write of the vote.
    pub(crate) fn write_vote(&self) -> StorageError {
        StorageIOError::write_vote(AnyError::new(self)).into()
    }

    /// As openraft's error for a failed write of a snapshot.
    pub(crate) fn write_snapshot(&self) -> StorageError {
        StorageIOError::write_snapshot(None, AnyError::new(self)).into()
    }

    /// As openraft's error for a snapshot that cannot be read.
    pub(crate) fn read_snapshot(&self) -> StorageError {
        StorageIOError::read_snapshot(None, AnyError::new(self)).into()
    }

    /// As openraft's error for any other write.
    pub(crate) fn write_other(&self) -> StorageError {
        StorageIOError::write(AnyError::new(self)).into()
    }
}

/// Opens (creating it when absent) the store in `dir`: its identity, its
/// log store and its state machine.
///
/// A directory that holds a log or a vote but no identity is refused: a new
/// Raft id beside an old vote would be a member pretending to be another.
pub fn open(dir: &Path) -> Result<(StoreIdentity, LogStore, StateMachineStore), StoreError> {
    let has_identity = dir.join(IDENTITY_FILE).exists();
    let has_state = [LOG_FILE, crate::log_store::VOTE_FILE]
        .iter()
        .any(|name| dir.join(name).exists());
    if !has_identity && has_state {
        return Err(StoreError::IdentityMissing {
            dir: dir.to_path_buf(),
        });
    }
    let identity = StoreIdentity::open_or_create(dir)?;
    let log = LogStore::open(dir)?;
    let sm = StateMachineStore::open(dir)?.with_renewal_stamp(log.renewal_stamp());
    Ok((identity, log, sm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_its_raft_id_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _, _) = open(dir.path()).unwrap();
        let (second, _, _) = open(dir.path()).unwrap();
        assert_ne!(first.raft_id, 0);
        assert_eq!(first.raft_id, second.raft_id);
    }

    #[test]
    fn a_store_with_a_log_but_no_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::IdentityMissing { .. }), "{err}");
        assert!(err.to_string().contains("identity.json"));
    }

    #[test]
    fn an_error_names_the_file_in_operator_words() {
        let err = StoreError::write(
            Path::new("/var/lib/steep-repl/raft/vote.json"),
            io::Error::other("No space left on device"),
        );
        assert_eq!(
            err.to_string(),
            "cannot write /var/lib/steep-repl/raft/vote.json: No space left on device"
        );
    }
}

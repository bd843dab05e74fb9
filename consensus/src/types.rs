//! The Raft type configuration and what a member of the cluster is.
//!
//! A member's Raft id is a random u64 drawn when its store is created (an
//! incarnation, see `store_identity`): a node whose store was wiped comes
//! back with a new id and is not the member it was. The string node_id, its
//! gRPC address, its coordinator priority and its role are the member's
//! data, carried in the membership config of the log.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// The Raft id of a store (one incarnation of a node).
pub type RaftId = u64;

openraft::declare_raft_types!(
    /// steep-repl's Raft: proposals of the replicated state map, members
    /// described by `Member`, snapshots as bytes (sent in chunks).
    pub TypeConfig:
        D = crate::command::Proposal,
        R = crate::command::Outcome,
        NodeId = RaftId,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What a member is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Has a PostgreSQL; may become coordinator.
    #[default]
    Data,
    /// Votes, has no PostgreSQL, never coordinator.
    Witness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Witness => "witness",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member of the cluster as the membership config records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node_id its certificate names.
    pub node_id: String,
    /// Where its daemon answers gRPC, `host:port`.
    pub grpc: String,
    /// Coordinator priority, 1..=100 (higher preferred).
    pub priority: u8,
    pub role: Role,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.node_id, self.grpc, self.role)
    }
}

/// A log id of this configuration.
pub type LogId = openraft::LogId<RaftId>;
/// A vote of this configuration.
pub type Vote = openraft::Vote<RaftId>;
/// A log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// The membership as stored in the log and snapshots.
pub type StoredMembership = openraft::StoredMembership<RaftId, Member>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<RaftId>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, Member>;
/// A snapshot of this configuration.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The Raft handle of this configuration.
pub type Raft = openraft::Raft<TypeConfig>;

//! What travels in the Raft log: proposals of changes to the replicated
//! state map, with who asked for them, and the outcome of applying one.
//!
//! The requester travels inside the entry so that every node writes the same
//! audit row when it applies it (docs/operations.md, "The audit trail").

use crate::coordinator::{CoordinatorCommand, CoordinatorRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A change to the replicated state map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Sets `key` to `value`, whatever it held.
    Set { key: String, value: Value },
    /// Sets `key` to `value` only if it holds `expected` (`None`: absent).
    Cas {
        key: String,
        expected: Option<Value>,
        value: Value,
    },
    /// Removes `key` (nothing happens when it is absent).
    Delete { key: String },
    /// A change to the coordinator record (not a key of the map).
    Coordinator(CoordinatorCommand),
}

impl Command {
    /// The key of the map the command changes (`None`: the coordinator
    /// record).
    pub fn key(&self) -> Option<&str> {
        match self {
            Command::Set { key, .. } | Command::Cas { key, .. } | Command::Delete { key } => {
                Some(key)
            }
            Command::Coordinator(_) => None,
        }
    }

    /// The method name the command is asked for by (`state.set`, ...).
    pub fn method(&self) -> &'static str {
        match self {
            Command::Set { .. } => "state.set",
            Command::Cas { .. } => "state.cas",
            Command::Delete { .. } => "state.delete",
            Command::Coordinator(c) => c.method(),
        }
    }
}

/// Who asked for a change, as the audit row records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// `role@host`: the local user of the IPC client and the node it asked.
    pub actor: String,
    /// The client's address, when it has one (IPC clients are local).
    pub client_addr: Option<String>,
    /// The node whose daemon received the request.
    pub node_id: String,
}

/// One proposal: the application data of a log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
    /// Chosen by the client; a retry with the same id is applied once and
    /// answers the first outcome.
    pub request_id: Option<String>,
    pub requester: Requester,
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A set, or a compare-and-set whose expectation held: the value before.
    Written { previous: Option<Value> },
    /// A delete: the value before (`None`: it was absent already).
    Deleted { previous: Option<Value> },
    /// A compare-and-set whose expectation did not hold: what the key holds.
    CasFailed { current: Option<Value> },
    /// A coordinator command: whether it was accepted, and the record after.
    Coordinator {
        accepted: bool,
        record: CoordinatorRecord,
    },
    /// An entry that is no proposal (a leader's blank entry, a membership).
    #[default]
    Nothing,
}

impl Outcome {
    /// Whether the state changed (or, for a retry, changed the first time).
    pub fn took_effect(&self) -> bool {
        matches!(self, Outcome::Written { .. } | Outcome::Deleted { .. })
    }
}

//! The status of a node in the registry, as one type for every face that
//! carries it: the registry rows (`steep_repl.nodes.status`, whose CHECK
//! constraint lists the same five words), the peer tracker, IPC and gRPC.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Never answered, and not for long enough to call it gone.
    Unknown,
    /// Answering, fast, its PostgreSQL up.
    Healthy,
    /// Answering, but slow or with its PostgreSQL down.
    Degraded,
    /// No answer for `unreachable_after`.
    Unreachable,
    /// Taken out by an operator; never set by a daemon.
    Offline,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 5] = [
        NodeStatus::Unknown,
        NodeStatus::Healthy,
        NodeStatus::Degraded,
        NodeStatus::Unreachable,
        NodeStatus::Offline,
    ];

    /// The registry spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Healthy => "healthy",
            NodeStatus::Degraded => "degraded",
            NodeStatus::Unreachable => "unreachable",
            NodeStatus::Offline => "offline",
        }
    }

    /// The node answers (counts towards this node's majority).
    pub fn answering(self) -> bool {
        matches!(self, NodeStatus::Healthy | NodeStatus::Degraded)
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of the five statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node status \"{0}\"")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for NodeStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NodeStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_string()))
    }
}

/// How sqlx reads the column (`#[sqlx(try_from = "String")]`).
impl TryFrom<String> for NodeStatus {
    type Error = UnknownStatus;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_spelled_the_same_in_json_sql_and_text() {
        for status in NodeStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(status.as_str().parse::<NodeStatus>(), Ok(status));
        }
        assert!("sick".parse::<NodeStatus>().is_err());
    }
}

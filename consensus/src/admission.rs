//! Whether a Raft message may be accepted (docs/protocol.md,
//! "steep.repl.v1.Raft"; docs/security.md).
//!
//! Every message carries the cluster id, the sender's node_id and Raft id,
//! and the Raft id it is meant for. It is accepted only when it belongs to
//! this node's cluster, is meant for this store's incarnation, the sender's
//! certificate names the node_id it claims, and that node_id is the member
//! the sender's Raft id belongs to. Pure logic: the gRPC service calls it
//! with what it read off the TLS session and the current membership.

use crate::types::{Member, RaftId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who sent a Raft message, to whom, in which cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster_id: String,
    pub from_node_id: String,
    pub from_raft_id: RaftId,
    pub to_raft_id: RaftId,
}

/// What the receiving node knows when it judges a message.
pub struct Receiver<'a> {
    /// This store's Raft id.
    pub raft_id: RaftId,
    /// The cluster this store belongs to; `None` while it waits to be added.
    pub cluster_id: Option<&'a str>,
    /// Every member (voters and learners) of the latest membership this
    /// node knows; empty while a newly added node has not received it yet.
    pub members: &'a BTreeMap<RaftId, Member>,
}

/// Why a message was refused, in words for the log and the audit row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this node belongs to no cluster yet (it waits for `steep-repl cluster add`)")]
    NoCluster,
    #[error("the message is for cluster {theirs}, this node belongs to cluster {ours}")]
    WrongCluster { ours: String, theirs: String },
    #[error("the message is for Raft id {theirs:016x}, this node's store is {ours:016x} (its store was recreated: remove the node and add it again)")]
    WrongIncarnation { ours: RaftId, theirs: RaftId },
    #[error("the sender claims node_id {claimed:?} but its certificate names {names:?}")]
    CertificateMismatch { claimed: String, names: Vec<String> },
    #[error("Raft id {raft_id:016x} (claimed by {claimed:?}) is not a member of this cluster")]
    NotAMember { raft_id: RaftId, claimed: String },
    #[error("Raft id {raft_id:016x} belongs to member {member:?}, not to {claimed:?}")]
    MemberMismatch {
        raft_id: RaftId,
        member: String,
        claimed: String,
    },
}

impl Refusal {
    /// A stable word for metrics and the audit row.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoCluster => "no_cluster",
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::WrongIncarnation { .. } => "wrong_incarnation",
            Refusal::CertificateMismatch { .. } => "certificate_mismatch",
            Refusal::NotAMember { .. } => "not_a_member",
            Refusal::MemberMismatch { .. } => "member_mismatch",
        }
    }
}

/// Accepts or refuses one message. `cert_names` are the CN and SANs of the
/// sender's certificate; `None` when the operator chose plaintext gRPC
/// (`grpc.tls.insecure`), where only the cluster and membership rules apply.
pub fn admit(
    envelope: &Envelope,
    cert_names: Option<&[String]>,
    receiver: &Receiver<'_>,
) -> Result<(), Refusal> {
    let Some(ours) = receiver.cluster_id else {
        return Err(Refusal::NoCluster);
    };
    if envelope.cluster_id != ours {
        return Err(Refusal::WrongCluster {
            ours: ours.to_string(),
            theirs: envelope.cluster_id.clone(),
        });
    }
    if envelope.to_raft_id != receiver.raft_id {
        return Err(Refusal::WrongIncarnation {
            ours: receiver.raft_id,
            theirs: envelope.to_raft_id,
        });
    }
    if let Some(names) = cert_names {
        if !names.iter().any(|n| n == &envelope.from_node_id) {
            return Err(Refusal::CertificateMismatch {
                claimed: envelope.from_node_id.clone(),
                names: names.to_vec(),
            });
        }
    }
    // A node that was just added has not received the membership yet: the
    // leader's first messages bring it. The cluster id it adopted when it
    // was added, and the certificate, are what it can check until then.
    if receiver.members.is_empty() {
        return Ok(());
    }
    match receiver.members.get(&envelope.from_raft_id) {
        None => Err(Refusal::NotAMember {
            raft_id: envelope.from_raft_id,
            claimed: envelope.from_node_id.clone(),
        }),
        Some(member) if member.node_id != envelope.from_node_id => Err(Refusal::MemberMismatch {
            raft_id: envelope.from_raft_id,
            member: member.node_id.clone(),
            claimed: envelope.from_node_id.clone(),
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> BTreeMap<RaftId, Member> {
        [(1, "n1"), (2, "n2")]
            .into_iter()
            .map(|(id, name)| {
                (
                    id,
                    Member {
                        node_id: name.into(),
                        grpc: format!("{name}:5433"),
                        priority: 50,
                        role: Default::default(),
                    },
                )
            })
            .collect()
    }

    fn envelope(from: &str, from_raft_id: RaftId) -> Envelope {
        Envelope {
            cluster_id: "c1".into(),
            from_node_id: from.into(),
            from_raft_id,
            to_raft_id: 2,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_member_named_by_its_certificate_is_accepted() {
        let m = members();
        let r = Receiver {
            raft_id: 2,
            cluster_id: Some("c1"),
            members: &m,
        };
        assert_eq!(admit(&envelope("n1", 1), Some(&names(&["n1"])), &r), Ok(()));
    }

    #[test]
    fn a_valid_certificate_claiming_another_members_id_is_refused() {
        let m = members();
        let r = Receiver {
            raft_id: 2,
            cluster_id: Some("c1"),
            members: &m,
        };
        // n3's certificate, claiming to be n1.
        let refusal = admit(&envelope("n1", 1), Some(&names(&["n3"])), &r).unwrap_err();
        assert_eq!(refusal.kind(), "certificate_mismatch");
        // n1's certificate, using n2's Raft id.
        let refusal = admit(&envelope("n1", 2), Some(&names(&["n1"])), &r).unwrap_err();
        assert_eq!(refusal.kind(), "member_mismatch");
    }

    #[test]
    fn a_non_member_is_refused_so_a_removed_node_cannot_disturb_elections() {
        let m = members();
        let r = Receiver {
            raft_id: 2,
            cluster_id: Some("c1"),
            members: &m,
        };
        let refusal = admit(&envelope("n9", 9), Some(&names(&["n9"])), &r).unwrap_err();
        assert_eq!(refusal.kind(), "not_a_member");
    }

    #[test]
    fn a_wiped_store_refuses_messages_meant_for_its_old_incarnation() {
        let m = members();
        let r = Receiver {
            raft_id: 77,
            cluster_id: Some("c1"),
            members: &m,
        };
        let refusal = admit(&envelope("n1", 1), Some(&names(&["n1"])), &r).unwrap_err();
        assert_eq!(refusal.kind(), "wrong_incarnation");
        assert!(refusal
            .to_string()
            .contains("remove the node and add it again"));
    }

    #[test]
    fn an_empty_store_and_another_cluster_are_refused() {
        let m = BTreeMap::new();
        let empty = Receiver {
            raft_id: 2,
            cluster_id: None,
            members: &m,
        };
        assert_eq!(
            admit(&envelope("n1", 1), Some(&names(&["n1"])), &empty),
            Err(Refusal::NoCluster)
        );
        let other = Receiver {
            raft_id: 2,
            cluster_id: Some("c2"),
            members: &m,
        };
        let refusal = admit(&envelope("n1", 1), Some(&names(&["n1"])), &other).unwrap_err();
        assert_eq!(refusal.kind(), "wrong_cluster");
    }

    #[test]
    fn a_just_added_node_accepts_its_cluster_before_it_knows_the_membership() {
        let m = BTreeMap::new();
        let r = Receiver {
            raft_id: 2,
            cluster_id: Some("c1"),
            members: &m,
        };
        assert_eq!(admit(&envelope("n1", 1), Some(&names(&["n1"])), &r), Ok(()));
        assert!(admit(&envelope("n1", 1), Some(&names(&["n4"])), &r).is_err());
    }
}

//! The replicated state map (`coordinator_state`) as the state machine holds
//! it: keys to JSON values, and the outcomes of recent request ids so that a
//! client's retry is applied once.
//!
//! Pure and deterministic: every node applies the same entries in the same
//! order and reaches the same map. The state machine persists it in
//! snapshots; the daemon projects it into PostgreSQL.

use crate::command::{Command, Outcome, Proposal};
use crate::coordinator::CoordinatorRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How many request ids are remembered. A client retries within seconds;
/// this many writes later an id is forgotten and a retry would apply again.
pub const REMEMBERED_REQUESTS: usize = 16_384;

/// The map and the remembered request ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvState {
    data: BTreeMap<String, Value>,
    /// request id -> the outcome of its first application.
    requests: HashMap<String, Outcome>,
    /// The remembered ids, oldest first.
    request_order: VecDeque<String>,
    /// The coordinator (absent from states written before it existed).
    #[serde(default)]
    coordinator: CoordinatorRecord,
}

/// What one application changed, for the projection and the audit row.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A key of the map changed.
    Key(Change),
    /// The coordinator record changed (a grant, a handover request or a
    /// release; renewals change only the count and are not reported).
    Coordinator {
        previous: CoordinatorRecord,
        record: CoordinatorRecord,
    },
}

/// A changed key of the map.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub old: Option<Value>,
    /// `None`: the key was deleted.
    pub new: Option<Value>,
}

impl KvState {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// Keys starting with `prefix`, in order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.data
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The coordinator record.
    pub fn coordinator(&self) -> &CoordinatorRecord {
        &self.coordinator
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The whole map, for snapshots of the projection.
    pub fn entries(&self) -> &BTreeMap<String, Value> {
        &self.data
    }

    /// Applies one proposal: its outcome and, when the map changed, what
    /// changed. A request id seen before answers its first outcome and
    /// changes nothing.
    pub fn apply(&mut self, proposal: &Proposal) -> (Outcome, Option<Applied>) {
        if let Some(id) = &proposal.request_id {
            if let Some(outcome) = self.requests.get(id) {
                return (outcome.clone(), None);
            }
        }
        let (outcome, change) = self.apply_command(&proposal.command);
        if let Some(id) = &proposal.request_id {
            self.remember(id.clone(), outcome.clone());
        }
        (outcome, change)
    }

    fn apply_command(&mut self, command: &Command) -> (Outcome, Option<Applied>) {
        match command {
            Command::Coordinator(c) => {
                let previous = self.coordinator.clone();
                let accepted = self.coordinator.apply(c);
                let outcome = Outcome::Coordinator {
                    accepted,
                    record: self.coordinator.clone(),
                };
                let reported =
                    accepted && !matches!(c, crate::coordinator::CoordinatorCommand::Renew { .. });
                let applied = reported.then(|| Applied::Coordinator {
                    previous,
                    record: self.coordinator.clone(),
                });
                (outcome, applied)
            }
            Command::Set { key, value } => self.write(key, value),
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.data.get(key);
                if current != expected.as_ref() {
                    return (
                        Outcome::CasFailed {
                            current: current.cloned(),
                        },
                        None,
                    );
                }
                self.write(key, value)
            }
            Command::Delete { key } => {
                let previous = self.data.remove(key);
                let change = previous.clone().map(|old| {
                    Applied::Key(Change {
                        key: key.clone(),
                        old: Some(old),
                        new: None,
                    })
                });
                (Outcome::Deleted { previous }, change)
            }
        }
    }

    fn write(&mut self, key: &str, value: &Value) -> (Outcome, Option<Applied>) {
        let previous = self.data.insert(key.to_string(), value.clone());
        let change = Applied::Key(Change {
            key: key.to_string(),
            old: previous.clone(),
            new: Some(value.clone()),
        });
        (Outcome::Written { previous }, Some(change))
    }

    fn remember(&mut self, id: String, outcome: Outcome) {
        self.requests.insert(id.clone(), outcome);
        self.request_order.push_back(id);
        while self.request_order.len() > REMEMBERED_REQUESTS {
            if let Some(old) = self.request_order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    /// Replaces the coordinator record (`cluster force-new` only: the new
    /// cluster's record starts released, above every epoch known).
    pub(crate) fn restart_coordinator(&mut self, record: CoordinatorRecord) {
        self.coordinator = record;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Requester;
    use serde_json::json;

    fn proposal(command: Command, request_id: Option<&str>) -> Proposal {
        Proposal {
            command,
            request_id: request_id.map(str::to_string),
            requester: Requester::default(),
        }
    }

    fn set(key: &str, value: Value) -> Command {
        Command::Set {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn a_set_answers_the_previous_value_and_reports_the_change() {
        let mut kv = KvState::default();
        let (first, change) = kv.apply(&proposal(set("a", json!(1)), None));
        assert_eq!(first, Outcome::Written { previous: None });
        let new = match change {
            Some(Applied::Key(c)) => c.new,
            other => panic!("expected a changed key, got {other:?}"),
        };
        assert_eq!(new, Some(json!(1)));
        let (second, _) = kv.apply(&proposal(set("a", json!(2)), None));
        assert_eq!(
            second,
            Outcome::Written {
                previous: Some(json!(1))
            }
        );
        assert_eq!(kv.get("a"), Some(&json!(2)));
    }

    #[test]
    fn a_cas_applies_only_when_the_expected_value_is_there() {
        let mut kv = KvState::default();
        let absent = Command::Cas {
            key: "k".into(),
            expected: None,
            value: json!("x"),
        };
        assert!(kv.apply(&proposal(absent.clone(), None)).0.took_effect());
        // "absent" no longer holds.
        let (outcome, change) = kv.apply(&proposal(absent, None));
        assert_eq!(
            outcome,
            Outcome::CasFailed {
                current: Some(json!("x"))
            }
        );
        assert!(change.is_none());
        let swap = Command::Cas {
            key: "k".into(),
            expected: Some(json!("x")),
            value: json!("y"),
        };
        assert!(kv.apply(&proposal(swap, None)).0.took_effect());
        assert_eq!(kv.get("k"), Some(&json!("y")));
    }

    #[test]
    fn a_retried_request_id_is_applied_once_and_answers_the_first_outcome() {
        let mut kv = KvState::default();
        let cas = Command::Cas {
            key: "k".into(),
            expected: None,
            value: json!(1),
        };
        let (first, _) = kv.apply(&proposal(cas.clone(), Some("r1")));
        kv.apply(&proposal(set("k", json!(5)), None));
        let (retry, change) = kv.apply(&proposal(cas, Some("r1")));
        assert_eq!(retry, first);
        assert!(change.is_none());
        assert_eq!(kv.get("k"), Some(&json!(5)));
    }

    #[test]
    fn request_ids_are_forgotten_oldest_first_beyond_the_bound() {
        let mut kv = KvState::default();
        for i in 0..=REMEMBERED_REQUESTS {
            kv.apply(&proposal(set("k", json!(i)), Some(&format!("r{i}"))));
        }
        assert_eq!(kv.requests.len(), REMEMBERED_REQUESTS);
        assert!(!kv.requests.contains_key("r0"));
        assert!(kv.requests.contains_key("r1"));
    }

    #[test]
    fn delete_of_an_absent_key_changes_nothing() {
        let mut kv = KvState::default();
        let (outcome, change) = kv.apply(&proposal(Command::Delete { key: "x".into() }, None));
        assert_eq!(outcome, Outcome::Deleted { previous: None });
        assert!(change.is_none());
    }

    #[test]
    fn coordinator_commands_change_the_record_and_report_grants_but_not_renewals() {
        use crate::coordinator::CoordinatorCommand;
        let mut kv = KvState::default();
        let grant = Command::Coordinator(CoordinatorCommand::Grant {
            holder: "n1".into(),
            epoch: 1,
            renewals: 0,
        });
        let (outcome, applied) = kv.apply(&proposal(grant, None));
        assert!(
            matches!(outcome, Outcome::Coordinator { accepted: true, ref record } if record.epoch == 1)
        );
        assert!(
            matches!(applied, Some(Applied::Coordinator { ref previous, .. }) if previous.holder.is_none())
        );
        let renew = Command::Coordinator(CoordinatorCommand::Renew {
            holder: "n1".into(),
            epoch: 1,
        });
        let (outcome, applied) = kv.apply(&proposal(renew, None));
        assert!(matches!(
            outcome,
            Outcome::Coordinator { accepted: true, .. }
        ));
        assert!(applied.is_none());
        assert_eq!(kv.coordinator().renewals, 1);
        assert!(kv.is_empty(), "the record is not a key of the map");
    }

    #[test]
    fn a_state_written_before_the_coordinator_record_reads_with_none() {
        let old = r#"{"data":{"a.b":1},"requests":{},"request_order":[]}"#;
        let kv: KvState = serde_json::from_str(old).expect("old state");
        assert!(kv.coordinator().is_never_granted());
        assert_eq!(kv.get("a.b"), Some(&json!(1)));
    }

    #[test]
    fn list_returns_the_keys_under_a_prefix_in_order() {
        let mut kv = KvState::default();
        for key in ["b.2", "a.1", "b.1", "c"] {
            kv.apply(&proposal(set(key, json!(key)), None));
        }
        let keys: Vec<&String> = kv.list("b.").map(|(k, _)| k).collect();
        assert_eq!(keys, ["b.1", "b.2"]);
    }
}

//! `cluster init|add|remove|status` and `state get|list|set|cas|delete`:
//! the cluster layer of a running daemon, over its IPC socket. Each command
//! is one IPC method; human output is a short table, `--json` prints the
//! method's result as one document.
//!
//! Exit codes beyond the common ones: 7 when this node cannot reach a
//! majority (NO_QUORUM: nothing was done), 8 when a compare-and-set found
//! another value (CAS_FAILED), 9 when a write's outcome is unknown
//! (UNKNOWN_OUTCOME: retry with the same --request-id to apply it once).

use crate::exit::Exit;
use crate::inspect::table::{pairs, Table};
use crate::ipc_client::{self, decode, ClientError, IpcClient};
use crate::terminal::printable;
use serde_json::Value;
use std::fmt::Display;
use std::path::Path;
use steep_repl_actors::ipc::protocol::{
    ClusterCreated, ClusterStatus, Method, StateEntries, StateValue, StateWritten,
};

/// Calls `method` on the local daemon and prints the answer.
pub fn call(config: Option<&Path>, method: &Method, json: bool) -> Exit {
    let target = match ipc_client::locate(config) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    };
    let answer = IpcClient::connect(&target.path).and_then(|mut c| c.call(method));
    let shown = answer.and_then(|value| {
        if json {
            Ok(serde_json::to_string_pretty(&value).unwrap_or_default() + "\n")
        } else {
            render(method, &value)
        }
    });
    match shown {
        Ok(text) => {
            print!("{}", printable(&text));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {}", printable(&e.to_string()));
            exit_for(&e)
        }
    }
}

fn exit_for(e: &ClientError) -> Exit {
    match e {
        ClientError::NotRunning { .. } => Exit::NotRunning,
        ClientError::Remote { code, .. } => match code.as_str() {
            "INVALID_REQUEST" => Exit::Usage,
            "NO_QUORUM" => Exit::NoQuorum,
            "CAS_FAILED" => Exit::CasFailed,
            "UNKNOWN_OUTCOME" => Exit::UnknownOutcome,
            _ => Exit::Error,
        },
        _ => Exit::Error,
    }
}

/// A value typed on the command line: JSON when it parses as JSON
/// (`42`, `true`, `{"a":1}`, `"quoted"`), otherwise the text as a string.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Keys and ids come from other nodes and clients: never let them drive
/// the terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// An optional value as text; absent as `-`.
fn text<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| clean(&v.to_string()))
}

fn render(method: &Method, v: &Value) -> Result<String, ClientError> {
    Ok(match method {
        Method::ClusterInit(_) => {
            let created: ClusterCreated = decode(method, v)?;
            match created.seeded_keys {
                0 => cluster(&created.status),
                n => format!(
                    "{}\nseeded the state map with {n} keys of this node's coordinator_state (its 0.1.0 state)\n",
                    cluster(&created.status)
                ),
            }
        }
        Method::StateGet(_) => {
            let state: StateValue = decode(method, v)?;
            if state.found {
                format!("{}\n", state.value)
            } else {
                format!("{}: absent\n", clean(&state.key))
            }
        }
        Method::StateList(_) => {
            let list: StateEntries = decode(method, v)?;
            let mut table = Table::new(&["KEY", "VALUE"]);
            for entry in list.entries {
                table.row(vec![clean(&entry.key), entry.value.to_string()]);
            }
            table.render()
        }
        Method::StateSet(_) | Method::StateCas(_) | Method::StateDelete(_) => {
            let written: StateWritten = decode(method, v)?;
            pairs(&[
                ("key", clean(&written.key)),
                ("log index", written.applied_index.to_string()),
                ("previous", written.previous.to_string()),
            ])
        }
        // cluster.status, cluster.add, cluster.remove.
        _ => cluster(&decode(method, v)?),
    })
}

fn cluster(v: &ClusterStatus) -> String {
    let projection = &v.projection;
    let mut out = pairs(&[
        ("cluster", text(v.cluster_id.as_deref())),
        ("node", format!("{} ({})", clean(&v.node_id), v.state)),
        ("raft id", clean(&v.raft_id)),
        ("leader", text(v.leader.as_deref())),
        ("term", v.term.to_string()),
        (
            "coordinator",
            match &v.coordinator {
                Some(c) => format!("{}, epoch {}", clean(c), text(v.epoch)),
                None => "none known".to_string(),
            },
        ),
        (
            "log / commit / applied",
            format!(
                "{} / {} / {}",
                text(v.last_log_index),
                text(v.commit_index),
                text(v.applied_index)
            ),
        ),
        (
            "postgresql",
            match &projection.error {
                Some(e) => format!(
                    "BEHIND at index {} since {}: {}",
                    text(projection.applied_index),
                    text(projection.failing_since.as_deref()),
                    clean(e)
                ),
                None => format!("projected to {}", text(projection.applied_index)),
            },
        ),
    ]);
    let mut table = Table::new(&[
        "MEMBER", "ROLE", "VOTER", "PRIORITY", "GRPC", "RAFT ID", "LAG",
    ]);
    for m in &v.members {
        let leader = if m.leader { " *" } else { "" };
        table.row(vec![
            format!("{}{leader}", clean(&m.node_id)),
            m.role.to_string(),
            if m.voter { "yes" } else { "learner" }.into(),
            m.priority.to_string(),
            clean(&m.grpc),
            clean(&m.raft_id),
            text(m.lag),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(parse_value("42"), json!(42));
        assert_eq!(parse_value("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_value("active"), json!("active"));
        assert_eq!(parse_value("\"42\""), json!("42"));
    }

    #[test]
    fn refusals_map_to_their_own_exit_codes() {
        let remote = |code: &str| ClientError::Remote {
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(exit_for(&remote("NO_QUORUM")), Exit::NoQuorum);
        assert_eq!(exit_for(&remote("CAS_FAILED")), Exit::CasFailed);
        assert_eq!(exit_for(&remote("UNKNOWN_OUTCOME")), Exit::UnknownOutcome);
        assert_eq!(exit_for(&remote("NOT_A_MEMBER")), Exit::Error);
    }
}

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
use crate::ipc_client::{self, ClientError, IpcClient};
use crate::terminal::printable;
use serde_json::{json, Value};
use std::path::Path;

/// Calls `method` on the local daemon and prints the answer.
pub fn call(config: Option<&Path>, method: &str, params: Value, json: bool) -> Exit {
    let target = match ipc_client::locate(config) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    };
    let answer = IpcClient::connect(&target.path).and_then(|mut c| c.call(method, params));
    match answer {
        Ok(value) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print!("{}", printable(&render(method, &value)));
            }
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

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        // Keys and ids come from other nodes and clients: never let them
        // drive the terminal.
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        other => other.to_string(),
    }
}

fn render(method: &str, v: &Value) -> String {
    match method {
        "cluster.init" => match v["seeded_keys"].as_u64() {
            Some(n) if n > 0 => format!(
                "{}\nseeded the state map with {n} keys of this node's coordinator_state (its 0.1.0 state)\n",
                cluster(v)
            ),
            _ => cluster(v),
        },
        "cluster.status" | "cluster.add" | "cluster.remove" => cluster(v),
        "state.get" => {
            if v["found"] == json!(true) {
                format!("{}\n", v["value"])
            } else {
                format!("{}: absent\n", text(&v["key"]))
            }
        }
        "state.list" => {
            let mut table = Table::new(&["KEY", "VALUE"]);
            for entry in v["entries"].as_array().into_iter().flatten() {
                table.row(vec![text(&entry["key"]), entry["value"].to_string()]);
            }
            table.render()
        }
        _ => pairs(&[
            ("key", text(&v["key"])),
            ("log index", text(&v["applied_index"])),
            ("previous", v["previous"].to_string()),
        ]),
    }
}

fn cluster(v: &Value) -> String {
    let mut out = pairs(&[
        ("cluster", text(&v["cluster_id"])),
        (
            "node",
            format!("{} ({})", text(&v["node_id"]), text(&v["state"])),
        ),
        ("raft id", text(&v["raft_id"])),
        ("leader", text(&v["leader"])),
        ("term", text(&v["term"])),
        (
            "coordinator",
            match v["coordinator"].as_str() {
                Some(c) => format!("{c}, epoch {}", text(&v["epoch"])),
                None => "none known".to_string(),
            },
        ),
        (
            "log / commit / applied",
            format!(
                "{} / {} / {}",
                text(&v["last_log_index"]),
                text(&v["commit_index"]),
                text(&v["applied_index"])
            ),
        ),
        (
            "postgresql",
            match v["projection"]["error"].as_str() {
                Some(e) => format!(
                    "BEHIND at index {} since {}: {e}",
                    text(&v["projection"]["applied_index"]),
                    text(&v["projection"]["failing_since"])
                ),
                None => format!("projected to {}", text(&v["projection"]["applied_index"])),
            },
        ),
    ]);
    let mut table = Table::new(&[
        "MEMBER", "ROLE", "VOTER", "PRIORITY", "GRPC", "RAFT ID", "LAG",
    ]);
    for m in v["members"].as_array().into_iter().flatten() {
        let leader = if m["leader"] == json!(true) { " *" } else { "" };
        table.row(vec![
            format!("{}{leader}", text(&m["node_id"])),
            text(&m["role"]),
            if m["voter"] == json!(true) {
                "yes"
            } else {
                "learner"
            }
            .into(),
            text(&m["priority"]),
            text(&m["grpc"]),
            text(&m["raft_id"]),
            text(&m["lag"]),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

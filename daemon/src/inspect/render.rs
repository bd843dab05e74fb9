//! Human views of the IPC results (`--json` prints the results as they
//! are). They read the JSON leniently: a field a newer or older daemon does
//! not send shows as `-` rather than failing the command.

use super::table::{pairs, Table};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// A scalar as text; null or absent as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        other => other.to_string(),
    }
}

fn yes_no(v: &Value) -> &'static str {
    if v.as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
}

/// `1d 02h 03m`, `4m 05s`, `12s`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m"),
    }
}

/// An RFC 3339 timestamp to whole seconds in UTC, with how long ago.
fn when(v: &Value, now: DateTime<Utc>) -> String {
    let Some(at) = v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return text(v);
    };
    let at = at.with_timezone(&Utc);
    let ago = now.signed_duration_since(at).num_seconds().max(0) as u64;
    format!(
        "{} ({} ago)",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        duration(ago)
    )
}

fn timestamp(v: &Value) -> String {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| text(v))
}

/// `status.get`, plus the socket it was read from.
pub fn status(s: &Value, socket: &str) -> String {
    let pg = &s["postgresql"];
    let postgresql = if pg["connected"].as_bool().unwrap_or(false) {
        format!(
            "connected, PostgreSQL {} at {}:{}",
            text(&pg["version"]),
            text(&pg["host"]),
            text(&pg["port"])
        )
    } else {
        format!(
            "not connected ({}:{})",
            text(&pg["host"]),
            text(&pg["port"])
        )
    };
    let grpc = &s["grpc"];
    let grpc = match (
        grpc["listening"].as_bool().unwrap_or(false),
        grpc["port"].as_u64(),
    ) {
        (_, None) => "disabled".to_string(),
        (listening, Some(port)) => format!(
            "{} on port {port}, TLS {}",
            if listening {
                "listening"
            } else {
                "not listening"
            },
            if grpc["tls_enabled"].as_bool().unwrap_or(false) {
                "on"
            } else {
                "off"
            }
        ),
    };
    let node = &s["node"];
    pairs(&[
        ("state", text(&s["state"])),
        ("pid", text(&s["pid"])),
        (
            "uptime",
            format!(
                "{} (since {})",
                duration(s["uptime_seconds"].as_u64().unwrap_or(0)),
                timestamp(&s["start_time"])
            ),
        ),
        ("version", text(&s["version"])),
        (
            "node",
            format!("{} ({})", text(&node["node_id"]), text(&node["node_name"])),
        ),
        ("role", text(&node["role"])),
        (
            "coordinator",
            format!(
                "{}{}, cluster of {}",
                coordinator(&node["coordinator_id"], &node["epoch"]),
                if node["is_coordinator"] == Value::Bool(true) {
                    " (this node)"
                } else {
                    ""
                },
                text(&node["cluster_size"])
            ),
        ),
        ("postgresql", postgresql),
        ("grpc", grpc),
        ("ipc", format!("listening on {socket}")),
    ])
}

/// "n2, epoch 7", or "none known".
fn coordinator(holder: &Value, epoch: &Value) -> String {
    match holder.as_str() {
        Some(h) => format!("{h}, epoch {}", text(epoch)),
        None => "none known".to_string(),
    }
}

/// `nodes.list`.
pub fn nodes(result: &Value, now: DateTime<Utc>) -> String {
    let nodes = result["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if nodes.is_empty() {
        return "no nodes\n".to_string();
    }
    let mut table = Table::new(&[
        "NODE_ID",
        "NAME",
        "HOST",
        "PRIORITY",
        "COORDINATOR",
        "STATUS",
        "LAST_SEEN",
    ]);
    for n in nodes {
        table.row(vec![
            text(&n["node_id"]),
            text(&n["node_name"]),
            format!("{}:{}", text(&n["host"]), text(&n["port"])),
            text(&n["priority"]),
            if n["is_coordinator"].as_bool().unwrap_or(false) {
                format!("yes (epoch {})", text(&n["coordinator_epoch"]))
            } else {
                String::new()
            },
            text(&n["status"]),
            when(&n["last_seen"], now),
        ]);
    }
    table.render()
}

/// `audit.query`, with where the page sits in the whole.
pub fn audit(result: &Value, offset: u64) -> String {
    let entries = result["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let total = result["total"].as_u64().unwrap_or(0);
    if entries.is_empty() {
        return format!("no audit entries (of {total} matching)\n");
    }
    let mut table = Table::new(&["ID", "TIME", "ACTION", "ACTOR", "TARGET", "RESULT"]);
    for e in entries {
        let target = match (e["target_type"].as_str(), e["target_id"].as_str()) {
            (Some(kind), Some(id)) => format!("{kind} {id}"),
            (Some(kind), None) => kind.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "-".to_string(),
        };
        let result = if e["success"].as_bool().unwrap_or(true) {
            "ok".to_string()
        } else {
            format!("failed: {}", text(&e["error_message"]))
        };
        table.row(vec![
            text(&e["id"]),
            timestamp(&e["occurred_at"]),
            text(&e["action"]),
            text(&e["actor"]),
            target,
            result,
        ]);
    }
    let mut out = table.render();
    let last = offset + entries.len() as u64;
    out.push_str(&format!("entries {}-{last} of {total}", offset + 1));
    if result["has_more"].as_bool().unwrap_or(false) {
        out.push_str(&format!(" (more with --offset {last})"));
    }
    out.push('\n');
    out
}

/// `health.check`.
pub fn health(h: &Value) -> String {
    let node = &h["node"];
    let mut out = pairs(&[
        ("status", text(&h["status"])),
        (
            "node",
            format!("{} ({})", text(&node["node_id"]), text(&node["node_name"])),
        ),
        ("role", text(&node["role"])),
        (
            "coordinator",
            coordinator(&node["coordinator_id"], &node["epoch"]),
        ),
        (
            "uptime",
            duration(h["uptime_seconds"].as_u64().unwrap_or(0)),
        ),
        ("version", text(&h["version"])),
    ]);
    out.push('\n');
    let mut table = Table::new(&["COMPONENT", "HEALTHY", "STATUS", "DETAIL"]);
    if let Some(components) = h["components"].as_object() {
        for (name, c) in components {
            let mut detail = Vec::new();
            if !c["version"].is_null() {
                detail.push(format!("version {}", text(&c["version"])));
            }
            if !c["port"].is_null() {
                detail.push(format!("port {}", text(&c["port"])));
            }
            if let Some(ms) = c["latency_ms"].as_f64() {
                detail.push(format!("{ms:.2} ms"));
            }
            if !c["error"].is_null() {
                detail.push(text(&c["error"]));
            }
            table.row(vec![
                name.clone(),
                yes_no(&c["healthy"]).to_string(),
                text(&c["status"]),
                detail.join(", "),
            ]);
        }
    }
    out.push_str(&table.render());
    let raft = &h["raft"];
    if raft.is_object() {
        out.push('\n');
        out.push_str(&pairs(&[
            (
                "raft",
                match raft["reason"].as_str() {
                    Some(why) => format!("NOT READY: {}", text(&Value::String(why.into()))),
                    None if raft["is_leader"] == Value::Bool(true) => "leader".to_string(),
                    None => "follower".to_string(),
                },
            ),
            ("leader", text(&raft["leader"])),
            ("term", text(&raft["term"])),
            (
                "log / commit / applied",
                format!(
                    "{} / {} / {}",
                    text(&raft["last_log_index"]),
                    text(&raft["commit_index"]),
                    text(&raft["applied_index"])
                ),
            ),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(duration(90_061), "1d 01h 01m");
    }

    #[test]
    fn the_nodes_table_shows_ids_and_when_they_were_seen() {
        let now: DateTime<Utc> = "2026-11-26T10:00:10.200Z".parse().unwrap();
        let result = json!({"nodes": [
            {"node_id": "a", "node_name": "Node A", "host": "db1", "port": 5432, "priority": 50,
             "is_coordinator": true, "last_seen": "2026-11-26T10:00:00.123Z", "status": "healthy"},
            {"node_id": "b", "node_name": "Node B", "host": "db2", "port": 5433, "priority": 40,
             "is_coordinator": false, "last_seen": null, "status": "unknown"}
        ]});
        let text = nodes(&result, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE_ID  NAME    HOST"), "{text}");
        assert!(
            lines[1].contains("db1:5432") && lines[1].contains("2026-11-26T10:00:00Z (10s ago)"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("b  ") && lines[2].ends_with("unknown  -"),
            "{text}"
        );
    }

    #[test]
    fn the_audit_page_says_where_it_is() {
        let result = json!({"entries": [
            {"id": 9, "occurred_at": "2026-11-26T10:00:00.5Z", "action": "node.registered",
             "actor": "steep-repl@a", "target_type": "node", "target_id": "a", "success": true}
        ], "total": 3, "has_more": true});
        let text = audit(&result, 1);
        assert!(
            text.contains("node.registered") && text.contains("node a"),
            "{text}"
        );
        assert!(
            text.ends_with("entries 2-2 of 3 (more with --offset 2)\n"),
            "{text}"
        );
    }

    #[test]
    fn absent_fields_show_as_dashes() {
        let text = status(&json!({}), "/tmp/x.sock");
        assert!(text.contains("state        -"), "{text}");
        assert!(text.contains("grpc         disabled"), "{text}");
    }
}

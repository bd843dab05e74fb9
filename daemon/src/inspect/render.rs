//! Human views of the IPC results (`--json` prints the results as they
//! are). They read the typed results of the IPC contract
//! (`steep_repl_actors::ipc::protocol`): a field the daemon does not send
//! is a decode error naming it, never a silent `-`; `-` stands only for a
//! value the daemon reports as absent.

use super::table::{pairs, Table};
use chrono::{DateTime, SecondsFormat, Utc};
use steep_repl_actors::ipc::protocol::{AuditPage, HealthReport, NodeList, StatusReport};

/// An optional value as text; absent or empty as `-`.
fn text<T: ToString>(v: Option<T>) -> String {
    match v.map(|v| v.to_string()) {
        Some(s) if !s.is_empty() => s,
        _ => "-".to_string(),
    }
}

fn yes_no(v: bool) -> &'static str {
    if v {
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

/// A timestamp to whole seconds in UTC, with how long ago.
fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else {
        return "-".to_string();
    };
    let ago = now.signed_duration_since(at).num_seconds().max(0) as u64;
    format!(
        "{} ({} ago)",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        duration(ago)
    )
}

fn seconds(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An RFC 3339 text to whole seconds in UTC (as sent when it does not parse).
fn timestamp(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .map(|t| seconds(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| text.to_string())
}

/// `status.get`, plus the socket it was read from.
pub fn status(s: &StatusReport, socket: &str) -> String {
    let pg = &s.postgresql;
    let postgresql = if pg.connected {
        format!(
            "connected, PostgreSQL {} at {}:{}",
            text(pg.version.as_deref()),
            pg.host,
            pg.port
        )
    } else {
        format!("not connected ({}:{})", pg.host, pg.port)
    };
    let grpc = match s.grpc.port {
        None => "disabled".to_string(),
        Some(port) => format!(
            "{} on port {port}, TLS {}",
            if s.grpc.listening {
                "listening"
            } else {
                "not listening"
            },
            if s.grpc.tls_enabled { "on" } else { "off" }
        ),
    };
    let node = &s.node;
    pairs(&[
        ("state", s.state.to_string()),
        ("pid", s.pid.to_string()),
        (
            "uptime",
            format!(
                "{} (since {})",
                duration(s.uptime_seconds),
                timestamp(&s.start_time)
            ),
        ),
        ("version", s.version.clone()),
        ("node", format!("{} ({})", node.node_id, node.node_name)),
        ("role", node.role.to_string()),
        (
            "coordinator",
            format!(
                "{}{}, cluster of {}",
                coordinator(node.coordinator_id.as_deref(), node.epoch),
                if node.is_coordinator {
                    " (this node)"
                } else {
                    ""
                },
                node.cluster_size
            ),
        ),
        ("postgresql", postgresql),
        ("grpc", grpc),
        ("ipc", format!("listening on {socket}")),
    ])
}

/// "n2, epoch 7", or "none known".
fn coordinator(holder: Option<&str>, epoch: Option<u64>) -> String {
    match holder {
        Some(h) => format!("{h}, epoch {}", text(epoch)),
        None => "none known".to_string(),
    }
}

/// `nodes.list`.
pub fn nodes(result: &NodeList, now: DateTime<Utc>) -> String {
    if result.nodes.is_empty() {
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
    for n in &result.nodes {
        table.row(vec![
            text(Some(&n.node_id)),
            text(Some(&n.node_name)),
            format!("{}:{}", text(Some(&n.host)), n.port),
            n.priority.to_string(),
            if n.is_coordinator {
                format!("yes (epoch {})", text(n.coordinator_epoch))
            } else {
                String::new()
            },
            n.status.to_string(),
            when(n.last_seen, now),
        ]);
    }
    table.render()
}

/// `audit.query`, with where the page sits in the whole.
pub fn audit(result: &AuditPage, offset: u64) -> String {
    let total = result.total;
    if result.entries.is_empty() {
        return format!("no audit entries (of {total} matching)\n");
    }
    let mut table = Table::new(&["ID", "TIME", "ACTION", "ACTOR", "TARGET", "RESULT"]);
    for e in &result.entries {
        let target = match (e.target_type.as_deref(), e.target_id.as_deref()) {
            (Some(kind), Some(id)) => format!("{kind} {id}"),
            (Some(kind), None) => kind.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "-".to_string(),
        };
        let result = if e.success {
            "ok".to_string()
        } else {
            format!("failed: {}", text(e.error_message.as_deref()))
        };
        table.row(vec![
            e.id.to_string(),
            seconds(e.occurred_at),
            text(Some(&e.action)),
            text(Some(&e.actor)),
            target,
            result,
        ]);
    }
    let mut out = table.render();
    let last = offset + result.entries.len() as u64;
    out.push_str(&format!("entries {}-{last} of {total}", offset + 1));
    if result.has_more {
        out.push_str(&format!(" (more with --offset {last})"));
    }
    out.push('\n');
    out
}

/// `health.check`.
pub fn health(h: &HealthReport) -> String {
    let node = &h.node;
    let mut out = pairs(&[
        ("status", h.status.to_string()),
        ("node", format!("{} ({})", node.node_id, node.node_name)),
        ("role", text(Some(&node.role))),
        (
            "coordinator",
            coordinator(node.coordinator_id.as_deref(), node.epoch),
        ),
        ("uptime", duration(h.uptime_seconds)),
        ("version", h.version.clone()),
    ]);
    out.push('\n');
    let mut table = Table::new(&["COMPONENT", "HEALTHY", "STATUS", "DETAIL"]);
    for (name, c) in &h.components {
        let mut detail = Vec::new();
        if let Some(version) = &c.version {
            detail.push(format!("version {version}"));
        }
        if let Some(port) = c.port {
            detail.push(format!("port {port}"));
        }
        if let Some(ms) = c.latency_ms {
            detail.push(format!("{ms:.2} ms"));
        }
        if let Some(error) = &c.error {
            detail.push(text(Some(error)));
        }
        table.row(vec![
            name.to_string(),
            yes_no(c.healthy).to_string(),
            text(Some(&c.status)),
            detail.join(", "),
        ]);
    }
    out.push_str(&table.render());
    if let Some(raft) = &h.raft {
        out.push('\n');
        out.push_str(&pairs(&[
            (
                "raft",
                match raft.reason.as_deref() {
                    Some(why) => format!("NOT READY: {}", text(Some(why))),
                    None if raft.is_leader => "leader".to_string(),
                    None => "follower".to_string(),
                },
            ),
            ("leader", text(raft.leader.as_deref())),
            ("term", raft.term.to_string()),
            (
                "log / commit / applied",
                format!(
                    "{} / {} / {}",
                    raft.last_log_index, raft.commit_index, raft.applied_index
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
        let text = nodes(&serde_json::from_value(result).unwrap(), now);
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
        let text = audit(&serde_json::from_value(result).unwrap(), 1);
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
    fn absent_values_show_as_dashes_and_missing_fields_are_named() {
        let mut answer = json!({
            "state": "running", "pid": 42, "uptime_seconds": 5,
            "start_time": "2026-11-26T10:00:00Z", "version": "0.1.0",
            "postgresql": {"connected": false, "version": null, "host": "db", "port": 5432},
            "grpc": {"listening": false, "port": null, "tls_enabled": false},
            "node": {"node_id": "a", "node_name": "A", "is_coordinator": false, "cluster_size": 1,
                     "coordinator_id": null, "epoch": null, "role": "data"}});
        let report: StatusReport = serde_json::from_value(answer.clone()).unwrap();
        let text = status(&report, "/tmp/x.sock");
        assert!(text.contains("state        running"), "{text}");
        assert!(text.contains("grpc         disabled"), "{text}");
        assert!(text.contains("coordinator  none known"), "{text}");
        // A renamed field is a decode error that names it, not a "-".
        answer["postgresql"]
            .as_object_mut()
            .unwrap()
            .remove("connected");
        let refused = serde_json::from_value::<StatusReport>(answer).unwrap_err();
        assert!(refused.to_string().contains("connected"), "{refused}");
    }
}

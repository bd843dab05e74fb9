//! What `config check` prints: the effective configuration as YAML under
//! `repl:`, every key in table order, secrets masked, and a comment on each
//! value that the file did not set (`# default`, `# from PGHOST`). The output
//! loads back into the same configuration (with the mask as password).
//! Also `lock_path`, derived from the IPC path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::KEYS;
use super::schema::{Config, ValueOrigin};
use super::secret::MASK;

/// A YAML double-quoted scalar. JSON string syntax is a subset of it, and
/// serde_json escapes every character YAML needs escaped.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn path(p: &Path) -> String {
    quoted(&p.to_string_lossy())
}

fn opt_path(p: &Option<PathBuf>) -> String {
    p.as_deref().map(path).unwrap_or_else(|| "null".into())
}

fn dur(d: Duration) -> String {
    super::values::format_duration(d)
}

impl Config {
    /// One key's effective value as YAML text; `None` for a name that is not
    /// a key.
    pub(crate) fn yaml_value(&self, key: &str) -> Option<String> {
        let pg = &self.postgresql;
        let g = &self.grpc;
        Some(match key {
            "node_id" => quoted(&self.node_id),
            "node_name" => quoted(&self.node_name),
            "priority" => self.priority.to_string(),
            "advertise_host" => quoted(&self.advertise_host),
            "postgresql.enabled" => pg.enabled.to_string(),
            "postgresql.host" => quoted(&pg.host),
            "postgresql.port" => pg.port.to_string(),
            "postgresql.database" => quoted(&pg.database),
            "postgresql.user" => quoted(&pg.user),
            "postgresql.password" => match pg.password {
                Some(_) => quoted(MASK),
                None => "null".into(),
            },
            // Its arguments may hold a secret's path or a token.
            "postgresql.password_command" => match pg.password_command {
                Some(_) => quoted(MASK),
                None => "null".into(),
            },
            "postgresql.sslmode" => pg.sslmode.to_string(),
            "postgresql.pool_size" => pg.pool_size.to_string(),
            "postgresql.connect_timeout" => dur(pg.connect_timeout),
            "grpc.enabled" => g.enabled.to_string(),
            "grpc.bind" => quoted(&g.bind.to_string()),
            "grpc.port" => g.port.to_string(),
            "grpc.peers" => {
                let items: Vec<String> = g.peers.iter().map(|p| quoted(&p.to_string())).collect();
                format!("[{}]", items.join(", "))
            }
            "grpc.tls.cert_file" => opt_path(&g.tls.cert_file),
            "grpc.tls.key_file" => opt_path(&g.tls.key_file),
            "grpc.tls.ca_file" => opt_path(&g.tls.ca_file),
            "grpc.tls.insecure" => g.tls.insecure.to_string(),
            "grpc.tls.expiry_warning" => dur(g.tls.expiry_warning),
            "grpc.heartbeat_interval" => dur(g.heartbeat_interval),
            "grpc.degraded_rtt" => dur(g.degraded_rtt),
            "grpc.unreachable_after" => dur(g.unreachable_after),
            "grpc.request_timeout" => dur(g.request_timeout),
            "grpc.max_concurrent_requests" => g.max_concurrent_requests.to_string(),
            "grpc.peer_rate_limit" => g.peer_rate_limit.to_string(),
            "raft.dir" => path(&self.raft.dir),
            "raft.heartbeat_interval" => dur(self.raft.heartbeat_interval),
            "raft.election_timeout_min" => dur(self.raft.election_timeout_min),
            "raft.election_timeout_max" => dur(self.raft.election_timeout_max),
            "raft.snapshot_every" => self.raft.snapshot_every.to_string(),
            "coordinator.lease" => dur(self.coordinator.lease),
            "coordinator.clock_error" => quoted(&super::values::format_clock_error(
                self.coordinator.clock_error,
            )),
            "coordinator.failback_after" => dur(self.coordinator.failback_after),
            "http.enabled" => self.http.enabled.to_string(),
            "http.bind" => quoted(&self.http.bind.to_string()),
            "http.port" => self.http.port.to_string(),
            "http.details" => self.http.details.to_string(),
            "ipc.enabled" => self.ipc.enabled.to_string(),
            "ipc.path" => path(&self.ipc.path),
            "ipc.mode" => quoted(&format!("{:04o}", self.ipc.mode)),
            "ipc.group" => self
                .ipc
                .group
                .as_deref()
                .map(quoted)
                .unwrap_or_else(|| "null".into()),
            "audit.retention" => dur(self.audit.retention),
            "audit.prune_interval" => dur(self.audit.prune_interval),
            "audit.spool_path" => path(&self.audit.spool_path),
            "audit.spool_max_events" => self.audit.spool_max_events.to_string(),
            "log.level" => self.log.level.to_string(),
            "log.target" => self.log.target.to_string(),
            _ => return None,
        })
    }

    /// The effective configuration under `repl:`, secrets masked, with a
    /// comment on each value the file did not set.
    pub fn to_masked_yaml(&self) -> String {
        let mut out = format!(
            "# steep-repl effective configuration, loaded from {} (secrets masked)\nrepl:\n",
            self.source.display()
        );
        let mut open: Vec<&str> = Vec::new();
        for key in KEYS {
            let parts: Vec<&str> = key.split('.').collect();
            let (sections, leaf) = parts.split_at(parts.len() - 1);
            let common = open
                .iter()
                .zip(sections)
                .take_while(|(a, b)| a == b)
                .count();
            for (depth, name) in sections.iter().enumerate().skip(common) {
                out.push_str(&"  ".repeat(depth + 1));
                out.push_str(name);
                out.push_str(":\n");
            }
            open = sections.to_vec();
            let value = self.yaml_value(key).unwrap_or_else(|| "null".into());
            let note = match self.origins.get(key) {
                ValueOrigin::File => String::new(),
                ValueOrigin::Default => "  # default".into(),
                ValueOrigin::Env(var) => format!("  # from {var}"),
            };
            out.push_str(&format!(
                "{}{}: {value}{note}\n",
                "  ".repeat(sections.len() + 1),
                leaf[0]
            ));
        }
        out
    }

    /// The one-instance lock file: the IPC path plus `.lock`. Used even when
    /// IPC is disabled, so two daemons on one config never both run.
    #[cfg(not(windows))]
    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.ipc.path.clone().into_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// On Windows the IPC path is a named pipe, not a file: the lock goes in
    /// the temp directory under the pipe's name.
    #[cfg(windows)]
    pub fn lock_path(&self) -> PathBuf {
        let name = self
            .ipc
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "steep-repl".into());
        std::env::temp_dir().join(format!("{name}.lock"))
    }
}

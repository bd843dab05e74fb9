//! Checks that involve more than one key (timing relations, TLS files, port
//! clashes, the IPC socket path) and the warnings `run` and `config check`
//! print for settings that are legal but risky. Single-key rules live with
//! the parsers in `values.rs`.

use std::net::IpAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::schema::{Config, ValueOrigin};

/// `repl.grpc.port (8080, from STEEP_REPL_GRPC__PORT)`: a key, its value and,
/// unless the file set it, where the value came from.
fn describe(config: &Config, key: &str, value: &str) -> String {
    match config.origins.get(key) {
        ValueOrigin::File => format!("repl.{key} ({value})"),
        ValueOrigin::Default => format!("repl.{key} ({value}, the default)"),
        ValueOrigin::Env(var) => format!("repl.{key} ({value}, from {var})"),
    }
}

fn dur(d: Duration) -> String {
    super::values::format_duration(d)
}

fn inconsistent(config: &Config, message: String) -> ConfigError {
    ConfigError::Inconsistent {
        place: config.source.display().to_string(),
        message,
    }
}

/// Two listeners clash when they share a port and some address: equal
/// addresses, or a wildcard of the same family (or `::`, which also takes
/// IPv4 on a dual-stack host) next to any address.
fn binds_overlap(a: IpAddr, b: IpAddr) -> bool {
    let covers = |w: IpAddr, other: IpAddr| {
        w.is_unspecified() && (w.is_ipv6() || w.is_ipv4() == other.is_ipv4())
    };
    a == b || covers(a, b) || covers(b, a)
}

pub(crate) fn check(config: &Config) -> Result<(), ConfigError> {
    let g = &config.grpc;
    if g.unreachable_after <= g.heartbeat_interval {
        return Err(inconsistent(
            config,
            format!(
                "{} must be longer than {}, or a healthy peer would look unreachable between two heartbeats",
                describe(config, "grpc.unreachable_after", &dur(g.unreachable_after)),
                describe(config, "grpc.heartbeat_interval", &dur(g.heartbeat_interval)),
            ),
        ));
    }
    if g.degraded_rtt >= g.unreachable_after {
        return Err(inconsistent(
            config,
            format!(
                "{} must be shorter than {}",
                describe(config, "grpc.degraded_rtt", &dur(g.degraded_rtt)),
                describe(config, "grpc.unreachable_after", &dur(g.unreachable_after)),
            ),
        ));
    }

    // A peer heartbeats once per interval and now and then asks for more
    // (a health check, the node list): twice its heartbeat rate leaves room
    // for those, so that the limit never refuses a healthy peer.
    let needed = (2.0 / g.heartbeat_interval.as_secs_f64()).ceil();
    if f64::from(g.peer_rate_limit) < needed {
        return Err(inconsistent(
            config,
            format!(
                "{} must allow at least {needed} requests a second: a peer sends a heartbeat every {} and more requests now and then, and would be refused",
                describe(config, "grpc.peer_rate_limit", &format!("{}/s", g.peer_rate_limit)),
                describe(config, "grpc.heartbeat_interval", &dur(g.heartbeat_interval)),
            ),
        ));
    }

    check_raft_timing(config)?;

    if g.enabled && !g.tls.insecure {
        let missing: Vec<String> = [
            ("grpc.tls.cert_file", &g.tls.cert_file),
            ("grpc.tls.key_file", &g.tls.key_file),
            ("grpc.tls.ca_file", &g.tls.ca_file),
        ]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| format!("repl.{k}"))
        .collect();
        if !missing.is_empty() {
            let (list, verb) = match missing.len() {
                1 => (missing[0].clone(), "is"),
                n => (
                    format!("{} and {}", missing[..n - 1].join(", "), missing[n - 1]),
                    "are",
                ),
            };
            return Err(inconsistent(
                config,
                format!(
                    "gRPC uses mutual TLS, but {list} {verb} not set; create the files with \
                     `steep-repl tls init` (the cluster CA) and `steep-repl tls issue {}` \
                     (this node's certificate and key), or set repl.grpc.tls.insecure: true \
                     for plaintext gRPC",
                    config.node_id
                ),
            ));
        }
    }

    let h = &config.http;
    if g.enabled && h.enabled && g.port == h.port && binds_overlap(g.bind, h.bind) {
        return Err(inconsistent(
            config,
            format!(
                "{} and {} would listen on the same port (binds {} and {}); give them different ports",
                describe(config, "grpc.port", &g.port.to_string()),
                describe(config, "http.port", &h.port.to_string()),
                g.bind,
                h.bind,
            ),
        ));
    }

    check_ipc_path(config)?;
    Ok(())
}

/// The replacement time of a dead coordinator the defaults keep within
/// (docs/protocol.md, "Timing").
const FAILOVER_GOAL: std::time::Duration = std::time::Duration::from_secs(4);

/// The Raft timers and the coordinator lease, as one set: an
/// election timeout below a few heartbeats, an empty election range, or a
/// lease that cannot be renewed three times within itself cannot work.
/// (Single-key bounds, such as a heartbeat of at least 10ms or election
/// timeouts of at most 60s, are the parsers' ranges in `values.rs`.)
fn check_raft_timing(config: &Config) -> Result<(), ConfigError> {
    let r = &config.raft;
    let c = &config.coordinator;
    let hb = describe(
        config,
        "raft.heartbeat_interval",
        &dur(r.heartbeat_interval),
    );
    let three_beats = r.heartbeat_interval.saturating_mul(3);
    let min = describe(
        config,
        "raft.election_timeout_min",
        &dur(r.election_timeout_min),
    );
    if r.election_timeout_min < three_beats {
        return Err(inconsistent(
            config,
            format!(
                "{min} is shorter than three of {hb}: a follower must miss a few heartbeats \
                 before it campaigns, or a late packet starts an election; make the election \
                 timeout at least {} or the heartbeat shorter",
                dur(three_beats),
            ),
        ));
    }
    if r.election_timeout_max <= r.election_timeout_min {
        let fix = match r.election_timeout_min.checked_mul(2) {
            Some(twice) if twice <= super::values::ELECTION_TIMEOUT.max => {
                format!("for example {}", dur(twice))
            }
            _ => format!(
                "lower repl.raft.election_timeout_min to leave room for a range (both are at most {})",
                dur(super::values::ELECTION_TIMEOUT.max)
            ),
        };
        return Err(inconsistent(
            config,
            format!(
                "{} must be greater than {min}: each node draws its timeout from that range, and \
                 with no range the nodes campaign together and split the vote; {fix}",
                describe(
                    config,
                    "raft.election_timeout_max",
                    &dur(r.election_timeout_max)
                ),
            ),
        ));
    }
    let lease = describe(config, "coordinator.lease", &dur(c.lease));
    if c.lease < three_beats {
        return Err(inconsistent(
            config,
            format!(
                "{lease} cannot be renewed three times within itself at {hb}: make the lease \
                 at least {} or the heartbeat shorter (the holder renews it every third of the \
                 lease, and each renewal is a replicated write that needs a heartbeat round)",
                dur(three_beats),
            ),
        ));
    }
    if c.failback_after < c.lease {
        return Err(inconsistent(
            config,
            format!(
                "{} must be at least {lease}: a preferred node must stay healthy for a whole \
                 lease before the coordinator role moves back to it, or a flapping node would \
                 move it back and forth; make it at least {}",
                describe(config, "coordinator.failback_after", &dur(c.failback_after)),
                dur(c.lease),
            ),
        ));
    }
    Ok(())
}

/// A Unix socket path must fit `sun_path` (108 bytes on Linux, 104 on the
/// BSDs and macOS, both with the terminating NUL); past that `bind` fails
/// with an obscure error, so say it here.
#[cfg(unix)]
fn check_ipc_path(config: &Config) -> Result<(), ConfigError> {
    const MAX: usize = if cfg!(target_os = "linux") { 107 } else { 103 };
    let len = config.ipc.path.as_os_str().len();
    if config.ipc.enabled && len > MAX {
        return Err(ConfigError::Invalid {
            place: place(config, "ipc.path"),
            expected: format!("a socket path of at most {MAX} bytes"),
            got: format!("{} ({len} bytes)", config.ipc.path.display()),
        });
    }
    Ok(())
}

#[cfg(windows)]
fn check_ipc_path(config: &Config) -> Result<(), ConfigError> {
    let text = config.ipc.path.to_string_lossy();
    if config.ipc.enabled && !text.to_ascii_lowercase().starts_with(r"\\.\pipe\") {
        return Err(ConfigError::Invalid {
            place: place(config, "ipc.path"),
            expected: r"a named pipe path like \\.\pipe\steep-repl".into(),
            got: format!("{text:?}"),
        });
    }
    Ok(())
}

/// Where a key's value was set, as error messages name it: `FILE: repl.KEY`
/// or the environment variable.
pub(crate) fn place(config: &Config, key: &str) -> String {
    match config.origins.get(key) {
        ValueOrigin::Env(var) => var.clone(),
        _ => format!("{}: repl.{key}", config.source.display()),
    }
}

impl Config {
    /// Settings that are allowed but deserve a line in the log at start and
    /// in `config check`.
    /// Timings that work but cost what an operator should know of.
    fn timing_warnings(&self) -> Vec<String> {
        let r = &self.raft;
        let c = &self.coordinator;
        let mut out = Vec::new();
        if c.lease < r.election_timeout_max {
            out.push(format!(
                "repl.coordinator.lease ({}) is shorter than repl.raft.election_timeout_max ({}): \
                 while a new Raft leader is elected no renewal commits, so every leader change \
                 may let the lease run out and move the coordinator role",
                dur(c.lease),
                dur(r.election_timeout_max)
            ));
        }
        // A dead coordinator that was also the leader: the lease (lengthened
        // by the clock error) counts from its last renewal, before the death,
        // and the election runs meanwhile; then a grant is committed and
        // applied (about a heartbeat round). docs/protocol.md has the rest.
        let worst = r
            .election_timeout_max
            .max(c.lease.mul_f64(1.0 + c.clock_error))
            + r.heartbeat_interval;
        if worst > FAILOVER_GOAL {
            out.push(format!(
                "with these timings a dead coordinator may take up to {} to be replaced \
                 (the longer of raft.election_timeout_max and coordinator.lease x (1 + clock_error), \
                 plus raft.heartbeat_interval), more than the {} the defaults keep within",
                dur(worst),
                dur(FAILOVER_GOAL)
            ));
        }
        out
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.grpc.enabled && self.grpc.tls.insecure {
            out.push(
                "repl.grpc.tls.insecure is true: peers talk plaintext gRPC with no authentication; \
                 use it only on a trusted network"
                    .to_string(),
            );
        }
        let loopback = self.advertise_host == "localhost"
            || self
                .advertise_host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.grpc.enabled && loopback && !self.grpc.peers.is_empty() {
            out.push(format!(
                "repl.advertise_host is {}: peers on other machines cannot reach this node; \
                 set repl.advertise_host to an address they can",
                self.advertise_host
            ));
        }
        if self.grpc.enabled {
            out.extend(self.timing_warnings());
        }
        if let Some(mode) = self.password_file_mode() {
            out.push(format!(
                "{} holds repl.postgresql.password and other users can read it (mode {mode:04o}); \
                 chmod 600 it, or use repl.postgresql.password_command",
                self.source.display()
            ));
        }
        out
    }

    /// The file's mode when the password comes from the file and the file
    /// is readable by group or others.
    #[cfg(unix)]
    fn password_file_mode(&self) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        if self.postgresql.password.is_none()
            || *self.origins.get("postgresql.password") != ValueOrigin::File
        {
            return None;
        }
        let mode = std::fs::metadata(&self.source).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }

    #[cfg(not(unix))]
    fn password_file_mode(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_overlap_their_family_and_v6_covers_v4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(binds_overlap(ip("0.0.0.0"), ip("0.0.0.0")));
        assert!(binds_overlap(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(binds_overlap(ip("10.0.0.1"), ip("0.0.0.0")));
        assert!(binds_overlap(ip("::"), ip("127.0.0.1")));
        assert!(binds_overlap(ip("::1"), ip("::")));
        assert!(!binds_overlap(ip("127.0.0.1"), ip("10.0.0.1")));
        assert!(!binds_overlap(ip("0.0.0.0"), ip("::1")));
        assert!(!binds_overlap(ip("127.0.0.1"), ip("::1")));
    }
}

//! The shape of the effective configuration: the `Config` struct and its
//! sections, the small enums (`SslMode`, `LogLevel`, `LogTarget`), `PeerAddr`,
//! and the defaults of every key. The rest of the daemon reads only these
//! types; how they are filled in (file, environment, defaults) is `load.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::secret::Secret;
use super::values::{format_duration, is_host_name_or_ipv4};

pub const DEFAULT_PRIORITY: u8 = 50;
pub const DEFAULT_PG_HOST: &str = "localhost";
pub const DEFAULT_PG_PORT: u16 = 5432;
pub const DEFAULT_PG_DATABASE: &str = "postgres";
pub const DEFAULT_SSLMODE: SslMode = SslMode::Prefer;
pub const DEFAULT_POOL_SIZE: u32 = 10;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_GRPC_PORT: u16 = 5433;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DEGRADED_RTT: Duration = Duration::from_millis(500);
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_GRPC_MAX_CONCURRENT_REQUESTS: usize = 256;
pub const DEFAULT_GRPC_PEER_RATE_LIMIT: u32 = 200;
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// The system service's socket, in the runtime directory systemd makes for
/// it (`RuntimeDirectory=steep-repl`); a user's own daemon defaults to its
/// state directory instead (`paths::default_ipc_path`).
#[cfg(all(unix, not(target_os = "macos")))]
pub const DEFAULT_IPC_PATH: &str = "/run/steep-repl/steep-repl.sock";
#[cfg(target_os = "macos")]
pub const DEFAULT_IPC_PATH: &str = "/var/run/steep-repl/steep-repl.sock";
#[cfg(windows)]
pub const DEFAULT_IPC_PATH: &str = r"\\.\pipe\steep-repl";
pub const DEFAULT_IPC_MODE: u32 = 0o660;
/// Two years, as humantime counts them (365.25 days each).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(2 * 31_557_600);
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_SPOOL_MAX_EVENTS: u64 = 1_000_000;
pub const DEFAULT_RAFT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(1000);
pub const DEFAULT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(2000);
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(2);
/// 1%: how far two nodes' clocks may drift apart over one lease.
pub const DEFAULT_CLOCK_ERROR: f64 = 0.01;
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(30);

/// The effective configuration of one daemon: defaults, then the file's
/// `repl:` section, then libpq variables, then `STEEP_REPL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file it was loaded from (absolute).
    pub source: PathBuf,
    /// This node's identity in the registry and in its certificate.
    pub node_id: String,
    pub node_name: String,
    /// Higher is preferred as coordinator, 1..=100.
    pub priority: u8,
    /// The host peers use to reach this node (gRPC and PostgreSQL).
    pub advertise_host: String,
    pub postgresql: PostgresqlConfig,
    pub grpc: GrpcConfig,
    /// The consensus log that decides the coordinator.
    pub raft: RaftConfig,
    pub coordinator: CoordinatorConfig,
    pub http: HttpConfig,
    pub ipc: IpcConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    /// Where each key's effective value came from (for `config check` and
    /// for error messages after loading). Keys absent here are defaults.
    #[serde(skip)]
    pub origins: Origins,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostgresqlConfig {
    /// `false` makes this node a witness: no PostgreSQL at all, a vote in
    /// Raft, never coordinator. The other keys are then checked for form
    /// but not used.
    pub enabled: bool,
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    /// A command line whose first output line is the password; run only by
    /// `Config::resolve_password`.
    pub password_command: Option<String>,
    pub sslmode: SslMode,
    pub pool_size: u32,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The libpq spelling (`verify-ca`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<SslMode> {
        let lower = text.trim().to_ascii_lowercase();
        SslMode::ALL.into_iter().find(|m| m.as_str() == lower)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrpcConfig {
    pub enabled: bool,
    pub bind: IpAddr,
    pub port: u16,
    /// Where to start peer discovery.
    pub peers: Vec<PeerAddr>,
    pub tls: TlsConfig,
    #[serde(serialize_with = "ser_duration")]
    pub heartbeat_interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub degraded_rtt: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub unreachable_after: Duration,
    /// A request not answered by then is dropped (DEADLINE_EXCEEDED).
    #[serde(serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    /// Requests served at once; more are refused (UNAVAILABLE).
    pub max_concurrent_requests: usize,
    /// Requests a second one peer may send; more are refused
    /// (RESOURCE_EXHAUSTED). The Raft service is not limited.
    pub peer_rate_limit: u32,
}

/// The Raft group every daemon is a member of (witnesses included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftConfig {
    /// Where the log, the vote and the snapshots are kept (absolute).
    pub dir: PathBuf,
    /// How often the leader sends heartbeats (appends) to followers.
    #[serde(serialize_with = "ser_duration")]
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in
    /// `election_timeout_min..election_timeout_max` campaigns.
    #[serde(serialize_with = "ser_duration")]
    pub election_timeout_min: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one (>= 1).
    pub snapshot_every: u64,
}

/// The coordinator lease, held through the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordinatorConfig {
    /// How long a granted lease lasts; the holder renews it every third of it.
    #[serde(serialize_with = "ser_duration")]
    pub lease: Duration,
    /// Bound on clock drift between nodes over one lease, as a fraction
    /// (`0.01` for 1%); always in `0.0..0.1`, never NaN.
    pub clock_error: f64,
    /// How long a preferred (higher priority) node must stay healthy before
    /// the coordinator role moves back to it.
    #[serde(serialize_with = "ser_duration")]
    pub failback_after: Duration,
}

/// The loader only builds a finite `clock_error` (it refuses anything outside
/// `0.0..0.1`), so equality is reflexive and `Config` can stay `Eq`.
impl Eq for CoordinatorConfig {}

/// A peer daemon's gRPC address. `host` holds an IPv6 literal without its
/// brackets; `Display` puts them back (`[fd00::2]:5433`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

/// What a `HOST:PORT` peer address must look like.
pub const PEER_ADDR_EXPECTED: &str = "HOST:PORT, like node2.example.com:5433 or [fd00::2]:5433";

/// A `HOST:PORT` string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {PEER_ADDR_EXPECTED}, got {0:?}")]
pub struct PeerAddrError(pub String);

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    /// `host:port`, `1.2.3.4:port` or `[v6]:port`; an unbracketed IPv6
    /// address is refused because its last group would read as a port.
    fn from_str(text: &str) -> Result<PeerAddr, PeerAddrError> {
        let bad = || PeerAddrError(text.to_string());
        let t = text.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            h.parse::<Ipv6Addr>().map_err(|_| bad())?;
            (h, p)
        } else {
            let (h, p) = t.rsplit_once(':').ok_or_else(bad)?;
            if !is_host_name_or_ipv4(h) {
                return Err(bad());
            }
            (h, p)
        };
        let port = parse_port(port).ok_or_else(bad)?;
        Ok(PeerAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A port number 1..=65535 (0 would mean "any port" to the OS).
pub(crate) fn parse_port(text: &str) -> Option<u16> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Plaintext gRPC; only with an explicit `true`.
    pub insecure: bool,
    /// How long before a certificate expires the daemon warns.
    #[serde(serialize_with = "ser_duration")]
    pub expiry_warning: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpConfig {
    pub enabled: bool,
    pub bind: IpAddr,
    pub port: u16,
    /// Error texts in `/health` and peer addresses in `/metrics`: off by
    /// default, since the port is open to the network (the local socket
    /// shows them).
    pub details: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpcConfig {
    pub enabled: bool,
    /// Unix socket path, or a Windows named pipe (`\\.\pipe\...`).
    pub path: PathBuf,
    /// File mode of the socket (Unix), at most 0o777.
    #[serde(serialize_with = "ser_mode")]
    pub mode: u32,
    /// Group to give the socket to (Unix), so its members can use the CLI.
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    #[serde(serialize_with = "ser_duration")]
    pub retention: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub prune_interval: Duration,
    /// The durable local spool where events wait while PostgreSQL is away.
    pub spool_path: PathBuf,
    /// Bound of that spool, in events.
    pub spool_max_events: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    pub level: LogLevel,
    pub target: LogTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<LogLevel> {
        let lower = text.trim().to_ascii_lowercase();
        LogLevel::ALL.into_iter().find(|l| l.as_str() == lower)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where log lines go. Every variant exists on every platform so that code
/// matching on it needs no `cfg`; loading accepts only the ones this
/// platform has (`LogTarget::available()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The terminal under `run` from a shell, the system log under a service
    /// manager.
    Auto,
    Terminal,
    Journald,
    Syslog,
    /// Windows Event Log (accepted only on Windows).
    #[cfg_attr(not(windows), allow(dead_code))]
    EventLog,
    /// macOS unified logging (accepted only on macOS).
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    OsLog,
}

impl LogTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTarget::Auto => "auto",
            LogTarget::Terminal => "terminal",
            LogTarget::Journald => "journald",
            LogTarget::Syslog => "syslog",
            LogTarget::EventLog => "eventlog",
            LogTarget::OsLog => "oslog",
        }
    }

    /// The targets this platform offers.
    pub fn available() -> &'static [LogTarget] {
        #[cfg(target_os = "linux")]
        {
            &[
                LogTarget::Auto,
                LogTarget::Terminal,
                LogTarget::Journald,
                LogTarget::Syslog,
            ]
        }
        #[cfg(target_os = "macos")]
        {
            &[
                LogTarget::Auto,
                LogTarget::Terminal,
                LogTarget::Syslog,
                LogTarget::OsLog,
            ]
        }
        #[cfg(windows)]
        {
            &[LogTarget::Auto, LogTarget::Terminal, LogTarget::EventLog]
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
        {
            &[LogTarget::Auto, LogTarget::Terminal, LogTarget::Syslog]
        }
    }

    pub(crate) fn parse(text: &str) -> Option<LogTarget> {
        let lower = text.trim().to_ascii_lowercase();
        LogTarget::available()
            .iter()
            .copied()
            .find(|t| t.as_str() == lower)
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    Default,
    /// The config file (`Config::source`).
    File,
    /// An environment variable, by name (`PGHOST`, `STEEP_REPL_GRPC__PORT`).
    Env(String),
}

/// The origin of every key that was not left at its default, by dotted key
/// (`grpc.port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub BTreeMap<String, ValueOrigin>);

impl Origins {
    pub fn get(&self, key: &str) -> &ValueOrigin {
        self.0.get(key).unwrap_or(&ValueOrigin::Default)
    }
}

/// Durations print as they are written in the file (`1s`, `500ms`, `2y`).
fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// File modes print as the octal string people write (`0660`).
fn ser_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_parse_and_print_back() {
        for (text, host, port, shown) in [
            ("node2:5433", "node2", 5433, "node2:5433"),
            ("10.0.0.2:1", "10.0.0.2", 1, "10.0.0.2:1"),
            ("[fd00::2]:5433", "fd00::2", 5433, "[fd00::2]:5433"),
            (
                " db-1.example.com:65535 ",
                "db-1.example.com",
                65535,
                "db-1.example.com:65535",
            ),
        ] {
            let p: PeerAddr = text.parse().unwrap();
            assert_eq!((p.host.as_str(), p.port), (host, port), "{text}");
            assert_eq!(p.to_string(), shown);
        }
    }

    #[test]
    fn bad_peer_addresses_are_refused() {
        for text in [
            "node2",
            "node2:",
            ":5433",
            "node2:0",
            "node2:70000",
            "node2:abc",
            "fd00::2:5433",
            "[fd00::2]",
            "[nothex]:5433",
            "a b:5433",
        ] {
            let err = text.parse::<PeerAddr>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("expected {PEER_ADDR_EXPECTED}, got {text:?}")
            );
        }
    }

    #[test]
    fn enums_use_their_yaml_spelling() {
        assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("Require"), Some(SslMode::Require));
        assert_eq!(SslMode::parse("verify_full"), None);
        assert_eq!(LogLevel::parse("DEBUG"), Some(LogLevel::Debug));
        assert_eq!(LogTarget::parse("terminal"), Some(LogTarget::Terminal));
        assert_eq!(
            serde_json::to_string(&SslMode::VerifyCa).unwrap(),
            "\"verify-ca\""
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn log_targets_of_other_platforms_are_refused_on_linux() {
        assert_eq!(LogTarget::parse("journald"), Some(LogTarget::Journald));
        assert_eq!(LogTarget::parse("eventlog"), None);
        assert_eq!(LogTarget::parse("oslog"), None);
    }
}

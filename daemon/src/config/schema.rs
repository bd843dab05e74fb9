//! Every configuration key, declared once: the `Config` struct and its
//! sections. A field is a key (`grpc.tls.cert_file` is `grpc.tls.cert_file`);
//! its serde attribute names a function or module of `fields.rs` that says
//! how it reads from text, what an error expects, and (`with`) how
//! `config check` prints it; the section's `Default` gives its default. The
//! key table (`keys.rs`), the environment names, `config check` and the
//! layering (`load.rs`) are all derived from these types. A new key is a
//! field here plus its paragraph in docs/configuration.md.
//!
//! A few defaults depend on the machine or on other keys (the host name, the
//! OS user, platform paths, `node_name` = `node_id`): their `Default` is
//! empty, and `load.rs` fills them in when nothing set them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields as f;
use super::secret::Secret;
pub use super::types::*;

/// The system service's socket, in the runtime directory systemd makes for
/// it (`RuntimeDirectory=steep-repl`); a user's own daemon defaults to its
/// state directory instead (`paths::default_ipc_path`).
#[cfg(all(unix, not(target_os = "macos")))]
pub const DEFAULT_IPC_PATH: &str = "/run/steep-repl/steep-repl.sock";
#[cfg(target_os = "macos")]
pub const DEFAULT_IPC_PATH: &str = "/var/run/steep-repl/steep-repl.sock";
#[cfg(windows)]
pub const DEFAULT_IPC_PATH: &str = r"\\.\pipe\steep-repl";

/// Every listener binds all IPv4 addresses unless told otherwise.
const ANY_IPV4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The effective configuration of one daemon: defaults, then the file's
/// `repl:` section, then libpq variables, then `STEEP_REPL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The file it was loaded from (absolute).
    #[serde(skip_deserializing, serialize_with = "f::ser_not_a_key")]
    pub source: PathBuf,
    /// This node's identity in the registry and in its certificate.
    /// Required: `load.rs` refuses a configuration that leaves it empty.
    #[serde(deserialize_with = "f::node_id")]
    pub node_id: String,
    /// Defaults to `node_id`.
    #[serde(deserialize_with = "f::name")]
    pub node_name: String,
    /// Higher is preferred as coordinator, 1..=100.
    #[serde(deserialize_with = "f::priority")]
    pub priority: u8,
    /// The host peers use to reach this node (gRPC and PostgreSQL); defaults
    /// to the host name.
    #[serde(deserialize_with = "f::host")]
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

impl Default for Config {
    fn default() -> Self {
        Config {
            source: PathBuf::new(),
            node_id: String::new(),
            node_name: String::new(),
            priority: 50,
            advertise_host: String::new(),
            postgresql: PostgresqlConfig::default(),
            grpc: GrpcConfig::default(),
            raft: RaftConfig::default(),
            coordinator: CoordinatorConfig::default(),
            http: HttpConfig::default(),
            ipc: IpcConfig::default(),
            audit: AuditConfig::default(),
            log: LogConfig::default(),
            origins: Origins::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresqlConfig {
    /// `false` makes this node a witness: no PostgreSQL at all, a vote in
    /// Raft, never coordinator. The other keys are then checked for form
    /// but not used.
    #[serde(deserialize_with = "f::boolean")]
    pub enabled: bool,
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    #[serde(deserialize_with = "f::pg_host")]
    pub host: String,
    #[serde(deserialize_with = "f::port")]
    pub port: u16,
    #[serde(deserialize_with = "f::name")]
    pub database: String,
    /// Defaults to the OS user running the daemon.
    #[serde(deserialize_with = "f::name")]
    pub user: String,
    #[serde(deserialize_with = "f::password")]
    pub password: Option<Secret>,
    /// A command line whose first output line is the password; run only by
    /// `Config::resolve_password`. `config check` masks it: its arguments
    /// may hold a secret's path or a token.
    #[serde(with = "f::command")]
    pub password_command: Option<String>,
    #[serde(deserialize_with = "f::sslmode")]
    pub sslmode: SslMode,
    #[serde(deserialize_with = "f::pool_size")]
    pub pool_size: u32,
    #[serde(with = "f::connect_timeout")]
    pub connect_timeout: Duration,
}

impl Default for PostgresqlConfig {
    fn default() -> Self {
        PostgresqlConfig {
            enabled: true,
            host: "localhost".into(),
            port: 5432,
            database: "postgres".into(),
            user: String::new(),
            password: None,
            password_command: None,
            sslmode: SslMode::Prefer,
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    #[serde(deserialize_with = "f::boolean")]
    pub enabled: bool,
    #[serde(deserialize_with = "f::bind")]
    pub bind: IpAddr,
    #[serde(deserialize_with = "f::port")]
    pub port: u16,
    /// Where to start peer discovery.
    #[serde(deserialize_with = "f::peers")]
    pub peers: Vec<PeerAddr>,
    pub tls: TlsConfig,
    #[serde(with = "f::heartbeat")]
    pub heartbeat_interval: Duration,
    #[serde(with = "f::rtt")]
    pub degraded_rtt: Duration,
    #[serde(with = "f::unreachable")]
    pub unreachable_after: Duration,
    /// A request not answered by then is dropped (DEADLINE_EXCEEDED).
    #[serde(with = "f::request_timeout")]
    pub request_timeout: Duration,
    /// Requests served at once; more are refused (UNAVAILABLE).
    #[serde(deserialize_with = "f::concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Requests a second one peer may send; more are refused
    /// (RESOURCE_EXHAUSTED). The Raft service is not limited.
    #[serde(deserialize_with = "f::peer_rate_limit")]
    pub peer_rate_limit: u32,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            enabled: true,
            bind: ANY_IPV4,
            port: 5433,
            peers: Vec::new(),
            tls: TlsConfig::default(),
            heartbeat_interval: Duration::from_secs(1),
            degraded_rtt: Duration::from_millis(500),
            unreachable_after: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 256,
            peer_rate_limit: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(with = "f::file_path")]
    pub cert_file: Option<PathBuf>,
    #[serde(with = "f::file_path")]
    pub key_file: Option<PathBuf>,
    #[serde(with = "f::file_path")]
    pub ca_file: Option<PathBuf>,
    /// Plaintext gRPC; only with an explicit `true`.
    #[serde(deserialize_with = "f::boolean")]
    pub insecure: bool,
    /// How long before a certificate expires the daemon warns.
    #[serde(with = "f::expiry_warning")]
    pub expiry_warning: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            ca_file: None,
            insecure: false,
            expiry_warning: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The Raft group every daemon is a member of (witnesses included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Where the log, the vote and the snapshots are kept (absolute);
    /// defaults to a platform state directory.
    #[serde(with = "f::dir_path")]
    pub dir: PathBuf,
    /// How often the leader sends heartbeats (appends) to followers.
    #[serde(with = "f::raft_heartbeat")]
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in
    /// `election_timeout_min..election_timeout_max` campaigns.
    #[serde(with = "f::election_timeout")]
    pub election_timeout_min: Duration,
    #[serde(with = "f::election_timeout")]
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one (>= 1).
    #[serde(deserialize_with = "f::count")]
    pub snapshot_every: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            dir: PathBuf::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
        }
    }
}

/// The coordinator lease, held through the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// How long a granted lease lasts; the holder renews it every third of it.
    #[serde(with = "f::lease")]
    pub lease: Duration,
    /// Bound on clock drift between nodes over one lease, as a fraction
    /// (`0.01` for 1%); always in `0.0..0.1`, never NaN.
    #[serde(deserialize_with = "f::clock_error")]
    pub clock_error: f64,
    /// How long a preferred (higher priority) node must stay healthy before
    /// the coordinator role moves back to it.
    #[serde(with = "f::failback")]
    pub failback_after: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            lease: Duration::from_secs(2),
            // 1%: how far two nodes' clocks may drift apart over one lease.
            clock_error: 0.01,
            failback_after: Duration::from_secs(30),
        }
    }
}

/// The loader only builds a finite `clock_error` (it refuses anything outside
/// `0.0..0.1`), so equality is reflexive and `Config` can stay `Eq`.
impl Eq for CoordinatorConfig {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(deserialize_with = "f::boolean")]
    pub enabled: bool,
    #[serde(deserialize_with = "f::bind")]
    pub bind: IpAddr,
    #[serde(deserialize_with = "f::port")]
    pub port: u16,
    /// Error texts in `/health` and peer addresses in `/metrics`: off by
    /// default, since the port is open to the network (the local socket
    /// shows them).
    #[serde(deserialize_with = "f::boolean")]
    pub details: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: ANY_IPV4,
            port: 8080,
            details: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpcConfig {
    #[serde(deserialize_with = "f::boolean")]
    pub enabled: bool,
    /// Unix socket path, or a Windows named pipe (`\\.\pipe\...`); defaults
    /// to a platform path.
    #[serde(with = "f::required_file_path")]
    pub path: PathBuf,
    /// File mode of the socket (Unix), at most 0o777.
    #[serde(with = "f::mode")]
    pub mode: u32,
    /// Group to give the socket to (Unix), so its members can use the CLI.
    #[serde(deserialize_with = "f::group")]
    pub group: Option<String>,
}

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig {
            enabled: true,
            path: PathBuf::new(),
            mode: 0o660,
            group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(with = "f::retention")]
    pub retention: Duration,
    #[serde(with = "f::prune")]
    pub prune_interval: Duration,
    /// The durable local spool where events wait while PostgreSQL is away;
    /// defaults to a platform state directory.
    #[serde(with = "f::required_file_path")]
    pub spool_path: PathBuf,
    /// Bound of that spool, in events.
    #[serde(deserialize_with = "f::count")]
    pub spool_max_events: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            // Two years, as humantime counts them (365.25 days each).
            retention: Duration::from_secs(2 * 31_557_600),
            prune_interval: Duration::from_secs(3600),
            spool_path: PathBuf::new(),
            spool_max_events: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    #[serde(deserialize_with = "f::log_level")]
    pub level: LogLevel,
    #[serde(deserialize_with = "f::log_target")]
    pub target: LogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            target: LogTarget::Auto,
        }
    }
}

//! The types that key values take beyond numbers and strings: the small
//! enums (`SslMode`, `LogLevel`, `LogTarget`, each with its YAML spelling),
//! `PeerAddr`, and `ValueOrigin` (where a key's effective value came from).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::values::{self, is_host_name_or_ipv4};

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
        let port = values::port(port).ok_or_else(bad)?;
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

//! Parsers for single values, shared by the file and the environment so a
//! value means the same wherever it is written, and the sentence each one
//! puts after "expected" when the text is not what it wants. A parser takes
//! the raw text and returns `None` when it does not fit; `fields.rs` turns
//! that into a serde error and `load.rs` into one naming the file or
//! variable, the key, and the text.

use std::net::IpAddr;
use std::time::Duration;

pub(crate) const NODE_ID: &str =
    "a node id of 1-63 characters from A-Z, a-z, 0-9, '.', '_' and '-'";
pub(crate) const NAME: &str = "a non-empty name";
pub(crate) const PRIORITY: &str = "a priority 1-100";
pub(crate) const HOST: &str = "a host name or IP address";
pub(crate) const PG_HOST: &str = "one host name, IP address or Unix socket directory";
pub(crate) const PORT: &str = "a port number 1-65535";
pub(crate) const BOOL: &str = "true or false (yes/no and 1/0 work too)";
pub(crate) const BIND: &str = "an IP address to listen on, like 0.0.0.0, 127.0.0.1 or ::";
pub(crate) const POOL_SIZE: &str = "a pool size 1-100";
pub(crate) const PATH: &str = "a file path";
pub(crate) const DIR: &str = "a directory path";
pub(crate) const MODE: &str = "an octal permission like 0660 (at most 0777)";
pub(crate) const GROUP: &str = "a group name or number";
pub(crate) const COUNT: &str = "a whole number of at least 1";
pub(crate) const PASSWORD: &str = "a password";
pub(crate) const CLOCK_ERROR: &str =
    "a clock error from 0% to below 10%, like 1% or 0.01 (clocks further apart \
     than that cannot bound a lease)";
pub(crate) const CONCURRENT_REQUESTS: &str = "a number of requests from 1 to 100000";
pub(crate) const PEER_RATE_LIMIT: &str =
    "a number of requests a second from 1 to 1000000, like 200 or 200/s";
pub(crate) const COMMAND: &str =
    "a command line with balanced quotes, like `pass show postgres/steep`";

/// A duration key's bounds: zero is never useful, and an enormous value
/// would overflow timer arithmetic in the daemon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationRange {
    pub min: Duration,
    pub max: Duration,
    pub example: &'static str,
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

pub(crate) const CONNECT_TIMEOUT: DurationRange = DurationRange::new(MS, HOUR, "5s or 500ms");
pub(crate) const HEARTBEAT: DurationRange =
    DurationRange::new(Duration::from_millis(10), HOUR, "1s or 500ms");
pub(crate) const RTT: DurationRange = DurationRange::new(MS, HOUR, "500ms or 1s");
pub(crate) const UNREACHABLE: DurationRange =
    DurationRange::new(Duration::from_millis(10), DAY, "3s or 1m 30s");
/// A gRPC request's bound: below 10ms a busy machine would refuse healthy
/// requests; beyond an hour it bounds nothing.
pub(crate) const REQUEST_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(10), HOUR, "10s or 30s");
/// Raft's heartbeat: below 10ms the timers are noise next to an fsync; an
/// election timeout (at most 60s) must hold three of them.
pub(crate) const RAFT_HEARTBEAT: DurationRange = DurationRange::new(
    Duration::from_millis(10),
    Duration::from_secs(20),
    "250ms or 100ms",
);
/// Three of the shortest heartbeats, up to a minute: a leader lost for longer
/// than that is not "failover" any more.
pub(crate) const ELECTION_TIMEOUT: DurationRange = DurationRange::new(
    Duration::from_millis(30),
    Duration::from_secs(60),
    "1s or 2s",
);
/// Three of the shortest heartbeats (one renewal per third of the lease).
pub(crate) const LEASE: DurationRange =
    DurationRange::new(Duration::from_millis(30), HOUR, "2s or 900ms");
pub(crate) const FAILBACK: DurationRange =
    DurationRange::new(Duration::from_millis(30), DAY, "30s or 5m");
/// `grpc.tls.expiry_warning`: at least a day (the check runs daily), at
/// most a year.
pub(crate) const EXPIRY_WARNING: DurationRange =
    DurationRange::new(DAY, Duration::from_secs(366 * 86_400), "30d or 60d");
pub(crate) const RETENTION: DurationRange =
    DurationRange::new(DAY, Duration::from_secs(100 * 31_557_600), "90d or 2y");
pub(crate) const PRUNE: DurationRange = DurationRange::new(
    Duration::from_secs(1),
    Duration::from_secs(30 * 86_400),
    "1h or 30m",
);

/// A duration as an operator would write it, and as humantime reads back:
/// whole years when exact (`2y`), else days down to nanoseconds (`90d`,
/// `1h 30m`, `500ms`). humantime's own formatter counts months of 30.44
/// days, which turns `90d` into `2months 29days 2h 52m 48s`.
pub(crate) fn format_duration(d: Duration) -> String {
    const YEAR: u64 = 31_557_600;
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    if secs > 0 && nanos == 0 && secs.is_multiple_of(YEAR) {
        return format!("{}y", secs / YEAR);
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text.join(" ")
    }
}

impl DurationRange {
    /// From `min` to `max`, both allowed; `example` goes into the error.
    const fn new(min: Duration, max: Duration, example: &'static str) -> Self {
        DurationRange { min, max, example }
    }

    pub fn expected(&self) -> String {
        format!(
            "a duration from {} to {}, like {}",
            format_duration(self.min),
            format_duration(self.max),
            self.example
        )
    }

    /// humantime spellings: `1s`, `500ms`, `1h 30m`, `2y`.
    pub fn parse(&self, text: &str) -> Option<Duration> {
        humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| *d >= self.min && *d <= self.max)
    }
}

pub(crate) fn node_id(text: &str) -> Option<String> {
    let ok = (1..=63).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then(|| text.to_string())
}

/// Any text with something other than blanks in it, kept as written.
pub(crate) fn name(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.to_string())
}

pub(crate) fn priority(text: &str) -> Option<u8> {
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
}

/// A host others connect to; an IPv6 literal may come in brackets, which are
/// dropped.
pub(crate) fn host(text: &str) -> Option<String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    if inner.parse::<IpAddr>().is_ok() || is_host_name_or_ipv4(inner) {
        Some(inner.to_string())
    } else {
        None
    }
}

/// libpq's host: a name, an address, or a socket directory. One only: the
/// connection pool does not do libpq's comma-separated host lists.
pub(crate) fn pg_host(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty() && !t.contains(',')).then(|| t.to_string())
}

/// A port number 1..=65535 (0 would mean "any port" to the OS).
pub(crate) fn port(text: &str) -> Option<u16> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    }
}

pub(crate) fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

pub(crate) fn bind(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    inner.parse().ok()
}

pub(crate) fn pool_size(text: &str) -> Option<u32> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=100).contains(n))
}

/// How many gRPC requests are served at once.
pub(crate) fn concurrent_requests(text: &str) -> Option<usize> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
}

/// Requests a second per peer: `200` or `200/s`.
pub(crate) fn peer_rate_limit(text: &str) -> Option<u32> {
    let t = text.trim();
    let number = t.strip_suffix("/s").map(str::trim_end).unwrap_or(t);
    number
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
}

/// `0660`, `660` or `0o660`: always octal, as chmod reads it.
pub(crate) fn mode(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0o")
        .or_else(|| t.strip_prefix("0O"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

pub(crate) fn group(text: &str) -> Option<String> {
    let t = text.trim();
    let ok = !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == ':');
    ok.then(|| t.to_string())
}

/// A positive count; `1_000_000` is accepted for readability.
pub(crate) fn count(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    t.replace('_', "").parse::<u64>().ok().filter(|n| *n >= 1)
}

/// A clock error bound as a fraction: `1%` (a percentage) or `0.01`; at
/// least 0 and below 10%.
pub(crate) fn clock_error(text: &str) -> Option<f64> {
    let t = text.trim();
    let fraction = match t.strip_suffix('%') {
        Some(percent) => percent.trim_end().parse::<f64>().ok()? / 100.0,
        None => t.parse::<f64>().ok()?,
    } + 0.0; // -0 is 0
    (0.0..0.1).contains(&fraction).then_some(fraction)
}

/// A clock error as `config check` prints it: a percentage when that reads
/// back to the same number (`1%`), else the fraction (`0.0123`).
pub(crate) fn format_clock_error(fraction: f64) -> String {
    let percent = format!("{}%", fraction * 100.0);
    if clock_error(&percent) == Some(fraction) {
        percent
    } else {
        fraction.to_string()
    }
}

/// A command line that splits into at least one word.
pub(crate) fn command(text: &str) -> Option<String> {
    match shell_words::split(text) {
        Ok(words) if !words.is_empty() => Some(text.to_string()),
        _ => None,
    }
}

/// A DNS name (letters, digits, `-`, `_`, dots) or an IPv4 address.
pub(crate) fn is_host_name_or_ipv4(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && !text.starts_with('.')
        && !text.contains("..")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert_eq!(node_id("node-1.a_b").as_deref(), Some("node-1.a_b"));
        assert!(node_id(&"a".repeat(63)).is_some());
        assert!(node_id(&"a".repeat(64)).is_none());
        assert!(node_id("").is_none());
        assert!(node_id("a b").is_none());
        assert!(node_id("nœud").is_none());
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "yes", "1", " True "] {
            assert_eq!(boolean(t), Some(true), "{t}");
        }
        for t in ["false", "No", "0"] {
            assert_eq!(boolean(t), Some(false), "{t}");
        }
        for t in ["", "on", "2", "truee"] {
            assert_eq!(boolean(t), None, "{t}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(HEARTBEAT.parse("1s"), Some(Duration::from_secs(1)));
        assert_eq!(HEARTBEAT.parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(UNREACHABLE.parse("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(UNREACHABLE.parse("2d"), None);
        assert_eq!(
            RETENTION.parse("2y"),
            Some(Duration::from_secs(2 * 31_557_600))
        );
        assert_eq!(PRUNE.parse("1h 30m"), Some(Duration::from_secs(5400)));
        for t in ["0s", "-1s", "", "1", "soon", "5ms"] {
            assert_eq!(HEARTBEAT.parse(t), None, "{t}");
        }
        assert_eq!(RETENTION.parse("23h"), None);
        assert_eq!(RETENTION.parse("1d"), Some(DAY));
        assert_eq!(
            HEARTBEAT.expected(),
            "a duration from 10ms to 1h, like 1s or 500ms"
        );
    }

    #[test]
    fn durations_print_as_written_and_parse_back() {
        for (d, text) in [
            (Duration::from_secs(2 * 31_557_600), "2y"),
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(5400), "1h 30m"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_secs(86_400 + 1), "1d 1s"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(mode("0660"), Some(0o660));
        assert_eq!(mode("660"), Some(0o660));
        assert_eq!(mode("0o600"), Some(0o600));
        assert_eq!(mode("0777"), Some(0o777));
        for t in ["1777", "0888", "", "rw-rw----", "0o", "00660"] {
            assert_eq!(mode(t), None, "{t}");
        }
    }

    #[test]
    fn hosts_and_binds() {
        assert_eq!(host("db1.example.com").as_deref(), Some("db1.example.com"));
        assert_eq!(host("[fd00::1]").as_deref(), Some("fd00::1"));
        assert_eq!(host("fd00::1").as_deref(), Some("fd00::1"));
        assert_eq!(host("a b"), None);
        assert_eq!(host(""), None);
        assert_eq!(bind("::"), Some("::".parse().unwrap()));
        assert_eq!(bind("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(bind("localhost"), None);
        assert_eq!(
            pg_host("/var/run/postgresql").as_deref(),
            Some("/var/run/postgresql")
        );
        assert_eq!(pg_host("a,b"), None);
    }

    #[test]
    fn counts_and_sizes() {
        assert_eq!(count("1_000_000"), Some(1_000_000));
        assert_eq!(count("0"), None);
        assert_eq!(count("_1"), None);
        assert_eq!(pool_size("100"), Some(100));
        assert_eq!(pool_size("101"), None);
        assert_eq!(priority("0"), None);
        assert_eq!(priority("100"), Some(100));
    }

    #[test]
    fn grpc_limits() {
        assert_eq!(concurrent_requests("256"), Some(256));
        assert_eq!(concurrent_requests("0"), None);
        assert_eq!(concurrent_requests("100001"), None);
        assert_eq!(peer_rate_limit("200"), Some(200));
        assert_eq!(peer_rate_limit(" 50/s "), Some(50));
        assert_eq!(peer_rate_limit("50 /s"), Some(50));
        assert_eq!(peer_rate_limit("0"), None);
        assert_eq!(peer_rate_limit("-5"), None);
        assert_eq!(peer_rate_limit("5/m"), None);
        assert_eq!(peer_rate_limit("1000001"), None);
    }

    #[test]
    fn clock_errors_are_percentages_or_fractions_below_ten_percent() {
        assert_eq!(clock_error("1%"), Some(0.01));
        assert_eq!(clock_error(" 0.5 % "), Some(0.005));
        assert_eq!(clock_error("0.01"), Some(0.01));
        assert_eq!(clock_error("0"), Some(0.0));
        assert_eq!(clock_error("0%"), Some(0.0));
        assert!(clock_error("9.9%").is_some());
        assert_eq!(
            clock_error("-0%").map(|f| f.to_string()).as_deref(),
            Some("0")
        );
        for t in [
            "10%", "15%", "0.1", "1", "-1%", "-0.01", "", "%", "NaN", "inf", "1 %%", "one",
        ] {
            assert_eq!(clock_error(t), None, "{t}");
        }
        for f in [0.01, 0.0, 0.005, 0.07, 0.0123, 0.099, 1.0 / 3.0 / 10.0] {
            let text = format_clock_error(f);
            assert_eq!(clock_error(&text), Some(f), "{f} printed as {text}");
        }
        assert_eq!(format_clock_error(0.01), "1%");
        assert_eq!(format_clock_error(0.0), "0%");
    }

    #[test]
    fn commands_must_split() {
        assert!(command("pass show db").is_some());
        assert!(command("sh -c 'echo \"p w\"'").is_some());
        assert!(command("echo 'unbalanced").is_none());
        assert!(command("   ").is_none());
    }
}

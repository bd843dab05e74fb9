//! IPC request counters: per method a request count, an error count and a
//! latency histogram; per error code a count; plus connection counters.
//!
//! Plain atomics behind an `Arc`, shared by every connection task and read
//! by whoever reports them (`GetStatus` on the IpcActor, and the HTTP
//! `/metrics` endpoint, which gets the same `Arc` from the daemon). Recording
//! costs a few relaxed atomic adds; reading takes a [`IpcMetricsSnapshot`].

use super::protocol::{ErrorCode, MethodKind};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`). The
/// cached methods answer in tens of microseconds, database ones in
/// milliseconds: the buckets cover both.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

#[derive(Default)]
struct MethodCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Non-cumulative counts per bucket; the last slot is "above every bound".
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// The live counters. Create one per daemon and share it.
#[derive(Default)]
pub struct IpcMetrics {
    methods: [MethodCounters; MethodKind::ALL.len()],
    /// Lines refused before a method was known (bad JSON, no or unknown method).
    unroutable: AtomicU64,
    errors_by_code: [AtomicU64; ErrorCode::ALL.len()],
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    /// Clients turned away because the connection limit was reached.
    connections_rejected: AtomicU64,
    /// Connections closed for a line over the size limit.
    oversized_lines: AtomicU64,
    /// Connections closed after the idle timeout.
    idle_timeouts: AtomicU64,
}

impl IpcMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// One answered request of `method` (None: refused before routing).
    pub fn record(&self, method: Option<MethodKind>, elapsed: Duration, error: Option<ErrorCode>) {
        if let Some(code) = error {
            self.errors_by_code[code.index()].fetch_add(1, Relaxed);
        }
        let Some(method) = method else {
            self.unroutable.fetch_add(1, Relaxed);
            return;
        };
        let m = &self.methods[method.index()];
        m.requests.fetch_add(1, Relaxed);
        if error.is_some() {
            m.errors.fetch_add(1, Relaxed);
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        m.latency_sum_ns.fetch_add(ns, Relaxed);
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        m.buckets[slot].fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn oversized_line(&self) {
        self.oversized_lines.fetch_add(1, Relaxed);
    }

    pub(crate) fn idle_timeout(&self) {
        self.idle_timeouts.fetch_add(1, Relaxed);
    }

    /// The counters at one instant (each counter read once; counters
    /// updated meanwhile may be a request apart, which no reader minds).
    pub fn snapshot(&self) -> IpcMetricsSnapshot {
        let methods = MethodKind::ALL
            .iter()
            .map(|kind| {
                let m = &self.methods[kind.index()];
                let mut cumulative = 0;
                let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
                for (le, count) in LATENCY_BUCKETS.iter().zip(&m.buckets) {
                    cumulative += count.load(Relaxed);
                    buckets.push(LatencyBucket {
                        le: *le,
                        count: cumulative,
                    });
                }
                let count = cumulative + m.buckets[LATENCY_BUCKETS.len()].load(Relaxed);
                MethodMetrics {
                    method: kind.as_str(),
                    requests: m.requests.load(Relaxed),
                    errors: m.errors.load(Relaxed),
                    latency_seconds_sum: m.latency_sum_ns.load(Relaxed) as f64 / 1e9,
                    latency_seconds_count: count,
                    latency_buckets: buckets,
                }
            })
            .collect();
        let errors = ErrorCode::ALL
            .iter()
            .map(|code| ErrorCount {
                code: code.as_str(),
                count: self.errors_by_code[code.index()].load(Relaxed),
            })
            .collect();
        IpcMetricsSnapshot {
            connections_open: self.connections_open.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
            oversized_lines: self.oversized_lines.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            unroutable_requests: self.unroutable.load(Relaxed),
            methods,
            errors,
        }
    }
}

/// One histogram bucket: requests that took at most `le` seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyBucket {
    pub le: f64,
    /// Cumulative, as Prometheus expects.
    pub count: u64,
}

/// One method's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodMetrics {
    pub method: &'static str,
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    pub latency_seconds_sum: f64,
    /// Equals `requests` (the `+Inf` bucket).
    pub latency_seconds_count: u64,
    pub latency_buckets: Vec<LatencyBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    pub code: &'static str,
    pub count: u64,
}

/// Everything counted so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpcMetricsSnapshot {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub oversized_lines: u64,
    pub idle_timeouts: u64,
    /// Lines refused before a method was known.
    pub unroutable_requests: u64,
    /// One entry per method, in `MethodKind::ALL` order.
    pub methods: Vec<MethodMetrics>,
    /// One entry per error code, in `ErrorCode::ALL` order.
    pub errors: Vec<ErrorCount>,
}

/// `# HELP` and `# TYPE` lines of one family.
fn declare(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl IpcMetricsSnapshot {
    /// Appends the counters in the Prometheus text format (families
    /// `steep_repl_ipc_*`), for the HTTP `/metrics` page. Every family is
    /// declared, with a sample per method or code, even before traffic.
    pub fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let requests = "steep_repl_ipc_requests_total";
        declare(out, requests, "counter", "IPC requests answered, by method");
        for m in &self.methods {
            let _ = writeln!(out, "{requests}{{method=\"{}\"}} {}", m.method, m.requests);
        }
        let errors = "steep_repl_ipc_request_errors_total";
        declare(
            out,
            errors,
            "counter",
            "IPC requests answered with an error, by method",
        );
        for m in &self.methods {
            let _ = writeln!(out, "{errors}{{method=\"{}\"}} {}", m.method, m.errors);
        }
        let duration = "steep_repl_ipc_request_duration_seconds";
        declare(
            out,
            duration,
            "histogram",
            "IPC request handling time, by method",
        );
        for m in &self.methods {
            let method = m.method;
            for b in &m.latency_buckets {
                let _ = writeln!(
                    out,
                    "{duration}_bucket{{method=\"{method}\",le=\"{}\"}} {}",
                    b.le, b.count
                );
            }
            let count = m.latency_seconds_count;
            let _ = writeln!(
                out,
                "{duration}_bucket{{method=\"{method}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{duration}_sum{{method=\"{method}\"}} {}",
                m.latency_seconds_sum
            );
            let _ = writeln!(out, "{duration}_count{{method=\"{method}\"}} {count}");
        }
        let codes = "steep_repl_ipc_errors_total";
        declare(out, codes, "counter", "IPC error answers, by code");
        for e in &self.errors {
            let _ = writeln!(out, "{codes}{{code=\"{}\"}} {}", e.code, e.count);
        }
        let singles = [
            (
                "connections_open",
                "gauge",
                "IPC connections open now",
                self.connections_open,
            ),
            (
                "connections_accepted_total",
                "counter",
                "IPC connections accepted",
                self.connections_accepted,
            ),
            (
                "connections_rejected_total",
                "counter",
                "IPC clients turned away at the connection limit",
                self.connections_rejected,
            ),
            (
                "oversized_lines_total",
                "counter",
                "IPC connections closed for a request line over the size limit",
                self.oversized_lines,
            ),
            (
                "idle_timeouts_total",
                "counter",
                "IPC connections closed as idle",
                self.idle_timeouts,
            ),
            (
                "unroutable_requests_total",
                "counter",
                "IPC request lines refused before a method was known",
                self.unroutable_requests,
            ),
        ];
        for (name, kind, help, value) in singles {
            let name = format!("steep_repl_ipc_{name}");
            declare(out, &name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

impl std::fmt::Debug for IpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IpcMetrics").field(&self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_cumulative_buckets_of_their_method() {
        let m = IpcMetrics::new();
        m.record(Some(MethodKind::StatusGet), Duration::from_micros(30), None);
        m.record(
            Some(MethodKind::StatusGet),
            Duration::from_micros(300),
            None,
        );
        m.record(Some(MethodKind::StatusGet), Duration::from_secs(3), None);
        m.record(
            Some(MethodKind::NodesGet),
            Duration::from_millis(2),
            Some(ErrorCode::NodeNotFound),
        );
        m.record(
            None,
            Duration::from_micros(5),
            Some(ErrorCode::InvalidRequest),
        );
        let s = m.snapshot();
        let status = &s.methods[MethodKind::StatusGet.index()];
        assert_eq!(
            (status.method, status.requests, status.errors),
            ("status.get", 3, 0)
        );
        assert_eq!(
            status.latency_buckets[0],
            LatencyBucket {
                le: 0.000_05,
                count: 1
            }
        );
        assert_eq!(
            status.latency_buckets[3],
            LatencyBucket {
                le: 0.000_5,
                count: 2
            }
        );
        assert_eq!(status.latency_buckets.last().map(|b| b.count), Some(2));
        assert_eq!(status.latency_seconds_count, 3);
        assert!((status.latency_seconds_sum - 3.000_33).abs() < 1e-9);
        let get = &s.methods[MethodKind::NodesGet.index()];
        assert_eq!((get.requests, get.errors), (1, 1));
        assert_eq!(s.unroutable_requests, 1);
        assert_eq!(s.errors[ErrorCode::NodeNotFound.index()].count, 1);
        assert_eq!(s.errors[ErrorCode::InvalidRequest.index()].count, 1);
    }

    #[test]
    fn the_prometheus_page_declares_every_family_and_counts_per_method() {
        let m = IpcMetrics::new();
        m.record(Some(MethodKind::StatusGet), Duration::from_micros(30), None);
        let mut page = String::new();
        m.snapshot().write_prometheus(&mut page);
        assert!(
            page.contains("steep_repl_ipc_requests_total{method=\"status.get\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("steep_repl_ipc_requests_total{method=\"audit.query\"} 0\n"));
        assert!(page.contains(
            "steep_repl_ipc_request_duration_seconds_bucket{method=\"status.get\",le=\"0.00005\"} 1\n"
        ));
        assert!(page
            .contains("steep_repl_ipc_request_duration_seconds_count{method=\"status.get\"} 1\n"));
        assert!(page.contains("steep_repl_ipc_errors_total{code=\"NOT_CONNECTED\"} 0\n"));
        assert!(page.contains(
            "# TYPE steep_repl_ipc_connections_open gauge\nsteep_repl_ipc_connections_open 0\n"
        ));
        let declared = page.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(declared, 10);
    }

    #[test]
    fn open_connections_go_up_and_down() {
        let m = IpcMetrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_rejected();
        let s = m.snapshot();
        assert_eq!(
            (
                s.connections_open,
                s.connections_accepted,
                s.connections_rejected
            ),
            (1, 2, 1)
        );
    }
}

//! IPC request counters: per method a request count, an error count and a
//! latency histogram; per error code a count; plus connection counters.
//!
//! `prometheus` counters behind an `Arc`, shared by every connection task,
//! with the per-method and per-code handles resolved once so that
//! recording costs a few atomic adds. They are registered in the daemon's
//! one registry (`crate::metrics`) for `/metrics`; `GetStatus` on the
//! IpcActor reads them as an [`IpcMetricsSnapshot`].

use super::protocol::{ErrorCode, MethodKind};
use crate::metrics::MetricsRegistry;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};
use serde::Serialize;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`). The
/// cached methods answer in tens of microseconds, database ones in
/// milliseconds: the buckets cover both.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// One method's handles.
struct MethodCounters {
    requests: IntCounter,
    errors: IntCounter,
    latency: Histogram,
}

/// The live counters. Create one per daemon and share it.
pub struct IpcMetrics {
    requests: IntCounterVec,
    request_errors: IntCounterVec,
    latency: HistogramVec,
    errors: IntCounterVec,
    methods: Vec<MethodCounters>,
    /// Lines refused before a method was known (bad JSON, no or unknown method).
    unroutable: IntCounter,
    errors_by_code: Vec<IntCounter>,
    connections_open: IntGauge,
    connections_accepted: IntCounter,
    /// Clients turned away because the connection limit was reached.
    connections_rejected: IntCounter,
    /// Connections closed for a line over the size limit.
    oversized_lines: IntCounter,
    /// Connections closed after the idle timeout.
    idle_timeouts: IntCounter,
}

// The names, help texts and labels below are constants the `prometheus`
// crate accepts (the tests build them): its constructors fail only on an
// invalid name or label.
const VALID: &str = "constant metric options are valid";

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect(VALID)
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect(VALID)
}

impl Default for IpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IpcMetrics {
    pub fn new() -> Self {
        let requests = counter_vec(
            "steep_repl_ipc_requests_total",
            "IPC requests answered, by method",
            "method",
        );
        let request_errors = counter_vec(
            "steep_repl_ipc_request_errors_total",
            "IPC requests answered with an error, by method",
            "method",
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "steep_repl_ipc_request_duration_seconds",
                "IPC request handling time, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect(VALID);
        let errors = counter_vec(
            "steep_repl_ipc_errors_total",
            "IPC error answers, by code",
            "code",
        );
        let methods = MethodKind::ALL
            .iter()
            .map(|kind| MethodCounters {
                requests: requests.with_label_values(&[kind.as_str()]),
                errors: request_errors.with_label_values(&[kind.as_str()]),
                latency: latency.with_label_values(&[kind.as_str()]),
            })
            .collect();
        let errors_by_code = ErrorCode::ALL
            .iter()
            .map(|code| errors.with_label_values(&[code.as_str()]))
            .collect();
        IpcMetrics {
            requests,
            request_errors,
            latency,
            errors,
            methods,
            unroutable: counter(
                "steep_repl_ipc_unroutable_requests_total",
                "IPC request lines refused before a method was known",
            ),
            errors_by_code,
            connections_open: IntGauge::new(
                "steep_repl_ipc_connections_open",
                "IPC connections open now",
            )
            .expect(VALID),
            connections_accepted: counter(
                "steep_repl_ipc_connections_accepted_total",
                "IPC connections accepted",
            ),
            connections_rejected: counter(
                "steep_repl_ipc_connections_rejected_total",
                "IPC clients turned away at the connection limit",
            ),
            oversized_lines: counter(
                "steep_repl_ipc_oversized_lines_total",
                "IPC connections closed for a request line over the size limit",
            ),
            idle_timeouts: counter(
                "steep_repl_ipc_idle_timeouts_total",
                "IPC connections closed as idle",
            ),
        }
    }

    /// Adds every IPC family to the daemon's registry (`/metrics`).
    pub fn register(&self, registry: &MetricsRegistry) -> prometheus::Result<()> {
        registry.register(self.requests.clone())?;
        registry.register(self.request_errors.clone())?;
        registry.register(self.latency.clone())?;
        registry.register(self.errors.clone())?;
        registry.register(self.unroutable.clone())?;
        registry.register(self.connections_open.clone())?;
        registry.register(self.connections_accepted.clone())?;
        registry.register(self.connections_rejected.clone())?;
        registry.register(self.oversized_lines.clone())?;
        registry.register(self.idle_timeouts.clone())
    }

    /// One answered request of `method` (None: refused before routing).
    pub fn record(&self, method: Option<MethodKind>, elapsed: Duration, error: Option<ErrorCode>) {
        if let Some(code) = error {
            self.errors_by_code[code.index()].inc();
        }
        let Some(method) = method else {
            self.unroutable.inc();
            return;
        };
        let m = &self.methods[method.index()];
        m.requests.inc();
        if error.is_some() {
            m.errors.inc();
        }
        m.latency.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    pub(crate) fn oversized_line(&self) {
        self.oversized_lines.inc();
    }

    pub(crate) fn idle_timeout(&self) {
        self.idle_timeouts.inc();
    }

    /// The counters at one instant (each counter read once; counters
    /// updated meanwhile may be a request apart, which no reader minds).
    pub fn snapshot(&self) -> IpcMetricsSnapshot {
        use prometheus::core::Metric as _;
        let methods = MethodKind::ALL
            .iter()
            .map(|kind| {
                let m = &self.methods[kind.index()];
                let histogram = m.latency.metric();
                let histogram = histogram.get_histogram();
                let latency_buckets = LATENCY_BUCKETS
                    .iter()
                    .zip(histogram.get_bucket())
                    .map(|(le, bucket)| LatencyBucket {
                        le: *le,
                        count: bucket.cumulative_count(),
                    })
                    .collect();
                MethodMetrics {
                    method: kind.as_str(),
                    requests: m.requests.get(),
                    errors: m.errors.get(),
                    latency_seconds_sum: histogram.get_sample_sum(),
                    latency_seconds_count: histogram.get_sample_count(),
                    latency_buckets,
                }
            })
            .collect();
        let errors = ErrorCode::ALL
            .iter()
            .map(|code| ErrorCount {
                code: code.as_str(),
                count: self.errors_by_code[code.index()].get(),
            })
            .collect();
        IpcMetricsSnapshot {
            connections_open: u64::try_from(self.connections_open.get()).unwrap_or(0),
            connections_accepted: self.connections_accepted.get(),
            connections_rejected: self.connections_rejected.get(),
            oversized_lines: self.oversized_lines.get(),
            idle_timeouts: self.idle_timeouts.get(),
            unroutable_requests: self.unroutable.get(),
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
        let registry = MetricsRegistry::new();
        m.register(&registry).unwrap();
        let page = registry.render();
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

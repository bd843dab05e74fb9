//! The HTTP server's own request metrics: a count by path and status code
//! and a latency histogram by path, `prometheus` counters resolved once per
//! path so that a probe pays no label lookup. They are registered in the
//! daemon's one registry (`crate::metrics`), which serves the page.

use super::bind::HttpError;
use crate::metrics::MetricsRegistry;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use std::time::Duration;

/// The `path` label values: the served paths, everything else as `other` so
/// that scanners probing random URLs cannot blow up the series count.
pub const PATHS: [&str; 6] = ["/", "/health", "/ready", "/live", "/metrics", "other"];

/// Index into [`PATHS`] of a request path.
pub fn path_index(path: &str) -> usize {
    PATHS[..5].iter().position(|p| *p == path).unwrap_or(5)
}

/// Request latency buckets, in seconds: probes are answered in tens of
/// microseconds, so the low end is fine-grained; a slow client shows up in
/// the upper ones.
const DURATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// Handles for one path, resolved at start.
struct PathMetrics {
    duration: Histogram,
    ok: IntCounter,
    unavailable: IntCounter,
}

/// The HTTP server's request metrics. Shared by every worker thread.
pub struct RequestMetrics {
    requests: IntCounterVec,
    paths: Vec<PathMetrics>,
}

impl RequestMetrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &MetricsRegistry) -> Result<Self, HttpError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "steep_repl_http_requests_total",
                "HTTP requests answered, by path and status code",
            ),
            &["path", "code"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "steep_repl_http_request_duration_seconds",
                "Time from request to response, by path",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["path"],
        )?;
        registry.register(requests.clone())?;
        registry.register(durations.clone())?;
        let paths = PATHS
            .iter()
            .map(|path| PathMetrics {
                duration: durations.with_label_values(&[*path]),
                ok: requests.with_label_values(&[*path, "200"]),
                unavailable: requests.with_label_values(&[*path, "503"]),
            })
            .collect();
        Ok(RequestMetrics { requests, paths })
    }

    /// Counts one answered request.
    pub fn observe(&self, path: usize, code: actix_web::http::StatusCode, elapsed: Duration) {
        let Some(m) = self.paths.get(path) else {
            return;
        };
        m.duration.observe(elapsed.as_secs_f64());
        match code.as_u16() {
            200 => m.ok.inc(),
            503 => m.unavailable.inc(),
            _ => self
                .requests
                .with_label_values(&[PATHS[path], code.as_str()])
                .inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn requests_are_counted_by_path_and_code() {
        let registry = MetricsRegistry::new();
        let m = RequestMetrics::register(&registry).unwrap();
        m.observe(
            path_index("/health"),
            StatusCode::OK,
            Duration::from_micros(80),
        );
        m.observe(
            path_index("/health"),
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_micros(80),
        );
        m.observe(
            path_index("/nope"),
            StatusCode::NOT_FOUND,
            Duration::from_micros(80),
        );
        let page = registry.render();
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"200\",path=\"/health\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"503\",path=\"/health\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"404\",path=\"other\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_http_request_duration_seconds_count{path=\"/health\"} 2"),
            "{page}"
        );
    }

    #[test]
    fn registering_twice_in_one_registry_is_refused() {
        let registry = MetricsRegistry::new();
        RequestMetrics::register(&registry).unwrap();
        assert!(RequestMetrics::register(&registry).is_err());
    }
}

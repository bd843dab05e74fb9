//! The HTTP server's own request metrics: a count by path and status code
//! and a latency histogram by path, `prometheus` counters resolved once per
//! path so that a probe pays no label lookup. They are registered in the
//! daemon's one registry (`crate::metrics`), which serves the page.
//!
//! Every worker thread counts into a shard of its own (the `prometheus`
//! crate's local, unsynchronised metrics, behind a lock only that worker
//! and a scrape ever take), and a scrape adds the shards into the shared
//! metrics before reading them: counting a probe then touches no memory
//! another core writes. Counted into the shared metrics directly, every
//! request made both workers write the same few cache lines, which cost
//! about a tenth of the probes' throughput (docs/BENCHMARKS.md).

use super::bind::HttpError;
use crate::metrics::MetricsRegistry;
use prometheus::core::{Collector, Desc};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use std::sync::{Arc, Mutex, PoisonError};
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

/// One worker's counts for one path, not yet added to the shared metrics.
struct LocalPath {
    duration: LocalHistogram,
    ok: LocalIntCounter,
    unavailable: LocalIntCounter,
}

/// One worker thread's counts.
pub struct Shard {
    paths: Mutex<Vec<LocalPath>>,
    /// Codes other than 200 and 503 (404, 405: rare) go to the shared vec.
    requests: IntCounterVec,
}

impl Shard {
    /// Counts one answered request.
    pub fn observe(&self, path: usize, code: actix_web::http::StatusCode, elapsed: Duration) {
        let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(m) = paths.get(path) else {
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

    fn flush(&self) {
        let paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        for m in paths.iter() {
            m.duration.flush();
            m.ok.flush();
            m.unavailable.flush();
        }
    }
}

/// The HTTP server's request metrics: a collector in the registry that adds
/// every worker's shard before it is read.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    shards: Arc<Mutex<Vec<Arc<Shard>>>>,
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
        let metrics = RequestMetrics {
            requests,
            durations,
            shards: Arc::new(Mutex::new(Vec::new())),
        };
        registry.register(metrics.clone())?;
        Ok(metrics)
    }

    /// A shard for one worker thread (or one test app).
    pub fn shard(&self) -> Arc<Shard> {
        let counter = |path: &str, code: &str| -> IntCounter {
            self.requests.with_label_values(&[path, code])
        };
        let shard = Arc::new(Shard {
            paths: Mutex::new(
                PATHS
                    .iter()
                    .map(|path| LocalPath {
                        duration: self.durations.with_label_values(&[*path]).local(),
                        ok: counter(path, "200").local(),
                        unavailable: counter(path, "503").local(),
                    })
                    .collect(),
            ),
            requests: self.requests.clone(),
        });
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard.clone());
        shard
    }

    fn flush(&self) {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        for shard in shards.iter() {
            shard.flush();
        }
    }
}

impl Collector for RequestMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.requests.desc();
        descs.extend(self.durations.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.flush();
        let mut families = self.requests.collect();
        families.extend(self.durations.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn requests_are_counted_by_path_and_code() {
        let registry = MetricsRegistry::new();
        let m = RequestMetrics::register(&registry).unwrap().shard();
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

    /// Each worker counts into its own shard; a scrape adds them all.
    #[test]
    fn a_scrape_adds_every_worker_s_counts() {
        let registry = MetricsRegistry::new();
        let metrics = RequestMetrics::register(&registry).unwrap();
        let workers = [metrics.shard(), metrics.shard()];
        std::thread::scope(|scope| {
            for worker in &workers {
                scope.spawn(move || {
                    for _ in 0..5 {
                        worker.observe(
                            path_index("/health"),
                            StatusCode::OK,
                            Duration::from_micros(30),
                        );
                    }
                });
            }
        });
        let page = registry.render();
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"200\",path=\"/health\"} 10"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_http_request_duration_seconds_count{path=\"/health\"} 10"),
            "{page}"
        );
        // A second scrape adds nothing twice.
        workers[0].observe(
            path_index("/health"),
            StatusCode::OK,
            Duration::from_micros(30),
        );
        let page = registry.render();
        assert!(
            page.contains("steep_repl_http_requests_total{code=\"200\",path=\"/health\"} 11"),
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

//! `/metrics`: the Prometheus text exposition of the cached health plus the
//! HTTP server's own request counters.
//!
//! Two sources, one page. Request counts and durations change on every
//! request, so they live in `prometheus` counters and a histogram (atomics,
//! handles resolved once per path so a probe pays no label lookup). Every
//! other value is read from the [`HealthSnapshot`] at scrape time and written
//! here directly: those are gauges and totals the actors already keep, and a
//! family with no sample yet (no peers) still gets its `# HELP`/`# TYPE`
//! lines, so dashboards and tests can rely on every family being declared.

use super::bind::HttpError;
use crate::health_state::{ClusterMetrics, HealthSnapshot, PgVerdict};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    paths: Vec<PathMetrics>,
    /// The IPC server's counters, rendered on the same page when IPC runs.
    ipc: Option<std::sync::Arc<crate::ipc::metrics::IpcMetrics>>,
    /// The gRPC server's refusals, on the same page when gRPC runs.
    grpc: Option<std::sync::Arc<crate::grpc::limits::LimitMetrics>>,
    /// Peers labelled with their address too (`http.details`).
    peer_addresses: bool,
}

impl Metrics {
    pub fn new() -> Result<Self, HttpError> {
        let registry = Registry::new();
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        let paths = PATHS
            .iter()
            .map(|path| PathMetrics {
                duration: durations.with_label_values(&[*path]),
                ok: requests.with_label_values(&[*path, "200"]),
                unavailable: requests.with_label_values(&[*path, "503"]),
            })
            .collect();
        Ok(Metrics {
            registry,
            requests,
            paths,
            ipc: None,
            grpc: None,
            peer_addresses: false,
        })
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

    /// Adds the IPC server's counters to every page.
    pub fn with_ipc(
        mut self,
        ipc: Option<std::sync::Arc<crate::ipc::metrics::IpcMetrics>>,
    ) -> Self {
        self.ipc = ipc;
        self
    }

    /// Adds the gRPC server's refusal counters to every page.
    pub fn with_grpc(
        mut self,
        grpc: Option<std::sync::Arc<crate::grpc::limits::LimitMetrics>>,
    ) -> Self {
        self.grpc = grpc;
        self
    }

    /// Labels every peer with its address as well as its node_id.
    pub fn with_peer_addresses(mut self, on: bool) -> Self {
        self.peer_addresses = on;
        self
    }

    /// The whole page for a scrape at `now`.
    pub fn render(
        &self,
        s: &HealthSnapshot,
        now: Instant,
        stale_after: Duration,
        live: bool,
        cluster: Option<&ClusterMetrics>,
    ) -> String {
        let mut page = Page::default();
        snapshot_families(&mut page, s, now, stale_after, live, self.peer_addresses);
        if let Some(c) = cluster {
            cluster_families(&mut page, c);
        }
        let mut out = page.0;
        if let Some(ipc) = &self.ipc {
            ipc.snapshot().write_prometheus(&mut out);
        }
        if let Some(grpc) = &self.grpc {
            grpc.write_prometheus(&mut out);
        }
        // Encoding plain counters into a String cannot fail; should the
        // crate ever refuse, the snapshot part is still worth serving.
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out
    }
}

/// A text exposition being written.
/// The cluster member's families (docs/operations.md, "HTTP probes and metrics").
fn cluster_families(page: &mut Page, c: &ClusterMetrics) {
    let gauges: [(&str, &str, f64); 9] = [
        (
            "steep_repl_raft_term",
            "The Raft term this node is in",
            c.term as f64,
        ),
        (
            "steep_repl_raft_is_leader",
            "1 while this node is the Raft leader",
            bit(c.is_leader),
        ),
        (
            "steep_repl_raft_last_log_index",
            "The index of the last entry in this node's log",
            c.last_log_index as f64,
        ),
        (
            "steep_repl_raft_commit_index",
            "The index of the last entry this node knows committed",
            c.commit_index as f64,
        ),
        (
            "steep_repl_raft_applied_index",
            "The index of the last entry this node applied",
            c.applied_index as f64,
        ),
        (
            "steep_repl_raft_log_bytes",
            "The size of the Raft log file",
            c.log_bytes as f64,
        ),
        (
            "steep_repl_raft_snapshot_bytes",
            "The size of the latest Raft snapshot",
            c.snapshot_bytes as f64,
        ),
        (
            "steep_repl_raft_quorum_ack_age_seconds",
            "On the leader: seconds since a majority last answered (-1 elsewhere)",
            c.quorum_ack_age.map_or(-1.0, |d| d.as_secs_f64()),
        ),
        (
            "steep_repl_raft_fsync_p99_seconds",
            "p99 of the last 1024 fsyncs of the Raft log (-1 before any)",
            c.fsync_p99.map_or(-1.0, |d| d.as_secs_f64()),
        ),
    ];
    for (name, help, value) in gauges {
        page.family(name, "gauge", help);
        page.sample(name, &[], value);
    }
    page.family(
        "steep_repl_raft_leader",
        "gauge",
        "1, labelled with the leader this node knows (no sample: none)",
    );
    if let Some(leader) = &c.leader {
        page.sample("steep_repl_raft_leader", &[("node_id", leader)], 1.0);
    }
    page.family(
        "steep_repl_raft_follower_lag_entries",
        "gauge",
        "On the leader: entries a follower has not stored yet",
    );
    for (node_id, lag) in &c.follower_lag {
        page.sample(
            "steep_repl_raft_follower_lag_entries",
            &[("node_id", node_id)],
            *lag as f64,
        );
    }
    page.family(
        "steep_repl_no_quorum_total",
        "counter",
        "Requests this node answered NO_QUORUM",
    );
    page.sample("steep_repl_no_quorum_total", &[], c.no_quorum_total as f64);
    let p = &c.projection;
    let projection: [(&str, &str, &str, f64); 3] = [
        (
            "steep_repl_projection_applied_index",
            "gauge",
            "The log index PostgreSQL's tables hold (-1 before the first write)",
            p.applied_index.map_or(-1.0, |i| i as f64),
        ),
        (
            "steep_repl_projection_failing",
            "gauge",
            "1 while PostgreSQL refuses to apply the replicated state (cluster.status says why)",
            bit(p.error.is_some()),
        ),
        (
            "steep_repl_projection_failures_total",
            "counter",
            "Attempts to apply the replicated state that PostgreSQL refused",
            p.failures as f64,
        ),
    ];
    for (name, kind, help, value) in projection {
        page.family(name, kind, help);
        page.sample(name, &[], value);
    }
}

/// Seconds until each peer TLS certificate in use expires (negative once
/// expired); no sample without mTLS. Read at scrape time, so the value
/// counts down between reloads.
fn tls_families(
    page: &mut Page,
    tls: Option<&crate::peer_tls::CertificateInfo>,
    now: chrono::DateTime<chrono::Utc>,
) {
    const NAME: &str = "steep_repl_tls_certificate_expiry_seconds";
    page.family(
        NAME,
        "gauge",
        "Seconds until the peer TLS certificate in use expires (node: grpc.tls.cert_file, ca: grpc.tls.ca_file); negative once expired",
    );
    if let Some(info) = tls {
        for (which, _, not_after) in info.each() {
            page.sample(
                NAME,
                &[("certificate", which.as_str())],
                crate::peer_tls::expiry::seconds_until(not_after, now),
            );
        }
    }
}

#[derive(Default)]
struct Page(String);

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        self.0.push(' ');
        self.0.push_str(&format_value(value));
        self.0.push('\n');
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus spells the special floats `NaN`, `+Inf`, `-Inf`.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

fn bit(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// A peer's labels: its node_id (or its place in the list while it is not
/// identified) and, with `http.details`, its address.
struct PeerLabels(Vec<(&'static str, String)>);

impl PeerLabels {
    fn refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

fn peer_labels(peer: &crate::health_state::PeerHealth, i: usize, addresses: bool) -> PeerLabels {
    let name = match (&peer.node_id, addresses) {
        (Some(id), _) => id.clone(),
        (None, true) => peer.address.clone(),
        (None, false) => format!("unidentified-{i}"),
    };
    let mut labels = vec![("peer", name)];
    if addresses {
        labels.push(("address", peer.address.clone()));
    }
    PeerLabels(labels)
}

fn snapshot_families(
    page: &mut Page,
    s: &HealthSnapshot,
    now: Instant,
    stale_after: Duration,
    live: bool,
    addresses: bool,
) {
    let pg_usable = s.postgres_verdict(now, stale_after) == PgVerdict::Usable;

    page.family(
        "steep_repl_up",
        "gauge",
        "1 when the component is healthy (a listener turned off in the configuration counts as healthy; see steep_repl_component_enabled)",
    );
    page.sample(
        "steep_repl_up",
        &[("component", "postgresql")],
        bit(pg_usable),
    );
    for (name, listener) in [("grpc", &s.grpc), ("ipc", &s.ipc), ("http", &s.http)] {
        page.sample("steep_repl_up", &[("component", name)], bit(listener.ok()));
    }
    page.family(
        "steep_repl_component_enabled",
        "gauge",
        "1 when the configuration turns the listener on",
    );
    for (name, listener) in [("grpc", &s.grpc), ("ipc", &s.ipc), ("http", &s.http)] {
        page.sample(
            "steep_repl_component_enabled",
            &[("component", name)],
            bit(listener.enabled),
        );
    }

    page.family("steep_repl_healthy", "gauge", "1 when /health answers 200");
    page.sample(
        "steep_repl_healthy",
        &[],
        bit(s.is_healthy(now, stale_after)),
    );
    page.family("steep_repl_ready", "gauge", "1 when /ready answers 200");
    page.sample(
        "steep_repl_ready",
        &[],
        bit(s.readiness(now, stale_after).is_ok()),
    );
    page.family(
        "steep_repl_live",
        "gauge",
        "1 when /live answers 200 (the daemon's own loops turn)",
    );
    page.sample("steep_repl_live", &[], bit(live));

    let pg = &s.postgresql;
    page.family(
        "steep_repl_postgresql_latency_seconds",
        "gauge",
        "Round trip of the last successful PostgreSQL ping (absent until one succeeded)",
    );
    if let Some(latency) = pg.latency {
        page.sample(
            "steep_repl_postgresql_latency_seconds",
            &[],
            latency.as_secs_f64(),
        );
    }
    page.family(
        "steep_repl_postgresql_reconnects_total",
        "counter",
        "Successful PostgreSQL connections after the first one",
    );
    page.sample(
        "steep_repl_postgresql_reconnects_total",
        &[],
        pg.reconnects as f64,
    );

    let audit = &s.audit;
    page.family(
        "steep_repl_audit_queue_depth",
        "gauge",
        "Audit events spooled and not yet written to PostgreSQL",
    );
    page.sample(
        "steep_repl_audit_queue_depth",
        &[],
        audit.queue_depth as f64,
    );
    page.family(
        "steep_repl_audit_written_total",
        "counter",
        "Audit events written to PostgreSQL",
    );
    page.sample(
        "steep_repl_audit_written_total",
        &[],
        audit.written_total as f64,
    );
    page.family(
        "steep_repl_audit_dropped_total",
        "counter",
        "Audit events refused because the spool was full",
    );
    page.sample(
        "steep_repl_audit_dropped_total",
        &[],
        audit.dropped_total as f64,
    );

    page.family(
        "steep_repl_peer_up",
        "gauge",
        "1 when the peer answers heartbeats (healthy or degraded)",
    );
    for (i, peer) in s.peers.iter().enumerate() {
        let up = matches!(peer.status.as_str(), "healthy" | "degraded");
        page.sample(
            "steep_repl_peer_up",
            &peer_labels(peer, i, addresses).refs(),
            bit(up),
        );
    }
    page.family(
        "steep_repl_peer_rtt_seconds",
        "gauge",
        "Round trip of the last heartbeat the peer answered",
    );
    for (i, peer) in s.peers.iter().enumerate() {
        if let Some(rtt_ms) = peer.rtt_ms {
            page.sample(
                "steep_repl_peer_rtt_seconds",
                &peer_labels(peer, i, addresses).refs(),
                rtt_ms / 1000.0,
            );
        }
    }
    tls_families(page, s.tls.as_ref(), chrono::Utc::now());

    page.family(
        "steep_repl_actor_restarts_total",
        "counter",
        "Restarts of each supervised actor",
    );
    for (actor, restarts) in &s.restarts {
        page.sample(
            "steep_repl_actor_restarts_total",
            &[("actor", actor)],
            f64::from(*restarts),
        );
    }

    page.family(
        "steep_repl_uptime_seconds",
        "gauge",
        "Seconds since the daemon started",
    );
    page.sample(
        "steep_repl_uptime_seconds",
        &[],
        now.saturating_duration_since(s.started)
            .as_secs_f64()
            .floor(),
    );
    page.family(
        "steep_repl_is_coordinator",
        "gauge",
        "1 while this node is the cluster coordinator",
    );
    page.sample(
        "steep_repl_is_coordinator",
        &[],
        bit(s.node.is_coordinator()),
    );
    page.family(
        "steep_repl_coordinator_epoch",
        "gauge",
        "The epoch of the coordinator this node names (0: none known)",
    );
    page.sample(
        "steep_repl_coordinator_epoch",
        &[],
        s.node.epoch.unwrap_or(0) as f64,
    );
    page.family(
        "steep_repl_coordinator_lease_remaining_seconds",
        "gauge",
        "On the coordinator: how long its lease has left (0 elsewhere)",
    );
    page.sample(
        "steep_repl_coordinator_lease_remaining_seconds",
        &[],
        s.node
            .lease_remaining
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    );
    page.family(
        "steep_repl_cluster_size",
        "gauge",
        "Members of the cluster, this one included",
    );
    page.sample("steep_repl_cluster_size", &[], s.node.cluster_size as f64);
    page.family(
        "steep_repl_build_info",
        "gauge",
        "Always 1; the labels name this daemon",
    );
    page.sample(
        "steep_repl_build_info",
        &[("version", &s.version), ("node_id", &s.node.node_id)],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_state::{DbPhase, PeerHealth, PostgresHealth};
    use actix_web::http::StatusCode;

    fn snapshot() -> HealthSnapshot {
        HealthSnapshot::starting(
            "0.1.0",
            "a",
            "A",
            PostgresHealth::new("db", 5432, "postgres"),
        )
    }

    #[test]
    fn every_family_is_declared_even_without_samples() {
        let m = Metrics::new().unwrap();
        let page = m.render(
            &snapshot(),
            Instant::now(),
            Duration::from_secs(3),
            true,
            None,
        );
        for family in [
            "steep_repl_up",
            "steep_repl_postgresql_latency_seconds",
            "steep_repl_postgresql_reconnects_total",
            "steep_repl_audit_queue_depth",
            "steep_repl_audit_written_total",
            "steep_repl_audit_dropped_total",
            "steep_repl_peer_up",
            "steep_repl_peer_rtt_seconds",
            "steep_repl_http_requests_total",
            "steep_repl_http_request_duration_seconds",
            "steep_repl_uptime_seconds",
            "steep_repl_is_coordinator",
            "steep_repl_tls_certificate_expiry_seconds",
        ] {
            assert!(
                page.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{page}"
            );
        }
        assert!(
            page.contains("steep_repl_up{component=\"postgresql\"} 0\n"),
            "{page}"
        );
        assert!(
            page.contains("steep_repl_up{component=\"grpc\"} 1\n"),
            "{page}"
        );
    }

    #[test]
    fn values_come_from_the_snapshot() {
        let mut s = snapshot();
        let now = Instant::now();
        s.postgresql.phase = DbPhase::Connected;
        s.postgresql.checked_at = Some(now);
        s.postgresql.latency = Some(Duration::from_micros(1500));
        s.postgresql.reconnects = 3;
        s.audit.queue_depth = 7;
        s.node.coordinator_id = Some("a".into());
        s.peers.push(PeerHealth {
            node_id: Some("b\"x".into()),
            address: "10.0.0.2:5433".into(),
            status: crate::node_status::NodeStatus::Healthy,
            rtt_ms: Some(2.5),
            last_seen: None,
            error: None,
            postgresql_up: Some(true),
        });
        let hidden = Metrics::new()
            .unwrap()
            .render(&s, now, Duration::from_secs(3), true, None);
        // Without http.details the page names peers, not their addresses.
        assert!(
            hidden.contains("steep_repl_peer_up{peer=\"b\\\"x\"} 1"),
            "{hidden}"
        );
        assert!(!hidden.contains("10.0.0.2"), "{hidden}");
        let page = Metrics::new().unwrap().with_peer_addresses(true).render(
            &s,
            now,
            Duration::from_secs(3),
            true,
            None,
        );
        for line in [
            "steep_repl_up{component=\"postgresql\"} 1",
            "steep_repl_postgresql_latency_seconds 0.0015",
            "steep_repl_postgresql_reconnects_total 3",
            "steep_repl_audit_queue_depth 7",
            "steep_repl_is_coordinator 1",
            "steep_repl_peer_up{peer=\"b\\\"x\",address=\"10.0.0.2:5433\"} 1",
            "steep_repl_peer_rtt_seconds{peer=\"b\\\"x\",address=\"10.0.0.2:5433\"} 0.0025",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} missing:\n{page}");
        }
    }

    #[test]
    fn the_cluster_member_numbers_are_on_the_page_when_there_is_one() {
        let mut s = snapshot();
        s.node.coordinator_id = Some("b".into());
        s.node.epoch = Some(7);
        s.node.lease_remaining = Some(Duration::from_millis(1500));
        let cluster = ClusterMetrics {
            term: 3,
            leader: Some("a".into()),
            is_leader: true,
            last_log_index: 42,
            commit_index: 41,
            applied_index: 41,
            quorum_ack_age: Some(Duration::from_millis(120)),
            follower_lag: vec![("b".into(), 2)],
            log_bytes: 4096,
            snapshot_bytes: 512,
            no_quorum_total: 5,
            fsync_p99: Some(Duration::from_micros(2500)),
            projection: crate::raft::projection_status::ProjectionReport {
                applied_index: Some(40),
                error: Some("refused".into()),
                failing_since: None,
                failures: 3,
            },
        };
        let m = Metrics::new().unwrap();
        let page = m.render(
            &s,
            Instant::now(),
            Duration::from_secs(3),
            true,
            Some(&cluster),
        );
        for line in [
            "steep_repl_coordinator_epoch 7",
            "steep_repl_coordinator_lease_remaining_seconds 1.5",
            "steep_repl_raft_term 3",
            "steep_repl_raft_is_leader 1",
            "steep_repl_raft_leader{node_id=\"a\"} 1",
            "steep_repl_raft_applied_index 41",
            "steep_repl_raft_quorum_ack_age_seconds 0.12",
            "steep_repl_raft_follower_lag_entries{node_id=\"b\"} 2",
            "steep_repl_raft_fsync_p99_seconds 0.0025",
            "steep_repl_no_quorum_total 5",
            "steep_repl_projection_applied_index 40",
            "steep_repl_projection_failing 1",
            "steep_repl_projection_failures_total 3",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} missing:\n{page}");
        }
        let without = m.render(&s, Instant::now(), Duration::from_secs(3), true, None);
        assert!(!without.contains("steep_repl_raft_term"));
    }

    #[test]
    fn requests_are_counted_by_path_and_code() {
        let m = Metrics::new().unwrap();
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
        let page = m.render(
            &snapshot(),
            Instant::now(),
            Duration::from_secs(3),
            true,
            None,
        );
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
    fn special_floats_use_the_prometheus_spelling() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(escape_label("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn certificate_expiry_counts_down_from_the_scrape_time() {
        use chrono::TimeZone;
        let now = chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let info = crate::peer_tls::CertificateInfo {
            cert_file: "/tls/a.crt".into(),
            ca_file: "/tls/ca.crt".into(),
            serial: "01".into(),
            subject: "CN=a, SAN=[a]".into(),
            not_after: now + chrono::Duration::days(5),
            ca_not_after: now - chrono::Duration::seconds(30),
        };
        let mut page = Page::default();
        tls_families(&mut page, Some(&info), now);
        assert!(
            page.0.contains(
                "steep_repl_tls_certificate_expiry_seconds{certificate=\"node\"} 432000\n"
            ),
            "{}",
            page.0
        );
        assert!(
            page.0
                .contains("steep_repl_tls_certificate_expiry_seconds{certificate=\"ca\"} -30\n"),
            "{}",
            page.0
        );
        let mut page = Page::default();
        tls_families(&mut page, None, now);
        assert!(!page.0.contains("{certificate="), "{}", page.0);
    }
}

//! The families read from the health snapshot at scrape time: the values
//! the actors already keep (PostgreSQL, listeners, audit, peers, the
//! coordinator, the cluster member's Raft numbers), so a scrape costs one
//! snapshot load and nothing is counted twice. Listed in
//! docs/operations.md, "HTTP probes and metrics".

use super::family::{bit, Declared, Kind, Samples, Spec};
use crate::health_state::{ClusterMetrics, HealthSnapshot, PeerHealth, PgVerdict, SharedHealth};
use crate::node_status::NodeStatus;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use std::time::{Duration, Instant};

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: Kind::Gauge,
        help,
        labels,
    }
}

const fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: Kind::Counter,
        help,
        labels,
    }
}

/// Every family of this collector. The peer families carry `address` too
/// with `http.details` (see [`HealthCollector::new`]).
const FAMILIES: &[Spec] = &[
    gauge("steep_repl_up", "1 when the component is healthy (a listener turned off in the configuration counts as healthy; see steep_repl_component_enabled)", &["component"]),
    gauge("steep_repl_component_enabled", "1 when the configuration turns the listener on", &["component"]),
    gauge("steep_repl_healthy", "1 when /health answers 200", &[]),
    gauge("steep_repl_ready", "1 when /ready answers 200", &[]),
    gauge("steep_repl_live", "1 when /live answers 200 (the daemon's own loops turn)", &[]),
    gauge("steep_repl_postgresql_latency_seconds", "Round trip of the last successful PostgreSQL ping (absent until one succeeded)", &[]),
    counter("steep_repl_postgresql_reconnects_total", "Successful PostgreSQL connections after the first one", &[]),
    gauge("steep_repl_audit_queue_depth", "Audit events spooled and not yet written to PostgreSQL", &[]),
    counter("steep_repl_audit_written_total", "Audit events written to PostgreSQL", &[]),
    counter("steep_repl_audit_dropped_total", "Audit events refused because the spool was full", &[]),
    gauge("steep_repl_peer_up", "1 when the peer answers heartbeats (healthy or degraded)", &["peer"]),
    gauge("steep_repl_peer_rtt_seconds", "Round trip of the last heartbeat the peer answered", &["peer"]),
    gauge("steep_repl_tls_certificate_expiry_seconds", "Seconds until the peer TLS certificate in use expires (node: grpc.tls.cert_file, ca: grpc.tls.ca_file); negative once expired", &["certificate"]),
    gauge("steep_repl_uptime_seconds", "Seconds since the daemon started", &[]),
    gauge("steep_repl_is_coordinator", "1 while this node is the cluster coordinator", &[]),
    gauge("steep_repl_coordinator_epoch", "The epoch of the coordinator this node names (0: none known)", &[]),
    gauge("steep_repl_coordinator_lease_remaining_seconds", "On the coordinator: how long its lease has left (0 elsewhere)", &[]),
    gauge("steep_repl_cluster_size", "Members of the cluster, this one included", &[]),
    gauge("steep_repl_build_info", "Always 1; the labels name this daemon", &["version", "node_id"]),
    // The cluster member's, when one runs here.
    gauge("steep_repl_raft_term", "The Raft term this node is in", &[]),
    gauge("steep_repl_raft_is_leader", "1 while this node is the Raft leader", &[]),
    gauge("steep_repl_raft_last_log_index", "The index of the last entry in this node's log", &[]),
    gauge("steep_repl_raft_commit_index", "The index of the last entry this node knows committed", &[]),
    gauge("steep_repl_raft_applied_index", "The index of the last entry this node applied", &[]),
    gauge(
        "steep_repl_raft_log_bytes",
        "The bytes of records in the Raft log file (the file is longer by the space reserved for the next records)",
        &[],
    ),
    gauge("steep_repl_raft_snapshot_bytes", "The size of the latest Raft snapshot", &[]),
    gauge("steep_repl_raft_quorum_ack_age_seconds", "On the leader: seconds since a majority last answered (-1 elsewhere)", &[]),
    gauge("steep_repl_raft_fsync_p99_seconds", "p99 of the last 1024 fsyncs of the Raft log (-1 before any)", &[]),
    gauge("steep_repl_raft_leader", "1, labelled with the leader this node knows (no sample: none)", &["node_id"]),
    gauge("steep_repl_raft_follower_lag_entries", "On the leader: entries a follower has not stored yet", &["node_id"]),
    counter("steep_repl_no_quorum_total", "Requests this node answered NO_QUORUM", &[]),
    gauge("steep_repl_projection_applied_index", "The log index PostgreSQL's tables hold (-1 before the first write)", &[]),
    gauge("steep_repl_projection_failing", "1 while PostgreSQL refuses to apply the replicated state (cluster.status says why)", &[]),
    counter("steep_repl_projection_failures_total", "Attempts to apply the replicated state that PostgreSQL refused", &[]),
];

/// Reads the health snapshot (and the cluster member's numbers) at every
/// scrape.
pub struct HealthCollector {
    health: SharedHealth,
    /// `/live` fails once the daemon's loop has not turned for this long.
    live_after: Duration,
    /// Peers labelled with their address too (`http.details`).
    peer_addresses: bool,
    declared: Declared,
}

impl HealthCollector {
    pub fn new(
        health: SharedHealth,
        live_after: Duration,
        peer_addresses: bool,
    ) -> prometheus::Result<Self> {
        let specs = FAMILIES
            .iter()
            .map(|spec| match spec.labels {
                ["peer"] if peer_addresses => Spec {
                    labels: &["peer", "address"],
                    ..*spec
                },
                _ => *spec,
            })
            .collect();
        Ok(HealthCollector {
            health,
            live_after,
            peer_addresses,
            declared: Declared::new(specs)?,
        })
    }

    /// The families for one snapshot, at `now`.
    fn families(
        &self,
        s: &HealthSnapshot,
        now: Instant,
        live: bool,
        cluster: Option<&ClusterMetrics>,
    ) -> Vec<MetricFamily> {
        let mut page = self.declared.samples();
        snapshot_samples(
            &mut page,
            s,
            now,
            self.health.stale_after,
            live,
            self.peer_addresses,
        );
        tls_samples(&mut page, s.tls.as_ref(), chrono::Utc::now());
        if let Some(c) = cluster {
            cluster_samples(&mut page, c);
        }
        page.finish()
    }
}

impl Collector for HealthCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.declared.descs()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.health.load();
        let live = self.health.loop_age() < self.live_after;
        let cluster = self.health.cluster_metrics();
        self.families(&snapshot, Instant::now(), live, cluster.as_ref())
    }
}

/// A peer's label values: its node_id (or its place in the list while it
/// is not identified) and, with `http.details`, its address.
fn peer_labels(peer: &PeerHealth, i: usize, addresses: bool) -> Vec<String> {
    let name = match (&peer.node_id, addresses) {
        (Some(id), _) => id.clone(),
        (None, true) => peer.address.clone(),
        (None, false) => format!("unidentified-{i}"),
    };
    let mut labels = vec![name];
    if addresses {
        labels.push(peer.address.clone());
    }
    labels
}

fn snapshot_samples(
    page: &mut Samples<'_>,
    s: &HealthSnapshot,
    now: Instant,
    stale_after: Duration,
    live: bool,
    addresses: bool,
) {
    let pg_usable = s.postgres_verdict(now, stale_after) == PgVerdict::Usable;
    page.set("steep_repl_up", &["postgresql"], bit(pg_usable));
    let listeners = [("grpc", &s.grpc), ("ipc", &s.ipc), ("http", &s.http)];
    for (name, listener) in listeners {
        page.set("steep_repl_up", &[name], bit(listener.ok()));
    }
    for (name, listener) in listeners {
        page.set(
            "steep_repl_component_enabled",
            &[name],
            bit(listener.enabled),
        );
    }
    page.set(
        "steep_repl_healthy",
        &[],
        bit(s.is_healthy(now, stale_after)),
    );
    page.set(
        "steep_repl_ready",
        &[],
        bit(s.readiness(now, stale_after).is_ok()),
    );
    page.set("steep_repl_live", &[], bit(live));

    let pg = &s.postgresql;
    if let Some(latency) = pg.latency {
        page.set(
            "steep_repl_postgresql_latency_seconds",
            &[],
            latency.as_secs_f64(),
        );
    }
    page.set(
        "steep_repl_postgresql_reconnects_total",
        &[],
        pg.reconnects as f64,
    );
    let audit = &s.audit;
    page.set(
        "steep_repl_audit_queue_depth",
        &[],
        audit.queue_depth as f64,
    );
    page.set(
        "steep_repl_audit_written_total",
        &[],
        audit.written_total as f64,
    );
    page.set(
        "steep_repl_audit_dropped_total",
        &[],
        audit.dropped_total as f64,
    );

    for (i, peer) in s.peers.iter().enumerate() {
        let labels = peer_labels(peer, i, addresses);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let up = matches!(peer.status, NodeStatus::Healthy | NodeStatus::Degraded);
        page.set("steep_repl_peer_up", &labels, bit(up));
        if let Some(rtt_ms) = peer.rtt_ms {
            page.set("steep_repl_peer_rtt_seconds", &labels, rtt_ms / 1000.0);
        }
    }

    page.set(
        "steep_repl_uptime_seconds",
        &[],
        now.saturating_duration_since(s.started)
            .as_secs_f64()
            .floor(),
    );
    page.set(
        "steep_repl_is_coordinator",
        &[],
        bit(s.node.is_coordinator()),
    );
    page.set(
        "steep_repl_coordinator_epoch",
        &[],
        s.node.epoch.unwrap_or(0) as f64,
    );
    page.set(
        "steep_repl_coordinator_lease_remaining_seconds",
        &[],
        s.node.lease_remaining.map_or(0.0, |d| d.as_secs_f64()),
    );
    page.set("steep_repl_cluster_size", &[], s.node.cluster_size as f64);
    page.set("steep_repl_build_info", &[&s.version, &s.node.node_id], 1.0);
}

/// Seconds until each peer TLS certificate in use expires (negative once
/// expired); no sample without mTLS. Read at scrape time, so the value
/// counts down between reloads.
fn tls_samples(
    page: &mut Samples<'_>,
    tls: Option<&crate::peer_tls::CertificateInfo>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let Some(info) = tls else {
        return;
    };
    for (which, _, not_after) in info.each() {
        page.set(
            "steep_repl_tls_certificate_expiry_seconds",
            &[which.as_str()],
            crate::peer_tls::expiry::seconds_until(not_after, now),
        );
    }
}

fn cluster_samples(page: &mut Samples<'_>, c: &ClusterMetrics) {
    let gauges = [
        ("steep_repl_raft_term", c.term as f64),
        ("steep_repl_raft_is_leader", bit(c.is_leader)),
        ("steep_repl_raft_last_log_index", c.last_log_index as f64),
        ("steep_repl_raft_commit_index", c.commit_index as f64),
        ("steep_repl_raft_applied_index", c.applied_index as f64),
        ("steep_repl_raft_log_bytes", c.log_bytes as f64),
        ("steep_repl_raft_snapshot_bytes", c.snapshot_bytes as f64),
        (
            "steep_repl_raft_quorum_ack_age_seconds",
            c.quorum_ack_age.map_or(-1.0, |d| d.as_secs_f64()),
        ),
        (
            "steep_repl_raft_fsync_p99_seconds",
            c.fsync_p99.map_or(-1.0, |d| d.as_secs_f64()),
        ),
        ("steep_repl_no_quorum_total", c.no_quorum_total as f64),
    ];
    for (name, value) in gauges {
        page.set(name, &[], value);
    }
    if let Some(leader) = &c.leader {
        page.set("steep_repl_raft_leader", &[leader], 1.0);
    }
    for (node_id, lag) in &c.follower_lag {
        page.set(
            "steep_repl_raft_follower_lag_entries",
            &[node_id],
            *lag as f64,
        );
    }
    let p = &c.projection;
    page.set(
        "steep_repl_projection_applied_index",
        &[],
        p.applied_index.map_or(-1.0, |i| i as f64),
    );
    page.set("steep_repl_projection_failing", &[], bit(p.error.is_some()));
    page.set(
        "steep_repl_projection_failures_total",
        &[],
        p.failures as f64,
    );
}

#[cfg(test)]
mod tests;

use super::*;
use crate::health_state::{DbPhase, PeerHealth, PostgresHealth};
use crate::metrics::MetricsRegistry;
use prometheus::TextEncoder;

fn snapshot() -> HealthSnapshot {
    HealthSnapshot::starting(
        "0.1.0",
        "a",
        "A",
        PostgresHealth::new("db", 5432, "postgres"),
    )
}

fn shared(s: HealthSnapshot) -> SharedHealth {
    SharedHealth::new(s, Duration::from_secs(3))
}

fn page_of(
    collector: &HealthCollector,
    s: &HealthSnapshot,
    now: Instant,
    cluster: Option<&ClusterMetrics>,
) -> String {
    let families: Vec<_> = collector
        .families(s, now, true, cluster)
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    TextEncoder::new().encode_to_string(&families).unwrap()
}

fn peer() -> PeerHealth {
    PeerHealth {
        node_id: Some("b\"x".into()),
        address: "10.0.0.2:5433".into(),
        status: crate::node_status::NodeStatus::Healthy,
        rtt_ms: Some(2.5),
        last_seen: None,
        error: None,
        postgresql_up: Some(true),
    }
}

fn cluster() -> ClusterMetrics {
    ClusterMetrics {
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
    }
}

fn certificate(now: chrono::DateTime<chrono::Utc>) -> crate::peer_tls::CertificateInfo {
    crate::peer_tls::CertificateInfo {
        cert_file: "/tls/a.crt".into(),
        ca_file: "/tls/ca.crt".into(),
        serial: "01".into(),
        subject: "CN=a, SAN=[a]".into(),
        not_after: now + chrono::Duration::days(5),
        ca_not_after: now - chrono::Duration::seconds(30),
    }
}

#[test]
fn every_declared_family_has_a_sample_on_a_full_snapshot() {
    let mut s = snapshot();
    let now = Instant::now();
    s.postgresql.phase = DbPhase::Connected;
    s.postgresql.checked_at = Some(now);
    s.postgresql.latency = Some(Duration::from_micros(1500));
    s.peers.push(peer());
    s.tls = Some(certificate(chrono::Utc::now()));
    let collector =
        HealthCollector::new(shared(snapshot()), Duration::from_secs(5), false).unwrap();
    let families = collector.families(&s, now, true, Some(&cluster()));
    let empty: Vec<_> = families
        .iter()
        .filter(|f| f.get_metric().is_empty())
        .map(|f| f.name().to_string())
        .collect();
    assert!(empty.is_empty(), "families without a sample: {empty:?}");
    assert_eq!(families.len(), FAMILIES.len());
}

#[test]
fn a_family_without_a_sample_is_left_out_of_the_page() {
    let health = shared(snapshot());
    let registry = MetricsRegistry::new();
    registry
        .register(HealthCollector::new(health, Duration::from_secs(5), false).unwrap())
        .unwrap();
    let page = registry.render();
    // No peers, no mTLS, no cluster member: those families are absent.
    for family in [
        "steep_repl_peer_up",
        "steep_repl_tls_certificate_expiry_seconds",
        "steep_repl_raft_term",
    ] {
        assert!(!page.contains(family), "{family} present:\n{page}");
    }
    assert!(page.contains("# TYPE steep_repl_up gauge\n"), "{page}");
    assert!(
        page.contains("steep_repl_up{component=\"postgresql\"} 0\n"),
        "{page}"
    );
    assert!(
        page.contains("steep_repl_up{component=\"grpc\"} 1\n"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE steep_repl_postgresql_reconnects_total counter\n"),
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
    s.peers.push(peer());
    let hidden = HealthCollector::new(shared(snapshot()), Duration::from_secs(5), false).unwrap();
    let hidden = page_of(&hidden, &s, now, None);
    // Without http.details the page names peers, not their addresses.
    assert!(
        hidden.contains("steep_repl_peer_up{peer=\"b\\\"x\"} 1"),
        "{hidden}"
    );
    assert!(!hidden.contains("10.0.0.2"), "{hidden}");
    let details = HealthCollector::new(shared(snapshot()), Duration::from_secs(5), true).unwrap();
    let page = page_of(&details, &s, now, None);
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
    let collector =
        HealthCollector::new(shared(snapshot()), Duration::from_secs(5), false).unwrap();
    let page = page_of(&collector, &s, Instant::now(), Some(&cluster()));
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
    let without = page_of(&collector, &s, Instant::now(), None);
    assert!(!without.contains("steep_repl_raft_term"));
}

#[test]
fn certificate_expiry_counts_down_from_the_scrape_time() {
    use chrono::TimeZone;
    let now = chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let declared = Declared::new(FAMILIES.to_vec()).unwrap();
    let mut samples = declared.samples();
    tls_samples(&mut samples, Some(&certificate(now)), now);
    let families: Vec<_> = samples
        .finish()
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let page = TextEncoder::new().encode_to_string(&families).unwrap();
    assert!(
        page.contains("steep_repl_tls_certificate_expiry_seconds{certificate=\"node\"} 432000\n"),
        "{page}"
    );
    assert!(
        page.contains("steep_repl_tls_certificate_expiry_seconds{certificate=\"ca\"} -30\n"),
        "{page}"
    );
}

#[test]
fn the_live_gauge_follows_the_daemon_loop() {
    let health = shared(snapshot());
    health.touch_loop();
    let registry = MetricsRegistry::new();
    registry
        .register(HealthCollector::new(health, Duration::from_secs(60), false).unwrap())
        .unwrap();
    assert!(registry.render().contains("steep_repl_live 1\n"));
    let stuck = shared(snapshot());
    let registry = MetricsRegistry::new();
    registry
        .register(HealthCollector::new(stuck, Duration::ZERO, false).unwrap())
        .unwrap();
    assert!(registry.render().contains("steep_repl_live 0\n"));
}

//! Cluster scenarios with every node in its own container (PostgreSQL 18 +
//! steep_repl + the daemon, mutual TLS), on a private Docker network made
//! for each test: convergence, a partition, a frozen node, a restart, and
//! PostgreSQL stopped under a running daemon; and a daemon installed as a
//! systemd service coming back after the container restarts.
//!
//! Needs a Docker engine and the images of deploy/image.sh (deploy/test.sh
//! builds them). STEEP_SKIP_CONTAINER_TESTS=1 skips these tests, each
//! saying so in the output.

use std::time::Duration;
use steep_repl_tests::claims::ClaimPoller;
use steep_repl_tests::containers::cluster::ContainerCluster;
use steep_repl_tests::containers::systemd::SystemdNode;
use steep_repl_tests::containers::{
    announce, node_image, preflight, should_run, systemd_image, SKIP_VAR,
};

/// Convergence, failover and recovery bounds: generous, since these run
/// beside other tests on two cores; the daemon's own bound for "unreachable"
/// is unreachable_after (3 s) plus one heartbeat.
const CONVERGE: Duration = Duration::from_secs(60);

/// node-1 (50), node-2 (70), node-3 (60): node-2 is the coordinator while it
/// is healthy and seen by a majority, node-3 next.
const PRIORITIES: [u8; 3] = [50, 70, 60];

const ALL: [usize; 3] = [0, 1, 2];
const ALL_HEALTHY: [(&str, &str); 3] = [
    ("node-1", "healthy"),
    ("node-2", "healthy"),
    ("node-3", "healthy"),
];

/// Waits until every node in `viewers` shows `statuses` in its registry
/// and names `coordinator` (None: no coordinator).
async fn wait_for_view(
    cluster: &ContainerCluster,
    what: &str,
    viewers: &[usize],
    statuses: &[(&str, &str)],
    coordinator: Option<&str>,
) {
    cluster
        .wait_until(what, CONVERGE, || async {
            Ok(cluster.all_see(viewers, statuses).await?
                && cluster.agree(viewers, coordinator).await?)
        })
        .await
        .unwrap();
}

async fn converged_cluster() -> ContainerCluster {
    let cluster = ContainerCluster::start(&node_image(), &PRIORITIES)
        .await
        .unwrap();
    wait_for_view(
        &cluster,
        "all three healthy everywhere, node-2 coordinator everywhere",
        &ALL,
        &ALL_HEALTHY,
        Some("node-2"),
    )
    .await;
    cluster
}

/// The last `coordinator.elected` audit row of node `i`: the holder granted.
async fn last_election(cluster: &ContainerCluster, i: usize) -> serde_json::Value {
    let json = cluster.nodes[i]
        .sql(
            "SELECT new_value FROM steep_repl.audit_log \
             WHERE action = 'coordinator.elected' ORDER BY id DESC LIMIT 1",
        )
        .await
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&json).unwrap()["holder"].clone()
}

#[tokio::test]
async fn three_containers_converge_on_one_coordinator_that_every_node_names() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    for i in ALL {
        let node = &cluster.nodes[i];
        // Each node's own probe, at its own address, agrees with its registry.
        let health = node.http_get("/health").await.unwrap();
        assert_eq!(health.status, 200, "{}: {}", node.node_id(), health.text());
        let body = health.json().unwrap();
        assert_eq!(body["node"]["node_id"], node.node_id());
        assert_eq!(body["node"]["is_coordinator"], node.node_id() == "node-2");
        // Peers registered under their container names and gRPC port.
        let peers = node
            .sql("SELECT string_agg(node_id || '@' || grpc_host || ':' || grpc_port, ',' ORDER BY node_id) FROM steep_repl.nodes")
            .await
            .unwrap();
        let expected: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{}@{}:5433", n.node_id(), n.host()))
            .collect();
        assert_eq!(peers, expected.join(","), "registry of {}", node.node_id());
        // The CLI inside the container (over the daemon's local socket)
        // tells the same story.
        let cli = node.cli_nodes().await.unwrap();
        let rows = cli["nodes"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{cli}");
        for row in rows {
            assert_eq!(row["status"], "healthy", "{cli}");
            assert_eq!(row["is_coordinator"], row["node_id"] == "node-2", "{cli}");
        }
        assert_eq!(last_election(&cluster, i).await, "node-2");
    }
}

#[tokio::test]
async fn a_partitioned_coordinator_is_replaced_by_the_majority_and_claims_none_until_healed() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    let coordinator = &cluster.nodes[1];

    coordinator.disconnect().unwrap();
    announce(&format!(
        "  {} disconnected from {}",
        coordinator.host(),
        cluster.network
    ));
    wait_for_view(
        &cluster,
        "majority (node-1, node-3): node-2 unreachable, node-3 coordinator",
        &[0, 2],
        &[("node-2", "unreachable")],
        Some("node-3"),
    )
    .await;
    cluster
        .wait_until(
            "isolated node-2: both peers unreachable, no coordinator",
            CONVERGE,
            || async {
                let view = cluster.registry(1).await?;
                Ok(
                    view.shows(&[("node-1", "unreachable"), ("node-3", "unreachable")])
                        && view.coordinator.is_none(),
                )
            },
        )
        .await
        .unwrap();
    // The isolated node's own probe says the same (read from inside: it has
    // no address the test can reach).
    let health = coordinator
        .exec(&["wget", "-q", "-O", "-", "http://127.0.0.1:8080/health"])
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&health.stdout).unwrap();
    assert_eq!(body["node"]["is_coordinator"], false, "{body}");
    assert_eq!(
        body["node"]["coordinator_id"],
        serde_json::Value::Null,
        "{body}"
    );

    coordinator.reconnect().unwrap();
    announce(&format!("  {} reconnected", coordinator.host()));
    wait_for_view(
        &cluster,
        "healed: all healthy everywhere, node-2 coordinator everywhere",
        &ALL,
        &ALL_HEALTHY,
        Some("node-2"),
    )
    .await;
    for i in ALL {
        assert_eq!(last_election(&cluster, i).await, "node-2");
    }
}

/// An asymmetric cut: node-2 (the coordinator) and node-3 cannot
/// reach each other, both still reach node-1. Every node is asked who is
/// coordinator all along and the whole history is checked.
#[tokio::test]
async fn under_an_asymmetric_cut_no_two_nodes_claim_the_role_at_once() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    let poller = ClaimPoller::start_containers(
        cluster
            .nodes
            .iter()
            .map(|n| (n.node_id().to_string(), n.host().to_string()))
            .collect(),
    );
    let (n2, n3) = (&cluster.nodes[1], &cluster.nodes[2]);
    n2.drop_from(n3.address().unwrap()).unwrap();
    n3.drop_from(n2.address().unwrap()).unwrap();
    announce("  node-2 and node-3 cut from each other; both reach node-1");
    tokio::time::sleep(Duration::from_secs(15)).await;
    // Someone coordinates throughout: node-1 hears both.
    let (holder, _) = cluster.coordinator_epoch(0).await.unwrap();
    n2.heal_drops().unwrap();
    n3.heal_drops().unwrap();
    announce(&format!("  healed (node-1 named {holder:?} just before)"));
    wait_for_view(
        &cluster,
        "healed: all healthy everywhere, node-2 coordinator everywhere",
        &ALL,
        &ALL_HEALTHY,
        Some("node-2"),
    )
    .await;
    let summary = poller.finish().unwrap();
    announce(&format!(
        "  {} answers, {} claims, epochs {:?}",
        summary.answers, summary.claims, summary.claimants
    ));
    assert!(
        holder.is_some(),
        "node-1 named no coordinator during the cut"
    );
    assert!(summary.claims > 0);
}

#[tokio::test]
async fn a_frozen_node_is_marked_unreachable_and_healthy_again_once_thawed() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    cluster.nodes[1].pause().await.unwrap();
    announce("  node-2 paused");
    wait_for_view(
        &cluster,
        "node-1 and node-3: node-2 unreachable, node-3 coordinator",
        &[0, 2],
        &[("node-2", "unreachable")],
        Some("node-3"),
    )
    .await;

    cluster.nodes[1].unpause().await.unwrap();
    announce("  node-2 unpaused");
    wait_for_view(
        &cluster,
        "thawed: all healthy everywhere, node-2 coordinator everywhere",
        &ALL,
        &ALL_HEALTHY,
        Some("node-2"),
    )
    .await;
    let transitions: i64 = cluster.nodes[0]
        .sql(
            "SELECT count(*) FROM steep_repl.audit_log \
             WHERE action = 'node.status_changed' AND target_id = 'node-2'",
        )
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        transitions >= 3,
        "unknown->healthy->unreachable->healthy should be audited on node-1, got {transitions}"
    );
}

/// Node `i` has a heartbeat newer than `since` from each of `peers`, and
/// sees them healthy.
async fn heard_since(
    cluster: &ContainerCluster,
    i: usize,
    peers: &[&str],
    since: &str,
) -> anyhow::Result<bool> {
    let list: Vec<String> = peers.iter().map(|p| format!("'{p}'")).collect();
    let fresh: usize = cluster.nodes[i]
        .sql(&format!(
            "SELECT count(*) FROM steep_repl.nodes WHERE node_id IN ({}) \
             AND status = 'healthy' AND last_seen > '{since}'",
            list.join(", ")
        ))
        .await?
        .parse()?;
    Ok(fresh == peers.len())
}

#[tokio::test]
async fn a_restarted_container_rejoins_with_its_registry_and_audit_trail_intact() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    let node = &cluster.nodes[2];
    // An audited write of the test's own, through the cluster (the state
    // map is replicated; coordinator_state refuses direct writes).
    let set = node
        .exec(&[
            "steep-repl",
            "state",
            "set",
            "test.marker",
            "before the restart",
        ])
        .await
        .unwrap();
    assert_eq!(set.code, 0, "{}{}", set.stdout, set.stderr);
    cluster
        .wait_until("the marker projected on node-3", CONVERGE, || async {
            Ok(node
                .sql("SELECT steep_repl.get_state('test.marker')")
                .await?
                == "\"before the restart\"")
        })
        .await
        .unwrap();
    let before = node
        .sql("SELECT count(*) || ',' || max(id) FROM steep_repl.audit_log")
        .await
        .unwrap();
    let (count_before, max_before) = before.split_once(',').unwrap();
    let ids_before = node
        .sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM steep_repl.audit_log")
        .await
        .unwrap();

    node.restart().unwrap();
    announce("  node-3 restarted (docker restart)");
    // Rows written before the restart say "healthy" already: only
    // heartbeats newer than the restart show that node-3 rejoined. The
    // containers share the host's clock.
    let restarted_at = cluster.nodes[0].sql("SELECT now()").await.unwrap();
    cluster
        .wait_until(
            "node-3 back: fresh heartbeats both ways, node-2 coordinator everywhere",
            CONVERGE,
            || async {
                Ok(
                    heard_since(&cluster, 2, &["node-1", "node-2"], &restarted_at).await?
                        && heard_since(&cluster, 0, &["node-3"], &restarted_at).await?
                        && heard_since(&cluster, 1, &["node-3"], &restarted_at).await?
                        && cluster.all_see(&ALL, &ALL_HEALTHY).await?
                        && cluster.agree(&ALL, Some("node-2")).await?,
                )
            },
        )
        .await
        .unwrap();

    // Every audit row from before is still there, unchanged in number...
    let ids_after = node
        .sql(&format!(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM steep_repl.audit_log WHERE id <= {max_before}"
        ))
        .await
        .unwrap();
    assert_eq!(ids_after, ids_before);
    let count_after: i64 = node
        .sql("SELECT count(*) FROM steep_repl.audit_log")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(count_after > count_before.parse::<i64>().unwrap());
    // ... with the graceful stop and the new start recorded after them.
    let lifecycle = node
        .sql(&format!(
            "SELECT string_agg(action, ',' ORDER BY id) FROM steep_repl.audit_log \
             WHERE id > {max_before} AND action IN ('daemon.stopped', 'daemon.started')"
        ))
        .await
        .unwrap();
    assert_eq!(lifecycle, "daemon.stopped,daemon.started");
    // The state and the registry survived on the container's filesystem.
    assert_eq!(
        node.sql("SELECT steep_repl.get_state('test.marker')")
            .await
            .unwrap(),
        "\"before the restart\""
    );
    let rows = node
        .sql("SELECT count(*) FROM steep_repl.nodes")
        .await
        .unwrap();
    assert_eq!(rows, "3");
}

#[tokio::test]
async fn a_node_whose_postgresql_stops_is_unhealthy_and_degraded_for_its_peers_until_it_is_back() {
    if !should_run(&node_image()) {
        return;
    }
    let cluster = converged_cluster().await;
    let node = &cluster.nodes[0];
    node.postgresql("stop").await.unwrap();
    announce("  node-1: PostgreSQL stopped inside the container");

    let health = cluster
        .wait_for_http(0, "/health", 503, CONVERGE)
        .await
        .unwrap();
    let body = health.json().unwrap();
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["components"]["postgresql"]["healthy"], false, "{body}");
    // The daemon itself is fine: liveness does not depend on PostgreSQL.
    assert_eq!(node.http_get("/live").await.unwrap().status, 200);
    wait_for_view(
        &cluster,
        "node-2 and node-3: node-1 degraded, node-2 still coordinator",
        &[1, 2],
        &[("node-1", "degraded")],
        Some("node-2"),
    )
    .await;
    // ... and it stays degraded: it still answers its peers, so it must not
    // turn unreachable once unreachable_after (3 s) has passed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for i in [1, 2] {
        let view = cluster.registry(i).await.unwrap();
        assert!(
            view.shows(&[("node-1", "degraded")]),
            "node-{} sees {:?} 6 s later",
            i + 1,
            view.statuses
        );
    }

    node.postgresql("start").await.unwrap();
    announce("  node-1: PostgreSQL started again");
    cluster
        .wait_for_http(0, "/health", 200, CONVERGE)
        .await
        .unwrap();
    wait_for_view(
        &cluster,
        "all healthy everywhere, node-2 coordinator everywhere",
        &ALL,
        &ALL_HEALTHY,
        Some("node-2"),
    )
    .await;
}

/// `stat -c '%U %a'` of a path in the container: its owner and mode.
async fn owner_and_mode(node: &SystemdNode, path: &str) -> String {
    node.run(&["stat", "-c", "%U %a", path])
        .await
        .unwrap()
        .stdout
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_daemon_installed_as_a_systemd_service_runs_again_after_the_container_restarts() {
    if !should_run(&systemd_image()) {
        return;
    }
    let node = SystemdNode::start(&systemd_image()).await.unwrap();
    let state = node.wait_for_boot(CONVERGE).await.unwrap();
    announce(&format!("  systemd booted ({state})"));
    assert_eq!(node.unit_state("postgresql").await.unwrap(), "active");

    let install = node
        .run(&[
            "steep-repl",
            "install",
            "--config",
            "/etc/steep/config.yaml",
        ])
        .await
        .unwrap();
    assert!(
        install.stdout.contains("installed the steep-repl service")
            && install
                .stdout
                .contains("created the system account steep-repl"),
        "{install:?}"
    );
    let enabled = node
        .exec(&["systemctl", "is-enabled", "steep-repl"])
        .await
        .unwrap();
    assert_eq!(enabled.stdout.trim(), "enabled", "{enabled:?}");
    node.run(&["steep-repl", "start"]).await.unwrap();
    let health = node.wait_for_health(200, CONVERGE).await.unwrap();
    assert_eq!(health.json().unwrap()["node"]["node_id"], "node-1");
    let first_pid = node
        .run(&[
            "systemctl",
            "show",
            "--property=MainPID",
            "--value",
            "steep-repl",
        ])
        .await
        .unwrap()
        .stdout;
    // Its own account, its socket in the runtime directory systemd made
    // for it, and the CLI of an operator (root here) talks to it.
    assert_eq!(
        owner_and_mode(&node, &format!("/proc/{}", first_pid.trim()))
            .await
            .split(' ')
            .next(),
        Some("steep-repl"),
        "the daemon runs as its own account"
    );
    assert_eq!(
        owner_and_mode(&node, "/run/steep-repl").await,
        "steep-repl 750"
    );
    assert_eq!(
        owner_and_mode(&node, "/run/steep-repl/steep-repl.sock").await,
        "steep-repl 660"
    );
    assert_eq!(
        owner_and_mode(&node, "/var/lib/steep-repl").await,
        "steep-repl 700"
    );
    let status = node
        .run(&["steep-repl", "status", "--config", "/etc/steep/config.yaml"])
        .await
        .unwrap();
    assert!(status.stdout.contains("node-1"), "{status:?}");

    // A reboot: systemd shuts every unit down (the image's stop signal is
    // SIGRTMIN+3), the container starts again and systemd boots. Nobody
    // starts the daemon this time.
    steep_repl_tests::containers::docker::restart(&node.spec.host, 60).unwrap();
    announce("  container restarted (docker restart)");
    node.wait_for_boot(CONVERGE).await.unwrap();
    node.wait_for_health(200, CONVERGE).await.unwrap();
    assert_eq!(node.unit_state("steep-repl").await.unwrap(), "active");
    let second_pid = node
        .run(&[
            "systemctl",
            "show",
            "--property=MainPID",
            "--value",
            "steep-repl",
        ])
        .await
        .unwrap()
        .stdout;
    assert_ne!(second_pid.trim(), "0");
    announce(&format!(
        "  steep-repl.service: pid {} before, {} after the restart",
        first_pid.trim(),
        second_pid.trim()
    ));
    // Two starts and the stop between them, in the audit trail that
    // survived the reboot.
    let lifecycle = node
        .sql(
            "SELECT string_agg(action, ',' ORDER BY id) FROM steep_repl.audit_log \
             WHERE action IN ('daemon.stopped', 'daemon.started')",
        )
        .await
        .unwrap();
    assert_eq!(lifecycle, "daemon.started,daemon.stopped,daemon.started");
}

/// Where Docker cannot be reached, a container test fails with a message
/// that says so and how to skip; asked to skip, it skips; and a missing
/// image is named with the script that builds it. (No container is
/// started: this runs with or without an engine.)
#[test]
fn without_docker_the_tests_fail_clearly_unless_told_to_skip() {
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent/steep-test-docker.sock")];
    // Without the docker command at all, the message names that instead.
    let unreachable = |e: &str| {
        e.contains("Docker engine does not answer") || e.contains("docker command is not available")
    };
    let err = preflight(&node_image(), None, &no_engine).unwrap_err();
    assert!(unreachable(&err), "{err}");
    assert!(err.contains(&format!("set {SKIP_VAR}=1 to skip")), "{err}");
    let err = preflight(&node_image(), Some("0"), &no_engine).unwrap_err();
    assert!(unreachable(&err), "{err}");

    assert_eq!(preflight(&node_image(), Some("1"), &no_engine), Ok(false));

    if preflight(&node_image(), None, &[]).is_ok() {
        let err = preflight("steep-repl-no-such-image:none", None, &[]).unwrap_err();
        assert!(err.contains("not on this machine"), "{err}");
        assert!(err.contains("deploy/image.sh"), "{err}");
    }
}

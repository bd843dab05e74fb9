//! Peers over gRPC with mutual TLS, on loopback: real daemons, each with its
//! own PostgreSQL 18, certificates from `steep-repl tls`, in one Raft
//! cluster. Where the coordinator moves, every node is asked all along and
//! the whole history is checked (`ClaimPoller`).

use std::time::Duration;
use steep_repl_tests::claims::ClaimPoller;
use steep_repl_tests::cluster::TestCluster;
use steep_repl_tests::daemon::run_cli;

const CONVERGE: Duration = Duration::from_secs(30);

/// node-1 (50), node-2 (70), node-3 (60): node-2 is the coordinator while
/// it is healthy, node-3 next.
const PRIORITIES: [u8; 3] = [50, 70, 60];

async fn all_agree(
    cluster: &TestCluster,
    alive: &[usize],
    coordinator: Option<&str>,
) -> anyhow::Result<bool> {
    for &i in alive {
        if cluster.coordinator(i).await?.as_deref() != coordinator {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every node in `among` shows every node of `expected` with that status.
async fn all_see(
    cluster: &TestCluster,
    among: &[usize],
    expected: &[(&str, &str)],
) -> anyhow::Result<bool> {
    for &i in among {
        if !cluster.sees(i, expected).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test]
async fn three_nodes_see_each_other_healthy_and_agree_on_one_coordinator() {
    let cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    let healthy = [
        ("node-1", "healthy"),
        ("node-2", "healthy"),
        ("node-3", "healthy"),
    ];
    cluster
        .wait_until(
            "all healthy everywhere, node-2 coordinator",
            CONVERGE,
            || async {
                Ok(all_see(&cluster, &[0, 1, 2], &healthy).await?
                    && all_agree(&cluster, &[0, 1, 2], Some("node-2")).await?)
            },
        )
        .await
        .unwrap();
    let (_, epoch) = cluster.coordinator_epoch(0).await.unwrap();
    let epoch = epoch.expect("an epoch with the coordinator");
    for i in 1..3 {
        assert_eq!(
            cluster.coordinator_epoch(i).await.unwrap(),
            (Some("node-2".to_string()), Some(epoch)),
            "node {i} names another coordinator or epoch"
        );
    }
    // node-3's registry holds node-2 as the membership describes it.
    let mut conn = cluster.nodes[2].pg.connect().await.unwrap();
    let (grpc_port, role): (i32, String) =
        sqlx::query_as("SELECT grpc_port, role FROM steep_repl.nodes WHERE node_id = 'node-2'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(grpc_port, i32::from(cluster.nodes[1].grpc_port));
    assert_eq!(role, "data");
    // The grant was audited on every node, with its epoch, once.
    for i in 0..3 {
        cluster
            .wait_until("the grant projected", CONVERGE, || async {
                let mut conn = cluster.nodes[i].pg.connect().await?;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'coordinator.elected' \
                     AND new_value->>'holder' = 'node-2' AND (new_value->>'epoch')::bigint = $1",
                )
                .bind(i64::try_from(epoch).unwrap())
                .fetch_one(&mut conn)
                .await?;
                Ok(n == 1)
            })
            .await
            .unwrap();
    }
    let summary = poller.finish().unwrap();
    assert!(
        summary.claims > 0,
        "node-2 never answered that it coordinates"
    );
}

#[tokio::test]
async fn a_killed_coordinator_is_replaced_and_gets_the_role_back_after_a_restart() {
    let mut cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_agree(&cluster, &[0, 1, 2], Some("node-2"))
        })
        .await
        .unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    let (_, first_epoch) = cluster.coordinator_epoch(0).await.unwrap();

    cluster.nodes[1].daemon.kill9().unwrap();
    cluster
        .wait_until(
            "node-2 unreachable, node-3 coordinator",
            CONVERGE,
            || async {
                Ok(cluster.sees(0, &[("node-2", "unreachable")]).await?
                    && all_agree(&cluster, &[0, 2], Some("node-3")).await?)
            },
        )
        .await
        .unwrap();
    let (_, second_epoch) = cluster.coordinator_epoch(0).await.unwrap();
    assert!(
        second_epoch > first_epoch,
        "{second_epoch:?} after {first_epoch:?}"
    );

    // Back, and healthy for coordinator.failback_after: the role returns to
    // the highest priority by release.
    cluster.nodes[1].daemon.restart().unwrap();
    cluster
        .wait_until("node-2 coordinator again everywhere", CONVERGE, || {
            all_agree(&cluster, &[0, 1, 2], Some("node-2"))
        })
        .await
        .unwrap();
    let summary = poller.finish().unwrap();
    let holders: Vec<&String> = summary.claimants.values().collect();
    assert!(
        holders.contains(&&"node-3".to_string()),
        "node-3 never claimed: {summary:?}"
    );
    cluster
        .wait_until("the handover projected", CONVERGE, || async {
            let mut conn = cluster.nodes[0].pg.connect().await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM steep_repl.audit_log \
                 WHERE action IN ('coordinator.handover_requested', 'coordinator.released')",
            )
            .fetch_one(&mut conn)
            .await?;
            Ok(n >= 2)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_node_left_alone_claims_no_coordinator() {
    let mut cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_agree(&cluster, &[0, 1, 2], Some("node-2"))
        })
        .await
        .unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    cluster.nodes[1].daemon.kill9().unwrap();
    cluster.nodes[2].daemon.kill9().unwrap();
    cluster
        .wait_until("node-1 alone: no coordinator", CONVERGE, || async {
            Ok(cluster
                .sees(0, &[("node-2", "unreachable"), ("node-3", "unreachable")])
                .await?
                && cluster.coordinator(0).await?.is_none())
        })
        .await
        .unwrap();
    // A minority refuses writes.
    let (code, out, err) = cluster.cli(0, &["state", "set", "app.k", "1"]).unwrap();
    assert_eq!(code, 7, "state set on a minority: {out}{err}");
    poller.finish().unwrap();
}

/// A node whose PostgreSQL is down still answers its peers and says its
/// database is down: they mark it degraded, and it stays so (never
/// unreachable) until the database is back.
#[tokio::test]
async fn a_node_without_its_postgresql_is_degraded_for_its_peers_not_unreachable() {
    let mut cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    let all_healthy = [
        ("node-1", "healthy"),
        ("node-2", "healthy"),
        ("node-3", "healthy"),
    ];
    cluster
        .wait_until("all healthy everywhere", CONVERGE, || {
            all_see(&cluster, &[0, 1, 2], &all_healthy)
        })
        .await
        .unwrap();

    cluster.nodes[0].pg.stop().unwrap();
    cluster
        .wait_until("node-2 and node-3 see node-1 degraded", CONVERGE, || {
            all_see(&cluster, &[1, 2], &[("node-1", "degraded")])
        })
        .await
        .unwrap();
    // Past unreachable_after (3 s) and then some: still degraded.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for i in [1, 2] {
        let statuses = cluster.statuses(i).await.unwrap();
        assert_eq!(
            statuses.get("node-1").map(String::as_str),
            Some("degraded"),
            "node-{} sees {statuses:?}",
            i + 1
        );
    }

    cluster.nodes[0].pg.start_again().unwrap();
    cluster
        .wait_until(
            "node-1 healthy again for node-2 and node-3",
            CONVERGE,
            || all_see(&cluster, &[1, 2], &[("node-1", "healthy")]),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn health_remote_asks_a_peer_over_mutual_tls_and_exits_4_when_it_is_unhealthy() {
    let mut cluster = TestCluster::start(&[50, 60]).await.unwrap();
    cluster
        .wait_until("two healthy nodes", CONVERGE, || async {
            cluster
                .sees(0, &[("node-1", "healthy"), ("node-2", "healthy")])
                .await
        })
        .await
        .unwrap();
    let config = cluster.nodes[0].daemon.home.config_path();
    let peer = format!("127.0.0.1:{}", cluster.nodes[1].grpc_port);
    let (code, out, err) =
        run_cli(&["health", "--remote", &peer, "--json"], Some(&config)).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let body: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["node"]["node_id"], "node-2");
    assert_eq!(body["components"]["postgresql"]["healthy"], true);

    let (code, out, _) = run_cli(&["health", "--remote", &peer], Some(&config)).unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("node-2") && out.contains("postgresql"),
        "{out}"
    );

    cluster.nodes[1].pg.stop().unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        let (code, out, _) =
            run_cli(&["health", "--remote", &peer, "--json"], Some(&config)).unwrap();
        if code == 4 {
            let body: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(body["components"]["postgresql"]["healthy"], false);
            return;
        }
        last = out;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health --remote never reported the peer unhealthy: {last}");
}

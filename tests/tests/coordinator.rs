//! The coordinator lease on real daemons (docs/protocol.md, "The coordinator lease"): a
//! frozen coordinator, a PostgreSQL that stops answering under it, and a
//! node restarted with an empty store. Every node is asked who is
//! coordinator all along each run and the whole history is checked
//! (`ClaimPoller`: no epoch with two claimants, no claim after a newer
//! epoch was named, no epoch going down on a node).

use std::time::Duration;
use steep_repl_tests::claims::ClaimPoller;
use steep_repl_tests::cluster::TestCluster;

const CONVERGE: Duration = Duration::from_secs(30);

/// node-1 (50), node-2 (70), node-3 (60).
const PRIORITIES: [u8; 3] = [50, 70, 60];

async fn all_name(cluster: &TestCluster, alive: &[usize], holder: &str) -> anyhow::Result<bool> {
    let mut epochs = Vec::new();
    for &i in alive {
        let (h, e) = cluster.coordinator_epoch(i).await?;
        if h.as_deref() != Some(holder) {
            return Ok(false);
        }
        epochs.push(e);
    }
    Ok(epochs.windows(2).all(|w| w[0] == w[1]))
}

#[tokio::test]
async fn a_coordinator_frozen_for_ten_seconds_is_replaced_and_claims_nothing_once_thawed() {
    let cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-2")
        })
        .await
        .unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    let (_, before) = cluster.coordinator_epoch(0).await.unwrap();

    let frozen_at = std::time::Instant::now();
    cluster.nodes[1].daemon.signal(libc::SIGSTOP).unwrap();
    let replaced = cluster
        .wait_until("node-3 coordinator for the others", CONVERGE, || {
            all_name(&cluster, &[0, 2], "node-3")
        })
        .await;
    // Thawed whatever happened, so that the daemon can be stopped.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(frozen_at.elapsed()));
    cluster.nodes[1].daemon.signal(libc::SIGCONT).unwrap();
    replaced.unwrap();
    let (_, during) = cluster.coordinator_epoch(0).await.unwrap();
    assert!(during > before, "{during:?} after {before:?}");

    // Thawed: it must not answer the old epoch; it follows the others
    // (failback to it waits coordinator.failback_after, 30 s here).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (holder, epoch) = cluster.coordinator_epoch(1).await.unwrap();
    assert!(
        holder.as_deref() != Some("node-2") || epoch > during,
        "node-2 thawed and names itself under {epoch:?}"
    );
    let summary = poller.finish().unwrap();
    assert!(
        summary.claimants.values().any(|n| n == "node-3"),
        "node-3 never claimed: {summary:?}"
    );
}

#[tokio::test]
async fn a_coordinator_whose_postgresql_hangs_gives_the_role_up() {
    let cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-2")
        })
        .await
        .unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    // Every query on node-2's PostgreSQL hangs (its processes stopped).
    cluster.nodes[1].pg.signal_all(libc::SIGSTOP).unwrap();
    let moved = cluster
        .wait_until("node-3 coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-3")
        })
        .await;
    cluster.nodes[1].pg.signal_all(libc::SIGCONT).unwrap();
    moved.unwrap();
    let summary = poller.finish().unwrap();
    assert!(summary.claims > 0);
}

#[tokio::test]
async fn a_node_restarted_with_an_empty_store_neither_claims_nor_votes() {
    let mut cluster = TestCluster::start(&PRIORITIES).await.unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-2")
        })
        .await
        .unwrap();
    let poller = ClaimPoller::start(cluster.sockets());
    // node-2, the coordinator, loses its store.
    cluster.nodes[1].daemon.kill9().unwrap();
    let raft_dir = cluster.nodes[1].daemon.home.raft_dir();
    std::fs::remove_dir_all(&raft_dir).unwrap();
    cluster.nodes[1].daemon.restart().unwrap();
    cluster.nodes[1]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();
    cluster
        .wait_until("node-3 coordinator for the others", CONVERGE, || {
            all_name(&cluster, &[0, 2], "node-3")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, out, err) = cluster.cli(1, &["cluster", "status", "--json"]).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status["state"], "none",
        "the wiped node is in no cluster: {status}"
    );
    assert_eq!(status["cluster_id"], serde_json::Value::Null);
    let (holder, _) = cluster.coordinator_epoch(1).await.unwrap();
    assert_eq!(holder, None, "the wiped node names a coordinator");
    // The others still count node-2's old incarnation as the voter: the
    // wiped store is refused, so it did not vote itself in.
    let (_, out, _) = cluster.cli(0, &["cluster", "status", "--json"]).unwrap();
    let others: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(others["members"].as_array().map(Vec::len), Some(3));
    let summary = poller.finish().unwrap();
    let after_wipe: Vec<(&u64, &String)> = summary
        .claimants
        .iter()
        .filter(|(_, n)| n.as_str() == "node-2")
        .collect();
    assert!(
        after_wipe.len() <= 1,
        "node-2 claimed more than the epoch it held before the wipe: {summary:?}"
    );
}

#[tokio::test]
async fn two_data_nodes_and_a_witness_survive_the_loss_of_either_data_node() {
    // node-3 is the witness (and has the middle priority, to show it is
    // never chosen for it).
    let mut cluster = TestCluster::start_roles(
        &PRIORITIES,
        &[2],
        "  coordinator:\n    failback_after: 3s\n",
    )
    .await
    .unwrap();
    cluster
        .wait_until("node-2 coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-2")
        })
        .await
        .unwrap();
    let witness = cluster.status(2).unwrap();
    assert_eq!(witness["node"]["role"], "witness", "{witness}");
    assert_eq!(witness["node"]["is_coordinator"], false);
    let (_, out, _) = cluster.cli(2, &["cluster", "status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["witness"], true, "{status}");
    let (code, out, err) = cluster.cli(2, &["health", "--json"]).unwrap();
    assert_eq!(
        code, 0,
        "a witness without PostgreSQL is healthy: {out}{err}"
    );
    let health: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(health["node"]["role"], "witness");
    assert_eq!(health["components"]["postgresql"]["status"], "disabled");
    let poller = ClaimPoller::start(cluster.sockets());

    // The coordinator dies: the other data node takes over, the witness
    // votes for it and never claims.
    cluster.nodes[1].daemon.kill9().unwrap();
    cluster
        .wait_until(
            "node-1 coordinator for node-1 and the witness",
            CONVERGE,
            || all_name(&cluster, &[0, 2], "node-1"),
        )
        .await
        .unwrap();
    cluster.nodes[1].daemon.restart().unwrap();
    cluster
        .wait_until("node-2 back as coordinator everywhere", CONVERGE, || {
            all_name(&cluster, &[0, 1, 2], "node-2")
        })
        .await
        .unwrap();

    // The other data node dies: node-2 stays coordinator with the witness.
    cluster.nodes[0].daemon.kill9().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster
        .wait_until(
            "node-2 still coordinator with the witness",
            CONVERGE,
            || all_name(&cluster, &[1, 2], "node-2"),
        )
        .await
        .unwrap();
    let (code, out, err) = cluster.cli(1, &["state", "set", "app.after", "1"]).unwrap();
    assert_eq!(
        code, 0,
        "writes go on with one data node and the witness: {out}{err}"
    );

    let summary = poller.finish().unwrap();
    assert!(
        summary.claimants.values().all(|n| n != "node-3"),
        "the witness claimed the role: {summary:?}"
    );
}

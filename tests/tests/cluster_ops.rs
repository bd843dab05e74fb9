//! Operating a Raft cluster on real daemons (docs/operations.md,
//! "Running a cluster"): disaster recovery after losing
//! a majority for good (`cluster force-new`), replacing a dead node under
//! the same node_id, and upgrading the data of a 0.1.0 cluster.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use steep_repl_tests::raft::{call_ok, get, set_acknowledged, voter_count, RaftCluster};

fn parse(out: &str, err: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?} {err:?}"))
}

/// The highest epoch any node names now.
fn epoch_seen(c: &RaftCluster, among: &[usize]) -> u64 {
    among
        .iter()
        .filter_map(|&i| c.status(i).ok())
        .filter_map(|s| s["epoch"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Moves node `i`'s Raft store away: the node comes back empty (a new Raft
/// id), as after a wiped disk or a rebuilt machine.
fn wipe(c: &RaftCluster, i: usize) {
    let dir = c.nodes[i].daemon.home.raft_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_on_a_survivor_keeps_every_acknowledged_write_and_epochs_go_on_upwards() {
    let mut c = RaftCluster::start_formed(5).await.unwrap();
    let all: Vec<usize> = (0..5).collect();
    c.wait_until(
        "a coordinator named by every node",
        Duration::from_secs(30),
        || {
            Ok(all
                .iter()
                .all(|&i| c.status(i).is_ok_and(|s| s["coordinator"].is_string())))
        },
    )
    .await
    .unwrap();
    let mut acknowledged: BTreeMap<String, Value> = BTreeMap::new();
    for n in 0..25 {
        let key = format!("dr.k{n:02}");
        let value = json!({"n": n});
        set_acknowledged(&c, n % 5, &key, &value).await.unwrap();
        acknowledged.insert(key, value);
    }
    let old_epoch = epoch_seen(&c, &all);
    assert!(old_epoch >= 1, "no coordinator epoch before the loss");
    let old_cluster = c.status(0).unwrap()["cluster_id"].clone();

    // A majority lost for good: three nodes killed, their stores gone. The
    // Raft leader and one follower survive.
    let leader = c.leader_seen_by(0).expect("a leader");
    let follower = (0..5).find(|&i| i != leader).unwrap();
    let survivors = [leader, follower];
    let lost: Vec<usize> = (0..5).filter(|i| !survivors.contains(i)).collect();
    for &i in &lost {
        c.nodes[i].daemon.kill9().unwrap();
        wipe(&c, i);
    }
    // Refused (NO_QUORUM) or left unknown (UNKNOWN_OUTCOME: proposed before
    // the leader saw its majority gone, so it may come back below), never
    // acknowledged.
    let (code, _, err) = c
        .cli(leader, &["state", "set", "lost.minority", "1"])
        .unwrap();
    assert!(
        [7, 9].contains(&code),
        "two of five wrote without a majority ({code}): {err}"
    );

    // While the daemon runs, force-new refuses to touch its store.
    let (code, out, err) = c.cli(leader, &["cluster", "force-new", "--yes"]).unwrap();
    assert_eq!(code, 6, "force-new next to a running daemon: {out}{err}");
    assert!(err.contains("daemon stopped"), "{err}");

    for &i in &survivors {
        c.nodes[i].daemon.stop().unwrap();
    }
    // Choose the survivor whose log goes furthest, as the procedure says.
    let views: Vec<(usize, Value)> = survivors
        .iter()
        .map(|&i| {
            let (code, out, err) = c
                .cli(i, &["cluster", "force-new", "--dry-run", "--json"])
                .unwrap();
            assert_eq!(code, 0, "{out}{err}");
            (i, parse(&out, &err))
        })
        .collect();
    for (_, v) in &views {
        assert_eq!(v["cluster_id"], old_cluster, "{v}");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(5), "{v}");
    }
    let (chosen, view) = views
        .iter()
        .max_by_key(|(_, v)| (v["last_log_term"].as_u64(), v["last_log_index"].as_u64()))
        .cloned()
        .unwrap();
    // Every acknowledged key, and perhaps the unknown write.
    assert!(
        view["keys"].as_u64() >= Some(acknowledged.len() as u64),
        "{view}"
    );
    // Without --yes nothing changes.
    let (code, _, err) = c.cli(chosen, &["cluster", "force-new"]).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing changed"), "{err}");

    let (code, out, err) = c
        .cli(chosen, &["cluster", "force-new", "--yes", "--json"])
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let forced = parse(&out, &err);
    assert_eq!(forced["old_cluster_id"], old_cluster, "{forced}");
    assert_ne!(forced["new_cluster_id"], old_cluster, "{forced}");
    assert!(
        forced["epoch_floor"].as_u64().unwrap() >= old_epoch + 1000,
        "{forced}"
    );
    assert!(
        std::path::Path::new(forced["backup"].as_str().unwrap())
            .join("log.bin")
            .exists(),
        "the old store was not kept: {forced}"
    );

    c.nodes[chosen].daemon.restart().unwrap();
    c.nodes[chosen]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();
    c.wait_until(
        "the survivor to lead its new cluster",
        Duration::from_secs(20),
        || {
            let s = c.status(chosen)?;
            Ok(s["state"] == "leader"
                && voter_count(&s) == 1
                && s["cluster_id"] == forced["new_cluster_id"])
        },
    )
    .await
    .unwrap();
    for (key, value) in &acknowledged {
        assert_eq!(get(&c, chosen, key).as_ref(), Some(value), "{key}");
    }
    // It is the only data member: it gets the role, above the old epochs.
    c.wait_until(
        "a coordinator of the new cluster",
        Duration::from_secs(20),
        || {
            let s = c.status(chosen)?;
            Ok(s["coordinator"].as_str() == Some(c.nodes[chosen].node_id.as_str()))
        },
    )
    .await
    .unwrap();
    let new_epoch = c.status(chosen).unwrap()["epoch"].as_u64().unwrap();
    assert!(
        new_epoch > old_epoch + 1000,
        "epoch {new_epoch} after {old_epoch}"
    );
    // Audited once on the survivor.
    let mut conn = c.nodes[chosen].pg.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'cluster.forced_new' AND new_value->>'new_cluster_id' = $1",
        )
        .bind(forced["new_cluster_id"].as_str())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if rows == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster.forced_new audited {rows} times"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The others are wiped and added again, the other survivor too.
    let others: Vec<usize> = (0..5).filter(|&i| i != chosen).collect();
    for &i in &others {
        wipe(&c, i);
        c.nodes[i].daemon.restart().unwrap();
        c.nodes[i]
            .daemon
            .wait_for_ipc(Duration::from_secs(30))
            .unwrap();
    }
    for &i in &others {
        c.add(chosen, i).unwrap();
    }
    c.wait_for_agreement(&all, 5, Duration::from_secs(30))
        .await
        .unwrap();
    let expected: Vec<Value> = acknowledged
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    for &i in &all {
        let listed = call_ok(&c, i, "state.list", json!({"prefix": "dr."}));
        assert_eq!(listed["entries"], json!(expected), "node {i}");
    }
    // Writes go on, and every node names one coordinator above the old epochs.
    set_acknowledged(&c, others[0], "dr.after", &json!(1))
        .await
        .unwrap();
    c.wait_until(
        "every node to name the new epoch",
        Duration::from_secs(30),
        || {
            Ok(all.iter().all(|&i| {
                c.status(i)
                    .is_ok_and(|s| s["epoch"].as_u64().is_some_and(|e| e > old_epoch + 1000))
            }))
        },
    )
    .await
    .unwrap();
    // The projection of a re-added node holds the new cluster's state.
    let mut conn = c.nodes[others[0]].pg.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM steep_repl.coordinator_state WHERE key LIKE 'dr.%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if keys == acknowledged.len() as i64 + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projection holds {keys} keys"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn force_new_on_a_node_that_was_never_a_member_says_there_is_nothing_to_recover() {
    let mut c = RaftCluster::start(1).await.unwrap();
    c.nodes[0].daemon.stop().unwrap();
    let (code, out, err) = c.cli(0, &["cluster", "force-new", "--dry-run"]).unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("belongs to no cluster"), "{err}");
}

/// A 0.1.0 cluster upgraded as docs/operations.md says: every node's
/// extension updated (`ALTER EXTENSION steep_repl UPDATE`) with its data,
/// then `cluster init` on the old coordinator and `cluster add` of the
/// others. The state map starts from the old coordinator's table; the
/// other nodes' tables become the projection of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_cluster_upgraded_in_place_starts_its_state_map_from_the_old_coordinator() {
    steep_repl_tests::ext::install_released_script("0.1.0");
    let old = |rows: &str| {
        vec![
            "CREATE EXTENSION steep_repl VERSION '0.1.0'".to_string(),
            format!("INSERT INTO steep_repl.coordinator_state (key, value) VALUES {rows}"),
            "ALTER EXTENSION steep_repl UPDATE".to_string(),
        ]
    };
    let c = RaftCluster::start_prepared(2, |i| {
        if i == 0 {
            old("('cluster.version', '\"0.1.0\"'), ('app.mode', '\"active\"'), ('app.limits', '{\"max\": 5}')")
        } else {
            // A follower's table went its own way: it is replaced.
            old("('app.mode', '\"stale\"'), ('only.here', 'true')")
        }
    })
    .await
    .unwrap();
    let (code, out, err) = c.cli(0, &["cluster", "init", "--json"]).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(parse(&out, &err)["seeded_keys"], json!(3), "{out}");
    c.add(0, 1).unwrap();
    c.wait_for_agreement(&[0, 1], 2, Duration::from_secs(20))
        .await
        .unwrap();
    for i in 0..2 {
        assert_eq!(get(&c, i, "app.mode"), Some(json!("active")), "node {i}");
        assert_eq!(
            get(&c, i, "app.limits"),
            Some(json!({"max": 5})),
            "node {i}"
        );
        assert_eq!(get(&c, i, "only.here"), None, "node {i}");
    }
    // Both tables are the projection of the map now.
    for i in 0..2 {
        let mut conn = c.nodes[i].pg.connect().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let table: Value = sqlx::query_scalar(
                "SELECT COALESCE(jsonb_object_agg(key, value), '{}') FROM steep_repl.coordinator_state",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if table
                == json!({"cluster.version": "0.1.0", "app.mode": "active", "app.limits": {"max": 5}})
            {
                break;
            }
            assert!(Instant::now() < deadline, "node {i}'s table: {table}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The seed is audited as replicated writes by the upgrade (on the node
    // that applied them one by one: the other got them in a snapshot).
    let mut conn = c.nodes[0].pg.connect().await.unwrap();
    let seeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM steep_repl.audit_log WHERE action = 'state.updated' AND actor = 'upgrade@n1'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(seeded, 3);
    // A second init is refused; the seed is not read twice.
    let (code, _, err) = c.cli(0, &["cluster", "init"]).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("already belongs to cluster"), "{err}");
}

/// A dead node replaced under the same node_id: removed, then a fresh one
/// (empty store, a new Raft id) added with that id; the data comes back and
/// the cluster goes on with three voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_under_the_same_node_id() {
    let mut c = RaftCluster::start_formed(3).await.unwrap();
    for n in 0..10 {
        set_acknowledged(&c, n % 3, &format!("rep.k{n}"), &json!(n))
            .await
            .unwrap();
    }
    let dead = (0..3).find(|&i| c.leader_seen_by(0) != Some(i)).unwrap();
    let alive: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let old_raft_id = c.status(dead).unwrap()["raft_id"].clone();
    c.nodes[dead].daemon.kill9().unwrap();
    // The machine is gone; its replacement starts with an empty disk.
    wipe(&c, dead);
    let node_id = c.nodes[dead].node_id.clone();
    let (code, out, err) = c
        .cli(alive[0], &["cluster", "remove", &node_id, "--json"])
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(voter_count(&parse(&out, &err)), 2, "{out}");
    c.nodes[dead].daemon.restart().unwrap();
    c.nodes[dead]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();
    c.add(alive[0], dead).unwrap();
    c.wait_for_agreement(&[0, 1, 2], 3, Duration::from_secs(30))
        .await
        .unwrap();
    let new_raft_id = c.status(dead).unwrap()["raft_id"].clone();
    assert_ne!(
        new_raft_id, old_raft_id,
        "the replacement is a new incarnation"
    );
    for n in 0..10 {
        assert_eq!(get(&c, dead, &format!("rep.k{n}")), Some(json!(n)));
    }
    set_acknowledged(&c, dead, "rep.after", &json!(true))
        .await
        .unwrap();
}

//! Cluster agreement on real daemons (docs/operations.md, "The cluster"): clusters created,
//! grown and shrunk by command; the replicated state map read and written
//! from any member; Raft messages refused (and audited) when the sender's
//! identity does not hold; a wiped store refused until re-added; a minority
//! refusing writes; acknowledged writes surviving kill -9.
//!
//! Each test starts its own nodes (PostgreSQL 18 with the extension, a
//! daemon with mutual TLS, short Raft timings) and talks to them through
//! the CLI, IPC, gRPC and SQL only. A failing test prints the end of every
//! daemon's log (tests/src/raft.rs).

use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use steep_repl_actors::peer_tls::{ConnectOptions, PeerTransport, TlsPaths};
use steep_repl_proto::raft_client::RaftClient;
use steep_repl_proto::RaftMessage;
use steep_repl_tests::raft::{
    call_ok, get, member_raft_id, set_acknowledged, voter_count, write, RaftCluster, HEALTHY_RETRY,
};
use steep_repl_tests::small_disk::SmallDisk;

/// Exit codes of the cluster commands (daemon/src/cluster_cmd.rs).
const EXIT_NO_QUORUM: i32 = 7;
const EXIT_CAS_FAILED: i32 = 8;

/// Parses the JSON a `--json` command printed, failing with its output.
fn parse(out: &str, err: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?} {err:?}"))
}

/// `cluster status --json` on node `i`, which must succeed.
fn cli_status(c: &RaftCluster, i: usize) -> Value {
    let (code, out, err) = c.cli(i, &["cluster", "status", "--json"]).unwrap();
    assert_eq!(code, 0, "cluster status on node {i}: {out}{err}");
    parse(&out, &err)
}

fn member_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node_id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn raft_id(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("raft id {hex:?}: {e}"))
}

/// The CLI on node `i`, asked again while it exits 7 (NO_QUORUM) in a
/// cluster meant to be healthy (see [`HEALTHY_RETRY`]).
fn cli(c: &RaftCluster, i: usize, args: &[&str]) -> (i32, String, String) {
    let deadline = Instant::now() + HEALTHY_RETRY;
    loop {
        let (code, out, err) = c.cli(i, args).unwrap();
        if code != EXIT_NO_QUORUM || Instant::now() > deadline {
            return (code, out, err);
        }
        eprintln!("{args:?} on node {i}: NO_QUORUM, asking again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The error code of a call that must fail on node `i`.
fn error_code(c: &RaftCluster, i: usize, method: &str, params: Value) -> (String, String) {
    c.ipc(i)
        .unwrap()
        .call_err(method, params.clone())
        .unwrap_or_else(|e| panic!("{method} {params} on node {i}: {e:#}"))
}

/// The same in a cluster meant to be healthy: NO_QUORUM is asked again.
fn refusal(c: &RaftCluster, i: usize, method: &str, params: Value) -> (String, String) {
    let deadline = Instant::now() + HEALTHY_RETRY;
    loop {
        let (code, message) = error_code(c, i, method, params.clone());
        if code != "NO_QUORUM" || Instant::now() > deadline {
            return (code, message);
        }
        eprintln!("{method} on node {i}: NO_QUORUM, asking again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_created_grown_and_shrunk_by_command() {
    let c = RaftCluster::start(4).await.unwrap();
    // n1..n3 form the cluster; n4 stays empty.
    if let Err(e) = c.form_first(3).await {
        panic!("{e:#}");
    }

    // Every member shows the same cluster, three voters and one leader.
    let statuses: Vec<Value> = (0..3).map(|i| cli_status(&c, i)).collect();
    let cluster_id = statuses[0]["cluster_id"].as_str().expect("a cluster id");
    assert!(!cluster_id.is_empty());
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s["cluster_id"], json!(cluster_id), "node {i}: {s}");
        assert_eq!(s["node_id"], json!(format!("n{}", i + 1)), "{s}");
        assert_eq!(voter_count(s), 3, "node {i}: {s}");
        assert_eq!(member_ids(s), ["n1", "n2", "n3"], "node {i}: {s}");
        let leaders: Vec<&Value> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["leader"] == json!(true))
            .collect();
        assert_eq!(leaders.len(), 1, "node {i}: {s}");
        assert_eq!(leaders[0]["node_id"], s["leader"], "node {i}: {s}");
        assert_eq!(s["leader"], statuses[0]["leader"], "node {i}: {s}");
        assert!(
            ["leader", "follower"].contains(&s["state"].as_str().unwrap_or("")),
            "node {i}: {s}"
        );
        // Each member's Raft id is the one its own store reports.
        assert_eq!(
            member_raft_id(s, &format!("n{}", i + 1)).as_deref(),
            s["raft_id"].as_str(),
            "{s}"
        );
    }
    let states: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "leader").count(),
        1,
        "{states:?}"
    );

    // Adding a member again is refused, naming the way to replace it.
    let n2 = c.nodes[1].grpc_address();
    let (code, out, err) = cli(&c, 0, &["cluster", "add", "n2", "--grpc", &n2]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("n2 is already a member"), "{err}");
    assert!(err.contains("cluster remove n2"), "{err}");
    assert_eq!(voter_count(&cli_status(&c, 0)), 3);

    // Removing n3 leaves n1 and n2, as both of them see it.
    let (code, out, err) = cli(&c, 0, &["cluster", "remove", "n3", "--json"]);
    assert_eq!(code, 0, "cluster remove n3: {out}{err}");
    c.wait_until(
        "n1 and n2 to see two members",
        Duration::from_secs(10),
        || {
            Ok((0..2).all(|i| {
                c.status(i)
                    .map(|s| member_ids(&s) == ["n1", "n2"] && voter_count(&s) == 2)
                    .unwrap_or(false)
            }))
        },
    )
    .await
    .unwrap();
    // The remaining two still decide together.
    write(
        &c,
        1,
        "state.set",
        json!({"key": "after-remove", "value": 1}),
    );
    assert_eq!(get(&c, 0, "after-remove"), Some(json!(1)));

    // A second init on a member is refused.
    let (code, out, err) = cli(&c, 0, &["cluster", "init"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("already belongs to cluster"), "{err}");
    assert!(err.contains(cluster_id), "{err}");
    assert_eq!(cli_status(&c, 0)["cluster_id"], json!(cluster_id));

    // An empty node serves nothing cluster-wide.
    let empty = cli_status(&c, 3);
    assert_eq!(empty["state"], json!("none"), "{empty}");
    assert!(empty["cluster_id"].is_null(), "{empty}");
    assert_eq!(empty["members"], json!([]), "{empty}");
    let (code, message) = refusal(&c, 3, "state.get", json!({"key": "after-remove"}));
    assert_eq!(code, "NOT_A_MEMBER", "{message}");
    let (code, _) = refusal(&c, 3, "state.set", json!({"key": "k", "value": 1}));
    assert_eq!(code, "NOT_A_MEMBER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_map_is_linearizable_from_any_node_and_retries_apply_once() {
    let c = RaftCluster::start_formed(3).await.unwrap();
    let leader = c.leader_seen_by(0).expect("a leader");
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();

    // Written on a follower, read (linearizable) on the two others at once.
    let set = write(
        &c,
        follower,
        "state.set",
        json!({"key": "app.a", "value": {"x": 1}}),
    );
    assert_eq!(set["key"], json!("app.a"), "{set}");
    assert!(set["applied_index"].as_u64().is_some(), "{set}");
    assert!(set["previous"].is_null(), "{set}");
    for &i in &others {
        assert_eq!(get(&c, i, "app.a"), Some(json!({"x": 1})), "node {i}");
    }

    // A compare-and-set against the wrong value is refused (CLI exit 8).
    let (code, message) = refusal(
        &c,
        others[0],
        "state.cas",
        json!({"key": "app.a", "expected": {"x": 2}, "value": 3}),
    );
    assert_eq!(code, "CAS_FAILED", "{message}");
    assert!(message.contains("{\"x\":1}"), "{message}");
    let (code, out, err) = cli(&c, follower, &["state", "cas", "app.a", "7", "8"]);
    assert_eq!(code, EXIT_CAS_FAILED, "{out}{err}");
    assert_eq!(get(&c, follower, "app.a"), Some(json!({"x": 1})));

    // expected: null means "absent": it succeeds once.
    let created = write(
        &c,
        follower,
        "state.cas",
        json!({"key": "app.b", "expected": null, "value": 1}),
    );
    assert!(created["previous"].is_null(), "{created}");
    let (code, _) = refusal(
        &c,
        leader,
        "state.cas",
        json!({"key": "app.b", "expected": null, "value": 100}),
    );
    assert_eq!(code, "CAS_FAILED");
    // The same through the CLI ("absent").
    let (code, out, err) = cli(
        &c,
        others[1],
        &["state", "cas", "app.c", "absent", "\"c\"", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(
        &c,
        others[1],
        &["state", "cas", "app.c", "absent", "\"c2\""],
    );
    assert_eq!(code, EXIT_CAS_FAILED, "{out}{err}");

    // A retry with the same request id answers the first outcome and
    // applies nothing: 1 -> 2 (id r-1), then 5, then r-1 again.
    let first = write(
        &c,
        follower,
        "state.cas",
        json!({"key": "app.b", "expected": 1, "value": 2, "request_id": "r-1"}),
    );
    assert_eq!(first["previous"], json!(1), "{first}");
    assert_eq!(get(&c, leader, "app.b"), Some(json!(2)));
    write(&c, leader, "state.set", json!({"key": "app.b", "value": 5}));
    for i in [follower, others[1]] {
        let again = write(
            &c,
            i,
            "state.cas",
            json!({"key": "app.b", "expected": 1, "value": 2, "request_id": "r-1"}),
        );
        // The first outcome; the log index is where the retry was decided.
        assert_eq!(
            (&again["key"], &again["previous"]),
            (&first["key"], &first["previous"]),
            "the retry on node {i} answered another outcome: {again} vs {first}"
        );
    }
    for i in 0..3 {
        assert_eq!(get(&c, i, "app.b"), Some(json!(5)), "node {i}");
    }
    // The same for a plain set retried after another write.
    let set_once = write(
        &c,
        others[0],
        "state.set",
        json!({"key": "app.d", "value": "first", "request_id": "r-2"}),
    );
    write(
        &c,
        others[1],
        "state.set",
        json!({"key": "app.d", "value": "second"}),
    );
    let (code, out, err) = cli(
        &c,
        follower,
        &[
            "state",
            "set",
            "app.d",
            "first",
            "--request-id",
            "r-2",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let retried = parse(&out, &err);
    assert_eq!(
        retried["previous"], set_once["previous"],
        "{retried} vs {set_once}"
    );
    assert!(set_once["previous"].is_null(), "{set_once}");
    assert_eq!(get(&c, leader, "app.d"), Some(json!("second")));

    // Delete.
    let deleted = write(&c, others[1], "state.delete", json!({"key": "app.a"}));
    assert_eq!(deleted["previous"], json!({"x": 1}), "{deleted}");
    for i in 0..3 {
        assert_eq!(get(&c, i, "app.a"), None, "node {i}");
    }

    // List by prefix, from every node (IPC and CLI).
    write(
        &c,
        leader,
        "state.set",
        json!({"key": "other.z", "value": 0}),
    );
    let expected = json!([
        {"key": "app.b", "value": 5},
        {"key": "app.c", "value": "c"},
        {"key": "app.d", "value": "second"},
    ]);
    for i in 0..3 {
        let listed = call_ok(&c, i, "state.list", json!({"prefix": "app."}));
        assert_eq!(listed["entries"], expected, "node {i}");
        let (code, out, err) = cli(&c, i, &["state", "list", "app.", "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(parse(&out, &err)["entries"], expected, "node {i}");
    }
    let all = call_ok(&c, follower, "state.list", json!({}));
    assert_eq!(all["entries"].as_array().map(Vec::len), Some(4), "{all}");
}

/// What n1's audit trail holds for refused peers: (error, client ip, target).
async fn auth_failures(c: &RaftCluster) -> Result<Vec<(String, Option<String>, Option<String>)>> {
    let mut conn = c.nodes[0].pg.connect().await?;
    Ok(sqlx::query_as(
        "SELECT error_message, host(client_ip), target_id FROM steep_repl.audit_log
          WHERE action = 'peer.auth_failed' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_message_from_a_valid_certificate_claiming_another_members_id_is_refused_and_audited(
) {
    let c = RaftCluster::start_formed(3).await.unwrap();
    let status = c.status(0).unwrap();
    let cluster_id = status["cluster_id"].as_str().unwrap().to_string();
    let n1 = raft_id(&member_raft_id(&status, "n1").unwrap());
    let n2 = raft_id(&member_raft_id(&status, "n2").unwrap());
    let n3 = raft_id(&member_raft_id(&status, "n3").unwrap());

    // n3's own, valid certificate.
    let dir = c.certs.dir.path();
    let transport = PeerTransport::mtls_from_files(&TlsPaths {
        cert_file: dir.join("n3.crt"),
        key_file: dir.join("n3.key"),
        ca_file: dir.join("ca.crt"),
    })
    .unwrap();
    let channel = transport
        .connect(
            "127.0.0.1",
            c.nodes[0].grpc_port,
            &ConnectOptions::default(),
        )
        .await
        .unwrap();
    let mut client = RaftClient::new(channel);
    let message = |from_node_id: &str, from_raft_id: u64| RaftMessage {
        cluster_id: cluster_id.clone(),
        from_node_id: from_node_id.to_string(),
        from_raft_id,
        to_raft_id: n1,
        kind: "vote".into(),
        // Never parsed: the envelope is judged first.
        payload: b"{}".to_vec(),
    };

    // Claiming to be n1 (with n1's Raft id): the certificate names n3.
    let refused = client.call(message("n1", n1)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("claims node_id \"n1\""),
        "{refused:?}"
    );
    // Claiming to be n3 but with n2's Raft id: the member is not n3.
    let refused = client.call(message("n3", n2)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("belongs to member \"n2\""),
        "{refused:?}"
    );
    // The honest envelope passes admission; only the payload is wrong.
    let honest = client.call(message("n3", n3)).await.unwrap_err();
    assert_eq!(honest.code(), tonic::Code::InvalidArgument, "{honest:?}");

    // Both refusals are audited on n1 (the audit is written in batches).
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = auth_failures(&c).await.unwrap_or_default();
        let found = |needle: &str| rows.iter().any(|(m, _, _)| m.contains(needle));
        if found("claims node_id \"n1\"") && found("belongs to member \"n2\"") {
            break rows;
        }
        if Instant::now() > deadline {
            panic!("n1 did not audit both refusals: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (message, ip, target) in &rows {
        assert!(message.contains("raft message refused"), "{rows:?}");
        assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{rows:?}");
        assert!(
            matches!(target.as_deref(), Some("n1") | Some("n3")),
            "{rows:?}"
        );
    }
    assert!(
        c.nodes[0].daemon.log().contains("peer.auth_failed"),
        "n1 did not log the refusals"
    );
    // The cluster was not disturbed.
    write(&c, 2, "state.set", json!({"key": "still", "value": true}));
    assert_eq!(get(&c, 0, "still"), Some(json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_until_removed_and_added_again() {
    let mut c = RaftCluster::start_formed(3).await.unwrap();
    write(&c, 0, "state.set", json!({"key": "before", "value": "b"}));
    let old = member_raft_id(&c.status(0).unwrap(), "n3").unwrap();
    assert_eq!(c.status(2).unwrap()["raft_id"], json!(old));

    // Stop n3, wipe its store, start it again.
    c.nodes[2].daemon.stop().unwrap();
    let raft_dir = c.nodes[2].daemon.home.raft_dir();
    assert!(raft_dir.exists(), "{} missing", raft_dir.display());
    std::fs::remove_dir_all(&raft_dir).unwrap();
    c.nodes[2].daemon.restart().unwrap();
    c.nodes[2]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();

    let wiped = c.status(2).unwrap();
    assert_eq!(wiped["state"], json!("none"), "{wiped}");
    assert!(wiped["cluster_id"].is_null(), "{wiped}");
    let new = wiped["raft_id"].as_str().unwrap().to_string();
    assert_ne!(new, old, "a wiped store must get a new Raft id");
    let (code, message) = refusal(&c, 2, "state.get", json!({"key": "before"}));
    assert_eq!(code, "NOT_A_MEMBER", "{message}");

    // The members still know n3 by its old incarnation, and still decide.
    let view = c.status(0).unwrap();
    assert_eq!(member_raft_id(&view, "n3"), Some(old.clone()), "{view}");
    write(&c, 1, "state.set", json!({"key": "during", "value": "d"}));
    write(&c, 0, "state.set", json!({"key": "during2", "value": "d2"}));
    assert_eq!(get(&c, 1, "during2"), Some(json!("d2")));
    // ...and the wiped node is not let back in on its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = c.status(2).unwrap();
    assert_eq!(still["state"], json!("none"), "{still}");
    assert_eq!(
        member_raft_id(&c.status(0).unwrap(), "n3"),
        Some(old.clone())
    );

    // Remove and add again: n3 joins with its new Raft id and catches up.
    let (code, out, err) = cli(&c, 0, &["cluster", "remove", "n3"]);
    assert_eq!(code, 0, "cluster remove n3: {out}{err}");
    let added = c.add(0, 2).unwrap();
    assert_eq!(member_raft_id(&added, "n3"), Some(new.clone()), "{added}");
    c.wait_for_agreement(&[0, 1, 2], 3, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(get(&c, 2, "before"), Some(json!("b")));
    assert_eq!(get(&c, 2, "during"), Some(json!("d")));
    assert_eq!(get(&c, 2, "during2"), Some(json!("d2")));
    let rejoined = c.status(2).unwrap();
    assert_eq!(rejoined["raft_id"], json!(new), "{rejoined}");
    assert_eq!(rejoined["cluster_id"], view["cluster_id"], "{rejoined}");
    write(&c, 2, "state.set", json!({"key": "after", "value": "a"}));
    assert_eq!(get(&c, 0, "after"), Some(json!("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_answers_no_quorum() {
    let mut c = RaftCluster::start_formed(3).await.unwrap();
    write(&c, 0, "state.set", json!({"key": "k", "value": "before"}));
    // Keep the leader, kill the two others: the survivor must notice that
    // nobody acknowledges it any more.
    let survivor = c.leader_seen_by(0).expect("a leader");
    for i in (0..3).filter(|&i| i != survivor) {
        c.nodes[i].daemon.kill9().unwrap();
    }
    let killed_at = Instant::now();

    // Early writes may still be proposed (its quorum view is stale) and
    // then time out: UNKNOWN_OUTCOME. After that, NO_QUORUM.
    let mut answers = Vec::new();
    loop {
        let started = killed_at.elapsed();
        let (code, message) = error_code(
            &c,
            survivor,
            "state.set",
            json!({"key": "k", "value": "lost"}),
        );
        answers.push((started, code.clone()));
        match code.as_str() {
            "NO_QUORUM" => break,
            "UNKNOWN_OUTCOME" if started < Duration::from_secs(2) => {}
            _ => panic!("unexpected answer {code} ({message}); answers so far {answers:?}"),
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "no NO_QUORUM: {answers:?}"
        );
    }
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "NO_QUORUM came late: {answers:?}"
    );
    // From now on, every write is refused outright, by IPC and the CLI.
    let (code, message) = error_code(&c, survivor, "state.set", json!({"key": "x", "value": 1}));
    assert_eq!(code, "NO_QUORUM", "{message}");
    let t = Instant::now();
    let (code, out, err) = c.cli(survivor, &["state", "set", "k", "lost-too"]).unwrap();
    assert_eq!(code, EXIT_NO_QUORUM, "{out}{err}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let (code, message) = error_code(
        &c,
        survivor,
        "state.cas",
        json!({"key": "k", "expected": "before", "value": 2}),
    );
    assert_eq!(code, "NO_QUORUM", "{message}");
    // A linearizable read cannot be confirmed either...
    let (code, message) = error_code(&c, survivor, "state.get", json!({"key": "k"}));
    assert_eq!(code, "NO_QUORUM", "{message}");
    let (code, message) = error_code(&c, survivor, "state.list", json!({"prefix": ""}));
    assert_eq!(code, "NO_QUORUM", "{message}");
    // ...but a local one answers what this node has applied.
    let local = c
        .ipc(survivor)
        .unwrap()
        .call("state.get", json!({"key": "k", "consistency": "local"}))
        .unwrap();
    assert_eq!(local["found"], json!(true), "{local}");
    assert_eq!(local["value"], json!("before"), "{local}");
    let (code, out, err) = c
        .cli(survivor, &["state", "get", "k", "--local", "--json"])
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(parse(&out, &err)["value"], json!("before"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_of_any_node() {
    let mut c = RaftCluster::start_formed(3).await.unwrap();
    let mut acknowledged: BTreeMap<String, Value> = BTreeMap::new();
    for n in 0..30 {
        let key = format!("ack.{n:02}");
        let value = json!({"n": n, "from": n % 3});
        set_acknowledged(&c, n % 3, &key, &value).await.unwrap();
        acknowledged.insert(key, value);
    }

    // kill -9 the leader, keep writing on the two others.
    let leader = c.leader_seen_by(0).expect("a leader");
    c.nodes[leader].daemon.kill9().unwrap();
    let majority: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for n in 30..40 {
        let key = format!("ack.{n:02}");
        let value = json!({"n": n, "after_kill": true});
        set_acknowledged(&c, majority[n % 2], &key, &value)
            .await
            .unwrap();
        acknowledged.insert(key, value);
    }
    let new_leader = c.leader_seen_by(majority[0]).expect("a new leader");
    assert_ne!(new_leader, leader, "the killed node cannot lead");

    // Restart it with the same configuration and files.
    c.nodes[leader].daemon.restart().unwrap();
    c.nodes[leader]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();
    c.wait_for_agreement(&[0, 1, 2], 3, Duration::from_secs(20))
        .await
        .unwrap();

    let expected: Vec<Value> = acknowledged
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    for i in 0..3 {
        let listed = call_ok(&c, i, "state.list", json!({"prefix": "ack."}));
        assert_eq!(listed["entries"], json!(expected), "node {i}");
    }
    for (key, value) in &acknowledged {
        assert_eq!(get(&c, leader, key).as_ref(), Some(value), "{key}");
    }
}

/// One daemon per Raft directory: a second one pointed at a directory in
/// use (here through a symlink) refuses to start and says why, and the
/// first keeps serving.
#[tokio::test]
async fn a_second_daemon_on_a_raft_directory_in_use_refuses_to_start() {
    let cluster = RaftCluster::start_formed(1).await.unwrap();
    let node = &cluster.nodes[0];
    // Its own ports (HTTP, gRPC); only the Raft directory is shared.
    let mut options = node.options.clone().with_http();
    options.grpc = steep_repl_tests::cluster::grpc_yaml(
        steep_repl_tests::ports::free_port(),
        &[],
        &cluster.certs.tls_yaml(&node.node_id),
    );
    let home = steep_repl_tests::daemon::DaemonHome::new().unwrap();
    std::os::unix::fs::symlink(node.daemon.home.raft_dir(), home.raft_dir()).unwrap();
    home.write_config(&options).unwrap();
    let mut second = steep_repl_tests::daemon::Daemon::start_in(home).unwrap();
    let status = second.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success(), "the second daemon ran: {}", second.log());
    assert!(
        second
            .log()
            .contains("another steep-repl uses the Raft directory"),
        "{}",
        second.log()
    );
    let (code, out, err) = cluster.cli(0, &["state", "set", "app.still", "1"]).unwrap();
    assert_eq!(code, 0, "the first daemon stopped serving: {out}{err}");
}

/// `/ready` says no while a node is not a caught-up member; `/metrics`
/// carries the Raft and coordinator numbers (docs/operations.md, "HTTP probes and metrics").
#[tokio::test]
async fn ready_waits_for_membership_and_metrics_show_the_cluster() {
    use steep_repl_tests::http::{get, parse_prometheus};
    let cluster = RaftCluster::start(2).await.unwrap();
    let addr = |i: usize| cluster.nodes[i].options.http_addr().expect("http on");
    let wait = |i: usize, code: u16, saying: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = get(addr(i), "/ready").unwrap();
            if r.status == code && r.text().contains(saying) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "/ready of n{} stays {}: {}",
                i + 1,
                r.status,
                r.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // PostgreSQL up, but no cluster yet.
    wait(1, 503, "not a member of a cluster");
    let health = cluster
        .ipc(1)
        .unwrap()
        .call("health.check", json!({}))
        .unwrap();
    assert_eq!(health["raft"]["ready"], json!(false), "{health}");
    assert!(
        health["raft"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a member")),
        "{health}"
    );
    cluster.form().await.unwrap();
    wait(0, 200, "");
    wait(1, 200, "");
    // `steep-repl health` shows the Raft view.
    let (code, out, err) = cluster.cli(0, &["health"]).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    for needle in ["raft", "leader", "log / commit / applied"] {
        assert!(out.contains(needle), "{needle} missing: {out}");
    }
    let health = cluster
        .ipc(0)
        .unwrap()
        .call("health.check", json!({}))
        .unwrap();
    assert_eq!(health["raft"]["ready"], json!(true), "{health}");
    assert_eq!(health["raft"]["leader"], json!("n1"), "{health}");
    assert!(
        health["raft"]["commit_index"].as_u64() >= Some(1),
        "{health}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = get(addr(0), "/metrics").unwrap().text();
        let families = parse_prometheus(&page).unwrap();
        let has = |name: &str| families.contains_key(name);
        let epoch = page
            .lines()
            .find_map(|l| l.strip_prefix("steep_repl_coordinator_epoch "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if has("steep_repl_raft_term")
            && has("steep_repl_raft_follower_lag_entries")
            && has("steep_repl_raft_fsync_p99_seconds")
            && has("steep_repl_no_quorum_total")
            && epoch >= 1.0
            && page.contains("steep_repl_raft_is_leader 1")
            && page.contains("steep_repl_raft_follower_lag_entries{node_id=\"n2\"}")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's /metrics lack the cluster:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An entry PostgreSQL refuses (here a DBA's trigger) stops the projection
/// at that entry, not the cluster: writes go on and read back, the tables
/// stay behind, `cluster status` says why, the daemon logs it once instead
/// of at every retry, and once the cause is gone the tables catch up.
#[tokio::test]
async fn a_projection_the_database_refuses_stays_behind_without_stopping_the_cluster() {
    let cluster = RaftCluster::start_formed(1).await.unwrap();
    let mut conn = cluster.nodes[0].pg.connect().await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION public.refuse_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.key LIKE 'blocked.%' THEN RAISE EXCEPTION 'a DBA trigger refuses %', NEW.key; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_blocked BEFORE INSERT OR UPDATE ON steep_repl.coordinator_state
           FOR EACH ROW EXECUTE FUNCTION public.refuse_blocked();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    write(
        &cluster,
        0,
        "state.set",
        json!({"key": "blocked.one", "value": 1}),
    );
    write(
        &cluster,
        0,
        "state.set",
        json!({"key": "app.after", "value": 2}),
    );
    assert_eq!(get(&cluster, 0, "app.after"), Some(json!(2)));
    cluster
        .wait_until(
            "cluster status to report the refusal",
            Duration::from_secs(20),
            || {
                let s = cluster.status(0)?;
                Ok(s["projection"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("a DBA trigger refuses blocked.one")))
            },
        )
        .await
        .unwrap();
    let projected = || async {
        let mut conn = cluster.nodes[0].pg.connect().await.unwrap();
        let keys: Vec<(String,)> = sqlx::query_as(
            "SELECT key FROM steep_repl.coordinator_state WHERE key IN ('blocked.one', 'app.after') ORDER BY key",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        keys.into_iter().map(|(k,)| k).collect::<Vec<_>>()
    };
    assert!(
        projected().await.is_empty(),
        "the refused entry was projected"
    );
    // Retried with a backoff (1, 2, 4 s ...), logged once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = cluster.status(0).unwrap();
    assert!(
        status["projection"]["failures"].as_u64().unwrap_or(0) >= 2,
        "not retried: {status}"
    );
    let log = cluster.nodes[0].daemon.log();
    assert_eq!(log.matches("projection.failed").count(), 1, "{log}");
    // A write still goes through while the projection is stuck.
    write(
        &cluster,
        0,
        "state.set",
        json!({"key": "app.during", "value": 3}),
    );

    sqlx::raw_sql("DROP TRIGGER refuse_blocked ON steep_repl.coordinator_state")
        .execute(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while projected().await != ["app.after", "blocked.one"] {
        assert!(
            Instant::now() < deadline,
            "the projection did not catch up: {}",
            cluster.views()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cluster.status(0).unwrap();
    assert!(status["projection"]["error"].is_null(), "{status}");
    assert!(
        cluster.nodes[0].daemon.log().contains("projection.resumed"),
        "{}",
        cluster.nodes[0].daemon.log()
    );
}

/// A Raft store that fails under its daemon (here the disk under n3's
/// `raft.dir` fills up) stops that node's Raft core. The daemon notices,
/// logs why and exits with code 10 for the service manager to restart it,
/// instead of staying up as a member that can neither vote nor write; the
/// two others go on. Restarted once there is room, it reopens its store and
/// holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_raft_disk_fills_exits_with_code_10_and_comes_back_whole() {
    const EXIT_RAFT_STOPPED: i32 = 10;
    let mut c = RaftCluster::start(3).await.unwrap();
    // n3 again, its empty store on a 512 KiB disk this time.
    let small = &mut c.nodes[2];
    small.daemon.stop().unwrap();
    let raft_dir = small.daemon.home.raft_dir();
    std::fs::remove_dir_all(&raft_dir).unwrap();
    let disk = SmallDisk::mount(&raft_dir, 512 * 1024).unwrap();
    small.daemon.restart().unwrap();
    small.daemon.wait_for_ipc(Duration::from_secs(30)).unwrap();
    c.form().await.unwrap();

    // Writes of 8 KiB values on n1 until n3's disk is full and it exits.
    let filler = "x".repeat(8 * 1024);
    let mut acknowledged: BTreeMap<String, Value> = BTreeMap::new();
    let mut status = None;
    for n in 0..200 {
        let key = format!("fill.{n:03}");
        let value = json!({"n": n, "filler": filler});
        set_acknowledged(&c, 0, &key, &value).await.unwrap();
        acknowledged.insert(key, value);
        status = c.nodes[2].daemon.exited().unwrap();
        if status.is_some() {
            break;
        }
    }
    let status = match status {
        Some(status) => status,
        // The last writes may reach n3 after the loop's last look.
        None => c.nodes[2]
            .daemon
            .wait_exit(Duration::from_secs(30))
            .unwrap(),
    };
    let log = c.nodes[2].daemon.log();
    assert_eq!(status.code(), Some(EXIT_RAFT_STOPPED), "{status}:\n{log}");
    assert!(log.contains("raft.core_stopped"), "{log}");

    assert!(
        log.contains("No space left on device"),
        "the reason is not named:\n{log}"
    );

    // The two others still make a majority.
    for n in 0..5 {
        let key = format!("after.{n}");
        let value = json!({"n": n});
        set_acknowledged(&c, n % 2, &key, &value).await.unwrap();
        acknowledged.insert(key, value);
    }

    // Room again (a DBA freed space), and the service manager's restart.
    disk.resize(16 * 1024 * 1024).unwrap();
    c.nodes[2].daemon.restart().unwrap();
    c.nodes[2]
        .daemon
        .wait_for_ipc(Duration::from_secs(30))
        .unwrap();
    c.wait_for_agreement(&[0, 1, 2], 3, Duration::from_secs(30))
        .await
        .unwrap();
    for (key, value) in &acknowledged {
        assert_eq!(get(&c, 2, key).as_ref(), Some(value), "{key}");
    }
    // Its own applied state too, not only the leader's through it.
    let local = call_ok(
        &c,
        2,
        "state.list",
        json!({"prefix": "", "consistency": "local"}),
    );
    let entries = local["entries"].as_array().cloned().unwrap_or_default();
    for (key, value) in &acknowledged {
        assert!(
            entries
                .iter()
                .any(|e| e["key"] == json!(key) && &e["value"] == value),
            "{key} missing from n3's own state"
        );
    }
    write(&c, 2, "state.set", json!({"key": "back", "value": true}));
}

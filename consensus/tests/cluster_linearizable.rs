//! The replicated state map is linearizable from every node while the
//! network is cut, split one way only and paused (a node
//! that cannot reach a majority refuses writes with NO_QUORUM), and what was acknowledged survives a restart of
//! every node.
//!
//! Each test runs real openraft nodes on the real file store (see
//! `common`), concurrent clients on every node, and faults on a schedule
//! drawn from a seed (printed; `STEEP_TEST_SEED` replays the schedule and
//! the clients' choices, not the exact timing). The record of what the
//! clients asked and were told is checked by stateright's
//! `LinearizabilityTester`; a write answered `UnknownOutcome` stays in flight
//! for ever (it may have taken effect or not), one answered `NoQuorum` is
//! left out as never invoked (it was never proposed).

mod common;

use common::{
    check_linearizable, execute, final_reads, run_clients, seed, Cluster, End, History, Op, Record,
    Ret, Workload,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steep_repl_consensus::RaftId;

/// How many answered operations make a run meaningful.
const MIN_OK_OPS: u64 = 50;

fn ms(rng: &mut fastrand::Rng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.u64(range))
}

/// The current leader, or any node when there is none right now.
fn leader_or_any(cluster: &Cluster, rng: &mut fastrand::Rng) -> RaftId {
    cluster
        .leader()
        .unwrap_or_else(|| cluster.ids()[rng.usize(0..cluster.nodes.len())])
}

fn a_follower(cluster: &Cluster, rng: &mut fastrand::Rng) -> RaftId {
    let leader = cluster.leader();
    let followers: Vec<RaftId> = cluster
        .ids()
        .into_iter()
        .filter(|i| Some(*i) != leader)
        .collect();
    followers[rng.usize(0..followers.len())]
}

/// Runs the clients for `run_for` while `nemesis` breaks the network, then
/// heals, reads every key from every node and checks the whole history.
async fn run_and_check<F, Fut>(name: &str, nodes: usize, run_for: Duration, nemesis: F)
where
    F: FnOnce(Arc<Cluster>, fastrand::Rng, Instant) -> Fut,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let started = Instant::now();
    let seed = seed(name);
    let cluster = Arc::new(Cluster::start(nodes, seed).await);
    let history = Arc::new(History::default());
    let until = Instant::now() + run_for;
    let faults = tokio::spawn(nemesis(
        cluster.clone(),
        fastrand::Rng::with_seed(seed.wrapping_add(1)),
        until,
    ));
    run_clients(&cluster, &history, &Workload::default(), seed, run_for).await;
    let faults = faults.await.expect("the nemesis panicked");
    cluster.converge(Duration::from_secs(15)).await;
    final_reads(&cluster, &history).await;
    let counts = history.counts();
    eprintln!(
        "[{name}] seed {seed}: {counts}\n[{name}] faults: {}\n[{name}] {}\n[{name}] {}",
        faults.join(", "),
        cluster.net.summary(),
        cluster.describe()
    );
    assert!(
        cluster.net.errors().is_empty(),
        "messages could not be read: {:?}",
        cluster.net.errors()
    );
    history.assert_linearizable(seed);
    assert!(
        counts.ok > MIN_OK_OPS,
        "only {} operations were answered (seed {seed}): the run proves too little",
        counts.ok
    );
    assert!(
        counts.cas_applied > 0 && counts.cas_failed > 0,
        "compare-and-set never both applied and failed (seed {seed}): {counts}"
    );
    eprintln!(
        "[{name}] passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_from_every_node_under_symmetric_partitions_is_linearizable() {
    run_and_check(
        "symmetric",
        3,
        Duration::from_secs(12),
        |cluster, mut rng, until| async move {
            let mut done = Vec::new();
            let ids = cluster.ids();
            let mut round = 0;
            tokio::time::sleep(ms(&mut rng, 300..1000)).await;
            while Instant::now() < until {
                let (victim, what) = if round % 2 == 0 {
                    (leader_or_any(&cluster, &mut rng), "leader")
                } else {
                    (a_follower(&cluster, &mut rng), "follower")
                };
                round += 1;
                cluster.net.isolate(victim, &ids);
                done.push(format!("isolate {} {}", what, cluster.name_of(victim)));
                tokio::time::sleep(ms(&mut rng, 1000..3000)).await;
                cluster.net.heal();
                tokio::time::sleep(ms(&mut rng, 300..1500)).await;
            }
            done
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_from_every_node_under_asymmetric_cuts_is_linearizable() {
    run_and_check(
        "asymmetric",
        3,
        Duration::from_secs(12),
        |cluster, mut rng, until| async move {
            let mut done = Vec::new();
            let ids = cluster.ids();
            let (n2, n3) = (ids[1], ids[2]);
            tokio::time::sleep(ms(&mut rng, 300..1000)).await;
            while Instant::now() < until {
                match rng.u32(0..4) {
                    0 => {
                        // n2 and n3 cannot reach each other; both reach n1.
                        cluster.net.cut(n2, n3);
                        cluster.net.cut(n3, n2);
                        done.push("n2 x n3".to_string());
                    }
                    1 => {
                        // The leader's messages to one follower are lost,
                        // the follower's to the leader arrive.
                        let l = leader_or_any(&cluster, &mut rng);
                        let f = a_follower(&cluster, &mut rng);
                        if l != f {
                            cluster.net.cut(l, f);
                            done.push(format!(
                                "{} -> {} (leader to follower)",
                                cluster.name_of(l),
                                cluster.name_of(f)
                            ));
                        }
                    }
                    2 => {
                        // A follower's messages to the leader are lost: it
                        // hears the leader but its answers (and forwarded
                        // writes) go nowhere.
                        let l = leader_or_any(&cluster, &mut rng);
                        let f = a_follower(&cluster, &mut rng);
                        if l != f {
                            cluster.net.cut(f, l);
                            done.push(format!(
                                "{} -> {} (follower to leader)",
                                cluster.name_of(f),
                                cluster.name_of(l)
                            ));
                        }
                    }
                    _ => {
                        // Two one-way cuts at once, chosen at random.
                        for _ in 0..2 {
                            let a = ids[rng.usize(0..3)];
                            let b = ids[rng.usize(0..3)];
                            if a != b {
                                cluster.net.cut(a, b);
                                done.push(format!(
                                    "{} -> {}",
                                    cluster.name_of(a),
                                    cluster.name_of(b)
                                ));
                            }
                        }
                    }
                }
                tokio::time::sleep(ms(&mut rng, 1000..3000)).await;
                cluster.net.heal();
                tokio::time::sleep(ms(&mut rng, 300..1200)).await;
            }
            done
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_under_pauses_and_partitions_of_five_nodes_is_linearizable() {
    run_and_check(
        "five",
        5,
        Duration::from_secs(14),
        |cluster, mut rng, until| async move {
            let mut done = Vec::new();
            let ids = cluster.ids();
            tokio::time::sleep(ms(&mut rng, 300..1000)).await;
            while Instant::now() < until {
                match rng.u32(0..3) {
                    0 => {
                        // 3 | 2, the leader on either side.
                        let mut shuffled = ids.clone();
                        rng.shuffle(&mut shuffled);
                        let (a, b) = shuffled.split_at(3);
                        cluster.net.partition(&[a.to_vec(), b.to_vec()]);
                        let names = |g: &[RaftId]| {
                            g.iter()
                                .map(|i| cluster.name_of(*i))
                                .collect::<Vec<_>>()
                                .join(",")
                        };
                        done.push(format!("{} | {}", names(a), names(b)));
                    }
                    1 => {
                        let victim = if rng.bool() {
                            leader_or_any(&cluster, &mut rng)
                        } else {
                            a_follower(&cluster, &mut rng)
                        };
                        cluster.net.pause(victim);
                        done.push(format!("pause {}", cluster.name_of(victim)));
                    }
                    _ => {
                        // The leader paused while a follower is cut off:
                        // the other three must carry on.
                        let l = leader_or_any(&cluster, &mut rng);
                        let f = a_follower(&cluster, &mut rng);
                        cluster.net.pause(l);
                        if f != l {
                            cluster.net.isolate(f, &ids);
                        }
                        done.push(format!(
                            "pause {} + isolate {}",
                            cluster.name_of(l),
                            cluster.name_of(f)
                        ));
                    }
                }
                tokio::time::sleep(ms(&mut rng, 1000..3000)).await;
                cluster.net.heal();
                tokio::time::sleep(ms(&mut rng, 300..1200)).await;
            }
            done
        },
    )
    .await;
}

/// Writes `key = value` from `node` until one is acknowledged (a majority
/// side is expected to get there).
async fn write_until_acknowledged(cluster: &Cluster, history: &History, node: usize, op: Op) {
    let node = &cluster.nodes[node];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut thread = history.new_thread();
    let mut n = 0;
    loop {
        n += 1;
        let index = history.invoke(thread, &node.name, op.clone());
        let end = execute(node, &op, format!("{}-{}-{n}", node.name, op)).await;
        history.complete(index, end.clone());
        match end {
            End::Done(_) => return,
            End::Unknown(_) => thread = history.new_thread(),
            End::NotDone(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the majority could not write {op} within 10 s: {}",
            cluster.describe()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_refuses_writes_with_no_quorum() {
    let started = Instant::now();
    let seed = seed("minority");
    let cluster = Cluster::start(3, seed).await;
    let history = History::default();
    let ids = cluster.ids();
    for (round, isolate_leader) in [(0, false), (1, true)] {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        let victim_id = if isolate_leader {
            leader
        } else {
            *ids.iter().find(|i| **i != leader).unwrap()
        };
        let victim = cluster
            .nodes
            .iter()
            .position(|n| n.id == victim_id)
            .unwrap();
        let majority: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        cluster.net.isolate(victim_id, &ids);
        let isolated_at = Instant::now();
        eprintln!(
            "[minority] round {round}: isolated {} (leader: {isolate_leader})",
            cluster.nodes[victim].name
        );

        // From the minority: never acknowledged; once it has had time to
        // notice (its election timeout, or QUORUM_ACK_LIMIT for a leader),
        // refused with NoQuorum.
        let minority = async {
            let mut thread = history.new_thread();
            let mut ends = Vec::new();
            let mut i = 0;
            while isolated_at.elapsed() < Duration::from_millis(4500) {
                i += 1;
                let op = Op::Cas(format!("minority.{round}"), None, i);
                let settled = isolated_at.elapsed() > Duration::from_millis(2000);
                let index = history.invoke(thread, &cluster.nodes[victim].name, op.clone());
                let end = execute(&cluster.nodes[victim], &op, format!("min-{round}-{i}")).await;
                history.complete(index, end.clone());
                assert!(
                    !matches!(end, End::Done(_)),
                    "the isolated {} acknowledged {op}: {end:?}",
                    cluster.nodes[victim].name
                );
                if matches!(end, End::Unknown(_)) {
                    thread = history.new_thread();
                }
                ends.push((settled, end));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            ends
        };
        // From the majority: writes go on (after a new election when the
        // leader was cut off).
        let majority_writes = async {
            for v in 1..=5 {
                for (k, node) in majority.iter().enumerate() {
                    let op = Op::Set(format!("majority.{round}.{k}"), v);
                    write_until_acknowledged(&cluster, &history, *node, op).await;
                }
            }
        };
        let (ends, ()) = tokio::join!(minority, majority_writes);
        let settled: Vec<&End> = ends.iter().filter(|(s, _)| *s).map(|(_, e)| e).collect();
        assert!(
            !settled.is_empty(),
            "no write was tried on the settled minority"
        );
        for end in &settled {
            assert!(
                matches!(end, End::NotDone(e) if e.starts_with("no quorum")),
                "the isolated {} answered {end:?} instead of NoQuorum (seed {seed})",
                cluster.nodes[victim].name
            );
        }
        eprintln!(
            "[minority] round {round}: {} writes from the minority, {} after it settled, all refused",
            ends.len(),
            settled.len()
        );

        // Healed, the minority node catches up and reads the majority's
        // writes linearizably.
        cluster.net.heal();
        let node = &cluster.nodes[victim];
        for k in 0..majority.len() {
            let key = format!("majority.{round}.{k}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let thread = history.new_thread();
            loop {
                let op = Op::Get(key.clone());
                let index = history.invoke(thread, &node.name, op.clone());
                let end = execute(node, &op, String::new()).await;
                history.complete(index, end.clone());
                match end {
                    End::Done(ret) => {
                        assert_eq!(
                            ret,
                            Ret::Value(Some(5)),
                            "{} read {key} after the heal",
                            node.name
                        );
                        break;
                    }
                    other => assert!(
                        Instant::now() < deadline,
                        "{} could not read {key} after the heal: {other:?}",
                        node.name
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    cluster.converge(Duration::from_secs(10)).await;
    final_reads(&cluster, &history).await;
    eprintln!(
        "[minority] seed {seed}: {}; {}",
        history.counts(),
        cluster.net.summary()
    );
    history.assert_linearizable(seed);
    eprintln!(
        "[minority] passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_restart_of_every_node() {
    let started = Instant::now();
    let seed = seed("restart");
    let mut cluster = Cluster::start(3, seed).await;
    let history = Arc::new(History::default());
    // Enough writes to pass the snapshot policy: a restart reads a snapshot
    // and the log after it.
    let workload = Workload {
        key_period: Duration::from_secs(1),
        clients_per_node: 2,
        ..Workload::default()
    };
    run_clients(&cluster, &history, &workload, seed, Duration::from_secs(5)).await;
    cluster.converge(Duration::from_secs(10)).await;
    let before: Vec<_> = cluster.nodes.iter().map(|n| n.local_snapshot()).collect();
    let snapshot_before = cluster.nodes[0].raft.metrics().borrow().snapshot;

    cluster.restart_all().await;
    cluster.wait_for_everyone(Duration::from_secs(10)).await;
    // Every acknowledged write is in the history; reads after the restart
    // come after all of them, so the checker requires they see each one.
    final_reads(&cluster, &history).await;
    cluster.converge(Duration::from_secs(10)).await;
    let after: Vec<_> = cluster.nodes.iter().map(|n| n.local_snapshot()).collect();
    for (n, (b, a)) in cluster.nodes.iter().zip(before.iter().zip(&after)) {
        assert_eq!(a.0, b.0, "{} holds another map after the restart", n.name);
    }
    let counts = history.counts();
    eprintln!(
        "[restart] seed {seed}: {counts}; {} keys; snapshot before restart at {:?}; {}",
        after[0].0.len(),
        snapshot_before,
        cluster.describe()
    );
    history.assert_linearizable(seed);
    assert!(
        counts.ok > MIN_OK_OPS,
        "only {} operations answered",
        counts.ok
    );
    eprintln!(
        "[restart] passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------
// The checker itself can fail.
// ---------------------------------------------------------------------------

/// A record for hand-made histories: invoked and answered at given ticks.
fn rec(thread: u64, op: Op, invoked: u64, answered: Option<u64>, end: End) -> Record {
    Record {
        thread,
        node: format!("n{}", thread + 1),
        op,
        invoked,
        answered,
        end: Some(end),
        at_ms: 0,
        took_ms: 0,
    }
}

#[test]
fn the_checker_rejects_a_stale_local_read_history() {
    let k = || "k".to_string();
    // n1 writes 1 and is acknowledged; later n2 reads and sees the key
    // absent, as a follower answering from a stale local state would.
    let stale = vec![
        rec(
            0,
            Op::Set(k(), 1),
            0,
            Some(1),
            End::Done(Ret::Written { previous: None }),
        ),
        rec(1, Op::Get(k()), 2, Some(3), End::Done(Ret::Value(None))),
    ];
    assert!(
        check_linearizable(&stale).is_err(),
        "a stale read was accepted"
    );

    // The same read overlapping the write may see either: accepted.
    let concurrent = vec![
        rec(
            0,
            Op::Set(k(), 1),
            0,
            Some(3),
            End::Done(Ret::Written { previous: None }),
        ),
        rec(1, Op::Get(k()), 1, Some(2), End::Done(Ret::Value(None))),
    ];
    assert!(check_linearizable(&concurrent).is_ok());

    // A write with an unknown outcome may show up later...
    let unknown_seen = vec![
        rec(0, Op::Set(k(), 7), 0, None, End::Unknown("timeout".into())),
        rec(1, Op::Get(k()), 1, Some(2), End::Done(Ret::Value(None))),
        rec(1, Op::Get(k()), 3, Some(4), End::Done(Ret::Value(Some(7)))),
    ];
    assert!(check_linearizable(&unknown_seen).is_ok());
    // An unknown write whose value nobody saw is left out: it changes no
    // verdict either way.
    let unseen = vec![
        rec(2, Op::Set(k(), 8), 0, None, End::Unknown("timeout".into())),
        rec(
            1,
            Op::Set(k(), 1),
            1,
            Some(2),
            End::Done(Ret::Written { previous: None }),
        ),
        rec(1, Op::Get(k()), 3, Some(4), End::Done(Ret::Value(Some(1)))),
    ];
    assert!(check_linearizable(&unseen).is_ok());
    let mut unseen_stale = unseen.clone();
    unseen_stale.push(rec(
        1,
        Op::Get(k()),
        5,
        Some(6),
        End::Done(Ret::Value(None)),
    ));
    assert!(
        check_linearizable(&unseen_stale).is_err(),
        "a stale read next to an unseen unknown write was accepted"
    );

    // ...but never disappear once seen.
    let mut flicker = unknown_seen.clone();
    flicker.push(rec(
        1,
        Op::Get(k()),
        5,
        Some(6),
        End::Done(Ret::Value(None)),
    ));
    assert!(
        check_linearizable(&flicker).is_err(),
        "a value flickered back"
    );

    // A write refused with NoQuorum never happened: reading its value is a
    // violation.
    let refused_seen = vec![
        rec(
            0,
            Op::Set(k(), 9),
            0,
            Some(1),
            End::NotDone("no quorum".into()),
        ),
        rec(1, Op::Get(k()), 2, Some(3), End::Done(Ret::Value(Some(9)))),
    ];
    assert!(
        check_linearizable(&refused_seen).is_err(),
        "a refused write was read"
    );

    // A compare-and-set that succeeded against a value nobody wrote.
    let bad_cas = vec![rec(
        0,
        Op::Cas(k(), Some(3), 4),
        0,
        Some(1),
        End::Done(Ret::Written { previous: Some(3) }),
    )];
    assert!(check_linearizable(&bad_cas).is_err());
}

//! The bounded Jepsen-style runs of CI (tests/src/jepsen): real nodes in
//! containers, clients on every node, faults of every kind at random
//! (fixed seeds, printed; `STEEP_JEPSEN_SEED` replays a run's schedule),
//! and the whole history checked. Each writes its report to
//! `target/jepsen/<run>-<seed>/` (or under `STEEP_JEPSEN_REPORT_DIR`).
//!
//! They are `#[ignore]`d in the ordinary test run and run alone by
//! deploy/test.sh (`--run-ignored only`), so that the other tests' load does
//! not share the two cores with them. The long run is
//! benches/src/bin/jepsen.rs.

use std::path::PathBuf;
use std::time::Duration;
use steep_repl_tests::containers::{node_image, should_run};
use steep_repl_tests::jepsen::nemesis::FaultKind;
use steep_repl_tests::jepsen::{run, seed_or, RunSpec};

fn report_dir(name: &str, seed: u64) -> PathBuf {
    let base = std::env::var("STEEP_JEPSEN_REPORT_DIR").map_or_else(
        |_| steep_repl_tests::paths::repo_root().join("target/jepsen"),
        PathBuf::from,
    );
    base.join(format!("{name}-{seed}"))
}

async fn bounded(
    name: &str,
    default_seed: u64,
    nodes: usize,
    witness: bool,
    faults: Vec<FaultKind>,
    seconds: u64,
) {
    let image = node_image();
    if !should_run(&image) {
        return;
    }
    let seed = seed_or(default_seed);
    let spec = RunSpec {
        name: name.to_string(),
        seed,
        nodes,
        witness,
        duration: Duration::from_secs(seconds),
        faults,
        keys: 6,
        // Short histories per key: in the long run (30 s per key) one key
        // of 480 took the checker 90 s; CI's runs must decide quickly.
        key_lifetime: Duration::from_secs(15),
        clients_per_node: 1,
        report_dir: report_dir(name, seed),
        check_limit: Duration::from_secs(120),
    };
    let summary = run(&image, &spec)
        .await
        .unwrap_or_else(|e| panic!("[{name}] seed {seed}: the run failed: {e:#}"));
    let failed: Vec<String> = summary
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| format!("{}: {}", v.checker, v.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "[{name}] seed {seed} (replay with STEEP_JEPSEN_SEED={seed}); report in {}:\n{}",
        spec.report_dir.display(),
        failed.join("\n")
    );
    let answered: usize = summary.by_kind.values().map(|[ok, _, _]| ok).sum();
    assert!(
        answered >= 200,
        "[{name}] only {answered} operations were answered: the run proves too little"
    );
    assert!(
        summary.faults >= 4,
        "[{name}] only {} faults were injected",
        summary.faults
    );
    assert!(
        summary.epochs_claimed >= 2,
        "[{name}] the coordinator never changed: the faults did not reach it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone by deploy/test.sh (cargo nextest run --run-ignored only --test jepsen)"]
async fn five_nodes_under_every_fault_keep_a_linearizable_state_and_one_coordinator() {
    bounded(
        "five-nodes",
        20261203,
        5,
        false,
        vec![
            FaultKind::Partition,
            FaultKind::IsolateCoordinator,
            FaultKind::AsymmetricCut,
            FaultKind::PauseCoordinator,
            FaultKind::KillDaemon,
            FaultKind::RestartContainer,
            FaultKind::PacketLoss,
        ],
        150,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone by deploy/test.sh (cargo nextest run --run-ignored only --test jepsen)"]
async fn two_data_nodes_and_a_witness_survive_the_loss_of_either_data_node() {
    bounded(
        "two-data-nodes-and-a-witness",
        20261204,
        3,
        true,
        vec![
            FaultKind::LoseDataNode,
            FaultKind::KillDaemon,
            FaultKind::PauseCoordinator,
            FaultKind::AsymmetricCut,
        ],
        75,
    )
    .await;
}

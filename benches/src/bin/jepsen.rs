//! The long Jepsen-style run (tests/src/jepsen): real nodes in containers,
//! clients on every node, every kind of fault at random for as long as asked,
//! the whole history checked, and a report written. Its results go into
//! docs/BENCHMARKS.md; the bounded run of CI is tests/tests/jepsen.rs.
//!
//! Run (the node image first):
//! `deploy/image.sh node && cargo build --release -p steep-repl-benches &&
//!  target/release/jepsen --minutes 30 --nodes 5 --seed 42`
//! Options: `--minutes M` (30), `--nodes N` (5), `--seed S` (random,
//! printed), `--witness` (the last node a witness), `--keys K` (8),
//! `--clients C` (clients per node, 1), `--report DIR`
//! (target/jepsen/long-<seed>), `--check-limit SECONDS` (per key, 600),
//! `--key-lifetime SECONDS` (fresh keys this often, 30: short histories
//! per key keep the exhaustive check tractable).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use steep_repl_tests::jepsen::nemesis::FaultKind;
use steep_repl_tests::jepsen::{run, RunSpec};

fn main() -> Result<()> {
    let mut minutes = 30u64;
    let mut nodes = 5usize;
    let mut seed = fastrand::u64(..);
    let mut witness = false;
    let mut keys = 8usize;
    let mut clients = 1usize;
    let mut report: Option<PathBuf> = None;
    let mut check_limit = 600u64;
    let mut key_lifetime = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value (see --help)"))
        };
        match flag.as_str() {
            "--minutes" => minutes = value()?.parse()?,
            "--nodes" => nodes = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--witness" => witness = true,
            "--keys" => keys = value()?.parse()?,
            "--clients" => clients = value()?.parse()?,
            "--report" => report = Some(PathBuf::from(value()?)),
            "--check-limit" => check_limit = value()?.parse()?,
            "--key-lifetime" => key_lifetime = value()?.parse()?,
            "--help" | "-h" => {
                println!("jepsen [--minutes M] [--nodes N] [--seed S] [--witness] [--keys K] [--clients C] [--report DIR] [--check-limit SECONDS] [--key-lifetime SECONDS]");
                return Ok(());
            }
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    if nodes < 3 {
        bail!("--nodes must be at least 3 (a majority must survive a fault)");
    }
    let faults: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| witness || *k != FaultKind::LoseDataNode)
        .collect();
    let name = format!(
        "long-{nodes}-nodes{}",
        if witness { "-witness" } else { "" }
    );
    let spec = RunSpec {
        report_dir: report.unwrap_or_else(|| {
            steep_repl_tests::paths::repo_root().join(format!("target/jepsen/{name}-{seed}"))
        }),
        name,
        seed,
        nodes,
        witness,
        duration: Duration::from_secs(minutes * 60),
        faults,
        keys,
        key_lifetime: Duration::from_secs(key_lifetime),
        clients_per_node: clients,
        check_limit: Duration::from_secs(check_limit),
    };
    eprintln!(
        "jepsen: seed {seed}, {nodes} nodes, {minutes} minutes; report in {}",
        spec.report_dir.display()
    );
    let image = steep_repl_tests::containers::node_image();
    steep_repl_tests::containers::docker::check_image(&image)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(&image, &spec))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if !summary.passed() {
        bail!("a checker failed; report in {}", spec.report_dir.display());
    }
    Ok(())
}

//! `cluster force-new`: disaster recovery on a stopped node (docs/operations.md,
//! "Recover after losing a majority for good"). The
//! store is opened directly, under its directory's lock, so a running
//! daemon (which holds it) makes the command refuse instead of racing it.
//! The recovery itself is `steep_repl_consensus::force_new`.

use crate::config::Config;
use crate::exit::Exit;
use serde_json::json;
use std::path::Path;
use steep_repl_consensus::force_new::{self, Survivor};

pub fn run(config: Option<&Path>, dry_run: bool, yes: bool, epoch_gap: u64, json: bool) -> Exit {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("steep-repl: {e}");
            return Exit::Config;
        }
    };
    let dir = config.raft.dir.clone();
    if !dir
        .join(steep_repl_consensus::store_identity::IDENTITY_FILE)
        .exists()
    {
        eprintln!(
            "steep-repl: {} holds no Raft store: this node belongs to no cluster, so there is nothing to recover",
            dir.display()
        );
        return Exit::Error;
    }
    let _lock = match steep_repl_actors::raft::node::lock_dir(&dir) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("steep-repl: {e}; `cluster force-new` runs with the daemon stopped (steep-repl stop, or stop the service)");
            return Exit::AlreadyRunning;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("steep-repl: cannot start a runtime: {e}");
            return Exit::Error;
        }
    };
    let survivor = match runtime.block_on(force_new::inspect(&dir)) {
        Ok(survivor) => survivor,
        Err(e) => {
            eprintln!("steep-repl: {}: {e}", dir.display());
            return Exit::Error;
        }
    };
    if survivor.cluster_id.is_none() {
        eprintln!(
            "steep-repl: the Raft store in {} belongs to no cluster: there is nothing to recover (`cluster init` creates a new cluster)",
            dir.display()
        );
        return Exit::Error;
    }
    if !yes {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&survivor).unwrap_or_default()
            );
        } else {
            print!("{}", describe(&survivor));
        }
        if dry_run {
            return Exit::Ok;
        }
        eprintln!(
            "steep-repl: nothing changed. `cluster force-new --yes` makes this node the only member of a new cluster \
             with what is shown above; run it on the survivor whose log goes furthest (compare `--dry-run` on each), \
             only when a majority of the cluster is lost for good"
        );
        return Exit::Usage;
    }
    let new_cluster_id = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match runtime.block_on(force_new::force_new(&dir, &new_cluster_id, epoch_gap, now)) {
        Ok(forced) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!(forced)).unwrap_or_default()
                );
            } else {
                println!(
                    "cluster {} replaced by cluster {}: {} is its only member, with {} keys recovered up to log index {}",
                    forced.old_cluster_id, forced.new_cluster_id, forced.node_id, forced.keys, forced.recovered_index
                );
                println!(
                    "coordinator epochs go on above {} (the highest known was {}); the old store is in {}",
                    forced.epoch_floor,
                    forced.old_epoch,
                    forced.backup.display()
                );
                println!("next: start the daemon, then on every other node stop the daemon, move its raft directory away, start it, and `steep-repl cluster add NODE_ID --grpc HOST:PORT` from here");
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {}: {e}", dir.display());
            Exit::Error
        }
    }
}

fn describe(s: &Survivor) -> String {
    let text = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    crate::inspect::table::pairs(&[
        ("cluster", text(s.cluster_id.clone())),
        ("node", text(s.node_id.clone())),
        ("raft id", s.raft_id.clone()),
        (
            "last log",
            format!(
                "index {}, term {}",
                text(s.last_log_index.map(|i| i.to_string())),
                text(s.last_log_term.map(|t| t.to_string()))
            ),
        ),
        (
            "known committed",
            text(s.committed_index.map(|i| i.to_string())),
        ),
        ("members", s.members.join(", ")),
        ("keys", s.keys.to_string()),
        (
            "coordinator",
            format!("{}, epoch {}", text(s.coordinator.clone()), s.epoch),
        ),
    ])
}

//! The command line (clap). Each subcommand maps to one module.

use crate::exit::EXIT_CODES_HELP;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use steep_repl_actors::node_status::NodeStatus;

#[derive(Debug, Parser)]
#[command(
    name = "steep-repl",
    version,
    about = "steep-repl: the node daemon of a PostgreSQL 18 replication cluster",
    long_about = "steep-repl keeps this node's entry in the steep_repl registry true, talks to its \
                  peers over gRPC with mutual TLS, to local tools over a Unix socket, and to load \
                  balancers over HTTP health probes.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Configuration file (default: ~/.config/steep/config.yaml, or
    /// /etc/steep/config.yaml for root when that one is absent)
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what the service runs)
    Run {
        /// Log at debug level
        #[arg(long)]
        debug: bool,
    },
    /// Register the daemon as a system service (or --user service) that starts at boot
    Install {
        /// Per-user service instead of a system one
        #[arg(long)]
        user: bool,
        /// Print the service definition instead of installing it
        #[arg(long)]
        print: bool,
        /// With --print: the service manager to print for (default: this machine's)
        #[arg(long, value_enum, requires = "print")]
        platform: Option<crate::service::Platform>,
        /// The account the system service runs as (Linux), created when missing;
        /// `root` runs it as root
        #[arg(long, value_name = "NAME", default_value = crate::service::DEFAULT_ACCOUNT, conflicts_with = "user")]
        account: String,
        /// With --print: the generic definition for the program at PATH, as the
        /// Debian package installs it (the configuration file is not read: default
        /// socket and directories, no node name)
        #[arg(long, value_name = "PATH", requires = "print")]
        binary: Option<PathBuf>,
    },
    /// Remove the service registration (configuration and data are kept)
    Uninstall {
        #[arg(long)]
        user: bool,
    },
    /// Start the installed service
    Start {
        #[arg(long)]
        user: bool,
    },
    /// Stop the installed service
    Stop {
        #[arg(long)]
        user: bool,
    },
    /// Restart the installed service
    Restart {
        #[arg(long)]
        user: bool,
    },
    /// Daemon state: pid, uptime, PostgreSQL, gRPC, node, cluster (over IPC)
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// Local health over IPC (exit 4 when unhealthy), or a peer's with --remote
    Health {
        /// A peer's health over gRPC (mTLS), e.g. db2:5433
        #[arg(long, value_name = "HOST:PORT")]
        remote: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// The node registry (over IPC)
    Nodes {
        /// Only nodes with these statuses (unknown, healthy, degraded, unreachable, offline)
        #[arg(long, value_name = "S,...", value_delimiter = ',')]
        status: Vec<NodeStatus>,
        #[command(flatten)]
        output: Output,
    },
    /// The audit trail, newest first (over IPC)
    Audit {
        /// Entries per page (0 to 1000)
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u64,
        /// Entries to skip (for the next page)
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: u64,
        /// Only entries at or after T: an RFC 3339 time, or a span back from now (90m, 2d)
        #[arg(long, value_name = "T", value_parser = crate::inspect::parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only these actions: names (node.registered) or prefixes (node.*)
        #[arg(long, value_name = "A,...", value_delimiter = ',')]
        action: Vec<String>,
        /// Print the result as one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Create the cluster CA and node certificates for mutual TLS
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell),
    /// e.g. `steep-repl completions bash > /etc/bash_completion.d/steep-repl`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command (steep-repl.1, steep-repl-cluster-add.1, ...)
    /// into DIR; packages ship them
    #[command(hide = true)]
    ManPages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Configuration commands
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The cluster (Raft membership): create it, add and remove members, show it.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        /// Print the result as one JSON document.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The replicated key/value state (coordinator_state), linearizable from any member.
    State {
        #[command(subcommand)]
        command: StateCommand,
        /// Print the result as one JSON document.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a new cluster whose only member is this node (its store must be empty).
    Init,
    /// Add a node: it joins as a learner and becomes a voter once caught up.
    Add {
        /// The node_id of the new member (its certificate must name it).
        node_id: String,
        /// Where its daemon answers gRPC.
        #[arg(long, value_name = "HOST:PORT")]
        grpc: String,
        /// Coordinator priority, 1..100 (higher preferred).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
        priority: u8,
        /// The node is a witness: it votes, has no PostgreSQL, is never coordinator.
        #[arg(long)]
        witness: bool,
    },
    /// Remove a member from the cluster.
    Remove { node_id: String },
    /// Members, leader, term, log and applied index as this node sees them.
    Status,
    /// Disaster recovery, with the daemon stopped: make this node the only
    /// member of a new cluster with everything its Raft store holds, after a
    /// majority of the old cluster is lost for good. The other nodes are
    /// then wiped and added again. Without --yes it only shows the store.
    ForceNew {
        /// Show what the store holds (to choose the survivor whose log goes
        /// furthest) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do it (the old store is copied aside first).
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// The new cluster's coordinator epochs start this far above the
        /// highest epoch this node knew (the lost nodes may have granted
        /// some it never heard of).
        #[arg(long, default_value_t = steep_repl_consensus::force_new::DEFAULT_EPOCH_GAP)]
        epoch_gap: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Read one key (linearizable unless --local).
    Get {
        key: String,
        /// Answer from this node's applied state, possibly stale, without the leader.
        #[arg(long)]
        local: bool,
    },
    /// List the keys under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        local: bool,
    },
    /// Set a key. VALUE is JSON when it parses as JSON, otherwise a string.
    Set {
        key: String,
        value: String,
        /// Makes a retry apply once (use the same id when retrying).
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Set a key only if it holds EXPECTED ("absent": the key must not exist).
    Cas {
        key: String,
        expected: String,
        value: String,
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
}

/// How `status`, `health` and `nodes` show their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Output {
    /// Print the result as one JSON document
    #[arg(long)]
    pub json: bool,
    /// Refresh in place every SECS seconds (default 2) until Ctrl-C
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create the cluster CA (ca.crt, ca.key); never overwrites
    Init {
        /// Folder for the files (default: tls/ beside the configuration file)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Name written into the CA certificate
        #[arg(long, default_value = "steep-repl")]
        cluster_name: String,
        /// Validity in days
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Create NODE_ID.crt and NODE_ID.key signed by the cluster CA (server and client use)
    Issue {
        /// The node_id the certificate speaks for (its CN)
        node_id: String,
        /// A name or address peers use to reach this node (repeatable); every
        /// host used in other nodes' grpc.peers must be listed
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Folder holding ca.crt/ca.key, where the node files are written
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Validity in days
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked)
    Check,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_takes_an_optional_interval() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Status { output }
            | Command::Nodes { output, .. }
            | Command::Health { output, .. } => output,
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(parse(&["steep-repl", "status"]).watch, None);
        assert_eq!(parse(&["steep-repl", "status", "--watch"]).watch, Some(2));
        assert_eq!(
            parse(&["steep-repl", "nodes", "--watch", "5", "--json"]),
            Output {
                json: true,
                watch: Some(5)
            }
        );
        assert!(Cli::try_parse_from(["steep-repl", "health", "--watch", "0"]).is_err());
    }

    #[test]
    fn lists_are_comma_separated() {
        let cli =
            Cli::try_parse_from(["steep-repl", "nodes", "--status", "healthy,degraded"]).unwrap();
        assert!(
            matches!(cli.command, Command::Nodes { status, .. } if status == [NodeStatus::Healthy, NodeStatus::Degraded])
        );
        let cli = Cli::try_parse_from([
            "steep-repl",
            "audit",
            "--action",
            "node.*,daemon.started",
            "--since",
            "1h",
        ])
        .unwrap();
        let Command::Audit {
            action,
            since,
            limit,
            ..
        } = cli.command
        else {
            panic!("not audit")
        };
        assert_eq!((action.len(), limit), (2, 50));
        assert!(since.is_some_and(|t| t < Utc::now()));
        assert!(Cli::try_parse_from(["steep-repl", "audit", "--since", "yesterday-ish"]).is_err());
    }

    #[test]
    fn config_is_accepted_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["steep-repl", "--config", "/x.yaml", "run"]).unwrap();
        let b =
            Cli::try_parse_from(["steep-repl", "run", "--config", "/x.yaml", "--debug"]).unwrap();
        assert_eq!(a.config, b.config);
        assert!(matches!(b.command, Command::Run { debug: true }));
    }
}

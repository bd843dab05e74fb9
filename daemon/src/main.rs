//! steep-repl: the node daemon and its command line.

mod cli;
mod cluster_cmd;
mod config;
mod docs_cmd;
mod exit;
mod force_new_cmd;
mod inspect;
mod ipc_client;
mod lock;
mod logging;
mod remote_health;
mod run;
mod service;
mod service_cmd;
mod terminal;
mod tls_cmd;

use clap::Parser;
use cli::{Cli, ClusterCommand, Command, ConfigCommand, StateCommand, TlsCommand};
use exit::Exit;
use std::process::ExitCode;
use steep_repl_actors::ipc::protocol::{
    ClusterAddParams, Method, NoParams, NodeIdParams, ReadConsistency, StateCasParams,
    StateDeleteParams, StateGetParams, StateListParams, StateSetParams,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide rustls provider (ring) for every TLS user: sqlx's
    // connection to PostgreSQL and the peer channels.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exit = match cli.command {
        Command::Run { debug } => {
            // Under the Windows SCM the service handshake comes first.
            #[cfg(windows)]
            if let Some(exit) = service::windows::try_run_as_service(cli.config.clone(), debug) {
                return exit.into();
            }
            run::run(cli.config.as_deref(), debug)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(cli.config.as_deref()),
        Command::Status { output } => {
            inspect::status(cli.config.as_deref(), output.json, output.watch)
        }
        Command::Health { remote, output } => inspect::health(
            cli.config.as_deref(),
            remote.as_deref(),
            output.json,
            output.watch,
        ),
        Command::Nodes { status, output } => {
            inspect::nodes(cli.config.as_deref(), &status, output.json, output.watch)
        }
        Command::Cluster { command, json } => {
            let method = match command {
                ClusterCommand::Init => Method::ClusterInit(NoParams {}),
                ClusterCommand::Add {
                    node_id,
                    grpc,
                    priority,
                    witness,
                } => Method::ClusterAdd(ClusterAddParams {
                    node_id,
                    grpc,
                    priority: Some(priority.into()),
                    witness,
                }),
                ClusterCommand::Remove { node_id } => {
                    Method::ClusterRemove(NodeIdParams { node_id })
                }
                ClusterCommand::Status => Method::ClusterStatus(NoParams {}),
                ClusterCommand::ForceNew {
                    dry_run,
                    yes,
                    epoch_gap,
                } => {
                    return force_new_cmd::run(
                        cli.config.as_deref(),
                        dry_run,
                        yes,
                        epoch_gap,
                        json,
                    )
                    .into();
                }
            };
            cluster_cmd::call(cli.config.as_deref(), &method, json)
        }
        Command::State { command, json } => {
            let consistency = |local: bool| {
                if local {
                    ReadConsistency::Local
                } else {
                    ReadConsistency::Linearizable
                }
            };
            let method = match command {
                StateCommand::Get { key, local } => Method::StateGet(StateGetParams {
                    key,
                    consistency: consistency(local),
                }),
                StateCommand::List { prefix, local } => Method::StateList(StateListParams {
                    prefix,
                    consistency: consistency(local),
                }),
                StateCommand::Set {
                    key,
                    value,
                    request_id,
                } => Method::StateSet(StateSetParams {
                    key,
                    value: cluster_cmd::parse_value(&value),
                    request_id,
                }),
                StateCommand::Cas {
                    key,
                    expected,
                    value,
                    request_id,
                } => {
                    let expected = if expected == "absent" {
                        serde_json::Value::Null
                    } else {
                        cluster_cmd::parse_value(&expected)
                    };
                    Method::StateCas(StateCasParams {
                        key,
                        expected,
                        value: cluster_cmd::parse_value(&value),
                        request_id,
                    })
                }
                StateCommand::Delete { key, request_id } => {
                    Method::StateDelete(StateDeleteParams { key, request_id })
                }
            };
            cluster_cmd::call(cli.config.as_deref(), &method, json)
        }
        Command::Audit {
            limit,
            offset,
            since,
            action,
            json,
        } => inspect::audit(cli.config.as_deref(), limit, offset, since, &action, json),
        Command::Tls {
            command:
                TlsCommand::Init {
                    dir,
                    cluster_name,
                    days,
                },
        } => {
            let dir = dir.unwrap_or_else(|| tls_cmd::default_dir(cli.config.as_deref()));
            tls_cmd::init(&dir, &cluster_name, days)
        }
        Command::Tls {
            command:
                TlsCommand::Issue {
                    node_id,
                    hosts,
                    dir,
                    days,
                },
        } => {
            let dir = dir.unwrap_or_else(|| tls_cmd::default_dir(cli.config.as_deref()));
            tls_cmd::issue(&dir, &node_id, &hosts, days)
        }
        Command::Install {
            user,
            print,
            platform,
            account,
            binary,
        } => match binary {
            Some(binary) => service_cmd::print_generic(&binary, platform, &account),
            None => service_cmd::install(cli.config.as_deref(), user, print, platform, &account),
        },
        Command::Completions { shell } => docs_cmd::completions(shell),
        Command::ManPages { dir } => docs_cmd::man_pages(&dir),
        Command::Uninstall { user } => service_cmd::uninstall(user),
        Command::Start { user } => service_cmd::drive("start", user),
        Command::Stop { user } => service_cmd::drive("stop", user),
        Command::Restart { user } => service_cmd::drive("restart", user),
    };
    exit.into()
}

/// `config check`: the effective configuration with secrets masked.
fn config_check(path: Option<&std::path::Path>) -> Exit {
    match config::Config::load(path) {
        Ok(config) => {
            print!("{}", config.to_masked_yaml());
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            eprintln!("configuration OK ({})", config.source.display());
            Exit::Ok
        }
        Err(e) => {
            eprintln!("steep-repl: {e}");
            Exit::Config
        }
    }
}

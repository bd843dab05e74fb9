//! steep-repl: the node daemon and its command line.

mod certs;
mod cli;
mod config;
mod exit;
mod inspect;
mod ipc_client;
mod lock;
mod logging;
mod remote_health;
mod run;
mod service;
mod service_cmd;
mod tls_cmd;

use clap::Parser;
use cli::{Cli, Command, ConfigCommand, TlsCommand};
use exit::Exit;
use std::process::ExitCode;

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
        } => service_cmd::install(cli.config.as_deref(), user, print, platform),
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

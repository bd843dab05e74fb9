//! steep-repl: the node daemon and its command line.

// Used by the `tls` commands (wired with the peers work).
#[allow(dead_code)]
mod certs;
mod cli;
mod config;
mod exit;
mod lock;
mod logging;
mod run;
mod service;
mod service_cmd;

use clap::Parser;
use cli::{Cli, Command, ConfigCommand};
use exit::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Run { debug } => run::run(cli.config.as_deref(), debug),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(cli.config.as_deref()),
        Command::Install { user, print } => {
            service_cmd::install(cli.config.as_deref(), user, print)
        }
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

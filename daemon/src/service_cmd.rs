//! `install`, `uninstall`, `start`, `stop`, `restart`: the service commands
//! of the CLI, with one-line actionable errors.

use crate::config::{self, Config};
use crate::exit::Exit;
use crate::service::{self, Definition, ServiceError};
use std::path::{Path, PathBuf};

/// The configuration file a service uses: `--config` made absolute, else
/// the per-user or the system default.
fn service_config_path(explicit: Option<&Path>, user: bool) -> PathBuf {
    match explicit {
        Some(path) => service::absolute(path),
        None if user => config::user_config_path(),
        None => config::system_config_path(),
    }
}

fn fail(e: ServiceError) -> Exit {
    eprintln!("steep-repl: {e}");
    match e {
        ServiceError::NotInstalled(_) => Exit::NotRunning,
        _ => Exit::Error,
    }
}

pub fn install(
    explicit: Option<&Path>,
    user: bool,
    print: bool,
    platform: Option<service::Platform>,
    account: &str,
) -> Exit {
    let config_path = service_config_path(explicit, user);
    let binary = match service::own_binary() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut wrote_config = false;
    if !config_path.exists() && !print {
        if !user && !is_admin() {
            return fail(ServiceError::NeedsRoot { verb: "install" });
        }
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let text = service::default_config_text(&service::generated_node_id(), dir);
        match service::write_default_config(&config_path, &text) {
            Ok(wrote) => wrote_config = wrote,
            Err(e) => return fail(e),
        }
    }
    // The definition names the node and keeps the socket reachable; when the
    // file cannot be loaded yet (e.g. certificates not created), fall back to
    // the defaults rather than refusing to install.
    let loaded = Config::load(Some(&config_path));
    let (node_id, ipc_path, writable) = match &loaded {
        Ok(c) => (c.node_id.clone(), c.ipc.path.clone(), writable_dirs(c)),
        // No node name in the description then: the generic unit, the one
        // `--print --binary` shows and the package installs.
        Err(_) => (
            String::new(),
            PathBuf::from(config::DEFAULT_IPC_PATH),
            Vec::new(),
        ),
    };
    // Only a system service on Linux changes account; root keeps root.
    let account = (!user && cfg!(target_os = "linux") && account != "root").then_some(account);
    let def = Definition {
        binary: &binary,
        config: &config_path,
        node_id: &node_id,
        ipc_path: &ipc_path,
        user,
        account,
        writable: &writable,
    };
    if print {
        let platform = platform.unwrap_or_else(service::Platform::native);
        print!("{}", service::definition_for(platform, &def));
        return Exit::Ok;
    }
    #[cfg(target_os = "linux")]
    if let Some(account) = account {
        if let Err(e) = prepare_account(account, &config_path, loaded.as_ref().ok()) {
            eprintln!("steep-repl: {e}");
            return Exit::Error;
        }
    }
    if let Err(e) = service::install(&def) {
        return fail(e);
    }
    let scope = if user { " --user" } else { "" };
    if wrote_config {
        println!(
            "wrote a default configuration to {} (node_id {node_id})",
            config_path.display()
        );
    }
    println!("installed the steep-repl service{scope}: it starts at boot and restarts on failure");
    if let Err(e) = loaded {
        println!("note: the configuration does not load yet: {e}");
        println!(
            "      fix it (steep-repl config check --config {}), then: steep-repl start{scope}",
            config_path.display()
        );
    } else {
        println!("start it now with: steep-repl start{scope}");
    }
    Exit::Ok
}

/// `install --print --binary PATH`: the system definition for the program
/// at PATH with the system configuration file and every default (socket in
/// /run/steep-repl, state in /var/lib/steep-repl), whatever this machine's
/// configuration says: what a package installs for every node.
pub fn print_generic(binary: &Path, platform: Option<service::Platform>, account: &str) -> Exit {
    let config_path = config::system_config_path();
    let account = (cfg!(target_os = "linux") && account != "root").then_some(account);
    let def = Definition {
        binary,
        config: &config_path,
        node_id: "",
        ipc_path: Path::new(config::DEFAULT_IPC_PATH),
        user: false,
        account,
        writable: &[],
    };
    let platform = platform.unwrap_or_else(service::Platform::native);
    print!("{}", service::definition_for(platform, &def));
    Exit::Ok
}

/// The directories the daemon writes to: the spool's, the Raft log's and
/// the socket's.
fn writable_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        config.audit.spool_path.parent(),
        Some(config.raft.dir.as_path()),
        config.ipc.path.parent(),
    ]
    .into_iter()
    .flatten()
    .filter(|d| !d.as_os_str().is_empty())
    .map(Path::to_path_buf)
    .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Creates the service account when missing and lets it read the
/// configuration and the TLS files it names (and pass through their
/// directories), saying what it changed.
#[cfg(target_os = "linux")]
fn prepare_account(
    account: &str,
    config_path: &Path,
    config: Option<&Config>,
) -> Result<(), service::account::AccountError> {
    use service::account;
    let (uid, gid, created) = account::ensure(account)?;
    if created {
        println!("created the system account {account} (the service runs as it; add DBAs to its group to use the CLI)");
    }
    let mut files = vec![config_path.to_path_buf()];
    if let Some(c) = config {
        let tls = &c.grpc.tls;
        files.extend(
            [&tls.ca_file, &tls.cert_file, &tls.key_file]
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    // Directories are opened only inside the configuration's own folder
    // (`/etc/steep`, its `tls/`): a home directory or `/root` on the way is
    // not ours to open, so the operator is told instead.
    let own_dir = config_path.parent().unwrap_or(Path::new("/"));
    for file in files {
        let mut parents: Vec<&Path> = file.ancestors().skip(1).collect();
        parents.reverse();
        for path in parents.into_iter().chain([file.as_path()]) {
            let ours = path == file.as_path() || path.starts_with(own_dir);
            if ours {
                if let Some(change) = account::grant_read(path, account, uid, gid)? {
                    println!("{change}");
                }
            } else if !account::can_read(path, uid, gid, &[]) {
                println!(
                    "note: the account {account} cannot reach {}: move the file or open the directory to it",
                    file.display()
                );
                break;
            }
        }
    }
    Ok(())
}

pub fn uninstall(user: bool) -> Exit {
    match service::uninstall(user) {
        Ok(()) => {
            println!("uninstalled the steep-repl service (the configuration and data are kept)");
            Exit::Ok
        }
        Err(e) => fail(e),
    }
}

pub fn drive(action: &str, user: bool) -> Exit {
    let result = match action {
        "start" => service::start(user),
        "stop" => service::stop(user),
        _ => service::restart(user),
    };
    match result {
        Ok(()) => {
            println!(
                "steep-repl service: {action} requested ({})",
                service::status(user)
            );
            Exit::Ok
        }
        Err(e) => {
            if service::status(user) == service::ServiceState::NotInstalled {
                let scope = if user { " --user" } else { "" };
                eprintln!("steep-repl: the service is not installed: run `steep-repl install{scope}` first");
                return Exit::NotRunning;
            }
            fail(e)
        }
    }
}

fn is_admin() -> bool {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        true
    }
}

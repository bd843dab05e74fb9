//! Installing the daemon as a service and driving it: systemd on Linux,
//! launchd on macOS, the Service Control Manager on Windows, through the
//! `service-manager` crate with our own service definitions.
//!
//! `install` writes a default configuration when there is none (with a
//! generated node_id, never overwriting one), registers the service to start
//! at boot and restart on failure, running `steep-repl run --config <abs>`.

#[cfg(target_os = "linux")]
pub mod account;
pub mod launchd;
#[cfg(target_os = "linux")]
pub mod notify;
pub mod systemd;
#[cfg(windows)]
pub mod windows;

use service_manager::{
    RestartPolicy, ServiceInstallCtx, ServiceLabel, ServiceLevel, ServiceManager, ServiceStartCtx,
    ServiceStatus, ServiceStatusCtx, ServiceStopCtx, ServiceUninstallCtx,
};
use std::path::{Path, PathBuf};

/// The service's name: `steep-repl.service` for systemd, `io.steep.repl`
/// for launchd, `steep-repl` for the SCM.
pub const LABEL: &str = "io.steep.repl";

/// The account the system service runs as (Linux) unless `install
/// --account` says otherwise; `install` creates it when missing.
pub const DEFAULT_ACCOUNT: &str = "steep-repl";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("installing the system service needs administrator rights: run `sudo steep-repl {verb}` (or `steep-repl {verb} --user` for a per-user service)")]
    NeedsRoot { verb: &'static str },
    #[error("no supported service manager found on this machine ({0})")]
    NoManager(String),
    #[error("the steep-repl service is not installed{0}")]
    NotInstalled(String),
    #[error("cannot find this program's own path: {0}")]
    OwnPath(std::io::Error),
    #[error("cannot write the default configuration {path}: {source}")]
    WriteConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{action} failed: {source}")]
    Manager {
        action: &'static str,
        source: std::io::Error,
    },
}

/// What the service manager says about our service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    NotInstalled,
    Running,
    Stopped,
    Unknown(String),
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceState::NotInstalled => f.write_str("not installed"),
            ServiceState::Running => f.write_str("running"),
            ServiceState::Stopped => f.write_str("stopped"),
            ServiceState::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

fn label() -> ServiceLabel {
    // A constant that parses: qualifier.organization.application.
    LABEL
        .parse()
        .unwrap_or_else(|_| unreachable!("LABEL is a valid service label"))
}

fn level(user: bool) -> ServiceLevel {
    if user {
        ServiceLevel::User
    } else {
        ServiceLevel::System
    }
}

fn manager(user: bool) -> Result<Box<dyn ServiceManager>, ServiceError> {
    let mut manager =
        <dyn ServiceManager>::native().map_err(|e| ServiceError::NoManager(e.to_string()))?;
    manager
        .set_level(level(user))
        .map_err(|e| ServiceError::NoManager(format!("{e} (try without --user)")))?;
    Ok(manager)
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

/// This program's absolute path, for ExecStart.
pub fn own_binary() -> Result<PathBuf, ServiceError> {
    let exe = std::env::current_exe().map_err(ServiceError::OwnPath)?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

/// Makes a config path absolute (the service runs from another directory).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Inputs of a service definition.
pub struct Definition<'a> {
    pub binary: &'a Path,
    pub config: &'a Path,
    pub node_id: &'a str,
    pub ipc_path: &'a Path,
    /// A per-user service (`systemctl --user`).
    pub user: bool,
    /// The account a system service runs as; `None` runs it as root.
    pub account: Option<&'a str>,
    /// Directories the daemon writes to (the spool's, the Raft log's, the
    /// socket's); those outside its own state and runtime directories are
    /// opened up with `ReadWritePaths=` in a systemd unit.
    pub writable: &'a [PathBuf],
}

/// A service manager whose definition `install --print` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Systemd,
    Launchd,
    Windows,
}

impl Platform {
    /// This machine's service manager.
    pub fn native() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Systemd
        }
    }
}

/// The text `install` registers on this machine.
pub fn definition(def: &Definition<'_>) -> String {
    definition_for(Platform::native(), def)
}

/// The definition for `platform`: a systemd unit, a launchd plist, or the
/// Windows service command.
pub fn definition_for(platform: Platform, def: &Definition<'_>) -> String {
    match platform {
        Platform::Launchd => {
            let logs = def.config.parent().unwrap_or(Path::new("/tmp"));
            launchd::plist(def.binary, def.config, logs)
        }
        Platform::Windows => format!(
            "Windows service \"steep-repl\" (automatic start, restart on failure):\n  \"{}\" run --config \"{}\"\n",
            def.binary.display(),
            def.config.display()
        ),
        Platform::Systemd => systemd::unit(def),
    }
}

/// Registers the service (start at boot, restart on failure).
pub fn install(def: &Definition<'_>) -> Result<(), ServiceError> {
    if !def.user && !is_admin() {
        return Err(ServiceError::NeedsRoot { verb: "install" });
    }
    let ctx = ServiceInstallCtx {
        label: label(),
        program: def.binary.to_path_buf(),
        args: vec![
            "run".into(),
            "--config".into(),
            def.config.as_os_str().to_owned(),
        ],
        contents: (!cfg!(windows)).then(|| definition(def)),
        username: None,
        working_directory: None,
        environment: None,
        autostart: true,
        restart_policy: RestartPolicy::OnFailure {
            delay_secs: Some(2),
            max_retries: None,
            reset_after_secs: None,
        },
    };
    manager(def.user)?
        .install(ctx)
        .map_err(|source| ServiceError::Manager {
            action: "installing the service",
            source,
        })
}

pub fn uninstall(user: bool) -> Result<(), ServiceError> {
    if !user && !is_admin() {
        return Err(ServiceError::NeedsRoot { verb: "uninstall" });
    }
    if status(user) == ServiceState::NotInstalled {
        return Err(ServiceError::NotInstalled(String::new()));
    }
    manager(user)?
        .uninstall(ServiceUninstallCtx { label: label() })
        .map_err(|source| ServiceError::Manager {
            action: "uninstalling the service",
            source,
        })
}

pub fn start(user: bool) -> Result<(), ServiceError> {
    manager(user)?
        .start(ServiceStartCtx { label: label() })
        .map_err(|source| ServiceError::Manager {
            action: "starting the service",
            source,
        })
}

pub fn stop(user: bool) -> Result<(), ServiceError> {
    manager(user)?
        .stop(ServiceStopCtx { label: label() })
        .map_err(|source| ServiceError::Manager {
            action: "stopping the service",
            source,
        })
}

pub fn restart(user: bool) -> Result<(), ServiceError> {
    stop(user)?;
    start(user)
}

/// Where our systemd unit lives (user units follow XDG_CONFIG_HOME, as
/// service-manager does).
fn systemd_unit_path(user: bool) -> Option<PathBuf> {
    if !user {
        return Some(PathBuf::from("/etc/systemd/system/steep-repl.service"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("systemd/user/steep-repl.service"))
}

/// The service manager's view; never fails (an unknown state says why).
pub fn status(user: bool) -> ServiceState {
    // systemd: the unit file tells whether it is installed, even where no
    // systemd runs to ask (containers, CI); the manager tells the rest.
    if cfg!(target_os = "linux") {
        if let Some(unit) = systemd_unit_path(user) {
            if !unit.exists() {
                return ServiceState::NotInstalled;
            }
        }
    }
    let manager = match manager(user) {
        Ok(m) => m,
        Err(e) => return ServiceState::Unknown(e.to_string()),
    };
    match manager.status(ServiceStatusCtx { label: label() }) {
        Ok(ServiceStatus::NotInstalled) => ServiceState::NotInstalled,
        Ok(ServiceStatus::Running) => ServiceState::Running,
        Ok(ServiceStatus::Stopped(_)) => ServiceState::Stopped,
        Err(e) => ServiceState::Unknown(e.to_string().lines().next().unwrap_or("").to_string()),
    }
}

/// A starting configuration for a node that has none: a generated node_id,
/// mTLS certificates expected beside it (`steep-repl tls init/issue`).
pub fn default_config_text(node_id: &str, config_dir: &Path) -> String {
    let tls = config_dir.join("tls");
    format!(
        "# steep-repl configuration, written by `steep-repl install`.\n\
# Every key and its default: docs/configuration.md. Check it with `steep-repl config check`.\n\
repl:\n\
  node_id: {node_id}\n\
  priority: 50\n\
  postgresql:\n\
    host: localhost\n\
    port: 5432\n\
    database: postgres\n\
  grpc:\n\
    port: 5433\n\
    peers: []          # other nodes, as host:port\n\
    tls:\n\
      # Create these with: steep-repl tls init --dir {tls}; steep-repl tls issue {node_id} --host <this host> --dir {tls}\n\
      ca_file: {ca}\n\
      cert_file: {cert}\n\
      key_file: {key}\n\
  http:\n\
    port: 8080\n",
        tls = tls.display(),
        ca = tls.join("ca.crt").display(),
        cert = tls.join(format!("{node_id}.crt")).display(),
        key = tls.join(format!("{node_id}.key")).display(),
    )
}

/// A node_id for a new installation: the host name, made safe, plus a
/// short random suffix so that cloned machines do not collide.
pub fn generated_node_id() -> String {
    let host = hostname();
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let safe = safe.trim_matches('-');
    // No 0/o/1/l: the suffix is read and typed by people.
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let suffix: String = (0..4)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    if safe.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{safe}-{suffix}")
    }
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_default()
    }
}

/// Writes `text` to `path` unless a file is already there (never
/// overwrites); creates the folder. Returns whether it wrote.
pub fn write_default_config(path: &Path, text: &str) -> Result<bool, ServiceError> {
    let err = |source| ServiceError::WriteConfig {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    match options.open(path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(err)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_parses_to_the_unit_name_steep_repl() {
        assert_eq!(label().to_script_name(), "steep-repl");
    }

    #[test]
    fn generated_node_ids_are_valid_and_distinct() {
        let a = generated_node_id();
        let b = generated_node_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.len() <= 63 && !id.is_empty(), "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn the_default_config_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steep/config.yaml");
        assert!(write_default_config(&path, "first").unwrap());
        assert!(!write_default_config(&path, "second").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
    }
}

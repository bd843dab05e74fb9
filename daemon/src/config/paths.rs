//! Where things are on this machine: the default and system config file
//! paths, the state directory for the audit spool and the Raft log, and the machine facts the
//! defaults depend on (`Host`: environment, root or not, home, hostname, OS
//! user, working directory). Loading takes a `Host` so tests can describe
//! any machine without touching the real one. Platform code stays thin and
//! behind `cfg`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// The facts about the running process that defaults depend on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Host {
    /// The environment (only UTF-8 values).
    pub env: HashMap<String, String>,
    /// Effective uid 0 (Unix). Decides the system-wide config and state paths.
    pub is_root: bool,
    /// The user's home directory when `HOME` (or `USERPROFILE`) is unset.
    pub home_fallback: Option<PathBuf>,
    /// The machine's host name, the default `advertise_host`.
    pub hostname: Option<String>,
    /// The OS user name, the default PostgreSQL user (as libpq does).
    pub os_user: Option<String>,
    /// Relative paths from the environment are taken from here.
    pub cwd: PathBuf,
}

impl Host {
    /// This process, with `env` as its environment.
    pub fn current(env: HashMap<String, String>) -> Host {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let mut host = Host {
            env,
            is_root: false,
            home_fallback: std::env::home_dir(),
            hostname: None,
            os_user: None,
            cwd,
        };
        platform::fill(&mut host);
        host
    }

    /// An environment variable, treating an empty value as unset.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An absolute directory from an environment variable (XDG says
    /// relative values are to be ignored).
    fn abs_dir_var(&self, name: &str) -> Option<PathBuf> {
        self.var(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    pub fn home(&self) -> Option<PathBuf> {
        let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
        self.abs_dir_var(var).or_else(|| self.home_fallback.clone())
    }
}

/// `path` made absolute against `base`, without touching the filesystem
/// (symlinks stay as written) and without `.` components.
pub(crate) fn absolute(path: &Path, base: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The system-wide config file: what a system service runs with.
pub fn system_config_path() -> PathBuf {
    system_config_path_for(&Host::current(HashMap::new()))
}

/// The config file used without `--config`: the user's file; for root, the
/// system file when the user's does not exist.
pub fn default_config_path() -> PathBuf {
    let env = std::env::vars()
        .filter(|(k, _)| platform::PATH_VARS.contains(&k.as_str()))
        .collect();
    default_config_candidates(&Host::current(env)).0
}

/// The per-user config file (what a `--user` service runs with), whoever
/// runs the command; falls back to the system file only where the platform
/// has no user folder.
pub fn user_config_path() -> PathBuf {
    let env = std::env::vars()
        .filter(|(k, _)| platform::PATH_VARS.contains(&k.as_str()))
        .collect();
    let host = Host::current(env);
    match platform::user_config_dir(&host) {
        Some(dir) => dir.join("steep").join("config.yaml"),
        None => system_config_path_for(&host),
    }
}

/// The chosen default path, and the paths looked at before it (for the
/// "not found" message).
pub(crate) fn default_config_candidates(host: &Host) -> (PathBuf, Vec<PathBuf>) {
    let system = system_config_path_for(host);
    match platform::user_config_dir(host) {
        None => (system, Vec::new()),
        Some(dir) => {
            let user = dir.join("steep").join("config.yaml");
            if host.is_root && !user.exists() {
                (system, vec![user])
            } else {
                (user, Vec::new())
            }
        }
    }
}

pub(crate) fn system_config_path_for(host: &Host) -> PathBuf {
    platform::system_config_dir(host)
        .join("steep")
        .join("config.yaml")
}

/// Whose daemon a configuration describes, which decides where its files
/// go by default: the system service's (root, or anyone reading the system
/// config file: the service account, and an operator's CLI looking for the
/// service's socket) or one user's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    System,
    User,
}

impl Layout {
    /// The layout of the configuration at `source`. Decided by the file,
    /// not only by who runs: the service account and an operator both read
    /// `/etc/steep/config.yaml` and must agree on where the socket is.
    pub(crate) fn of(host: &Host, source: &Path) -> Layout {
        if host.is_root || source == system_config_path_for(host) {
            Layout::System
        } else {
            Layout::User
        }
    }
}

/// The daemon's own state directory, `<state dir>/steep-repl`, where the
/// audit spool and the Raft log live by default. `Err` says why no state
/// directory can be chosen here.
fn daemon_state_dir(host: &Host, layout: Layout) -> Result<PathBuf, String> {
    Ok(platform::state_dir(host, layout)?.join("steep-repl"))
}

/// The default audit spool: `<state dir>/steep-repl/audit-<node_id>.spool`.
pub(crate) fn default_spool_path(
    host: &Host,
    layout: Layout,
    node_id: &str,
) -> Result<PathBuf, String> {
    Ok(daemon_state_dir(host, layout)?.join(format!("audit-{node_id}.spool")))
}

/// The default Raft directory, beside the audit spool:
/// `<state dir>/steep-repl/raft-<node_id>`. Named after the node, as the
/// spool is, so several daemons on one machine never share a log.
pub(crate) fn default_raft_dir(
    host: &Host,
    layout: Layout,
    node_id: &str,
) -> Result<PathBuf, String> {
    Ok(daemon_state_dir(host, layout)?.join(format!("raft-{node_id}")))
}

/// The default IPC socket: in a directory only the daemon's account can
/// write to, never in a world-writable one such as `/tmp` (where anyone
/// could bind the path first or plant the lock file). The system service's
/// is `/run/steep-repl/steep-repl.sock` (systemd's `RuntimeDirectory=`
/// makes the directory, owned by the service account); a user's daemon's
/// is beside its state, `<state dir>/steep-repl/steep-repl.sock`.
pub(crate) fn default_ipc_path(host: &Host, layout: Layout) -> Result<PathBuf, String> {
    match layout {
        Layout::System => Ok(PathBuf::from(super::DEFAULT_IPC_PATH)),
        Layout::User if cfg!(windows) => Ok(PathBuf::from(super::DEFAULT_IPC_PATH)),
        Layout::User => Ok(daemon_state_dir(host, layout)?.join("steep-repl.sock")),
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::{Host, Layout};
    use std::path::PathBuf;

    pub const PATH_VARS: &[&str] = &["HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"];

    pub fn fill(host: &mut Host) {
        super::unix::fill(host);
    }

    pub fn user_config_dir(host: &Host) -> Option<PathBuf> {
        host.abs_dir_var("XDG_CONFIG_HOME")
            .or_else(|| host.home().map(|h| h.join(".config")))
    }

    pub fn system_config_dir(_host: &Host) -> PathBuf {
        PathBuf::from("/etc")
    }

    pub fn state_dir(host: &Host, layout: Layout) -> Result<PathBuf, String> {
        if layout == Layout::System {
            return Ok(PathBuf::from("/var/lib"));
        }
        host.abs_dir_var("XDG_STATE_HOME")
            .or_else(|| host.home().map(|h| h.join(".local").join("state")))
            .ok_or_else(|| "neither XDG_STATE_HOME nor HOME is set".to_string())
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::{Host, Layout};
    use std::path::PathBuf;

    pub const PATH_VARS: &[&str] = &["HOME"];

    pub fn fill(host: &mut Host) {
        super::unix::fill(host);
    }

    pub fn user_config_dir(host: &Host) -> Option<PathBuf> {
        host.home()
            .map(|h| h.join("Library").join("Application Support"))
    }

    pub fn system_config_dir(_host: &Host) -> PathBuf {
        PathBuf::from("/Library/Application Support")
    }

    pub fn state_dir(host: &Host, layout: Layout) -> Result<PathBuf, String> {
        if layout == Layout::System {
            return Ok(PathBuf::from("/Library/Application Support"));
        }
        user_config_dir(host).ok_or_else(|| "HOME is not set".to_string())
    }
}

#[cfg(windows)]
mod platform {
    use super::{Host, Layout};
    use std::path::PathBuf;

    pub const PATH_VARS: &[&str] = &["USERPROFILE", "APPDATA", "LOCALAPPDATA", "PROGRAMDATA"];

    pub fn fill(host: &mut Host) {
        host.hostname = host.var("COMPUTERNAME").map(str::to_string);
        host.os_user = host.var("USERNAME").map(str::to_string);
    }

    pub fn user_config_dir(host: &Host) -> Option<PathBuf> {
        host.abs_dir_var("APPDATA")
            .or_else(|| host.home().map(|h| h.join("AppData").join("Roaming")))
    }

    pub fn system_config_dir(host: &Host) -> PathBuf {
        host.abs_dir_var("PROGRAMDATA")
            .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
    }

    pub fn state_dir(host: &Host, _layout: Layout) -> Result<PathBuf, String> {
        host.abs_dir_var("LOCALAPPDATA")
            .or_else(|| host.home().map(|h| h.join("AppData").join("Local")))
            .ok_or_else(|| "neither LOCALAPPDATA nor USERPROFILE is set".to_string())
    }
}

#[cfg(unix)]
mod unix {
    use super::Host;
    use nix::unistd::{geteuid, gethostname, User};

    pub fn fill(host: &mut Host) {
        let uid = geteuid();
        host.is_root = uid.is_root();
        host.hostname = gethostname().ok().and_then(|h| h.into_string().ok());
        // libpq asks the password database; containers running under an
        // arbitrary uid have no entry there, so fall back to $USER.
        host.os_user = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| host.var("USER").map(str::to_string));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(vars: &[(&str, &str)], is_root: bool) -> Host {
        Host {
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            is_root,
            home_fallback: None,
            hostname: Some("box".into()),
            os_user: Some("me".into()),
            cwd: PathBuf::from("/work"),
        }
    }

    /// The layout of a user's own config file on `h`.
    fn layout(h: &Host) -> Layout {
        Layout::of(h, Path::new("/home/u/.config/steep/config.yaml"))
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn the_system_config_puts_files_in_system_directories_whoever_reads_it() {
        // The service account (not root) and an operator's CLI read the
        // system file: both must find the service's socket and state.
        let account = host(&[("HOME", "/var/lib/steep-repl")], false);
        let system = Layout::of(&account, Path::new("/etc/steep/config.yaml"));
        assert_eq!(system, Layout::System);
        assert_eq!(
            default_ipc_path(&account, system).unwrap(),
            PathBuf::from("/run/steep-repl/steep-repl.sock")
        );
        assert_eq!(
            default_spool_path(&account, system, "n1").unwrap(),
            PathBuf::from("/var/lib/steep-repl/audit-n1.spool")
        );
        assert_eq!(
            default_raft_dir(&account, system, "n1").unwrap(),
            PathBuf::from("/var/lib/steep-repl/raft-n1")
        );
        let root = host(&[("HOME", "/root")], true);
        assert_eq!(
            Layout::of(&root, Path::new("/root/.config/steep/config.yaml")),
            Layout::System
        );
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn a_users_socket_is_in_its_own_state_directory_never_in_tmp() {
        let h = host(&[("HOME", "/home/u")], false);
        let path = default_ipc_path(&h, layout(&h)).unwrap();
        assert_eq!(
            path,
            PathBuf::from("/home/u/.local/state/steep-repl/steep-repl.sock")
        );
        assert!(default_ipc_path(&host(&[], false), Layout::User).is_err());
    }

    #[test]
    fn absolute_joins_relative_paths_and_drops_dots() {
        assert_eq!(
            absolute(Path::new("./a/./b.yaml"), Path::new("/etc/steep")),
            PathBuf::from("/etc/steep/a/b.yaml")
        );
        assert_eq!(
            absolute(Path::new("/x/y"), Path::new("/etc")),
            PathBuf::from("/x/y")
        );
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn user_config_follows_xdg_config_home_then_home() {
        let h = host(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/cfg")], false);
        assert_eq!(
            default_config_candidates(&h).0,
            PathBuf::from("/cfg/steep/config.yaml")
        );
        let h = host(
            &[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "relative")],
            false,
        );
        assert_eq!(
            default_config_candidates(&h).0,
            PathBuf::from("/home/u/.config/steep/config.yaml")
        );
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn root_without_a_user_file_uses_etc() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        let h = host(&[("HOME", home)], true);
        let (path, tried) = default_config_candidates(&h);
        assert_eq!(path, PathBuf::from("/etc/steep/config.yaml"));
        assert_eq!(tried, vec![dir.path().join(".config/steep/config.yaml")]);

        std::fs::create_dir_all(dir.path().join(".config/steep")).unwrap();
        std::fs::write(dir.path().join(".config/steep/config.yaml"), "repl: {}").unwrap();
        let (path, tried) = default_config_candidates(&h);
        assert_eq!(path, dir.path().join(".config/steep/config.yaml"));
        assert!(tried.is_empty());
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn a_user_without_a_file_still_defaults_to_the_user_path() {
        let h = host(&[("HOME", "/nonexistent-home")], false);
        assert_eq!(
            default_config_candidates(&h).0,
            PathBuf::from("/nonexistent-home/.config/steep/config.yaml")
        );
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn spool_lives_in_the_state_dir() {
        let h = host(&[("HOME", "/home/u")], false);
        assert_eq!(
            default_spool_path(&h, layout(&h), "n1").unwrap(),
            PathBuf::from("/home/u/.local/state/steep-repl/audit-n1.spool")
        );
        let h = host(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/st")], false);
        assert_eq!(
            default_spool_path(&h, layout(&h), "n1").unwrap(),
            PathBuf::from("/st/steep-repl/audit-n1.spool")
        );
        let h = host(&[("HOME", "/root"), ("XDG_STATE_HOME", "/st")], true);
        assert_eq!(
            default_spool_path(&h, layout(&h), "n1").unwrap(),
            PathBuf::from("/var/lib/steep-repl/audit-n1.spool")
        );
        let h = host(&[], false);
        assert!(default_spool_path(&h, layout(&h), "n1").is_err());
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn the_raft_dir_lives_beside_the_spool() {
        for (vars, root) in [
            (&[("HOME", "/home/u")][..], false),
            (&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/st")][..], false),
            (&[("HOME", "/root")][..], true),
        ] {
            let h = host(vars, root);
            let spool = default_spool_path(&h, layout(&h), "n1").unwrap();
            assert_eq!(
                default_raft_dir(&h, layout(&h), "n1").unwrap(),
                spool.parent().unwrap().join("raft-n1")
            );
        }
        assert_eq!(
            default_raft_dir(&host(&[("HOME", "/home/u")], false), Layout::User, "n1").unwrap(),
            PathBuf::from("/home/u/.local/state/steep-repl/raft-n1")
        );
        assert!(default_raft_dir(&host(&[], false), Layout::User, "n1").is_err());
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn system_config_is_in_etc() {
        assert_eq!(
            system_config_path(),
            PathBuf::from("/etc/steep/config.yaml")
        );
    }
}

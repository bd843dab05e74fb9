//! The CLI's side of IPC: finds the daemon's socket from the configuration
//! (falling back to the default path, and saying so, when the configuration
//! cannot be loaded), connects, and makes one call at a time on a blocking
//! local socket (named pipe on Windows) with a bounded wait for each answer.
//!
//! Connection failures are sorted for the operator: no socket or nobody
//! answering means the daemon is not running; a refused permission means
//! the socket's mode or group keeps this user out.
//!
//! Before reading anything, the CLI checks who is on the other end
//! (`SO_PEERCRED`): root, this user, or the owner of the socket's directory
//! when nobody else can create files there. A socket bound by another user
//! in a shared directory such as `/tmp` is refused, so nobody can answer in
//! the daemon's name.

use crate::config::{Config, DEFAULT_IPC_PATH};
use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{GenericFilePath, Stream};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use steep_repl_actors::ipc::protocol::{Method, Response};

/// How long one answer may take (an answer is meant to take under a second; database
/// methods are bounded at 10 s by the daemon itself).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the daemon's socket is, and how we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    /// The configuration it came from; `None` for the default path.
    pub config: Option<PathBuf>,
    /// Why the default path is used, to tell the operator.
    pub fallback: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon is not running: {reason}")]
    NotRunning { reason: String },
    #[error(
        "IPC is turned off in {} (ipc.enabled: false); status, nodes, audit and health need it",
        .config.display()
    )]
    Disabled { config: PathBuf },
    #[error(
        "permission denied on {}: run as the daemon's user, or as a member of the group \
         the socket belongs to (ipc.group, ipc.mode)", .path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error(
        "refusing to talk to the process on {}: it runs as {peer}, which is neither root, \
         you, nor the owner of a directory only its owner can write to; another user may \
         have bound the socket path first (keep ipc.path in the daemon's own directory)",
        .path.display()
    )]
    UntrustedPeer { path: PathBuf, peer: String },
    #[error("cannot connect to {}: {source}", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the daemon did not answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error("the connection to the daemon failed: {0}")]
    Io(io::Error),
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Remote { code: String, message: String },
}

/// Finds the socket: the configuration's `ipc.path`, or the default path
/// when the configuration cannot be loaded.
pub fn locate(explicit: Option<&Path>) -> Result<Target, ClientError> {
    match Config::load(explicit) {
        Ok(config) if !config.ipc.enabled => Err(ClientError::Disabled {
            config: config.source,
        }),
        Ok(config) => Ok(Target {
            path: config.ipc.path,
            config: Some(config.source),
            fallback: None,
        }),
        Err(e) => Ok(Target {
            path: PathBuf::from(DEFAULT_IPC_PATH),
            config: None,
            fallback: Some(format!(
                "cannot load the configuration ({}); trying the default socket {DEFAULT_IPC_PATH}",
                first_line(&e.to_string())
            )),
        }),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// One connection to the daemon.
pub struct IpcClient {
    stream: BufReader<Stream>,
    next_id: u64,
    line: String,
}

impl IpcClient {
    pub fn connect(path: &Path) -> Result<IpcClient, ClientError> {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| connect_error(path, source))?;
        let stream = Stream::connect(name).map_err(|source| connect_error(path, source))?;
        #[cfg(unix)]
        peer::check(&stream, path)?;
        stream
            .set_recv_timeout(Some(CALL_TIMEOUT))
            .map_err(ClientError::Io)?;
        stream
            .set_send_timeout(Some(CALL_TIMEOUT))
            .map_err(ClientError::Io)?;
        Ok(IpcClient {
            stream: BufReader::new(stream),
            next_id: 1,
            line: String::new(),
        })
    }

    /// Calls `method` and returns its result as sent (what `--json`
    /// prints), or the daemon's error. [`decode`] reads it as its type.
    pub fn call(&mut self, method: &Method) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        // `method` serialises as the request's "method" and "params".
        let mut request =
            serde_json::to_value(method).map_err(|e| ClientError::Protocol(e.to_string()))?;
        request["id"] = json!(id);
        let mut request =
            serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        request.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&request)
            .map_err(io_error)?;
        self.line.clear();
        let read = self.stream.read_line(&mut self.line).map_err(io_error)?;
        if read == 0 {
            return Err(ClientError::Io(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )));
        }
        let response: Response =
            serde_json::from_str(&self.line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if response.id != json!(id) {
            return Err(ClientError::Protocol(format!(
                "answer for id {} to request {id}",
                response.id
            )));
        }
        match (response.result, response.error) {
            (_, Some(error)) => Err(ClientError::Remote {
                code: error.code,
                message: error.message,
            }),
            (Some(result), None) => Ok(result),
            (None, None) => Err(ClientError::Protocol(
                "an answer with neither result nor error".into(),
            )),
        }
    }
}

/// A result read as the type the contract gives it; a field missing or of
/// another type is named in the error.
pub fn decode<R: DeserializeOwned>(method: &Method, result: &Value) -> Result<R, ClientError> {
    R::deserialize(result).map_err(|e| {
        ClientError::Protocol(format!(
            "the answer to {} does not match this steep-repl: {e}",
            method.kind().as_str()
        ))
    })
}

#[cfg(unix)]
mod peer {
    use super::ClientError;
    use interprocess::local_socket::prelude::*;
    use interprocess::local_socket::Stream;
    use nix::unistd::{geteuid, Uid, User};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Whom we trust to answer on `path`: root, ourselves, and the owner of
    /// the socket's directory when only that owner can create files there
    /// (the service account owns `/run/steep-repl`).
    pub(super) fn trusted(peer: u32, me: u32, path: &Path) -> bool {
        peer == 0 || peer == me || directory_owner(path) == Some(peer)
    }

    fn directory_owner(path: &Path) -> Option<u32> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
        let meta = std::fs::metadata(dir).ok()?;
        (meta.mode() & 0o022 == 0).then_some(meta.uid())
    }

    pub(super) fn check(stream: &Stream, path: &Path) -> Result<(), ClientError> {
        let creds = stream.peer_creds().map_err(ClientError::Io)?;
        let Some(uid) = creds.euid() else {
            return Err(ClientError::UntrustedPeer {
                path: path.to_path_buf(),
                peer: "an unknown user (the system did not say)".into(),
            });
        };
        if trusted(uid, geteuid().as_raw(), path) {
            return Ok(());
        }
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| format!("uid {uid} ({})", u.name))
            .unwrap_or_else(|| format!("uid {uid}"));
        Err(ClientError::UntrustedPeer {
            path: path.to_path_buf(),
            peer: name,
        })
    }
}

fn io_error(e: io::Error) -> ClientError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

fn connect_error(path: &Path, source: io::Error) -> ClientError {
    let shown = path.display();
    match source.kind() {
        ErrorKind::NotFound => ClientError::NotRunning {
            reason: format!("no socket at {shown}"),
        },
        ErrorKind::ConnectionRefused => ClientError::NotRunning {
            reason: format!("nothing answers on {shown} (a socket left by a daemon that stopped)"),
        },
        ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Connect {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn only_root_ourselves_or_the_owner_of_a_private_directory_are_trusted() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        // As root (CI), give the directory to an account of its own so the
        // owner is neither root nor us.
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        }
        let owner = std::fs::metadata(dir.path()).unwrap().uid();
        let me = owner.wrapping_add(1);
        let stranger = owner.wrapping_add(2);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(peer::trusted(0, me, &sock));
        assert!(peer::trusted(me, me, &sock));
        assert!(
            peer::trusted(owner, me, &sock),
            "the private directory's owner"
        );
        assert!(!peer::trusted(stranger, me, &sock));
        // Like /tmp: anyone can bind there, so its owner vouches for nobody.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(peer::trusted(owner, me, &sock), owner == 0);
        assert!(peer::trusted(me, me, &sock));
    }

    #[test]
    fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        match IpcClient::connect(&path) {
            Err(ClientError::NotRunning { reason }) => {
                assert!(reason.contains("no socket at"), "{reason}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_nobody_answers_on_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        match IpcClient::connect(&path) {
            Err(ClientError::NotRunning { reason }) => {
                assert!(reason.contains("nothing answers"), "{reason}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to a stale socket"),
        }
    }

    #[test]
    fn an_unloadable_configuration_falls_back_to_the_default_socket_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let target = locate(Some(&dir.path().join("missing.yaml"))).unwrap();
        assert_eq!(target.path, PathBuf::from(DEFAULT_IPC_PATH));
        let note = target.fallback.unwrap();
        assert!(
            note.contains("cannot load the configuration") && note.contains(DEFAULT_IPC_PATH),
            "{note}"
        );
    }
}

//! Socket set-up: the local socket (Unix) or named pipe (Windows) the
//! IpcActor accepts on.
//!
//! On Unix the socket file must never be reachable by more users than the
//! configuration allows, not even for an instant: it is bound with the
//! owner's bits only (interprocess `fchmod`s the socket before `bind`, or a
//! tight umask does where that is unsupported), then given to `ipc.group`,
//! and only then widened to `ipc.mode`. A socket file left by a crashed
//! daemon is removed first; one that still answers belongs to a live
//! process and is left alone. Dropping the listener removes the file
//! (interprocess's name reclamation).

use super::IpcError;
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use std::path::Path;

/// A bound listener and what had to be cleaned up first.
pub(crate) struct Bound {
    pub(crate) listener: Listener,
    /// A stale socket file was removed before binding.
    pub(crate) removed_stale: bool,
}

#[cfg(unix)]
pub(crate) fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<Bound, IpcError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = mode & 0o777;
    // Resolved before anything touches the file system, so that a typo in
    // the group name leaves no socket behind.
    let gid = group.map(unix::resolve_group).transpose()?;
    let removed_stale = unix::clear_stale(path)?;
    let listener = unix::create(path, mode & 0o700)?;
    // From here the listener owns the file: an early return drops it, and
    // with it the file.
    if let (Some(gid), Some(group)) = (gid, group) {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| IpcError::Chown {
            path: path.to_path_buf(),
            group: group.to_string(),
            source: e.into(),
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        IpcError::Chmod {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    Ok(Bound {
        listener,
        removed_stale,
    })
}

#[cfg(unix)]
mod unix {
    use super::*;
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    use nix::sys::stat::{umask, Mode};
    use nix::unistd::{Gid, Group};
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixStream;

    /// A group name, or a numeric gid.
    pub(super) fn resolve_group(group: &str) -> Result<Gid, IpcError> {
        if let Ok(gid) = group.parse::<u32>() {
            return Ok(Gid::from_raw(gid));
        }
        match Group::from_name(group) {
            Ok(Some(found)) => Ok(found.gid),
            Ok(None) => Err(IpcError::UnknownGroup {
                group: group.to_string(),
            }),
            Err(e) => Err(IpcError::GroupLookup {
                group: group.to_string(),
                source: e.into(),
            }),
        }
    }

    /// Removes a socket file nobody answers on. The instance lock is held
    /// when this runs, so such a file can only be left by a daemon that
    /// died; one that still answers belongs to some other live process.
    pub(super) fn clear_stale(path: &Path) -> Result<bool, IpcError> {
        let owned = || path.to_path_buf();
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(IpcError::Inspect {
                    path: owned(),
                    source,
                })
            }
        };
        if !meta.file_type().is_socket() {
            return Err(IpcError::NotASocket { path: owned() });
        }
        match UnixStream::connect(path) {
            Ok(_) => Err(IpcError::InUse { path: owned() }),
            // A full backlog: someone listens there.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(IpcError::InUse { path: owned() }),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(source) => Err(IpcError::RemoveStale {
                        path: owned(),
                        source,
                    }),
                }
            }
            Err(source) => Err(IpcError::Inspect {
                path: owned(),
                source,
            }),
        }
    }

    /// Binds with the given (owner-only) mode in effect from the start.
    pub(super) fn create(path: &Path, initial_mode: u32) -> Result<Listener, IpcError> {
        let bind_error = |source: std::io::Error| match source.kind() {
            ErrorKind::AddrInUse => IpcError::InUse {
                path: path.to_path_buf(),
            },
            _ => IpcError::Bind {
                path: path.to_path_buf(),
                source,
            },
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(bind_error)?;
        let options = ListenerOptions::new()
            .name(name.borrow())
            .reclaim_name(true);
        match options
            .mode(initial_mode as nix::libc::mode_t)
            .create_tokio()
        {
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                // No fchmod before bind on this system (e.g. macOS): the
                // umask is the only way to create the file narrow. It is
                // process-wide, but IPC binds while the daemon starts,
                // before anything else creates files.
                let previous = umask(Mode::from_bits_truncate(!initial_mode & 0o777));
                let created = ListenerOptions::new()
                    .name(name)
                    .reclaim_name(true)
                    .create_tokio();
                umask(previous);
                created.map_err(bind_error)
            }
            other => other.map_err(bind_error),
        }
    }
}

/// A named pipe: its access is the pipe's default security descriptor (the
/// creator, administrators, SYSTEM); `ipc.mode` and `ipc.group` are Unix-only.
#[cfg(windows)]
pub(crate) fn bind(path: &Path, _mode: u32, _group: Option<&str>) -> Result<Bound, IpcError> {
    let bind_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AddrInUse => IpcError::InUse {
            path: path.to_path_buf(),
        },
        _ => IpcError::Bind {
            path: path.to_path_buf(),
            source,
        },
    };
    let name = path
        .as_os_str()
        .to_fs_name::<GenericFilePath>()
        .map_err(bind_error)?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .map_err(bind_error)?;
    Ok(Bound {
        listener,
        removed_stale: false,
    })
}

//! One instance per configuration: an exclusive `flock` on a lock file,
//! taken before the daemon does anything else.
//!
//! The kernel drops the lock when its holder dies, so a lock file left by a
//! crashed daemon is simply taken over. The holder's pid is written into the
//! file so that a second `run` can name it. A clean stop removes the file.
//!
//! The file is opened without following a symbolic link and must be a
//! regular file: a link planted at the path (in a directory others can
//! write to) would otherwise make the daemon empty the file it points at.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another steep-repl{} is already running with this configuration (lock file {path})",
            .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("cannot create the lock file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lock file {path} is a symbolic link or not a regular file; refusing to use it (remove it if it is yours, and keep ipc.path in a directory only the daemon's account can write to)")]
    NotAFile { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock. Dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    file: Option<platform::Held>,
}

impl InstanceLock {
    /// Takes the lock at `path`, or says who holds it.
    pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        }
        // A holder may unlink the file between our open and our lock; then we
        // would hold a lock on a file nobody else sees. Retry until the locked
        // file is the one at the path.
        for _ in 0..10 {
            let file = platform::open_no_follow(path).map_err(|source| {
                if platform::is_symlink_refusal(&source) {
                    LockError::NotAFile {
                        path: path.to_path_buf(),
                    }
                } else {
                    LockError::Create {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
            if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
                return Err(LockError::NotAFile {
                    path: path.to_path_buf(),
                });
            }
            let mut file = match platform::try_lock(file) {
                Ok(Some(held)) => held,
                Ok(None) => {
                    let pid = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|t| t.trim().parse().ok());
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
                Err(source) => {
                    return Err(LockError::Lock {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            };
            if !platform::same_file(&file, path) {
                continue;
            }
            let pid = std::process::id().to_string();
            let write = file
                .set_len(0)
                .and_then(|_| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(pid.as_bytes()))
                .and_then(|_| file.sync_data());
            write.map_err(|source| LockError::Lock {
                path: path.to_path_buf(),
                source,
            })?;
            return Ok(InstanceLock {
                path: path.to_path_buf(),
                file: Some(file),
            });
        }
        Err(LockError::Lock {
            path: path.to_path_buf(),
            source: std::io::Error::other("the lock file kept being replaced"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The directory of `path` when users other than its owner may create
/// files in it (`/tmp`, `/var/tmp`, a group-writable directory): there
/// anyone could bind the socket path first or hold the lock.
pub fn shared_directory(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    platform::writable_by_others(dir).then(|| dir.to_path_buf())
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so nobody locks the old file.
        let _ = std::fs::remove_file(&self.path);
        self.file.take();
    }
}

#[cfg(unix)]
mod platform {
    use nix::fcntl::{Flock, FlockArg};
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::Path;

    /// Opens (creating) without following a symbolic link at the last
    /// component and without blocking on a FIFO planted there.
    pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
    }

    pub fn writable_by_others(dir: &Path) -> bool {
        std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o022 != 0)
    }

    /// `O_NOFOLLOW` on a symbolic link fails with ELOOP.
    pub fn is_symlink_refusal(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(nix::libc::ELOOP)
    }

    /// The lock lives as long as this value; dropping it unlocks.
    pub type Held = Flock<File>;

    /// Non-blocking exclusive flock: Ok(None) when another process holds it.
    pub fn try_lock(file: File) -> std::io::Result<Option<Held>> {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Some(held)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(std::io::Error::from(errno)),
        }
    }

    pub fn same_file(file: &File, path: &Path) -> bool {
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

#[cfg(windows)]
mod platform {
    use std::fs::{File, OpenOptions};
    use std::path::Path;

    /// Windows does not follow symbolic links for an unprivileged creator
    /// by default, and the lock lives in the user's temp directory.
    pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    pub fn is_symlink_refusal(_: &std::io::Error) -> bool {
        false
    }

    pub fn writable_by_others(_: &Path) -> bool {
        false
    }

    pub type Held = File;

    pub fn try_lock(file: File) -> std::io::Result<Option<Held>> {
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn same_file(_: &File, _: &Path) -> bool {
        // Windows cannot delete an open file, so it cannot be swapped.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steep-repl.sock.lock");
        let first = InstanceLock::acquire(&path).unwrap();
        let err = InstanceLock::acquire(&path).unwrap_err();
        let pid = std::process::id();
        assert_eq!(
            err.to_string(),
            format!(
                "another steep-repl (pid {pid}) is already running with this configuration (lock file {})",
                path.display()
            )
        );
        drop(first);
        assert!(!path.exists(), "a clean release removes the lock file");
        InstanceLock::acquire(&path).unwrap();
    }

    #[test]
    fn a_stale_lock_file_without_a_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.lock");
        std::fs::write(&path, "999999").unwrap();
        let lock = InstanceLock::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            std::process::id().to_string()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_at_the_lock_path_is_refused_and_its_target_left_intact() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let path = dir.path().join("steep-repl.sock.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = InstanceLock::acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::NotAFile { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the planted link is not ours to remove"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_to_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(shared_directory(&path), None);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(shared_directory(&path), Some(dir.path().to_path_buf()));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_lock_path_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steep-repl.sock.lock");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = InstanceLock::acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::NotAFile { .. }), "{err}");
    }
}

//! One instance per configuration: an exclusive `flock` on a lock file,
//! taken before the daemon does anything else.
//!
//! The kernel drops the lock when its holder dies, so a lock file left by a
//! crashed daemon is simply taken over. The holder's pid is written into the
//! file so that a second `run` can name it. A clean stop removes the file.

use std::fs::OpenOptions;
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
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|source| LockError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
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
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

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
    use std::fs::File;
    use std::path::Path;

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
}

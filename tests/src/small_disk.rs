//! A small disk for one directory: a tmpfs of a given size mounted over it,
//! so a daemon writing there meets a full disk (ENOSPC) the way it would on
//! a real one. Mounting needs root (CI runs as root); the mount is undone
//! when the value is dropped, a failing test included.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a private (mode 0700) tmpfs of `bytes` over `path`, which is
    /// created if missing and must be empty (what was there is hidden).
    pub fn mount(path: &Path, bytes: u64) -> Result<SmallDisk> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        run_mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={bytes},mode=0700"),
            "tmpfs",
            &path.display().to_string(),
        ])
        .context("mounting a tmpfs needs root (the tests run as root in CI)")?;
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Gives the disk `bytes` in all, keeping its files (a DBA freeing or
    /// adding space).
    pub fn resize(&self, bytes: u64) -> Result<()> {
        run_mount(&[
            "-o",
            &format!("remount,size={bytes}"),
            &self.path.display().to_string(),
        ])
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there does not keep it.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run_mount(args: &[&str]) -> Result<()> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "mount {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

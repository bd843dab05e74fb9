//! Where things are: the checkout, PostgreSQL 18, PostgreSQL 15.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The root of the checkout (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one level below the workspace root")
        .to_path_buf()
}

/// The `pg_config` of the project's PostgreSQL 18: `$STEEP_PG_CONFIG` when
/// set, otherwise whatever `deploy/pg18.sh` provides.
pub fn pg18_config() -> Result<PathBuf> {
    static CACHE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| locate_pg18_config().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_pg18_config() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("STEEP_PG_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let script = repo_root().join("deploy/pg18.sh");
    let output = Command::new(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// Runs `pg_config --<what>` and returns the path it prints.
pub fn pg_config_dir(pg_config: &Path, what: &str) -> Result<PathBuf> {
    let output = Command::new(pg_config)
        .arg(format!("--{what}"))
        .output()
        .with_context(|| format!("running {} --{what}", pg_config.display()))?;
    if !output.status.success() {
        bail!("{} --{what} failed", pg_config.display());
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// The bin folder of the project's PostgreSQL 18.
pub fn pg18_bindir() -> Result<PathBuf> {
    pg_config_dir(&pg18_config()?, "bindir")
}

/// The bin folder of Debian's PostgreSQL 15 (installed by deploy/test.sh),
/// used to test the extension's version gate.
pub fn pg15_bindir() -> Result<PathBuf> {
    let dir = PathBuf::from("/usr/lib/postgresql/15/bin");
    if !dir.join("postgres").exists() {
        bail!(
            "PostgreSQL 15 is not installed at {}; deploy/test.sh installs Debian's postgresql-15",
            dir.display()
        );
    }
    Ok(dir)
}

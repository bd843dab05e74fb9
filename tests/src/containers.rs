//! Cluster tests in containers: each node is a container of the image that
//! `deploy/image.sh` builds from this checkout (PostgreSQL 18, the
//! steep_repl extension and the daemon; nothing is pulled), with its own
//! address on a private Docker network made for one test, so that a
//! partition (`docker network disconnect`), a frozen host (`docker pause`)
//! and a restart (`docker restart`) are real.
//!
//! Tests observe only public faces: the HTTP probes at the container's
//! address, SQL through `psql` inside the container, the container's logs.
//! Where Docker is missing they fail and say so, unless
//! `STEEP_SKIP_CONTAINER_TESTS=1` asks to skip them; a skipped test prints a
//! line saying so and why, so a skip never looks like a pass.

pub mod cluster;
pub mod docker;
pub mod node;
pub mod systemd;

use std::io::Write;

/// Set to `1` to skip the container tests (each prints that it was skipped).
pub const SKIP_VAR: &str = "STEEP_SKIP_CONTAINER_TESTS";
/// The image of a node (`deploy/image.sh` prints it); default [`NODE_IMAGE`].
pub const IMAGE_VAR: &str = "STEEP_TEST_IMAGE";
/// The systemd image (`deploy/image.sh systemd`); default [`SYSTEMD_IMAGE`].
pub const SYSTEMD_IMAGE_VAR: &str = "STEEP_TEST_SYSTEMD_IMAGE";
pub const NODE_IMAGE: &str = "steep-repl-node:latest";
pub const SYSTEMD_IMAGE: &str = "steep-repl-node-systemd:latest";
/// Every container and network a test makes carries this label, so that
/// leftovers of a killed test run can be found (`docker ps -a --filter
/// label=io.steep-repl.test`).
pub const TEST_LABEL: &str = "io.steep-repl.test";

/// The node image to test.
pub fn node_image() -> String {
    std::env::var(IMAGE_VAR).unwrap_or_else(|_| NODE_IMAGE.to_string())
}

/// The systemd image to test.
pub fn systemd_image() -> String {
    std::env::var(SYSTEMD_IMAGE_VAR).unwrap_or_else(|_| SYSTEMD_IMAGE.to_string())
}

/// The running test's name: libtest and nextest run each test on a thread
/// named after it (a `#[tokio::test]` body runs on that thread too).
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("container_test")
        .to_string()
}

/// Whether the running test should go on. `false` after printing that it
/// is skipped (only when [`SKIP_VAR`] asks for it); panics with what to do
/// when Docker or the image is missing.
pub fn should_run(image: &str) -> bool {
    let skip = std::env::var(SKIP_VAR).ok();
    match preflight(image, skip.as_deref(), &[]) {
        Ok(go) => go,
        Err(message) => panic!("{message}"),
    }
}

/// What [`should_run`] decides, given the value of [`SKIP_VAR`] and extra
/// environment for the docker CLI: `Ok(false)` to skip (after announcing
/// it), `Ok(true)` to go on, `Err` with the message for the operator.
pub fn preflight(
    image: &str,
    skip: Option<&str>,
    docker_env: &[(&str, &str)],
) -> Result<bool, String> {
    let test = current_test();
    if let Some(value) = skip.filter(|v| !matches!(v.trim(), "" | "0" | "false" | "no")) {
        announce(&format!(
            "SKIPPED {test}: {SKIP_VAR}={value} asks to skip the container tests"
        ));
        return Ok(false);
    }
    docker::check_engine_with(docker_env).map_err(|e| {
        format!(
            "{test}: {e:#}\nThe container tests need a Docker engine; set {SKIP_VAR}=1 to skip them (they are then reported as skipped)."
        )
    })?;
    docker::check_image(image).map_err(|e| format!("{test}: {e:#}"))?;
    Ok(true)
}

/// Prints a line that the test harness does not capture: libtest captures
/// `println!`/`eprintln!` only, not writes to the stderr handle, and
/// nextest shows this binary's output of passing tests (.config/nextest.toml).
pub fn announce(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

//! The Docker CLI, for what testcontainers does not cover: networks made
//! and cut by the test (`network create/connect/disconnect/rm`), `restart`,
//! and the engine and image checks that turn "Docker is missing" into a
//! clear message instead of a connection error.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// Runs `docker ARGS`; its stdout, trimmed. A failure names the command
/// and carries Docker's own message.
pub fn docker(args: &[&str]) -> Result<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The engine answers (`docker version` reaches the server).
pub fn check_engine() -> Result<()> {
    check_engine_with(&[])
}

/// The same with extra environment for the docker CLI (e.g. `DOCKER_HOST`).
pub fn check_engine_with(env: &[(&str, &str)]) -> Result<()> {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => bail!("the docker command is not available ({e})"),
        Ok(out) if !out.status.success() => bail!(
            "the Docker engine does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

/// The image exists locally (no registry can be reached, so a missing
/// image would otherwise end in a failed pull).
pub fn check_image(image: &str) -> Result<()> {
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).map(drop).with_context(|| {
        format!(
            "the image {image} is not on this machine; build it with deploy/image.sh{} (deploy/test.sh does)",
            if image.contains("systemd") { " systemd" } else { "" }
        )
    })
}

/// A bridge network for one test, labelled as ours.
pub fn create_network(name: &str) -> Result<()> {
    docker(&[
        "network",
        "create",
        "--label",
        &format!("{}=1", super::TEST_LABEL),
        name,
    ])
    .map(drop)
}

/// Removes a network; errors are ignored (cleanup).
pub fn remove_network(name: &str) {
    let _ = docker(&["network", "rm", name]);
}

/// Cuts `container` off `network`: its interface there disappears.
pub fn disconnect(network: &str, container: &str) -> Result<()> {
    docker(&["network", "disconnect", network, container]).map(drop)
}

/// Connects `container` to `network` again under `alias` (its name there).
pub fn connect(network: &str, container: &str, alias: &str) -> Result<()> {
    docker(&["network", "connect", "--alias", alias, network, container]).map(drop)
}

/// `docker restart`: a graceful stop (the image's stop signal, then SIGKILL
/// after `timeout_secs`) and a start, keeping the container's filesystem.
pub fn restart(container: &str, timeout_secs: u32) -> Result<()> {
    docker(&["restart", "-t", &timeout_secs.to_string(), container]).map(drop)
}

/// The container's address on `network`, if it is connected to it.
pub fn address_on(container: &str, network: &str) -> Result<std::net::IpAddr> {
    let json = docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        container,
    ])?;
    let networks: serde_json::Value =
        serde_json::from_str(&json).with_context(|| format!("docker inspect said {json:?}"))?;
    let ip = networks[network]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("{container} has no address on {network}"))?;
    ip.parse()
        .with_context(|| format!("{container}: bad address {ip:?}"))
}

//! The Debian packages of `deploy/package.sh`, as a DBA installs them: on a
//! Debian with systemd as PID 1 (`deploy/image.sh packages`, PostgreSQL 18
//! without the extension), `apt install` of both, the node set up the way
//! the packaged configuration file says, the service running as its own
//! account, the man pages and completions, `ALTER EXTENSION UPDATE` from
//! every released version, an upgrade to a newer build that keeps the
//! configuration and the node's data, then `apt remove` and `apt purge`.
//! And `lintian`, Debian's package checker, on both packages.
//!
//! `deploy/test.sh` builds the packages for Debian's PostgreSQL 18
//! directories (`--debian-layout`; revisions 1 and 2 into target/debian, or
//! `STEEP_TEST_PACKAGES`) and the image
//! (`STEEP_TEST_PACKAGES_IMAGE`); like the container tests, these tests
//! report themselves skipped under `STEEP_SKIP_CONTAINER_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use steep_repl_tests::containers::node::{ExecOutput, TLS_DIR};
use steep_repl_tests::containers::systemd::SystemdNode;
use steep_repl_tests::containers::{announce, should_run};
use steep_repl_tests::paths::repo_root;

const CONVERGE: Duration = Duration::from_secs(60);
const PACKAGES_VAR: &str = "STEEP_TEST_PACKAGES";
const IMAGE_VAR: &str = "STEEP_TEST_PACKAGES_IMAGE";
const CONFIG: &str = "/etc/steep/config.yaml";
/// Where the packages are copied in the container.
const DEBS: &str = "/root/debs";

fn packages_image() -> String {
    std::env::var(IMAGE_VAR).unwrap_or_else(|_| "steep-repl-packages:latest".to_string())
}

fn packages_dir() -> PathBuf {
    std::env::var_os(PACKAGES_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debian"))
}

/// The one file of `dir` whose name starts with `prefix` and ends with
/// `suffix`; panics saying how to build it when there is none.
fn package(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the packages with deploy/package.sh (deploy/test.sh does)",
                dir.display()
            )
        })
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        [] => panic!(
            "no {prefix}*{suffix} in {}: build the packages with deploy/package.sh \
             and deploy/package.sh --revision 2 (deploy/test.sh does)",
            dir.display()
        ),
        many => panic!("several {prefix}*{suffix} in {}: {many:?}", dir.display()),
    }
}

struct Debs {
    daemon: PathBuf,
    daemon_newer: PathBuf,
    extension: PathBuf,
}

fn debs() -> Debs {
    let dir = packages_dir();
    let arch = "_amd64.deb";
    Debs {
        daemon: package(&dir, "steep-repl_", &format!("-1{arch}")),
        daemon_newer: package(&dir, "steep-repl_", &format!("-2{arch}")),
        extension: package(&dir, "postgresql-18-steep-repl_", &format!("-1{arch}")),
    }
}

fn in_container(deb: &Path) -> String {
    format!(
        "{DEBS}/{}",
        deb.file_name().and_then(|n| n.to_str()).expect("file name")
    )
}

/// `sh -c script` in the node; fails the test with its output unless it
/// exits 0.
async fn sh(node: &SystemdNode, script: &str) -> ExecOutput {
    let out = node.exec(&["sh", "-c", script]).await.expect("docker exec");
    assert_eq!(
        out.code,
        0,
        "`{script}` exited {}:\n{}{}\n{}",
        out.code,
        out.stdout,
        out.stderr,
        node.diagnostics().await
    );
    out
}

async fn apt(node: &SystemdNode, args: &str) -> ExecOutput {
    sh(
        node,
        &format!("DEBIAN_FRONTEND=noninteractive apt-get -y -q {args} 2>&1"),
    )
    .await
}

async fn main_pid(node: &SystemdNode) -> String {
    sh(node, "systemctl show --property=MainPID --value steep-repl")
        .await
        .stdout
        .trim()
        .to_string()
}

/// Waits until the service is active with a main process, and returns it.
async fn wait_until_running(node: &SystemdNode) -> String {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let active = node.unit_state("steep-repl").await.unwrap_or_default();
        let pid = main_pid(node).await;
        if active == "active" && pid != "0" {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "steep-repl.service is {active:?} after {CONVERGE:?}\n{}",
            node.diagnostics().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The steps the packaged config.yaml lists: node_id and the node's TLS
/// files, readable by the service's group (all of them here: the test
/// copied them in with mode 0600); the extension and the daemon's role in
/// PostgreSQL.
async fn set_up_the_node(node: &SystemdNode) {
    let id = &node.spec.node_id;
    sh(
        node,
        &format!(
            "sed -i -e 's|^  # node_id: db1|  node_id: {id}|' \
                 -e 's|^      # cert_file: .*|      cert_file: {TLS_DIR}/{id}.crt|' \
                 -e 's|^      # key_file: .*|      key_file: {TLS_DIR}/{id}.key|' {CONFIG} \
             && chgrp steep-repl {TLS_DIR}/* && chmod 640 {TLS_DIR}/*"
        ),
    )
    .await;
    node.sql("CREATE EXTENSION steep_repl")
        .await
        .expect("CREATE EXTENSION");
    node.sql("CREATE ROLE steep_daemon LOGIN IN ROLE steep_repl_daemon")
        .await
        .expect("CREATE ROLE steep_daemon");
}

#[tokio::test]
async fn the_packages_install_run_upgrade_and_purge_as_a_dba_expects() {
    if !should_run(&packages_image()) {
        return;
    }
    let debs = debs();
    let files: Vec<(String, PathBuf)> = [&debs.daemon, &debs.daemon_newer, &debs.extension]
        .into_iter()
        .map(|deb| (in_container(deb), deb.clone()))
        .collect();
    let node = SystemdNode::start_with(&packages_image(), false, &files)
        .await
        .expect("starting the container");
    node.wait_for_boot(CONVERGE).await.expect("boot");
    assert_eq!(node.unit_state("postgresql").await.unwrap(), "active");

    // Both packages at once, as `apt install` of local files does.
    let install = apt(
        &node,
        &format!(
            "install {} {}",
            in_container(&debs.extension),
            in_container(&debs.daemon)
        ),
    )
    .await;
    announce("  apt-get install of both packages: done");
    // A new node's configuration does not load yet: enabled, not started,
    // and told what to do.
    assert!(
        install.stdout.contains("enabled but not started"),
        "{}",
        install.stdout
    );
    assert_eq!(
        sh(&node, "systemctl is-enabled steep-repl")
            .await
            .stdout
            .trim(),
        "enabled"
    );
    assert_eq!(
        sh(
            &node,
            "stat -c '%U:%G %a' /etc/steep/config.yaml && id -u steep-repl"
        )
        .await
        .stdout
        .lines()
        .next(),
        Some("root:steep-repl 640")
    );
    // The packaged unit is the one `steep-repl install --print` shows here.
    let printed = sh(&node, "steep-repl install --print").await.stdout;
    let packaged = sh(&node, "cat /lib/systemd/system/steep-repl.service")
        .await
        .stdout;
    assert_eq!(printed, packaged);
    assert!(packaged.contains("User=steep-repl"), "{packaged}");

    // Man pages and completions.
    let man = sh(&node, "MANPAGER=cat MANWIDTH=80 man steep-repl 2>&1")
        .await
        .stdout;
    assert!(
        man.contains("steep-repl") && man.contains("cluster"),
        "{man}"
    );
    let add = sh(&node, "MANPAGER=cat man steep-repl-cluster-add 2>&1")
        .await
        .stdout;
    assert!(
        add.contains("--grpc") || add.contains("-\u{2010}grpc"),
        "{add}"
    );
    let completion = sh(
        &node,
        "bash -c '. /usr/share/bash-completion/completions/steep-repl && complete -p steep-repl'",
    )
    .await
    .stdout;
    assert!(completion.contains("steep-repl"), "{completion}");
    sh(
        &node,
        "test -s /usr/share/zsh/vendor-completions/_steep-repl \
         && test -s /usr/share/fish/vendor_completions.d/steep-repl.fish",
    )
    .await;

    // The extension package brings the update from every released version.
    for released in released_versions() {
        update_from(&node, &released).await;
        announce(&format!(
            "  ALTER EXTENSION steep_repl UPDATE from {released}: done"
        ));
    }

    set_up_the_node(&node).await;
    sh(&node, "systemctl restart steep-repl").await;
    let first = wait_until_running(&node).await;
    assert_eq!(
        sh(&node, &format!("stat -c %U /proc/{first}"))
            .await
            .stdout
            .trim(),
        "steep-repl",
        "the daemon runs as its own account"
    );
    let status = wait_for_status(&node).await;
    assert!(status.contains(&node.spec.node_id), "{status}");
    announce(&format!(
        "  steep-repl running as steep-repl (pid {first}); status works"
    ));
    sh(&node, "steep-repl cluster init").await;
    let state_dir = sh(&node, "ls /var/lib/steep-repl").await.stdout;
    assert!(
        state_dir.contains("raft-node-1") && state_dir.contains("audit-node-1.spool"),
        "the Raft directory and the audit spool: {state_dir}"
    );
    let config_before = sh(&node, &format!("sha256sum {CONFIG}")).await.stdout;

    // A newer build over the running one: restarted, configuration and
    // data kept.
    apt(
        &node,
        &format!("install {}", in_container(&debs.daemon_newer)),
    )
    .await;
    let second = wait_until_running(&node).await;
    assert_ne!(first, second, "the upgrade restarts the daemon");
    assert_eq!(
        sh(&node, &format!("sha256sum {CONFIG}")).await.stdout,
        config_before,
        "the upgrade keeps the configuration"
    );
    let cluster = wait_for(&node, "steep-repl cluster status").await;
    assert!(
        cluster.contains("node-1"),
        "the Raft state survives: {cluster}"
    );
    let state_after = sh(&node, "ls /var/lib/steep-repl").await.stdout;
    for entry in state_dir.split_whitespace() {
        assert!(
            state_after.split_whitespace().any(|e| e == entry),
            "{entry} of /var/lib/steep-repl is gone after the upgrade: {state_after}"
        );
    }
    announce(&format!(
        "  upgraded to revision 2: pid {first} -> {second}, config, spool and Raft state kept"
    ));

    // Remove stops the service and keeps configuration and data; purge
    // removes them.
    apt(&node, "remove steep-repl").await;
    assert_ne!(node.unit_state("steep-repl").await.unwrap(), "active");
    let left = node.exec(&["pgrep", "-x", "steep-repl"]).await.unwrap();
    assert_eq!(left.code, 1, "a daemon survived apt remove: {left:?}");
    sh(
        &node,
        &format!("test -f {CONFIG} && test -d /var/lib/steep-repl"),
    )
    .await;
    apt(&node, "purge steep-repl").await;
    let gone = sh(
        &node,
        &format!(
            "for f in {CONFIG} /var/lib/steep-repl /lib/systemd/system/steep-repl.service /usr/bin/steep-repl; \
             do test -e $f && echo $f; done; true"
        ),
    )
    .await
    .stdout;
    assert_eq!(gone.trim(), "", "purge left these behind");
    announce("  apt-get remove stopped it; purge removed its files");
}

/// The versions in ext/sql/released (steep_repl--<version>.sql).
fn released_versions() -> Vec<String> {
    let dir = repo_root().join("ext/sql/released");
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .expect("ext/sql/released")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("steep_repl--")?
                    .strip_suffix(".sql")?
                    .to_string(),
            )
        })
        .collect();
    versions.sort();
    assert!(
        !versions.is_empty(),
        "no released versions in {}",
        dir.display()
    );
    versions
}

/// A database made by an older release: that release's script put back
/// for the CREATE only (the old package had it), then removed, so that
/// the update can use only what the installed package holds.
async fn update_from(node: &SystemdNode, version: &str) {
    let script =
        std::fs::read(repo_root().join(format!("ext/sql/released/steep_repl--{version}.sql")))
            .expect("released script");
    let target = format!("$(pg_config --sharedir)/extension/steep_repl--{version}.sql");
    let encoded = base64(&script);
    sh(node, &format!("echo {encoded} | base64 -d > \"{target}\"")).await;
    node.sql("DROP EXTENSION IF EXISTS steep_repl CASCADE")
        .await
        .expect("DROP EXTENSION");
    node.sql(&format!("CREATE EXTENSION steep_repl VERSION '{version}'"))
        .await
        .expect("CREATE EXTENSION at a released version");
    sh(node, &format!("rm \"{target}\"")).await;
    node.sql("ALTER EXTENSION steep_repl UPDATE")
        .await
        .expect("ALTER EXTENSION steep_repl UPDATE");
    let installed = node
        .sql("SELECT extversion FROM pg_extension WHERE extname = 'steep_repl'")
        .await
        .expect("extversion");
    let default = node
        .sql("SELECT default_version FROM pg_available_extensions WHERE name = 'steep_repl'")
        .await
        .expect("default_version");
    assert_eq!(installed.trim(), default.trim(), "updated from {version}");
    node.sql("DROP EXTENSION steep_repl CASCADE")
        .await
        .expect("DROP EXTENSION");
}

async fn wait_for_status(node: &SystemdNode) -> String {
    wait_for(node, "steep-repl status").await
}

/// Runs `script` until it exits 0 (the daemon may still be starting).
async fn wait_for(node: &SystemdNode, script: &str) -> String {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let out = node.exec(&["sh", "-c", script]).await.expect("docker exec");
        if out.code == 0 {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "`{script}` still exits {} after {CONVERGE:?}: {}{}\n{}",
            out.code,
            out.stdout,
            out.stderr,
            node.diagnostics().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn base64(bytes: &[u8]) -> String {
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(bytes).expect("writing to base64");
    }
    let out = child.wait_with_output().expect("base64");
    String::from_utf8(out.stdout).expect("ascii")
}

/// `lintian` on both packages: no error, nothing suppressed (the one
/// override the daemon's package ships is explained in it).
#[test]
fn lintian_reports_no_errors_on_either_package() {
    if !should_run(&packages_image()) {
        return;
    }
    let debs = debs();
    for deb in [&debs.daemon, &debs.extension] {
        let out = Command::new("lintian")
            .args(["--fail-on", "error", "--tag-display-limit", "0"])
            .arg(deb)
            .output()
            .expect("running lintian (deploy/test.sh installs Debian's lintian)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        announce(&format!(
            "  lintian {}: {}",
            deb.display(),
            if report.trim().is_empty() {
                "clean"
            } else {
                report.trim()
            }
        ));
        assert!(
            out.status.success(),
            "lintian on {}:\n{report}",
            deb.display()
        );
        assert!(
            !report.lines().any(|l| l.starts_with("E: ")),
            "lintian errors on {}:\n{report}",
            deb.display()
        );
    }
}

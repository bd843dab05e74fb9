//! The systemd unit we install (our own text: service-manager's template
//! does not quote `ExecStart` arguments, so a path with a space breaks it).
//!
//! `Type=notify` with READY/STOPPING and a watchdog fed by the daemon's main
//! loop, restart on failure but not on a configuration error or a second
//! instance (exit codes 5 and 6: restarting cannot fix those). The system
//! service runs as its own account with its socket in a runtime directory
//! systemd makes for it (`/run/steep-repl`, group-readable so the members of
//! the account's group can use the CLI), its state in `/var/lib/steep-repl`,
//! and the rest of the file system read-only; `systemd-analyze security`
//! scores it (tests/tests/service.rs).

use std::path::{Path, PathBuf};

/// What the unit needs to know.
pub use super::Definition as UnitSpec;

/// The runtime directory systemd creates for the system service.
const RUNTIME_DIR: &str = "/run/steep-repl";
/// The state directory systemd creates for the system service.
const STATE_DIR: &str = "/var/lib/steep-repl";

/// Quotes one `ExecStart` argument the way systemd parses it: double
/// quotes, backslash escapes, and `%`/`$` doubled so specifiers and
/// variables are not expanded.
pub fn quote_arg(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The sandbox of the system service: everything the daemon does not need
/// (devices, kernel knobs, other users' processes, namespaces, privileged
/// system calls, writing outside its directories) is taken away.
fn system_hardening(spec: &UnitSpec<'_>, lines: &mut Vec<String>) {
    if let Some(account) = spec.account {
        lines.push(format!("User={account}"));
        lines.push(format!("Group={account}"));
        // No capability at all: ports above 1024, files it owns.
        lines.push("CapabilityBoundingSet=".into());
        lines.push("AmbientCapabilities=".into());
    }
    if spec.ipc_path.parent() == Some(Path::new(RUNTIME_DIR)) {
        lines.push("RuntimeDirectory=steep-repl".into());
        // The group may reach the socket (ipc.mode decides the rest).
        lines.push("RuntimeDirectoryMode=0750".into());
    }
    lines.push("StateDirectory=steep-repl".into());
    lines.push("StateDirectoryMode=0700".into());
    lines.push("ProtectSystem=strict".into());
    lines.push("ProtectHome=read-only".into());
    let mut extra: Vec<&PathBuf> = spec
        .writable
        .iter()
        .filter(|d| !d.starts_with(RUNTIME_DIR) && !d.starts_with(STATE_DIR))
        .collect();
    extra.sort();
    extra.dedup();
    for dir in extra {
        // "-": a directory that does not exist yet does not stop the start.
        lines.push(format!(
            "ReadWritePaths=-{}",
            quote_arg(&dir.to_string_lossy())
        ));
    }
    for line in [
        "PrivateDevices=yes",
        "ProtectKernelLogs=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictNamespaces=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "RemoveIPC=yes",
        "UMask=0027",
        // Room for every peer, client and PostgreSQL connection; the daemon
        // also raises its soft limit to the hard one at start.
        "LimitNOFILE=65536",
    ] {
        lines.push(line.into());
    }
}

/// The unit file text.
pub fn unit(spec: &UnitSpec<'_>) -> String {
    let exec = [
        quote_arg(&spec.binary.to_string_lossy()),
        "run".to_string(),
        "--config".to_string(),
        quote_arg(&spec.config.to_string_lossy()),
    ]
    .join(" ");
    // A private /tmp would hide a socket under /tmp from every other process.
    let socket_in_tmp = spec.ipc_path.starts_with("/tmp") || spec.ipc_path.starts_with("/var/tmp");
    let mut hardening: Vec<String> = [
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if !socket_in_tmp {
        hardening.push("PrivateTmp=yes".into());
    }
    if !spec.user {
        system_hardening(spec, &mut hardening);
    }
    let (after, wanted_by) = if spec.user {
        ("network-online.target", "default.target")
    } else {
        (
            "network-online.target postgresql.service",
            "multi-user.target",
        )
    };
    format!(
        "# The steep-repl service: `steep-repl install --print` shows it; docs/operations.md.\n\
[Unit]\n\
Description={description}\n\
After={after}\n\
Wants=network-online.target\n\
\n\
[Service]\n\
Type=notify\n\
NotifyAccess=main\n\
ExecStart={exec}\n\
ExecReload=/bin/kill -HUP $MAINPID\n\
Restart=on-failure\n\
RestartSec=2s\n\
RestartPreventExitStatus=5 6\n\
WatchdogSec=30s\n\
TimeoutStartSec=60s\n\
TimeoutStopSec=30s\n\
KillMode=mixed\n\
{hardening}\n\
\n\
[Install]\n\
WantedBy={wanted_by}\n",
        description = if spec.node_id.is_empty() {
            "steep-repl node daemon".to_string()
        } else {
            format!(
                "steep-repl node daemon ({})",
                spec.node_id.replace('%', "%%")
            )
        },
        hardening = hardening.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec<'a>(binary: &'a Path, config: &'a Path, ipc: &'a Path, user: bool) -> UnitSpec<'a> {
        UnitSpec {
            binary,
            config,
            node_id: "node-a",
            ipc_path: ipc,
            user,
            account: (!user).then_some("steep-repl"),
            writable: &[],
        }
    }

    #[test]
    fn the_system_service_runs_as_its_own_account_in_its_own_directories() {
        let (bin, cfg, ipc) = (
            PathBuf::from("/usr/bin/steep-repl"),
            PathBuf::from("/etc/steep/config.yaml"),
            PathBuf::from("/run/steep-repl/steep-repl.sock"),
        );
        let writable = [
            PathBuf::from("/var/lib/steep-repl"),
            PathBuf::from("/srv/steep/raft-a"),
            PathBuf::from("/run/steep-repl"),
        ];
        let unit = unit(&UnitSpec {
            writable: &writable,
            ..spec(&bin, &cfg, &ipc, false)
        });
        for line in [
            "User=steep-repl",
            "Group=steep-repl",
            "CapabilityBoundingSet=",
            "RuntimeDirectory=steep-repl",
            "RuntimeDirectoryMode=0750",
            "StateDirectory=steep-repl",
            "ProtectSystem=strict",
            "ReadWritePaths=-\"/srv/steep/raft-a\"",
            "LimitNOFILE=65536",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "missing {line:?} in\n{unit}"
            );
        }
        assert_eq!(
            unit.lines()
                .filter(|l| l.starts_with("ReadWritePaths="))
                .count(),
            1,
            "its own directories need no ReadWritePaths:\n{unit}"
        );
        let root = super::unit(&UnitSpec {
            account: None,
            ..spec(&bin, &cfg, &ipc, false)
        });
        assert!(!root.contains("User="), "{root}");
        assert!(!root.contains("CapabilityBoundingSet"), "{root}");
    }

    #[test]
    fn paths_with_spaces_and_specials_are_quoted_for_systemd() {
        assert_eq!(
            quote_arg("/opt/my dir/steep-repl"),
            "\"/opt/my dir/steep-repl\""
        );
        assert_eq!(quote_arg("a\"b\\c%d$e"), "\"a\\\"b\\\\c%%d$$e\"");
    }

    #[test]
    fn the_system_unit_is_a_notify_service_with_watchdog_and_hardening() {
        let (bin, cfg, ipc) = (
            PathBuf::from("/usr/local/bin/steep-repl"),
            PathBuf::from("/etc/steep/my config.yaml"),
            PathBuf::from("/run/steep-repl/steep-repl.sock"),
        );
        let unit = unit(&spec(&bin, &cfg, &ipc, false));
        for line in [
            "Type=notify",
            "ExecStart=\"/usr/local/bin/steep-repl\" run --config \"/etc/steep/my config.yaml\"",
            "Restart=on-failure",
            "RestartPreventExitStatus=5 6",
            "WatchdogSec=30s",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "StateDirectory=steep-repl",
            "WantedBy=multi-user.target",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "missing {line:?} in\n{unit}"
            );
        }
    }

    #[test]
    fn a_socket_under_tmp_keeps_the_shared_tmp_and_user_units_target_default() {
        let (bin, cfg, ipc) = (
            PathBuf::from("/usr/bin/steep-repl"),
            PathBuf::from("/home/dba/.config/steep/config.yaml"),
            PathBuf::from("/tmp/steep-repl.sock"),
        );
        let unit = unit(&spec(&bin, &cfg, &ipc, true));
        assert!(!unit.contains("PrivateTmp"), "{unit}");
        assert!(!unit.contains("ProtectSystem"), "{unit}");
        assert!(unit.contains("WantedBy=default.target"));
    }
}

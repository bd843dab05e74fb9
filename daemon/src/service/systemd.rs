//! The systemd unit we install (our own text: service-manager's template
//! does not quote `ExecStart` arguments, so a path with a space breaks it).
//!
//! `Type=notify` with READY/STOPPING and a watchdog fed by the daemon's main
//! loop, restart on failure but not on a configuration error or a second
//! instance (exit codes 5 and 6: restarting cannot fix those), and hardening
//! that keeps the IPC socket reachable by local tools.

use std::path::Path;

/// What the unit needs to know.
pub struct UnitSpec<'a> {
    pub binary: &'a Path,
    pub config: &'a Path,
    pub node_id: &'a str,
    pub ipc_path: &'a Path,
    /// A per-user service (`systemctl --user`).
    pub user: bool,
}

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
    let mut hardening = vec![
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
    ];
    if !socket_in_tmp {
        hardening.push("PrivateTmp=yes");
    }
    if !spec.user {
        hardening.push("ProtectSystem=full");
        // /var/lib/steep-repl holds the audit spool of the system service.
        hardening.push("StateDirectory=steep-repl");
        hardening.push("StateDirectoryMode=0700");
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
        "# Installed by `steep-repl install`; `steep-repl uninstall` removes it.\n\
[Unit]\n\
Description=steep-repl node daemon ({node})\n\
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
        node = spec.node_id.replace('%', "%%"),
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
        }
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

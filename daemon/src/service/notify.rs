//! systemd notifications (sd_notify): READY=1 once listeners are up,
//! STOPPING=1 when a graceful stop begins, WATCHDOG=1 from the main loop.
//! A no-op when not started by systemd (no NOTIFY_SOCKET).

use sd_notify::NotifyState;
use steep_repl_actors::lifecycle::ServiceNotifier;

pub struct SystemdNotifier {
    watchdog: bool,
}

impl SystemdNotifier {
    /// A notifier when systemd asked for notifications, else None.
    pub fn from_env() -> Option<SystemdNotifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        Some(SystemdNotifier {
            watchdog: watchdog_requested(),
        })
    }
}

/// sd_watchdog_enabled's rule: WATCHDOG_USEC set to a positive number, and
/// WATCHDOG_PID, when present, naming this process.
fn watchdog_requested() -> bool {
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let pid_ok = match std::env::var("WATCHDOG_PID") {
        Ok(pid) => pid.parse::<u32>().ok() == Some(std::process::id()),
        Err(_) => true,
    };
    usec.is_some_and(|u| u > 0) && pid_ok
}

impl ServiceNotifier for SystemdNotifier {
    fn ready(&self) {
        let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    }

    fn stopping(&self) {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }

    fn watchdog(&self) {
        if self.watchdog {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
    }
}

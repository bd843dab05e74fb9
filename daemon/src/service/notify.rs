//! systemd notifications (sd_notify): READY=1 once listeners are up,
//! STOPPING=1 when a graceful stop begins, WATCHDOG=1 from the main loop.
//! A no-op when not started by systemd (no NOTIFY_SOCKET).

use sd_notify::NotifyState;
use steep_repl_actors::system::ServiceNotifier;

pub struct SystemdNotifier {
    watchdog: bool,
}

impl SystemdNotifier {
    /// A notifier when systemd asked for notifications, else None.
    pub fn from_env() -> Option<SystemdNotifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
        Some(SystemdNotifier { watchdog })
    }
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

//! The daemon's life cycle as the service manager sees it: the
//! [`ServiceNotifier`] through which the SystemActor and the HealthActor
//! keep it informed. (What the listeners answer at shutdown is
//! `crate::listener`.)

/// Tells the service manager how the daemon is doing (systemd's sd_notify:
/// READY, STOPPING, WATCHDOG). The daemon provides the platform one.
pub trait ServiceNotifier: Send + Sync {
    /// Fully started: listeners up.
    fn ready(&self);
    /// Graceful stop begun.
    fn stopping(&self);
    /// The main loop turned (called every health interval).
    fn watchdog(&self);
}

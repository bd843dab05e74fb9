//! Time on CLOCK_BOOTTIME, the clock leases are measured on.
//!
//! `std::time::Instant` is CLOCK_MONOTONIC on Linux, which stops while the
//! machine is suspended: a holder resumed after a suspend would count its
//! lease as still running while the rest of the cluster saw it expire.
//! CLOCK_BOOTTIME keeps counting through a suspend.

use std::time::Duration;

/// A point on CLOCK_BOOTTIME (time since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BootTime(Duration);

impl BootTime {
    /// Now.
    pub fn now() -> Self {
        BootTime(boot_clock())
    }

    /// The point `nanos` nanoseconds after boot (how a stamp is stored).
    pub fn from_nanos(nanos: u64) -> Self {
        BootTime(Duration::from_nanos(nanos))
    }

    /// Nanoseconds after boot, saturated at `u64::MAX` (580 years).
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The time from `earlier` to this point (zero when `earlier` is later).
    pub fn saturating_since(self, earlier: BootTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for BootTime {
    type Output = BootTime;

    fn add(self, d: Duration) -> BootTime {
        BootTime(self.0.saturating_add(d))
    }
}

#[cfg(target_os = "linux")]
fn boot_clock() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into, and
    // CLOCK_BOOTTIME exists on every Linux this builds for (2.6.39+).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // Cannot happen with a valid clock id and pointer; the monotonic
        // clock is the closest meaning if it ever did.
        return fallback_clock();
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
fn boot_clock() -> Duration {
    fallback_clock()
}

/// A monotonic clock from the first use in this process: where there is no
/// CLOCK_BOOTTIME (macOS's `Instant` already counts through sleep; Windows'
/// QueryPerformanceCounter does too).
fn fallback_clock() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward_and_round_trips_through_nanos() {
        let a = BootTime::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = BootTime::now();
        assert!(b > a);
        assert!(b.saturating_since(a) >= Duration::from_millis(5));
        assert_eq!(a.saturating_since(b), Duration::ZERO);
        assert_eq!(BootTime::from_nanos(b.as_nanos()), b);
        assert_eq!(
            a + Duration::from_secs(1),
            BootTime(a.0 + Duration::from_secs(1))
        );
    }
}

//! Exponential backoff with jitter, used for every retry loop of the daemon
//! (PostgreSQL reconnects, actor restarts).
//!
//! The delay doubles from `base` up to `cap`; each delay is then drawn from
//! `[delay / 2, delay]` ("equal jitter") so that daemons restarted together
//! do not hammer a recovering server in lockstep, while the delay never
//! drops below half the nominal one.

use std::time::Duration;

/// The reconnect schedule (to PostgreSQL, to peers): 100 ms, doubling, capped at 5 s.
pub const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Upper bound of the reconnect schedule.
pub const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// A backoff schedule. Not thread-safe; each retry loop owns one.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    jitter: bool,
}

impl Backoff {
    /// A schedule starting at `base`, doubling up to `cap`, with jitter.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
            jitter: true,
        }
    }

    /// The reconnect schedule (100 ms doubling to 5 s).
    pub fn reconnect() -> Self {
        Self::new(RECONNECT_BASE, RECONNECT_CAP)
    }

    /// The same schedule without jitter (for tests and predictable waits).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait before the next attempt; advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        if !self.jitter {
            return nominal;
        }
        let half = nominal / 2;
        let spread = (nominal - half).as_micros() as u64;
        half + Duration::from_micros(fastrand::u64(0..=spread))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_schedule_doubles_from_100ms_and_caps_at_5s() {
        let mut backoff = Backoff::reconnect().without_jitter();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(backoff.attempts(), 9);
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_nominal_delay() {
        let mut backoff = Backoff::reconnect();
        for _ in 0..200 {
            let nominal = backoff.nominal();
            let delay = backoff.next_delay();
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} for {nominal:?}"
            );
        }
    }

    #[test]
    fn reset_starts_the_schedule_again() {
        let mut backoff = Backoff::reconnect().without_jitter();
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).without_jitter();
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), Duration::from_secs(60));
    }
}

//! Refused peers (failed mTLS handshakes, identity mismatches) are logged
//! with their address and audited as `peer.auth_failed`, at most once per
//! address per window, so that a scanner cannot flood the log or the audit
//! trail; what was held back is counted in the next report.

use crate::audit::AuditActor;
use crate::audit_event::{AuditAction, AuditEvent};
use actix::Addr;
use serde_json::json;
use slog::{warn, Logger};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One report per address per window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered at most; refusals from further sources share one
/// report per window, so a scan from many addresses stays bounded.
const MAX_TRACKED: usize = 4096;

/// Where a refusal came from: an IPv4 address, or the /64 network of an
/// IPv6 one (one host usually holds a whole /64, and a scan can walk it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(std::net::Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// A refusing source and the kind of failure.
type FailureKey = (Source, &'static str);
/// When that key was last reported, and failures held back since.
type FailureWindow = (Instant, u64);

/// Decides which refusals are reported: at most one per source and kind
/// per window, plus at most one per window for every source beyond
/// `MAX_TRACKED` together.
#[derive(Default)]
struct Throttle {
    seen: HashMap<FailureKey, FailureWindow>,
    /// The shared window of the sources that did not fit.
    overflow: Option<FailureWindow>,
    /// When expired sources were last forgotten (at most once a second:
    /// a sweep reads every tracked source).
    swept: Option<Instant>,
}

/// How often a full table is swept of expired sources.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Throttle {
    /// `Some(held back since the last report)` when this refusal is to be
    /// reported, `None` when it is only counted.
    fn admit(&mut self, ip: IpAddr, kind: &'static str, now: Instant) -> Option<u64> {
        let key = (Source::of(ip), kind);
        if let Some((last, count)) = self.seen.get_mut(&key) {
            return open_window(last, count, now);
        }
        let sweep_due = self
            .swept
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY);
        if self.seen.len() >= MAX_TRACKED && sweep_due {
            self.swept = Some(now);
            self.seen
                .retain(|_, (last, _)| now.duration_since(*last) < WINDOW);
        }
        if self.seen.len() < MAX_TRACKED {
            self.seen.insert(key, (now, 0));
            return Some(0);
        }
        match &mut self.overflow {
            Some((last, count)) => open_window(last, count, now),
            None => {
                self.overflow = Some((now, 0));
                Some(0)
            }
        }
    }
}

/// Counts a refusal in a window; a new window reports it with the count
/// held back in the old one.
fn open_window(last: &mut Instant, count: &mut u64, now: Instant) -> Option<u64> {
    if now.duration_since(*last) < WINDOW {
        *count += 1;
        return None;
    }
    let held = *count;
    *last = now;
    *count = 0;
    Some(held)
}

pub struct AuthFailures {
    audit: Addr<AuditActor>,
    log: Logger,
    throttle: Mutex<Throttle>,
}

impl AuthFailures {
    pub fn new(audit: Addr<AuditActor>, log: Logger) -> Self {
        AuthFailures {
            audit,
            log,
            throttle: Mutex::new(Throttle::default()),
        }
    }

    /// Records one refusal of `ip` (claiming `claimed` when known); `kind`
    /// groups failures for rate limiting (e.g. "handshake", "identity").
    pub fn record(&self, ip: IpAddr, kind: &'static str, claimed: Option<&str>, reason: &str) {
        let held_back = {
            let Ok(mut throttle) = self.throttle.lock() else {
                return;
            };
            match throttle.admit(ip, kind, Instant::now()) {
                Some(held) => held,
                None => return,
            }
        };
        warn!(self.log, "peer.auth_failed"; "peer" => %ip, "claimed_node_id" => claimed.unwrap_or("-"),
              "error" => reason, "held_back_since_last_report" => held_back);
        let mut event = AuditEvent::new(AuditAction::PeerAuthFailed)
            .client_ip(ip)
            .new_value(json!({"held_back_since_last_report": held_back}))
            .failed(reason);
        if let Some(claimed) = claimed {
            event = event.target("node", claimed);
        }
        self.audit.do_send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v6(i: u64, host: u64) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(
            (u128::from(0x2001_0db8_0000_0000u64.wrapping_add(i)) << 64) | u128::from(host),
        ))
    }

    #[test]
    fn one_report_per_source_and_kind_per_window() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(t.admit(a, "handshake", now), Some(0));
        assert_eq!(t.admit(a, "handshake", now), None);
        assert_eq!(t.admit(a, "handshake", now), None);
        assert_eq!(t.admit(a, "identity", now), Some(0), "another kind");
        assert_eq!(
            t.admit(a, "handshake", now + WINDOW),
            Some(2),
            "the next window tells what was held back"
        );
    }

    #[test]
    fn an_ipv6_scan_of_one_network_is_one_source() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let reports = (0..10_000u64)
            .filter(|&h| t.admit(v6(1, h), "handshake", now).is_some())
            .count();
        assert_eq!(reports, 1);
    }

    #[test]
    fn sources_beyond_the_tracked_ones_share_one_report_per_window() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let reports = (0..(MAX_TRACKED as u64 * 3))
            .filter(|&i| t.admit(v6(i, 1), "handshake", now).is_some())
            .count();
        assert_eq!(
            reports,
            MAX_TRACKED + 1,
            "every tracked source once, the rest together once"
        );
        // A window later the old sources are forgotten: a new one is
        // tracked (and reported) again.
        let later = now + WINDOW;
        assert_eq!(t.admit(v6(u64::MAX, 1), "handshake", later), Some(0));
        assert_eq!(t.admit(v6(u64::MAX, 1), "handshake", later), None);
    }
}

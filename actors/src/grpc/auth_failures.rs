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
/// Addresses remembered at most (a scan from many addresses stays bounded).
const MAX_TRACKED: usize = 4096;

/// A refusing address and the kind of failure.
type FailureKey = (IpAddr, &'static str);
/// When that key was last reported, and failures held back since.
type FailureWindow = (Instant, u64);

pub struct AuthFailures {
    audit: Addr<AuditActor>,
    log: Logger,
    /// Per address and kind of failure: when it was last reported, and
    /// failures held back since.
    seen: Mutex<HashMap<FailureKey, FailureWindow>>,
}

impl AuthFailures {
    pub fn new(audit: Addr<AuditActor>, log: Logger) -> Self {
        AuthFailures {
            audit,
            log,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records one refusal of `ip` (claiming `claimed` when known); `kind`
    /// groups failures for rate limiting (e.g. "handshake", "identity").
    pub fn record(&self, ip: IpAddr, kind: &'static str, claimed: Option<&str>, reason: &str) {
        let now = Instant::now();
        let held_back = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            match seen.get_mut(&(ip, kind)) {
                Some((last, count)) if now.duration_since(*last) < WINDOW => {
                    *count += 1;
                    return;
                }
                Some((last, count)) => {
                    let held = *count;
                    *last = now;
                    *count = 0;
                    held
                }
                None => {
                    if seen.len() >= MAX_TRACKED {
                        seen.retain(|_, (last, _)| now.duration_since(*last) < WINDOW);
                    }
                    if seen.len() < MAX_TRACKED {
                        seen.insert((ip, kind), (now, 0));
                    }
                    0
                }
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

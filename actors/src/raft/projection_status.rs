//! How far this node's PostgreSQL tables follow the replicated state: kept
//! by the projector, shown by `cluster.status` and `/metrics`, so that a
//! projection that cannot apply an entry is seen without reading logs.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};

/// The projection at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectionReport {
    /// The log index the tables hold (`None` before the first write).
    pub applied_index: Option<u64>,
    /// Why the last attempt failed, while it keeps failing.
    pub error: Option<String>,
    /// When it began to fail (RFC 3339), while it does.
    pub failing_since: Option<String>,
    /// Attempts that failed with a database error since the daemon started.
    pub failures: u64,
}

/// A cloneable handle on the report.
#[derive(Clone, Default)]
pub struct ProjectionStatus(Arc<Mutex<ProjectionReport>>);

impl ProjectionStatus {
    pub fn report(&self) -> ProjectionReport {
        self.lock().clone()
    }

    /// The tables now hold everything up to `index`.
    pub fn applied(&self, index: u64) {
        let mut r = self.lock();
        r.applied_index = Some(index);
        r.error = None;
        r.failing_since = None;
    }

    /// An attempt failed with a database error.
    pub fn failed(&self, error: &str) {
        let mut r = self.lock();
        r.failures += 1;
        if r.failing_since.is_none() {
            r.failing_since =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        r.error = Some(error.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProjectionReport> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_the_next_success_and_counted_for_good() {
        let status = ProjectionStatus::default();
        status.applied(4);
        status.failed("permission denied for table coordinator_state");
        status.failed("permission denied for table coordinator_state");
        let r = status.report();
        assert_eq!(r.applied_index, Some(4));
        assert_eq!(r.failures, 2);
        assert!(r
            .error
            .as_deref()
            .is_some_and(|e| e.contains("permission denied")));
        assert!(r.failing_since.is_some());
        status.applied(9);
        let r = status.report();
        assert_eq!(
            (r.applied_index, r.error, r.failing_since, r.failures),
            (Some(9), None, None, 2)
        );
    }
}

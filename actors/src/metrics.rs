//! The daemon's one Prometheus registry, served as `/metrics`.
//!
//! Everything on the page is registered here once, by its owner: the HTTP
//! server's request counters (`http::metrics`), the IPC server's
//! (`ipc::metrics`), the gRPC server's refusals (`grpc::limits`), and the
//! values the actors already keep in the health snapshot, read at scrape
//! time by a [`HealthCollector`] (`health`). A new metric is one line in
//! its owner's family table; the page, its escaping and its number format
//! are the `prometheus` crate's.

pub mod family;
pub mod health;

pub use health::HealthCollector;

use prometheus::core::Collector;
use prometheus::TextEncoder;

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry every family of the page is registered in. Cheap to clone
/// (the clones share it).
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    registry: prometheus::Registry,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one collector's families to the page. A family name registered
    /// twice is refused.
    pub fn register(&self, collector: impl Collector + 'static) -> prometheus::Result<()> {
        self.registry.register(Box::new(collector))
    }

    /// The whole page, every collector read now. A family without a sample
    /// (no peers yet, no mTLS) is left out, as Prometheus' own clients do.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        // Encoding into a String fails only for a family without a name or
        // a sample, which `gather` never returns.
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

//! Families declared once in a table and filled at scrape time: what a
//! collector over state kept elsewhere (the health snapshot) needs. The
//! table gives the registry its descriptors (checked for clashes when the
//! collector is registered) and every scrape its names, types and help.

use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;

/// A gauge or a counter; histograms live in the `prometheus` crate's own
/// types, updated where they are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One family: name, type, help, and its label names in the order a
/// sample gives their values.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// A collector's families with their descriptors.
pub struct Declared {
    specs: Vec<Spec>,
    descs: Vec<Desc>,
}

impl Declared {
    pub fn new(specs: Vec<Spec>) -> prometheus::Result<Self> {
        let descs = specs
            .iter()
            .map(|spec| {
                Desc::new(
                    spec.name.to_string(),
                    spec.help.to_string(),
                    spec.labels.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Declared { specs, descs })
    }

    pub fn descs(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    /// Empty families for one scrape.
    pub fn samples(&self) -> Samples<'_> {
        Samples {
            specs: &self.specs,
            families: vec![Vec::new(); self.specs.len()],
        }
    }
}

/// The samples of one scrape, by family.
pub struct Samples<'a> {
    specs: &'a [Spec],
    families: Vec<Vec<Metric>>,
}

impl Samples<'_> {
    /// One sample of the family `name`, its label values in the order the
    /// table names the labels. A name missing from the table is a bug the
    /// collector's tests catch (its family then has no sample).
    pub fn set(&mut self, name: &str, label_values: &[&str], value: f64) {
        let Some(i) = self.specs.iter().position(|s| s.name == name) else {
            debug_assert!(false, "metric family {name} is not declared");
            return;
        };
        let spec = &self.specs[i];
        let mut metric = Metric::default();
        metric.set_label(
            spec.labels
                .iter()
                .zip(label_values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect(),
        );
        match spec.kind {
            Kind::Gauge => {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            Kind::Counter => {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
        }
        self.families[i].push(metric);
    }

    pub fn finish(self) -> Vec<MetricFamily> {
        self.specs
            .iter()
            .zip(self.families)
            .map(|(spec, metrics)| {
                let mut family = MetricFamily::default();
                family.set_name(spec.name.to_string());
                family.set_help(spec.help.to_string());
                family.set_field_type(match spec.kind {
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Counter => MetricType::COUNTER,
                });
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

/// 1 for true, 0 for false.
pub fn bit(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

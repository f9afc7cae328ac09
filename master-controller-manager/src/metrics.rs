//! Metrics of the seed synchronization. Labels carry seed names and kinds, never object
//! names.

use mla_common::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;

/// A seed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeedLabels {
    pub seed: String,
}

/// A kind in a seed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeedKindLabels {
    pub seed: String,
    pub kind: &'static str,
}

/// A failure to sync a kind to a seed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncErrorLabels {
    pub seed: String,
    pub kind: &'static str,
    pub category: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Metrics of all seeds.
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    /// Master objects whose copy in the seed is current.
    pub in_sync: Family<SeedKindLabels, Gauge>,
    /// Failed syncs.
    pub errors: Family<SyncErrorLabels, Counter>,
    /// 1 while the seed's API server answers our watches.
    pub reachable: Family<SeedLabels, Gauge>,
    /// 1 while the Seed names a usable kubeconfig, 0 while it does not.
    pub kubeconfig_valid: Family<SeedLabels, Gauge>,
    /// Time from observing a change in the master to writing it to the seed.
    pub latency: Family<SeedKindLabels, Histogram, fn() -> Histogram>,
}

impl SyncMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let this = Self {
            in_sync: Family::default(),
            errors: Family::default(),
            reachable: Family::default(),
            kubeconfig_valid: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        metrics.register("seed", |registry| {
            registry.register(
                "objects_in_sync",
                "Master objects whose copy in the seed is current",
                this.in_sync.clone(),
            );
            registry.register("sync_errors", "Failed syncs to a seed by kind and error category", this.errors.clone());
            registry.register("reachable", "1 while the seed's API server answers", this.reachable.clone());
            registry.register(
                "kubeconfig_valid",
                "1 while the Seed names a usable kubeconfig, 0 while it does not",
                this.kubeconfig_valid.clone(),
            );
            registry.register_with_unit(
                "sync_latency",
                "Time from observing a change of a master object to its arrival in the seed",
                Unit::Seconds,
                this.latency.clone(),
            );
        });
        this
    }

    /// Drops every series of a seed that is no longer served.
    pub fn forget_seed(&self, seed: &str, kinds: &[&'static str]) {
        self.reachable.remove(&SeedLabels { seed: seed.into() });
        self.kubeconfig_valid.remove(&SeedLabels { seed: seed.into() });
        for kind in kinds {
            let labels = SeedKindLabels { seed: seed.into(), kind };
            self.in_sync.remove(&labels);
            self.latency.remove(&labels);
        }
    }
}

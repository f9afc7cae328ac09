//! The seed-controller-manager's controllers, as a library so that tests can drive their
//! pure parts (configuration renderers, resource builders) directly.

pub mod alerting;
pub mod gateway;
pub mod grafana;
pub mod iap;
pub mod scope;
pub mod status;
pub mod usercluster;
pub mod watch;

use std::time::Duration;

use mla_common::metrics::ExternalApiMetrics;

use crate::gateway::nginx::Upstreams;

/// What every controller of the seed manager shares: whether MLA is offered, where the
/// shared stack lives, and the metrics of calls to it.
#[derive(Clone, Debug)]
pub struct SeedSettings {
    /// MLA is offered in this seed (`--enable-user-cluster-mla`); without it every
    /// controller removes what it made.
    pub mla_enabled: bool,
    /// Namespace of the shared MLA stack (Cortex, Loki, Grafana, dashboards, rule group
    /// templates).
    pub mla_namespace: String,
    /// Base URLs of the shared backends.
    pub upstreams: Upstreams,
    /// Every object is looked at again this often.
    pub resync_period: Duration,
    /// `mla_external_requests_total` and friends, shared by the Grafana and Cortex clients.
    pub external: ExternalApiMetrics,
    /// Which Clusters this manager serves (KKP's `worker-name` and `spec.pause` rules).
    pub scope: scope::ClusterScope,
}

/// The gateway read path of a cluster, as seen from inside the seed: what Grafana's
/// datasources and the IAP point at (Service `mla-gateway`, port 80 -> 8081).
pub fn gateway_read_url(cluster_namespace: &str) -> String {
    format!("http://{}.{cluster_namespace}.svc.cluster.local", gateway::resources::GATEWAY)
}

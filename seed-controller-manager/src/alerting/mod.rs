//! Per-tenant alerting and limits in Cortex and Loki, for every MLA-enabled Cluster:
//! - [`cluster`]: the default Alertmanager and its Secret, the Alertmanager configuration
//!   pushed to Cortex with its status, rule group templates copied into the cluster
//!   namespace, the tenant's limits in Cortex's runtime configuration, and the cleanup of
//!   all of it when MLA is switched off or the Cluster is deleted (finalizer);
//! - [`rulegroups`]: every RuleGroup pushed to the Cortex or Loki ruler, compared with
//!   what the ruler serves in the ruler's own form ([`normalise`]);
//! - [`settings`]: KKP's finalizer on MLAAdminSettings released after their limits went.
//!
//! The tenant is the cluster name (`X-Scope-OrgID`), as the gateway pins it.

pub mod alertmanager;
pub mod client;
pub mod cluster;
pub mod limits;
pub mod normalise;
pub mod rulegroups;
pub mod settings;

use std::future::Future;
use std::time::Duration;

use mla_common::cli::parse_duration;
use mla_common::runtime::Runtime;

use crate::SeedSettings;

/// Flags of the alerting controllers.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "alerting")]
#[command(next_help_heading = "Alerting")]
pub struct Args {
    /// Timeout of one call to the Cortex Alertmanager or the Cortex and Loki rulers.
    #[arg(long, env = "MLA_CORTEX_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub cortex_request_timeout: Duration,
    /// ConfigMap in the MLA namespace holding Cortex's runtime configuration, where each
    /// tenant's limits go (`overrides:`).
    #[arg(long, env = "MLA_CORTEX_RUNTIME_CONFIG_MAP", default_value = "cortex-runtime-config")]
    pub cortex_runtime_config_map: String,
    /// Key of the runtime configuration in that ConfigMap. The default is the key KKP's own
    /// seed controller writes (`runtime_config.yaml` of `cortex-runtime-config`, which KKP's
    /// Cortex chart mounts).
    #[arg(long, env = "MLA_CORTEX_RUNTIME_CONFIG_KEY", default_value = "runtime_config.yaml")]
    pub cortex_runtime_config_key: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            cortex_request_timeout: Duration::from_secs(10),
            cortex_runtime_config_map: "cortex-runtime-config".into(),
            cortex_runtime_config_key: "runtime_config.yaml".into(),
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// A Kubernetes call failed.
    #[error(transparent)]
    Kube(#[from] mla_common::Error),
    /// Cortex or Loki did not answer, or answered with an unexpected status.
    #[error("{api} {operation} for tenant {tenant}: {message}")]
    Backend {
        /// `cortex` or `loki`.
        api: &'static str,
        /// The HTTP method.
        operation: &'static str,
        /// The tenant (cluster name).
        tenant: String,
        /// What went wrong.
        message: String,
    },
    /// A test-and-set write kept conflicting.
    #[error("{object} kept changing while it was being updated; retrying")]
    Conflict {
        /// `namespace/name` of the object.
        object: String,
    },
}

impl AlertingError {
    /// A short, fixed name of the kind of failure, for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            AlertingError::Kube(error) => error.category(),
            AlertingError::Backend { .. } => "external_api",
            AlertingError::Conflict { .. } => "kube_conflict",
        }
    }
}

/// What both controllers share.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    mla_enabled: bool,
    scope: crate::scope::ClusterScope,
    mla_namespace: String,
    resync_period: Duration,
    runtime_config: limits::RuntimeConfig,
    /// The runtime configuration ConfigMap as last seen (a watch of that one object): a
    /// tenant whose limits it already holds needs no read of it (one GET per reconcile
    /// before: 66,000 of them in the first 10 minutes of a 5,000-Cluster cold start).
    runtime_config_cache: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::ConfigMap>,
}

/// Checks the flags and returns the controllers, running until shutdown.
pub fn start(
    runtime: &Runtime,
    seed: &SeedSettings,
    args: &Args,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    for (flag, url) in [
        ("--cortex-alertmanager-url", &seed.upstreams.cortex_alertmanager),
        ("--cortex-ruler-url", &seed.upstreams.cortex_ruler),
        ("--loki-ruler-url", &seed.upstreams.loki_ruler),
    ] {
        let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("{flag} {url:?}: {e}"))?;
        anyhow::ensure!(matches!(parsed.scheme(), "http" | "https"), "{flag} {url:?}: must be http or https");
    }
    anyhow::ensure!(!args.cortex_request_timeout.is_zero(), "--cortex-request-timeout must be positive");
    anyhow::ensure!(
        !args.cortex_runtime_config_map.is_empty() && !args.cortex_runtime_config_key.is_empty(),
        "--cortex-runtime-config-map and --cortex-runtime-config-key must not be empty"
    );
    let cortex = client::CortexClient::new(
        &seed.upstreams.cortex_alertmanager,
        &seed.upstreams.cortex_ruler,
        &seed.upstreams.loki_ruler,
        args.cortex_request_timeout,
        seed.external.clone(),
    )?;
    // The runtime configuration ConfigMap alone, for `limits::sync` (readiness gate
    // `alerting/runtime-config`).
    let (runtime_config_cache, runtime_config_watch) = runtime.reflect(
        "alerting/runtime-config",
        kube::Api::namespaced(runtime.client.clone(), &seed.mla_namespace),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={}", args.cortex_runtime_config_map)),
    );
    let shared = Shared {
        mla_enabled: seed.mla_enabled,
        scope: seed.scope.clone(),
        mla_namespace: seed.mla_namespace.clone(),
        resync_period: seed.resync_period,
        runtime_config: limits::RuntimeConfig {
            namespace: seed.mla_namespace.clone(),
            name: args.cortex_runtime_config_map.clone(),
            key: args.cortex_runtime_config_key.clone(),
        },
        runtime_config_cache,
    };
    let (clusters, cluster_controller) = cluster::run(runtime, shared.clone(), cortex.clone());
    let settings = settings::run(runtime, shared.clone(), clusters.clone());
    let rule_groups = rulegroups::run(runtime, shared, cortex, clusters);
    Ok(async move {
        tokio::join!(cluster_controller, rule_groups, settings, runtime_config_watch);
    })
}

//! seed-controller-manager: PKI, MLA gateway, Grafana, IAP, alerting and limits for every
//! MLA-enabled Cluster of a seed.

use std::time::Duration;

use clap::Parser;
use mla_common::cli::{CommonArgs, parse_duration, parse_namespace};
use mla_common::runtime::Runtime;
use seed_controller_manager::gateway::controller::{self, GatewaySettings};
use seed_controller_manager::gateway::nginx::{GatewayServer, Upstreams};
use seed_controller_manager::gateway::resources::GatewayDeploymentSettings;
use seed_controller_manager::scope::ClusterScope;
use seed_controller_manager::usercluster::{self, UserClusterSettings};
use seed_controller_manager::{SeedSettings, alerting, grafana, iap};

const BINARY: &str = "seed-controller-manager";

/// Runs the MLA stack of every MLA-enabled user cluster of this seed.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Offer user-cluster MLA in this seed; without it no gateway is made (and existing
    /// ones are removed).
    #[arg(long, env = "MLA_ENABLE_USER_CLUSTER_MLA", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    enable_user_cluster_mla: bool,
    /// Serve only Clusters whose `worker-name` label equals this (KKP's rule; empty, the
    /// default: only Clusters without the label). Paused Clusters (`spec.pause`) are left
    /// alone whatever this says.
    #[arg(long, env = "MLA_WORKER_NAME", default_value = "")]
    worker_name: String,
    /// Namespace of the shared MLA stack (Cortex, Loki, Grafana) in the seed.
    #[arg(long, env = "MLA_NAMESPACE", default_value = "mla")]
    mla_namespace: String,
    #[command(flatten)]
    upstreams: UpstreamArgs,
    /// Image of the gateway (an unprivileged nginx).
    #[arg(long, env = "MLA_GATEWAY_IMAGE", default_value = "docker.io/nginxinc/nginx-unprivileged:1.27-alpine")]
    gateway_image: String,
    /// Replicas of each gateway.
    #[arg(long, env = "MLA_GATEWAY_REPLICAS", default_value_t = 1)]
    gateway_replicas: i32,
    /// DNS server the gateway resolves backend names with, while it runs (`server ...
    /// resolve`, nginx >= 1.27.3). Empty: none; names are resolved when nginx loads its
    /// configuration.
    #[arg(long, env = "MLA_GATEWAY_RESOLVER", default_value = "kube-dns.kube-system.svc.cluster.local")]
    gateway_resolver: String,
    /// Image of user-cluster-controller-manager, run once per MLA-enabled Cluster.
    #[arg(
        long,
        env = "MLA_USER_CLUSTER_CONTROLLER_MANAGER_IMAGE",
        default_value = "mla-controllers/user-cluster-controller-manager:latest"
    )]
    user_cluster_controller_manager_image: String,
    /// Image of the Prometheus agent in every user cluster (passed to each
    /// user-cluster-controller-manager as `--prometheus-image`; unset: its default).
    #[arg(long, env = "MLA_USER_CLUSTER_PROMETHEUS_IMAGE")]
    user_cluster_prometheus_image: Option<String>,
    /// Image of Promtail in every user cluster (`--promtail-image`; unset: its default).
    #[arg(long, env = "MLA_USER_CLUSTER_PROMTAIL_IMAGE")]
    user_cluster_promtail_image: Option<String>,
    /// Secret in each cluster namespace holding the user cluster's kubeconfig.
    #[arg(long, env = "MLA_USER_CLUSTER_KUBECONFIG_SECRET", default_value = "admin-kubeconfig")]
    user_cluster_kubeconfig_secret: String,
    /// Key of the kubeconfig in that Secret.
    #[arg(long, env = "MLA_USER_CLUSTER_KUBECONFIG_KEY", default_value = "kubeconfig")]
    user_cluster_kubeconfig_key: String,
    /// Namespace of the agents in every user cluster. Beside KKP use another than
    /// `mla-system`, which KKP's own user-cluster-controller-manager deletes (docs/kkp.md).
    #[arg(long, env = "MLA_USER_CLUSTER_AGENTS_NAMESPACE", default_value = "mla-system", value_parser = parse_namespace)]
    user_cluster_agents_namespace: String,
    /// Also report agent health in `Cluster.status.extendedHealth.monitoring`/`logging`
    /// (beside KKP: false, KKP's user-cluster-controller-manager clears those fields).
    #[arg(long, env = "MLA_USER_CLUSTER_EXTENDED_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    user_cluster_extended_health: bool,
    /// Every Cluster is looked at again this often (certificates expire by the clock).
    #[arg(long, env = "MLA_RESYNC_PERIOD", default_value = "30m", value_parser = parse_duration)]
    resync_period: Duration,
    #[command(flatten)]
    grafana: grafana::Args,
    #[command(flatten)]
    iap: iap::Args,
    #[command(flatten)]
    alerting: alerting::Args,
    #[command(flatten)]
    common: CommonArgs,
}

/// Base URLs of the shared backends; each defaults to its Service in `--mla-namespace`.
#[derive(Debug, clap::Args)]
struct UpstreamArgs {
    /// Cortex distributor (remote write).
    #[arg(long, env = "MLA_CORTEX_DISTRIBUTOR_URL")]
    cortex_distributor_url: Option<String>,
    /// Loki distributor (log push).
    #[arg(long, env = "MLA_LOKI_DISTRIBUTOR_URL")]
    loki_distributor_url: Option<String>,
    /// Cortex query frontend.
    #[arg(long, env = "MLA_CORTEX_QUERY_FRONTEND_URL")]
    cortex_query_frontend_url: Option<String>,
    /// Loki query frontend.
    #[arg(long, env = "MLA_LOKI_QUERY_FRONTEND_URL")]
    loki_query_frontend_url: Option<String>,
    /// Cortex Alertmanager.
    #[arg(long, env = "MLA_CORTEX_ALERTMANAGER_URL")]
    cortex_alertmanager_url: Option<String>,
    /// Cortex ruler.
    #[arg(long, env = "MLA_CORTEX_RULER_URL")]
    cortex_ruler_url: Option<String>,
    /// Loki ruler.
    #[arg(long, env = "MLA_LOKI_RULER_URL")]
    loki_ruler_url: Option<String>,
}

impl UpstreamArgs {
    fn resolve(&self, namespace: &str) -> Upstreams {
        let defaults = Upstreams::in_namespace(namespace);
        let pick = |flag: &Option<String>, default: String| flag.clone().unwrap_or(default);
        Upstreams {
            cortex_distributor: pick(&self.cortex_distributor_url, defaults.cortex_distributor),
            loki_distributor: pick(&self.loki_distributor_url, defaults.loki_distributor),
            cortex_query_frontend: pick(&self.cortex_query_frontend_url, defaults.cortex_query_frontend),
            loki_query_frontend: pick(&self.loki_query_frontend_url, defaults.loki_query_frontend),
            cortex_alertmanager: pick(&self.cortex_alertmanager_url, defaults.cortex_alertmanager),
            cortex_ruler: pick(&self.cortex_ruler_url, defaults.cortex_ruler),
            loki_ruler: pick(&self.loki_ruler_url, defaults.loki_ruler),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    let upstreams = args.upstreams.resolve(&args.mla_namespace);
    let server = GatewayServer {
        // Empty: no resolver; nginx resolves names once, when it loads the configuration
        // (for an nginx before 1.27.3, which has no `server ... resolve`).
        resolver: Some(args.gateway_resolver.clone()).filter(|resolver| !resolver.is_empty()),
        ..GatewayServer::default()
    };
    // Refuse bad flags at start-up rather than on every Cluster.
    seed_controller_manager::gateway::nginx::render("flag-check", None, &upstreams, &server)
        .map_err(|e| anyhow::anyhow!("invalid upstream or gateway flags: {e}"))?;
    anyhow::ensure!(args.gateway_replicas >= 1, "--gateway-replicas must be at least 1");
    let settings = GatewaySettings {
        mla_enabled: args.enable_user_cluster_mla,
        upstreams: upstreams.clone(),
        server,
        deployment: GatewayDeploymentSettings {
            image: args.gateway_image.clone(),
            replicas: args.gateway_replicas,
            ..GatewayDeploymentSettings::default()
        },
        resync_period: args.resync_period,
    };

    let runtime = Runtime::new(BINARY, &args.common).await?;
    let (pauses, pause_watch) = seed_controller_manager::scope::reflect_pauses(&runtime);
    let scope = ClusterScope::new(args.worker_name.clone(), pauses);
    let seed = SeedSettings {
        scope: scope.clone(),
        mla_enabled: args.enable_user_cluster_mla,
        mla_namespace: args.mla_namespace.clone(),
        upstreams,
        resync_period: args.resync_period,
        external: mla_common::metrics::ExternalApiMetrics::register(&runtime.metrics),
    };
    let grafana = grafana::start(&runtime, &seed, &args.grafana)?;
    let iap = iap::start(&runtime, &seed, &args.iap)?;
    let alerting = alerting::start(&runtime, &seed, &args.alerting)?;
    let gateway = controller::run(&runtime, settings, scope.clone());
    let user_clusters = usercluster::run(
        &runtime,
        UserClusterSettings {
            mla_enabled: args.enable_user_cluster_mla,
            image: args.user_cluster_controller_manager_image.clone(),
            kubeconfig_secret: args.user_cluster_kubeconfig_secret.clone(),
            kubeconfig_key: args.user_cluster_kubeconfig_key.clone(),
            agents_namespace: args.user_cluster_agents_namespace.clone(),
            extended_health: args.user_cluster_extended_health,
            prometheus_image: args.user_cluster_prometheus_image.clone(),
            promtail_image: args.user_cluster_promtail_image.clone(),
        },
        scope,
    );
    runtime
        .run(async move {
            tokio::join!(gateway, user_clusters, grafana, iap, alerting, pause_watch);
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_point_at_the_mla_namespace() {
        let args = Args::try_parse_from([BINARY]).expect("defaults parse");
        assert_eq!(args.mla_namespace, "mla");
        assert!(!args.enable_user_cluster_mla);
        assert_eq!(args.common.admin.addr.port(), 8085);
        let upstreams = args.upstreams.resolve("monitoring");
        assert_eq!(upstreams.cortex_distributor, "http://cortex-distributor.monitoring.svc.cluster.local:8080");
        let args = Args::try_parse_from([BINARY, "--cortex-distributor-url", "http://127.0.0.1:9009"]).expect("parse");
        assert_eq!(args.upstreams.resolve("mla").cortex_distributor, "http://127.0.0.1:9009");
    }
}

//! user-cluster-controller-manager: one process per user cluster that installs, certifies
//! and watches the MLA agents there. The common kube flags choose the seed;
//! `--user-cluster-kubeconfig` the user cluster.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mla_common::cli::{CommonArgs, parse_duration};
use mla_common::runtime::{Runtime, client_for};
use user_cluster_controller_manager::agents;
use user_cluster_controller_manager::agents::common as agent_defaults;
use user_cluster_controller_manager::agents::placement::Placement;
use user_cluster_controller_manager::agents::promtail::LoggingAgent;
use user_cluster_controller_manager::controller::{self, AgentsSettings};

const BINARY: &str = "user-cluster-controller-manager";

/// Installs and certifies the MLA agents of one user cluster.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Name of the Cluster object (in the seed) this process serves.
    #[arg(long, env = "MLA_CLUSTER_NAME")]
    cluster_name: String,
    /// Seed namespace of the cluster (CA Secret, gateway Service); defaults to the pod's
    /// namespace (POD_NAMESPACE), else `cluster-<cluster name>`.
    #[arg(long, env = "MLA_CLUSTER_NAMESPACE")]
    cluster_namespace: Option<String>,
    /// Kubeconfig of the user cluster.
    #[arg(long, env = "MLA_USER_CLUSTER_KUBECONFIG")]
    user_cluster_kubeconfig: PathBuf,
    /// Every object is compared again this often, even without a change.
    #[arg(long, env = "MLA_RESYNC_PERIOD", default_value = "5m", value_parser = parse_duration)]
    resync_period: Duration,
    /// Namespace of the agents in the user cluster. Beside KKP, whose own
    /// user-cluster-controller-manager deletes `mla-system`, use another (e.g. `mla-agents`);
    /// the agents' ClusterRoles are then named `system:<namespace>:<agent>`.
    #[arg(long, env = "MLA_AGENTS_NAMESPACE", default_value = agent_defaults::NAMESPACE)]
    agents_namespace: String,
    /// Also report the agents' health in the Cluster's `status.extendedHealth.monitoring`
    /// and `logging` (besides the conditions). Set to false beside KKP's own
    /// user-cluster-controller-manager, which clears those fields on every reconcile.
    #[arg(long, env = "MLA_EXTENDED_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    extended_health: bool,
    /// Image of the Prometheus agent (Prometheus 3; the Deployment passes flags of 3.x).
    #[arg(long, env = "MLA_PROMETHEUS_IMAGE", default_value = agents::prometheus::DEFAULT_IMAGE)]
    prometheus_image: String,
    /// Image of Promtail, the log agent.
    #[arg(long, env = "MLA_PROMTAIL_IMAGE", default_value = agents::promtail::DEFAULT_IMAGE)]
    promtail_image: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    let placement = Placement::new(&args.agents_namespace)?;
    let runtime = Runtime::new(BINARY, &args.common).await?;
    let user = client_for(Some(&args.user_cluster_kubeconfig), None).await?;
    let cluster_namespace = args
        .cluster_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| format!("cluster-{}", args.cluster_name));
    let settings = AgentsSettings {
        cluster_name: args.cluster_name.clone(),
        cluster_namespace,
        resync_period: args.resync_period,
        logging_agent: LoggingAgent::Promtail,
        placement,
        extended_health: args.extended_health,
        prometheus_image: args.prometheus_image.clone(),
        promtail_image: args.promtail_image.clone(),
    };
    let agents = controller::run(&runtime, user, settings);
    runtime
        .run(async move {
            agents.await;
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
    fn cluster_name_and_user_kubeconfig_are_required() {
        assert!(Args::try_parse_from([BINARY]).is_err());
        let args = Args::try_parse_from([BINARY, "--cluster-name", "abc", "--user-cluster-kubeconfig", "/k"])
            .expect("flags parse");
        assert_eq!(args.cluster_name, "abc");
        assert_eq!(args.resync_period, Duration::from_secs(300));
        assert_eq!(args.agents_namespace, "mla-system");
        assert!(args.extended_health);
        assert_eq!(args.prometheus_image, agents::prometheus::DEFAULT_IMAGE);
        assert_eq!(args.promtail_image, agents::promtail::DEFAULT_IMAGE);
        let args = Args::try_parse_from([
            BINARY,
            "--cluster-name",
            "abc",
            "--user-cluster-kubeconfig",
            "/k",
            "--agents-namespace=mla-agents",
            "--extended-health=false",
            "--prometheus-image=registry.example/prometheus:v3.16.0",
            "--promtail-image=registry.example/promtail:3.5.1",
        ])
        .expect("flags parse");
        assert_eq!(args.agents_namespace, "mla-agents");
        assert!(!args.extended_health);
        assert_eq!(args.prometheus_image, "registry.example/prometheus:v3.16.0");
        assert_eq!(args.promtail_image, "registry.example/promtail:3.5.1");
    }
}

//! user-cluster-controller-manager: one process per user cluster that installs, certifies
//! and watches the MLA agents there (the reconcilers come with their issue; this binary
//! already watches its Cluster in the seed, connects to the user cluster, serves its admin
//! endpoints and takes part in leader election).

use std::path::PathBuf;

use clap::Parser;
use kube::Api;
use kube::runtime::watcher;
use mla_common::api::Cluster;
use mla_common::cli::CommonArgs;
use mla_common::runtime::{Runtime, client_for};

const BINARY: &str = "user-cluster-controller-manager";

/// Installs and certifies the MLA agents of one user cluster. The common kube flags
/// choose the seed; `--user-cluster-kubeconfig` the user cluster.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Name of the Cluster object (in the seed) this process serves.
    #[arg(long, env = "MLA_CLUSTER_NAME")]
    cluster_name: String,
    /// Kubeconfig of the user cluster.
    #[arg(long, env = "MLA_USER_CLUSTER_KUBECONFIG")]
    user_cluster_kubeconfig: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    let runtime = Runtime::new(BINARY, &args.common).await?;
    let _user_cluster = client_for(Some(&args.user_cluster_kubeconfig), None).await?;
    let clusters = Api::<Cluster>::all(runtime.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={}", args.cluster_name));
    let (_store, watch_cluster) = runtime.reflect("cluster", clusters, config);
    let mut leader = runtime.leader.clone();
    let cluster_name = args.cluster_name;
    runtime
        .run(async move {
            let lead = async {
                if leader.wait_for_leadership().await {
                    tracing::info!(cluster = %cluster_name, "leading: agent reconcilers would start here");
                }
                futures::future::pending::<()>().await
            };
            tokio::select! {
                () = watch_cluster => {}
                () = lead => {}
            }
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
    }
}

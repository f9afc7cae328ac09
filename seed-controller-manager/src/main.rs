//! seed-controller-manager: PKI, MLA gateway, Grafana, IAP, alerting and limits for every
//! MLA-enabled Cluster of a seed (the reconcilers come with their issues; this binary
//! already watches Clusters, serves its admin endpoints and takes part in leader election).

use clap::Parser;
use kube::Api;
use kube::runtime::watcher;
use mla_common::api::Cluster;
use mla_common::cli::CommonArgs;
use mla_common::runtime::Runtime;

const BINARY: &str = "seed-controller-manager";

/// Runs the MLA stack of every MLA-enabled user cluster of this seed.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Namespace of the shared MLA stack (Cortex, Loki, Grafana) in the seed.
    #[arg(long, env = "MLA_NAMESPACE", default_value = "mla")]
    mla_namespace: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    let runtime = Runtime::new(BINARY, &args.common).await?;
    let clusters = Api::<Cluster>::all(runtime.client.clone());
    let (_store, watch_clusters) = runtime.reflect("clusters", clusters, watcher::Config::default());
    let mut leader = runtime.leader.clone();
    let mla_namespace = args.mla_namespace;
    runtime
        .run(async move {
            let lead = async {
                if leader.wait_for_leadership().await {
                    tracing::info!(%mla_namespace, "leading: reconcilers would start here");
                }
                futures::future::pending::<()>().await
            };
            tokio::select! {
                () = watch_clusters => {}
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
    fn defaults() {
        let args = Args::try_parse_from([BINARY]).expect("defaults parse");
        assert_eq!(args.mla_namespace, "mla");
        assert_eq!(args.common.admin.addr.port(), 8085);
    }
}

//! master-controller-manager: copies Projects, Users and UserProjectBindings from the
//! master cluster to every seed (synchronizers come with their issue; this binary already
//! watches the Seeds it will serve, serves its admin endpoints and takes part in leader
//! election).

use clap::Parser;
use kube::Api;
use kube::runtime::watcher;
use mla_common::api::Seed;
use mla_common::cli::CommonArgs;
use mla_common::runtime::Runtime;

const BINARY: &str = "master-controller-manager";

/// Keeps every seed's copy of Projects, Users and UserProjectBindings current.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Namespace of the Seed objects (and their kubeconfig Secrets) in the master.
    #[arg(long, env = "MLA_SEED_NAMESPACE", default_value = "kubermatic")]
    seed_namespace: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    let runtime = Runtime::new(BINARY, &args.common).await?;
    let seeds = Api::<Seed>::namespaced(runtime.client.clone(), &args.seed_namespace);
    let (_store, watch_seeds) = runtime.reflect("seeds", seeds, watcher::Config::default());
    let mut leader = runtime.leader.clone();
    runtime
        .run(async move {
            let lead = async {
                if leader.wait_for_leadership().await {
                    tracing::info!("leading: synchronizers would start here");
                }
                futures::future::pending::<()>().await
            };
            tokio::select! {
                () = watch_seeds => {}
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
    fn defaults_and_env_fallbacks() {
        let args = Args::try_parse_from([BINARY]).expect("defaults parse");
        assert_eq!(args.seed_namespace, "kubermatic");
        assert!(args.common.leader_election.enabled);
        let args = Args::try_parse_from([BINARY, "--seed-namespace", "seeds", "--leader-elect", "false"])
            .expect("flags parse");
        assert_eq!(args.seed_namespace, "seeds");
        assert!(!args.common.leader_election.enabled);
    }
}

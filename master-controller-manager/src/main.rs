//! master-controller-manager: keeps every seed's copy of Projects, Users,
//! UserProjectBindings and GroupProjectBindings current (see
//! docs/master-controller-manager.md).

mod cleanup;
mod copies;
mod fanout;
mod kinds;
mod metrics;
mod queue;
mod seed_sync;
mod seeds;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::Api;
use mla_common::cli::{CommonArgs, parse_duration};
use mla_common::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::fanout::Fanout;
use crate::kinds::{GroupProjectBinding, Project, Synced, User, UserProjectBinding};
use crate::metrics::SyncMetrics;
use crate::seed_sync::SyncSettings;
use crate::seeds::{Discovery, Registry, SeedHandle};

const BINARY: &str = "master-controller-manager";
const KINDS: [&str; 4] =
    [Project::CONTROLLER, User::CONTROLLER, UserProjectBinding::CONTROLLER, GroupProjectBinding::CONTROLLER];

/// Keeps every seed's copy of Projects, Users, UserProjectBindings and GroupProjectBindings
/// current.
#[derive(Debug, Parser)]
#[command(name = BINARY, version, about)]
struct Args {
    /// Namespace of the Seed objects (and, by default, of their kubeconfig Secrets) in the
    /// master.
    #[arg(long, env = "MLA_SEED_NAMESPACE", default_value = "kubermatic")]
    seed_namespace: String,
    /// Further namespaces a Seed's `spec.kubeconfig.namespace` may name (comma-separated).
    /// Secrets are watched there, so the ServiceAccount needs to read them in each.
    #[arg(long, env = "MLA_KUBECONFIG_NAMESPACES", value_delimiter = ',')]
    kubeconfig_namespaces: Vec<String>,
    /// Every object is compared with its copies this often even without a change.
    #[arg(long, env = "MLA_RESYNC_PERIOD", default_value = "10m", value_parser = parse_duration)]
    resync_period: Duration,
    /// Objects synced at once per seed and kind.
    #[arg(long, env = "MLA_SYNC_CONCURRENCY", default_value_t = 16)]
    sync_concurrency: u16,
    /// Master objects whose finalizer is added or released at once, per kind. Kept low so
    /// that the master's API server, usually on the same machines as the seeds', spends
    /// little on finalizers while the copies are being made: a missing finalizer only
    /// means an orphaned copy is deleted by the next sweep instead of at once.
    #[arg(long, env = "MLA_CLEANUP_CONCURRENCY", default_value_t = 2)]
    cleanup_concurrency: u16,
    /// Finalizers are added only once every seed's synchronizers have looked at every
    /// object once, so that a cold start spends the master's API server on the copies
    /// first; a seed that takes longer than this (unreachable, or very large) holds them
    /// no longer. Releasing finalizers never waits.
    #[arg(long, env = "MLA_FINALIZER_HOLD", default_value = "5m", value_parser = parse_duration)]
    finalizer_hold: Duration,
    #[command(flatten)]
    common: CommonArgs,
}

/// The master-side state every seed worker shares.
#[derive(Clone)]
struct Shared {
    master: kube::Client,
    projects: Fanout<Project>,
    users: Fanout<User>,
    bindings: Fanout<UserProjectBinding>,
    /// None when the master serves no GroupProjectBinding kind (KKP CE, or our CRDs
    /// without it).
    group_bindings: Option<Fanout<GroupProjectBinding>>,
    metrics: SyncMetrics,
    runtime_metrics: mla_common::metrics::Metrics,
    settings: SyncSettings,
    seed_applier: mla_common::apply::Applier,
    /// Told when a seed finished its first pass, so the cleanup controllers look again.
    registry: Arc<Registry>,
    /// At most this long after a seed is served, its first pass counts as done.
    finalizer_hold: Duration,
}

impl Shared {
    /// Serves one seed until `stop`: finds out whether it is the master itself, and if not
    /// runs a synchronizer per kind.
    async fn serve_seed(self, seed: Arc<SeedHandle>, stop: CancellationToken) {
        let hold_until = tokio::time::Instant::now() + self.finalizer_hold;
        let mut delay = Duration::from_millis(500);
        let same = loop {
            match seed_sync::is_same_cluster(&self.master, &seed.client).await {
                Ok(same) => break same,
                Err(error) => {
                    tracing::warn!(seed = %seed.name, %error, ?delay, "cannot reach the seed yet");
                    self.metrics.reachable.get_or_create(&metrics::SeedLabels { seed: seed.name.clone() }).set(0);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        };
        seed.set_same_cluster(same);
        if same {
            tracing::info!(seed = %seed.name, "the seed is the master cluster: nothing to copy");
            return stop.cancelled().await;
        }
        let run = |kind: &'static str| {
            (self.seed_applier.clone(), self.metrics.clone(), self.runtime_metrics.controller(kind))
        };
        // Each kind's synchronizer reports the end of its first pass; a kind not synced to
        // this seed drops its sender, which counts as done.
        let channel = tokio::sync::oneshot::channel::<()>;
        let [
            (projects_pass, projects_done),
            (users_pass, users_done),
            (bindings_pass, bindings_done),
            (group_bindings_pass, group_bindings_done),
        ] = [channel(), channel(), channel(), channel()];
        let passed = [projects_done, users_done, bindings_done, group_bindings_done];
        let first_pass = {
            let (seed, registry, stop) = (seed.clone(), self.registry.clone(), stop.clone());
            async move {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = futures::future::join_all(passed) => {}
                    () = tokio::time::sleep_until(hold_until) => {
                        tracing::warn!(seed = %seed.name, "first pass not done within --finalizer-hold: adding finalizers anyway");
                    }
                }
                seed.set_first_pass_done();
                registry.bump();
            }
        };
        let (a, m, r) = run(Project::CONTROLLER);
        let projects = seed_sync::run(
            seed.clone(),
            self.projects.clone(),
            a,
            m,
            r,
            self.settings.clone(),
            projects_pass,
            stop.clone(),
        );
        let (a, m, r) = run(User::CONTROLLER);
        let users =
            seed_sync::run(seed.clone(), self.users.clone(), a, m, r, self.settings.clone(), users_pass, stop.clone());
        let (a, m, r) = run(UserProjectBinding::CONTROLLER);
        let bindings = seed_sync::run(
            seed.clone(),
            self.bindings.clone(),
            a,
            m,
            r,
            self.settings.clone(),
            bindings_pass,
            stop.clone(),
        );
        let group_bindings = {
            let (a, m, r) = run(GroupProjectBinding::CONTROLLER);
            let (seed, settings, stop) = (seed.clone(), self.settings.clone(), stop.clone());
            let fanout = self.group_bindings.clone();
            let pass = group_bindings_pass;
            async move {
                let Some(fanout) = fanout else { return };
                loop {
                    match serves_group_project_bindings(&seed.client).await {
                        Ok(true) => return seed_sync::run(seed, fanout, a, m, r, settings, pass, stop).await,
                        Ok(false) => {
                            tracing::warn!(seed = %seed.name, "the seed serves no GroupProjectBindings: not syncing them there");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(seed = %seed.name, %error, "cannot tell whether the seed serves GroupProjectBindings yet")
                        }
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
            }
        };
        tokio::join!(projects, users, bindings, group_bindings, first_pass);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mla_common::telemetry::init(&args.common.log)?;
    anyhow::ensure!(args.sync_concurrency > 0, "--sync-concurrency must be at least 1");
    anyhow::ensure!(args.cleanup_concurrency > 0, "--cleanup-concurrency must be at least 1");
    let runtime = Runtime::new(BINARY, &args.common).await?;
    let master = runtime.client.clone();

    let (projects, watch_projects) =
        Fanout::<Project>::new(Api::all(master.clone()), runtime.readiness.gate("projects"));
    let (users, watch_users) = Fanout::<User>::new(Api::all(master.clone()), runtime.readiness.gate("users"));
    let (bindings, watch_bindings) =
        Fanout::<UserProjectBinding>::new(Api::all(master.clone()), runtime.readiness.gate("userprojectbindings"));
    // Discovery may hang with the API server; a SIGTERM meanwhile ends the process.
    let Some(serves_group_bindings) = runtime.unless_shutdown(serves_group_project_bindings(&master)).await else {
        return Ok(());
    };
    let (group_bindings, watch_group_bindings) = if serves_group_bindings? {
        let (fanout, drive) = Fanout::<GroupProjectBinding>::new(
            Api::all(master.clone()),
            runtime.readiness.gate("groupprojectbindings"),
        );
        (Some(fanout), futures::future::Either::Left(drive))
    } else {
        tracing::info!("the master serves no GroupProjectBindings: not syncing them");
        (None, futures::future::Either::Right(futures::future::ready(())))
    };
    let metrics = SyncMetrics::new(&runtime.metrics);
    let registry = Arc::new(Registry::default());
    let shared = Shared {
        master: master.clone(),
        projects: projects.clone(),
        users: users.clone(),
        bindings: bindings.clone(),
        group_bindings: group_bindings.clone(),
        metrics: metrics.clone(),
        runtime_metrics: runtime.metrics.clone(),
        settings: SyncSettings { resync_period: args.resync_period, concurrency: args.sync_concurrency },
        seed_applier: runtime.applier("seed-sync"),
        registry: registry.clone(),
        finalizer_hold: args.finalizer_hold,
    };

    let worker = shared.clone();
    let forget = metrics.clone();
    let discovery = Discovery {
        namespace: args.seed_namespace.clone(),
        secret_namespaces: args.kubeconfig_namespaces.clone(),
        master: master.clone(),
        registry: registry.clone(),
        events: runtime.events(master.clone(), "seed-discovery"),
        metrics: metrics.clone(),
        leader: runtime.leader.clone(),
        start_worker: Arc::new(move |seed, stop| {
            tokio::spawn(worker.clone().serve_seed(seed, stop));
        }),
        forget_seed: Arc::new(move |seed| forget.forget_seed(seed, &KINDS)),
    };

    let readiness = runtime.readiness.clone();
    let shutdown = runtime.shutdown.clone();
    let leader = runtime.leader.clone();
    let cleanup = cleanup::Cleanup {
        master: master.clone(),
        registry: registry.clone(),
        applier: runtime.applier("cleanup"),
        concurrency: args.cleanup_concurrency,
        stop: shutdown.clone(),
    };
    let cleanups = {
        let metrics = runtime.metrics.clone();
        let (c, mut leader) = (cleanup.clone(), leader.clone());
        async move {
            if !leader.wait_for_leadership().await {
                return;
            }
            tokio::join!(
                c.clone().run(projects, metrics.controller("project-cleanup")),
                c.clone().run(users, metrics.controller("user-cleanup")),
                c.clone().run(bindings, metrics.controller("userprojectbinding-cleanup")),
                async {
                    if let Some(group_bindings) = group_bindings {
                        c.run(group_bindings, metrics.controller("groupprojectbinding-cleanup")).await;
                    }
                },
            );
        }
    };
    runtime
        .run(async move {
            let watches = async { tokio::join!(watch_projects, watch_users, watch_bindings, watch_group_bindings) };
            let work = async { tokio::join!(discovery.run(readiness, shutdown.clone()), cleanups) };
            tokio::select! {
                _ = watches => {}
                _ = work => {}
            }
            Ok(())
        })
        .await
}

/// Whether the master's API serves GroupProjectBindings (KKP EE and newer CRD sets do).
async fn serves_group_project_bindings(master: &kube::Client) -> anyhow::Result<bool> {
    let version = format!("{}/{}", kinds::GROUP, kinds::VERSION);
    match master.list_api_group_resources(&version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "groupprojectbindings")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(anyhow::Error::new(error).context(format!("discovering the resources of {version}"))),
    }
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
        assert_eq!(args.resync_period, Duration::from_secs(600));
        assert!(args.common.leader_election.enabled);
        let args = Args::try_parse_from([
            BINARY,
            "--seed-namespace",
            "seeds",
            "--leader-elect",
            "false",
            "--resync-period",
            "30s",
        ])
        .expect("flags parse");
        assert_eq!(args.seed_namespace, "seeds");
        assert_eq!(args.resync_period, Duration::from_secs(30));
        assert!(!args.common.leader_election.enabled);
    }
}

//! What every binary's `main` shares: connecting, the admin server, leader election,
//! watches that gate readiness, and a shutdown that finishes within a few seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Readiness, ReadinessGate};
use crate::apply::{Applier, field_manager};
use crate::cli::{CommonArgs, KubeArgs};
use crate::events::EventPublisher;
use crate::leader::{LeaderElectionConfig, LeaderElector, LeaderState};
use crate::metrics::Metrics;

/// How long controllers get to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

impl KubeArgs {
    /// A client for the configured kubeconfig and context, else the in-cluster (or
    /// default kubeconfig) configuration.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
}

/// A client for a kubeconfig file (or the inferred configuration when `None`).
pub async fn client_for(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options).await.context("loading kubeconfig")?,
        None => kube::Config::infer().await.context("inferring the Kubernetes client configuration")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The running parts every binary has.
pub struct Runtime {
    /// Name of the binary: the field manager prefix, Lease name and metrics label.
    pub binary: &'static str,
    /// Client of the cluster the binary primarily works in (and holds its Lease in).
    pub client: kube::Client,
    /// The binary's metrics.
    pub metrics: Metrics,
    /// Readiness gates, one per watch.
    pub readiness: Readiness,
    /// Whether this replica leads.
    pub leader: LeaderState,
    /// Cancelled on SIGTERM/SIGINT or when the binary must stop.
    pub shutdown: CancellationToken,
    identity: String,
    elector: Option<LeaderElector>,
    admin_addr: SocketAddr,
    /// Installed by [`Runtime::new`], before any request that may hang: a process that is
    /// PID 1 in a container ignores SIGTERM until it has a handler, so without one the
    /// kubelet's stop would wait for the grace period and end in SIGKILL.
    signals: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("binary", &self.binary)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Connects and prepares metrics and leader election; nothing runs yet.
    pub async fn new(binary: &'static str, args: &CommonArgs) -> anyhow::Result<Self> {
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(readiness.clone(), shutdown.clone()));
        let client = args.kube.client().await?;
        let metrics = Metrics::new(binary);
        let le = &args.leader_election;
        let identity = le.identity.clone().or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(default_identity);
        let (elector, leader) = if le.enabled {
            anyhow::ensure!(
                le.renew_deadline < le.lease_duration && le.retry_period < le.renew_deadline,
                "leader election needs retry period < renew deadline < lease duration"
            );
            let config = LeaderElectionConfig {
                namespace: le
                    .lease_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "kube-system".into()),
                lease_name: le.lease_name.clone().unwrap_or_else(|| binary.to_string()),
                identity: identity.clone(),
                lease_duration: le.lease_duration,
                renew_deadline: le.renew_deadline,
                retry_period: le.retry_period,
            };
            let (elector, state) = LeaderElector::new(client.clone(), config, &metrics);
            (Some(elector), state)
        } else {
            (None, LeaderState::always())
        };
        Ok(Self {
            binary,
            client,
            metrics,
            readiness,
            leader,
            shutdown,
            identity,
            elector,
            admin_addr: args.admin.addr,
            signals,
        })
    }

    /// Runs `work` (start-up work before [`Runtime::run`], such as discovery) unless a
    /// signal arrives first: `None` then, and the binary should return.
    pub async fn unless_shutdown<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            value = work => Some(value),
            () = self.shutdown.cancelled() => None,
        }
    }

    /// An applier for `controller`, writing as `<binary>/<controller>` while leading.
    pub fn applier(&self, controller: &str) -> Applier {
        Applier::new(field_manager(self.binary, controller), self.leader.clone()).counting(self.metrics.writes())
    }

    /// An Event publisher for `controller`, publishing while leading.
    pub fn events(&self, client: kube::Client, controller: &str) -> EventPublisher {
        EventPublisher::new(
            client,
            field_manager(self.binary, controller),
            Some(self.identity.clone()),
            self.leader.clone(),
        )
    }

    /// Starts a reflector of `api` whose readiness gate `name` opens once its first list
    /// has arrived. The returned future drives the watch until shutdown; run it beside the
    /// controllers.
    pub fn reflect<K>(
        &self,
        name: &str,
        api: Api<K>,
        config: watcher::Config,
    ) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
    where
        K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (store, writer) = reflector::store();
        let gate = self.readiness.gate(name);
        let shutdown = self.shutdown.clone();
        let watch_name = name.to_string();
        let task = async move {
            let stream =
                mark_synced(reflector::reflector(writer, relisting_watcher(api, config)).default_backoff(), gate)
                    .for_each(|event| {
                        if let Err(error) = event {
                            tracing::warn!(watch = %watch_name, %error, "watch failed; retrying");
                        }
                        futures::future::ready(())
                    });
            tokio::select! {
                () = stream => {}
                () = shutdown.cancelled() => {}
            }
        };
        (store, task)
    }

    /// Serves the admin endpoints, takes part in leader election and runs `controllers`
    /// until SIGTERM/SIGINT, the controllers' end, or loss of leadership (an error: the
    /// process exits non-zero and restarts as a follower). After a signal `/readyz` fails
    /// at once and the process is gone within a few seconds.
    pub async fn run<F>(self, controllers: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        // The admin server outlives the controllers' grace period, so that during it
        // `/readyz` answers 503 rather than refusing connections.
        let admin_stop = CancellationToken::new();
        let (addr, admin_task) =
            admin::serve(self.admin_addr, self.readiness.clone(), self.metrics.clone(), admin_stop.clone())
                .await
                .with_context(|| format!("binding the admin server to {}", self.admin_addr))?;
        tracing::info!(binary = self.binary, admin = %addr, identity = %self.identity, "started");

        let signals = self.signals;
        let mut elector = match self.elector {
            Some(elector) => tokio::spawn(elector.run(self.shutdown.clone())),
            None => {
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    shutdown.cancelled().await;
                    Ok(())
                })
            }
        };
        let mut controllers = tokio::spawn(controllers);

        let outcome = tokio::select! {
            result = &mut controllers => match result {
                Ok(result) => result.context("controllers stopped"),
                Err(join) => Err(anyhow::anyhow!("controllers panicked: {join}")),
            },
            result = &mut elector => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error @ crate::leader::LeaderError::LostContact { .. })) => {
                    Err(anyhow::Error::new(error).context("lost the API server; exiting to start afresh"))
                }
                Ok(Err(lost)) => Err(anyhow::Error::new(lost).context("leadership lost; exiting so a new leader takes over")),
                Err(join) => Err(anyhow::anyhow!("leader election panicked: {join}")),
            },
            () = self.shutdown.cancelled() => Ok(()),
        };

        self.readiness.shutting_down();
        self.shutdown.cancel();
        if !controllers.is_finished() && tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
            tracing::warn!("controllers did not stop within {SHUTDOWN_GRACE:?}; aborting them");
            controllers.abort();
        }
        // Lets the elector release the lease so a successor need not wait for it to expire.
        if !elector.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut elector).await;
        }
        admin_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_millis(500), admin_task).await;
        signals.abort();
        tracing::info!(binary = self.binary, "stopped");
        outcome
    }
}

/// Opens `gate` when the watch event stream delivers its first complete list (`InitDone`).
///
/// Use this instead of `Store::wait_until_ready` for readiness: that future keeps only the
/// waker of whoever polled it last, so a second concurrent waiter (a readiness task beside
/// a kube-runtime Controller on the same store) can leave the other hanging forever.
pub fn mark_synced<K, S>(stream: S, gate: ReadinessGate) -> impl futures::Stream<Item = S::Item> + Send
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Send,
{
    on_first_sync(stream, move || gate.set_ready())
}

/// Calls `synced` once, when the watch event stream delivers its first complete list. See
/// [`mark_synced`] for why this beats `Store::wait_until_ready`.
pub fn on_first_sync<K, S>(stream: S, synced: impl FnOnce() + Send) -> impl futures::Stream<Item = S::Item> + Send
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Send,
{
    let mut synced = Some(synced);
    stream.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event
            && let Some(synced) = synced.take()
        {
            synced();
        }
    })
}

async fn watch_signals(readiness: Readiness, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    readiness.shutting_down();
    shutdown.cancel();
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// [`kube::runtime::watcher`], restarted from a fresh list after any error.
///
/// kube-runtime's watcher relists only after a 410; after other errors it resumes the
/// watch from its last resourceVersion. Right after an API server restart such resumed
/// watches were seen to fail again and again (streams dropped, the same stale
/// resourceVersion refused) for minutes, so a controller kept acting on a stale cache.
/// Starting over with a list after every error bounds that to one backoff period. Use it
/// with `.default_backoff()` like the plain watcher.
pub fn relisting_watcher<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = kube::runtime::watcher::Result<kube::runtime::watcher::Event<K>>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    futures::stream::unfold(None, move |current: Option<futures::stream::BoxStream<'static, _>>| {
        let fresh = current.is_none().then(|| kube::runtime::watcher(api.clone(), config.clone()).boxed());
        async move {
            let mut stream = current.or(fresh)?;
            // A watcher never ends; should one, so does this stream.
            let event = stream.next().await?;
            let keep = event.is_ok().then_some(stream);
            Some((event, keep))
        }
    })
}

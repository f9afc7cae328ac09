//! Seed discovery: a client per Seed, built from the kubeconfig in the Secret the Seed
//! names (`spec.kubeconfig`: name, namespace defaulting to the Seed's, and `fieldPath`,
//! the key, defaulting to `kubeconfig`, as KKP reads it), replaced when that Secret
//! changes and dropped when the Seed goes. Problems are reported by Events on the Seed, a
//! log line and the metric `seed_kubeconfig_valid`; the Seed's status belongs to KKP's
//! seed-status-controller (it owns the `KubeconfigValid` condition and derives the phase
//! from it), so nothing here writes it. The other seeds carry on regardless.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::admin::Readiness;
use mla_common::api::Seed;
use mla_common::events::EventPublisher;
use mla_common::leader::LeaderState;
use mla_common::runtime::on_first_sync;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{SeedLabels, SyncMetrics};

/// Reason of the Event when a Seed's kubeconfig works (again).
pub const KUBECONFIG_VALID: &str = "KubeconfigValid";

/// A seed this replica serves.
pub struct SeedHandle {
    /// Name of the Seed object.
    pub name: String,
    /// Client of the seed cluster.
    pub client: kube::Client,
    same_cluster: watch::Sender<Option<bool>>,
    /// Whether its synchronizers have looked at every object of every kind once (or the
    /// `--finalizer-hold` ran out first).
    first_pass: watch::Sender<bool>,
}

impl std::fmt::Debug for SeedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedHandle").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SeedHandle {
    /// Whether the seed is the master cluster itself; None until known.
    pub fn same_cluster(&self) -> Option<bool> {
        *self.same_cluster.borrow()
    }

    pub(crate) fn set_same_cluster(&self, same: bool) {
        self.same_cluster.send_replace(Some(same));
    }

    /// Whether the seed's synchronizers finished their first pass over every kind (each
    /// object created, updated or failed once), or the wait for that ran out.
    pub fn first_pass_done(&self) -> bool {
        *self.first_pass.borrow()
    }

    pub(crate) fn set_first_pass_done(&self) {
        self.first_pass.send_replace(true);
    }
}

struct Entry {
    kubeconfig_hash: u64,
    handle: Arc<SeedHandle>,
    stop: CancellationToken,
}

/// The seeds being served, shared with the cleanup controllers.
#[derive(Default)]
pub struct Registry {
    seeds: RwLock<BTreeMap<String, Entry>>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("seeds", &self.snapshot().iter().map(|s| &s.name).collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// The seeds served right now.
    pub fn snapshot(&self) -> Vec<Arc<SeedHandle>> {
        self.read().values().map(|e| e.handle.clone()).collect()
    }

    /// A stream that yields whenever a seed was added, replaced or removed, or finished its
    /// first pass.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        tokio_stream::wrappers::WatchStream::from_changes(self.changed.subscribe()).map(|_| ())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.seeds.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.seeds.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells [`Registry::changes`] listeners to look again (a seed was added, replaced or
    /// removed, or finished its first pass).
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops serving every seed.
    pub fn stop_all(&self) {
        for (_, entry) in std::mem::take(&mut *self.write()) {
            entry.stop.cancel();
        }
    }
}

/// Starts serving a seed; returns when `stop` is cancelled.
pub type StartWorker = Arc<dyn Fn(Arc<SeedHandle>, CancellationToken) + Send + Sync>;

/// What discovery needs.
pub struct Discovery {
    /// Namespace of the Seeds, and the default namespace of their kubeconfig Secrets.
    pub namespace: String,
    /// Further namespaces whose Secrets a Seed may name.
    pub secret_namespaces: Vec<String>,
    pub master: kube::Client,
    pub registry: Arc<Registry>,
    pub events: EventPublisher,
    pub metrics: SyncMetrics,
    pub leader: LeaderState,
    pub start_worker: StartWorker,
    pub forget_seed: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Discovery {
    /// Watches Seeds in the namespace and Secrets in every namespace a Seed may name
    /// (readiness gates `seeds`, `secrets` and `secrets/<namespace>`) and, while leading,
    /// keeps the registry in step with them.
    pub async fn run(self, readiness: Readiness, shutdown: CancellationToken) {
        let seeds_api: Api<Seed> = Api::namespaced(self.master.clone(), &self.namespace);
        let (seeds, seed_changes, mut seeds_synced) = watch_store(seeds_api, readiness.gate("seeds"));
        let mut secrets = Secrets::default();
        let mut triggers = seed_changes.boxed();
        let mut synced = vec![];
        for namespace in self.watched_namespaces() {
            let gate = if namespace == self.namespace { "secrets".to_string() } else { format!("secrets/{namespace}") };
            let api: Api<Secret> = Api::namespaced(self.master.clone(), &namespace);
            let (store, changes, done) = watch_store(api, readiness.gate(&gate));
            secrets.0.insert(namespace, store);
            triggers = futures::stream::select(triggers, changes).boxed();
            synced.push(done);
        }
        // Seeds whose kubeconfig failed are retried on this tick.
        let tick =
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(30))).map(|_| ());
        let mut triggers = futures::stream::select(triggers, tick).boxed();
        let mut leader = self.leader.clone();
        tokio::select! {
            () = shutdown.cancelled() => return,
            leading = leader.wait_for_leadership() => if !leading { return },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = async {
                seeds_synced.wait_for(|s| *s).await.ok();
                for done in &mut synced {
                    done.wait_for(|s| *s).await.ok();
                }
            } => {}
        }
        let mut reported = HashMap::new();
        loop {
            self.sync(&seeds, &secrets, &mut reported).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                next = triggers.next() => if next.is_none() { break },
            }
            // Coalesce a burst of changes into one pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while futures::FutureExt::now_or_never(triggers.next()).flatten().is_some() {}
        }
        self.registry.stop_all();
    }

    /// The Seeds' namespace first, then the further ones, without duplicates.
    fn watched_namespaces(&self) -> Vec<String> {
        let mut namespaces = vec![self.namespace.clone()];
        for namespace in &self.secret_namespaces {
            if !namespace.is_empty() && !namespaces.contains(namespace) {
                namespaces.push(namespace.clone());
            }
        }
        namespaces
    }

    async fn sync(&self, seeds: &Store<Seed>, secrets: &Secrets, reported: &mut HashMap<String, Outcome>) {
        let mut changed = false;
        let present: Vec<Arc<Seed>> = seeds.state();
        for seed in &present {
            let name = seed.name_any();
            let outcome = match resolve(seed, &self.namespace, secrets) {
                Ok(kubeconfig) => self.ensure_worker(&name, &kubeconfig, &mut changed).await,
                Err(problem) => Err(problem),
            };
            self.report(seed, outcome, reported).await;
        }
        let gone: Vec<String> = {
            let current = self.registry.read();
            current.keys().filter(|name| !present.iter().any(|s| s.name_any() == **name)).cloned().collect()
        };
        reported.retain(|name, _| present.iter().any(|s| s.name_any() == *name));
        for name in gone {
            if let Some(entry) = self.registry.write().remove(&name) {
                tracing::info!(seed = %name, "Seed removed: no longer syncing to it; its copies stay as they are");
                entry.stop.cancel();
                (self.forget_seed)(&name);
                changed = true;
            }
        }
        if changed {
            self.registry.bump();
        }
    }

    /// Starts (or restarts, when the kubeconfig changed) the worker of a seed.
    async fn ensure_worker(&self, name: &str, kubeconfig: &str, changed: &mut bool) -> Result<(), Problem> {
        let hash = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            kubeconfig.hash(&mut hasher);
            hasher.finish()
        };
        if self.registry.read().get(name).is_some_and(|e| e.kubeconfig_hash == hash) {
            return Ok(());
        }
        let client = client_from_kubeconfig(kubeconfig).await?;
        let handle = Arc::new(SeedHandle {
            name: name.to_string(),
            client,
            same_cluster: watch::Sender::new(None),
            first_pass: watch::Sender::new(false),
        });
        let stop = CancellationToken::new();
        let previous = self
            .registry
            .write()
            .insert(name.to_string(), Entry { kubeconfig_hash: hash, handle: handle.clone(), stop: stop.clone() });
        match previous {
            Some(previous) => {
                tracing::info!(seed = %name, "kubeconfig changed: replacing the seed client");
                previous.stop.cancel();
            }
            None => tracing::info!(seed = %name, "serving seed"),
        }
        (self.start_worker)(handle, stop);
        *changed = true;
        Ok(())
    }

    /// Reports a Seed's kubeconfig state when it changed since the last pass: an Event on
    /// the Seed, a log line, and the gauge `seed_kubeconfig_valid`.
    async fn report(&self, seed: &Seed, outcome: Result<(), Problem>, reported: &mut HashMap<String, Outcome>) {
        let name = seed.name_any();
        let valid = outcome.is_ok();
        self.metrics.kubeconfig_valid.get_or_create(&SeedLabels { seed: name.clone() }).set(i64::from(valid));
        let now = match &outcome {
            Ok(()) => (KUBECONFIG_VALID, "the kubeconfig Secret holds a usable kubeconfig".to_string()),
            Err(problem) => (problem.reason, problem.message.clone()),
        };
        if reported.get(&name) == Some(&now) {
            return;
        }
        reported.insert(name.clone(), now.clone());
        let reference = seed.object_ref(&());
        let (reason, message) = now;
        if valid {
            tracing::info!(seed = %name, "{message}");
            self.events.normal(&reference, reason, "ConnectSeed", message).await;
        } else {
            tracing::warn!(seed = %name, reason, "{message}");
            self.events.warning(&reference, reason, "ConnectSeed", message).await;
        }
    }
}

/// The last reported reason and message of a Seed.
type Outcome = (&'static str, String);

/// The kubeconfig Secrets, by namespace.
#[derive(Default)]
struct Secrets(HashMap<String, Store<Secret>>);

/// Why a Seed's kubeconfig cannot be used.
#[derive(Debug)]
struct Problem {
    reason: &'static str,
    message: String,
}

/// The kubeconfig a Seed names, read as KKP reads it (`GetSeedKubeconfig`): the Secret
/// `spec.kubeconfig.name` in `spec.kubeconfig.namespace` (default: the Seed's), key
/// `spec.kubeconfig.fieldPath` (default: `kubeconfig`).
fn resolve(seed: &Seed, namespace: &str, secrets: &Secrets) -> Result<String, Problem> {
    let reference = &seed.spec.kubeconfig;
    let name = reference.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| Problem {
        reason: "KubeconfigSecretMissing",
        message: "spec.kubeconfig names no Secret".into(),
    })?;
    let seed_namespace = seed.metadata.namespace.as_deref().unwrap_or(namespace);
    let secret_namespace = reference.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(seed_namespace);
    let store = secrets.0.get(secret_namespace).ok_or_else(|| Problem {
        reason: "KubeconfigSecretNamespaceNotWatched",
        message: format!(
            "the kubeconfig Secret is in namespace {secret_namespace}, which is not watched: add it to --kubeconfig-namespaces (and let the ServiceAccount read Secrets there)"
        ),
    })?;
    let secret = store.get(&ObjectRef::new(name).within(secret_namespace)).ok_or_else(|| Problem {
        reason: "KubeconfigSecretMissing",
        message: format!("Secret {secret_namespace}/{name} does not exist"),
    })?;
    let key = seed.spec.kubeconfig_key();
    let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| Problem {
        reason: "KubeconfigMissing",
        message: format!("Secret {secret_namespace}/{name} has no key {key:?}"),
    })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| Problem {
        reason: "KubeconfigInvalid",
        message: format!("key {key:?} of Secret {secret_namespace}/{name} is not UTF-8"),
    })
}

/// How long a seed client waits for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Server-side timeout of watches through a seed client: shorter than [`READ_TIMEOUT`],
/// so that the API server ends a quiet watch (which the watcher then resumes) before the
/// client's read timeout breaks it. A watch may carry nothing for over a minute: the API
/// server sends bookmarks no more than once a minute, and after it restarted quiet watches
/// were seen to get nothing at all for longer.
pub const WATCH_TIMEOUT_SECS: u32 = 45;

async fn client_from_kubeconfig(kubeconfig: &str) -> Result<kube::Client, Problem> {
    let invalid =
        |what: &str, error: String| Problem { reason: "KubeconfigInvalid", message: format!("{what}: {error}") };
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| invalid("parsing the kubeconfig", e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| invalid("loading the kubeconfig", e.to_string()))?;
    // A seed that does not answer must fail fast so it never holds up a sync pass.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(READ_TIMEOUT);
    kube::Client::try_from(config).map_err(|e| invalid("building a client", e.to_string()))
}

/// A reflector store, a stream that yields on every change of it, and a flag that turns
/// true once its first complete list has arrived (also opening `ready`).
fn watch_store<K>(
    api: Api<K>,
    ready: mla_common::admin::ReadinessGate,
) -> (Store<K>, impl futures::Stream<Item = ()> + Send + Unpin + 'static, watch::Receiver<bool>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (synced_tx, synced_rx) = watch::channel(false);
    let events = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(
        on_first_sync(events, move || {
            ready.set_ready();
            synced_tx.send_replace(true);
        })
        .for_each(move |event| {
            if let Err(error) = &event {
                tracing::warn!(%error, "watch failed; retrying");
            }
            let _ = tx.send(());
            futures::future::ready(())
        }),
    );
    (store, tokio_stream::wrappers::UnboundedReceiverStream::new(rx), synced_rx)
}

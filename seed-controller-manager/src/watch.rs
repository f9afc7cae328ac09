//! Watches shared by the seed controllers.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use mla_common::api::Cluster;
use mla_common::runtime::on_first_sync;
use mla_common::runtime::relisting_watcher;
use serde::de::DeserializeOwned;

/// How long a per-Cluster controller waits after the last change it watches before it
/// reconciles (trailing-edge debounce; a change arriving meanwhile restarts the wait). A
/// reconcile writes several objects, each of whose watch events asks for another
/// reconcile of the same Cluster: run at once, that one found its cache without the
/// objects just written and wrote them again (a fifth of the applies of a cold start,
/// half of the Services', each a no-op for the API server to work out). What this costs
/// is that second before a controller acts on a change.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps, of an object's managedFields, only the entries of `manager`, their field sets as
/// text ([`mla_common::apply::compact_managed_fields`]). A controller's applier reads its
/// own entry (to tell whether an apply would change anything); the other writers' entries
/// (every controller's status apply on a Cluster, the API server's own defaults, KKP's
/// writers) would only take memory in each controller's cache. `""` keeps none: for a
/// cache of objects the controller never applies.
pub fn only_managed_by<K: Resource>(manager: &str) -> impl FnMut(&mut K) + Send + Clone + 'static + use<K> {
    let manager = manager.to_string();
    move |object: &mut K| {
        let meta = object.meta_mut();
        if let Some(fields) = meta.managed_fields.as_mut() {
            fields.retain(|entry| !manager.is_empty() && entry.manager.as_deref() == Some(manager.as_str()));
            if fields.is_empty() {
                meta.managed_fields = None;
            }
        }
        mla_common::apply::compact_managed_fields(meta);
    }
}

/// What a controller's cache of Clusters keeps: its own managedFields entry and, of the
/// status conditions, its own (`condition`); every controller writes one condition, and
/// KKP many more, that no other controller reads.
pub fn cluster_view(
    manager: &str,
    condition: &'static str,
) -> impl FnMut(&mut Cluster) + Send + Clone + 'static + use<> {
    let mut fields = only_managed_by::<Cluster>(manager);
    move |cluster: &mut Cluster| {
        fields(cluster);
        if let Some(status) = cluster.status.as_mut() {
            status.conditions.retain(|name, _| name == condition);
        }
    }
}

/// A watch of all Clusters, each trimmed by [`cluster_view`], for a controller's reflector.
pub fn cluster_watch(
    client: &kube::Client,
    manager: &str,
    condition: &'static str,
) -> impl futures::Stream<Item = Result<watcher::Event<Cluster>, watcher::Error>> + Send + 'static + use<> {
    relisting_watcher(Api::<Cluster>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(cluster_view(manager, condition))
}

/// The Clusters of a (reflector's) event stream whose part a seed controller reads changed:
/// generation (any spec change, KKP's pause included), labels, deletion, the namespace and
/// address in the status, the controller's own `condition` and its own `finalizer` (and,
/// once the Cluster is being deleted, every finalizer: a cleanup may wait for KKP's).
/// Another controller's status write or finalizer (five controllers write a condition
/// each, two add a finalizer, the user-cluster-controller-manager writes health) wakes no
/// one else: at thousands of Clusters, waking every controller for every write multiplied
/// the reconciles (and their reads) several times over during a cold start.
pub fn cluster_changes<S>(
    events: S,
    condition: &'static str,
    finalizer: Option<&'static str>,
) -> impl futures::Stream<Item = Result<Cluster, watcher::Error>> + Send + 'static
where
    S: futures::Stream<Item = Result<watcher::Event<Cluster>, watcher::Error>> + Send + 'static,
{
    // A hash of the relevant part is all that is kept per Cluster (not the part itself).
    relevant_changes(events, move |cluster: &Cluster| {
        let meta = &cluster.metadata;
        let deleting = meta.deletion_timestamp.is_some();
        let ours = finalizer.is_some_and(|ours| meta.finalizers.iter().flatten().any(|f| f == ours));
        let relevant = serde_json::json!([
            meta.generation,
            meta.labels,
            ours,
            deleting,
            if deleting { meta.finalizers.clone() } else { None },
            cluster.status.as_ref().map(|s| (&s.namespace_name, &s.address)),
            cluster.condition(condition),
        ]);
        fingerprint(&relevant)
    })
}

/// A hash of `value`'s JSON text: what a watch keeps per object to tell whether the part
/// of it a controller reads changed (the part itself would take memory per object).
pub fn fingerprint(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// A reflector of a controller's children of one kind: the objects labelled
/// `app.kubernetes.io/name=<app>` (in all namespaces, or cluster-scoped), with only `manager`'s managedFields
/// ([`only_managed_by`]). `synced` is called once, with the first complete list; the
/// stream yields every object touched, for `owns_stream`.
pub fn children<K, F>(
    client: &kube::Client,
    app: &str,
    manager: &str,
    synced: F,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static + use<K, F>)
where
    F: FnOnce() + Send + 'static,
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let selector = format!("app.kubernetes.io/name={app}");
    let mut trim = only_managed_by::<K>(manager);
    let watch = relisting_watcher(Api::<K>::all(client.clone()), watcher::Config::default().labels(&selector))
        .default_backoff()
        .modify(move |object: &mut K| {
            trim(object);
            // A Deployment's pod template is kept as text (read only by the applier).
            if let Some(deployment) = (object as &mut dyn std::any::Any).downcast_mut::<Deployment>() {
                mla_common::apply::compact_deployment(deployment);
            }
        });
    let stream = on_first_sync(reflector::reflector(writer, watch), synced).touched_objects();
    (store, stream)
}

/// The object `key` from `store`, else (one we did not make carries none of our labels;
/// one just created may not be in the cache yet) from the API server.
pub async fn cached_or_get<K>(
    store: &Store<K>,
    api: &Api<K>,
    key: &ObjectRef<K>,
) -> Result<Option<std::sync::Arc<K>>, mla_common::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
{
    if let Some(object) = store.get(key) {
        return Ok(Some(object));
    }
    let object = api.get_opt(&key.name).await.map_err(|source| {
        let name = key.namespace.as_ref().map_or_else(|| key.name.clone(), |ns| format!("{ns}/{}", key.name));
        mla_common::Error::kube("get", K::kind(&()).into_owned(), name, source)
    })?;
    Ok(object.map(std::sync::Arc::new))
}

/// The object `key` as far as `store` knows, once it has synced: a store of every object
/// we make (by its label) that does not hold one means there is none, or one just created
/// whose event is on its way (and wakes the controller again). Before the first list is
/// in, the API server is asked ([`cached_or_get`]).
pub async fn known_or_get<K>(
    store: &Store<K>,
    api: &Api<K>,
    key: &ObjectRef<K>,
) -> Result<Option<std::sync::Arc<K>>, mla_common::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
{
    use futures::FutureExt;
    if store.wait_until_ready().now_or_never().is_some_and(|ready| ready.is_ok()) {
        return Ok(store.get(key));
    }
    cached_or_get(store, api, key).await
}

/// Runs a controller's results to the end (shutdown). Reconcile errors are logged by each
/// controller's `error_policy`; what is left to report here are failed watches, which the
/// controller retries.
pub async fn report_watch_errors<T, E: std::error::Error + 'static>(
    results: impl futures::Stream<Item = Result<T, controller::Error<E, watcher::Error>>>,
    what: &str,
) {
    results
        .for_each(|result| {
            if let Err(controller::Error::QueueError(error)) = result {
                tracing::warn!(%error, "{what} watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// The objects of a watch event stream whose `relevant` part changed since they were last
/// seen, and the deleted ones: a change elsewhere in an object (a status heartbeat, an
/// unrelated field) wakes no controller. Init markers are dropped; errors pass through.
pub fn relevant_changes<K, V, S>(
    events: S,
    relevant: impl Fn(&K) -> V + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    V: PartialEq + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen = std::collections::HashMap::<(Option<String>, String), V>::new();
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let key = (object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default());
                let value = relevant(&object);
                let same = seen.get(&key) == Some(&value);
                seen.insert(key, value);
                (!same).then_some(Ok(object))
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.remove(&(object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default()));
                Some(Ok(object))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(error) => Some(Err(error)),
        };
        futures::future::ready(changed)
    })
}

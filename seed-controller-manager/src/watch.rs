//! Watches shared by the seed controllers.

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use mla_common::runtime::on_first_sync;
use mla_common::runtime::relisting_watcher;
use serde::de::DeserializeOwned;

/// A reflector of a controller's children of one kind: the objects labelled
/// `app.kubernetes.io/name=<app>` in all namespaces. `synced` is called once, with the
/// first complete list; the stream yields every object touched, for `owns_stream`.
pub fn children<K>(
    client: &kube::Client,
    app: &str,
    synced: impl FnOnce() + Send + 'static,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let selector = format!("app.kubernetes.io/name={app}");
    let watch = relisting_watcher(Api::<K>::all(client.clone()), watcher::Config::default().labels(&selector))
        .default_backoff();
    let stream = on_first_sync(reflector::reflector(writer, watch), synced).touched_objects();
    (store, stream)
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

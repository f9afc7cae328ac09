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

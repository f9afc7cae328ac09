//! One watch per kind on the master, shared by every seed's synchronizer and the cleanup
//! controller: a reflector store to read from, and a lossy broadcast of changes so that a
//! slow consumer never holds up the watch or the other consumers (a consumer that falls
//! behind is told to resync everything instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use mla_common::admin::ReadinessGate;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::kinds::Synced;

/// How many changes a consumer may fall behind before it must resync everything.
const BROADCAST_CAPACITY: usize = 4096;

/// What a consumer receives.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// This object changed (or was listed).
    Object(Arc<K>),
    /// Changes were missed (the consumer lagged, or the watch re-listed): look at every
    /// object again.
    All,
}

/// The shared view of one kind in the master.
pub struct Fanout<K: Synced> {
    store: Store<K>,
    synced: tokio::sync::watch::Receiver<bool>,
    tx: broadcast::Sender<Change<K>>,
    clock: Arc<ChangeClock>,
}

impl<K: Synced> Clone for Fanout<K> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), synced: self.synced.clone(), tx: self.tx.clone(), clock: self.clock.clone() }
    }
}

impl<K: Synced> std::fmt::Debug for Fanout<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("kind", &K::CONTROLLER).finish_non_exhaustive()
    }
}

impl<K: Synced> Fanout<K> {
    /// The fan-out and the future that drives its watch (run it until shutdown).
    pub fn new(api: Api<K>, ready: ReadinessGate) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let clock = Arc::new(ChangeClock::default());
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let fanout = Self { store: store.clone(), synced, tx: tx.clone(), clock: clock.clone() };
        let drive = async move {
            let mut listed = false;
            let mut events =
                reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(object)) => {
                        clock.observed(&object);
                        let _ = tx.send(Change::Object(Arc::new(object)));
                    }
                    Ok(watcher::Event::InitApply(object)) => {
                        let _ = tx.send(Change::Object(Arc::new(object)));
                    }
                    Ok(watcher::Event::Delete(object)) => clock.forget(&object.name_any()),
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => {
                        if !listed {
                            listed = true;
                            ready.set_ready();
                            synced_tx.send_replace(true);
                        }
                        clock.retain(|name| store.get(&reflector::ObjectRef::new(name)).is_some());
                        let _ = tx.send(Change::All);
                    }
                    Err(error) => tracing::warn!(kind = K::CONTROLLER, %error, "master watch failed; retrying"),
                }
            }
        };
        (fanout, drive)
    }

    /// The master objects, as last seen.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits until the first complete list has arrived; false if the watch ended first.
    /// (Not `Store::wait_until_ready`: it wakes only one of several concurrent waiters.)
    pub async fn synced(&self) -> bool {
        self.synced.clone().wait_for(|synced| *synced).await.is_ok()
    }

    /// When the change now in `object` was first seen, if it was seen live (not listed).
    pub fn observed_at(&self, object: &K) -> Option<Instant> {
        self.clock.get(object)
    }

    /// A stream of changed objects for `Controller::for_shared_stream`, and a stream that
    /// fires when everything must be looked at again (for `reconcile_all_on`).
    pub fn subscribe(&self) -> (impl Stream<Item = Arc<K>> + Send + 'static, impl Stream<Item = ()> + Send + 'static) {
        let (resync_tx, resync_rx) = tokio::sync::mpsc::unbounded_channel();
        let objects = BroadcastStream::new(self.tx.subscribe()).filter_map(move |change| {
            let object = match change {
                Ok(Change::Object(object)) => Some(object),
                Ok(Change::All) | Err(BroadcastStreamRecvError::Lagged(_)) => {
                    let _ = resync_tx.send(());
                    None
                }
            };
            futures::future::ready(object)
        });
        (objects, tokio_stream::wrappers::UnboundedReceiverStream::new(resync_rx))
    }
}

/// When the latest change of each object was observed; bounded by the number of objects.
#[derive(Debug, Default)]
struct ChangeClock {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl ChangeClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn observed<K: Synced>(&self, object: &K) {
        let version = object.resource_version().unwrap_or_default();
        self.lock().insert(object.name_any(), (version, Instant::now()));
    }

    fn get<K: Synced>(&self, object: &K) -> Option<Instant> {
        let version = object.resource_version()?;
        self.lock().get(&object.name_any()).filter(|(v, _)| *v == version).map(|(_, at)| *at)
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }
}

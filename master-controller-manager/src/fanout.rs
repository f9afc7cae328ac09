//! One watch per kind on the master, shared by every seed's synchronizer and the cleanup
//! controller: a reflector store to read from, and a lossy broadcast of changes so that a
//! slow consumer never holds up the watch or the other consumers (a consumer that falls
//! behind is told to resync everything instead).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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
    /// This object changed (or was listed); true when what is copied of it changed (or
    /// its deletion began), false when only other metadata did (such as finalizers).
    Object(Arc<K>, bool),
    /// Changes were missed (the consumer lagged, or the watch re-listed): look at every
    /// object again.
    All,
}

/// Which changes a consumer wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Every change.
    All,
    /// Changes of what is copied (labels, body, status) and the start of a deletion:
    /// the seed synchronizers, which would otherwise look at every object again when the
    /// cleanup controller adds its finalizer.
    Copied,
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
            // Per object, a fingerprint of what is copied, to tell which changes matter
            // to the seeds.
            let mut copied: HashMap<String, u64> = HashMap::new();
            // Only what a copy or the finalizer handling reads is kept of each object.
            let watched = watcher(api, watcher::Config::default()).default_backoff().modify(|object: &mut K| {
                let meta = object.meta_mut();
                meta.managed_fields = None;
                meta.annotations = None;
                meta.owner_references = None;
                meta.creation_timestamp = None;
                meta.generation = None;
            });
            let mut events = reflector::reflector(writer, watched).boxed();
            // The store's own copy, so that queued changes hold no second one.
            let stored =
                |object: K| store.get(&reflector::ObjectRef::from_obj(&object)).unwrap_or_else(|| Arc::new(object));
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(object)) => {
                        clock.observed(&object);
                        let fingerprint = copied_fingerprint(&object);
                        let changed = copied.insert(object.name_any(), fingerprint) != Some(fingerprint);
                        let _ = tx.send(Change::Object(stored(object), changed));
                    }
                    Ok(watcher::Event::InitApply(object)) => {
                        copied.insert(object.name_any(), copied_fingerprint(&object));
                        let _ = tx.send(Change::Object(stored(object), true));
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        clock.forget(&object.name_any());
                        copied.remove(&object.name_any());
                    }
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => {
                        if !listed {
                            listed = true;
                            ready.set_ready();
                            synced_tx.send_replace(true);
                        }
                        clock.retain(|name| store.get(&reflector::ObjectRef::new(name)).is_some());
                        copied.retain(|name, _| store.get(&reflector::ObjectRef::new(name)).is_some());
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
    pub fn subscribe(
        &self,
        interest: Interest,
    ) -> (impl Stream<Item = Arc<K>> + Send + 'static, impl Stream<Item = ()> + Send + 'static) {
        let (resync_tx, resync_rx) = tokio::sync::mpsc::unbounded_channel();
        let objects = BroadcastStream::new(self.tx.subscribe()).filter_map(move |change| {
            let object = match change {
                Ok(Change::Object(object, copied)) => (copied || interest == Interest::All).then_some(object),
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

/// A fingerprint of what is copied of `object` (labels, body, status) and of whether it
/// is being deleted.
fn copied_fingerprint<K: Synced>(object: &K) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.labels().hash(&mut hasher);
    object.body_digest().hash(&mut hasher);
    object.status_digest().hash(&mut hasher);
    object.meta().deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
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

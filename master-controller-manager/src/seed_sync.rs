//! Keeps one seed's copies of one kind in step with the master: labels and spec, then
//! status; deletes copies of objects being deleted, and orphaned copies we made. Each seed
//! and kind has its own controller and queue, so a slow or unreachable seed holds up
//! nobody else.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use mla_common::apply::{Applied, Applier};
use mla_common::backoff::Backoff;
use mla_common::metrics::ControllerMetrics;
use tokio_util::sync::CancellationToken;

use crate::copies::Copies;
use crate::fanout::{Fanout, Interest};
use crate::kinds::Synced;
use crate::metrics::{SeedKindLabels, SyncErrorLabels, SyncMetrics};
use crate::queue::Queue;
use crate::seeds::SeedHandle;
use mla_common::runtime::relisting_watcher;

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The seed's API server did not answer our watch; the object is synced when it does.
    #[error("seed {0} is unreachable")]
    Unreachable(String),
    /// A write failed.
    #[error(transparent)]
    Write(#[from] mla_common::Error),
}

impl SyncError {
    fn category(&self) -> &'static str {
        match self {
            SyncError::Unreachable(_) => "seed_unreachable",
            SyncError::Write(error) => error.category(),
        }
    }
}

/// Settings shared by all seed synchronizers.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// Every object is looked at again this often, even without a change.
    pub resync_period: Duration,
    /// Objects reconciled at once per seed and kind.
    pub concurrency: u16,
}

struct Context<K: Synced> {
    seed: Arc<SeedHandle>,
    /// Whether this kind's watch of the seed is connected (set by the watch itself).
    reachable: Arc<AtomicBool>,
    /// Whether the watch ever delivered a complete list (before that, "not reachable"
    /// only means "not listed yet", which is no error).
    listed: Arc<AtomicBool>,
    api: Api<K>,
    /// The copies in the seed, reduced to what tells whether they are current.
    copies: Arc<Copies>,
    fanout: Fanout<K>,
    applier: Applier,
    backoff: Backoff<String>,
    metrics: SyncMetrics,
    reconciles: ControllerMetrics,
    in_sync: Mutex<HashSet<String>>,
}

impl<K: Synced> Context<K> {
    fn labels(&self) -> SeedKindLabels {
        SeedKindLabels { seed: self.seed.name.clone(), kind: K::CONTROLLER }
    }

    fn mark(&self, name: &str, in_sync: bool) {
        let mut set = self.in_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = if in_sync { set.insert(name.to_string()) } else { set.remove(name) };
        if changed {
            self.metrics.in_sync.get_or_create(&self.labels()).set(set.len() as i64);
        }
    }
}

/// Whether the seed is the master cluster itself: the same `kube-system` namespace UID.
pub async fn is_same_cluster(master: &kube::Client, seed: &kube::Client) -> Result<bool, kube::Error> {
    let uid = |client: kube::Client| async move {
        Api::<Namespace>::all(client).get("kube-system").await.map(|ns| ns.metadata.uid)
    };
    Ok(uid(master.clone()).await? == uid(seed.clone()).await?)
}

/// Signals once that a synchronizer's first pass is over: after the first complete list
/// of the seed's copies, every master object was looked at once (created, updated, found
/// current, or failed and left to its retry) and nothing is queued or running. Dropped
/// unsent when the synchronizer stops or never starts.
pub type FirstPass = tokio::sync::oneshot::Sender<()>;

/// Syncs kind `K` to `seed` until `stop`; sends `first_pass` when its first pass is over.
#[allow(clippy::too_many_arguments)]
pub async fn run<K: Synced>(
    seed: Arc<SeedHandle>,
    fanout: Fanout<K>,
    applier: Applier,
    metrics: SyncMetrics,
    reconciles: ControllerMetrics,
    settings: SyncSettings,
    first_pass: FirstPass,
    stop: CancellationToken,
) {
    let api: Api<K> = Api::all(seed.client.clone());
    let copies = Arc::new(Copies::default());
    let (resync_tx, resync_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reachable = Arc::new(AtomicBool::new(false));
    let listed = Arc::new(AtomicBool::new(false));
    let watch_reachable = reachable.clone();
    let watch_listed = listed.clone();
    let seed_name = seed.name.clone();
    let seed_labels = crate::metrics::SeedLabels { seed: seed.name.clone() };
    let reachable_metric = metrics.reachable.clone();
    let manager = applier.field_manager().to_string();
    let config = watcher::Config::default().timeout(crate::seeds::WATCH_TIMEOUT_SECS);
    // Every recovery ends in a fresh list, so its InitDone marks the seed reachable again.
    let watched = relisting_watcher(api.clone(), config).default_backoff();
    let store = copies.clone();
    // Each copy is reduced to its state as it arrives; a changed state wakes its original.
    let copy_changes = watched.filter_map(move |event| {
        let changed = match event {
            Ok(event) => {
                let done = matches!(event, watcher::Event::InitDone);
                let changed = store.apply(event, &manager);
                if done {
                    // (Re)connected: look at everything, including what failed meanwhile.
                    watch_reachable.store(true, Ordering::SeqCst);
                    watch_listed.store(true, Ordering::SeqCst);
                    reachable_metric.get_or_create(&seed_labels).set(1);
                    let _ = resync_tx.send(());
                }
                changed
            }
            Err(error) => {
                if watch_reachable.swap(false, Ordering::SeqCst) {
                    tracing::warn!(seed = %seed_name, kind = K::CONTROLLER, %error, "seed unreachable");
                }
                reachable_metric.get_or_create(&seed_labels).set(0);
                None
            }
        };
        futures::future::ready(changed)
    });

    let (objects, lagged) = fanout.subscribe(Interest::Copied);
    let periodic =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(settings.resync_period)).map(|_| ());
    let resync = futures::stream::select(
        futures::stream::select(lagged, tokio_stream::wrappers::UnboundedReceiverStream::new(resync_rx)),
        periodic,
    );
    let master_store = fanout.store();
    let context = Arc::new(Context {
        seed: seed.clone(),
        reachable,
        listed,
        api,
        copies,
        fanout,
        applier,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        metrics,
        reconciles,
        in_sync: Mutex::default(),
    });
    if tokio::select! { () = stop.cancelled() => true, synced = context.fanout.synced() => !synced } {
        return;
    }
    // Everything that asks for a look at an object queues its name; `concurrency`
    // workers take names from the queue.
    let queue = Arc::new(Queue::default());
    // Set once a look at everything was queued after the first complete list; from then
    // on an idle queue means the first pass is over.
    let pass_queued = AtomicBool::new(false);
    let first_pass = Mutex::new(Some(first_pass));
    let pass_over = || {
        if pass_queued.load(Ordering::SeqCst)
            && queue.is_idle()
            && let Some(sender) = first_pass.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
        {
            tracing::info!(seed = %seed.name, kind = K::CONTROLLER, "first pass over the objects done");
            let _ = sender.send(());
        }
    };
    let listed = context.listed.clone();
    let feeds = {
        let master_changes = objects.for_each(|object| {
            queue.push(&object.name_any());
            futures::future::ready(())
        });
        let copy_changes = copy_changes.for_each(|name| {
            queue.push(&name);
            futures::future::ready(())
        });
        let resyncs = resync.for_each(|()| {
            // Read before queueing: a look queued after the list is a real one.
            let listed = listed.load(Ordering::SeqCst);
            for object in master_store.state() {
                queue.push(&object.name_any());
            }
            if listed {
                pass_queued.store(true, Ordering::SeqCst);
                pass_over();
            }
            futures::future::ready(())
        });
        async {
            tokio::join!(master_changes, copy_changes, resyncs);
        }
    };
    let workers = futures::future::join_all((0..settings.concurrency).map(|_| {
        let (queue, master_store, context, stop) = (queue.clone(), master_store.clone(), context.clone(), stop.clone());
        let pass_over = &pass_over;
        async move {
            while let Some(name) = queue.next(&stop).await {
                // Gone from the master: nothing to copy (orphans are swept).
                if let Some(object) = master_store.get(&ObjectRef::new(&name))
                    && let Err(error) = reconcile(object.clone(), context.clone()).await
                    && let Some(delay) = error_policy(&*object, &error, &*context)
                {
                    queue.push_after(name.to_string(), delay, stop.clone());
                }
                queue.done(&name);
                pass_over();
            }
        }
    }));
    let sweep = sweep_orphans(context, settings.resync_period, stop.clone());
    let until_stopped = async {
        tokio::select! {
            () = stop.cancelled() => {}
            () = feeds => {}
        }
    };
    tokio::join!(until_stopped, workers, sweep);
}

#[tracing::instrument(skip(object, ctx), fields(seed = %ctx.seed.name, kind = K::CONTROLLER, name = %object.name_any()))]
async fn reconcile<K: Synced>(object: Arc<K>, ctx: Arc<Context<K>>) -> Result<(), SyncError> {
    let started = Instant::now();
    let result = sync::<K>(&object, &ctx).await;
    let common_error = match &result {
        Err(SyncError::Write(error)) => Some(error),
        _ => None,
    };
    ctx.reconciles.observe(started.elapsed(), common_error);
    result
}

async fn sync<K: Synced>(object: &K, ctx: &Context<K>) -> Result<(), SyncError> {
    let name = object.name_any();
    if !ctx.listed.load(Ordering::SeqCst) {
        // The first complete list of the copies triggers a pass over everything.
        return Ok(());
    }
    if !ctx.reachable.load(Ordering::SeqCst) {
        return Err(SyncError::Unreachable(ctx.seed.name.clone()));
    }
    // None: the seed has no copy; Some(equal): it has one, equal to the original or not.
    let copy = ctx.copies.with(&name, |state| state.map(|state| state.matches(object)));
    if object.meta().deletion_timestamp.is_some() {
        if copy.is_some() {
            ctx.applier.delete(&ctx.api, &name).await?;
            tracing::info!("deleted the copy");
        }
        ctx.backoff.reset(&name);
        ctx.mark(&name, false);
        return Ok(());
    }
    let wrote = match copy {
        Some(true) => false,
        None => create(object, ctx).await?,
        Some(false) => update(object, ctx).await?,
    };
    if wrote {
        tracing::debug!("copied");
        if let Some(observed) = ctx.fanout.observed_at(object) {
            ctx.metrics.latency.get_or_create(&ctx.labels()).observe(observed.elapsed().as_secs_f64());
        }
    }
    ctx.backoff.reset(&name);
    ctx.mark(&name, true);
    Ok(())
}

/// Creates the copy (a plain create, the cheapest write for the seed's API server; the
/// copy's fields are then owned by our field manager through an `Update` entry), then
/// applies its status. When the copy exists after all (our view of the seed lags behind
/// a create), it is compared and updated instead.
async fn create<K: Synced>(object: &K, ctx: &Context<K>) -> Result<bool, SyncError> {
    let name = object.name_any();
    ctx.applier.ensure_leader("create", &name)?;
    let params = PostParams { field_manager: Some(ctx.applier.field_manager().to_string()), ..Default::default() };
    ctx.applier.count::<K>("create");
    match ctx.api.create(&params, &object.copy()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => return update(object, ctx).await,
        Err(source) => return Err(write_error::<K>("create", &name, source)),
    }
    if let Some(status) = object.status_copy() {
        ctx.applier.apply_status(&ctx.api, &status, None).await?;
    }
    Ok(true)
}

/// Reads the copy and makes it equal to the original: labels and body applied, status
/// applied, fields the original lacks removed. Each write only if needed.
async fn update<K: Synced>(object: &K, ctx: &Context<K>) -> Result<bool, SyncError> {
    let name = object.name_any();
    let current = ctx.api.get_opt(&name).await.map_err(|source| write_error::<K>("read the copy of", &name, source))?;
    let mut wrote = ctx.applier.apply(&ctx.api, &object.copy(), current.as_ref()).await? == Applied::Patched;
    if let Some(status) = object.status_copy() {
        // Without a copy, the apply just created it, with no status: compare against nothing.
        wrote |= ctx.applier.apply_status(&ctx.api, &status, current.as_ref()).await? == Applied::Patched;
    }
    if let Some(current) = current.as_ref() {
        wrote |= remove_foreign_fields(object, current, ctx).await?;
    }
    Ok(wrote)
}

/// Removes from the copy what the original does not have and our apply cannot remove
/// because another field manager wrote it (a KKP synchronizer, a person, an earlier
/// version of the original, or our own create, whose fields belong to an `Update` entry):
/// the copy must equal the original field for field. A JSON merge patch of nulls, sent
/// only when such a field exists. Labels are removed only when our field manager wrote
/// them through an update (a create or an earlier merge patch); labels others added stay.
async fn remove_foreign_fields<K: Synced>(object: &K, current: &K, ctx: &Context<K>) -> Result<bool, SyncError> {
    let name = object.name_any();
    let mut wrote = false;
    let (body, current_body) = (serde_json::Value::Object(object.body()), serde_json::Value::Object(current.body()));
    let mut patch = crate::kinds::foreign_fields(&current_body, &body);
    let labels = labels_we_updated(current, ctx.applier.field_manager())
        .into_iter()
        .filter(|key| !object.labels().contains_key(key) && current.labels().contains_key(key))
        .map(|key| (key, serde_json::Value::Null))
        .collect::<serde_json::Map<_, _>>();
    if !labels.is_empty() {
        let patch = patch.get_or_insert_with(|| serde_json::json!({}));
        patch["metadata"] = serde_json::json!({ "labels": labels });
    }
    if let Some(patch) = patch {
        ctx.applier.ensure_leader("remove foreign fields from", &name)?;
        ctx.applier.count::<K>("patch");
        ctx.api
            .patch(&name, &merge_params(ctx), &Patch::Merge(&patch))
            .await
            .map_err(|source| write_error::<K>("remove foreign fields from", &name, source))?;
        tracing::info!(fields = %patch, "removed fields the original does not have");
        wrote = true;
    }
    if let (Some(want), Some(have)) = (object.status_value(), current.status_value())
        && let Some(patch) = crate::kinds::foreign_fields(have, want)
    {
        ctx.applier.ensure_leader("remove foreign status fields from", &name)?;
        ctx.applier.count::<K>("patch_status");
        let patch = serde_json::json!({ "status": patch });
        ctx.api
            .patch_status(&name, &merge_params(ctx), &Patch::Merge(&patch))
            .await
            .map_err(|source| write_error::<K>("remove foreign status fields from", &name, source))?;
        tracing::info!(fields = %patch, "removed status fields the original does not have");
        wrote = true;
    }
    Ok(wrote)
}

/// Label keys that `manager` owns on `object` through an update (not an apply: what an
/// apply owns, the next apply removes by itself).
fn labels_we_updated<K: Synced>(object: &K, manager: &str) -> Vec<String> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.operation.as_deref() != Some("Apply")
                && entry.subresource.as_deref().is_none_or(str::is_empty)
        })
        .filter_map(|entry| entry.fields_v1.as_ref()?.0.pointer("/f:metadata/f:labels")?.as_object())
        .flat_map(|labels| labels.keys().filter_map(|key| key.strip_prefix("f:")).map(str::to_string))
        .collect()
}

fn merge_params<K: Synced>(ctx: &Context<K>) -> PatchParams {
    PatchParams { field_manager: Some(ctx.applier.field_manager().to_string()), ..Default::default() }
}

fn write_error<K: Synced>(verb: &'static str, name: &str, source: kube::Error) -> SyncError {
    SyncError::Write(mla_common::Error::Kube {
        verb,
        kind: K::kind(&()).into_owned(),
        object: name.to_string(),
        source: Box::new(source),
    })
}

/// When to look at `object` again after `error`; None: at the next change or resync.
fn error_policy<K: Synced>(object: &K, error: &SyncError, ctx: &Context<K>) -> Option<Duration> {
    let name = object.name_any();
    ctx.mark(&name, false);
    ctx.metrics
        .errors
        .get_or_create(&SyncErrorLabels {
            seed: ctx.seed.name.clone(),
            kind: K::CONTROLLER,
            category: error.category(),
        })
        .inc();
    match error {
        // Everything is looked at again when the seed's watch reconnects.
        SyncError::Unreachable(_) => None,
        SyncError::Write(error) if error.is_permanent() => {
            tracing::warn!(seed = %ctx.seed.name, kind = K::CONTROLLER, %name, %error, "sync failed permanently");
            Some(mla_common::Error::PERMANENT_RECHECK)
        }
        SyncError::Write(error) => {
            let delay = ctx.backoff.next_delay(&name);
            tracing::warn!(seed = %ctx.seed.name, kind = K::CONTROLLER, %name, %error, ?delay, "sync failed; retrying");
            Some(delay)
        }
    }
}

/// Deletes copies whose original is gone (deleted while we were not looking, or before
/// it carried our finalizer). Only copies our field manager wrote are touched.
async fn sweep_orphans<K: Synced>(ctx: Arc<Context<K>>, period: Duration, stop: CancellationToken) {
    let master = ctx.fanout.store();
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Forget objects that left the master without passing through a reconcile.
        let gone: Vec<String> = {
            let set = ctx.in_sync.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            set.iter().filter(|name| master.get(&ObjectRef::new(name)).is_none()).cloned().collect()
        };
        for name in gone {
            ctx.mark(&name, false);
            ctx.backoff.reset(&name);
        }
        // Reachable means this watch delivered a complete list: the copies store is filled.
        if !ctx.reachable.load(Ordering::SeqCst) {
            continue;
        }
        let orphans =
            ctx.copies.names(|name, copy| copy.ours && !copy.deleting && master.get(&ObjectRef::new(name)).is_none());
        for name in orphans {
            match ctx.applier.delete(&ctx.api, &name).await {
                Ok(()) => {
                    tracing::info!(seed = %ctx.seed.name, kind = K::CONTROLLER, %name, "deleted an orphaned copy")
                }
                Err(error) => {
                    tracing::warn!(seed = %ctx.seed.name, kind = K::CONTROLLER, %name, %error, "deleting an orphaned copy failed")
                }
            }
        }
    }
}

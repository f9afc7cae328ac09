//! The finalizer on master objects: added while there is a seed to copy to (once every
//! seed's first pass is done), removed once no seed holds a copy any more. The per-seed synchronizers do the deleting; this
//! controller only decides when the master object may go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::metrics::ControllerMetrics;
use tokio_util::sync::CancellationToken;

use crate::fanout::Fanout;
use crate::kinds::Synced;
use crate::seeds::Registry;

/// How long a seed may take to answer whether it still holds a copy.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

struct Context<K: Synced> {
    api: Api<K>,
    registry: Arc<Registry>,
    applier: Applier,
    backoff: Backoff<String>,
    metrics: ControllerMetrics,
}

/// What the cleanup controllers of all kinds share.
#[derive(Clone)]
pub struct Cleanup {
    /// Client of the master.
    pub master: kube::Client,
    /// The seeds served.
    pub registry: Arc<Registry>,
    /// Writes (finalizers) as `master-controller-manager/cleanup`.
    pub applier: Applier,
    /// Objects handled at once per kind.
    pub concurrency: u16,
    /// Stops the controllers.
    pub stop: CancellationToken,
}

impl Cleanup {
    /// Runs the cleanup controller of kind `K` until `stop`.
    pub async fn run<K: Synced>(self, fanout: Fanout<K>, metrics: ControllerMetrics) {
        let (objects, lagged) = fanout.subscribe(crate::fanout::Interest::All);
        let store = fanout.store();
        if !fanout.synced().await {
            return;
        }
        // Everything is looked at once at the start too: the master's initial list, or a
        // seed finishing its first pass, may have come before this controller subscribed
        // (a replica that became leader late).
        let resync = futures::stream::select(
            lagged,
            futures::stream::once(futures::future::ready(())).chain(self.registry.changes()),
        );
        let context = Arc::new(Context {
            api: Api::all(self.master),
            registry: self.registry,
            applier: self.applier,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            metrics,
        });
        Controller::for_shared_stream(objects, store)
            .reconcile_all_on(resync)
            .with_config(kube::runtime::controller::Config::default().concurrency(self.concurrency))
            .graceful_shutdown_on(self.stop.cancelled_owned())
            .run(reconcile::<K>, error_policy::<K>, context)
            .for_each(|_| futures::future::ready(()))
            .await;
    }
}

#[tracing::instrument(skip(object, ctx), fields(kind = K::CONTROLLER, name = %object.name_any()))]
async fn reconcile<K: Synced>(object: Arc<K>, ctx: Arc<Context<K>>) -> Result<Action, mla_common::Error> {
    let started = Instant::now();
    let result = cleanup::<K>(&object, &ctx).await;
    ctx.metrics.observe(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.backoff.reset(&object.name_any());
    }
    result
}

async fn cleanup<K: Synced>(object: &K, ctx: &Context<K>) -> Result<Action, mla_common::Error> {
    let name = object.name_any();
    let seeds = ctx.registry.snapshot();
    if seeds.iter().any(|s| s.same_cluster().is_none()) {
        // Until every seed is known to be another cluster or this one, neither add
        // (a write that a master-as-seed setup must not see) nor remove the finalizer.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let remote: Vec<_> = seeds.into_iter().filter(|s| s.same_cluster() == Some(false)).collect();
    let has_finalizer = object.finalizers().iter().any(|f| f == K::FINALIZER);
    if object.meta().deletion_timestamp.is_none() {
        // Additions wait until every seed's synchronizers finished their first pass (or
        // --finalizer-hold ran out): on a cold start the master's API server, usually on
        // the same machines as the seeds', then serves the copying first instead of one
        // finalizer patch per object beside it. Safe: an original deleted before it got
        // the finalizer goes at once, and the orphan sweep of each seed synchronizer
        // (seed_sync::sweep_orphans) deletes its copies within a resync period. The seed
        // reporting its first pass bumps the registry, which reconciles everything again.
        let held = remote.iter().any(|s| !s.first_pass_done());
        if !remote.is_empty() && !has_finalizer && !held {
            ctx.applier.add_finalizer(&ctx.api, object, K::FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    // Deletions never wait for the first pass: the copies are deleted and the finalizer
    // released as soon as every seed has none.
    if !has_finalizer {
        return Ok(Action::await_change());
    }
    let checks = remote.iter().map(|seed| {
        let api: Api<K> = Api::all(seed.client.clone());
        let name = name.clone();
        async move { (seed.name.clone(), tokio::time::timeout(CHECK_TIMEOUT, api.get_opt(&name)).await) }
    });
    let mut waiting = Vec::new();
    for (seed, check) in futures::future::join_all(checks).await {
        match check {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(_))) => waiting.push(format!("{seed}: copy not deleted yet")),
            Ok(Err(error)) => waiting.push(format!("{seed}: {error}")),
            Err(_) => waiting.push(format!("{seed}: no answer within {CHECK_TIMEOUT:?}")),
        }
    }
    if waiting.is_empty() {
        ctx.applier.remove_finalizer(&ctx.api, object, K::FINALIZER).await?;
        tracing::info!("copies deleted in every seed; released the finalizer");
        return Ok(Action::await_change());
    }
    Err(mla_common::Error::MissingDependency {
        kind: "copy deletion",
        object: name,
        reason: format!("waiting for seeds: {}", waiting.join("; ")),
    })
}

fn error_policy<K: Synced>(object: Arc<K>, error: &mla_common::Error, ctx: Arc<Context<K>>) -> Action {
    let delay = ctx.backoff.next_delay(&object.name_any());
    tracing::info!(kind = K::CONTROLLER, name = %object.name_any(), %error, ?delay, "cleanup not finished; retrying");
    Action::requeue(delay)
}

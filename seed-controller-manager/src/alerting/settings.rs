//! Releases KKP's finalizer (`kubermatic.k8c.io/mla`) on MLAAdminSettings being deleted.
//!
//! KKP's rate-limit controller put it there to take the tenant's limits out of Cortex's
//! runtime configuration before the setting goes. The cluster controller already treats a
//! setting being deleted as absent; this controller does the same cleanup on its own (the
//! Cluster may be gone already, e.g. when its namespace is deleted with everything in it)
//! and then lets the setting go. Only while this system is the seed's MLA: otherwise KKP's
//! controllers may still own the finalizer.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Cluster, MLAAdminSetting};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::runtime::Runtime;

use super::limits::{self, LimitsOutcome};
use super::{AlertingError, Shared};
use crate::scope::{self, KKP_MLA_FINALIZER};

struct Context {
    client: kube::Client,
    applier: Applier,
    backoff: Backoff<String>,
    shared: Shared,
    clusters: Store<Cluster>,
}

/// The controller, running until shutdown (it does nothing while MLA is not offered).
pub(super) fn run(
    runtime: &Runtime,
    shared: Shared,
    clusters: Store<Cluster>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = runtime.client.clone();
    let context = Arc::new(Context {
        client: client.clone(),
        applier: runtime.applier(super::cluster::CONTROLLER),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        shared,
        clusters,
    });
    let leader_gained = runtime.leader.gained();
    let stop = runtime.shutdown.clone();
    async move {
        if !context.shared.mla_enabled {
            return;
        }
        let results = Controller::new(Api::<MLAAdminSetting>::all(client), watcher::Config::default())
            .reconcile_all_on(leader_gained)
            .with_config(ControllerConfig::default().concurrency(2))
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, context);
        crate::watch::report_watch_errors(results, "mla admin settings").await;
    }
}

fn key(setting: &MLAAdminSetting) -> String {
    format!("{}/{}", setting.namespace().unwrap_or_default(), setting.name_any())
}

async fn reconcile(setting: Arc<MLAAdminSetting>, ctx: Arc<Context>) -> Result<Action, AlertingError> {
    if !ctx.applier.is_leader()
        || setting.meta().deletion_timestamp.is_none()
        || !scope::has_finalizer(setting.as_ref(), KKP_MLA_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let tenant = &setting.spec.cluster_name;
    let cluster = ctx.clusters.get(&ObjectRef::new(tenant));
    let namespace = cluster.as_ref().and_then(|c| c.status.as_ref()?.namespace_name.clone());
    // Only the setting in the tenant's own namespace (or of a tenant that is gone) may take
    // limits away: a setting elsewhere naming another cluster never applied any.
    if !tenant.is_empty()
        && (cluster.is_none() || namespace == setting.namespace())
        && let LimitsOutcome::Unreadable(reason) = limits::sync(
            &ctx.client,
            &ctx.applier,
            &ctx.shared.runtime_config,
            &ctx.shared.runtime_config_cache,
            tenant,
            None,
        )
        .await?
    {
        // Holding the setting would not make the runtime configuration readable.
        tracing::warn!(setting = %key(&setting), reason, "the tenant's limits could not be removed");
    }
    let api: Api<MLAAdminSetting> = Api::namespaced(ctx.client.clone(), &setting.namespace().unwrap_or_default());
    ctx.applier.remove_finalizer(&api, setting.as_ref(), KKP_MLA_FINALIZER).await?;
    ctx.backoff.reset(&key(&setting));
    tracing::info!(setting = %key(&setting), "released KKP's finalizer after removing the tenant's limits");
    Ok(Action::await_change())
}

fn error_policy(setting: Arc<MLAAdminSetting>, error: &AlertingError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&key(&setting));
    tracing::warn!(setting = %key(&setting), %error, ?delay, "releasing KKP's finalizer failed");
    Action::requeue(delay)
}

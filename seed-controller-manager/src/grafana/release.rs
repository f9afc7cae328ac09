//! Passes that cannot serve: MLA off in the seed (release everything), and Grafana
//! unavailable (report it on every MLA Cluster and Project).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Cluster, ConditionStatus, Project, User};

use super::client::GrafanaClient;
use super::controller::{
    CONDITION, Context, FINALIZER, KUBE_CONCURRENCY, PassError, has_finalizer, in_flight, is_deleting, write_condition,
};
use super::{datasources, orgs};
use crate::scope::Serve;

/// MLA is not offered in this seed: datasources of Clusters that still carry the
/// finalizer are removed, and every finalizer released. Organizations and users stay.
pub(super) async fn release(ctx: &Context, grafana: &GrafanaClient) -> Result<(), PassError> {
    let projects = ctx.stores.projects.state();
    let clusters: Vec<Arc<Cluster>> =
        ctx.stores.clusters.state().into_iter().filter(|c| has_finalizer(c.as_ref())).collect();
    if !clusters.is_empty() {
        let all_orgs = grafana.orgs().await?;
        let superuser =
            ctx.settings.superuser_org.as_ref().and_then(|n| all_orgs.iter().find(|o| &o.name == n)).map(|o| o.id);
        let api: Api<Cluster> = Api::all(ctx.client.clone());
        for cluster in clusters {
            let project = projects.iter().find(|p| Some(p.name_any().as_str()) == cluster.project_id());
            let org = project.and_then(|p| orgs::annotated_id(p)).filter(|id| all_orgs.iter().any(|o| o.id == *id));
            for org in org.into_iter().chain(superuser) {
                for kind in datasources::KINDS {
                    let name = cluster.name_any();
                    let uid = datasources::uid(kind, &name);
                    grafana.delete_datasource(org, &uid).await?;
                    // A long name's KKP-style uid, made before Grafana 12 refused it.
                    let kkp = format!("{kind}-{name}");
                    if kkp != uid {
                        grafana.delete_datasource(org, &kkp).await?;
                    }
                }
            }
            if let Err(error) = ctx.applier.remove_finalizer(&api, cluster.as_ref(), FINALIZER).await {
                tracing::warn!(%error, "removing the Grafana finalizer failed");
            }
            if let Err(error) = write_condition(ctx, &cluster, None).await {
                tracing::warn!(%error, "removing the Grafana condition failed");
            }
        }
    }
    let project_api: Api<Project> = Api::all(ctx.client.clone());
    for project in projects.iter().filter(|p| has_finalizer(p.as_ref())) {
        if let Err(error) = ctx.applier.remove_finalizer(&project_api, project.as_ref(), FINALIZER).await {
            tracing::warn!(%error, "removing the Grafana finalizer failed");
        }
    }
    let user_api: Api<User> = Api::all(ctx.client.clone());
    for user in ctx.stores.users.state().iter().filter(|u| has_finalizer(u.as_ref())) {
        if let Err(error) = ctx.applier.remove_finalizer(&user_api, user.as_ref(), FINALIZER).await {
            tracing::warn!(%error, "removing the Grafana finalizer failed");
        }
    }
    Ok(())
}

/// Grafana could not be used at all: every MLA Cluster says so (once), with an Event on
/// the transition; every Project gets one Event per outage.
pub(super) async fn report_unavailable(ctx: &Context, error: &PassError) {
    if !ctx.applier.is_leader() {
        return;
    }
    let new_outage = {
        let mut outage = ctx.outage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = *outage != Some(error.reason());
        *outage = Some(error.reason());
        new
    };
    if new_outage && ctx.settings.mla_enabled {
        for project in ctx.stores.projects.state().iter().filter(|p| !is_deleting(p.as_ref())) {
            ctx.events.warning(&project.object_ref(&()), error.reason(), "ReconcileGrafana", error.to_string()).await;
        }
    }
    // Every MLA Cluster's condition, several at a time (thousands of Clusters would
    // otherwise take as many sequential writes to learn of the outage).
    let clusters = ctx.stores.clusters.state();
    let steps: Vec<BoxFuture<'_, ()>> =
        clusters.iter().map(|cluster| report_cluster_unavailable(ctx, cluster, error).boxed()).collect();
    in_flight(steps, KUBE_CONCURRENCY).collect::<Vec<()>>().await;
}

/// The outage on one Cluster: its condition (and an Event when it changes), or, for a
/// Cluster that no longer has MLA, the condition of an earlier outage removed.
async fn report_cluster_unavailable(ctx: &Context, cluster: &Cluster, error: &PassError) {
    if ctx.settings.scope.serves(cluster) != Serve::Yes {
        return;
    }
    let has_namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.as_ref()).is_some();
    if !(ctx.settings.mla_enabled && cluster.mla_enabled() && has_namespace && !is_deleting(cluster)) {
        // A condition from an earlier outage on a cluster that no longer has MLA goes
        // (no request when there is none).
        if let Err(write) = write_condition(ctx, cluster, None).await {
            tracing::warn!(cluster = %cluster.name_any(), error = %write, "removing the Grafana condition failed");
        }
        return;
    }
    let reason = error.reason();
    let existing = cluster.status.as_ref().and_then(|s| s.conditions.get(CONDITION)).and_then(|c| c.reason.clone());
    if existing.as_deref() != Some(reason) {
        ctx.events.warning(&cluster.object_ref(&()), reason, "ReconcileGrafana", error.to_string()).await;
    }
    if let Err(write) = write_condition(ctx, cluster, Some((ConditionStatus::False, reason, error.to_string()))).await {
        tracing::warn!(cluster = %cluster.name_any(), error = %write, "writing the Grafana condition failed");
    }
}

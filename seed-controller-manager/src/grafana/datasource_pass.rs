//! The datasource step of a pass: every managed org's datasources in line with the
//! Clusters, then the Clusters' finalizers and conditions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Cluster, ConditionStatus, Project};

use super::client::{GrafanaClient, GrafanaError};
use super::controller::{
    Context, FINALIZER, KUBE_CONCURRENCY, PassError, has_finalizer, in_flight, is_deleting, write_condition,
};
use super::datasources;
use crate::scope::{self, KKP_MLA_FINALIZER, Serve};

/// Stands in for the error of a cluster whose datasource changes wait for their retry.
const WAITING: &str = "waiting to retry";

/// Brings every managed org's datasources in line with the Clusters, then the Clusters'
/// finalizers and conditions.
#[allow(clippy::too_many_arguments)]
pub(super) async fn reconcile_datasources(
    ctx: &Context,
    grafana: &GrafanaClient,
    clusters: &[Arc<Cluster>],
    projects: &[Arc<Project>],
    project_orgs: &BTreeMap<String, i64>,
    superuser_org: Option<i64>,
    managed: &BTreeSet<i64>,
) -> Result<(), PassError> {
    let api: Api<Cluster> = Api::all(ctx.client.clone());
    let mut desired: BTreeMap<i64, Vec<datasources::DesiredDatasource>> = BTreeMap::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    // Paused Clusters and other workers' are left alone: their datasources, finalizers and
    // conditions stay as they are (KKP's rules).
    let mut left_alone: BTreeSet<String> = BTreeSet::new();
    for cluster in clusters {
        match ctx.settings.scope.serves(cluster) {
            Serve::Yes => {}
            Serve::No => {
                left_alone.insert(cluster.name_any());
            }
            Serve::NotYetKnown => {
                left_alone.insert(cluster.name_any());
                ctx.repass.store(true, Ordering::SeqCst);
            }
        }
    }
    // Every known cluster's uids (shortened ones cannot be read back into a name).
    let owners = datasources::uids_of(clusters.iter().map(|c| c.metadata.name.as_deref().unwrap_or_default()));
    let clusters: Vec<&Arc<Cluster>> = clusters.iter().filter(|c| !left_alone.contains(&c.name_any())).collect();
    let concurrency = ctx.settings.concurrency;
    // The Clusters whose datasources are wanted, with their org; the finalizers they lack
    // added several at a time.
    let served: Vec<(&Arc<Cluster>, String, i64)> = clusters
        .iter()
        .copied()
        .filter_map(|cluster| {
            let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).filter(|n| !n.is_empty());
            let org = cluster.project_id().and_then(|p| project_orgs.get(p)).copied();
            match (namespace, org, is_deleting(cluster.as_ref()), cluster.mla_enabled()) {
                (Some(namespace), Some(org), false, true) => Some((cluster, namespace, org)),
                _ => None,
            }
        })
        .collect();
    let steps: Vec<BoxFuture<'_, _>> = served
        .into_iter()
        .map(|(cluster, namespace, org)| {
            let api = &api;
            async move {
                let result = if has_finalizer(cluster.as_ref()) {
                    Ok(())
                } else {
                    ctx.applier.add_finalizer(api, cluster.as_ref(), FINALIZER).await
                };
                (cluster, namespace, org, result)
            }
            .boxed()
        })
        .collect();
    let finalized: Vec<_> = in_flight(steps, KUBE_CONCURRENCY).collect().await;
    for (cluster, namespace, org, result) in finalized {
        let name = cluster.name_any();
        if let Err(error) = result {
            errors.insert(name, error.to_string());
            continue;
        }
        let list = datasources::cluster_datasources(cluster, &crate::gateway_read_url(&namespace));
        desired.entry(org).or_default().extend(list.iter().cloned());
        if let Some(superuser) = superuser_org {
            desired.entry(superuser).or_default().extend(list);
        }
        wanted.insert(name, org);
    }
    // Every managed org's datasources, listed several at a time; then every change of
    // every org, several at a time (the superuser org alone may need thousands).
    let listings: Vec<BoxFuture<'_, _>> =
        managed.iter().map(|org| async move { (*org, grafana.datasources(*org).await) }.boxed()).collect();
    let mut listed: Vec<(i64, Result<Vec<serde_json::Value>, GrafanaError>)> =
        in_flight(listings, concurrency).collect().await;
    listed.sort_by_key(|(org, _)| *org);
    let mut changes: Vec<(i64, String, datasources::DatasourceChange)> = Vec::new();
    for (org, current) in listed {
        let want = desired.remove(&org).unwrap_or_default();
        for change in datasources::changes(&want, &current?) {
            let uid = match &change {
                datasources::DatasourceChange::Create(ds) | datasources::DatasourceChange::Update(ds) => ds.uid.clone(),
                datasources::DatasourceChange::Delete(uid) => uid.clone(),
            };
            let cluster = datasources::owner(&uid, &owners).unwrap_or_default().to_string();
            if left_alone.contains(&cluster) {
                continue;
            }
            if !ctx.retry.ready(&format!("cluster/{cluster}")) {
                errors.entry(cluster).or_insert_with(|| WAITING.into());
                continue;
            }
            changes.push((org, cluster, change));
        }
    }
    let steps: Vec<BoxFuture<'_, _>> = changes
        .into_iter()
        .map(|(org, cluster, change)| {
            async move {
                let result = match &change {
                    datasources::DatasourceChange::Create(ds) => grafana.create_datasource(org, &ds.body()).await,
                    datasources::DatasourceChange::Update(ds) => {
                        grafana.update_datasource(org, &ds.uid, &ds.body()).await
                    }
                    datasources::DatasourceChange::Delete(uid) => grafana.delete_datasource(org, uid).await,
                };
                (org, cluster, result)
            }
            .boxed()
        })
        .collect();
    let mut results = in_flight(steps, concurrency);
    while let Some((org, cluster, result)) = results.next().await {
        match result {
            Ok(()) => {}
            Err(error) if error.is_unavailable() => return Err(error.into()),
            Err(error) => {
                // One refused datasource (a 403 for a read-only, provisioned one) fails
                // its cluster only; the others are still served.
                tracing::warn!(%cluster, org, %error, category = error.category(), "grafana datasource failed");
                ctx.note_failure(error.category());
                errors.insert(cluster, error.to_string());
            }
        }
    }
    drop(results);
    // Conditions and finalizers, several Clusters at a time.
    let steps: Vec<BoxFuture<'_, ()>> = clusters
        .iter()
        .map(|cluster| {
            finish_cluster(ctx, &api, cluster, errors.get(&cluster.name_any()), &wanted, projects, project_orgs).boxed()
        })
        .collect();
    in_flight(steps, KUBE_CONCURRENCY).collect::<Vec<()>>().await;
    Ok(())
}

/// The condition of one Cluster after the datasource step (`error`: why its datasources
/// failed, if they did), and its finalizers released once its datasources are gone.
async fn finish_cluster(
    ctx: &Context,
    api: &Api<Cluster>,
    cluster: &Arc<Cluster>,
    error: Option<&String>,
    wanted: &BTreeMap<String, i64>,
    projects: &[Arc<Project>],
    project_orgs: &BTreeMap<String, i64>,
) {
    let name = cluster.name_any();
    let key = format!("cluster/{name}");
    match error {
        Some(error) if error != WAITING => {
            if ctx.retry.failed(&key) {
                ctx.events
                    .warning(&cluster.object_ref(&()), "GrafanaDatasourcesFailed", "ReconcileGrafana", error.clone())
                    .await;
            }
        }
        Some(_) => {}
        None => ctx.retry.succeeded(&key),
    }
    if error.is_some_and(|e| e == WAITING) {
        // Backing off: the condition keeps the error that started it.
        return;
    }
    let outcome = if let Some(org) = wanted.get(&name) {
        match error {
            None => Some((
                ConditionStatus::True,
                "DatasourcesReady",
                format!("the cluster's datasources are in Grafana organization {org}"),
            )),
            Some(error) => Some((ConditionStatus::False, "DatasourcesFailed", error.clone())),
        }
    } else if cluster.mla_enabled()
        && !is_deleting(cluster.as_ref())
        && cluster.status.as_ref().and_then(|s| s.namespace_name.as_ref()).is_some()
    {
        let project = cluster.project_id().unwrap_or_default();
        if let Some(error) = error {
            // Its finalizer could not be added (another controller added its own at the
            // same moment): the error, not a missing org.
            return finish_condition(ctx, cluster, Some((ConditionStatus::False, "DatasourcesFailed", error.clone())))
                .await;
        }
        let message = if projects.iter().any(|p| p.name_any() == project) {
            format!("waiting for the Grafana organization of project {project}")
        } else {
            format!("project {project:?} (label project-id) does not exist")
        };
        Some((ConditionStatus::False, "OrganizationNotReady", message))
    } else {
        None
    };
    if let Err(error) = write_condition(ctx, cluster, outcome).await {
        tracing::warn!(cluster = %name, %error, "writing the Grafana condition failed");
    }
    // Datasources gone (or never made): release the Cluster. KKP's finalizer stands for
    // the same datasources (and the gateway, which the garbage collector or the
    // namespace's deletion removes): released with ours when the Cluster is deleted.
    let kkp = is_deleting(cluster.as_ref()) && scope::has_finalizer(cluster.as_ref(), KKP_MLA_FINALIZER);
    if !wanted.contains_key(&name) && error.is_none() && (has_finalizer(cluster.as_ref()) || kkp) {
        let project_known = cluster.project_id().is_some_and(|p| project_orgs.contains_key(p));
        let project_exists = cluster.project_id().is_some_and(|p| projects.iter().any(|x| x.name_any() == p));
        let release: &[&str] = if kkp { &[FINALIZER, KKP_MLA_FINALIZER] } else { &[FINALIZER] };
        if (project_known || !project_exists)
            && let Err(error) = ctx.applier.remove_finalizers(api, cluster.as_ref(), release).await
        {
            tracing::warn!(cluster = %name, %error, "removing the Grafana finalizer failed");
        }
    }
}

async fn finish_condition(ctx: &Context, cluster: &Cluster, outcome: Option<(ConditionStatus, &'static str, String)>) {
    if let Err(error) = write_condition(ctx, cluster, outcome).await {
        tracing::warn!(cluster = %cluster.name_any(), %error, "writing the Grafana condition failed");
    }
}

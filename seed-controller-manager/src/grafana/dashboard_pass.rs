//! The dashboard step of a pass: the dashboards of the `grafana-dashboards*` ConfigMaps in
//! every managed org, and the ones no longer wanted taken out.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;

use super::client::{GrafanaClient, GrafanaError};
use super::controller::{Context, PassError, in_flight, is_deleting};
use super::dashboards;
use crate::scope::{self, KKP_MLA_FINALIZER};

/// Reports a dashboard problem by a Warning Event `reason` on its ConfigMap, once per
/// problem.
async fn report(
    ctx: &Context,
    config_maps: &[std::sync::Arc<ConfigMap>],
    problem: &dashboards::Problem,
    reason: &'static str,
) {
    let id = (problem.config_map.clone(), problem.key.clone(), problem.reason.clone());
    let new = ctx.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
    if new && let Some(cm) = config_maps.iter().find(|c| c.name_any() == problem.config_map) {
        ctx.events
            .warning(
                &cm.object_ref(&()),
                reason,
                "ReconcileGrafana",
                format!("key {}: {}; the other dashboards are served", problem.key, problem.reason),
            )
            .await;
    }
}

/// Puts the dashboards into every managed org and takes out the ones no longer wanted.
///
/// A dashboard whose title another dashboard of the org's General folder already holds
/// (one this controller did not make) is not saved: Grafana up to 11.2 would answer 412
/// or, with `overwrite`, take the other dashboard over; Grafana 12 would make a second
/// dashboard of that title. It is reported on its ConfigMap instead, and served once the
/// title is free.
pub(super) async fn reconcile_dashboards(
    ctx: &Context,
    grafana: &GrafanaClient,
    managed: &BTreeSet<i64>,
) -> Result<(), PassError> {
    let config_maps = ctx.stores.config_maps.state();
    // A ConfigMap being deleted (held by KKP's finalizer) no longer provides dashboards.
    let (refs, leaving): (Vec<&ConfigMap>, Vec<&ConfigMap>) =
        config_maps.iter().map(|c| c.as_ref()).partition(|c| !is_deleting(*c));
    let (desired, problems) = dashboards::desired_dashboards(&refs);
    // Its dashboards go by uid, also ones KKP saved without our tag.
    let (leaving_dashboards, _) = dashboards::desired_dashboards(&leaving);
    let leaving_uids: Vec<String> =
        leaving_dashboards.into_iter().map(|d| d.uid).filter(|uid| !desired.iter().any(|d| &d.uid == uid)).collect();
    let mut all_done = true;
    for problem in &problems {
        report(ctx, &config_maps, problem, "InvalidDashboard").await;
    }
    // Several orgs at a time.
    let ready: Vec<i64> = managed.iter().copied().filter(|org| ctx.retry.ready(&format!("dashboards/{org}"))).collect();
    if ready.len() < managed.len() {
        all_done = false;
    }
    let steps: Vec<BoxFuture<'_, _>> = ready
        .into_iter()
        .map(|org| {
            let (desired, leaving_uids) = (&desired, &leaving_uids);
            async move {
                let mut taken = Vec::new();
                let result = org_dashboards(grafana, org, desired, leaving_uids, &mut taken).await;
                (org, taken, result)
            }
            .boxed()
        })
        .collect();
    let mut steps = in_flight(steps, ctx.settings.concurrency);
    while let Some((org, taken, result)) = steps.next().await {
        let key = format!("dashboards/{org}");
        for problem in &taken {
            report(ctx, &config_maps, problem, "DashboardTitleTaken").await;
        }
        match result {
            Ok(()) => ctx.retry.succeeded(&key),
            Err(error) if error.is_unavailable() => return Err(error.into()),
            Err(error) => {
                tracing::warn!(org, %error, category = error.category(), "grafana dashboards failed");
                ctx.note_failure(error.category());
                ctx.retry.failed(&key);
                all_done = false;
            }
        }
    }
    drop(steps);
    // KKP's finalizer on a dashboard ConfigMap stands for its dashboards in every org:
    // released once they are gone from every org we manage.
    if all_done {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.mla_namespace);
        for config_map in leaving.iter().filter(|c| scope::has_finalizer(**c, KKP_MLA_FINALIZER)) {
            if let Err(error) = ctx.applier.remove_finalizer(&api, *config_map, KKP_MLA_FINALIZER).await {
                tracing::warn!(config_map = %config_map.name_any(), %error, "releasing KKP's finalizer failed");
            }
        }
    }
    Ok(())
}

/// One org's dashboards: the unwanted ones deleted, the wanted ones saved where they
/// differ; titles held by another dashboard go into `taken`.
async fn org_dashboards(
    grafana: &GrafanaClient,
    org: i64,
    desired: &[dashboards::DesiredDashboard],
    leaving_uids: &[String],
    taken: &mut Vec<dashboards::Problem>,
) -> Result<(), GrafanaError> {
    let mut hits = grafana.dashboard_hits(org).await?;
    // Deletions first: a dashboard that moved to another uid frees its title for
    // the new one in the same pass.
    let mut removed = Vec::new();
    for hit in &hits {
        let unwanted =
            hit.tags.iter().any(|t| t == dashboards::MANAGED_TAG) && !desired.iter().any(|d| d.uid == hit.uid);
        if unwanted || leaving_uids.contains(&hit.uid) {
            grafana.delete_dashboard(org, &hit.uid).await?;
            removed.push(hit.uid.clone());
        }
    }
    hits.retain(|h| !removed.contains(&h.uid));
    let mut failed: Option<GrafanaError> = None;
    for dashboard in desired {
        if let Some(holder) = dashboards::title_holder(dashboard, &hits) {
            taken.push(dashboards::Problem {
                config_map: dashboard.config_map.clone(),
                key: dashboard.key.clone(),
                reason: format!(
                    "the title is taken by dashboard {} in Grafana organization {org}; \
                         not saved there",
                    holder.uid
                ),
            });
            continue;
        }
        let current = grafana.dashboard(org, &dashboard.uid).await?;
        if current.as_ref().is_some_and(|c| dashboards::matches(c, dashboard)) {
            continue;
        }
        let version = current.as_ref().and_then(|c| c.get("version")).and_then(Value::as_i64);
        match grafana.save_dashboard(org, &dashboard.model, version).await {
            Ok(()) => {}
            // Refused or changed meanwhile: this one waits for the retry, the
            // others are saved.
            Err(error) if !error.is_unavailable() => {
                tracing::warn!(org, uid = %dashboard.uid, %error, "grafana dashboard failed");
                failed.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    failed.map_or(Ok(()), Err)
}

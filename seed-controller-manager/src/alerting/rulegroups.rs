//! RuleGroups: each one in a cluster namespace is pushed to the Cortex ruler (Metrics) or
//! the Loki ruler (Logs) for the tenant of `spec.cluster.name`, in the rule namespace KKP
//! uses (`default`), under its own name. A finalizer removes it from the ruler when the
//! RuleGroup is deleted. Invalid data becomes a Warning Event; the last valid group stays
//! in the ruler. RuleGroups in the MLA namespace are templates, copied into every
//! MLA-enabled cluster namespace by the cluster controller ([`template_copy`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Cluster, ObjectReference, RuleGroup, RuleGroupSpec};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::ControllerMetrics;
use serde_yaml::Value;

use super::client::{CortexClient, RULE_NAMESPACE};
use super::normalise;
use super::{AlertingError, Shared};
use crate::scope::{self, KKP_RULE_GROUP_FINALIZER};

/// Field manager suffix and metrics name of this controller.
pub const CONTROLLER: &str = "rulegroups";
/// Finalizer on RuleGroups pushed to a ruler.
pub const FINALIZER: &str = "mla.k8c.io/rule-group";
/// Label on the copies of templates.
pub const TEMPLATE_LABEL: &str = "mla.k8c.io/rule-group-template";

/// The rule group to push: `data` parsed as one Prometheus rule group whose `name` is the
/// RuleGroup's name (the ruler addresses groups by that name; a different one would be
/// stored under a name we never look up).
pub fn parse_rule_group(name: &str, data: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(data).map_err(|_| "spec.data is not UTF-8 text".to_string())?;
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("spec.data is not YAML: {e}"))?;
    let Value::Mapping(map) = &value else { return Err("spec.data is not one rule group (a YAML mapping)".into()) };
    match map.get("name").and_then(Value::as_str) {
        Some(group) if group == name => {}
        Some(group) => {
            return Err(format!(
                "the rule group is named {group:?} in spec.data but the RuleGroup is {name:?}; they must match"
            ));
        }
        None => return Err("spec.data has no rule group name".into()),
    }
    match map.get("rules") {
        None | Some(Value::Null | Value::Sequence(_)) => Ok(value),
        Some(_) => Err("spec.data: rules must be a list".into()),
    }
}

/// The copy of template `template` for `cluster` in `namespace`: same name, type and data,
/// marked as default, owned by the Cluster.
pub fn template_copy(template: &RuleGroup, cluster: &str, namespace: &str, owner: OwnerReference) -> RuleGroup {
    RuleGroup {
        metadata: ObjectMeta {
            name: Some(template.name_any()),
            namespace: Some(namespace.to_string()),
            labels: Some([(TEMPLATE_LABEL.to_string(), "true".to_string())].into()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: RuleGroupSpec {
            rule_group_type: template.spec.rule_group_type,
            cluster: ObjectReference {
                name: Some(cluster.to_string()),
                kind: Some("Cluster".into()),
                api_version: Some("kubermatic.k8c.io/v1".into()),
                ..ObjectReference::default()
            },
            data: template.spec.data.clone(),
            is_default: true,
        },
    }
}

struct Context {
    client: kube::Client,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    backoff: Backoff<String>,
    cortex: CortexClient,
    shared: Shared,
    clusters: Store<Cluster>,
    /// The last problem reported per RuleGroup (with its resourceVersion), so that a
    /// resync of an unchanged invalid object does not publish the same Event again.
    reported: Mutex<HashMap<String, String>>,
}

/// The RuleGroup controller, running until shutdown.
pub(super) fn run(
    runtime: &mla_common::runtime::Runtime,
    shared: Shared,
    cortex: CortexClient,
    clusters: Store<Cluster>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = runtime.client.clone();
    let context = Arc::new(Context {
        client: client.clone(),
        applier: runtime.applier(CONTROLLER),
        events: runtime.events(client.clone(), CONTROLLER),
        metrics: runtime.metrics.controller(CONTROLLER),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        cortex,
        shared,
        clusters,
        reported: Mutex::default(),
    });
    let leader_gained = runtime.leader.gained();
    let stop = runtime.shutdown.clone();
    async move {
        let resync = context.shared.resync_period;
        let periodic = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(resync)).map(|_| ());
        let controller = Controller::new(Api::<RuleGroup>::all(client.clone()), watcher::Config::default());
        let rule_groups = controller.store();
        let results = controller
            // A Cluster's MLA switch decides whether its groups are pushed.
            .watches(Api::<Cluster>::all(client.clone()), watcher::Config::default(), move |cluster: Cluster| {
                let name = cluster.name_any();
                rule_groups
                    .state()
                    .iter()
                    .filter(|group| group.spec.cluster.name.as_deref() == Some(name.as_str()))
                    .map(|group| ObjectRef::from_obj(group.as_ref()))
                    .collect::<Vec<_>>()
            })
            .reconcile_all_on(futures::stream::select(periodic, leader_gained))
            .with_config(ControllerConfig::default().concurrency(8))
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, context);
        crate::watch::report_watch_errors(results, "rule group").await;
    }
}

fn key(group: &RuleGroup) -> String {
    format!("{}/{}", group.namespace().unwrap_or_default(), group.name_any())
}

#[tracing::instrument(skip(group, ctx), fields(rule_group = %key(&group)))]
async fn reconcile(group: Arc<RuleGroup>, ctx: Arc<Context>) -> Result<Action, AlertingError> {
    if !ctx.applier.is_leader() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = reconcile_group(&group, &ctx).await;
    ctx.metrics.observe_category(started.elapsed(), result.as_ref().err().map(AlertingError::category));
    if result.is_ok() {
        ctx.backoff.reset(&key(&group));
    }
    result
}

fn error_policy(group: Arc<RuleGroup>, error: &AlertingError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&key(&group));
    tracing::warn!(rule_group = %key(&group), %error, category = error.category(), ?delay, "rule group reconcile failed");
    Action::requeue(delay)
}

fn has_finalizer(group: &RuleGroup) -> bool {
    group.finalizers().iter().any(|f| f == FINALIZER)
}

async fn reconcile_group(group: &RuleGroup, ctx: &Context) -> Result<Action, AlertingError> {
    let namespace = group.namespace().unwrap_or_default();
    let api: Api<RuleGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    // KKP's finalizer, released once our cleanup has done what it stands for (only while
    // this system is the seed's MLA; otherwise KKP's controllers may still own it).
    let release_kkp = ctx.shared.mla_enabled && group.meta().deletion_timestamp.is_some();
    if namespace == ctx.shared.mla_namespace {
        // A template: copied by the cluster controller, never pushed itself. The copies of
        // a template being deleted are removed by the cluster controller, which needs
        // nothing from the template: KKP's finalizer (its sync controller's guard for the
        // same cleanup) can go at once.
        if release_kkp {
            ctx.applier.remove_finalizer(&api, group, KKP_RULE_GROUP_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    let name = group.name_any();
    let tenant = group.spec.cluster.name.clone().unwrap_or_default();
    let cluster = ctx.clusters.get(&ObjectRef::new(&tenant));
    // The rule groups of a paused Cluster, or another worker's, are left alone (KKP).
    match cluster.as_deref().map(|c| ctx.shared.scope.serves(c)) {
        Some(scope::Serve::No) => return Ok(Action::await_change()),
        Some(scope::Serve::NotYetKnown) => return Ok(Action::requeue(scope::STALE_RETRY)),
        Some(scope::Serve::Yes) | None => {}
    }
    // Only the Cluster whose namespace this is may be named: a RuleGroup must never reach
    // another cluster's tenant.
    let owns_namespace = cluster
        .as_ref()
        .is_some_and(|c| c.status.as_ref().and_then(|s| s.namespace_name.as_deref()) == Some(namespace.as_str()));

    if group.meta().deletion_timestamp.is_some() {
        let kkp = release_kkp && scope::has_finalizer(group, KKP_RULE_GROUP_FINALIZER);
        if has_finalizer(group) || kkp {
            if owns_namespace {
                ctx.cortex.delete_rule_group(group.spec.rule_group_type, &tenant, RULE_NAMESPACE, &name).await?;
            }
            let release: &[&str] = if kkp { &[FINALIZER, KKP_RULE_GROUP_FINALIZER] } else { &[FINALIZER] };
            ctx.applier.remove_finalizers(&api, group, release).await?;
        }
        return Ok(Action::await_change());
    }
    if cluster.is_some() && !owns_namespace {
        let message = format!(
            "spec.cluster.name {tenant:?} is not the cluster of namespace {namespace}; the rule group is not pushed"
        );
        report(ctx, group, &message).await;
        ctx.applier.remove_finalizer(&api, group, FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let active = cluster
        .as_ref()
        .is_some_and(|c| ctx.shared.mla_enabled && c.mla_enabled() && c.meta().deletion_timestamp.is_none());
    if !active {
        // The cluster controller removes the tenant's groups from the rulers.
        ctx.applier.remove_finalizer(&api, group, FINALIZER).await?;
        return Ok(Action::await_change());
    }

    let version = group.resource_version().unwrap_or_default();
    let already_refused = ctx
        .reported
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key(group))
        .is_some_and(|reported| reported.starts_with(&format!("{version}:")));
    if already_refused {
        // Reported for this very version: nothing to do until the object changes.
        return Ok(Action::requeue(ctx.shared.resync_period));
    }
    let desired = match parse_rule_group(&name, &group.spec.data.0) {
        Ok(desired) => desired,
        Err(message) => {
            report(ctx, group, &format!("{message}; the last valid rule group stays active")).await;
            return Ok(Action::requeue(ctx.shared.resync_period));
        }
    };
    ctx.applier.add_finalizer(&api, group, FINALIZER).await?;
    let kind = group.spec.rule_group_type;
    let current = ctx.cortex.get_rule_group(kind, &tenant, &name).await?;
    let current: Option<Value> = current.and_then(|body| serde_yaml::from_str(&body).ok());
    // The ruler serves the group rebuilt from storage, not as sent: compare both in that
    // form, or every resync posts every group again.
    let in_force = current.is_some_and(|current| normalise::rule_group(&current) == normalise::rule_group(&desired));
    if !in_force {
        let body = String::from_utf8_lossy(&group.spec.data.0).to_string();
        if let Err(refused) = ctx.cortex.set_rule_group(kind, &tenant, body).await? {
            let ruler = match kind {
                mla_common::api::RuleGroupType::Metrics => "Cortex",
                mla_common::api::RuleGroupType::Logs => "Loki",
            };
            report(
                ctx,
                group,
                &format!(
                    "the {ruler} ruler refused the rule group: {}; the last valid rule group stays active",
                    refused.0
                ),
            )
            .await;
            return Ok(Action::requeue(ctx.shared.resync_period));
        }
        tracing::info!(tenant, "rule group pushed");
    }
    ctx.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key(group));
    Ok(Action::requeue(ctx.shared.resync_period))
}

/// A Warning Event on the RuleGroup, once per problem and object version.
async fn report(ctx: &Context, group: &RuleGroup, message: &str) {
    let version = format!("{}:{message}", group.resource_version().unwrap_or_default());
    {
        let mut reported = ctx.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if reported.get(&key(group)) == Some(&version) {
            return;
        }
        reported.insert(key(group), version);
    }
    tracing::warn!(rule_group = %key(group), message, "invalid rule group");
    ctx.events.warning(&group.object_ref(&()), "InvalidRuleGroup", "SyncRuleGroup", message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_must_be_one_group_named_like_the_object() {
        let good = b"name: g1\nrules:\n  - alert: A\n    expr: up == 0\n";
        assert!(parse_rule_group("g1", good).is_ok());
        assert!(parse_rule_group("g2", good).unwrap_err().contains("must match"));
        for bad in [&b"\xff\xfe"[..], b"a: [", b"- name: g1", b"rules: []", b"name: g1\nrules: 3"] {
            assert!(parse_rule_group("g1", bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn template_copies_name_the_cluster_and_are_owned() {
        let template = RuleGroup {
            metadata: ObjectMeta { name: Some("t1".into()), namespace: Some("mla".into()), ..Default::default() },
            spec: RuleGroupSpec {
                rule_group_type: mla_common::api::RuleGroupType::Logs,
                cluster: ObjectReference::default(),
                data: k8s_openapi::ByteString(b"name: t1\nrules: []\n".to_vec()),
                is_default: false,
            },
        };
        let owner = OwnerReference { name: "c1".into(), uid: "u".into(), ..Default::default() };
        let copy = template_copy(&template, "c1", "cluster-c1", owner);
        assert_eq!(copy.namespace().as_deref(), Some("cluster-c1"));
        assert_eq!(copy.spec.cluster.name.as_deref(), Some("c1"));
        assert!(copy.spec.is_default);
        assert_eq!(copy.spec.data, template.spec.data);
        assert_eq!(copy.spec.rule_group_type, mla_common::api::RuleGroupType::Logs);
        assert_eq!(copy.owner_references()[0].uid, "u");
    }
}

//! The per-Cluster alerting reconciler. For every Cluster with MLA on (and MLA offered by
//! the seed): the default Alertmanager `alertmanager` and its Secret when absent, the
//! configuration pushed to the Cortex Alertmanager when it differs from what Cortex holds,
//! rule group templates copied into the cluster namespace, and the tenant's limits in
//! Cortex's runtime configuration; status on the Alertmanager and the Cluster. When MLA is
//! switched off or the Cluster is deleted, a finalizer makes sure the tenant's
//! configuration, rule groups and limits are removed from the backends first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ObjectMeta, PartialObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{
    ALERTMANAGER_CONFIG_KEY, ALERTMANAGER_NAME, Alertmanager, AlertmanagerConfigurationStatus, AlertmanagerSpec,
    AlertmanagerStatus, Cluster, Condition, ConditionStatus, ExtendedClusterHealth, HealthStatus, LocalObjectReference,
    MLA_ADMIN_SETTING_NAME, MLAAdminSetting, RuleGroup, RuleGroupType,
};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::ControllerMetrics;
use mla_common::runtime::{Runtime, mark_synced};

use crate::scope::{self, KKP_ALERTMANAGER_FINALIZER};

use super::alertmanager::{self, TenantConfig};
use super::client::CortexClient;
use super::limits::{self, LimitsOutcome};
use super::rulegroups::{TEMPLATE_LABEL, template_copy};
use super::{AlertingError, Shared};
use crate::status;
use mla_common::runtime::relisting_watcher;

/// Field manager suffix and metrics name of this controller.
pub const CONTROLLER: &str = "alerting";
/// Finalizer on Clusters whose tenant has configuration in Cortex or Loki.
pub const FINALIZER: &str = "mla.k8c.io/cortex";
/// Condition on the Cluster about its tenant's alerting configuration and limits.
pub const CONDITION: &str = "MLAAlertingReady";

struct Context {
    client: kube::Client,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    backoff: Backoff<String>,
    cortex: CortexClient,
    shared: Shared,
    alertmanagers: Store<Alertmanager>,
    settings: Store<MLAAdminSetting>,
    rule_groups: Store<RuleGroup>,
    /// Per tenant, the hash of the last configuration Cortex refused and why: it is not
    /// sent again (every resync) until it changes.
    refused: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
}

/// The Cluster of a namespace (`status.namespaceName`).
fn cluster_of_namespace(clusters: &Store<Cluster>, namespace: Option<String>) -> Option<ObjectRef<Cluster>> {
    let namespace = namespace?;
    clusters
        .state()
        .iter()
        .find(|c| c.status.as_ref().and_then(|s| s.namespace_name.as_deref()) == Some(namespace.as_str()))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
}

/// The cluster controller and the store of Clusters it keeps (shared with the rule group
/// controller). Each watch has a readiness gate `alerting/<kind>`.
pub(super) fn run(
    runtime: &Runtime,
    shared: Shared,
    cortex: CortexClient,
) -> (Store<Cluster>, impl std::future::Future<Output = ()> + Send + 'static) {
    let client = runtime.client.clone();
    let readiness = runtime.readiness.clone();
    let applier = runtime.applier(CONTROLLER);
    let manager = applier.field_manager().to_string();

    let (clusters, cluster_writer) = reflector::store();
    let cluster_watch = crate::watch::cluster_watch(&client, &manager, CONDITION);
    let cluster_events = crate::watch::cluster_changes(
        mark_synced(reflector::reflector(cluster_writer, cluster_watch), readiness.gate("alerting/clusters")),
        CONDITION,
        Some(FINALIZER),
    );

    let (alertmanagers, writer) = reflector::store();
    let watch = relisting_watcher(Api::<Alertmanager>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::watch::only_managed_by(&manager));
    let alertmanager_events =
        mark_synced(reflector::reflector(writer, watch), readiness.gate("alerting/alertmanagers")).touched_objects();

    let (settings, writer) = reflector::store();
    let watch = relisting_watcher(Api::<MLAAdminSetting>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::watch::only_managed_by(""));
    let settings_events =
        mark_synced(reflector::reflector(writer, watch), readiness.gate("alerting/mlaadminsettings")).touched_objects();

    let (rule_groups, writer) = reflector::store();
    let watch = relisting_watcher(Api::<RuleGroup>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::watch::only_managed_by(&manager));
    let rule_group_events =
        mark_synced(reflector::reflector(writer, watch), readiness.gate("alerting/rulegroups")).touched_objects();

    // Secrets only by metadata: which one changed is all we need; the content is read when
    // reconciling the Cluster.
    let secret_events = mark_synced(
        relisting_watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), watcher::Config::default())
            .default_backoff(),
        readiness.gate("alerting/secrets"),
    )
    .touched_objects();

    let context = Arc::new(Context {
        client: client.clone(),
        applier,
        events: runtime.events(client.clone(), CONTROLLER),
        metrics: runtime.metrics.controller(CONTROLLER),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        cortex,
        shared: shared.clone(),
        alertmanagers: alertmanagers.clone(),
        settings,
        rule_groups,
        refused: std::sync::Mutex::default(),
    });
    let leader_gained = runtime.leader.gained();
    let stop = runtime.shutdown.clone();
    let store = clusters.clone();
    let future = async move {
        let periodic =
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(shared.resync_period)).map(|_| ());
        let by_namespace = clusters.clone();
        let by_secret = (clusters.clone(), alertmanagers.clone());
        let by_template = (clusters.clone(), shared.mla_namespace.clone());
        let results = Controller::for_stream(cluster_events, clusters)
            .watches_stream(alertmanager_events, move |am: Alertmanager| {
                cluster_of_namespace(&by_namespace, am.namespace())
            })
            .watches_stream(settings_events, |s: MLAAdminSetting| Some(ObjectRef::new(&s.spec.cluster_name)))
            .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
                let (clusters, alertmanagers) = &by_secret;
                let namespace = secret.namespace()?;
                let referenced = alertmanagers
                    .get(&ObjectRef::new(ALERTMANAGER_NAME).within(&namespace))
                    .map_or(ALERTMANAGER_NAME.to_string(), |am| config_secret_name(&am));
                (referenced == secret.name_any()).then(|| cluster_of_namespace(clusters, Some(namespace))).flatten()
            })
            .watches_stream(rule_group_events, move |group: RuleGroup| {
                let (clusters, mla_namespace) = &by_template;
                let namespace = group.namespace();
                if namespace.as_deref() == Some(mla_namespace.as_str()) {
                    // A template: every cluster gets (or loses) its copy.
                    clusters.state().iter().map(|c| ObjectRef::from_obj(c.as_ref())).collect::<Vec<_>>()
                } else if group.labels().contains_key(TEMPLATE_LABEL) {
                    cluster_of_namespace(clusters, namespace).into_iter().collect()
                } else {
                    Vec::new()
                }
            })
            .reconcile_all_on(futures::stream::select(periodic, leader_gained))
            .with_config(ControllerConfig::default().concurrency(8).debounce(crate::watch::DEBOUNCE))
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, context);
        crate::watch::report_watch_errors(results, "alerting").await;
    };
    (store, future)
}

fn config_secret_name(alertmanager: &Alertmanager) -> String {
    let name = &alertmanager.spec.config_secret.name;
    if name.is_empty() { ALERTMANAGER_NAME.to_string() } else { name.clone() }
}

#[tracing::instrument(skip(cluster, ctx), fields(cluster = %cluster.name_any()))]
async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, AlertingError> {
    if !ctx.applier.is_leader() {
        return Ok(Action::await_change());
    }
    match ctx.shared.scope.serves(&cluster) {
        scope::Serve::Yes => {}
        scope::Serve::No => return Ok(Action::await_change()),
        scope::Serve::NotYetKnown => return Ok(Action::requeue(scope::STALE_RETRY)),
    }
    let started = Instant::now();
    let result = reconcile_cluster(&cluster, &ctx).await;
    ctx.metrics.observe_category(started.elapsed(), result.as_ref().err().map(AlertingError::category));
    if result.is_ok() {
        ctx.backoff.reset(&cluster.name_any());
    }
    result
}

fn error_policy(cluster: Arc<Cluster>, error: &AlertingError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&cluster.name_any());
    tracing::warn!(cluster = %cluster.name_any(), %error, category = error.category(), ?delay, "alerting reconcile failed");
    Action::requeue(delay)
}

/// What a reconcile concluded, for the Cluster's condition.
struct Problem {
    reason: &'static str,
    message: String,
}

async fn reconcile_cluster(cluster: &Cluster, ctx: &Context) -> Result<Action, AlertingError> {
    let name = cluster.name_any();
    let clusters: Api<Cluster> = Api::all(ctx.client.clone());
    let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).filter(|n| !n.is_empty());
    let deleting = cluster.meta().deletion_timestamp.is_some();
    let active = ctx.shared.mla_enabled && cluster.mla_enabled() && !deleting;
    if !active {
        // KKP's Alertmanager finalizer stands for the tenant's Alertmanager configuration in
        // Cortex, which cleanup_tenant removes: released with ours on deletion, while this
        // system is the seed's MLA.
        let kkp = deleting && ctx.shared.mla_enabled && scope::has_finalizer(cluster, KKP_ALERTMANAGER_FINALIZER);
        if cluster.finalizers().iter().any(|f| f == FINALIZER) || kkp {
            cleanup_tenant(ctx, cluster, &name).await?;
            if let Some(namespace) = namespace.as_deref().filter(|_| !deleting) {
                // The Cluster stays: what we made in its namespace goes now (on deletion
                // the garbage collector removes it with the Cluster).
                remove_objects(ctx, namespace).await?;
            }
            tracing::info!("removed the tenant's alerting configuration, rule groups and limits");
        }
        if !deleting {
            clear_status(ctx, cluster).await?;
        }
        let release: &[&str] = if kkp { &[FINALIZER, KKP_ALERTMANAGER_FINALIZER] } else { &[FINALIZER] };
        ctx.applier.remove_finalizers(&clusters, cluster, release).await?;
        return Ok(Action::await_change());
    }
    let Some(namespace) = namespace else {
        // The namespace arrives with a Cluster update, which brings us back.
        return Ok(Action::await_change());
    };
    ctx.applier.add_finalizer(&clusters, cluster, FINALIZER).await?;
    let owner = cluster.owner_reference();

    let mut problems = Vec::new();
    let mut failure = None;
    if let Err(error) = sync_templates(ctx, &name, &namespace, &owner).await {
        problems.push(Problem { reason: "TemplatesFailed", message: format!("copying rule group templates: {error}") });
        failure = Some(error);
    }
    let health = match sync_alertmanager(ctx, cluster, &namespace, &owner).await {
        Ok(health) => health,
        Err(error) => {
            problems.push(Problem { reason: "BackendUnavailable", message: error.to_string() });
            let health = write_alertmanager_status(ctx, &namespace, Err(error.to_string()), false).await;
            failure.get_or_insert(error);
            health.unwrap_or(HealthStatus::HealthStatusDown)
        }
    };
    if health == HealthStatus::HealthStatusDown && problems.is_empty() {
        let message = ctx
            .alertmanagers
            .get(&ObjectRef::new(ALERTMANAGER_NAME).within(&namespace))
            .and_then(|am| am.status.clone()?.config_status?.error_message)
            .unwrap_or_else(|| "the Alertmanager configuration is invalid".into());
        problems.push(Problem { reason: "InvalidAlertmanagerConfig", message });
    }
    if let Err(error) = sync_limits(ctx, &name, &namespace, &mut problems).await {
        problems.push(Problem { reason: "LimitsFailed", message: error.to_string() });
        failure.get_or_insert(error);
    }

    write_status(ctx, cluster, Some(health), problems).await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(Action::requeue(ctx.shared.resync_period)),
    }
}

/// Creates `object` unless it exists (never overwriting what a user made).
async fn create_absent<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<(), AlertingError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.name_any();
    ctx.applier.ensure_leader("create", &name)?;
    let params = PostParams { field_manager: Some(ctx.applier.field_manager().to_string()), ..Default::default() };
    ctx.applier.count::<K>("create");
    match api.create(&params, object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(AlertingError::Kube(mla_common::Error::kube(
            "create",
            K::kind(&K::DynamicType::default()),
            name,
            source,
        ))),
    }
}

/// Ensures the Alertmanager and its Secret, pushes the configuration when Cortex holds
/// another one, and writes the Alertmanager's status. Up when Cortex holds the
/// configuration of the Secret, Down when that configuration is invalid (the last valid one
/// stays in Cortex). An unreachable Cortex is an error.
async fn sync_alertmanager(
    ctx: &Context,
    cluster: &Cluster,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<HealthStatus, AlertingError> {
    let tenant = cluster.name_any();
    let alertmanagers: Api<Alertmanager> = Api::namespaced(ctx.client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let current = ctx.alertmanagers.get(&ObjectRef::new(ALERTMANAGER_NAME).within(namespace));
    let secret_name = match &current {
        Some(am) => config_secret_name(am),
        None => {
            let mut object = Alertmanager::new(
                ALERTMANAGER_NAME,
                AlertmanagerSpec { config_secret: LocalObjectReference { name: ALERTMANAGER_NAME.into() } },
            );
            object.metadata.owner_references = Some(vec![owner.clone()]);
            create_absent(ctx, &alertmanagers, &object).await?;
            ALERTMANAGER_NAME.to_string()
        }
    };
    let kube_error = |verb, source| {
        AlertingError::Kube(mla_common::Error::kube(verb, "Secret", format!("{namespace}/{secret_name}"), source))
    };
    let text = match secrets.get_opt(&secret_name).await.map_err(|e| kube_error("get", e))? {
        Some(secret) => secret.data.as_ref().and_then(|d| d.get(ALERTMANAGER_CONFIG_KEY)).map(|v| v.0.clone()),
        None if secret_name == ALERTMANAGER_NAME => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(ALERTMANAGER_NAME.into()),
                    namespace: Some(namespace.into()),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                string_data: Some(
                    [(ALERTMANAGER_CONFIG_KEY.to_string(), alertmanager::DEFAULT_CONFIG.to_string())].into(),
                ),
                ..Secret::default()
            };
            create_absent(ctx, &secrets, &secret).await?;
            ctx.events
                .normal(
                    &cluster.object_ref(&()),
                    "AlertmanagerCreated",
                    "ReconcileAlerting",
                    format!("created the default Alertmanager configuration in Secret {namespace}/{ALERTMANAGER_NAME}"),
                )
                .await;
            Some(alertmanager::DEFAULT_CONFIG.as_bytes().to_vec())
        }
        None => None,
    };
    let desired = match text {
        None => Err(format!("Secret {secret_name} with key {ALERTMANAGER_CONFIG_KEY} not found")),
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| format!("{ALERTMANAGER_CONFIG_KEY} is not UTF-8 text"))
            .and_then(|text| alertmanager::parse_secret_config(&text)),
    };
    let outcome = match desired {
        Err(message) => Err(message),
        Ok(desired) => push_if_changed(ctx, &tenant, &desired).await?,
    };
    let pushed = matches!(outcome, Ok(true));
    let outcome = outcome.map(|_| ());
    if let Err(message) = &outcome {
        let previous = current.as_ref().and_then(|am| am.status.clone()?.config_status?.error_message);
        if previous.as_deref() != Some(message.as_str()) {
            let am_ref = Alertmanager::new(ALERTMANAGER_NAME, AlertmanagerSpec::default());
            let mut reference = am_ref.object_ref(&());
            reference.namespace = Some(namespace.into());
            reference.uid = current.as_ref().and_then(|am| am.uid());
            ctx.events
                .warning(
                    &reference,
                    "InvalidAlertmanagerConfig",
                    "ReconcileAlerting",
                    format!("{message}; the last valid configuration stays active"),
                )
                .await;
        }
    }
    write_alertmanager_status(ctx, namespace, outcome, pushed).await
}

/// `Ok(Ok(true))` when pushed, `Ok(Ok(false))` when Cortex already held it, `Ok(Err(_))`
/// when Cortex refused it.
async fn push_if_changed(
    ctx: &Context,
    tenant: &str,
    desired: &TenantConfig,
) -> Result<Result<bool, String>, AlertingError> {
    let current = ctx.cortex.get_alertmanager(tenant).await?;
    let current = current.and_then(|body| alertmanager::parse_cortex_config(&body).ok());
    if current.is_some_and(|current| current.same_as(desired)) {
        return Ok(Ok(false));
    }
    let body = match desired.to_body() {
        Ok(body) => body,
        Err(message) => return Ok(Err(message)),
    };
    let hash = mla_common::validation::config_hash(&body);
    let refused = |update: Option<(String, String)>| {
        let mut map = ctx.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match update {
            Some(entry) => map.insert(tenant.to_string(), entry),
            None => map.remove(tenant),
        }
    };
    if let Some((previous, message)) = refused(None)
        && previous == hash
    {
        refused(Some((previous, message.clone())));
        return Ok(Err(message));
    }
    match ctx.cortex.set_alertmanager(tenant, body).await? {
        Ok(()) => {
            tracing::info!(tenant, "Alertmanager configuration pushed");
            Ok(Ok(true))
        }
        Err(answer) => {
            let message = format!("Cortex refused the Alertmanager configuration: {}", answer.0);
            refused(Some((hash, message.clone())));
            Ok(Err(message))
        }
    }
}

/// Writes `status.configStatus` of the namespace's Alertmanager (when it exists) and
/// returns the health for the Cluster.
async fn write_alertmanager_status(
    ctx: &Context,
    namespace: &str,
    outcome: Result<(), String>,
    pushed: bool,
) -> Result<HealthStatus, AlertingError> {
    let current = ctx.alertmanagers.get(&ObjectRef::new(ALERTMANAGER_NAME).within(namespace));
    let previous = current.as_ref().and_then(|am| am.status.clone()?.config_status).unwrap_or_default();
    let (health, status, error_message) = match outcome {
        Ok(()) => (HealthStatus::HealthStatusUp, ConditionStatus::True, None),
        Err(message) => (HealthStatus::HealthStatusDown, ConditionStatus::False, Some(message)),
    };
    let last_updated = if pushed || (status == ConditionStatus::True && previous.status != status) {
        Some(Time(k8s_openapi::jiff::Timestamp::now()))
    } else {
        previous.last_updated.clone()
    };
    let mut desired = Alertmanager::new(ALERTMANAGER_NAME, AlertmanagerSpec::default());
    desired.metadata.namespace = Some(namespace.into());
    desired.status = Some(AlertmanagerStatus {
        config_status: Some(AlertmanagerConfigurationStatus { status, last_updated, error_message }),
    });
    let api: Api<Alertmanager> = Api::namespaced(ctx.client.clone(), namespace);
    match ctx.applier.apply_status(&api, &desired, current.as_deref()).await {
        Ok(_) => Ok(health),
        // Created a moment ago and not yet seen, or deleted meanwhile: the next reconcile writes it.
        Err(mla_common::Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404) => {
            Ok(health)
        }
        Err(error) => Err(error.into()),
    }
}

/// Copies every template of the MLA namespace into `namespace` and removes copies of
/// templates that are gone. A RuleGroup of the same name that is not a copy is left alone.
async fn sync_templates(
    ctx: &Context,
    cluster: &str,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<(), AlertingError> {
    let api: Api<RuleGroup> = Api::namespaced(ctx.client.clone(), namespace);
    let all = ctx.rule_groups.state();
    // A template being deleted is gone already: its copies go.
    let templates: Vec<_> = all
        .iter()
        .filter(|g| g.namespace().as_deref() == Some(ctx.shared.mla_namespace.as_str()))
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .collect();
    for template in &templates {
        let existing = ctx.rule_groups.get(&ObjectRef::new(&template.name_any()).within(namespace));
        if existing.as_ref().is_some_and(|g| !g.labels().contains_key(TEMPLATE_LABEL)) {
            tracing::debug!(template = %template.name_any(), "a RuleGroup of the template's name exists; not copied");
            continue;
        }
        let desired = template_copy(template, cluster, namespace, owner.clone());
        ctx.applier.apply(&api, &desired, existing.as_deref()).await?;
    }
    for copy in all.iter().filter(|g| {
        g.namespace().as_deref() == Some(namespace)
            && g.labels().contains_key(TEMPLATE_LABEL)
            && g.meta().deletion_timestamp.is_none()
    }) {
        if !templates.iter().any(|t| t.name_any() == copy.name_any()) {
            ctx.applier.delete(&api, &copy.name_any()).await?;
        }
    }
    Ok(())
}

/// The tenant's limits from its MLAAdminSetting (none when absent).
async fn sync_limits(
    ctx: &Context,
    tenant: &str,
    namespace: &str,
    problems: &mut Vec<Problem>,
) -> Result<(), AlertingError> {
    let setting = ctx
        .settings
        .get(&ObjectRef::new(MLA_ADMIN_SETTING_NAME).within(namespace))
        .filter(|s| s.spec.cluster_name == tenant && s.meta().deletion_timestamp.is_none());
    let overrides = limits::cortex_overrides(setting.as_ref().and_then(|s| s.spec.monitoring_rate_limits.as_ref()));
    let config = &ctx.shared.runtime_config;
    match limits::sync(&ctx.client, &ctx.applier, config, &ctx.shared.runtime_config_cache, tenant, overrides.as_ref())
        .await?
    {
        LimitsOutcome::Done => {}
        LimitsOutcome::Missing => problems.push(Problem {
            reason: "RuntimeConfigMissing",
            message: format!("ConfigMap {}/{} not found: the limits are not applied", config.namespace, config.name),
        }),
        LimitsOutcome::Unreadable(reason) => problems.push(Problem {
            reason: "InvalidRuntimeConfig",
            message: format!(
                "ConfigMap {}/{} key {}: {reason}; the limits are not applied",
                config.namespace, config.name, config.key
            ),
        }),
    }
    Ok(())
}

/// Removes the tenant's Alertmanager configuration, rule groups (both rulers) and limits.
/// Idempotent: what is already gone costs one read.
async fn cleanup_tenant(ctx: &Context, cluster: &Cluster, tenant: &str) -> Result<(), AlertingError> {
    if ctx.cortex.get_alertmanager(tenant).await?.is_some() {
        ctx.cortex.delete_alertmanager(tenant).await?;
    }
    for kind in [RuleGroupType::Metrics, RuleGroupType::Logs] {
        for (namespace, group) in ctx.cortex.list_rule_groups(kind, tenant).await? {
            ctx.cortex.delete_rule_group(kind, tenant, &namespace, &group).await?;
        }
    }
    let config = &ctx.shared.runtime_config;
    if let LimitsOutcome::Unreadable(reason) =
        limits::sync(&ctx.client, &ctx.applier, config, &ctx.shared.runtime_config_cache, tenant, None).await?
    {
        // Blocking the deletion would not make it readable; say so and go on.
        let message = format!(
            "the tenant's limits could not be removed from ConfigMap {}/{}: {reason}",
            config.namespace, config.name
        );
        ctx.events.warning(&cluster.object_ref(&()), "InvalidRuntimeConfig", "CleanupAlerting", message).await;
    }
    Ok(())
}

/// Deletes the Alertmanager, its Secret and the template copies in `namespace` (MLA was
/// switched off while the Cluster stays).
async fn remove_objects(ctx: &Context, namespace: &str) -> Result<(), AlertingError> {
    if let Some(am) = ctx.alertmanagers.get(&ObjectRef::new(ALERTMANAGER_NAME).within(namespace)) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        ctx.applier.delete(&secrets, &config_secret_name(&am)).await?;
        ctx.applier.delete(&Api::<Alertmanager>::namespaced(ctx.client.clone(), namespace), ALERTMANAGER_NAME).await?;
    }
    let api: Api<RuleGroup> = Api::namespaced(ctx.client.clone(), namespace);
    for copy in ctx.rule_groups.state().iter().filter(|g| {
        g.namespace().as_deref() == Some(namespace)
            && g.labels().contains_key(TEMPLATE_LABEL)
            && g.meta().deletion_timestamp.is_none()
    }) {
        ctx.applier.delete(&api, &copy.name_any()).await?;
    }
    Ok(())
}

/// Writes `extendedHealth.alertmanagerConfig` and the condition, only when they change; a
/// Warning Event on the Cluster when a new problem appears.
async fn write_status(
    ctx: &Context,
    cluster: &Cluster,
    health: Option<HealthStatus>,
    problems: Vec<Problem>,
) -> Result<(), AlertingError> {
    let (status, reason, message) = match problems.first() {
        None => {
            (ConditionStatus::True, "Synced", "the tenant's alerting configuration and limits are in Cortex".into())
        }
        Some(first) => (
            ConditionStatus::False,
            first.reason,
            problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "),
        ),
    };
    let existing = cluster.condition(CONDITION);
    let condition = Condition::next(existing, status, reason, message);
    if existing != Some(&condition) && status == ConditionStatus::False {
        let message = condition.message.clone().unwrap_or_default();
        ctx.events.warning(&cluster.object_ref(&()), reason, "ReconcileAlerting", message).await;
    }
    let health = ExtendedClusterHealth { alertmanager_config: health, ..Default::default() };
    status::apply(&ctx.applier, &ctx.client, cluster, Some((CONDITION, condition)), Some(health)).await?;
    Ok(())
}

/// Releases what this controller owns in the Cluster's status.
async fn clear_status(ctx: &Context, cluster: &Cluster) -> Result<(), AlertingError> {
    status::apply(&ctx.applier, &ctx.client, cluster, None, None).await?;
    Ok(())
}

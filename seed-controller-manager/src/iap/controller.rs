//! The IAP reconciler: for every Cluster with monitoring or logging on (and MLA offered by
//! this seed), oauth2-proxy's Secret, emails ConfigMap, Deployment, Service and Ingress in
//! the cluster namespace, and the condition `MLAIAPReady` on the Cluster. The emails follow
//! the UserProjectBindings of the cluster's project and the admin Users.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::admin::ReadinessGate;
use mla_common::api::{Cluster, Condition, ConditionStatus, GroupProjectBinding, User, UserProjectBinding};
use mla_common::apply::{Applied, Applier};
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::ControllerMetrics;
use mla_common::runtime::{Runtime, on_first_sync};
use serde::de::DeserializeOwned;

use super::ClientSecretSource;
use super::resources::{self, IapSettings};
use crate::scope::{ClusterScope, STALE_RETRY, Serve, UserGroups};
use crate::{SeedSettings, status, watch};
use mla_common::runtime::relisting_watcher;

/// Condition on the Cluster about its IAP.
pub const CONDITION: &str = "MLAIAPReady";
/// Field manager suffix and metrics label of this controller.
pub const CONTROLLER: &str = "iap";
/// Reason of the Warning Event about binding emails left out of the emails file.
pub const REJECTED_EMAILS_REASON: &str = "InvalidEmail";

struct Context {
    client: kube::Client,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    backoff: Backoff<String>,
    mla_enabled: bool,
    scope: ClusterScope,
    settings: IapSettings,
    source: ClientSecretSource,
    /// Watches whose first list has not arrived yet: until it is 0 a reconcile would
    /// work from partial caches (dropping emails, re-creating what exists), so it waits.
    unsynced: Arc<AtomicUsize>,
    bindings: Store<UserProjectBinding>,
    group_bindings: Store<GroupProjectBinding>,
    users: Store<User>,
    user_groups: Store<UserGroups>,
    client_secrets: Store<Secret>,
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    deployments: Store<Deployment>,
    services: Store<Service>,
    ingresses: Store<Ingress>,
}

/// Counts a watch as not synced yet; the returned callback, for its first complete list,
/// opens `gate` and counts it as synced.
fn count_unsynced(gate: ReadinessGate, unsynced: &Arc<AtomicUsize>) -> impl FnOnce() + Send + use<> {
    unsynced.fetch_add(1, Ordering::SeqCst);
    let unsynced = unsynced.clone();
    move || {
        gate.set_ready();
        unsynced.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens `gate` and counts the watch as synced with its first complete list.
fn synced<K, S>(
    stream: S,
    gate: ReadinessGate,
    unsynced: &Arc<AtomicUsize>,
) -> impl futures::Stream<Item = S::Item> + Send + use<K, S>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Send,
{
    on_first_sync(stream, count_unsynced(gate, unsynced))
}

/// The Clusters of `clusters` that belong to `project`.
fn clusters_of_project(clusters: &Store<Cluster>, project: &str) -> Vec<ObjectRef<Cluster>> {
    clusters
        .state()
        .iter()
        .filter(|c| c.project_id() == Some(project))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn all_clusters(clusters: &Store<Cluster>) -> Vec<ObjectRef<Cluster>> {
    clusters.state().iter().map(|c| ObjectRef::from_obj(c.as_ref())).collect()
}

/// The IAP controller, running until shutdown. Its watches have readiness gates
/// `iap/<kind>`. Followers keep their caches warm but reconcile nothing.
pub fn run(
    runtime: &Runtime,
    seed: &SeedSettings,
    settings: IapSettings,
    source: ClientSecretSource,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = runtime.client.clone();
    let applier = runtime.applier(CONTROLLER);
    let events = runtime.events(client.clone(), CONTROLLER);
    let metrics = runtime.metrics.controller(CONTROLLER);
    let readiness = runtime.readiness.clone();
    let leader = runtime.leader.clone();
    let stop = runtime.shutdown.clone();
    let resync_period = seed.resync_period;
    let mla_enabled = seed.mla_enabled;
    let scope = seed.scope.clone();
    async move {
        let unsynced = Arc::new(AtomicUsize::new(0));
        let child_synced = |name: &'static str| count_unsynced(readiness.gate(name), &unsynced);
        let app = resources::IAP;
        let manager = applier.field_manager().to_string();
        let (secrets, secret_events) =
            watch::children::<Secret, _>(&client, app, &manager, child_synced("iap/secrets"));
        let (config_maps, config_map_events) =
            watch::children::<ConfigMap, _>(&client, app, &manager, child_synced("iap/configmaps"));
        let (deployments, deployment_events) =
            watch::children::<Deployment, _>(&client, app, &manager, child_synced("iap/deployments"));
        let (services, service_events) =
            watch::children::<Service, _>(&client, app, &manager, child_synced("iap/services"));
        let (ingresses, ingress_events) =
            watch::children::<Ingress, _>(&client, app, &manager, child_synced("iap/ingresses"));

        let (clusters, cluster_writer) = reflector::store();
        let cluster_watch = watch::cluster_watch(&client, &manager, CONDITION);
        let cluster_events = watch::cluster_changes(
            synced(reflector::reflector(cluster_writer, cluster_watch), readiness.gate("iap/clusters"), &unsynced),
            CONDITION,
            None,
        );

        let (bindings, binding_writer) = reflector::store();
        let binding_watch =
            relisting_watcher(Api::<UserProjectBinding>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .modify(watch::only_managed_by(""));
        let binding_events = synced(
            reflector::reflector(binding_writer, binding_watch),
            readiness.gate("iap/userprojectbindings"),
            &unsynced,
        )
        .touched_objects();

        // Users change often (KKP records when they were last seen); only a change of
        // email or admin flag, or a deletion, can change who is let in.
        let (users, user_writer) = reflector::store();
        let user_watch = relisting_watcher(Api::<User>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(watch::only_managed_by(""));
        let user_events = watch::relevant_changes(
            synced(reflector::reflector(user_writer, user_watch), readiness.gate("iap/users"), &unsynced),
            |user: &User| (user.spec.email.clone(), user.spec.admin),
        );

        let (group_bindings, group_binding_writer) = reflector::store();
        let group_binding_watch =
            relisting_watcher(Api::<GroupProjectBinding>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .modify(watch::only_managed_by(""));
        let group_binding_events = synced(
            reflector::reflector(group_binding_writer, group_binding_watch),
            readiness.gate("iap/groupprojectbindings"),
            &unsynced,
        )
        .touched_objects();

        // Users' groups: only a change of the groups (or a deletion) can change who is let in.
        let (user_groups, user_groups_writer) = reflector::store();
        let user_groups_watch = relisting_watcher(Api::<UserGroups>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(watch::only_managed_by(""));
        let user_groups_events = watch::relevant_changes(
            synced(
                reflector::reflector(user_groups_writer, user_groups_watch),
                readiness.gate("iap/usergroups"),
                &unsynced,
            ),
            |user: &UserGroups| user.spec.groups.clone(),
        );

        let (client_secrets, client_secret_writer) = reflector::store();
        let client_secret_watch = relisting_watcher(
            Api::<Secret>::namespaced(client.clone(), &source.namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", source.name)),
        )
        .default_backoff();
        let client_secret_events = synced(
            reflector::reflector(client_secret_writer, client_secret_watch),
            readiness.gate("iap/client-secret"),
            &unsynced,
        )
        .touched_objects();

        let leader_gained = leader.gained();
        let context = Arc::new(Context {
            client: client.clone(),
            applier,
            events,
            metrics,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            mla_enabled,
            scope,
            settings,
            source,
            unsynced,
            bindings,
            group_bindings,
            users,
            user_groups,
            client_secrets,
            secrets,
            config_maps,
            deployments,
            services,
            ingresses,
        });
        let periodic = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(resync_period)).map(|_| ());
        let (by_binding, by_user, by_secret) = (clusters.clone(), clusters.clone(), clusters.clone());
        let (by_group_binding, by_groups) = (clusters.clone(), clusters.clone());
        let results = Controller::for_stream(cluster_events, clusters)
            .owns_stream(secret_events)
            .owns_stream(config_map_events)
            .owns_stream(deployment_events)
            .owns_stream(service_events)
            .owns_stream(ingress_events)
            .watches_stream(binding_events, move |binding: UserProjectBinding| {
                clusters_of_project(&by_binding, &binding.spec.project_id)
            })
            .watches_stream(user_events, move |_: User| all_clusters(&by_user))
            .watches_stream(group_binding_events, move |binding: GroupProjectBinding| {
                clusters_of_project(&by_group_binding, &binding.spec.project_id)
            })
            .watches_stream(user_groups_events, move |_: UserGroups| all_clusters(&by_groups))
            .watches_stream(client_secret_events, move |_: Secret| all_clusters(&by_secret))
            .reconcile_all_on(futures::stream::select(periodic, leader_gained))
            .with_config(ControllerConfig::default().concurrency(8).debounce(crate::watch::DEBOUNCE))
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, context);
        crate::watch::report_watch_errors(results, "IAP").await;
    }
}

#[tracing::instrument(skip(cluster, ctx), fields(cluster = %cluster.name_any()))]
async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, mla_common::Error> {
    if !ctx.applier.is_leader() {
        return Ok(Action::await_change());
    }
    if ctx.unsynced.load(Ordering::SeqCst) > 0 {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    match ctx.scope.serves(&cluster) {
        Serve::Yes => {}
        Serve::No => return Ok(Action::await_change()),
        Serve::NotYetKnown => return Ok(Action::requeue(STALE_RETRY)),
    }
    let started = Instant::now();
    let result = reconcile_iap(&cluster, &ctx).await;
    ctx.metrics.observe(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.backoff.reset(&cluster.name_any());
    }
    result
}

fn error_policy(cluster: Arc<Cluster>, error: &mla_common::Error, ctx: Arc<Context>) -> Action {
    if error.is_permanent() {
        tracing::warn!(cluster = %cluster.name_any(), %error, category = error.category(), "IAP reconcile failed; waiting for a change");
        return Action::requeue(mla_common::Error::PERMANENT_RECHECK);
    }
    let delay = ctx.backoff.next_delay(&cluster.name_any());
    tracing::warn!(cluster = %cluster.name_any(), %error, category = error.category(), ?delay, "IAP reconcile failed");
    Action::requeue(delay)
}

/// What the condition should say.
struct Wanted {
    status: ConditionStatus,
    reason: &'static str,
    message: String,
}

fn wanted(status: ConditionStatus, reason: &'static str, message: impl Into<String>) -> Wanted {
    Wanted { status, reason, message: message.into() }
}

async fn reconcile_iap(cluster: &Cluster, ctx: &Context) -> Result<Action, mla_common::Error> {
    let name = cluster.name_any();
    if cluster.meta().deletion_timestamp.is_some() {
        // Everything we made is owned by the Cluster: the garbage collector removes it.
        return Ok(Action::await_change());
    }
    let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).filter(|n| !n.is_empty());
    if !ctx.mla_enabled || !cluster.mla_enabled() {
        if let Some(namespace) = &namespace {
            remove_iap(ctx, namespace).await?;
        }
        write_condition(ctx, cluster, None).await?;
        return Ok(Action::await_change());
    }
    let Some(namespace) = namespace else {
        let message = "the cluster has no namespace yet (status.namespaceName)";
        write_condition(ctx, cluster, Some(wanted(ConditionStatus::False, "WaitingForNamespace", message))).await?;
        return Ok(Action::await_change());
    };

    let source = &ctx.source;
    let client_secret_object = ctx.client_secrets.get(&ObjectRef::new(&source.name).within(&source.namespace));
    let client_secret = client_secret_object
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(&source.key))
        .map(|v| v.0.clone())
        .filter(|v| !v.is_empty());
    let Some(client_secret) = client_secret else {
        let message = format!(
            "waiting for Secret {}/{} with key {:?} (the IAP's OIDC client secret)",
            source.namespace, source.name, source.key
        );
        let outcome = wanted(ConditionStatus::False, "ClientSecretMissing", message.clone());
        if write_condition(ctx, cluster, Some(outcome)).await? {
            ctx.events.warning(&cluster.object_ref(&()), "ClientSecretMissing", "ReconcileIAP", message).await;
        }
        return Ok(Action::await_change());
    };
    let client_secret_version =
        client_secret_object.as_ref().and_then(|s| s.metadata.resource_version.clone()).unwrap_or_default();

    let host = match resources::host(&ctx.settings, &name) {
        Ok(host) => host,
        Err(problem) => {
            let message = format!("no IAP host can be made for this cluster: {problem}");
            if write_condition(ctx, cluster, Some(wanted(ConditionStatus::False, "InvalidHost", message.clone())))
                .await?
            {
                ctx.events.warning(&cluster.object_ref(&()), "InvalidHost", "ReconcileIAP", message).await;
            }
            return Ok(Action::await_change());
        }
    };

    let bindings = ctx.bindings.state();
    let users = ctx.users.state();
    let group_bindings = ctx.group_bindings.state();
    let group_binding_refs: Vec<&GroupProjectBinding> = group_bindings.iter().map(Arc::as_ref).collect();
    let members: std::collections::BTreeMap<String, Vec<String>> =
        ctx.user_groups.state().iter().map(|u| (u.name_any(), u.spec.groups.clone())).collect();
    let allowed = resources::allowed_emails_with_groups(
        cluster.project_id(),
        bindings.iter().map(Arc::as_ref),
        users.iter().map(Arc::as_ref),
        crate::grafana::users::Groups { members: Some(&members), bindings: &group_binding_refs },
    );

    let owner = cluster.owner_reference();
    let cookie_secret = cookie_secret(ctx, &namespace).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_secret = ctx.secrets.get(&ObjectRef::new(resources::IAP).within(&namespace));
    let secret = resources::secret(&namespace, &owner, &cookie_secret, &client_secret);
    ctx.applier.apply(&secrets, &secret, current_secret.as_deref()).await?;

    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_emails = ctx.config_maps.get(&ObjectRef::new(resources::EMAILS_CONFIG_MAP).within(&namespace));
    let emails = resources::emails_config_map(&namespace, &owner, &allowed.emails);
    if ctx.applier.apply(&config_maps, &emails, current_emails.as_deref()).await? == Applied::Patched {
        tracing::info!(allowed = allowed.emails.len(), "updated the IAP's allowed emails");
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_deployment = ctx.deployments.get(&ObjectRef::new(resources::IAP).within(&namespace));
    let deployment = resources::deployment(&ctx.settings, &namespace, &owner, &host, &client_secret_version);
    ctx.applier.apply(&deployments, &deployment, current_deployment.as_deref()).await?;

    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_service = ctx.services.get(&ObjectRef::new(resources::IAP).within(&namespace));
    ctx.applier.apply(&services, &resources::service(&namespace, &owner), current_service.as_deref()).await?;

    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_ingress = ctx.ingresses.get(&ObjectRef::new(resources::IAP).within(&namespace));
    let ingress = resources::ingress(&ctx.settings, &namespace, &owner, &host);
    ctx.applier.apply(&ingresses, &ingress, current_ingress.as_deref()).await?;

    let available = ctx
        .deployments
        .get(&ObjectRef::new(resources::IAP).within(&namespace))
        .and_then(|d| d.status.clone())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        > 0;
    let rejected_note = (!allowed.rejected.is_empty()).then(|| {
        let list: Vec<String> = allowed.rejected.iter().map(|e| format!("{e:?}")).collect();
        format!("; left out binding emails that are not plain addresses: {}", list.join(", "))
    });
    let mut outcome = if available {
        wanted(ConditionStatus::True, "IAPAvailable", format!("the Alertmanager UI is served at https://{host}"))
    } else {
        wanted(ConditionStatus::False, "IAPNotAvailable", "the IAP Deployment has no available replica yet")
    };
    if let Some(note) = &rejected_note {
        outcome.message.push_str(note);
    }
    let previous_message = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.get(CONDITION))
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    write_condition(ctx, cluster, Some(outcome)).await?;
    if let Some(note) = rejected_note
        && !previous_message.ends_with(&note)
    {
        let message = format!("the IAP{note}");
        ctx.events.warning(&cluster.object_ref(&()), REJECTED_EMAILS_REASON, "ReconcileIAP", message).await;
    }
    Ok(Action::await_change())
}

/// The cluster's cookie secret: the one in its Secret when usable, else a new one. The
/// cache may not have seen a Secret we just wrote, so before making a new secret the API
/// server is asked: a reconcile never replaces a working cookie secret (which would sign
/// everybody out).
async fn cookie_secret(ctx: &Context, namespace: &str) -> Result<String, mla_common::Error> {
    let usable = |secret: Option<&Secret>| {
        resources::secret_value(secret, resources::COOKIE_SECRET_KEY).filter(|v| resources::cookie_secret_is_usable(v))
    };
    let cached = ctx.secrets.get(&ObjectRef::new(resources::IAP).within(namespace));
    if let Some(value) = usable(cached.as_deref()) {
        return Ok(value);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let live = secrets
        .get_opt(resources::IAP)
        .await
        .map_err(|e| mla_common::Error::kube("get", "Secret", format!("{namespace}/{}", resources::IAP), e))?;
    Ok(usable(live.as_ref()).unwrap_or_else(|| {
        tracing::info!(namespace, "generating the IAP cookie secret");
        resources::generate_cookie_secret()
    }))
}

/// Writes (or, with `None`, removes) this controller's condition when it changes; true
/// when it changed.
async fn write_condition(ctx: &Context, cluster: &Cluster, wanted: Option<Wanted>) -> Result<bool, mla_common::Error> {
    let condition = wanted.map(|Wanted { status, reason, message }| {
        (CONDITION, Condition::next(cluster.condition(CONDITION), status, reason, message))
    });
    Ok(status::apply(&ctx.applier, &ctx.client, cluster, condition, None).await? == Applied::Patched)
}

/// Deletes every object of the IAP in `namespace` that exists.
async fn remove_iap(ctx: &Context, namespace: &str) -> Result<(), mla_common::Error> {
    delete_cached(ctx, &ctx.ingresses, namespace, resources::IAP).await?;
    delete_cached(ctx, &ctx.services, namespace, resources::IAP).await?;
    delete_cached(ctx, &ctx.deployments, namespace, resources::IAP).await?;
    delete_cached(ctx, &ctx.config_maps, namespace, resources::EMAILS_CONFIG_MAP).await?;
    delete_cached(ctx, &ctx.secrets, namespace, resources::IAP).await
}

/// Deletes `namespace/name` if the cache holds it (nothing to do is no request).
async fn delete_cached<K>(ctx: &Context, store: &Store<K>, namespace: &str, name: &str) -> Result<(), mla_common::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    if store.get(&ObjectRef::new(name).within(namespace)).is_some() {
        ctx.applier.delete(&Api::<K>::namespaced(ctx.client.clone(), namespace), name).await?;
    }
    Ok(())
}

//! Keeps Grafana in step with Projects, Users, UserProjectBindings, Clusters and the
//! dashboard ConfigMaps.
//!
//! Grafana's state is read in bulk (organizations, each managed org's members,
//! datasources and dashboards), so one pass looks at everything with a few calls per org
//! instead of several per object, and writes only what differs. A pass runs after any
//! watched change (debounced), every resync period, and when this replica becomes leader.
//! An object whose step fails backs off on its own (per-object exponential backoff) while
//! the rest is served; Grafana being unreachable fails the whole pass, which backs off too
//! and reports on every MLA Cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::admin::ReadinessGate;
use mla_common::api::{Cluster, Condition, ConditionStatus, GroupProjectBinding, Project, User, UserProjectBinding};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::{ControllerMetrics, ExternalApiMetrics};
use mla_common::runtime::{Runtime, on_first_sync};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::client::{Credentials, GrafanaClient, GrafanaError, GrafanaUser, Org, Role};
use super::{dashboards, orgs, users};
use crate::scope::{ClusterPause, UserGroups};
use crate::status;
use mla_common::runtime::relisting_watcher;

/// Field manager suffix, metrics label and Event reporter of this controller.
pub const CONTROLLER: &str = "grafana";
/// Condition on each MLA Cluster about its Grafana datasources.
pub const CONDITION: &str = "MLAGrafanaReady";
/// Finalizer on Projects, Users and Clusters whose Grafana objects must go with them.
pub const FINALIZER: &str = "mla.k8c.io/grafana";
/// Grafana's default organization, where `auto_assign_org` puts new users.
pub const DEFAULT_ORG: i64 = 1;
/// Watched changes arriving within this long after the first are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The watches a pass waits for before it may act (an empty cache would look like
/// "delete everything").
const WATCHES: usize = 8;

/// How this controller is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// MLA is offered in this seed; without it only finalizers and datasources are cleaned up.
    pub mla_enabled: bool,
    /// Namespace of the Grafana Secret and the dashboard ConfigMaps.
    pub mla_namespace: String,
    /// Grafana's base URL.
    pub url: String,
    /// Secret with `admin-user` and `admin-password`.
    pub secret: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Name of the organization holding every cluster's datasources; `None`: none.
    pub superuser_org: Option<String>,
    /// Everything is looked at again this often.
    pub resync_period: Duration,
    /// Which Clusters this manager serves (KKP's pause and worker-name rules).
    pub scope: crate::scope::ClusterScope,
    /// Steps (Grafana calls) a pass keeps in flight at once; at least 1.
    pub concurrency: usize,
}

/// Why a pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub(super) enum PassError {
    #[error("Secret {0} with keys admin-user and admin-password is missing or incomplete")]
    Credentials(String),
    #[error(transparent)]
    Grafana(#[from] GrafanaError),
}

impl PassError {
    fn category(&self) -> &'static str {
        match self {
            PassError::Credentials(_) => "credentials_missing",
            PassError::Grafana(error) => error.category(),
        }
    }

    pub(super) fn reason(&self) -> &'static str {
        match self {
            PassError::Credentials(_) => "GrafanaCredentialsMissing",
            PassError::Grafana(_) => "GrafanaUnavailable",
        }
    }
}

/// A failure of one object's step.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error(transparent)]
    Grafana(#[from] GrafanaError),
    #[error(transparent)]
    Kube(#[from] mla_common::Error),
}

impl StepError {
    pub(super) fn category(&self) -> &'static str {
        match self {
            StepError::Grafana(error) => error.category(),
            StepError::Kube(error) => error.category(),
        }
    }

    /// Grafana stopped answering: the pass stops, since every further call would fail too.
    fn is_unavailable(&self) -> bool {
        matches!(self, StepError::Grafana(error) if error.is_unavailable())
    }
}

/// Per-object retry times with exponential backoff.
#[derive(Debug)]
pub(super) struct Retry {
    backoff: Backoff<String>,
    due: Mutex<HashMap<String, Instant>>,
}

impl Retry {
    fn new() -> Self {
        Self { backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)), due: Mutex::default() }
    }

    fn due(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `key` may be tried now.
    pub(super) fn ready(&self, key: &str) -> bool {
        self.due().get(key).is_none_or(|due| Instant::now() >= *due)
    }

    /// Records a failure; returns whether it is the first of a series (worth an Event).
    pub(super) fn failed(&self, key: &str) -> bool {
        let delay = self.backoff.next_delay(&key.to_string());
        self.due().insert(key.to_string(), Instant::now() + delay).is_none()
    }

    pub(super) fn succeeded(&self, key: &str) {
        if self.due().remove(key).is_some() {
            self.backoff.reset(&key.to_string());
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.due().values().min().copied()
    }
}

pub(super) struct Stores {
    pub(super) projects: Store<Project>,
    pub(super) users: Store<User>,
    /// The Users' `spec.groups` (not part of our typed User).
    pub(super) user_groups: Store<UserGroups>,
    pub(super) bindings: Store<UserProjectBinding>,
    pub(super) group_bindings: Store<GroupProjectBinding>,
    pub(super) clusters: Store<Cluster>,
    pub(super) config_maps: Store<ConfigMap>,
    pub(super) secrets: Store<Secret>,
}

pub(super) struct Context {
    pub(super) client: kube::Client,
    pub(super) applier: Applier,
    pub(super) events: EventPublisher,
    metrics: ControllerMetrics,
    external: ExternalApiMetrics,
    http: reqwest::Client,
    pub(super) settings: Settings,
    pub(super) stores: Stores,
    pub(super) retry: Retry,
    /// Dashboard problems already reported by Event, so each is reported once.
    pub(super) reported: Mutex<HashSet<(String, String, String)>>,
    /// The reason of the outage already reported on the Projects (one Event each per
    /// outage), if any.
    pub(super) outage: Mutex<Option<&'static str>>,
    /// A pass left a Cluster alone because the pause projection lagged: look again soon.
    pub(super) repass: std::sync::atomic::AtomicBool,
    /// The category of the first object that failed in this pass (the pass itself went
    /// on), for the reconcile metrics.
    failure: Mutex<Option<&'static str>>,
}

impl Context {
    /// Records that one object's step failed with `category` (the pass goes on).
    pub(super) fn note_failure(&self, category: &'static str) {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(category);
    }
}

/// A reflector whose first list opens `gate` and whose relevant changes wake the pass
/// loop: `relevant` picks what this controller reads from an object, so that changes it
/// does not read (status heartbeats, other controllers' conditions, its own condition)
/// cost no pass.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    gate: ReadinessGate,
    synced: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    relevant: fn(&K) -> serde_json::Value,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, relisting_watcher(api, config).default_backoff().modify(trim));
    let stream = on_first_sync(stream, move || {
        gate.set_ready();
        synced.fetch_add(1, Ordering::SeqCst);
    });
    // A hash of the relevant part is all that is kept per object.
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    let task = stream.for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let key = (object.namespace(), object.name_any());
                let fingerprint = crate::watch::fingerprint(&relevant(&object));
                let changed = seen.get(&key) != Some(&fingerprint);
                seen.insert(key, fingerprint);
                if changed {
                    wake.notify_one();
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.remove(&(object.namespace(), object.name_any()));
                wake.notify_one();
            }
            Ok(watcher::Event::InitDone) => wake.notify_one(),
            Ok(watcher::Event::Init) => {}
            Err(error) => tracing::warn!(%error, "grafana watch failed; retrying"),
        }
        futures::future::ready(())
    });
    (store, task)
}

/// The finalizers this controller reads (its own and KKP's MLA finalizer, which it
/// releases with its own) and deletion; once an object is being deleted, every finalizer.
/// Another writer's finalizer (the alerting controller's on every Cluster) wakes no pass.
fn lifecycle<K: Resource>(object: &K) -> serde_json::Value {
    let deleting = is_deleting(object);
    serde_json::json!([
        has_finalizer(object),
        crate::scope::has_finalizer(object, crate::scope::KKP_MLA_FINALIZER),
        deleting,
        if deleting { object.meta().finalizers.clone() } else { None },
    ])
}

fn relevant_project(project: &Project) -> serde_json::Value {
    serde_json::json!([project.spec.name, project.annotations().get(orgs::ORG_ANNOTATION), lifecycle(project)])
}

fn relevant_user(user: &User) -> serde_json::Value {
    serde_json::json!([user.spec, lifecycle(user)])
}

fn relevant_binding(binding: &UserProjectBinding) -> serde_json::Value {
    serde_json::json!([binding.spec, lifecycle(binding)])
}

fn relevant_group_binding(binding: &GroupProjectBinding) -> serde_json::Value {
    serde_json::json!([binding.spec, lifecycle(binding)])
}

fn relevant_user_groups(user: &UserGroups) -> serde_json::Value {
    serde_json::json!(user.spec.groups)
}

fn relevant_pause(pause: &ClusterPause) -> serde_json::Value {
    serde_json::json!(pause.spec.pause)
}

fn relevant_cluster(cluster: &Cluster) -> serde_json::Value {
    let mla = cluster.spec.mla.as_ref().map(|m| (m.monitoring_enabled, m.logging_enabled));
    let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.as_ref());
    serde_json::json!([cluster.project_id(), cluster.spec.human_readable_name, mla, namespace, lifecycle(cluster)])
}

fn relevant_config_map(config_map: &ConfigMap) -> serde_json::Value {
    if config_map.name_any().starts_with(dashboards::CONFIG_MAP_PREFIX) {
        serde_json::json!([config_map.data, lifecycle(config_map)])
    } else {
        serde_json::Value::Null
    }
}

fn relevant_secret(secret: &Secret) -> serde_json::Value {
    serde_json::json!(secret.data)
}

/// The controller of `runtime`, running until shutdown. Its watches have readiness gates
/// `grafana/<kind>`.
pub fn run(
    runtime: &Runtime,
    settings: Settings,
    external: ExternalApiMetrics,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let http = super::client::http_client(settings.timeout)?;
    let client = runtime.client.clone();
    let wake = Arc::new(Notify::new());
    let synced = Arc::new(AtomicUsize::new(0));
    let gate = |name: &str| runtime.readiness.gate(format!("grafana/{name}"));
    // What the caches keep: our own managedFields entry (the applier's), and of a
    // Cluster's conditions our own.
    let manager = runtime.applier(CONTROLLER).field_manager().to_string();
    let all = watcher::Config::default();
    let (projects, w1) = watch(
        Api::<Project>::all(client.clone()),
        all.clone(),
        gate("projects"),
        synced.clone(),
        wake.clone(),
        relevant_project,
        crate::watch::only_managed_by(&manager),
    );
    let (users, w2) = watch(
        Api::<User>::all(client.clone()),
        all.clone(),
        gate("users"),
        synced.clone(),
        wake.clone(),
        relevant_user,
        crate::watch::only_managed_by(&manager),
    );
    let (bindings, w3) = watch(
        Api::<UserProjectBinding>::all(client.clone()),
        all.clone(),
        gate("userprojectbindings"),
        synced.clone(),
        wake.clone(),
        relevant_binding,
        crate::watch::only_managed_by(&manager),
    );
    let (group_bindings, w7) = watch(
        Api::<GroupProjectBinding>::all(client.clone()),
        all.clone(),
        gate("groupprojectbindings"),
        synced.clone(),
        wake.clone(),
        relevant_group_binding,
        crate::watch::only_managed_by(&manager),
    );
    let (user_groups, w8) = watch(
        Api::<UserGroups>::all(client.clone()),
        all.clone(),
        gate("usergroups"),
        synced.clone(),
        wake.clone(),
        relevant_user_groups,
        crate::watch::only_managed_by(&manager),
    );
    // Only to wake a pass when a pause switches; the scope reads its own projection.
    let (_, w9) = watch(
        Api::<ClusterPause>::all(client.clone()),
        all.clone(),
        gate("clusterpauses"),
        Arc::new(AtomicUsize::new(0)),
        wake.clone(),
        relevant_pause,
        crate::watch::only_managed_by(&manager),
    );
    let (clusters, w4) = watch(
        Api::<Cluster>::all(client.clone()),
        all.clone(),
        gate("clusters"),
        synced.clone(),
        wake.clone(),
        relevant_cluster,
        crate::watch::cluster_view(&manager, CONDITION),
    );
    let (config_maps, w5) = watch(
        Api::<ConfigMap>::namespaced(client.clone(), &settings.mla_namespace),
        all.clone(),
        gate("configmaps"),
        synced.clone(),
        wake.clone(),
        relevant_config_map,
        crate::watch::only_managed_by(&manager),
    );
    let (secrets, w6) = watch(
        Api::<Secret>::namespaced(client.clone(), &settings.mla_namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.secret)),
        gate("secret"),
        synced.clone(),
        wake.clone(),
        relevant_secret,
        crate::watch::only_managed_by(&manager),
    );
    let context = Arc::new(Context {
        applier: runtime.applier(CONTROLLER),
        events: runtime.events(client.clone(), CONTROLLER),
        metrics: runtime.metrics.controller(CONTROLLER),
        client,
        external,
        http,
        settings,
        stores: Stores { projects, users, user_groups, bindings, group_bindings, clusters, config_maps, secrets },
        retry: Retry::new(),
        reported: Mutex::default(),
        outage: Mutex::default(),
        repass: std::sync::atomic::AtomicBool::new(false),
        failure: Mutex::default(),
    });
    let leader = runtime.leader.clone();
    let shutdown = runtime.shutdown.clone();
    let leader_wake = wake.clone();
    Ok(async move {
        let watches = async move {
            tokio::join!(w1, w2, w3, w4, w5, w6, w7, w8, w9);
        };
        let gained = leader.gained().for_each(move |()| {
            leader_wake.notify_one();
            futures::future::ready(())
        });
        let passes = pass_loop(context, wake, synced, leader);
        tokio::select! {
            () = watches => {}
            () = gained => {}
            () = passes => {}
            () = shutdown.cancelled() => {}
        }
    })
}

async fn pass_loop(
    ctx: Arc<Context>,
    wake: Arc<Notify>,
    synced: Arc<AtomicUsize>,
    leader: mla_common::leader::LeaderState,
) {
    let pass_backoff: Backoff<&'static str> = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut next = tokio::time::Instant::now() + ctx.settings.resync_period;
    loop {
        tokio::select! {
            () = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + ctx.settings.resync_period;
        if synced.load(Ordering::SeqCst) < WATCHES || !leader.is_leader() {
            continue;
        }
        let started = Instant::now();
        match pass(&ctx).await {
            Ok(()) => {
                pass_backoff.reset(&"pass");
                // A pass that served everything but some objects counts as failed with
                // the first of their categories (e.g. `forbidden` for a read-only
                // datasource); those objects back off on their own.
                let failure = ctx.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                ctx.metrics.observe_category(started.elapsed(), failure);
                *ctx.outage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            }
            Err(error) => {
                ctx.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                let delay = pass_backoff.next_delay(&"pass");
                tracing::warn!(%error, category = error.category(), ?delay, "grafana pass failed");
                ctx.metrics.observe_category(started.elapsed(), Some(error.category()));
                super::release::report_unavailable(&ctx, &error).await;
                next = tokio::time::Instant::now() + delay;
            }
        }
        if let Some(due) = ctx.retry.next_due() {
            let due = tokio::time::Instant::from_std(due.max(Instant::now()));
            next = next.min(due);
        }
        if ctx.repass.swap(false, Ordering::SeqCst) {
            next = next.min(tokio::time::Instant::now() + crate::scope::STALE_RETRY);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "grafana pass done");
    }
}

fn credentials(ctx: &Context) -> Result<Credentials, PassError> {
    let missing = || PassError::Credentials(format!("{}/{}", ctx.settings.mla_namespace, ctx.settings.secret));
    let secret = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&ctx.settings.secret).within(&ctx.settings.mla_namespace))
        .ok_or_else(missing)?;
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    match (text("admin-user"), text("admin-password")) {
        (Some(user), Some(password)) => Ok(Credentials { user, password }),
        _ => Err(missing()),
    }
}

pub(super) fn has_finalizer<K: Resource>(object: &K) -> bool {
    object.meta().finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

pub(super) fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

/// One look at everything.
async fn pass(ctx: &Context) -> Result<(), PassError> {
    let credentials = credentials(ctx)?;
    let grafana = GrafanaClient::new(ctx.http.clone(), &ctx.settings.url, credentials, ctx.external.clone());
    if !ctx.settings.mla_enabled {
        return super::release::release(ctx, &grafana).await;
    }
    let (me, my_login) = grafana.signed_in_user().await?;
    let all_orgs = grafana.orgs().await?;

    // Organizations, one per Project, several at a time: each Project's plan reads the
    // shared list of orgs and its outcome updates it (org names differ per Project, so
    // concurrent steps never race for the same org).
    let mut project_orgs: BTreeMap<String, i64> = BTreeMap::new();
    let mut projects = ctx.stores.projects.state();
    projects.sort_by_key(|p| p.name_any());
    // Finalizers first, many at a time (a Project whose finalizer failed fails its step).
    let project_api: Api<Project> = Api::all(ctx.client.clone());
    let wanted_projects: Vec<&Project> = projects
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| !is_deleting(*p) && ctx.retry.ready(&format!("project/{}", p.name_any())))
        .collect();
    let project_finalizers = Mutex::new(add_finalizers(ctx, &project_api, wanted_projects).await);
    let shared_orgs = Mutex::new(all_orgs);
    let steps: Vec<BoxFuture<'_, _>> = projects
        .iter()
        .map(|project| {
            let (shared_orgs, project_finalizers) = (&shared_orgs, &project_finalizers);
            let grafana = &grafana;
            async move {
                let key = format!("project/{}", project.name_any());
                if !ctx.retry.ready(&key) {
                    return (project, key, None);
                }
                let failed = project_finalizers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&project.name_any());
                if let Some(error) = failed {
                    return (project, key, Some(Err(StepError::Kube(error))));
                }
                let result = super::member_pass::reconcile_project(ctx, grafana, project, shared_orgs).await;
                (project, key, Some(result))
            }
            .boxed()
        })
        .collect();
    let mut steps = in_flight(steps, ctx.settings.concurrency);
    while let Some((project, key, result)) = steps.next().await {
        match result {
            None => {
                let orgs = shared_orgs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(id) = orgs::annotated_id(project).filter(|id| orgs.iter().any(|o| o.id == *id)) {
                    project_orgs.insert(project.name_any(), id);
                }
            }
            Some(Ok(Some(id))) => {
                ctx.retry.succeeded(&key);
                project_orgs.insert(project.name_any(), id);
            }
            Some(Ok(None)) => ctx.retry.succeeded(&key),
            Some(Err(error)) if error.is_unavailable() => return Err(unavailable(error)),
            Some(Err(error)) => {
                tracing::warn!(project = %project.name_any(), %error, category = error.category(), "grafana organization failed");
                ctx.note_failure(error.category());
                if ctx.retry.failed(&key) {
                    ctx.events
                        .warning(
                            &project.object_ref(&()),
                            "GrafanaOrganizationFailed",
                            "ReconcileGrafana",
                            error.to_string(),
                        )
                        .await;
                }
            }
        }
    }
    drop(steps);
    let mut all_orgs = shared_orgs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);

    // The superuser organization.
    let superuser_org = match &ctx.settings.superuser_org {
        None => None,
        Some(name) => match all_orgs.iter().find(|o| &o.name == name) {
            Some(org) => Some(org.id),
            None => {
                let id = grafana.create_org(name).await?;
                tracing::info!(org = id, "created the Grafana superuser organization");
                all_orgs.push(Org { id, name: name.clone() });
                Some(id)
            }
        },
    };
    let mut managed: BTreeSet<i64> = project_orgs.values().copied().collect();
    managed.extend(superuser_org);

    // Members of every managed org (and the default org), and our own Admin role there;
    // the listings several at a time.
    let mut memberships: HashMap<String, BTreeMap<i64, Role>> = HashMap::new();
    let member_orgs: Vec<i64> = managed.iter().copied().chain(std::iter::once(DEFAULT_ORG)).collect();
    let listings: Vec<BoxFuture<'_, _>> = member_orgs
        .into_iter()
        .map(|org| {
            let grafana = &grafana;
            async move { (org, grafana.org_users(org).await) }.boxed()
        })
        .collect();
    let mut listings = in_flight(listings, ctx.settings.concurrency);
    while let Some((org, members)) = listings.next().await {
        let members = members?;
        if org != DEFAULT_ORG && !members.iter().any(|m| m.user_id == me && m.role == Role::Admin) {
            // An adopted org: we need its Admin role for datasources and dashboards.
            if members.iter().any(|m| m.user_id == me) {
                grafana.update_org_user(org, me, Role::Admin).await?;
            } else {
                grafana.add_org_user(org, &my_login, Role::Admin).await?;
            }
        }
        for member in members.into_iter().filter(|m| m.user_id != me) {
            for id in [member.email, member.login] {
                if !id.is_empty() {
                    memberships.entry(id).or_default().insert(org, member.role);
                }
            }
        }
    }
    drop(listings);

    // Users.
    let all_users = ctx.stores.users.state();
    let all_bindings = ctx.stores.bindings.state();
    let user_refs: Vec<&User> = all_users.iter().map(|u| u.as_ref()).collect();
    let binding_refs: Vec<&UserProjectBinding> = all_bindings.iter().map(|b| b.as_ref()).collect();
    let all_group_bindings = ctx.stores.group_bindings.state();
    let group_binding_refs: Vec<&GroupProjectBinding> = all_group_bindings.iter().map(|b| b.as_ref()).collect();
    let members: BTreeMap<String, Vec<String>> =
        ctx.stores.user_groups.state().iter().map(|u| (u.name_any(), u.spec.groups.clone())).collect();
    let groups = users::Groups { members: Some(&members), bindings: &group_binding_refs };
    let desired = users::desired_users(&user_refs, &binding_refs, groups, &project_orgs, superuser_org);
    // Every Grafana user by lower-case email and login: one listing instead of a lookup
    // per User.
    let mut known: HashMap<String, GrafanaUser> = HashMap::new();
    for user in grafana.users().await? {
        for id in [user.email.to_lowercase(), user.login.to_lowercase()] {
            if !id.is_empty() {
                known.entry(id).or_insert_with(|| user.clone());
            }
        }
    }
    // Finalizers of the Users that get a Grafana user, many at a time.
    let user_api: Api<User> = Api::all(ctx.client.clone());
    let wanted_users: Vec<&User> = user_refs
        .iter()
        .copied()
        .filter(|u| {
            !is_deleting(*u)
                && desired.contains_key(&u.spec.email.to_lowercase())
                && ctx.retry.ready(&format!("user/{}", u.name_any()))
        })
        .collect();
    let user_finalizers = Mutex::new(add_finalizers(ctx, &user_api, wanted_users).await);
    let mut member_scope = managed.clone();
    member_scope.insert(DEFAULT_ORG);
    let steps: Vec<BoxFuture<'_, _>> = user_refs
        .iter()
        .copied()
        .filter(|user| ctx.retry.ready(&format!("user/{}", user.name_any())))
        .map(|user| {
            let (grafana, desired, known, memberships, member_scope) =
                (&grafana, &desired, &known, &memberships, &member_scope);
            let user_finalizers = &user_finalizers;
            async move {
                let failed =
                    user_finalizers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&user.name_any());
                if let Some(error) = failed {
                    return (user, Err(StepError::Kube(error)));
                }
                let result = super::member_pass::reconcile_user(
                    ctx,
                    grafana,
                    user,
                    me,
                    desired,
                    known,
                    memberships,
                    member_scope,
                )
                .await;
                (user, result)
            }
            .boxed()
        })
        .collect();
    let mut steps = in_flight(steps, ctx.settings.concurrency);
    while let Some((user, result)) = steps.next().await {
        let key = format!("user/{}", user.name_any());
        match result {
            Ok(()) => ctx.retry.succeeded(&key),
            Err(error) if error.is_unavailable() => return Err(unavailable(error)),
            Err(error) => {
                tracing::warn!(user = %user.name_any(), %error, category = error.category(), "grafana user failed");
                ctx.note_failure(error.category());
                if ctx.retry.failed(&key) {
                    ctx.events
                        .warning(&user.object_ref(&()), "GrafanaUserFailed", "ReconcileGrafana", error.to_string())
                        .await;
                }
            }
        }
    }
    drop(steps);

    // Datasources.
    let clusters = ctx.stores.clusters.state();
    super::datasource_pass::reconcile_datasources(
        ctx,
        &grafana,
        &clusters,
        &projects,
        &project_orgs,
        superuser_org,
        &managed,
    )
    .await?;

    // Dashboards.
    super::dashboard_pass::reconcile_dashboards(ctx, &grafana, &managed).await?;
    Ok(())
}

/// Kubernetes writes a pass keeps in flight at once (finalizers, conditions): the API
/// server takes far more than Grafana, and one at a time at its latency under load they
/// were most of a cold start.
pub(super) const KUBE_CONCURRENCY: usize = 64;

/// Adds this controller's finalizer to every object of `objects` that lacks it,
/// [`KUBE_CONCURRENCY`] at a time; the failures by object name.
pub(super) async fn add_finalizers<K>(
    ctx: &Context,
    api: &Api<K>,
    objects: Vec<&K>,
) -> HashMap<String, mla_common::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync,
{
    let steps: Vec<BoxFuture<'_, _>> = objects
        .into_iter()
        .filter(|object| !has_finalizer(*object))
        .map(|object| {
            async move { (object.name_any(), ctx.applier.add_finalizer(api, object, FINALIZER).await) }.boxed()
        })
        .collect();
    in_flight(steps, KUBE_CONCURRENCY)
        .filter_map(|(name, result)| futures::future::ready(result.err().map(|e| (name, e))))
        .collect()
        .await
}

/// The outputs of `steps`, run with at most `limit` in flight, as they finish. The steps
/// are boxed before they are streamed: a stream built from a closure over borrowed items
/// is not provably `Send` (rust-lang/rust#102211).
pub(super) fn in_flight<'a, T: Send + 'a>(
    steps: Vec<BoxFuture<'a, T>>,
    limit: usize,
) -> impl futures::Stream<Item = T> + Send + 'a {
    futures::stream::iter(steps).buffer_unordered(limit.max(1))
}

fn unavailable(error: StepError) -> PassError {
    match error {
        StepError::Grafana(error) => PassError::Grafana(error),
        // Only Grafana errors are "unavailable".
        StepError::Kube(error) => PassError::Grafana(GrafanaError::InvalidResponse {
            endpoint: "kube",
            method: "",
            reason: error.to_string(),
        }),
    }
}

/// Writes (or, with `None`, removes) this controller's condition, only when it changes.
pub(super) async fn write_condition(
    ctx: &Context,
    cluster: &Cluster,
    outcome: Option<(ConditionStatus, &'static str, String)>,
) -> Result<(), mla_common::Error> {
    let condition = outcome.map(|(status, reason, message)| {
        (CONDITION, Condition::next(cluster.condition(CONDITION), status, reason, message))
    });
    status::apply(&ctx.applier, &ctx.client, cluster, condition, None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backs_off_per_key() {
        let retry = Retry::new();
        assert!(retry.ready("a"));
        assert!(retry.failed("a"), "first failure");
        assert!(!retry.failed("a"), "second failure");
        assert!(!retry.ready("a") && retry.ready("b"));
        retry.succeeded("a");
        assert!(retry.ready("a") && retry.next_due().is_none());
    }
}

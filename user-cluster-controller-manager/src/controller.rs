//! The agents' reconciler: one Cluster, two API servers. It reads the Cluster, the cluster
//! CA and the gateway's external Service in the seed, and keeps the agents in the user
//! cluster's agents namespace (`mla-system` by default) as the Cluster's `spec.mla` asks;
//! their health goes back into the Cluster's status: always as the conditions
//! `MLAMonitoringAgentReady` / `MLALoggingAgentReady`, and, unless switched off (KKP's own
//! user-cluster-controller-manager clears those fields on every reconcile when its MLA is
//! off), as `status.extendedHealth.monitoring` / `logging`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{
    Cluster, ClusterSpec, ClusterStatus, Condition, ConditionStatus, Conditions, ExtendedClusterHealth, HealthStatus,
};
use mla_common::apply::{Applied, Applier};
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::{CertificateExpiry, ControllerMetrics};
use mla_common::runtime::{Runtime, mark_synced};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::agents::common as agent;
use crate::agents::placement::Placement;
use crate::agents::prometheus::{self, PrometheusConfigInput, PrometheusDeploymentSettings};
use crate::agents::promtail::{LoggingAgent, LoggingAgentSettings, LoggingConfigInput};
use crate::certificates::{self, AgentCertificates};
use crate::gateway_url::{gateway_node_port, gateway_url};
use mla_common::runtime::relisting_watcher;

/// Field manager suffix and metrics label of this controller.
pub const CONTROLLER: &str = "agents";
/// The seed Secret holding the cluster's CA.
pub const CA_SECRET: &str = "mla-gateway-ca";
/// The seed Service exposing the gateway's write path.
pub const EXTERNAL_SERVICE: &str = "mla-gateway-ext";

/// What the reconciler needs to know besides the clients.
#[derive(Clone, Debug)]
pub struct AgentsSettings {
    /// Name of the Cluster served.
    pub cluster_name: String,
    /// Seed namespace of the cluster (where the CA Secret and the gateway live).
    pub cluster_namespace: String,
    /// Every object is compared again this often, even without a change.
    pub resync_period: Duration,
    /// The logging agent to run.
    pub logging_agent: LoggingAgent,
    /// The agents' namespace and cluster-scoped names.
    pub placement: Placement,
    /// Whether the agents' health also goes into `status.extendedHealth.monitoring` and
    /// `logging` (false beside KKP's own user-cluster-controller-manager, which owns them).
    pub extended_health: bool,
    /// Image of the Prometheus agent (`--prometheus-image`).
    pub prometheus_image: String,
    /// Image of Promtail (`--promtail-image`).
    pub promtail_image: String,
}

/// Condition on the Cluster: the metrics agent is available.
pub const MONITORING_CONDITION: &str = "MLAMonitoringAgentReady";
/// Condition on the Cluster: the log agent is available on every node it should run on.
pub const LOGGING_CONDITION: &str = "MLALoggingAgentReady";

struct Context {
    seed: kube::Client,
    user: kube::Client,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    /// Earliest notAfter of the agents' client certificates (`client`).
    expiry: CertificateExpiry,
    settings: AgentsSettings,
    clusters: Store<Cluster>,
    seed_secrets: Store<Secret>,
    seed_services: Store<Service>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    deployments: Store<Deployment>,
    daemon_sets: Store<DaemonSet>,
    last_skipped: std::sync::Mutex<BTreeSet<String>>,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// A Kubernetes call failed.
    #[error(transparent)]
    Kube(#[from] mla_common::Error),
    /// Certificates could not be issued.
    #[error("client certificates: {0}")]
    Pki(#[from] mla_common::pki::PkiError),
    /// An agent configuration could not be rendered.
    #[error("agent configuration: {0}")]
    Config(#[from] agent::ConfigError),
}

/// A reflector driven by `trigger`: every change pokes `notify`; `gate` opens with the
/// first complete list.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    gate: mla_common::admin::ReadinessGate,
    notify: Arc<Notify>,
) -> (Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = mark_synced(reflector::reflector(writer, relisting_watcher(api, config).default_backoff()), gate);
    let drive = stream.for_each(move |event| {
        match event {
            Ok(_) => notify.notify_one(),
            Err(error) => tracing::warn!(%error, "watch failed; retrying"),
        }
        futures::future::ready(())
    });
    (store, drive)
}

/// The agents' reconciler of `runtime` (whose client is the seed's), running until
/// shutdown.
pub fn run(
    runtime: &Runtime,
    user: kube::Client,
    settings: AgentsSettings,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let seed = runtime.client.clone();
    let notify = Arc::new(Notify::new());
    let gate = |name: &str| runtime.readiness.gate(name);
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let ns = settings.cluster_namespace.clone();
    let agents_ns = settings.placement.namespace().to_string();
    let (clusters, w1) =
        watch(Api::<Cluster>::all(seed.clone()), by_name(&settings.cluster_name), gate("cluster"), notify.clone());
    let (seed_secrets, w2) =
        watch(Api::<Secret>::namespaced(seed.clone(), &ns), by_name(CA_SECRET), gate("seed/ca"), notify.clone());
    let (seed_services, w3) = watch(
        Api::<Service>::namespaced(seed.clone(), &ns),
        by_name(EXTERNAL_SERVICE),
        gate("seed/gateway-service"),
        notify.clone(),
    );
    let all = watcher::Config::default;
    let (config_maps, w4) =
        watch(Api::namespaced(user.clone(), &agents_ns), all(), gate("user/configmaps"), notify.clone());
    let (secrets, w5) = watch(Api::namespaced(user.clone(), &agents_ns), all(), gate("user/secrets"), notify.clone());
    let (deployments, w6) =
        watch(Api::namespaced(user.clone(), &agents_ns), all(), gate("user/deployments"), notify.clone());
    let (daemon_sets, w7) =
        watch(Api::namespaced(user.clone(), &agents_ns), all(), gate("user/daemonsets"), notify.clone());
    let context = Arc::new(Context {
        seed: seed.clone(),
        user,
        applier: runtime.applier(CONTROLLER),
        events: runtime.events(seed, CONTROLLER),
        metrics: runtime.metrics.controller(CONTROLLER),
        expiry: CertificateExpiry::register(&runtime.metrics),
        settings,
        clusters,
        seed_secrets,
        seed_services,
        config_maps,
        secrets,
        deployments,
        daemon_sets,
        last_skipped: Default::default(),
    });
    let mut leader = runtime.leader.clone();
    let stop = runtime.shutdown.clone();
    async move {
        let watches = async { tokio::join!(w1, w2, w3, w4, w5, w6, w7) };
        let work = async {
            if !leader.wait_for_leadership().await {
                return;
            }
            let backoff = Backoff::<()>::new(Duration::from_secs(1), Duration::from_secs(120));
            let mut next = context.settings.resync_period;
            loop {
                tokio::select! {
                    () = notify.notified() => {}
                    () = tokio::time::sleep(next) => {}
                }
                // Coalesce a burst of watch events into one pass.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let started = Instant::now();
                let result = reconcile(&context).await;
                context.metrics.observe_category(started.elapsed(), result.as_ref().err().map(AgentsError::category));
                next = match result {
                    Ok(()) => {
                        backoff.reset(&());
                        context.settings.resync_period
                    }
                    Err(error) => {
                        let delay = backoff.next_delay(&());
                        tracing::warn!(%error, ?delay, "reconciling the agents failed");
                        delay
                    }
                };
            }
        };
        tokio::select! {
            _ = watches => {}
            () = work => {}
            () = stop.cancelled() => {}
        }
    }
}

impl AgentsError {
    /// Low-cardinality category for metrics.
    fn category(&self) -> &'static str {
        match self {
            AgentsError::Kube(error) => error.category(),
            AgentsError::Pki(_) => "pki",
            AgentsError::Config(_) => "invalid_config",
        }
    }
}

fn kube_error(verb: &'static str, kind: &str, object: &str, source: kube::Error) -> AgentsError {
    AgentsError::Kube(mla_common::Error::Kube {
        verb,
        kind: kind.into(),
        object: object.into(),
        source: Box::new(source),
    })
}

async fn reconcile(ctx: &Context) -> Result<(), AgentsError> {
    let cluster = ctx.clusters.get(&ObjectRef::new(&ctx.settings.cluster_name));
    let mla = cluster.as_ref().and_then(|c| c.spec.mla.clone()).unwrap_or_default();
    let deleting = cluster.as_ref().is_none_or(|c| c.meta().deletion_timestamp.is_some());
    let monitoring = mla.monitoring_enabled && !deleting;
    let logging = mla.logging_enabled && !deleting;

    if !monitoring && !logging {
        remove_all(ctx).await?;
        if let Some(cluster) = cluster.as_deref().filter(|_| !deleting) {
            write_health(ctx, cluster, None, None).await?;
        }
        return Ok(());
    }
    let Some(cluster) = cluster else { return Ok(()) };
    let placement = &ctx.settings.placement;
    let agents_ns = placement.namespace();
    let namespaces: Api<Namespace> = Api::all(ctx.user.clone());
    let current_ns = namespaces.get_opt(agents_ns).await.map_err(|e| kube_error("get", "Namespace", agents_ns, e))?;
    ctx.applier.apply(&namespaces, &placement.namespace_object(), current_ns.as_ref()).await?;

    let node_port = ctx
        .seed_services
        .get(&ObjectRef::new(EXTERNAL_SERVICE).within(&ctx.settings.cluster_namespace))
        .and_then(|service| gateway_node_port(&service));
    let url = match gateway_url(&cluster, node_port) {
        Ok(url) => url,
        Err(reason) => {
            tracing::info!(%reason, "waiting for the gateway's address");
            return Ok(());
        }
    };
    let ca_secret = ctx.seed_secrets.get(&ObjectRef::new(CA_SECRET).within(&ctx.settings.cluster_namespace));
    let ca = mla_common::pki::CaState::from_secret(ca_secret.as_deref());
    let now = SystemTime::now();

    let prometheus_health = if monitoring {
        apply_certificates(ctx, prometheus::CERTIFICATES_SECRET, prometheus::PROMETHEUS, &ca, now).await?;
        let deployment_settings = PrometheusDeploymentSettings {
            image: ctx.settings.prometheus_image.clone(),
            ..PrometheusDeploymentSettings::from_mla(Some(&mla))
        };
        let mut input = PrometheusConfigInput::new(&cluster.name_any(), &url);
        let config_maps: Vec<ConfigMap> = ctx.config_maps.state().iter().map(|c| c.as_ref().clone()).collect();
        input.extra_scrape_configs = prometheus::extra_scrape_configs(&config_maps);
        input.replicas = deployment_settings.replicas;
        let rendered = prometheus::prometheus_config(&input)?;
        report_skipped(ctx, &cluster, &rendered.skipped).await;
        let hash = agent::config_hash(&rendered.yaml);
        apply_user(ctx, &placement.namespaced(prometheus::config_map(&rendered.yaml))).await?;
        apply_user(ctx, &placement.namespaced(prometheus::service_account())).await?;
        apply_cluster_scoped(ctx, &placement.cluster_role(prometheus::cluster_role())).await?;
        apply_cluster_scoped(ctx, &placement.cluster_role_binding(prometheus::cluster_role_binding())).await?;
        let desired = prometheus::deployment(&deployment_settings, &hash);
        apply_user(ctx, &placement.namespaced(desired)).await?;
        Some(deployment_health(
            ctx.deployments.get(&ObjectRef::new(prometheus::PROMETHEUS).within(agents_ns)).as_deref(),
        ))
    } else {
        remove_prometheus(ctx).await?;
        None
    };

    let agent_kind = ctx.settings.logging_agent;
    let logging_health = if logging {
        apply_certificates(ctx, agent_kind.certificates_secret_name(), agent_kind.name(), &ca, now).await?;
        let config = agent_kind.render_config(&LoggingConfigInput::new(&cluster.name_any(), &url))?;
        let agent_settings =
            LoggingAgentSettings { image: ctx.settings.promtail_image.clone(), ..agent_kind.settings(Some(&mla)) };
        let objects = agent_kind.objects(&agent_settings, &config);
        apply_user(ctx, &placement.namespaced(objects.config)).await?;
        apply_user(ctx, &placement.namespaced(objects.service_account)).await?;
        apply_cluster_scoped(ctx, &placement.cluster_role(objects.cluster_role)).await?;
        apply_cluster_scoped(ctx, &placement.cluster_role_binding(objects.cluster_role_binding)).await?;
        apply_user(ctx, &placement.namespaced(objects.daemon_set)).await?;
        Some(daemon_set_health(ctx.daemon_sets.get(&ObjectRef::new(agent_kind.name()).within(agents_ns)).as_deref()))
    } else {
        remove_logging(ctx).await?;
        None
    };
    write_health(ctx, &cluster, prometheus_health, logging_health).await
}

async fn apply_certificates(
    ctx: &Context,
    secret_name: &str,
    common_name: &str,
    ca: &mla_common::pki::CaState,
    now: SystemTime,
) -> Result<(), AgentsError> {
    let agents_ns = ctx.settings.placement.namespace();
    let current_secret = ctx.secrets.get(&ObjectRef::new(secret_name).within(agents_ns));
    let get = |key: &str| {
        current_secret
            .as_deref()
            .and_then(|s| s.data.as_ref()?.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let current = AgentCertificates {
        cert_pem: get(certificates::CLIENT_CERT_KEY),
        key_pem: get(certificates::CLIENT_KEY_KEY),
        ca_pem: get(certificates::CA_KEY),
    };
    let desired = certificates::plan(ca, &current, common_name, now)?.unwrap_or(current);
    let leaf = mla_common::pki::CertifiedKeyPem {
        cert_pem: desired.cert_pem.unwrap_or_default(),
        key_pem: desired.key_pem.unwrap_or_default(),
    };
    let secret = ctx.settings.placement.namespaced(agent::certificates_secret(
        secret_name,
        common_name,
        &leaf,
        &desired.ca_pem.unwrap_or_default(),
    ));
    let api: Api<Secret> = Api::namespaced(ctx.user.clone(), agents_ns);
    ctx.applier.apply(&api, &secret, current_secret.as_deref()).await?;
    ctx.expiry.set("client", secret_name, mla_common::pki::not_after(&leaf.cert_pem));
    Ok(())
}

/// Applies a namespaced object in the agents' namespace.
async fn apply_user<K>(ctx: &Context, desired: &K) -> Result<Applied, AgentsError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.user.clone(), ctx.settings.placement.namespace());
    let name = desired.name_any();
    let current = api.get_opt(&name).await.map_err(|e| kube_error("get", &K::kind(&()), &name, e))?;
    Ok(ctx.applier.apply(&api, desired, current.as_ref()).await?)
}

/// Applies a cluster-scoped object (the agents' RBAC).
async fn apply_cluster_scoped<K>(ctx: &Context, desired: &K) -> Result<Applied, AgentsError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::all(ctx.user.clone());
    let name = desired.name_any();
    let current = api.get_opt(&name).await.map_err(|e| kube_error("get", &K::kind(&()), &name, e))?;
    Ok(ctx.applier.apply(&api, desired, current.as_ref()).await?)
}

async fn delete_if_present<K>(ctx: &Context, api: Api<K>, name: &str) -> Result<(), AgentsError>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
{
    if api.get_opt(name).await.map_err(|e| kube_error("get", &K::kind(&()), name, e))?.is_some() {
        ctx.applier.delete(&api, name).await?;
    }
    Ok(())
}

async fn remove_prometheus(ctx: &Context) -> Result<(), AgentsError> {
    let user = &ctx.user;
    let placement = &ctx.settings.placement;
    let ns = placement.namespace();
    let cluster_role = placement.cluster_scoped_name(prometheus::CLUSTER_ROLE);
    ctx.expiry.forget(prometheus::CERTIFICATES_SECRET);
    delete_if_present(ctx, Api::<Deployment>::namespaced(user.clone(), ns), prometheus::PROMETHEUS).await?;
    delete_if_present(ctx, Api::<ConfigMap>::namespaced(user.clone(), ns), prometheus::PROMETHEUS).await?;
    delete_if_present(ctx, Api::<Secret>::namespaced(user.clone(), ns), prometheus::CERTIFICATES_SECRET).await?;
    delete_if_present(ctx, Api::<ServiceAccount>::namespaced(user.clone(), ns), prometheus::PROMETHEUS).await?;
    delete_if_present(ctx, Api::<ClusterRoleBinding>::all(user.clone()), &cluster_role).await?;
    delete_if_present(ctx, Api::<ClusterRole>::all(user.clone()), &cluster_role).await
}

async fn remove_logging(ctx: &Context) -> Result<(), AgentsError> {
    let user = &ctx.user;
    let placement = &ctx.settings.placement;
    let ns = placement.namespace();
    let agent_kind = ctx.settings.logging_agent;
    ctx.expiry.forget(agent_kind.certificates_secret_name());
    let objects = agent_kind.objects(&agent_kind.settings(None), "");
    delete_if_present(ctx, Api::<DaemonSet>::namespaced(user.clone(), ns), &objects.daemon_set.name_any()).await?;
    delete_if_present(ctx, Api::<Secret>::namespaced(user.clone(), ns), &objects.config.name_any()).await?;
    delete_if_present(ctx, Api::<Secret>::namespaced(user.clone(), ns), agent_kind.certificates_secret_name()).await?;
    delete_if_present(ctx, Api::<ServiceAccount>::namespaced(user.clone(), ns), &objects.service_account.name_any())
        .await?;
    let binding = placement.cluster_role_binding(objects.cluster_role_binding);
    delete_if_present(ctx, Api::<ClusterRoleBinding>::all(user.clone()), &binding.name_any()).await?;
    let role = placement.cluster_role(objects.cluster_role);
    delete_if_present(ctx, Api::<ClusterRole>::all(user.clone()), &role.name_any()).await
}

/// Both agents off (or the Cluster gone): everything, and the namespace itself, goes.
async fn remove_all(ctx: &Context) -> Result<(), AgentsError> {
    remove_prometheus(ctx).await?;
    remove_logging(ctx).await?;
    delete_if_present(ctx, Api::<Namespace>::all(ctx.user.clone()), ctx.settings.placement.namespace()).await
}

/// A Warning Event on the Cluster when the set of skipped extra scrape configs changes.
async fn report_skipped(ctx: &Context, cluster: &Cluster, skipped: &[prometheus::SkippedScrapeConfig]) {
    let now: BTreeSet<String> = skipped.iter().map(|s| format!("{}: {}", s.name, s.reason)).collect();
    let changed = {
        let mut last = ctx.last_skipped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = *last != now;
        *last = now.clone();
        changed
    };
    if changed && !now.is_empty() {
        let note = format!("skipped extra scrape configs: {}", now.into_iter().collect::<Vec<_>>().join("; "));
        ctx.events.warning(&cluster.object_ref(&()), "InvalidScrapeConfig", "ReconcileAgents", note).await;
    }
}

fn deployment_health(deployment: Option<&Deployment>) -> HealthStatus {
    let status = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    if status.available_replicas.unwrap_or(0) > 0 {
        HealthStatus::HealthStatusUp
    } else if deployment.is_some() {
        HealthStatus::HealthStatusProvisioning
    } else {
        HealthStatus::HealthStatusDown
    }
}

fn daemon_set_health(daemon_set: Option<&DaemonSet>) -> HealthStatus {
    let status = daemon_set.and_then(|d| d.status.clone()).unwrap_or_default();
    if status.desired_number_scheduled > 0 && status.number_available.unwrap_or(0) >= status.desired_number_scheduled {
        HealthStatus::HealthStatusUp
    } else if daemon_set.is_some() {
        HealthStatus::HealthStatusProvisioning
    } else {
        HealthStatus::HealthStatusDown
    }
}

/// The agents' health on the seed's Cluster, written only when it changed: the conditions
/// [`MONITORING_CONDITION`] and [`LOGGING_CONDITION`] (absent while the agent is off), and,
/// when `extended_health` is set, `status.extendedHealth.monitoring` / `logging`.
async fn write_health(
    ctx: &Context,
    cluster: &Cluster,
    monitoring: Option<HealthStatus>,
    logging: Option<HealthStatus>,
) -> Result<(), AgentsError> {
    let mut desired = Cluster::new(&cluster.name_any(), ClusterSpec::default());
    desired.status = Some(ClusterStatus {
        conditions: health_conditions(cluster, monitoring, logging),
        extended_health: ctx.settings.extended_health.then(|| ExtendedClusterHealth {
            monitoring,
            logging,
            ..Default::default()
        }),
        ..Default::default()
    });
    let api: Api<Cluster> = Api::all(ctx.seed.clone());
    ctx.applier.apply_status(&api, &desired, Some(cluster)).await?;
    Ok(())
}

/// The agents' conditions for their health (`None`: the agent is off, no condition).
fn health_conditions(cluster: &Cluster, monitoring: Option<HealthStatus>, logging: Option<HealthStatus>) -> Conditions {
    let mut conditions = Conditions::new();
    for (condition_type, agent, health) in
        [(MONITORING_CONDITION, "metrics agent", monitoring), (LOGGING_CONDITION, "log agent", logging)]
    {
        let Some(health) = health else { continue };
        let (status, reason, message) = match health {
            HealthStatus::HealthStatusUp => {
                (ConditionStatus::True, "AgentAvailable", format!("the {agent} is available"))
            }
            HealthStatus::HealthStatusProvisioning => {
                (ConditionStatus::False, "AgentProvisioning", format!("the {agent} is not available yet"))
            }
            HealthStatus::HealthStatusDown => {
                (ConditionStatus::False, "AgentMissing", format!("the {agent} is not running"))
            }
        };
        conditions
            .insert(condition_type.into(), Condition::next(cluster.condition(condition_type), status, reason, message));
    }
    conditions
}

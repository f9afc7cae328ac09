//! The gateway reconciler: for every Cluster with monitoring or logging on (and MLA offered
//! by this seed), the CA, the gateway certificate, nginx.conf, the Deployment and the
//! Services in the cluster namespace; health and a condition on the Cluster.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{
    Cluster, Condition, ConditionStatus, ExposeStrategy, ExtendedClusterHealth, HealthStatus, MLA_ADMIN_SETTING_NAME,
    MLAAdminSetting,
};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::{CertificateExpiry, ControllerMetrics};
use mla_common::pki::{self, CaChange};
use mla_common::runtime::{Runtime, mark_synced};

use super::nginx::{self, GatewayServer, Upstreams};
use super::resources::{self, GatewayDeploymentSettings};
use crate::scope::{ClusterScope, STALE_RETRY, Serve};
use crate::{status, watch};

/// Condition on the Cluster about its gateway.
pub const CONDITION: &str = "MLAGatewayReady";
/// Field manager suffix of this controller.
pub const CONTROLLER: &str = "gateway";

/// How gateways are made in this seed.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// MLA is offered in this seed; without it no gateway exists.
    pub mla_enabled: bool,
    /// The shared backends.
    pub upstreams: Upstreams,
    /// Ports, resolver and paths inside the gateway pod.
    pub server: GatewayServer,
    /// Image, replicas, resources.
    pub deployment: GatewayDeploymentSettings,
    /// Every Cluster is looked at again this often (certificates expire by the clock).
    pub resync_period: Duration,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A Kubernetes call failed.
    #[error(transparent)]
    Kube(#[from] mla_common::Error),
    /// Issuing a certificate failed.
    #[error("certificates of cluster {cluster}: {source}")]
    Pki {
        /// The cluster.
        cluster: String,
        /// What failed.
        #[source]
        source: pki::PkiError,
    },
}

impl GatewayError {
    fn category(&self) -> &'static str {
        match self {
            GatewayError::Kube(error) => error.category(),
            GatewayError::Pki { .. } => "pki",
        }
    }
}

struct Context {
    client: kube::Client,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    /// Earliest notAfter of the CAs (`ca`) and gateway certificates (`gateway`).
    expiry: CertificateExpiry,
    /// When certificates of vanished Clusters were last swept from `expiry`.
    expiry_swept: std::sync::Mutex<Option<Instant>>,
    backoff: Backoff<String>,
    settings: GatewaySettings,
    clusters: Store<Cluster>,
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    services: Store<Service>,
    /// The MLAAdminSettings: a reconcile reads its Cluster's from here (one GET per
    /// reconcile before; a Cluster's gateway reconciles several times while its objects
    /// appear), from the API server only until the first list is in.
    admin_settings: Store<MLAAdminSetting>,
    scope: ClusterScope,
}

/// How often the certificates of Clusters that are gone are swept from the expiry gauge.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// The gateway controller of `runtime`, running until shutdown. Each of its watches has a
/// readiness gate (`gateway/<kind>`) that opens once it has synced. Followers keep their
/// caches warm but reconcile nothing; a replica that becomes leader looks at every Cluster.
pub fn run(
    runtime: &Runtime,
    settings: GatewaySettings,
    scope: ClusterScope,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = runtime.client.clone();
    let applier = runtime.applier(CONTROLLER);
    let events = runtime.events(client.clone(), CONTROLLER);
    let metrics = runtime.metrics.controller(CONTROLLER);
    let expiry = CertificateExpiry::register(&runtime.metrics);
    let readiness = runtime.readiness.clone();
    let leader = runtime.leader.clone();
    let stop = runtime.shutdown.clone();
    async move {
        let app = resources::GATEWAY;
        let manager = applier.field_manager().to_string();
        let (secrets, secret_events) =
            watch::children::<Secret, _>(&client, app, &manager, readiness.opener("gateway/secrets"));
        let (config_maps, config_map_events) =
            watch::children::<ConfigMap, _>(&client, app, &manager, readiness.opener("gateway/configmaps"));
        let (deployments, deployment_events) =
            watch::children::<Deployment, _>(&client, app, &manager, readiness.opener("gateway/deployments"));
        let (services, service_events) =
            watch::children::<Service, _>(&client, app, &manager, readiness.opener("gateway/services"));
        // The pod sets of a gateway being replaced, to remove once ours has rolled out.
        let (replica_sets, replica_set_events) =
            watch::children::<ReplicaSet, _>(&client, app, &manager, readiness.opener("gateway/replicasets"));
        let (clusters, cluster_writer) = reflector::store();
        let cluster_watch = watch::cluster_watch(&client, &manager, CONDITION);
        let cluster_events = watch::cluster_changes(
            mark_synced(reflector::reflector(cluster_writer, cluster_watch), readiness.gate("gateway/clusters")),
            CONDITION,
            None,
        );
        let (admin_settings, admin_settings_writer) = reflector::store();
        let admin_settings_watch = mla_common::runtime::relisting_watcher(
            Api::<MLAAdminSetting>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(watch::only_managed_by::<MLAAdminSetting>(""));
        let admin_settings_events = mark_synced(
            reflector::reflector(admin_settings_writer, admin_settings_watch),
            readiness.gate("gateway/mlaadminsettings"),
        )
        .touched_objects();
        let resync_period = settings.resync_period;
        let leader_gained = leader.gained();
        let context = Arc::new(Context {
            client: client.clone(),
            applier,
            events,
            metrics,
            expiry,
            expiry_swept: std::sync::Mutex::default(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            settings,
            clusters: clusters.clone(),
            secrets,
            config_maps,
            deployments,
            replica_sets,
            services,
            admin_settings,
            scope,
        });
        let periodic = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(resync_period)).map(|_| ());
        let controller = Controller::for_stream(cluster_events, clusters)
            .owns_stream(secret_events)
            .owns_stream(config_map_events)
            .owns_stream(deployment_events)
            .owns_stream(service_events)
            .owns_stream(replica_set_events)
            .watches_stream(admin_settings_events, |settings: MLAAdminSetting| {
                Some(ObjectRef::new(&settings.spec.cluster_name))
            })
            .reconcile_all_on(futures::stream::select(periodic, leader_gained))
            .with_config(ControllerConfig::default().concurrency(8).debounce(crate::watch::DEBOUNCE))
            .graceful_shutdown_on(stop.cancelled_owned());
        let results = controller.run(reconcile, error_policy, context);
        crate::watch::report_watch_errors(results, "gateway").await;
    }
}

#[tracing::instrument(skip(cluster, ctx), fields(cluster = %cluster.name_any()))]
async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, GatewayError> {
    if !ctx.applier.is_leader() {
        // Followers keep their caches warm; everything is looked at when they lead.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = reconcile_gateway(&cluster, &ctx).await;
    ctx.metrics.observe_category(started.elapsed(), result.as_ref().err().map(GatewayError::category));
    // Certificates of Clusters that are gone no longer count (a deletion we reconcile
    // forgets them at once; this sweep catches one we never saw, e.g. while following). It
    // looks at every certificate, so at most once a minute, not on each reconcile.
    if ctx.expiry_swept.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|at| at.elapsed() >= EXPIRY_SWEEP) {
        ctx.expiry.retain(|name| ctx.clusters.get(&ObjectRef::new(name)).is_some());
        *ctx.expiry_swept.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
    match &result {
        Ok(_) => ctx.backoff.reset(&cluster.name_any()),
        Err(error) => report_failure(&ctx, &cluster, error).await,
    }
    result
}

/// Shows on the Cluster (condition `ReconcileFailed`, a Warning Event when it changes) a
/// failure the operator must act on: the API server refusing or failing a write (say,
/// `failed to allocate a nodePort: range is full` once every port of the seed's NodePort
/// range has a Service), or a certificate that cannot be issued. Not shown: a lost
/// leadership or a conflict, which the retry resolves. The same failure again writes
/// nothing.
async fn report_failure(ctx: &Context, cluster: &Cluster, error: &GatewayError) {
    if !matches!(error.category(), "kube_api" | "kube_invalid" | "kube_forbidden" | "pki")
        || cluster.meta().deletion_timestamp.is_some()
    {
        return;
    }
    // kube's text of a refusal ends with the whole Status object, repeated in the message.
    let text = error.to_string();
    let text = text.split(" (Status {").next().unwrap_or_default();
    let message = format!("the gateway could not be reconciled: {text}; retrying with backoff");
    let unchanged = cluster.condition(CONDITION).is_some_and(|c| c.message.as_deref() == Some(message.as_str()));
    if unchanged {
        return;
    }
    let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).unwrap_or_default();
    let health = gateway_health(ctx, &namespace);
    let outcome =
        Outcome { health, status: ConditionStatus::False, reason: "ReconcileFailed", message: message.clone() };
    if let Err(error) = write_status(ctx, cluster, outcome).await {
        tracing::warn!(cluster = %cluster.name_any(), %error, "could not report the gateway failure on the Cluster");
        return;
    }
    ctx.events.warning(&cluster.object_ref(&()), "ReconcileFailed", "ReconcileGateway", message).await;
}

fn error_policy(cluster: Arc<Cluster>, error: &GatewayError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&cluster.name_any());
    tracing::warn!(cluster = %cluster.name_any(), %error, category = error.category(), ?delay, "gateway reconcile failed");
    Action::requeue(delay)
}

/// What the gateway reconcile concluded, for the Cluster's status.
struct Outcome {
    health: Option<HealthStatus>,
    status: ConditionStatus,
    reason: &'static str,
    message: String,
}

async fn reconcile_gateway(cluster: &Cluster, ctx: &Context) -> Result<Action, GatewayError> {
    let name = cluster.name_any();
    match ctx.scope.serves(cluster) {
        Serve::Yes => {}
        Serve::No => return Ok(Action::await_change()),
        Serve::NotYetKnown => return Ok(Action::requeue(STALE_RETRY)),
    }
    if cluster.meta().deletion_timestamp.is_some() {
        // Everything we made is owned by the Cluster: the garbage collector removes it.
        ctx.expiry.forget(&name);
        return Ok(Action::await_change());
    }
    let namespace = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).filter(|n| !n.is_empty());
    if !ctx.settings.mla_enabled || !cluster.mla_enabled() {
        if let Some(namespace) = &namespace {
            remove_gateway(ctx, namespace).await?;
        }
        ctx.expiry.forget(&name);
        clear_status(ctx, cluster).await?;
        return Ok(Action::await_change());
    }
    let Some(namespace) = namespace else {
        let outcome = waiting("WaitingForNamespace", "the cluster has no namespace yet (status.namespaceName)");
        write_status(ctx, cluster, outcome).await?;
        return Ok(Action::await_change());
    };
    let address = cluster.status.as_ref().and_then(|s| s.address.clone()).unwrap_or_default();
    let Some(external_name) = address.external_name.clone().filter(|n| !n.is_empty()) else {
        let outcome = waiting("WaitingForAddress", "the cluster has no address yet (status.address.externalName)");
        write_status(ctx, cluster, outcome).await?;
        return Ok(Action::await_change());
    };
    let owner = cluster.owner_reference();
    let now = SystemTime::now();
    let pki_error = |source| GatewayError::Pki { cluster: name.clone(), source };

    // The CA, possibly preparing or promoting a successor. A CA Secret KKP made carries
    // none of our labels and is not in the cache: it is read, and kept, so that the agents'
    // certificates from it stay valid (no second CA).
    let ca_secret = cached_or_get(&ctx.secrets, &ctx.client, &namespace, resources::CA_SECRET).await?;
    let mut ca = resources::ca_state(ca_secret.as_deref());
    if let Some(foreign) = ca_secret.as_deref().filter(|s| !s.labels().contains_key(resources::APP_LABEL))
        && ca.current().is_some()
    {
        // KKP's CA, usable: adopted as it is (our labels and the Cluster as owner), so that
        // it is watched from now on.
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.applier.apply(&secrets, &resources::ca_secret(&namespace, &owner, &ca), Some(foreign)).await?;
        ctx.events
            .normal(&cluster.object_ref(&()), "GatewayCA", "ReconcileGateway", "adopted the existing gateway CA")
            .await;
    }
    if let Some((next, change)) = pki::reconcile_ca(&ca, &name, now).map_err(pki_error)? {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.applier.apply(&secrets, &resources::ca_secret(&namespace, &owner, &next), ca_secret.as_deref()).await?;
        let note = match &change {
            CaChange::Created(reason) => format!("created the gateway CA ({})", reason.as_str()),
            CaChange::Rotated(reason) => {
                format!("rotated the gateway CA ({}); the previous one stays trusted", reason.as_str())
            }
            CaChange::NextPrepared => {
                "prepared the next gateway CA; it is trusted from now on and issues in 30 days".into()
            }
            CaChange::PreviousDropped => "the previous gateway CA expired and is no longer trusted".into(),
            CaChange::NextDropped => "dropped an unusable next gateway CA".into(),
        };
        ctx.events.normal(&cluster.object_ref(&()), "GatewayCA", "ReconcileGateway", note).await;
        ca = next;
    }
    let current_ca = ca.current().ok_or_else(|| {
        pki_error(pki::PkiError::Unusable { what: "CA", reason: "the CA Secret has no certificate and key".into() })
    })?;
    let bundle = pki::trust_bundle(&ca, now).map_err(pki_error)?;

    // The gateway's serving certificate.
    let certs_secret = cached_or_get(&ctx.secrets, &ctx.client, &namespace, resources::CERTIFICATES_SECRET).await?;
    let spec = pki::LeafSpec::gateway_server(&external_name, address.ip.as_deref()).map_err(pki_error)?;
    let existing_cert = resources::secret_value(certs_secret.as_deref(), resources::GATEWAY_CERT_KEY);
    let existing_key = resources::secret_value(certs_secret.as_deref(), resources::GATEWAY_KEY_KEY);
    let gateway_cert =
        match pki::leaf_renewal(existing_cert.as_deref(), existing_key.as_deref(), &current_ca.cert_pem, &spec, now) {
            None => pki::CertifiedKeyPem {
                cert_pem: existing_cert.unwrap_or_default(),
                key_pem: existing_key.unwrap_or_default(),
            },
            Some(reason) => {
                tracing::info!(reason = reason.as_str(), "issuing the gateway certificate");
                pki::issue(&current_ca, &spec, now).map_err(pki_error)?
            }
        };

    // nginx.conf: an invalid setting leaves the last good configuration serving.
    let settings_api: Api<MLAAdminSetting> = Api::namespaced(ctx.client.clone(), &namespace);
    let settings_key = ObjectRef::new(MLA_ADMIN_SETTING_NAME).within(&namespace);
    let admin_settings = watch::known_or_get(&ctx.admin_settings, &settings_api, &settings_key)
        .await?
        .filter(|s| s.spec.cluster_name == name);
    let nginx_conf = match nginx::render(
        &name,
        admin_settings.as_ref().map(|s| &s.spec),
        &ctx.settings.upstreams,
        &ctx.settings.server,
    ) {
        Ok(conf) => conf,
        Err(error) => {
            let message = format!("the gateway configuration was not changed: {error}");
            ctx.events
                .warning(&cluster.object_ref(&()), "InvalidGatewaySettings", "ReconcileGateway", message.clone())
                .await;
            let health = gateway_health(ctx, &namespace);
            write_status(
                ctx,
                cluster,
                Outcome { health, status: ConditionStatus::False, reason: "InvalidSettings", message },
            )
            .await?;
            return Ok(Action::await_change());
        }
    };

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let certs = resources::certificates_secret(&namespace, &owner, &gateway_cert, &bundle);
    ctx.applier.apply(&secrets, &certs, certs_secret.as_deref()).await?;
    ctx.expiry.set("ca", &name, pki::not_after(&current_ca.cert_pem));
    ctx.expiry.set("gateway", &name, pki::not_after(&gateway_cert.cert_pem));
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_cm = ctx.config_maps.get(&ObjectRef::new(resources::GATEWAY).within(&namespace));
    ctx.applier
        .apply(&config_maps, &resources::config_map(&namespace, &owner, &nginx_conf), current_cm.as_deref())
        .await?;
    // The Services before the Deployment: they select every gateway pod (ours and those of
    // a gateway being replaced), so traffic never waits for the new pods.
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let internal = cached_or_get(&ctx.services, &ctx.client, &namespace, resources::GATEWAY).await?;
    ctx.applier.apply(&services, &resources::internal_service(&namespace, &owner), internal.as_deref()).await?;
    let strategy = cluster.spec.expose_strategy.unwrap_or(ExposeStrategy::NodePort);
    let external = cached_or_get(&ctx.services, &ctx.client, &namespace, resources::EXTERNAL_SERVICE).await?;
    let kkp_port = external.as_deref().is_some_and(resources::has_kkp_port);
    ctx.applier
        .apply(
            &services,
            &resources::external_service(&namespace, &owner, strategy, &external_name, kkp_port),
            external.as_deref(),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_deployment = cached_or_get(&ctx.deployments, &ctx.client, &namespace, resources::GATEWAY).await?;
    if let Some(current) = current_deployment.as_deref().filter(|d| !resources::has_our_selector(d)) {
        // KKP's gateway (or an older build's): a selector cannot change, so the Deployment is
        // deleted with its ReplicaSet orphaned, whose pods keep serving through the Services
        // until ours have rolled out (then it is removed below, on a later pass).
        if current.meta().deletion_timestamp.is_none() {
            ctx.applier.ensure_leader("replace", resources::GATEWAY)?;
            ctx.applier.count::<Deployment>("delete");
            deployments.delete(resources::GATEWAY, &DeleteParams::orphan()).await.map_err(|source| {
                mla_common::Error::kube("delete", "Deployment", format!("{namespace}/{}", resources::GATEWAY), source)
            })?;
            ctx.events
                .normal(
                    &cluster.object_ref(&()),
                    "GatewayReplacing",
                    "ReconcileGateway",
                    "replacing a gateway Deployment with another selector; its pods serve until the new ones are available",
                )
                .await;
        }
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let desired =
        resources::deployment(&namespace, &owner, &ctx.settings.deployment, &resources::config_hash(&nginx_conf));
    ctx.applier.apply(&deployments, &desired, current_deployment.as_deref()).await?;
    remove_replaced_pods(ctx, cluster, &namespace).await?;

    // The Deployment was applied just now: one the cache does not show yet is one being
    // created, i.e. provisioning (not "no health", which the Cluster would show until the
    // cache's event brought another reconcile).
    let health = gateway_health(ctx, &namespace).or(Some(HealthStatus::HealthStatusProvisioning));
    let outcome = match health {
        Some(HealthStatus::HealthStatusUp) => Outcome {
            health,
            status: ConditionStatus::True,
            reason: "GatewayAvailable",
            message: "the MLA gateway is available".into(),
        },
        _ => Outcome {
            health,
            status: ConditionStatus::False,
            reason: "GatewayNotAvailable",
            message: "the MLA gateway Deployment has no available replica yet".into(),
        },
    };
    write_status(ctx, cluster, outcome).await?;
    Ok(Action::requeue(ctx.settings.resync_period))
}

fn waiting(reason: &'static str, message: &str) -> Outcome {
    Outcome { health: None, status: ConditionStatus::False, reason, message: message.into() }
}

/// Up when a replica is available, Provisioning while the rollout has none, Down when the
/// Deployment is missing (after it was made) or reports no replicas at all.
fn gateway_health(ctx: &Context, namespace: &str) -> Option<HealthStatus> {
    let deployment = ctx.deployments.get(&ObjectRef::new(resources::GATEWAY).within(namespace))?;
    let status = deployment.status.clone().unwrap_or_default();
    Some(if status.available_replicas.unwrap_or(0) > 0 {
        HealthStatus::HealthStatusUp
    } else if status.observed_generation.is_none()
        || status.updated_replicas.unwrap_or(0) > 0
        || status.replicas.unwrap_or(0) > 0
    {
        HealthStatus::HealthStatusProvisioning
    } else {
        HealthStatus::HealthStatusDown
    })
}

/// Writes `status.extendedHealth.mlaGateway` and the condition, only when they change.
async fn write_status(ctx: &Context, cluster: &Cluster, outcome: Outcome) -> Result<(), GatewayError> {
    let condition = Condition::next(cluster.condition(CONDITION), outcome.status, outcome.reason, outcome.message);
    let health = ExtendedClusterHealth { mla_gateway: outcome.health, ..Default::default() };
    status::apply(&ctx.applier, &ctx.client, cluster, Some((CONDITION, condition)), Some(health)).await?;
    Ok(())
}

/// Removes what this controller owns in the Cluster's status.
async fn clear_status(ctx: &Context, cluster: &Cluster) -> Result<(), GatewayError> {
    status::apply(&ctx.applier, &ctx.client, cluster, None, None).await?;
    Ok(())
}

/// The object `name` in `namespace` from the cache, else (an object we did not make
/// carries none of our labels) from the API server.
async fn cached_or_get<K>(
    store: &Store<K>,
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, GatewayError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(watch::cached_or_get(store, &api, &ObjectRef::new(name).within(namespace)).await?)
}

/// Once our Deployment has rolled out, removes the pods of the gateway it replaced (the
/// orphaned ReplicaSets), which served until then.
async fn remove_replaced_pods(ctx: &Context, cluster: &Cluster, namespace: &str) -> Result<(), GatewayError> {
    let orphans: Vec<_> = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace) && resources::is_orphaned_gateway_replica_set(rs))
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    let ours = ctx.deployments.get(&ObjectRef::new(resources::GATEWAY).within(namespace));
    if !ours.as_deref().is_some_and(|d| resources::has_our_selector(d) && resources::rolled_out(d)) {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    for replica_set in orphans {
        ctx.applier.delete(&api, &replica_set.name_any()).await?;
        ctx.events
            .normal(
                &cluster.object_ref(&()),
                "GatewayReplaced",
                "ReconcileGateway",
                format!("the new gateway is available; removed the replaced ReplicaSet {}", replica_set.name_any()),
            )
            .await;
    }
    Ok(())
}

/// Deletes every object of the gateway in `namespace` that exists.
async fn remove_gateway(ctx: &Context, namespace: &str) -> Result<(), GatewayError> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    for replica_set in ctx
        .replica_sets
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace) && resources::is_orphaned_gateway_replica_set(rs))
    {
        ctx.applier.delete(&replica_sets, &replica_set.name_any()).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in [resources::CERTIFICATES_SECRET, resources::CA_SECRET] {
        if ctx.secrets.get(&ObjectRef::new(name).within(namespace)).is_some() {
            ctx.applier.delete(&secrets, name).await?;
        }
    }
    if ctx.config_maps.get(&ObjectRef::new(resources::GATEWAY).within(namespace)).is_some() {
        ctx.applier.delete(&Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace), resources::GATEWAY).await?;
    }
    if ctx.deployments.get(&ObjectRef::new(resources::GATEWAY).within(namespace)).is_some() {
        ctx.applier.delete(&Api::<Deployment>::namespaced(ctx.client.clone(), namespace), resources::GATEWAY).await?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    for name in [resources::GATEWAY, resources::EXTERNAL_SERVICE] {
        if ctx.services.get(&ObjectRef::new(name).within(namespace)).is_some() {
            ctx.applier.delete(&services, name).await?;
        }
    }
    Ok(())
}

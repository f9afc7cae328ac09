//! Runs a user-cluster-controller-manager for every Cluster with MLA on: a Deployment in
//! the cluster namespace with the user cluster's kubeconfig, a ServiceAccount allowed only
//! to read its Cluster, the CA Secret and the gateway Service, and to write the Cluster's
//! status, Events and its Lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, Secret, SecretVolumeSource, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Cluster, Condition, ConditionStatus};
use mla_common::apply::Applier;
use mla_common::backoff::Backoff;
use mla_common::events::EventPublisher;
use mla_common::metrics::ControllerMetrics;
use mla_common::runtime::{Runtime, mark_synced};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::scope::{ClusterScope, STALE_RETRY, Serve};
use crate::status;
use crate::watch;
use mla_common::runtime::relisting_watcher;

/// Name of the Deployment, ServiceAccount, Role and RoleBinding in the cluster namespace.
pub const NAME: &str = "mla-user-cluster-controller-manager";
/// Condition on the Cluster about its agents' controller.
pub const CONDITION: &str = "MLAUserClusterControllerReady";
/// Field manager suffix and metrics label.
pub const CONTROLLER: &str = "user-cluster-controller";
const KUBECONFIG_DIR: &str = "/etc/kubernetes/user-cluster";

/// How the per-cluster processes run.
#[derive(Clone, Debug)]
pub struct UserClusterSettings {
    /// MLA is offered in this seed.
    pub mla_enabled: bool,
    /// Image of user-cluster-controller-manager.
    pub image: String,
    /// Secret in the cluster namespace with the user cluster's kubeconfig (KKP:
    /// `admin-kubeconfig`).
    pub kubeconfig_secret: String,
    /// Its key.
    pub kubeconfig_key: String,
    /// The user cluster's namespace for the agents (`--agents-namespace`; a KKP
    /// installation needs another than `mla-system`, which KKP's own manager deletes).
    pub agents_namespace: String,
    /// Whether the agents' health also goes into `extendedHealth.monitoring`/`logging`
    /// (`--extended-health`; off beside KKP, whose manager clears those fields).
    pub extended_health: bool,
    /// The agents' images in every user cluster (`--prometheus-image`, `--promtail-image`);
    /// `None`: the user-cluster manager's defaults.
    pub prometheus_image: Option<String>,
    /// See `prometheus_image`.
    pub promtail_image: Option<String>,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "seed-controller-manager".to_string()),
    ])
}

fn meta(name: &str, namespace: Option<&str>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        ..Default::default()
    }
}

/// Name of the per-cluster ClusterRole (and its binding).
pub fn cluster_role_name(cluster: &str) -> String {
    format!("mla:user-cluster-controller-manager:{cluster}")
}

/// Everything the process of `cluster` needs in the seed, and nothing more.
#[derive(Debug)]
pub struct Objects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub deployment: Deployment,
}

/// The objects of the process serving `cluster` in `namespace`.
pub fn objects(cluster: &str, namespace: &str, owner: &OwnerReference, settings: &UserClusterSettings) -> Objects {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    };
    let cluster_role_name = cluster_role_name(cluster);
    let read = ["get", "list", "watch"];
    let role = Role {
        metadata: meta(NAME, Some(namespace), owner),
        rules: Some(vec![
            rule("", &["secrets"], &read, &["mla-gateway-ca"]),
            rule("", &["services"], &read, &["mla-gateway-ext"]),
            rule("coordination.k8s.io", &["leases"], &["create"], &[]),
            rule("coordination.k8s.io", &["leases"], &["get", "patch"], &["user-cluster-controller-manager"]),
        ]),
    };
    let cluster_role = ClusterRole {
        metadata: meta(&cluster_role_name, None, owner),
        rules: Some(vec![
            rule("kubermatic.k8c.io", &["clusters"], &read, &[cluster]),
            rule("kubermatic.k8c.io", &["clusters/status"], &["patch"], &[cluster]),
            rule("events.k8s.io", &["events"], &["create", "patch"], &[]),
        ]),
        ..Default::default()
    };
    let env = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut args = vec![
        format!("--cluster-name={cluster}"),
        format!("--cluster-namespace={namespace}"),
        format!("--user-cluster-kubeconfig={KUBECONFIG_DIR}/{}", settings.kubeconfig_key),
        format!("--leader-election-namespace={namespace}"),
        format!("--agents-namespace={}", settings.agents_namespace),
        format!("--extended-health={}", settings.extended_health),
        "--log-format=json".into(),
    ];
    if let Some(image) = &settings.prometheus_image {
        args.push(format!("--prometheus-image={image}"));
    }
    if let Some(image) = &settings.promtail_image {
        args.push(format!("--promtail-image={image}"));
    }
    let container = Container {
        name: "user-cluster-controller-manager".into(),
        image: Some(settings.image.clone()),
        args: Some(args),
        env: Some(vec![env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace")]),
        volume_mounts: Some(vec![VolumeMount {
            name: "user-cluster-kubeconfig".into(),
            mount_path: KUBECONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(NAME, Some(namespace), owner),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(labels()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels()), ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65534),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "user-cluster-kubeconfig".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(settings.kubeconfig_secret.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Objects {
        service_account: ServiceAccount { metadata: meta(NAME, Some(namespace), owner), ..Default::default() },
        role_binding: RoleBinding {
            metadata: meta(NAME, Some(namespace), owner),
            role_ref: role_ref("Role", NAME),
            subjects: Some(vec![subject.clone()]),
        },
        cluster_role_binding: ClusterRoleBinding {
            metadata: meta(&cluster_role_name, None, owner),
            role_ref: role_ref("ClusterRole", &cluster_role_name),
            subjects: Some(vec![subject]),
        },
        role,
        cluster_role,
        deployment,
    }
}

struct Context {
    client: kube::Client,
    caches: Caches,
    applier: Applier,
    events: EventPublisher,
    metrics: ControllerMetrics,
    backoff: Backoff<String>,
    settings: UserClusterSettings,
    scope: ClusterScope,
}

/// What the controller reads, from its watches: every object it makes (labelled with
/// [`NAME`], only its own managedFields entry kept) and the kubeconfig Secrets, of which
/// only the keys are kept (never a credential in memory). A reconcile with nothing to
/// change reads nothing from the API server.
struct Caches {
    service_accounts: Store<ServiceAccount>,
    roles: Store<Role>,
    role_bindings: Store<RoleBinding>,
    cluster_roles: Store<ClusterRole>,
    cluster_role_bindings: Store<ClusterRoleBinding>,
    deployments: Store<Deployment>,
    kubeconfigs: Store<Secret>,
}

/// A kubeconfig Secret as its cache keeps it: name, namespace and the keys of its data.
fn only_keys(secret: &mut Secret) {
    let metadata = ObjectMeta {
        name: secret.metadata.name.take(),
        namespace: secret.metadata.namespace.take(),
        resource_version: secret.metadata.resource_version.take(),
        uid: secret.metadata.uid.take(),
        ..ObjectMeta::default()
    };
    *secret = Secret {
        metadata,
        data: secret.data.take().map(|data| data.into_keys().map(|key| (key, ByteString(Vec::new()))).collect()),
        ..Secret::default()
    };
}

/// The controller of `runtime`, running until shutdown (readiness gates
/// `user-cluster-controller/<kind>`, one per watch).
pub fn run(
    runtime: &Runtime,
    settings: UserClusterSettings,
    scope: ClusterScope,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = runtime.client.clone();
    let applier = runtime.applier(CONTROLLER);
    let manager = applier.field_manager().to_string();
    let readiness = runtime.readiness.clone();
    let (service_accounts, service_account_events) = watch::children::<ServiceAccount, _>(
        &client,
        NAME,
        &manager,
        readiness.opener("user-cluster-controller/serviceaccounts"),
    );
    let (roles, role_events) =
        watch::children::<Role, _>(&client, NAME, &manager, readiness.opener("user-cluster-controller/roles"));
    let (role_bindings, role_binding_events) = watch::children::<RoleBinding, _>(
        &client,
        NAME,
        &manager,
        readiness.opener("user-cluster-controller/rolebindings"),
    );
    let (cluster_roles, cluster_role_events) = watch::children::<ClusterRole, _>(
        &client,
        NAME,
        &manager,
        readiness.opener("user-cluster-controller/clusterroles"),
    );
    let (cluster_role_bindings, cluster_role_binding_events) = watch::children::<ClusterRoleBinding, _>(
        &client,
        NAME,
        &manager,
        readiness.opener("user-cluster-controller/clusterrolebindings"),
    );
    let (deployments, deployment_events) = watch::children::<Deployment, _>(
        &client,
        NAME,
        &manager,
        readiness.opener("user-cluster-controller/deployments"),
    );
    // A kubeconfig Secret appearing (or changing) brings its Cluster's process up.
    let (kubeconfigs, kubeconfig_writer) = reflector::store();
    let kubeconfig_watch = relisting_watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.kubeconfig_secret)),
    )
    .default_backoff()
    .modify(only_keys);
    let kubeconfig_events = mark_synced(
        reflector::reflector(kubeconfig_writer, kubeconfig_watch),
        readiness.gate("user-cluster-controller/kubeconfig-secrets"),
    )
    .touched_objects();
    let caches = Caches {
        service_accounts,
        roles,
        role_bindings,
        cluster_roles,
        cluster_role_bindings,
        deployments,
        kubeconfigs,
    };
    let context = Arc::new(Context {
        scope,
        client: client.clone(),
        caches,
        applier,
        events: runtime.events(client.clone(), CONTROLLER),
        metrics: runtime.metrics.controller(CONTROLLER),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        settings,
    });
    let gate = runtime.readiness.gate("user-cluster-controller/clusters");
    let leader = runtime.leader.clone();
    let stop = runtime.shutdown.clone();
    async move {
        let (clusters, writer) = reflector::store();
        let watch = crate::watch::cluster_watch(&client, context.applier.field_manager(), CONDITION);
        let events =
            crate::watch::cluster_changes(mark_synced(reflector::reflector(writer, watch), gate), CONDITION, None);
        let store = clusters.clone();
        // A changed or removed object of ours brings its Cluster's reconcile (which puts
        // it back as it should be).
        Controller::for_stream(events, clusters)
            .owns_stream(deployment_events)
            .owns_stream(service_account_events)
            .owns_stream(role_events)
            .owns_stream(role_binding_events)
            .owns_stream(cluster_role_events)
            .owns_stream(cluster_role_binding_events)
            .watches_stream(kubeconfig_events, move |secret: Secret| {
                let namespace = secret.namespace().unwrap_or_default();
                store
                    .state()
                    .iter()
                    .filter(|c| c.status.as_ref().and_then(|s| s.namespace_name.as_deref()) == Some(namespace.as_str()))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            })
            .reconcile_all_on(leader.gained())
            .with_config(ControllerConfig::default().concurrency(8).debounce(crate::watch::DEBOUNCE))
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, context)
            .for_each(|_| futures::future::ready(()))
            .await;
    }
}

async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, mla_common::Error> {
    if !ctx.applier.is_leader() {
        return Ok(Action::await_change());
    }
    match ctx.scope.serves(&cluster) {
        Serve::Yes => {}
        Serve::No => return Ok(Action::await_change()),
        Serve::NotYetKnown => return Ok(Action::requeue(STALE_RETRY)),
    }
    let started = Instant::now();
    let result = reconcile_process(&cluster, &ctx).await;
    ctx.metrics.observe(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.backoff.reset(&cluster.name_any());
    }
    result
}

fn error_policy(cluster: Arc<Cluster>, error: &mla_common::Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&cluster.name_any());
    tracing::warn!(cluster = %cluster.name_any(), %error, ?delay, "user-cluster controller reconcile failed");
    Action::requeue(delay)
}

/// Applies `desired` unless its cache (`store`) shows it as it should be.
async fn apply<K>(ctx: &Context, api: Api<K>, store: &Store<K>, desired: &K) -> Result<(), mla_common::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let current = watch::known_or_get(store, &api, &ObjectRef::from_obj(desired)).await?;
    ctx.applier.apply(&api, desired, current.as_deref()).await?;
    Ok(())
}

/// Deletes `name` (in `namespace`, `api`'s) if its cache (`store`) shows it.
async fn delete<K>(
    ctx: &Context,
    api: Api<K>,
    store: &Store<K>,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), mla_common::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
{
    let key = namespace.map_or_else(|| ObjectRef::new(name), |ns| ObjectRef::new(name).within(ns));
    if watch::known_or_get(store, &api, &key).await?.is_some() {
        ctx.applier.delete(&api, &key.name).await?;
    }
    Ok(())
}

async fn reconcile_process(cluster: &Cluster, ctx: &Context) -> Result<Action, mla_common::Error> {
    let name = cluster.name_any();
    if cluster.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(namespace) = cluster.status.as_ref().and_then(|s| s.namespace_name.clone()).filter(|n| !n.is_empty())
    else {
        return Ok(Action::await_change());
    };
    let client = ctx.client.clone();
    let caches = &ctx.caches;
    if !ctx.settings.mla_enabled || !cluster.mla_enabled() {
        let (here, role) = (Some(namespace.as_str()), cluster_role_name(&name));
        delete(ctx, Api::namespaced(client.clone(), &namespace), &caches.deployments, here, NAME).await?;
        delete(ctx, Api::namespaced(client.clone(), &namespace), &caches.role_bindings, here, NAME).await?;
        delete(ctx, Api::namespaced(client.clone(), &namespace), &caches.roles, here, NAME).await?;
        delete(ctx, Api::namespaced(client.clone(), &namespace), &caches.service_accounts, here, NAME).await?;
        delete(ctx, Api::all(client.clone()), &caches.cluster_role_bindings, None, &role).await?;
        delete(ctx, Api::all(client.clone()), &caches.cluster_roles, None, &role).await?;
        write_condition(ctx, cluster, None).await?;
        return Ok(Action::await_change());
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let key = ObjectRef::new(&ctx.settings.kubeconfig_secret).within(&namespace);
    let kubeconfig = watch::known_or_get(&caches.kubeconfigs, &secrets, &key).await?;
    let has_key =
        kubeconfig.as_ref().and_then(|s| s.data.as_ref()).is_some_and(|d| d.contains_key(&ctx.settings.kubeconfig_key));
    if !has_key {
        let message = format!(
            "waiting for Secret {namespace}/{} with key {:?} (the user cluster's kubeconfig)",
            ctx.settings.kubeconfig_secret, ctx.settings.kubeconfig_key
        );
        if write_condition(ctx, cluster, Some((ConditionStatus::False, "KubeconfigSecretMissing", message.clone())))
            .await?
        {
            ctx.events
                .warning(&cluster.object_ref(&()), "KubeconfigSecretMissing", "ReconcileUserClusterController", message)
                .await;
        }
        return Ok(Action::await_change());
    }
    let owner = cluster.owner_reference();
    let objects = objects(&name, &namespace, &owner, &ctx.settings);
    apply(ctx, Api::namespaced(client.clone(), &namespace), &caches.service_accounts, &objects.service_account).await?;
    apply(ctx, Api::namespaced(client.clone(), &namespace), &caches.roles, &objects.role).await?;
    apply(ctx, Api::namespaced(client.clone(), &namespace), &caches.role_bindings, &objects.role_binding).await?;
    apply(ctx, Api::all(client.clone()), &caches.cluster_roles, &objects.cluster_role).await?;
    apply(ctx, Api::all(client.clone()), &caches.cluster_role_bindings, &objects.cluster_role_binding).await?;
    apply(ctx, Api::namespaced(client.clone(), &namespace), &caches.deployments, &objects.deployment).await?;
    let message = "the user-cluster-controller-manager Deployment is in place".to_string();
    write_condition(ctx, cluster, Some((ConditionStatus::True, "Deployed", message))).await?;
    Ok(Action::await_change())
}

/// Writes (or, with `None`, removes) this controller's condition when it changes; true
/// when it changed.
async fn write_condition(
    ctx: &Context,
    cluster: &Cluster,
    wanted: Option<(ConditionStatus, &'static str, String)>,
) -> Result<bool, mla_common::Error> {
    let condition = wanted.map(|(status, reason, message)| {
        (CONDITION, Condition::next(cluster.condition(CONDITION), status, reason, message))
    });
    let applied = status::apply(&ctx.applier, &ctx.client, cluster, condition, None).await?;
    Ok(applied == mla_common::apply::Applied::Patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_kubeconfig_secret_keeps_its_keys_and_no_credential() {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some("admin-kubeconfig".into()),
                namespace: Some("cluster-a".into()),
                annotations: Some([("kubectl.kubernetes.io/last-applied-configuration".into(), "{...}".into())].into()),
                ..Default::default()
            },
            data: Some([("kubeconfig".to_string(), ByteString(b"apiVersion: v1\nusers: [token]".to_vec()))].into()),
            string_data: Some([("other".to_string(), "secret".to_string())].into()),
            ..Default::default()
        };
        only_keys(&mut secret);
        assert_eq!(secret.metadata.name.as_deref(), Some("admin-kubeconfig"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("cluster-a"));
        assert_eq!(secret.metadata.annotations, None);
        assert_eq!(secret.string_data, None);
        let data = secret.data.expect("the keys stay");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["kubeconfig"]);
        assert!(data.values().all(|v| v.0.is_empty()));
    }

    #[test]
    fn the_process_may_read_only_its_own_cluster_and_secret() {
        let owner = OwnerReference { name: "c1".into(), ..Default::default() };
        let settings = UserClusterSettings {
            mla_enabled: true,
            image: "img".into(),
            kubeconfig_secret: "admin-kubeconfig".into(),
            kubeconfig_key: "kubeconfig".into(),
            agents_namespace: "mla-agents".into(),
            extended_health: false,
            prometheus_image: Some("registry.example/prometheus:v3.16.0".into()),
            promtail_image: None,
        };
        let objects = objects("c1", "cluster-c1", &owner, &settings);
        let cluster_rules = objects.cluster_role.rules.unwrap_or_default();
        assert!(
            cluster_rules
                .iter()
                .filter(|r| r.api_groups == Some(vec!["kubermatic.k8c.io".into()]))
                .all(|r| r.resource_names == Some(vec!["c1".to_string()]))
        );
        let role_rules = objects.role.rules.unwrap_or_default();
        let secrets = role_rules.iter().find(|r| r.resources == Some(vec!["secrets".into()])).expect("secrets rule");
        assert_eq!(
            secrets.resource_names,
            Some(vec!["mla-gateway-ca".to_string()]),
            "never the kubeconfig or other Secrets"
        );
        let args = objects
            .deployment
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].args.clone().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            args.contains(&"--cluster-name=c1".to_string())
                && args.contains(&"--cluster-namespace=cluster-c1".to_string())
                && args.contains(&"--agents-namespace=mla-agents".to_string())
                && args.contains(&"--prometheus-image=registry.example/prometheus:v3.16.0".to_string())
                && !args.iter().any(|a| a.starts_with("--promtail-image"))
                && args.contains(&"--extended-health=false".to_string()),
            "{args:?}"
        );
    }
}

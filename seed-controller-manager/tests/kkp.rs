//! The seed manager on KKP's own CRDs, with objects shaped as KKP writes them: status
//! writes KKP's schema accepts, KKP's finalizers released after our cleanup, a gateway KKP
//! made taken over without a second CA, and KKP's pause and worker-name rules.
//!
//! KKP's CRDs are read from `$MLA_KKP_CRDS`, else from `../shared/reference/kkp-crds` next
//! to the workspace (where CI has them), see `mla_e2e::kkp::crds_dir`: without either the
//! tests say how to point them at a KKP installation's CRDs and pass, except in CI.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::cortex::{Cortex, CortexServer};
use mla_e2e::grafana::GrafanaServer;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, workspace_root};

const WAIT: Duration = Duration::from_secs(30);

struct Seed {
    plane: ControlPlane,
    grafana: GrafanaServer,
    /// Real Cortex (Alertmanager and ruler); Loki's ruler is the stand-in (Loki cannot run here).
    cortex: Cortex,
    _loki: CortexServer,
    http: reqwest::Client,
    binary: Option<ManagedProcess>,
}

const GRAFANA_ADMIN: &str = "admin";
const GRAFANA_PASSWORD: &str = "grafana-admin-password";
const RUNTIME_CONFIG: &str = "cortex-runtime-config";
const RUNTIME_KEY: &str = "runtime_config.yaml";

/// A control plane with KKP's CRDs, the binary's RBAC, the Grafana and Cortex test servers
/// and Cortex's runtime configuration; the binary runs with `flags`.
async fn start(name: &str, crds: &std::path::Path, flags: &[&str]) -> anyhow::Result<Seed> {
    let mut plane = ControlPlane::start(name).await?;
    // ownerReferences and orphaning work as in a real seed.
    plane.start_garbage_collector()?;
    let client = plane.client();
    plane.install_crds_from(crds).await?;
    ensure_namespace(&client, "kubermatic").await?;
    mla_e2e::apply_seed_manager_rbac(&client).await?;
    let grafana = GrafanaServer::start(GRAFANA_ADMIN, GRAFANA_PASSWORD).await?;
    let secret = Secret {
        metadata: ObjectMeta { name: Some("grafana".into()), ..Default::default() },
        string_data: Some(
            [
                ("admin-user".to_string(), GRAFANA_ADMIN.to_string()),
                ("admin-password".to_string(), GRAFANA_PASSWORD.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "mla").create(&PostParams::default(), &secret).await?;
    let runtime_config = ConfigMap {
        metadata: ObjectMeta { name: Some(RUNTIME_CONFIG.into()), ..Default::default() },
        data: Some([(RUNTIME_KEY.to_string(), "overrides: {}\n".to_string())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), "mla").create(&PostParams::default(), &runtime_config).await?;
    let cortex = Cortex::start(&plane.dir().join("cortex")).await?;
    let loki = CortexServer::start().await?;
    let mut all = vec![
        "--enable-user-cluster-mla=true".to_string(),
        format!("--grafana-url={}", grafana.url()),
        "--grafana-timeout=2s".to_string(),
        format!("--cortex-alertmanager-url={}", cortex.url()),
        format!("--cortex-ruler-url={}", cortex.url()),
        format!("--loki-ruler-url={}", loki.url()),
        "--cortex-request-timeout=2s".to_string(),
    ];
    all.extend(flags.iter().map(|f| f.to_string()));
    let manager = support::spawn_seed_manager(&plane, all, &format!("{name}.log"), WAIT).await?;
    Ok(Seed { plane, grafana, cortex, _loki: loki, http: reqwest::Client::new(), binary: Some(manager.process) })
}

impl Seed {
    /// A Grafana API GET as its admin: status and body.
    async fn grafana_get(&self, path: &str, org: Option<i64>) -> (u16, serde_json::Value) {
        let mut request =
            self.http.get(format!("{}{path}", self.grafana.url())).basic_auth(GRAFANA_ADMIN, Some(GRAFANA_PASSWORD));
        if let Some(org) = org {
            request = request.header("X-Grafana-Org-Id", org.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default())
    }

    async fn org_id(&self, name: &str) -> Option<i64> {
        let (status, body) = self.grafana_get(&format!("/api/orgs/name/{name}"), None).await;
        (status == 200).then(|| body["id"].as_i64().unwrap())
    }

    async fn grafana_user(&self, email: &str) -> bool {
        self.grafana_get(&format!("/api/users/lookup?loginOrEmail={email}"), None).await.0 == 200
    }

    async fn has_datasource(&self, org: i64, uid: &str) -> bool {
        self.grafana_get(&format!("/api/datasources/uid/{uid}"), Some(org)).await.0 == 200
    }

    async fn has_dashboard(&self, org: i64, uid: &str) -> bool {
        self.grafana_get(&format!("/api/dashboards/uid/{uid}"), Some(org)).await.0 == 200
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.plane.dir().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Waits until `check` holds (async).
async fn until<F, Fut>(what: &str, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let check = &check;
    eventually(what, WAIT, || async move { Ok(check().await.then_some(())) }).await
}

/// Waits until the object `name` of kind `K` is gone.
async fn gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(
        &format!("{name} to be gone"),
        WAIT,
        || async move { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A Cluster as KKP's API creates it: every spec field KKP's CRD requires, and some it sets.
fn kkp_cluster(name: &str, project: &str) -> serde_json::Value {
    kkp_cluster_exposed(name, project, "Tunneling")
}

fn kkp_cluster_exposed(name: &str, project: &str, expose: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "labels": {"project-id": project}},
        "spec": {
            "version": "1.31.1", "humanReadableName": format!("{name} (kkp)"), "exposeStrategy": expose,
            "cloud": {"dc": "byo-1", "providerName": "bringyourown", "bringyourown": {}},
            "clusterNetwork": {"pods": {"cidrBlocks": ["172.25.0.0/16"]}, "services": {"cidrBlocks": ["10.240.16.0/20"]},
                               "dnsDomain": "cluster.local", "proxyMode": "ipvs", "konnectivityEnabled": true},
            "enableOperatingSystemManager": true,
            "mla": {"monitoringEnabled": true, "loggingEnabled": false},
        },
    })
}

async fn create_kkp_cluster(
    client: &kube::Client,
    name: &str,
    project: &str,
    finalizers: &[&str],
) -> anyhow::Result<()> {
    create_kkp_cluster_from(client, name, kkp_cluster(name, project), finalizers).await
}

async fn create_kkp_cluster_from(
    client: &kube::Client,
    name: &str,
    mut object: serde_json::Value,
    finalizers: &[&str],
) -> anyhow::Result<()> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    object["metadata"]["finalizers"] = serde_json::json!(finalizers);
    create_raw::<Cluster>(client, None, object).await?;
    ensure_namespace(client, &format!("cluster-{name}")).await?;
    // KKP's cluster controller writes the namespace and address, with its own condition.
    let status = serde_json::json!({"status": {
        "namespaceName": format!("cluster-{name}"), "userEmail": "owner@example.com", "phase": "Running",
        "address": {"externalName": format!("{name}.seed.example.com"), "ip": "192.0.2.10", "port": 6443,
                    "url": format!("https://{name}.seed.example.com:6443"), "adminToken": "x"},
        "conditions": {"ClusterControllerReconciledSuccessfully": {
            "kubermaticVersion": "v2.31.0", "status": "True", "lastHeartbeatTime": "2026-08-21T10:00:00Z"}},
        "extendedHealth": {"apiserver": "HealthStatusUp", "etcd": "HealthStatusUp"},
    }});
    clusters.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// Creates `object` as it is (with the fields our types lack), as kind `K`.
async fn create_raw<K: kube::Resource<DynamicType = ()>>(
    client: &kube::Client,
    namespace: Option<&str>,
    object: serde_json::Value,
) -> anyhow::Result<()> {
    let resource = kube::discovery::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &serde_json::from_value(object)?).await?;
    Ok(())
}

async fn cluster_with<T>(
    client: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&Cluster) -> Option<T>,
) -> anyhow::Result<T> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    let check = &check;
    eventually(what, WAIT, || {
        let clusters = clusters.clone();
        async move { Ok(check(&clusters.get(name).await?)) }
    })
    .await
}

/// On KKP's CRDs every status write lands: the conditions carry the fields KKP's schema
/// requires, KKP's own condition and health fields stay, and a steady state writes nothing.
#[tokio::test]
async fn status_lands_on_kkps_crds() -> anyhow::Result<()> {
    let Some(crds) = mla_e2e::kkp::crds_dir()? else { return Ok(()) };
    let mut seed = start("kkp-status", &crds, &[]).await?;
    let client = seed.plane.client();
    create_kkp_cluster(&client, "k1", "p1", &[]).await?;
    // The health follows once the controller's cache holds the Deployment it made (the
    // first status write may carry the condition alone).
    let cluster = cluster_with(&client, "k1", "the gateway condition and health", |c| {
        let health = c.status.as_ref().and_then(|s| s.extended_health.as_ref()).and_then(|h| h.mla_gateway);
        c.condition("MLAGatewayReady")
            .filter(|c| c.reason.as_deref() == Some("GatewayNotAvailable"))
            .and(health)
            .map(|_| c.clone())
    })
    .await?;
    let status = cluster.status.clone().unwrap();
    let condition = &status.conditions["MLAGatewayReady"];
    assert_eq!(condition.kubermatic_version.as_deref(), Some(CONTROLLER_VERSION));
    assert!(condition.last_heartbeat_time.is_some());
    let health = status.extended_health.clone().unwrap();
    assert_eq!(health.mla_gateway, Some(HealthStatus::HealthStatusProvisioning));
    assert_eq!(health.other.get("apiserver"), Some(&serde_json::json!("HealthStatusUp")), "KKP's health stays");
    assert!(status.conditions.contains_key("ClusterControllerReconciledSuccessfully"), "KKP's condition stays");
    // Every condition of ours, whichever controller wrote it, has KKP's required fields.
    let cluster = cluster_with(&client, "k1", "the user-cluster controller condition", |c| {
        c.condition("MLAUserClusterControllerReady").map(|_| c.clone())
    })
    .await?;
    for (kind, condition) in &cluster.status.as_ref().unwrap().conditions {
        assert!(
            condition.kubermatic_version.is_some() && condition.last_heartbeat_time.is_some(),
            "{kind}: {condition:?}"
        );
    }

    // Nothing new: nothing written (the resource version of the Cluster stays).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = Api::<Cluster>::all(client.clone()).get("k1").await?.resource_version();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = Api::<Cluster>::all(client.clone()).get("k1").await?.resource_version();
    assert_eq!(before, after, "a steady state writes nothing (two resync periods)");
    seed.binary.take();
    Ok(())
}

const KKP_MLA: &str = "kubermatic.k8c.io/mla";
const KKP_ALERTMANAGER: &str = "kubermatic.k8c.io/alertmanager";
const KKP_RULE_GROUP: &str = "kubermatic.k8c.io/rule-group";

/// Objects KKP's MLA controllers marked with their finalizers, then deleted: each is gone
/// once this system has done the cleanup the finalizer stood for.
#[tokio::test]
async fn kkps_finalizers_never_hold_a_deletion() -> anyhow::Result<()> {
    let Some(crds) = mla_e2e::kkp::crds_dir()? else { return Ok(()) };
    let mut seed = start("kkp-finalizers", &crds, &[]).await?;
    let client = seed.plane.client();
    // As KKP's MLA left them: its finalizers on every kind it guards.
    create_raw::<Project>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
            "metadata": {"name": "p1", "finalizers": [KKP_MLA]},
            "spec": {"name": "shop"},
        }),
    )
    .await?;
    Api::<Project>::all(client.clone())
        .patch_status("p1", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"status": {"phase": "Active"}})))
        .await?;
    create_raw::<User>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "User",
            "metadata": {"name": "u1", "finalizers": [KKP_MLA]},
            "spec": {"email": "ann@example.com", "name": "Ann", "admin": false},
        }),
    )
    .await?;
    create_raw::<UserProjectBinding>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "UserProjectBinding",
            "metadata": {"name": "b1"},
            "spec": {"userEmail": "ann@example.com", "projectID": "p1", "group": "editors-p1"},
        }),
    )
    .await?;
    create_kkp_cluster(&client, "k1", "p1", &[KKP_MLA, KKP_ALERTMANAGER]).await?;
    let rule = |name: &str, namespace: &str| {
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "RuleGroup",
            "metadata": {"name": name, "namespace": namespace, "finalizers": [KKP_RULE_GROUP]},
            "spec": {"ruleGroupType": "Metrics", "cluster": {"name": "k1"}, "isDefault": false,
                     "data": base64_of(&format!("name: {name}\nrules:\n  - alert: Down\n    expr: up == 0\n"))},
        })
    };
    create_raw::<RuleGroup>(&client, Some("cluster-k1"), rule("node-alerts", "cluster-k1")).await?;
    create_raw::<RuleGroup>(&client, Some("mla"), rule("kkp-template", "mla")).await?;
    create_raw::<MLAAdminSetting>(
        &client,
        Some("cluster-k1"),
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "MLAAdminSetting",
            "metadata": {"name": "mla-admin-settings", "namespace": "cluster-k1", "finalizers": [KKP_MLA]},
            "spec": {"clusterName": "k1", "monitoringRateLimits": {"ingestionRate": 42}},
        }),
    )
    .await?;
    let dashboard = ConfigMap {
        metadata: ObjectMeta {
            name: Some("grafana-dashboards-kkp".into()),
            finalizers: Some(vec![KKP_MLA.into()]),
            ..Default::default()
        },
        data: Some(
            [("kkp.json".to_string(), r#"{"uid": "kkp-overview", "title": "KKP overview"}"#.to_string())].into(),
        ),
        ..Default::default()
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "mla");
    config_maps.create(&PostParams::default(), &dashboard).await?;

    // Taken over: everything is in Grafana and Cortex.
    let org = eventually("the project's organization", WAIT, || async { Ok(seed.org_id("shop-p1").await) }).await?;
    until("the datasources, dashboard and user", || async {
        seed.has_datasource(org, "prometheus-k1").await
            && seed.has_dashboard(org, "kkp-overview").await
            && seed.grafana_user("ann@example.com").await
    })
    .await?;
    until("the tenant in Cortex", || async {
        seed.cortex.alertmanager_config("k1").await.ok().flatten().is_some()
            && seed.cortex.rule_group("k1", "default", "node-alerts").await.ok().flatten().is_some()
            && seed.cortex.rule_group("k1", "default", "kkp-template").await.ok().flatten().is_some()
    })
    .await?;
    let runtime = || async {
        let cm = config_maps.get(RUNTIME_CONFIG).await.unwrap();
        cm.data.unwrap_or_default().get(RUNTIME_KEY).cloned().unwrap_or_default()
    };
    until("the tenant's limits", || async { runtime().await.contains("ingestion_rate: 42") }).await?;
    // KKP's finalizers stay while the objects live (switching back to KKP finds them).
    let project = Api::<Project>::all(client.clone()).get("p1").await?;
    assert!(project.finalizers().contains(&KKP_MLA.to_string()), "{:?}", project.finalizers());

    // A RuleGroup: out of the ruler, then gone.
    let groups: Api<RuleGroup> = Api::namespaced(client.clone(), "cluster-k1");
    groups.delete("node-alerts", &DeleteParams::default()).await?;
    gone(&groups, "node-alerts").await?;
    assert!(matches!(seed.cortex.rule_group("k1", "default", "node-alerts").await, Ok(None)));
    // A template: its copies go, then it is gone.
    let templates: Api<RuleGroup> = Api::namespaced(client.clone(), "mla");
    templates.delete("kkp-template", &DeleteParams::default()).await?;
    gone(&templates, "kkp-template").await?;
    gone(&groups, "kkp-template").await?;
    until("the template's rules out of the ruler", || async {
        matches!(seed.cortex.rule_group("k1", "default", "kkp-template").await, Ok(None))
    })
    .await?;
    // A dashboard ConfigMap: its dashboard out of every org, then gone.
    config_maps.delete("grafana-dashboards-kkp", &DeleteParams::default()).await?;
    gone(&config_maps, "grafana-dashboards-kkp").await?;
    assert!(!seed.has_dashboard(org, "kkp-overview").await);
    // The MLAAdminSetting: the tenant's limits out of the runtime configuration, then gone.
    let settings: Api<MLAAdminSetting> = Api::namespaced(client.clone(), "cluster-k1");
    settings.delete("mla-admin-settings", &DeleteParams::default()).await?;
    gone(&settings, "mla-admin-settings").await?;
    until("the limits removed", || async { !runtime().await.contains("ingestion_rate: 42") }).await?;
    // The Cluster: datasources and the Alertmanager configuration gone, then the Cluster.
    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters.delete("k1", &DeleteParams::default()).await?;
    gone(&clusters, "k1").await?;
    assert!(!seed.has_datasource(org, "prometheus-k1").await);
    assert!(seed.cortex.alertmanager_config("k1").await?.is_none());
    // The User: its Grafana user gone, then the User.
    let users: Api<User> = Api::all(client.clone());
    users.delete("u1", &DeleteParams::default()).await?;
    gone(&users, "u1").await?;
    assert!(!seed.grafana_user("ann@example.com").await);
    // The Project: its organization gone, then the Project.
    let projects: Api<Project> = Api::all(client.clone());
    projects.delete("p1", &DeleteParams::default()).await?;
    gone(&projects, "p1").await?;
    assert_eq!(seed.org_id("shop-p1").await, None);
    seed.binary.take();
    assert!(!seed.log("kkp-finalizers").contains("panicked"));
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A gateway KKP's seed controller made (its Deployment selects `app.kubernetes.io/name`
/// only, its objects carry no labels, its write Service has port `http-ext` 80, its CA a
/// SEC1 key), taken over: KKP's CA is kept, the write port's NodePort stays, and the old
/// pods serve until ours have rolled out.
#[tokio::test]
async fn a_gateway_kkp_made_is_taken_over_without_an_outage() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::core::v1::Service;
    let Some(crds) = mla_e2e::kkp::crds_dir()? else { return Ok(()) };
    let mut seed = start("kkp-gateway", &crds, &[]).await?;
    let client = seed.plane.client();
    let namespace = "cluster-k2";
    ensure_namespace(&client, namespace).await?;
    let fixtures = workspace_root().join("common/tests/fixtures");
    let ca_crt = std::fs::read_to_string(fixtures.join("kkp-ca.crt"))?;
    let ca_key = std::fs::read_to_string(fixtures.join("kkp-ca.key"))?;
    // KKP's objects, as its reconcilers write them.
    let kkp_selector = serde_json::json!({"app.kubernetes.io/name": "mla-gateway"});
    create_raw::<Secret>(
        &client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mla-gateway-ca", "namespace": namespace},
            "stringData": {"ca.crt": ca_crt, "ca.key": ca_key},
        }),
    )
    .await?;
    create_raw::<ConfigMap>(
        &client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mla-gateway", "namespace": namespace},
            "data": {"nginx.conf": "worker_processes 1; # KKP's"},
        }),
    )
    .await?;
    create_raw::<Deployment>(&client, Some(namespace), serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mla-gateway", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": kkp_selector},
                 "template": {"metadata": {"labels": kkp_selector},
                              "spec": {"containers": [{"name": "nginx", "image": "nginxinc/nginx-unprivileged:1.31.2-alpine",
                                       "ports": [{"name": "http-ext", "containerPort": 8080}, {"name": "http-int", "containerPort": 8081}]}]}}},
    }))
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let kkp_deployment = deployments.get("mla-gateway").await?;
    // Its ReplicaSet, as the Deployment controller (not running here) would have made it.
    create_raw::<ReplicaSet>(&client, Some(namespace), serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "mla-gateway-5d8f7", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "mla-gateway", "pod-template-hash": "5d8f7"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "mla-gateway",
                                          "uid": kkp_deployment.uid().unwrap(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "mla-gateway", "pod-template-hash": "5d8f7"}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": "mla-gateway", "pod-template-hash": "5d8f7"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginxinc/nginx-unprivileged:1.31.2-alpine"}]}}},
    }))
    .await?;
    create_raw::<Service>(
        &client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mla-gateway", "namespace": namespace},
            "spec": {"type": "ClusterIP", "selector": kkp_selector,
                     "ports": [{"name": "http-int", "port": 80, "targetPort": "http-int", "protocol": "TCP"}]},
        }),
    )
    .await?;
    create_raw::<Service>(
        &client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mla-gateway-ext", "namespace": namespace,
                "annotations": {"nodeport-proxy.k8s.io/expose": "true"}},
            "spec": {"type": "NodePort", "selector": kkp_selector,
                     "ports": [{"name": "http-ext", "port": 80, "targetPort": "http-ext", "protocol": "TCP"}]},
        }),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let node_port = |service: &Service, name: &str| {
        service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)).and_then(|p| p.node_port))
    };
    let kkp_node_port = node_port(&services.get("mla-gateway-ext").await?, "http-ext").expect("a NodePort");

    // The Cluster, exposed by NodePort as KKP's was.
    create_kkp_cluster_from(&client, "k2", kkp_cluster_exposed("k2", "p1", "NodePort"), &[]).await?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    // Ours replaces KKP's Deployment; KKP's pods (their ReplicaSet, orphaned) keep serving.
    let ours = eventually("our Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get_opt("mla-gateway").await?;
            Ok(d.filter(|d| d.labels().contains_key("app.kubernetes.io/managed-by")))
        }
    })
    .await?;
    assert_ne!(ours.uid(), kkp_deployment.uid());
    let old = replica_sets.get("mla-gateway-5d8f7").await?;
    assert!(old.owner_references().is_empty(), "orphaned, not deleted: {:?}", old.owner_references());
    // Every Service selects KKP's pods and ours alike while both run.
    for name in ["mla-gateway", "mla-gateway-ext"] {
        let selector = services.get(name).await?.spec.and_then(|s| s.selector);
        assert_eq!(
            selector,
            Some([("app.kubernetes.io/name".to_string(), "mla-gateway".to_string())].into()),
            "{name}"
        );
    }
    // The write Service: KKP's port (and its NodePort) stays, ours is added, both to 8080.
    let external = services.get("mla-gateway-ext").await?;
    assert_eq!(node_port(&external, "http-ext"), Some(kkp_node_port), "agents KKP configured keep their port");
    assert!(node_port(&external, "https-ext").is_some());
    // KKP's CA, kept byte for byte, now ours (labels, owner); the gateway certificate from it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let ca = secrets.get("mla-gateway-ca").await?;
    let text = |secret: &Secret, key: &str| String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
    assert_eq!(text(&ca, "ca.crt"), ca_crt, "no second CA");
    assert_eq!(text(&ca, "ca.key"), ca_key);
    assert_eq!(ca.owner_references().len(), 1);
    let certs = eventually("the gateway certificate", WAIT, || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("mla-gateway-certificates").await?) }
    })
    .await?;
    let spec = mla_common::pki::LeafSpec::gateway_server("k2.seed.example.com", Some("192.0.2.10")).unwrap();
    let renewal = mla_common::pki::leaf_renewal(
        Some(&text(&certs, "gateway.crt")),
        Some(&text(&certs, "gateway.key")),
        &ca_crt,
        &spec,
        std::time::SystemTime::now(),
    );
    assert_eq!(renewal, None, "issued by KKP's CA");
    assert!(text(&certs, "ca-bundle.crt").contains(ca_crt.trim()), "clients KKP certified are trusted");

    // Not before ours has rolled out does the old ReplicaSet go.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(replica_sets.get_opt("mla-gateway-5d8f7").await?.is_some(), "KKP's pods serve until ours are available");
    let generation = deployments.get("mla-gateway").await?.metadata.generation.unwrap_or(1);
    let available = serde_json::json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                                  "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("mla-gateway", &PatchParams::default(), &Patch::Merge(&available)).await?;
    gone(&replica_sets, "mla-gateway-5d8f7").await?;
    cluster_with(&client, "k2", "the gateway available", |c| {
        c.condition("MLAGatewayReady").filter(|c| c.reason.as_deref() == Some("GatewayAvailable")).map(|_| ())
    })
    .await?;
    // Taken over, nothing left to do: no further write to the gateway's objects.
    let versions = || async {
        let mut versions = Vec::new();
        versions.push(deployments.get("mla-gateway").await.unwrap().resource_version());
        for name in ["mla-gateway", "mla-gateway-ext"] {
            versions.push(services.get(name).await.unwrap().resource_version());
        }
        for name in ["mla-gateway-ca", "mla-gateway-certificates"] {
            versions.push(secrets.get(name).await.unwrap().resource_version());
        }
        versions
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(versions().await, before);
    seed.binary.take();
    Ok(())
}

/// KKP's rules: roles from GroupProjectBindings through `User.spec.groups`, no Grafana user
/// for project service accounts, paused Clusters and other workers' Clusters left alone.
#[tokio::test]
async fn kkps_rules_for_groups_service_accounts_pause_and_workers() -> anyhow::Result<()> {
    let Some(crds) = mla_e2e::kkp::crds_dir()? else { return Ok(()) };
    let mut seed = start("kkp-rules", &crds, &[]).await?;
    let client = seed.plane.client();
    create_raw::<Project>(&client, None, serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project", "metadata": {"name": "p1"}, "spec": {"name": "shop"},
    }))
    .await?;
    create_raw::<User>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": "u-ann"},
            "spec": {"email": "ann@example.com", "name": "Ann", "admin": false, "groups": ["sre", "oidc:staff"]},
        }),
    )
    .await?;
    create_raw::<User>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": "serviceaccount-7d4b5695vb"},
            "spec": {"email": "serviceaccount-7d4b5695vb@localhost", "name": "ci", "admin": false, "project": "p1"},
        }),
    )
    .await?;
    create_raw::<UserProjectBinding>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "UserProjectBinding", "metadata": {"name": "sa-p1"},
            "spec": {"userEmail": "serviceaccount-7d4b5695vb@localhost", "projectID": "p1", "group": "editors-p1"},
        }),
    )
    .await?;
    create_raw::<GroupProjectBinding>(
        &client,
        None,
        serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "GroupProjectBinding", "metadata": {"name": "p1-sre"},
            "spec": {"group": "sre", "projectID": "p1", "role": "editors"},
        }),
    )
    .await?;
    create_kkp_cluster(&client, "k3", "p1", &[]).await?;
    let mut paused = kkp_cluster("k4", "p1");
    paused["spec"]["pause"] = serde_json::json!(true);
    create_kkp_cluster_from(&client, "k4", paused, &[]).await?;
    let mut other = kkp_cluster("k5", "p1");
    other["metadata"]["labels"]["worker-name"] = serde_json::json!("alice");
    create_kkp_cluster_from(&client, "k5", other, &[]).await?;

    // Ann is an Editor of the project's organization through her group.
    let org = eventually("the project's organization", WAIT, || async { Ok(seed.org_id("shop-p1").await) }).await?;
    let role = |email: &'static str| {
        let seed = &seed;
        async move {
            let (status, user) = seed.grafana_get(&format!("/api/users/lookup?loginOrEmail={email}"), None).await;
            if status != 200 {
                return None;
            }
            let (_, orgs) = seed.grafana_get(&format!("/api/users/{}/orgs", user["id"]), None).await;
            orgs.as_array()?
                .iter()
                .find(|o| o["orgId"] == org)
                .map(|o| o["role"].as_str().unwrap_or_default().to_string())
        }
    };
    until("Ann an Editor through her group", || async { role("ann@example.com").await.as_deref() == Some("Editor") })
        .await?;
    // The served Cluster gets its gateway and datasources.
    cluster_with(&client, "k3", "k3's gateway condition", |c| c.condition("MLAGatewayReady").map(|_| ())).await?;
    until("k3's datasource", || async { seed.has_datasource(org, "prometheus-k3").await }).await?;
    // The service account: no Grafana user.
    assert!(!seed.grafana_user("serviceaccount-7d4b5695vb@localhost").await);

    // The paused Cluster and the other worker's: nothing of ours, after several resyncs.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let clusters: Api<Cluster> = Api::all(client.clone());
    for name in ["k4", "k5"] {
        let cluster = clusters.get(name).await?;
        let ours: Vec<_> = cluster
            .status
            .as_ref()
            .map(|s| s.conditions.keys().filter(|k| k.starts_with("MLA")).cloned().collect())
            .unwrap_or_default();
        assert!(ours.is_empty(), "{name}: {ours:?}");
        assert!(cluster.finalizers().is_empty(), "{name}: {:?}", cluster.finalizers());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &format!("cluster-{name}"));
        assert!(secrets.get_opt("mla-gateway-ca").await?.is_none(), "{name} has no gateway");
        assert!(!seed.has_datasource(org, &format!("prometheus-{name}")).await, "{name} has no datasource");
    }
    assert!(!seed.grafana_user("serviceaccount-7d4b5695vb@localhost").await);

    // Unpaused, the Cluster is served.
    clusters
        .patch("k4", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"spec": {"pause": false}})))
        .await?;
    cluster_with(&client, "k4", "k4's gateway condition once unpaused", |c| c.condition("MLAGatewayReady").map(|_| ()))
        .await?;
    until("k4's datasource", || async { seed.has_datasource(org, "prometheus-k4").await }).await?;
    // The group's role lowered: Ann a Viewer.
    Api::<GroupProjectBinding>::all(client.clone())
        .patch("p1-sre", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"spec": {"role": "viewers"}})))
        .await?;
    until("Ann a Viewer", || async { role("ann@example.com").await.as_deref() == Some("Viewer") }).await?;
    // Out of the group: out of the organization.
    Api::<User>::all(client.clone())
        .patch(
            "u-ann",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"groups": ["oidc:staff"]}})),
        )
        .await?;
    until("Ann out of the organization", || async { role("ann@example.com").await.is_none() }).await?;
    seed.binary.take();
    Ok(())
}

//! The gateway reconciler in the real binary, against a real API server, under the RBAC of
//! `manifests/seed-controller-manager/`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_common::pki;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, write_requests_by_resource};

const WAIT: Duration = Duration::from_secs(30);

struct Seed {
    plane: ControlPlane,
    _binary: ManagedProcess,
    admin: String,
}

async fn start(name: &str) -> anyhow::Result<Seed> {
    let plane = ControlPlane::start(name).await?;
    plane.install_crds().await?;
    ensure_namespace(&plane.client(), "kubermatic").await?;
    // Every grant of the binary (rbac*.yaml; the Grafana Role lives in the MLA namespace).
    mla_e2e::apply_seed_manager_rbac(&plane.client()).await?;
    let manager =
        support::spawn_seed_manager(&plane, ["--enable-user-cluster-mla=true"], "seed-controller-manager.log", WAIT)
            .await?;
    Ok(Seed { plane, _binary: manager.process, admin: manager.admin })
}

fn cluster(name: &str, monitoring: bool, logging: bool) -> Cluster {
    support::cluster(name, "p1", monitoring, logging)
}

async fn set_status(clusters: &Api<Cluster>, name: &str, status: serde_json::Value) -> anyhow::Result<()> {
    clusters
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&serde_json::json!({ "status": status })))
        .await?;
    Ok(())
}

async fn condition(clusters: &Api<Cluster>, name: &str, reason: &str) -> anyhow::Result<Cluster> {
    eventually(&format!("condition reason {reason}"), WAIT, || async move {
        let cluster = clusters.get(name).await?;
        let found =
            cluster.status.as_ref().and_then(|s| s.conditions.get("MLAGatewayReady")).and_then(|c| c.reason.clone());
        Ok((found.as_deref() == Some(reason)).then_some(cluster))
    })
    .await
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// `mla_certificate_expiry_earliest_timestamp_seconds{kind}` from a /metrics text.
fn expiry(metrics: &str, kind: &str) -> Option<i64> {
    let prefix = format!("mla_certificate_expiry_earliest_timestamp_seconds{{kind=\"{kind}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

async fn writes(client: &kube::Client) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    write_requests_by_resource(client, &["", "apps", "kubermatic.k8c.io"]).await
}

#[tokio::test]
async fn gateway_lifecycle() -> anyhow::Result<()> {
    let seed = start("gateway").await?;
    let client = seed.plane.client();
    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters.create(&PostParams::default(), &cluster("c1", true, false)).await?;
    condition(&clusters, "c1", "WaitingForNamespace").await?;

    ensure_namespace(&client, "cluster-c1").await?;
    set_status(&clusters, "c1", serde_json::json!({"namespaceName": "cluster-c1"})).await?;
    condition(&clusters, "c1", "WaitingForAddress").await?;
    set_status(
        &clusters,
        "c1",
        serde_json::json!({"address": {"externalName": "c1.seed.example.com", "ip": "192.0.2.10", "port": 6443}}),
    )
    .await?;
    let c1 = condition(&clusters, "c1", "GatewayNotAvailable").await?;
    assert_eq!(
        c1.status.as_ref().and_then(|s| s.extended_health.as_ref()).and_then(|h| h.mla_gateway),
        Some(HealthStatus::HealthStatusProvisioning)
    );

    // Every object, owned by the Cluster (the garbage collector removes them with it).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cluster-c1");
    let ca = secrets.get("mla-gateway-ca").await?;
    let certs = secrets.get("mla-gateway-certificates").await?;
    let config: ConfigMap = Api::namespaced(client.clone(), "cluster-c1").get("mla-gateway").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "cluster-c1");
    let deployment = deployments.get("mla-gateway").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "cluster-c1");
    let internal = services.get("mla-gateway").await?;
    let external = services.get("mla-gateway-ext").await?;
    let uid = c1.uid().unwrap();
    for owners in [
        &ca.metadata.owner_references,
        &certs.metadata.owner_references,
        &config.metadata.owner_references,
        &deployment.metadata.owner_references,
        &internal.metadata.owner_references,
        &external.metadata.owner_references,
    ] {
        assert_eq!(owners.as_ref().map(|o| o[0].uid.clone()), Some(uid.clone()));
    }
    assert_eq!(external.spec.as_ref().and_then(|s| s.type_.clone()).as_deref(), Some("ClusterIP"), "Tunneling");
    assert!(!certs.data.as_ref().unwrap().contains_key("ca.key"), "the CA key stays out of the gateway's Secret");
    let conf = &config.data.as_ref().unwrap()["nginx.conf"];
    assert!(conf.contains("proxy_set_header X-Scope-OrgID c1;"), "{conf}");
    assert!(!conf.contains("limit_req_zone"), "no limits without settings");

    // The certificate: issued by the cluster's CA for the cluster's address.
    let ca_pem = text(&ca, "ca.crt");
    let spec = pki::LeafSpec::gateway_server("c1.seed.example.com", Some("192.0.2.10")).unwrap();
    let renewal = pki::leaf_renewal(
        Some(&text(&certs, "gateway.crt")),
        Some(&text(&certs, "gateway.key")),
        &ca_pem,
        &spec,
        std::time::SystemTime::now(),
    );
    assert_eq!(renewal, None, "a valid certificate for the cluster's address from its CA");
    assert!(text(&certs, "ca-bundle.crt").contains(ca_pem.trim()));
    // The expiry gauge shows exactly these certificates' notAfter.
    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert_eq!(expiry(&metrics, "ca"), pki::not_after(&ca_pem), "{metrics}");
    assert_eq!(expiry(&metrics, "gateway"), pki::not_after(&text(&certs, "gateway.crt")), "{metrics}");
    // Every object the gateway wrote is counted by kind (mla_api_writes_total).
    for kind in ["Secret", "ConfigMap", "Service", "Deployment"] {
        let line = format!(
            "mla_api_writes_total{{manager=\"seed-controller-manager/gateway\",kind=\"{kind}\",verb=\"apply\"}} "
        );
        let applies = metrics.lines().find_map(|l| l.strip_prefix(&line)?.trim().parse::<f64>().ok());
        assert!(applies.is_some_and(|n| n >= 1.0), "{kind} applies counted: {applies:?}\n{metrics}");
    }

    // The Deployment becomes available: health Up, condition True.
    let available = serde_json::json!({"status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}});
    deployments.patch_status("mla-gateway", &PatchParams::default(), &Patch::Merge(&available)).await?;
    let c1 = condition(&clusters, "c1", "GatewayAvailable").await?;
    assert_eq!(
        c1.status.as_ref().and_then(|s| s.extended_health.as_ref()).and_then(|h| h.mla_gateway),
        Some(HealthStatus::HealthStatusUp)
    );

    // The cluster's user-cluster-controller-manager: waits for the user cluster's
    // kubeconfig Secret (condition and Event), then runs with its own least RBAC.
    let process_condition = |c: &Cluster| {
        c.status.as_ref().and_then(|s| s.conditions.get("MLAUserClusterControllerReady")).and_then(|c| c.reason.clone())
    };
    eventually("KubeconfigSecretMissing", WAIT, || {
        let clusters = clusters.clone();
        async move {
            Ok((process_condition(&clusters.get("c1").await?).as_deref() == Some("KubeconfigSecretMissing"))
                .then_some(()))
        }
    })
    .await?;
    let kubeconfig = Secret {
        metadata: kube::api::ObjectMeta { name: Some("admin-kubeconfig".into()), ..Default::default() },
        string_data: Some([("kubeconfig".to_string(), "apiVersion: v1\nkind: Config\n".to_string())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &kubeconfig).await?;
    eventually("the user-cluster-controller-manager deployed", WAIT, || {
        let (clusters, deployments) = (clusters.clone(), deployments.clone());
        async move {
            let deployed = process_condition(&clusters.get("c1").await?).as_deref() == Some("Deployed")
                && deployments.get_opt("mla-user-cluster-controller-manager").await?.is_some();
            Ok(deployed.then_some(()))
        }
    })
    .await?;
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let role = roles.get("mla:user-cluster-controller-manager:c1").await?;
    assert!(role.rules.unwrap_or_default().iter().any(|r| r.resource_names == Some(vec!["c1".to_string()])));

    // Steady state: two resync periods, zero writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = writes(&client).await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(writes(&client).await?, before, "writes during two no-change resync periods");

    // Settings: limits reach nginx.conf, and the pods roll.
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()["mla.k8c.io/config-hash"]
            .clone()
    };
    let first_hash = hash(&deployment);
    let settings = MLAAdminSetting::new(
        MLA_ADMIN_SETTING_NAME,
        MLAAdminSettingSpec {
            cluster_name: "c1".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: Some(50),
                ingestion_burst_size: Some(100),
                ..Default::default()
            }),
            logging_rate_limits: None,
        },
    );
    let settings_api: Api<MLAAdminSetting> = Api::namespaced(client.clone(), "cluster-c1");
    settings_api.create(&PostParams::default(), &settings).await?;
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), "cluster-c1");
    eventually("limits in nginx.conf", WAIT, || {
        let configs = configs.clone();
        async move {
            Ok(configs.get("mla-gateway").await?.data.unwrap_or_default()["nginx.conf"]
                .contains("rate=50r/s")
                .then_some(()))
        }
    })
    .await?;
    let rolled = eventually("the pod template to change", WAIT, || {
        let deployments = deployments.clone();
        let first_hash = first_hash.clone();
        async move { Ok(Some(deployments.get("mla-gateway").await?).filter(|d| hash(d) != first_hash)) }
    })
    .await?;
    let good_conf = configs.get("mla-gateway").await?.data.unwrap_or_default()["nginx.conf"].clone();

    // Invalid settings (a negative rate, which KKP's own CRD does not refuse): a condition
    // and an Event, and the last good gateway keeps serving.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let unguard = serde_json::json!([{"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/monitoringRateLimits/properties/ingestionRate/minimum"}]);
    crds.patch(
        "mlaadminsettings.kubermatic.k8c.io",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(unguard)?),
    )
    .await?;
    let negative = serde_json::json!({"spec": {"monitoringRateLimits": {"ingestionRate": -5}}});
    eventually("the unguarded schema to accept a negative rate", WAIT, || {
        let settings_api = settings_api.clone();
        let negative = negative.clone();
        async move {
            Ok(settings_api
                .patch(MLA_ADMIN_SETTING_NAME, &PatchParams::default(), &Patch::Merge(&negative))
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await?;
    let c1 = condition(&clusters, "c1", "InvalidSettings").await?;
    let message = c1
        .status
        .as_ref()
        .and_then(|s| s.conditions.get("MLAGatewayReady"))
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("spec.monitoringRateLimits.ingestionRate"), "{message}");
    support::warning_event(&client, "default", "InvalidGatewaySettings", "", WAIT).await?;
    assert_eq!(
        configs.get("mla-gateway").await?.data.unwrap_or_default()["nginx.conf"],
        good_conf,
        "the last good config stays"
    );
    assert_eq!(hash(&deployments.get("mla-gateway").await?), hash(&rolled));
    let fix = serde_json::json!({"spec": {"monitoringRateLimits": {"ingestionRate": 40}}});
    settings_api.patch(MLA_ADMIN_SETTING_NAME, &PatchParams::default(), &Patch::Merge(&fix)).await?;
    condition(&clusters, "c1", "GatewayNotAvailable").await.or(condition(&clusters, "c1", "GatewayAvailable").await)?;

    // Disabling monitoring (logging is off too) removes every object and the status.
    // (The user-cluster-controller-manager's objects go too.)
    let disable = serde_json::json!({"spec": {"mla": {"monitoringEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&disable)).await?;
    eventually("the gateway removed", WAIT, || {
        let (secrets, deployments, services, configs) =
            (secrets.clone(), deployments.clone(), services.clone(), configs.clone());
        async move {
            let gone = secrets.get_opt("mla-gateway-ca").await?.is_none()
                && secrets.get_opt("mla-gateway-certificates").await?.is_none()
                && configs.get_opt("mla-gateway").await?.is_none()
                && deployments.get_opt("mla-gateway").await?.is_none()
                && services.get_opt("mla-gateway").await?.is_none()
                && services.get_opt("mla-gateway-ext").await?.is_none()
                && deployments.get_opt("mla-user-cluster-controller-manager").await?.is_none();
            Ok(gone.then_some(()))
        }
    })
    .await?;
    eventually("status cleared", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("c1").await?;
            let status = c.status.unwrap_or_default();
            Ok((status.extended_health.and_then(|h| h.mla_gateway).is_none()
                && !status.conditions.contains_key("MLAGatewayReady"))
            .then_some(()))
        }
    })
    .await?;

    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert!(metrics.contains("mla_reconciles_total{controller=\"gateway\",result=\"success\"}"), "{metrics}");
    assert_eq!((expiry(&metrics, "ca"), expiry(&metrics, "gateway")), (None, None), "no gateway, no certificates");
    clusters.delete("c1", &DeleteParams::default()).await?;
    Ok(())
}

/// A gateway the API server refuses shows on its Cluster and recovers by itself: with a
/// NodePort range of one port, the second Cluster with the NodePort strategy cannot get
/// its external Service (`failed to allocate a nodePort: range is full`, which a seed
/// with more NodePort Clusters than ports meets); once the first Cluster moves to the
/// Tunneling strategy and frees the port, the second gets its gateway.
#[tokio::test]
async fn a_refused_gateway_shows_on_its_cluster_until_it_can_be_made() -> anyhow::Result<()> {
    let options = mla_e2e::control_plane::Options { node_ports: Some("30000-30000".into()), ..Default::default() };
    let plane = ControlPlane::start_options("gateway-refused", &options).await?;
    plane.install_crds().await?;
    let client = plane.client();
    ensure_namespace(&client, "kubermatic").await?;
    mla_e2e::apply_seed_manager_rbac(&client).await?;
    let _manager =
        support::spawn_seed_manager(&plane, ["--enable-user-cluster-mla=true"], "seed-controller-manager.log", WAIT)
            .await?;
    let clusters: Api<Cluster> = Api::all(client.clone());
    for name in ["c1", "c2"] {
        let mut object = cluster(name, true, false);
        object.spec.expose_strategy = Some(ExposeStrategy::NodePort);
        clusters.create(&PostParams::default(), &object).await?;
        ensure_namespace(&client, &format!("cluster-{name}")).await?;
        set_status(
            &clusters,
            name,
            serde_json::json!({"namespaceName": format!("cluster-{name}"),
                "address": {"externalName": format!("{name}.seed.example.com"), "ip": "192.0.2.10", "port": 6443}}),
        )
        .await?;
        if name == "c1" {
            // The first takes the one port.
            condition(&clusters, "c1", "GatewayNotAvailable").await?;
        }
    }
    let c2 = condition(&clusters, "c2", "ReconcileFailed").await?;
    let reported = c2.status.as_ref().and_then(|s| s.conditions.get("MLAGatewayReady")).cloned().unwrap_or_default();
    assert_eq!(reported.status, ConditionStatus::False);
    let message = reported.message.unwrap_or_default();
    assert!(message.contains("mla-gateway-ext") && message.contains("range is full"), "{message}");
    assert!(!message.contains("Status {"), "the message is kube's text without its Status dump: {message}");
    support::warning_event(&client, "default", "ReconcileFailed", "range is full", WAIT).await?;

    // The port is freed: c2 gets its external Service, and its condition says so.
    clusters
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"exposeStrategy": "Tunneling"}})),
        )
        .await?;
    // c2 tries again on its backoff (doubling from 1 s while it failed).
    eventually("c2's gateway made", Duration::from_secs(90), || {
        let clusters = clusters.clone();
        async move {
            let c2 = clusters.get("c2").await?;
            let reason = c2.status.and_then(|s| s.conditions.get("MLAGatewayReady").and_then(|c| c.reason.clone()));
            Ok((reason.as_deref() == Some("GatewayNotAvailable")).then_some(()))
        }
    })
    .await?;
    let external: Service = Api::namespaced(client.clone(), "cluster-c2").get("mla-gateway-ext").await?;
    let port = external.spec.and_then(|s| s.ports).and_then(|p| p.first().and_then(|p| p.node_port));
    assert_eq!(port, Some(30000));
    Ok(())
}

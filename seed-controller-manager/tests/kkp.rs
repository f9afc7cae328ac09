//! The seed manager on KKP's own CRDs, with objects shaped as KKP writes them: status
//! writes KKP's schema accepts, KKP's finalizers released after our cleanup, a gateway KKP
//! made taken over without a second CA, and KKP's pause and worker-name rules.
//!
//! KKP's CRDs are read from `$MLA_KKP_CRDS`, else from `../shared/reference/kkp-crds` next
//! to the workspace (where CI has them). Without either the tests fail and say how to point
//! them at a KKP installation's CRDs; they are never skipped.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, workspace_root};

const WAIT: Duration = Duration::from_secs(30);

/// Where KKP's CRDs are.
fn kkp_crds() -> PathBuf {
    let dir = std::env::var_os("MLA_KKP_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference/kkp-crds"));
    assert!(
        dir.join("kubermatic.k8c.io_clusters.yaml").is_file(),
        "KKP's CRDs are not at {}: set MLA_KKP_CRDS to a directory with KKP's CRD files \
         (kubermatic/kubermatic pkg/crd/k8c.io/, or `kubectl get crd -o yaml` of a KKP installation)",
        dir.display()
    );
    dir
}

/// Installs KKP's CRDs (every `kubermatic.k8c.io_*.yaml` of [`kkp_crds`]) and waits until
/// each is established.
async fn install_kkp_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(kkp_crds())? {
        let path = entry?.path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kubermatic.k8c.io_")) {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("kkp-test").force(), &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in names {
        eventually(&format!("CRD {name} established"), WAIT, || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

struct Seed {
    plane: ControlPlane,
    binary: Option<ManagedProcess>,
}

/// A control plane with KKP's CRDs and the binary's RBAC; the binary runs with `flags`.
async fn start(name: &str, flags: &[&str]) -> anyhow::Result<Seed> {
    let plane = ControlPlane::start(name).await?;
    install_kkp_crds(&plane.client()).await?;
    ensure_namespace(&plane.client(), "kubermatic").await?;
    mla_e2e::apply_seed_manager_rbac(&plane.client()).await?;
    let mut all = vec!["--enable-user-cluster-mla=true"];
    all.extend_from_slice(flags);
    let manager = support::spawn_seed_manager(&plane, all, &format!("{name}.log"), WAIT).await?;
    Ok(Seed { plane, binary: Some(manager.process) })
}

/// A Cluster as KKP's API creates it: every spec field KKP's CRD requires, and some it sets.
fn kkp_cluster(name: &str, project: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "labels": {"project-id": project}},
        "spec": {
            "version": "1.31.1", "humanReadableName": format!("{name} (kkp)"), "exposeStrategy": "Tunneling",
            "cloud": {"dc": "byo-1", "providerName": "bringyourown", "bringyourown": {}},
            "clusterNetwork": {"pods": {"cidrBlocks": ["172.25.0.0/16"]}, "services": {"cidrBlocks": ["10.240.16.0/20"]},
                               "dnsDomain": "cluster.local", "proxyMode": "ipvs", "konnectivityEnabled": true},
            "enableOperatingSystemManager": true,
            "mla": {"monitoringEnabled": true, "loggingEnabled": false},
        },
    })
}

async fn create_kkp_cluster(client: &kube::Client, name: &str, project: &str) -> anyhow::Result<()> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    create_raw::<Cluster>(client, None, kkp_cluster(name, project)).await?;
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
    let mut seed = start("kkp-status", &[]).await?;
    let client = seed.plane.client();
    create_kkp_cluster(&client, "k1", "p1").await?;
    let cluster = cluster_with(&client, "k1", "the gateway condition", |c| {
        c.condition("MLAGatewayReady").filter(|c| c.reason.as_deref() == Some("GatewayNotAvailable")).map(|_| c.clone())
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

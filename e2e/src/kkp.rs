//! Kubermatic (KKP) as the system meets it in a real installation: KKP's own CRDs, objects
//! shaped as KKP writes them, and a stand-in for the KKP controllers that run beside ours.
//!
//! KKP's CRDs are not part of this project. The suite reads them from the directory
//! named by `MLA_KKP_CRDS` (a KKP installation's `pkg/crd/k8c.io/`, or the CRDs exported
//! from a running KKP seed), else from the reference copy beside the checkout
//! (`../shared/reference/kkp-crds`, where CI has it).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::workspace_root;

/// Environment variable naming a directory with KKP's CRD YAML files.
pub const KKP_CRDS_ENV: &str = "MLA_KKP_CRDS";

/// Where KKP's CRDs are: `Ok(None)` when neither `MLA_KKP_CRDS` nor the reference copy is
/// there and this is not CI (the caller says so and skips); an error when the variable
/// names a missing directory, or in CI (`CI` set), which must never skip the KKP suite.
pub fn crds_dir() -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os(KKP_CRDS_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        anyhow::ensure!(dir.is_dir(), "{KKP_CRDS_ENV}={} is not a directory", dir.display());
        return Ok(Some(dir));
    }
    let reference = workspace_root().join("../shared/reference/kkp-crds");
    if reference.is_dir() {
        return Ok(Some(reference.canonicalize().context("resolving the KKP CRD directory")?));
    }
    let message = format!(
        "KKP's CRDs are not at {} and {KKP_CRDS_ENV} is not set; point {KKP_CRDS_ENV} at a directory \
         holding KKP's CRD YAML files (kubermatic/kubermatic pkg/crd/k8c.io, or \
         `kubectl get crd -o yaml` of a KKP seed, one file per CRD) to run the KKP suite",
        reference.display()
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        anyhow::bail!("{message}; CI must not skip it");
    }
    eprintln!("SKIPPED: {message}");
    Ok(None)
}

/// The CRD documents of a directory, by kind (files `*.yaml`, `kustomization.yaml` left
/// out), parsed as JSON values.
pub fn read_crds(dir: &std::path::Path) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut crds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let is_crd_file = path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && path.file_name().is_some_and(|f| f != "kustomization.yaml");
        if !is_crd_file {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(document).with_context(|| format!("parsing {}", path.display()))?;
            if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let kind = value
                .pointer("/spec/names/kind")
                .and_then(|k| k.as_str())
                .with_context(|| format!("{}: a CRD without spec.names.kind", path.display()))?
                .to_string();
            crds.insert(kind, value);
        }
    }
    Ok(crds)
}

/// A Cluster as KKP's API writes it: every spec field KKP's CRD requires (cloud,
/// clusterNetwork, version, ...) and some it sets that this system does not read.
pub fn cluster(name: &str, project: &str, monitoring: bool, logging: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "labels": {"project-id": project, "is-credential-preset": "false"},
            "annotations": {"kubermatic.io/initial-application-installations-request": "[]"},
        },
        "spec": {
            "humanReadableName": format!("{name} (kkp e2e)"),
            "version": "1.33.4",
            "exposeStrategy": "NodePort",
            "cloud": {"dc": "e2e-dc", "providerName": "bringyourown", "bringyourown": {}},
            "clusterNetwork": {
                "dnsDomain": "cluster.local",
                "pods": {"cidrBlocks": ["172.25.0.0/16"]},
                "services": {"cidrBlocks": ["10.240.16.0/20"]},
                "proxyMode": "ipvs",
                "ipFamily": "IPv4",
                "nodeLocalDNSCacheEnabled": true,
            },
            "containerRuntime": "containerd",
            "enableUserSSHKeyAgent": false,
            "kubernetesDashboard": {"enabled": false},
            "features": {"apiserverNetworkPolicy": true},
            "pause": false,
            "mla": {"monitoringEnabled": monitoring, "loggingEnabled": logging},
        },
    })
}

/// The status KKP's own controllers report for a running Cluster (written through the
/// status subresource): namespace, address, phase, versions, one of KKP's conditions with
/// every field KKP's CRD requires, and KKP's health fields.
pub fn cluster_status(name: &str, namespace: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "status": {
            "namespaceName": namespace,
            "phase": "Running",
            "userEmail": "alice@example.com",
            "address": {
                "externalName": format!("{name}.seed.e2e.localhost"),
                "ip": "127.0.0.1",
                "port": 6443,
                "url": format!("https://{name}.seed.e2e.localhost:6443"),
                "internalURL": format!("apiserver-external.{namespace}.svc.cluster.local."),
                "adminToken": "xxxxxx.xxxxxxxxxxxxxxxx",
            },
            "versions": {"apiserver": "1.33.4", "controlPlane": "1.33.4", "controllerManager": "1.33.4", "scheduler": "1.33.4"},
            "conditions": {
                "ClusterControllerReconcilingSuccess": {
                    "status": "True",
                    "kubermaticVersion": "v2.31.0",
                    "lastHeartbeatTime": "2026-11-30T10:00:00Z",
                    "lastTransitionTime": "2026-11-30T10:00:00Z",
                },
            },
            "extendedHealth": {
                "apiserver": "HealthStatusUp",
                "controller": "HealthStatusUp",
                "etcd": "HealthStatusUp",
                "machineController": "HealthStatusUp",
                "scheduler": "HealthStatusUp",
                "userClusterControllerManager": "HealthStatusUp",
            },
        },
    })
}

/// What a KKP master synchronizer does with the labels of the master object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Labels {
    /// Merged into the copy's (the copy keeps labels of its own).
    Merge,
    /// The copy's labels are the master's.
    Replace,
    /// Left alone.
    Ignore,
}

/// One of KKP's master synchronizers (`pkg/controller/master-controller-manager/`).
#[derive(Debug)]
struct Synchronizer {
    kind: &'static str,
    finalizer: &'static str,
    labels: Labels,
    status: bool,
    /// Projects whose status has no phase yet are skipped.
    needs_phase: bool,
}

/// KKP's (CE) synchronizers: `project-synchronizer` (labels merged, spec, status; only
/// Projects with a phase), `user-synchronizer` (spec and status, no labels) and
/// `user-project-binding-synchronizer` (labels replaced, spec).
const SYNCHRONIZERS: &[Synchronizer] = &[
    Synchronizer {
        kind: "Project",
        finalizer: "kubermatic.k8c.io/cleanup-seed-projects",
        labels: Labels::Merge,
        status: true,
        needs_phase: true,
    },
    Synchronizer {
        kind: "User",
        finalizer: "kubermatic.k8c.io/cleanup-seed-users",
        labels: Labels::Ignore,
        status: true,
        needs_phase: false,
    },
    Synchronizer {
        kind: "UserProjectBinding",
        finalizer: "kubermatic.k8c.io/cleanup-seed-user-project-bindings",
        labels: Labels::Replace,
        status: false,
        needs_phase: false,
    },
];

fn resource(kind: &str) -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("kubermatic.k8c.io", "v1", kind))
}

/// A stand-in for the KKP controllers that run beside this system in a KKP installation
/// whose own user-cluster MLA is off (KKP's `UserClusterMLA` feature disabled), each
/// behaviour as KKP's source has it (kubermatic/kubermatic at 2974df5):
/// - the master synchronizers (`pkg/controller/master-controller-manager/*-synchronizer`)
///   put `kubermatic.k8c.io/cleanup-seed-<kind>` on the master object, create or update the
///   seed copy's labels, spec and status to equal the master's, and delete the copy
///   before releasing the finalizer;
/// - the user-cluster-controller-manager with its MLA flags off deletes namespace
///   `mla-system` in the user cluster and clears `extendedHealth.monitoring`/`logging` of
///   its Cluster;
/// - the master's seed controllers own the Seed's `KubeconfigValid` condition.
///
/// Like KKP's controllers, it writes only what differs, and counts its writes.
#[derive(Debug)]
pub struct StandIn {
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts the stand-in's loop (every `period`) against the given clusters.
    pub fn start(
        master: kube::Client,
        seed: kube::Client,
        user: kube::Client,
        seed_name: String,
        seed_namespace: String,
        period: std::time::Duration,
    ) -> Self {
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = writes.clone();
        let task = tokio::spawn(async move {
            loop {
                let clients = (&master, &seed, &user);
                if let Err(error) = pass(clients, &seed_name, &seed_namespace, &counter).await {
                    eprintln!("[kkp-stand-in] {error:#}");
                }
                tokio::time::sleep(period).await;
            }
        });
        Self { writes, task }
    }

    /// Writes the stand-in has made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn pass(
    (master, seed, user): (&kube::Client, &kube::Client, &kube::Client),
    seed_name: &str,
    seed_namespace: &str,
    writes: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    for synchronizer in SYNCHRONIZERS {
        synchronize(master, seed, synchronizer, writes)
            .await
            .with_context(|| format!("synchronizing {}s", synchronizer.kind))?;
    }
    clear_mla_of_user_cluster_manager(seed, user, writes).await?;
    own_seed_condition(master, seed_name, seed_namespace, writes).await
}

fn count(writes: &std::sync::atomic::AtomicU64) {
    writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

async fn synchronize(
    master: &kube::Client,
    seed: &kube::Client,
    synchronizer: &Synchronizer,
    writes: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
    let Synchronizer { kind, finalizer, labels: label_policy, status: copies_status, needs_phase } = synchronizer;
    let (finalizer, label_policy) = (*finalizer, *label_policy);
    let resource = resource(kind);
    let masters: Api<DynamicObject> = Api::all_with(master.clone(), &resource);
    let seeds: Api<DynamicObject> = Api::all_with(seed.clone(), &resource);
    for object in masters.list(&ListParams::default()).await? {
        let name = object.metadata.name.clone().unwrap_or_default();
        let finalizers = object.metadata.finalizers.clone().unwrap_or_default();
        if object.metadata.deletion_timestamp.is_some() {
            if !finalizers.iter().any(|f| f == finalizer) {
                continue;
            }
            if seeds.get_opt(&name).await?.is_some_and(|c| c.metadata.deletion_timestamp.is_none()) {
                seeds.delete(&name, &DeleteParams::default()).await?;
                count(writes);
            }
            let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            let patch = serde_json::json!({"metadata": {"finalizers": remaining, "resourceVersion": object.metadata.resource_version}});
            masters.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            count(writes);
            continue;
        }
        if !finalizers.iter().any(|f| f == finalizer) {
            let mut all = finalizers.clone();
            all.push(finalizer.to_string());
            let patch = serde_json::json!({"metadata": {"finalizers": all, "resourceVersion": object.metadata.resource_version}});
            masters.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            count(writes);
        }
        if *needs_phase && object.data.pointer("/status/phase").and_then(|p| p.as_str()).unwrap_or_default().is_empty()
        {
            continue;
        }
        let labels = object.metadata.labels.clone().unwrap_or_default();
        let spec = object.data.get("spec").cloned().unwrap_or(serde_json::Value::Null);
        let status = object.data.get("status").cloned().filter(|_| *copies_status);
        let copy = match seeds.get_opt(&name).await? {
            Some(copy) => copy,
            None => {
                let mut copy = DynamicObject::new(&name, &resource).data(serde_json::json!({"spec": spec.clone()}));
                if label_policy != Labels::Ignore {
                    copy.metadata.labels = Some(labels.clone());
                }
                count(writes);
                match seeds.create(&PostParams::default(), &copy).await {
                    Ok(created) => created,
                    // Our own master-controller-manager created it in the meantime.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if copy.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let copy_labels = copy.metadata.labels.clone().unwrap_or_default();
        let wanted_labels = match label_policy {
            Labels::Merge => {
                let mut merged = copy_labels.clone();
                merged.extend(labels.clone());
                merged
            }
            Labels::Replace => labels.clone(),
            Labels::Ignore => copy_labels.clone(),
        };
        if wanted_labels != copy_labels || copy.data.get("spec").cloned().unwrap_or(serde_json::Value::Null) != spec {
            let mut updated = copy.clone();
            updated.metadata.labels = Some(wanted_labels);
            updated.data["spec"] = spec.clone();
            seeds.replace(&name, &PostParams::default(), &updated).await?;
            count(writes);
        }
        if let Some(status) = status
            && copy.data.get("status") != Some(&status)
        {
            let patch = serde_json::json!({"status": status});
            seeds.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            count(writes);
        }
    }
    Ok(())
}

async fn clear_mla_of_user_cluster_manager(
    seed: &kube::Client,
    user: &kube::Client,
    writes: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
    let namespaces: Api<Namespace> = Api::all(user.clone());
    if namespaces.get_opt("mla-system").await?.is_some_and(|n| n.metadata.deletion_timestamp.is_none()) {
        namespaces.delete("mla-system", &DeleteParams::default()).await?;
        count(writes);
    }
    let clusters: Api<DynamicObject> = Api::all_with(seed.clone(), &resource("Cluster"));
    for cluster in clusters.list(&ListParams::default()).await? {
        let health = cluster.data.pointer("/status/extendedHealth");
        let set = |field: &str| health.and_then(|h| h.get(field)).is_some_and(|v| !v.is_null());
        if set("monitoring") || set("logging") {
            let patch = serde_json::json!({"status": {"extendedHealth": {"monitoring": null, "logging": null}}});
            let name = cluster.metadata.name.clone().unwrap_or_default();
            clusters.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            count(writes);
        }
    }
    Ok(())
}

/// The condition KKP's master writes on every Seed (`KubeconfigValid`), with the fields
/// KKP's CRD requires (a Seed condition has no `kubermaticVersion`, unlike a Cluster's).
pub fn kubeconfig_valid() -> serde_json::Value {
    serde_json::json!({
        "status": "True",
        "lastHeartbeatTime": "2026-11-30T10:00:00Z",
        "lastTransitionTime": "2026-11-30T10:00:00Z",
        "reason": "KubeconfigValid",
    })
}

async fn own_seed_condition(
    master: &kube::Client,
    seed_name: &str,
    namespace: &str,
    writes: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let seeds: Api<DynamicObject> = Api::namespaced_with(master.clone(), namespace, &resource("Seed"));
    let Some(seed) = seeds.get_opt(seed_name).await? else { return Ok(()) };
    let want = kubeconfig_valid();
    if seed.data.pointer("/status/conditions/KubeconfigValid") != Some(&want) {
        let patch = serde_json::json!({"status": {"phase": "Healthy", "conditions": {"KubeconfigValid": want}}});
        seeds.patch_status(seed_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        count(writes);
    }
    Ok(())
}

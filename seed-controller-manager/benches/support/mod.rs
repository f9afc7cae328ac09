//! A seed for the seed-controller-manager benchmarks (`gateway`, `seed_scale`): a real API
//! server with N MLA Clusters, every controller of the binary switched on and given what
//! it needs to converge (real Cortex for the alerting controller and its runtime-config
//! ConfigMap, the Grafana API test server with Projects, an OIDC client secret for the
//! IAP, a kubeconfig Secret per cluster for the user-cluster controller), and the binary
//! under the RBAC of its manifests. Also: when every controller has converged (all five
//! conditions of every Cluster settled), and the write requests the API server served.

#![allow(dead_code)] // each benchmark uses part of it
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mla_common::api::*;
use mla_e2e::bench::{Met, report};
use mla_e2e::cortex::Cortex;
use mla_e2e::grafana::GrafanaServer;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, Identity, ManagedProcess, free_port};

pub const BINARY: &str = env!("CARGO_BIN_EXE_seed-controller-manager");

/// Every condition the binary writes on an MLA Cluster, with the reasons it settles on in
/// this seed. There is no kube-controller-manager, so no pod ever runs: the gateway and
/// the IAP settle on "not available" (their Deployments exist, without replicas).
pub const SETTLED: [(&str, &[&str]); 5] = [
    ("MLAGatewayReady", &["GatewayNotAvailable"]),
    ("MLAAlertingReady", &["Synced"]),
    ("MLAIAPReady", &["IAPNotAvailable"]),
    ("MLAUserClusterControllerReady", &["Deployed"]),
    ("MLAGrafanaReady", &["DatasourcesReady"]),
];

/// The seed of a benchmark.
pub struct Seed {
    pub plane: ControlPlane,
    pub client: kube::Client,
    pub cortex: Cortex,
    pub grafana: GrafanaServer,
    pub count: usize,
    pub dir: PathBuf,
    /// The port of the binary's admin server (`/metrics`).
    pub admin_port: u16,
}

/// Runs `count` futures made by `make`, 32 at a time.
pub async fn create_all<F, Fut>(count: usize, make: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(0..count)
        .map(make)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

impl Seed {
    /// A seed named `name` with `count` MLA Clusters (monitoring and logging on, each with
    /// namespace, address, project label and kubeconfig Secret) in `count / 5` Projects.
    pub async fn prepare(name: &str, count: usize) -> anyhow::Result<Self> {
        // Every bench Cluster uses the NodePort strategy, one NodePort Service per gateway:
        // Kubernetes' default range (2,768 ports) is full before 2,800 Clusters (and the
        // API server answers 500 "range is full" to each further gateway).
        let options = mla_e2e::control_plane::Options { node_ports: Some("10000-32767".into()), ..Default::default() };
        let plane = ControlPlane::start_options(name, &options).await?;
        plane.install_crds().await?;
        let client = plane.client();
        ensure_namespace(&client, "kubermatic").await?;
        // Every grant of the binary (rbac*.yaml; the Grafana Role lives in the MLA namespace).
        mla_e2e::apply_seed_manager_rbac(&client).await?;
        let dir = plane.dir().to_path_buf();
        let cortex = Cortex::start(&dir.join("cortex")).await?;
        let mla_secrets: Api<Secret> = Api::namespaced(client.clone(), "mla");
        let runtime_config = ConfigMap {
            metadata: ObjectMeta { name: Some("cortex-runtime-config".into()), ..Default::default() },
            data: Some(BTreeMap::from([("runtime_config.yaml".to_string(), "overrides: {}\n".to_string())])),
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(client.clone(), "mla").create(&PostParams::default(), &runtime_config).await?;
        let grafana = GrafanaServer::start("admin", "bench-password").await?;
        mla_secrets
            .create(
                &PostParams::default(),
                &secret("grafana", &[("admin-user", "admin"), ("admin-password", "bench-password")]),
            )
            .await?;
        mla_secrets
            .create(&PostParams::default(), &secret("mla-iap-oidc", &[("client-secret", "bench-secret")]))
            .await?;

        let started = Instant::now();
        let projects = count.div_ceil(5).max(1);
        let project_api: Api<Project> = Api::all(client.clone());
        create_all(projects, |i| {
            let api = project_api.clone();
            async move {
                let project = Project::new(&format!("p{i}"), ProjectSpec { name: format!("Project {i}") });
                api.create(&PostParams::default(), &project).await?;
                Ok(())
            }
        })
        .await?;
        let clusters: Api<Cluster> = Api::all(client.clone());
        create_all(count, |i| {
            let (client, clusters) = (client.clone(), clusters.clone());
            async move {
                let name = format!("bench{i}");
                let namespace = format!("cluster-{name}");
                ensure_namespace(&client, &namespace).await?;
                Api::<Secret>::namespaced(client.clone(), &namespace)
                    .create(&PostParams::default(), &secret("admin-kubeconfig", &[("kubeconfig", "apiVersion: v1\nkind: Config\n")]))
                    .await?;
                let spec = ClusterSpec {
                    human_readable_name: Some(format!("cluster {i}")),
                    expose_strategy: Some(ExposeStrategy::NodePort),
                    mla: Some(MLASettings { monitoring_enabled: true, logging_enabled: true, ..Default::default() }),
                };
                let mut cluster = Cluster::new(&name, spec);
                cluster.metadata.labels = Some([(PROJECT_ID_LABEL.to_string(), format!("p{}", i % projects))].into());
                clusters.create(&PostParams::default(), &cluster).await?;
                let status = serde_json::json!({"status": {"namespaceName": namespace,
                    "address": {"externalName": format!("{name}.seed.example.com"), "ip": "192.0.2.1", "port": 30000}}});
                clusters.patch_status(&name, &Default::default(), &Patch::Merge(&status)).await?;
                anyhow::Ok(())
            }
        })
        .await?;
        println!(
            "created {projects} Projects and {count} MLA Clusters (namespace, kubeconfig Secret, address) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(Self { plane, client, cortex, grafana, count, dir, admin_port: free_port()? })
    }

    /// Starts the binary with every controller on, as its ServiceAccount.
    pub async fn start_manager(&self, resync: u64) -> anyhow::Result<ManagedProcess> {
        let identity =
            Identity::ServiceAccount { namespace: "kubermatic".into(), name: "seed-controller-manager".into() };
        let kubeconfig = self.plane.kubeconfig(&identity).await?;
        let cortex = self.cortex.url();
        // MLA_BENCH_WRAPPER runs the binary under a profiler (see mla_e2e::bench::profiled).
        let mut command = mla_e2e::bench::profiled(BINARY);
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--admin-addr=127.0.0.1:{}", self.admin_port))
            .args(["--leader-election-namespace=kubermatic", "--enable-user-cluster-mla=true", "--log-level=warn"])
            .arg(format!("--resync-period={resync}s"))
            .arg(format!("--grafana-url={}", self.grafana.url()))
            .arg(format!("--cortex-alertmanager-url={cortex}"))
            .arg(format!("--cortex-ruler-url={cortex}"))
            .arg(format!("--loki-ruler-url={cortex}"))
            .args(["--iap-oidc-issuer-url=https://dex.example.com/dex", "--iap-domain=iap.example.com"]);
        ManagedProcess::spawn("seed-controller-manager", command, &self.dir.join("seed.log"))
    }

    /// Clusters whose condition `condition` has one of `reasons`, and those with every
    /// condition of [`SETTLED`] settled.
    pub async fn count_settled(&self, condition: &str, reasons: &[&str]) -> anyhow::Result<(usize, usize)> {
        let list = Api::<Cluster>::all(self.client.clone()).list(&Default::default()).await?;
        let reason = |c: &Cluster, condition: &str| {
            c.status.as_ref().and_then(|s| s.conditions.get(condition)).and_then(|c| c.reason.clone())
        };
        let one =
            list.items.iter().filter(|c| reason(c, condition).is_some_and(|r| reasons.contains(&r.as_str()))).count();
        let all = list
            .items
            .iter()
            .filter(|c| {
                SETTLED
                    .iter()
                    .all(|(condition, reasons)| reason(c, condition).is_some_and(|r| reasons.contains(&r.as_str())))
            })
            .count();
        Ok((one, all))
    }

    /// How many Clusters hold each `condition=reason`, for a report of what has not settled.
    pub async fn reasons(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let list = Api::<Cluster>::all(self.client.clone()).list(&Default::default()).await?;
        let mut counts = BTreeMap::new();
        for cluster in &list.items {
            for (condition, _) in SETTLED {
                let reason = cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.get(condition))
                    .and_then(|c| c.reason.clone())
                    .unwrap_or_else(|| "-".into());
                *counts.entry(format!("{condition}={reason}")).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Waits until every Cluster's `condition` has one of `reasons` (the time it took),
    /// failing after `timeout`.
    pub async fn wait_for(&self, condition: &str, reasons: &[&str], timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_for_since(Instant::now(), condition, reasons, timeout).await
    }

    /// [`Seed::wait_for`], the time counted from `since`.
    pub async fn wait_for_since(
        &self,
        since: Instant,
        condition: &str,
        reasons: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let started = since;
        loop {
            let (done, _) = self.count_settled(condition, reasons).await?;
            if done == self.count {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "only {done} of {} Clusters have {condition} {reasons:?}: {:?}",
                    self.count,
                    self.reasons().await?
                );
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    /// How often to look at the Clusters: a list of thousands is itself load on the API
    /// server the binary shares.
    fn poll(&self) -> Duration {
        Duration::from_millis((self.count as u64).clamp(500, 5000))
    }

    /// Waits until every condition of every Cluster has settled ([`SETTLED`]) and the API
    /// server has served no write for `quiet`; the time from `since` to the last write.
    pub async fn wait_converged(&self, since: Instant, quiet: Duration, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let writes = writes(&self.client).await?.values().sum::<u64>();
            if writes != last.0 {
                last = (writes, Instant::now());
            }
            let (_, settled) = self.count_settled("", &[]).await?;
            if settled == self.count && last.1.elapsed() >= quiet {
                return Ok(last.1.duration_since(since));
            }
            if started.elapsed() > timeout {
                anyhow::bail!("only {settled} of {} Clusters settled: {:?}", self.count, self.reasons().await?);
            }
            tokio::time::sleep(self.poll()).await;
        }
    }
}

/// The binary's own count of its write requests (`mla_api_writes_total`), by field
/// manager, kind and verb, from its `/metrics`.
pub async fn binary_writes(admin_port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics")).await?.error_for_status()?.text().await?;
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("mla_api_writes_total{")) {
        if let Some((labels, value)) = line.rsplit_once(' ') {
            let labels = labels.trim_start_matches("mla_api_writes_total{").trim_end_matches('}').replace('"', "");
            counts.insert(labels, value.parse::<f64>().unwrap_or(0.0) as u64);
        }
    }
    Ok(counts)
}

/// Write requests (POST, PUT, PATCH, DELETE, APPLY) the API server has served, by
/// `group/resource/subresource verb`, from its `apiserver_request_total`. Left out: what
/// the API server writes itself (Leases, `coordination.k8s.io`, also for leader election;
/// IPAddresses and their Events, which its ClusterIP repair loop deletes and reports while
/// it catches up with thousands of Services) and Events, which [`our_events`] counts by
/// reporter.
pub async fn writes(client: &kube::Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let theirs = |group: &str, resource: &str| {
        group == "coordination.k8s.io" || resource == "ipaddresses" || resource == "events"
    };
    let mut counts = mla_e2e::write_requests_where(client, |group, resource| !theirs(group, resource)).await?;
    counts.insert("events.k8s.io/events (by seed-controller-manager)".into(), our_events(client).await?);
    Ok(counts)
}

/// Events the binary reported (each a create, each repetition a series update).
pub async fn our_events(client: &kube::Client) -> anyhow::Result<u64> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let list = events.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref().is_some_and(|r| r.starts_with("seed-controller-manager")))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as u64))
        .sum())
}

/// The writes served during `period`, by kind (only the kinds written).
pub async fn writes_during(client: &kube::Client, period: Duration) -> anyhow::Result<BTreeMap<String, u64>> {
    let before = writes(client).await?;
    tokio::time::sleep(period).await;
    let after = writes(client).await?;
    Ok(after
        .into_iter()
        .map(|(k, v)| {
            let old = before.get(&k).copied().unwrap_or(0);
            (k, v - old)
        })
        .filter(|(_, v)| *v > 0)
        .collect())
}

/// Counts the writes during `period` ([`writes_during`]) and reports them as `figure`
/// with the goal 0, printing them by kind when there are any.
pub async fn report_writes_during(client: &kube::Client, period: Duration, figure: &str) -> anyhow::Result<()> {
    let writes = writes_during(client, period).await?;
    let total: u64 = writes.values().sum();
    report(figure, total, "0", Met::from(total == 0));
    if total > 0 {
        println!("writes by kind: {writes:?}");
    }
    Ok(())
}

/// The limit a seed's cold start is measured against, in the same run: how fast this API
/// server takes the writes one Cluster needs at least, sent as fast as it serves them
/// with no controller in between (no reads, no reconcile, no Cortex or Grafana).
pub struct RawLimit {
    /// Clusters' worth of writes per second.
    pub clusters_per_second: f64,
    /// Writes per Cluster: every object the binary made for it (copied), one status
    /// apply per condition the binary writes, and the Events it reported per Cluster.
    pub writes_per_cluster: f64,
}

impl Seed {
    /// Copies what the binary made for the first `sample` Clusters (every object in the
    /// cluster namespace but the kubeconfig Secret and what Kubernetes makes itself, and
    /// the cluster-scoped RBAC named after the Cluster) into fresh namespaces, then
    /// server-side applies the copies, 32 Clusters at a time, each Cluster's writes one
    /// after the other as a reconcile sends them, with 5 status applies (a condition each,
    /// of names no controller reads) and `events_per_cluster` Events. Run it with the
    /// binary stopped.
    pub async fn raw_limit(&self, sample: usize, events_per_cluster: usize) -> anyhow::Result<RawLimit> {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let gvk = |group: &str, version: &str, kind: &str| {
            ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
        };
        let namespaced = [
            gvk("", "v1", "Secret"),
            gvk("", "v1", "ConfigMap"),
            gvk("", "v1", "Service"),
            gvk("", "v1", "ServiceAccount"),
            gvk("apps", "v1", "Deployment"),
            gvk("networking.k8s.io", "v1", "Ingress"),
            gvk("rbac.authorization.k8s.io", "v1", "Role"),
            gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            gvk("kubermatic.k8c.io", "v1", "Alertmanager"),
        ];
        let cluster_scoped = [
            gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        ];
        let kubernetes_own = ["kube-root-ca.crt", "default", "admin-kubeconfig"];
        // The copies, per Cluster: (resource, object) in the order they were listed.
        let mut copies: Vec<Vec<(ApiResource, DynamicObject)>> = Vec::new();
        for i in 0..sample {
            let (source, target) = (format!("cluster-bench{i}"), format!("raw{i}"));
            ensure_namespace(&self.client, &target).await?;
            let mut objects = Vec::new();
            for resource in &namespaced {
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &source, resource);
                for object in api.list(&Default::default()).await?.items {
                    if !kubernetes_own.contains(&object.metadata.name.as_deref().unwrap_or_default()) {
                        objects.push((resource.clone(), copy_of(object, resource, Some(&target))));
                    }
                }
            }
            for resource in &cluster_scoped {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
                if let Some(object) = api.get_opt(&format!("mla:user-cluster-controller-manager:bench{i}")).await? {
                    let mut copy = copy_of(object, resource, None);
                    copy.metadata.name = Some(format!("raw:{i}"));
                    objects.push((resource.clone(), copy));
                }
            }
            copies.push(objects);
        }
        let objects: usize = copies.iter().map(Vec::len).sum();
        let params = PatchParams::apply("raw-limit").force();
        let started = Instant::now();
        futures::stream::iter(copies.into_iter().enumerate())
            .map(|(i, objects)| {
                let (client, params) = (self.client.clone(), params.clone());
                async move {
                    for (resource, object) in objects {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        let api: Api<DynamicObject> = match &object.metadata.namespace {
                            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                            None => Api::all_with(client.clone(), &resource),
                        };
                        api.patch(&name, &params, &Patch::Apply(&object)).await?;
                    }
                    let clusters: Api<Cluster> = Api::all(client.clone());
                    for k in 0..SETTLED.len() {
                        let status = serde_json::json!({
                            "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
                            "status": {"conditions": {format!("RawLimit{k}"): {
                                "status": "True", "kubermaticVersion": "raw", "reason": "Raw", "message": "raw limit",
                                "lastHeartbeatTime": "2026-01-01T00:00:00Z"}}}
                        });
                        let manager = PatchParams::apply(&format!("raw-limit-{k}")).force();
                        clusters.patch_status(&format!("bench{i}"), &manager, &Patch::Apply(&status)).await?;
                    }
                    let events: Api<k8s_openapi::api::events::v1::Event> =
                        Api::namespaced(client.clone(), &format!("raw{i}"));
                    for e in 0..events_per_cluster {
                        let event = k8s_openapi::api::events::v1::Event {
                            metadata: ObjectMeta { name: Some(format!("raw-{e}")), ..Default::default() },
                            regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
                                kind: Some("ConfigMap".into()),
                                namespace: Some(format!("raw{i}")),
                                name: Some("raw".into()),
                                ..Default::default()
                            }),
                            event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                                k8s_openapi::jiff::Timestamp::now(),
                            )),
                            action: Some("Raw".into()),
                            reason: Some("Raw".into()),
                            note: Some("raw limit".into()),
                            reporting_controller: Some("raw-limit".into()),
                            reporting_instance: Some("raw-limit".into()),
                            type_: Some("Normal".into()),
                            ..Default::default()
                        };
                        events.create(&PostParams::default(), &event).await?;
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()?;
        let elapsed = started.elapsed().as_secs_f64();
        let writes = objects + sample * (SETTLED.len() + events_per_cluster);
        Ok(RawLimit { clusters_per_second: sample as f64 / elapsed, writes_per_cluster: writes as f64 / sample as f64 })
    }
}

/// `object` as a new object to apply in `namespace`: its kind set, what the API server
/// filled in (identity, versions, managedFields, status, allocated addresses) removed.
fn copy_of(
    object: kube::api::DynamicObject,
    resource: &kube::api::ApiResource,
    namespace: Option<&str>,
) -> kube::api::DynamicObject {
    let mut copy = kube::api::DynamicObject::new(object.metadata.name.as_deref().unwrap_or_default(), resource);
    copy.metadata.namespace = namespace.map(str::to_string);
    copy.metadata.labels = object.metadata.labels;
    copy.metadata.annotations = object.metadata.annotations;
    copy.metadata.owner_references = object.metadata.owner_references;
    let mut data = object.data;
    if let Some(map) = data.as_object_mut() {
        map.remove("status");
    }
    if resource.kind == "Service"
        && let Some(spec) = data.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        if let Some(ports) = spec.get_mut("ports").and_then(|p| p.as_array_mut()) {
            for port in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
                port.remove("nodePort");
            }
        }
    }
    copy.data = data;
    copy
}

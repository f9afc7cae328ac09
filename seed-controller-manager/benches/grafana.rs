//! Benchmark of the Grafana controller (a program that prints figures; `cargo bench -p
//! seed-controller-manager --bench grafana -- [projects=200] [clusters=1000] [users=2000]
//! [resync-seconds=30]`): a seed with that many Projects, MLA Clusters and Users (each
//! bound to one project, every tenth to a second one, five admins), two dashboards, the
//! binary under the RBAC of its manifests and the Grafana API test server:
//!
//! - time from start to convergence (every Cluster `MLAGrafanaReady=True` and no mutating
//!   Grafana call for 5 s), and the Grafana calls it took, by method and group;
//! - mutating Grafana calls, Grafana reads and Kubernetes writes during two no-change
//!   resync periods (target: 0 mutations, 0 writes);
//! - peak RSS of the binary.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PostParams};
use mla_common::api::*;
use mla_e2e::grafana::GrafanaServer;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, Identity, ManagedProcess, apply_manifest, free_port, workspace_root};

const BINARY: &str = env!("CARGO_BIN_EXE_seed-controller-manager");

/// Runs `count` futures made by `make`, 32 at a time.
async fn create_all<F, Fut>(count: usize, make: F) -> anyhow::Result<()>
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

/// `mla_external_requests_total{api="grafana"}` by `method endpoint`.
async fn grafana_calls(metrics_url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = reqwest::get(metrics_url).await?.text().await?;
    let mut calls = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("mla_external_requests_total{") && l.contains("api=\"grafana\""))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            labels[start..].split('"').next().map(str::to_string)
        };
        let key = format!("{} {}", label("method").unwrap_or_default(), label("endpoint").unwrap_or_default());
        *calls.entry(key).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    Ok(calls)
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: usize| args.get(i).map(|v| v.parse()).transpose().map(|v| v.unwrap_or(default));
    let (project_count, cluster_count, user_count, resync) = (arg(0, 200)?, arg(1, 1000)?, arg(2, 2000)?, arg(3, 30)?);

    let plane = ControlPlane::start("bench-grafana").await?;
    plane.install_crds().await?;
    let client = plane.client();
    for namespace in ["kubermatic", "mla"] {
        ensure_namespace(&client, namespace).await?;
    }
    let manifests = workspace_root().join("manifests/seed-controller-manager");
    apply_manifest(&client, &manifests.join("rbac.yaml")).await?;
    apply_manifest(&client, &manifests.join("rbac-grafana.yaml")).await?;
    let grafana = GrafanaServer::start("admin", "bench-password").await?;
    let secret = Secret {
        metadata: ObjectMeta { name: Some("grafana".into()), ..Default::default() },
        string_data: Some(
            [("admin-user".to_string(), "admin".to_string()), ("admin-password".to_string(), "bench-password".into())]
                .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "mla").create(&PostParams::default(), &secret).await?;
    let dashboards = ConfigMap {
        metadata: ObjectMeta { name: Some("grafana-dashboards".into()), ..Default::default() },
        data: Some(BTreeMap::from([
            ("a.json".to_string(), r#"{"uid": "bench-a", "title": "A", "panels": [{"id": 1}]}"#.to_string()),
            ("b.json".to_string(), r#"{"uid": "bench-b", "title": "B"}"#.to_string()),
        ])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), "mla").create(&PostParams::default(), &dashboards).await?;

    let started = Instant::now();
    let projects: Api<Project> = Api::all(client.clone());
    create_all(project_count, |i| {
        let projects = projects.clone();
        async move {
            projects
                .create(
                    &PostParams::default(),
                    &Project::new(&format!("p{i}"), ProjectSpec { name: format!("Project {i}") }),
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    let users: Api<User> = Api::all(client.clone());
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    create_all(user_count, |i| {
        let (users, bindings) = (users.clone(), bindings.clone());
        async move {
            let email = format!("user{i}@example.com");
            let spec = UserSpec { email: email.clone(), name: format!("User {i}"), admin: i < 5 };
            users.create(&PostParams::default(), &User::new(&format!("u{i}"), spec)).await?;
            let role = ["owners", "editors", "viewers"][i % 3];
            let mut projects = vec![i % project_count];
            if i % 10 == 0 {
                projects.push((i + 1) % project_count);
            }
            for p in projects {
                let spec = UserProjectBindingSpec {
                    user_email: email.clone(),
                    project_id: format!("p{p}"),
                    group: format!("{role}-p{p}"),
                };
                bindings.create(&PostParams::default(), &UserProjectBinding::new(&format!("u{i}-p{p}"), spec)).await?;
            }
            Ok(())
        }
    })
    .await?;
    let clusters: Api<Cluster> = Api::all(client.clone());
    create_all(cluster_count, |i| {
        let clusters = clusters.clone();
        async move {
            let name = format!("c{i}");
            let spec = ClusterSpec {
                human_readable_name: Some(format!("cluster {i}")),
                expose_strategy: Some(ExposeStrategy::Tunneling),
                mla: Some(MLASettings { monitoring_enabled: true, logging_enabled: i % 2 == 0, ..Default::default() }),
            };
            let mut cluster = Cluster::new(&name, spec);
            cluster.metadata.labels = Some([(PROJECT_ID_LABEL.to_string(), format!("p{}", i % project_count))].into());
            clusters.create(&PostParams::default(), &cluster).await?;
            // No address: the gateway controller only waits, so the figures are Grafana's.
            let status = serde_json::json!({"status": {"namespaceName": format!("cluster-{name}")}});
            clusters.patch_status(&name, &Default::default(), &Patch::Merge(&status)).await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "created {project_count} Projects, {user_count} Users with their bindings, {cluster_count} Clusters in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let identity = Identity::ServiceAccount { namespace: "kubermatic".into(), name: "seed-controller-manager".into() };
    let kubeconfig = plane.kubeconfig(&identity).await?;
    let port = free_port()?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .arg(format!("--grafana-url={}", grafana.url()))
        .args(["--leader-election-namespace=kubermatic", "--enable-user-cluster-mla=true", "--log-level=warn"])
        .arg(format!("--resync-period={resync}s"));
    let process = ManagedProcess::spawn("seed-controller-manager", command, &plane.dir().join("seed.log"))?;
    let started = Instant::now();
    let mut last_mutations = (u64::MAX, Instant::now());
    let converged = loop {
        let list = clusters.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().and_then(|s| s.conditions.get("MLAGrafanaReady")).and_then(|c| c.reason.as_deref())
                    == Some("DatasourcesReady")
            })
            .count();
        let mutations = grafana.mutations().total();
        if mutations != last_mutations.0 {
            last_mutations = (mutations, Instant::now());
        }
        if ready == cluster_count && last_mutations.1.elapsed() >= Duration::from_secs(5) {
            break last_mutations.1.duration_since(started);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "only {ready} of {cluster_count} ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cold = grafana_calls(&metrics_url).await?;
    println!(
        "converged from cold start in {:.1} s (last mutating Grafana call); mutating Grafana calls by group: {:?}",
        converged.as_secs_f64(),
        grafana.mutations().by_group
    );
    println!("Grafana calls until then (method endpoint: count): {cold:?}");

    let groups = ["", "apps", "kubermatic.k8c.io", "events.k8s.io"];
    grafana.reset_mutations();
    let writes_before: u64 = mla_e2e::write_requests_by_resource(&client, &groups).await?.values().sum();
    let calls_before = grafana_calls(&metrics_url).await?;
    tokio::time::sleep(Duration::from_secs(2 * resync as u64 + 5)).await;
    let writes_after: u64 = mla_e2e::write_requests_by_resource(&client, &groups).await?.values().sum();
    let reads = diff(&grafana_calls(&metrics_url).await?, &calls_before);
    println!(
        "during two {resync} s no-change resync periods: mutating Grafana calls {}, Kubernetes writes {}, Grafana calls {:?}",
        grafana.mutations().total(),
        writes_after - writes_before,
        reads
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.id()))?;
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
    println!("peak RSS of seed-controller-manager: {peak}");
    Ok(())
}

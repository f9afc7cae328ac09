//! Benchmark of the Grafana controller (a program that prints figures; `cargo bench -p
//! seed-controller-manager --bench grafana -- [clusters=5000] [projects=1000]
//! [users=10000] [resync-seconds=30] [patience-seconds=900]`): a seed with that many MLA Clusters (half with
//! logging, each with its namespace), Projects and Users (each bound to one project, every
//! tenth to a second one, five admins), two dashboards; the binary under the RBAC of its
//! manifests, the Grafana API test server, real Cortex and the Loki ruler stand-in (the
//! alerting controllers of the binary always run: with a backend they converge too).
//!
//! Figures, each through `mla_e2e::bench::report`:
//! - start of the binary to Grafana converged (every Cluster `DatasourcesReady`, last
//!   mutating Grafana call), and the Grafana calls it took;
//! - Grafana reads of the first no-change pass after that;
//! - start to every controller of the binary converged (every Cluster's conditions of all
//!   four Cluster controllers settled, no Kubernetes write or mutating Grafana call for
//!   10 s), waited for at most patience-seconds after the start (else the figures below
//!   are not measured: writes of a binary still converging say nothing of its steady
//!   state);
//! - during two no-change resync periods after that: mutating Grafana calls, Kubernetes
//!   writes (both 0) and Grafana reads per pass;
//! - Grafana unreachable (the test server answers 503): after the one condition change
//!   that reports it, Kubernetes writes during two resync periods (0);
//! - peak RSS of the binary; CPU seconds of the binary, of this process (the Grafana test
//!   server, the load and the polling) and of Cortex.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PostParams};
use mla_common::api::*;
use mla_e2e::bench::{Met, report};
use mla_e2e::cortex::{Cortex, CortexServer};
use mla_e2e::grafana::GrafanaServer;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, Identity, ManagedProcess, free_port};
use support::create_all;

const BINARY: &str = env!("CARGO_BIN_EXE_seed-controller-manager");
/// API groups whose writes count (the leader-election Lease's renewals do not).
const GROUPS: [&str; 5] = ["", "apps", "kubermatic.k8c.io", "events.k8s.io", "rbac.authorization.k8s.io"];
/// Goal of the cold start (issue 13).
const COLD_GOAL: Duration = Duration::from_secs(120);
/// No write and no mutating Grafana call for this long: every controller has converged.
const QUIET: Duration = Duration::from_secs(10);
/// How often the waits print where the Clusters stand.
const PROGRESS: Duration = Duration::from_secs(20);
/// The Cluster conditions of the binary's controllers and the reason each settles at in
/// this benchmark (no address: the gateway waits; no user-cluster kubeconfig: the
/// user-cluster controller manager waits).
const SETTLED: [(&str, &str); 4] = [
    ("MLAGrafanaReady", "DatasourcesReady"),
    ("MLAAlertingReady", "Synced"),
    ("MLAGatewayReady", "WaitingForAddress"),
    ("MLAUserClusterControllerReady", "KubeconfigSecretMissing"),
];

/// The binary's metrics text.
async fn metrics(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.text().await?)
}

/// `mla_external_requests_total{api="grafana"}` by `method endpoint`.
fn grafana_calls(text: &str) -> BTreeMap<String, u64> {
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
    calls
}

/// Passes of the Grafana controller so far (`mla_reconciles_total{controller="grafana"}`).
fn grafana_passes(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("mla_reconciles_total{") && l.contains("controller=\"grafana\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

fn reads(calls: &BTreeMap<String, u64>) -> u64 {
    calls.iter().filter(|(k, _)| k.starts_with("GET ")).map(|(_, v)| v).sum()
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of this process (`bench`: the Grafana test server, the load, the polling)
/// and of each child process by name (kube-apiserver, etcd, cortex, the binary).
fn cpu_by_process() -> BTreeMap<String, f64> {
    let own = std::process::id();
    let mut cpu = BTreeMap::new();
    cpu.insert("bench (Grafana test server)".to_string(), cpu_seconds(own).unwrap_or(0.0));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some((head, rest))) = (stat.find('('), stat.rsplit_once(')')) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(own) {
            continue;
        }
        let name = head[open + 1..].to_string();
        *cpu.entry(name).or_insert(0.0) += cpu_seconds(pid).unwrap_or(0.0);
    }
    cpu
}

/// `after - before` per process, rounded for printing.
fn cpu_diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, String> {
    after.iter().map(|(k, v)| (k.clone(), format!("{:.1}", v - before.get(k).copied().unwrap_or(0.0)))).collect()
}

async fn kube_writes(client: &kube::Client) -> anyhow::Result<BTreeMap<String, u64>> {
    mla_e2e::write_requests_by_resource(client, &GROUPS).await
}

/// Clusters whose conditions of `SETTLED` all have their settled reason.
fn settled(clusters: &[Arc<Cluster>]) -> usize {
    clusters
        .iter()
        .filter(|c| {
            SETTLED.iter().all(|(condition, reason)| {
                c.status.as_ref().and_then(|s| s.conditions.get(*condition)).and_then(|c| c.reason.as_deref())
                    == Some(*reason)
            })
        })
        .count()
}

/// How many Clusters have each `condition=reason`, for progress lines.
fn reasons(clusters: &[Arc<Cluster>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for cluster in clusters {
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
    counts
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: usize| args.get(i).map(|v| v.parse()).transpose().map(|v| v.unwrap_or(default));
    let (cluster_count, project_count, user_count, resync) =
        (arg(0, 5000)?, arg(1, 1000)?, arg(2, 10000)?, arg(3, 30)?);
    let patience = Duration::from_secs(arg(4, 900)? as u64);
    anyhow::ensure!(project_count > 0 && resync > 0, "projects and resync-seconds must be positive");
    let size = format!("{cluster_count} Clusters, {project_count} Projects, {user_count} Users");
    println!("size: {size}, --resync-period={resync}s");

    let plane = ControlPlane::start("bench-grafana").await?;
    plane.install_crds().await?;
    let client = plane.client();
    // Every grant of the binary (rbac*.yaml), with the namespaces they live in.
    mla_e2e::apply_seed_manager_rbac(&client).await?;
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
    // The alerting controllers' backends: real Cortex (Alertmanager and ruler) and the
    // stand-in of Loki's ruler (Loki cannot be built here).
    let cortex = Cortex::start(&plane.dir().join("cortex")).await?;
    let loki = CortexServer::start().await?;

    let started = Instant::now();
    let setup_writes: u64 = kube_writes(&client).await?.values().sum();
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
            if i % 10 == 0 && project_count > 1 {
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
        let (client, clusters) = (client.clone(), clusters.clone());
        async move {
            let name = format!("c{i}");
            // The alerting controller keeps its Alertmanager in the cluster namespace.
            ensure_namespace(&client, &format!("cluster-{name}")).await?;
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
    // The API server's raw write rate in this run (32 clients), the limit the binary's
    // writes meet.
    let setup_writes = kube_writes(&client).await?.values().sum::<u64>() - setup_writes;
    let raw_rate = setup_writes as f64 / started.elapsed().as_secs_f64();
    println!(
        "created {project_count} Projects, {user_count} Users with their bindings, {cluster_count} Clusters with \
         namespaces in {:.1} s: {setup_writes} writes, {raw_rate:.0} writes/s",
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
        .arg(format!("--cortex-alertmanager-url={}", cortex.url()))
        .arg(format!("--cortex-ruler-url={}", cortex.url()))
        .arg(format!("--loki-ruler-url={}", loki.url()))
        .args(["--leader-election-namespace=kubermatic", "--enable-user-cluster-mla=true", "--log-level=warn"])
        .arg(format!("--resync-period={resync}s"));
    let cpu_start = cpu_by_process();
    let writes_start = kube_writes(&client).await?;
    // The Clusters as a watch sees them: polling with lists of thousands of Clusters would
    // load the API server more than the binary does.
    let (watched, writer) = kube::runtime::reflector::store();
    let reflector = kube::runtime::reflector(writer, kube::runtime::watcher(clusters.clone(), Default::default()));
    tokio::spawn(reflector.for_each(|_| futures::future::ready(())));
    watched.wait_until_ready().await?;
    let process = ManagedProcess::spawn("seed-controller-manager", command, &plane.dir().join("seed.log"))?;
    let started = Instant::now();

    // Grafana converged: every Cluster DatasourcesReady, and no mutating call for 5 s.
    let mut last_mutations = (u64::MAX, Instant::now());
    let mut last_progress = Instant::now();
    let converged = loop {
        let list = watched.state();
        let ready = list
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
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "only {ready} of {cluster_count} ready");
        if last_progress.elapsed() >= PROGRESS {
            last_progress = Instant::now();
            println!("{:.0} s: {:?}", started.elapsed().as_secs_f64(), reasons(&list));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cold = grafana_calls(&metrics(&metrics_url).await?);
    println!("CPU seconds from the start to Grafana converged: {:?}", cpu_diff(&cpu_by_process(), &cpu_start));
    let mutations = grafana.mutations();
    println!(
        "Grafana converged from cold start in {:.1} s (last mutating Grafana call); mutating Grafana calls by group: \
         {:?}",
        converged.as_secs_f64(),
        mutations.by_group
    );
    println!("Grafana calls until then (method endpoint: count): {cold:?}");
    let cold_writes = diff(&kube_writes(&client).await?, &writes_start);
    let cold_write_count: u64 = cold_writes.values().sum();
    println!(
        "Kubernetes writes of the binary (every controller) until then: {cold_write_count} ({:.0} s at this run's raw \
         rate of {raw_rate:.0}/s): {cold_writes:?}",
        cold_write_count as f64 / raw_rate
    );
    report(
        &format!("Grafana cold start -> converged ({size}; every controller of the binary beside it)"),
        format!("{:.1} s", converged.as_secs_f64()),
        "<= 120 s",
        Met::from(converged <= COLD_GOAL),
    );
    report(
        &format!("Kubernetes writes of every controller until Grafana converged ({size})"),
        format!(
            "{cold_write_count} ({:.0} s at the raw write rate of the same API server in the same run, {raw_rate:.0}/s)",
            cold_write_count as f64 / raw_rate
        ),
        "",
        Met::NoGoal,
    );
    report(
        &format!("Grafana calls to converge ({size})"),
        format!("{} mutating, {} reads", mutations.total(), reads(&cold)),
        "",
        Met::NoGoal,
    );

    // One no-change Grafana pass (the other controllers may still be writing; their
    // changes wake no Grafana pass): its reads, and no mutating call.
    // From the end of one pass (a snapshot in the middle of one would count part of it).
    let mut text = metrics(&metrics_url).await?;
    let first = grafana_passes(&text);
    while grafana_passes(&text) == first {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = metrics(&metrics_url).await?;
    }
    let (calls_before, passes_before, mutations_before) =
        (grafana_calls(&text), grafana_passes(&text), grafana.mutations().total());
    let pass_reads = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = metrics(&metrics_url).await?;
        let passes = grafana_passes(&text) - passes_before;
        if passes >= 1 {
            let calls = diff(&grafana_calls(&text), &calls_before);
            let mutating = grafana.mutations().total() - mutations_before;
            println!("one no-change Grafana pass: {passes} pass(es), {mutating} mutating calls, calls {calls:?}");
            break reads(&calls) as f64 / passes as f64;
        }
    };
    report(
        &format!("Grafana reads per no-change pass ({size})"),
        format!("{pass_reads:.0}"),
        "grows with Projects, not Clusters (same at another Cluster count)",
        Met::NoGoal,
    );

    // Every controller converged: all Clusters settled, then QUIET without a write.
    let mut last_change = (u64::MAX, Instant::now());
    let all_converged = loop {
        let list = watched.state();
        let done = settled(&list);
        let activity = kube_writes(&client).await?.values().sum::<u64>() + grafana.mutations().total();
        if activity != last_change.0 {
            last_change = (activity, Instant::now());
        }
        if done == cluster_count && last_change.1.elapsed() >= QUIET {
            break Some(last_change.1.duration_since(started));
        }
        if last_progress.elapsed() >= PROGRESS {
            last_progress = Instant::now();
            println!("{:.0} s: {:?}", started.elapsed().as_secs_f64(), reasons(&list));
        }
        if started.elapsed() > patience {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!("CPU seconds from the start until then: {:?}", cpu_diff(&cpu_by_process(), &cpu_start));
    let peak = mla_e2e::bench::peak_rss_mib(process.id()).unwrap_or(0.0);
    let Some(all_converged) = all_converged else {
        let counts = reasons(&watched.state());
        println!("not every controller converged within {patience:?}: {counts:?}");
        report(
            &format!("seed-controller-manager cold start -> every controller converged ({size})"),
            format!("not within {} s: {counts:?}", patience.as_secs()),
            "",
            Met::No,
        );
        report(
            &format!("seed-controller-manager peak RSS, Grafana bench ({size})"),
            format!("{peak:.0} MiB"),
            "",
            Met::NoGoal,
        );
        println!("steady state and Grafana unreachable not measured: the binary never settled");
        return Ok(());
    };
    println!("every controller converged {:.1} s after the start (last write)", all_converged.as_secs_f64());
    report(
        &format!("seed-controller-manager cold start -> every controller converged ({size})"),
        format!("{:.1} s", all_converged.as_secs_f64()),
        "",
        Met::NoGoal,
    );

    // Steady state: two no-change resync periods.
    grafana.reset_mutations();
    let writes_before = kube_writes(&client).await?;
    let text = metrics(&metrics_url).await?;
    let (calls_before, passes_before) = (grafana_calls(&text), grafana_passes(&text));
    tokio::time::sleep(Duration::from_secs(2 * resync as u64 + 5)).await;
    let writes = diff(&kube_writes(&client).await?, &writes_before);
    let text = metrics(&metrics_url).await?;
    let (calls, passes) = (diff(&grafana_calls(&text), &calls_before), grafana_passes(&text) - passes_before);
    let mutating = grafana.mutations().total();
    let write_count: u64 = writes.values().sum();
    let per_pass = reads(&calls) as f64 / passes.max(1) as f64;
    println!("Grafana reads per pass in the steady state: {per_pass:.0}");
    println!(
        "during two {resync} s no-change resync periods: {passes} Grafana passes, mutating Grafana calls {mutating}, \
         Kubernetes writes {write_count} {writes:?}, Grafana calls {calls:?}"
    );
    report(
        &format!("mutating Grafana calls during two no-change resync periods ({size})"),
        mutating,
        "0",
        Met::from(mutating == 0),
    );
    report(
        &format!("Kubernetes writes during two no-change resync periods, every controller ({size})"),
        write_count,
        "0",
        Met::from(write_count == 0),
    );
    let peak = mla_e2e::bench::peak_rss_mib(process.id()).unwrap_or(0.0).max(peak);
    report(
        &format!("seed-controller-manager peak RSS, Grafana bench ({size})"),
        format!("{peak:.0} MiB"),
        "",
        Met::NoGoal,
    );
    // Grafana unreachable: the one condition change that reports it, then no write.
    grafana.set_available(false);
    let down = Instant::now();
    loop {
        let list = watched.state();
        let reported = list
            .iter()
            .filter(|c| {
                c.status.as_ref().and_then(|s| s.conditions.get("MLAGrafanaReady")).and_then(|c| c.reason.as_deref())
                    == Some("GrafanaUnavailable")
            })
            .count();
        if reported == cluster_count {
            break;
        }
        anyhow::ensure!(down.elapsed() < Duration::from_secs(600), "only {reported} of {cluster_count} report it");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reported_in = down.elapsed();
    // The Events of that change may still be on their way.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_before = kube_writes(&client).await?;
    tokio::time::sleep(Duration::from_secs(2 * resync as u64 + 5)).await;
    let writes = diff(&kube_writes(&client).await?, &writes_before);
    let write_count: u64 = writes.values().sum();
    println!(
        "Grafana unreachable: every Cluster reported it {:.1} s after; then Kubernetes writes during two resync \
         periods: {write_count} {writes:?}",
        reported_in.as_secs_f64()
    );
    report(
        &format!("Kubernetes writes during two resync periods with Grafana unreachable ({size})"),
        write_count,
        "0",
        Met::from(write_count == 0),
    );
    grafana.set_available(true);
    drop(process);
    Ok(())
}

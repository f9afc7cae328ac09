//! Benchmark of master-controller-manager: N Projects, N Users and 3N UserProjectBindings
//! in a master, S seeds (default 2). Measures, in one run:
//! - copies/s from the binary's start to full convergence (every copy present and equal
//!   to its original, every original carrying the cleanup finalizer), divided by the raw
//!   create rate of the same seed API servers (the limit): the same objects created
//!   straight into the seeds, with the binary's concurrency (per seed and kind), after
//!   the binary has stopped;
//! - write requests to the seeds and the master during two no-change resync periods;
//! - p50/p99 of the time from a single update in the master to its arrival in a seed;
//! - peak RSS of the binary.
//!
//! Usage: cargo build --release --bins && target/release/bench-master-sync [N=10000] [resync-seconds=30] [seeds=2]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::*;
use mla_e2e::bench::{Met, peak_rss_mib, report};
use mla_e2e::master::{NAMESPACE, master_identity, prepare_master, register_seed};
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port, write_requests};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Concurrency of the benchmark's own creates in the master.
const MASTER_CREATE_CONCURRENCY: usize = 32;
/// The binary's `--sync-concurrency` (its default): objects synced at once per seed and kind.
const SYNC_CONCURRENCY: usize = 16;
const GROUP: &str = "kubermatic.k8c.io";
const FINALIZERS: [&str; 3] = [
    "kubermatic.k8c.io/cleanup-seed-projects",
    "kubermatic.k8c.io/cleanup-seed-users",
    "kubermatic.k8c.io/cleanup-seed-user-project-bindings",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(std::env::args().nth(i).map(|v| v.parse()).transpose()?.unwrap_or(default))
    };
    let n = arg(1, 10_000)? as usize;
    let resync = arg(2, 30)?;
    let seeds = arg(3, 2)? as usize;
    anyhow::ensure!(n > 0 && seeds > 0, "N and the number of seeds must be at least 1");
    let binary = ensure_binary()?;
    let total = 5 * n;
    let size = format!("{n} Projects + {n} Users + {} bindings -> {seeds} seeds", 3 * n);
    println!("size: {size}, resync period {resync} s, --sync-concurrency={SYNC_CONCURRENCY}");

    let mut names = vec!["bench-master".to_string()];
    names.extend((0..seeds).map(|i| format!("bench-seed{i}")));
    let mut planes = futures::future::try_join_all(names.iter().map(|name| ControlPlane::start(name))).await?;
    futures::future::try_join_all(planes.iter().map(|p| p.install_crds())).await?;
    let master = planes.remove(0);
    let seed_planes = planes;
    prepare_master(&master).await?;
    for (i, plane) in seed_planes.iter().enumerate() {
        register_seed(&master, plane, &format!("seed-{i}")).await?;
    }

    let started = Instant::now();
    create_objects(master.client(), "", n, MASTER_CREATE_CONCURRENCY).await?;
    println!(
        "created {n} Projects, {n} Users, {} UserProjectBindings in the master in {:.1} s",
        3 * n,
        started.elapsed().as_secs_f64()
    );

    let port = free_port()?;
    let kubeconfig = master.kubeconfig(&master_identity()).await?;
    // MLA_BENCH_WRAPPER runs the binary under a profiler (see mla_e2e::bench::profiled).
    let mut command = mla_e2e::bench::profiled(&binary);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .arg(format!("--leader-election-namespace={NAMESPACE}"))
        .arg(format!("--resync-period={resync}s"))
        .arg(format!("--sync-concurrency={SYNC_CONCURRENCY}"))
        .arg("--log-level=warn");
    let log = master.dir().join("master-controller-manager.log");
    let mut process = ManagedProcess::spawn("master-controller-manager", command, &log)?;
    let started = Instant::now();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    eventually("every copy in sync (metric)", Duration::from_secs(3600), || {
        let url = metrics_url.clone();
        async move {
            let Ok(response) = reqwest::get(&url).await else { return Ok(None) };
            let text = response.text().await?;
            let in_sync: f64 = text
                .lines()
                .filter(|l| l.starts_with("mla_seed_objects_in_sync{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            Ok((in_sync as usize >= seeds * total).then_some(()))
        }
    })
    .await?;
    let synced = started.elapsed();
    for (plane, role) in std::iter::once((&master, "master")).chain(seed_planes.iter().map(|s| (s, "seed"))) {
        println!("requests to {} ({role}) for {GROUP}: {:?}", plane.name(), requests_by_verb(&plane.client()).await?);
    }
    if let Some(cpu) = cpu_seconds(process.id()) {
        println!("CPU time of the binary until every copy was in sync: {cpu:.1} s");
    }
    // The metric says every sync succeeded; check what a user would: every copy there and
    // equal, every original guarded by the finalizer.
    eventually("every copy present and equal, every finalizer added", Duration::from_secs(600), || {
        let (master, seeds) = (&master, &seed_planes);
        async move { Ok(converged(master, seeds, n).await?.then_some(())) }
    })
    .await?;
    let convergence = started.elapsed();
    let copies_per_second = (seeds * total) as f64 / synced.as_secs_f64();
    println!(
        "converged: {} copies in {seeds} seeds in {:.1} s ({copies_per_second:.0} copies/s; all checked equal at {:.1} s)",
        seeds * total,
        synced.as_secs_f64(),
        convergence.as_secs_f64()
    );

    let all_writes = || async {
        let mut sum = write_requests(&master.client(), GROUP).await?;
        for seed in &seed_planes {
            sum += write_requests(&seed.client(), GROUP).await?;
        }
        anyhow::Ok(sum)
    };
    let before = all_writes().await?;
    tokio::time::sleep(Duration::from_secs(2 * resync + 5)).await;
    let steady_writes = all_writes().await? - before;
    println!(
        "write requests to the master and the seeds during two {resync} s no-change resync periods: {steady_writes}"
    );

    let projects: Api<Project> = Api::all(master.client());
    let copies: Api<Project> = Api::all(seed_planes[0].client());
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100 {
        let name = format!("project-{}", i * (n / 100).max(1));
        let value = format!("update-{i}");
        let patch = serde_json::json!({"spec": {"name": value}});
        let sent = Instant::now();
        projects.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        loop {
            if copies.get(&name).await?.spec.name == value {
                break;
            }
            anyhow::ensure!(sent.elapsed() < Duration::from_secs(60), "update {i} did not arrive");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (latencies[49].as_secs_f64() * 1000.0, latencies[98].as_secs_f64() * 1000.0);
    println!("single update, master to seed: p50 {p50:.0} ms, p99 {p99:.0} ms (100 updates, polled every 2 ms)");
    let peak = peak_rss_mib(process.id()).ok_or_else(|| anyhow::anyhow!("cannot read the binary's peak RSS"))?;
    println!("peak RSS of master-controller-manager: {peak:.0} MiB");
    process.terminate();
    anyhow::ensure!(process.wait_timeout(Duration::from_secs(30)).await.is_some(), "the binary did not stop");

    // The limit: the same objects created straight into the same seeds, as the binary
    // creates them (every seed at once; per seed and kind SYNC_CONCURRENCY at a time).
    let started = Instant::now();
    futures::future::try_join_all(
        seed_planes.iter().map(|seed| create_objects(seed.client(), "raw-", n, SYNC_CONCURRENCY)),
    )
    .await?;
    let raw = started.elapsed();
    let raw_per_second = (seeds * total) as f64 / raw.as_secs_f64();
    println!(
        "raw create into the seeds: {} objects in {:.1} s ({raw_per_second:.0} objects/s)",
        seeds * total,
        raw.as_secs_f64()
    );

    let ratio = copies_per_second / raw_per_second;
    report(
        &format!("master: {size}, copies/s ÷ raw create rate of the seeds (same run)"),
        format!(
            "{ratio:.2} ({copies_per_second:.0} copies/s, {:.1} s; raw {raw_per_second:.0} objects/s)",
            synced.as_secs_f64()
        ),
        "ratio >= 0.8",
        Met::from(ratio >= 0.8),
    );
    report(&format!("master: peak RSS at {size}"), format!("{peak:.0} MiB"), "<= 256 MiB", Met::from(peak <= 256.0));
    report(
        &format!("master: writes during two no-change resync periods ({size})"),
        steady_writes,
        "0",
        Met::from(steady_writes == 0),
    );
    report(
        &format!("master: single update master -> seed, p50 / p99 ({size})"),
        format!("{p50:.0} ms / {p99:.0} ms"),
        "-",
        Met::NoGoal,
    );
    Ok(())
}

/// Requests an API server has served for the synced kinds, by verb (its own
/// `apiserver_request_total`; watches and lists included).
async fn requests_by_verb(client: &kube::Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let mut counts = BTreeMap::new();
    for line in
        text.lines().filter(|l| l.starts_with("apiserver_request_total{") && l.contains(&format!("group=\"{GROUP}\"")))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Some(verb) = labels.split("verb=\"").nth(1).and_then(|v| v.split('"').next()) else { continue };
        *counts.entry(verb.to_string()).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    Ok(counts)
}

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The master-controller-manager binary beside this one, built first if missing (as when
/// this benchmark runs through `cargo run --release -p mla-e2e`).
fn ensure_binary() -> anyhow::Result<std::path::PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("master-controller-manager");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "--release", "-p", "master-controller-manager"]).status()?;
        anyhow::ensure!(status.success(), "building master-controller-manager failed");
    }
    anyhow::ensure!(binary.exists(), "{} missing: cargo build --release --bins", binary.display());
    Ok(binary)
}

/// Creates `prefix`-named Projects, Users and UserProjectBindings (N, N, 3N), each kind
/// in its own stream, `concurrency` requests of each at a time.
async fn create_objects(client: kube::Client, prefix: &str, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let projects: Api<Project> = Api::all(client.clone());
    let users: Api<User> = Api::all(client.clone());
    let bindings: Api<UserProjectBinding> = Api::all(client);
    let project_stream = futures::stream::iter(0..n)
        .map(|i| {
            let (api, pp) = (projects.clone(), pp.clone());
            async move {
                let project =
                    Project::new(&format!("{prefix}project-{i}"), ProjectSpec { name: format!("Project {i}") });
                api.create(&pp, &project).await
            }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| futures::future::ready(Ok(())));
    let user_stream = futures::stream::iter(0..n)
        .map(|i| {
            let (api, pp) = (users.clone(), pp.clone());
            async move {
                let spec =
                    UserSpec { email: format!("user-{i}@example.com"), name: format!("User {i}"), admin: i % 100 == 0 };
                api.create(&pp, &User::new(&format!("{prefix}user-{i}"), spec)).await
            }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| futures::future::ready(Ok(())));
    let binding_stream = futures::stream::iter(0..3 * n)
        .map(|k| {
            let (api, pp) = (bindings.clone(), pp.clone());
            let (i, j) = (k / 3, k % 3);
            async move {
                let role = ["owners", "editors", "viewers"][j];
                let spec = UserProjectBindingSpec {
                    user_email: format!("user-{i}@example.com"),
                    project_id: format!("project-{}", (i + j) % n),
                    group: format!("{role}-project-{}", (i + j) % n),
                };
                api.create(&pp, &UserProjectBinding::new(&format!("{prefix}binding-{i}-{j}"), spec)).await
            }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| futures::future::ready(Ok(())));
    tokio::try_join!(project_stream, user_stream, binding_stream)?;
    Ok(())
}

/// Whether every seed holds a copy of every original, equal to it (name, labels, spec,
/// status), and every original carries its cleanup finalizer.
async fn converged(master: &ControlPlane, seeds: &[ControlPlane], n: usize) -> anyhow::Result<bool> {
    Ok(kind_converged::<Project>(master, seeds, n, FINALIZERS[0]).await?
        && kind_converged::<User>(master, seeds, n, FINALIZERS[1]).await?
        && kind_converged::<UserProjectBinding>(master, seeds, 3 * n, FINALIZERS[2]).await?)
}

async fn kind_converged<K>(
    master: &ControlPlane,
    seeds: &[ControlPlane],
    count: usize,
    finalizer: &str,
) -> anyhow::Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let originals = list_all::<K>(&master.client()).await?;
    if originals.len() != count || originals.values().any(|o| !o.finalizers().iter().any(|f| f == finalizer)) {
        return Ok(false);
    }
    let want: BTreeMap<&String, serde_json::Value> = originals.iter().map(|(name, o)| (name, essence(o))).collect();
    for seed in seeds {
        let copies = list_all::<K>(&seed.client()).await?;
        if copies.len() != count || copies.iter().any(|(name, copy)| want.get(name) != Some(&essence(copy))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every object of kind `K`, by name, listed in pages.
async fn list_all<K>(client: &kube::Client) -> anyhow::Result<BTreeMap<String, K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    let mut objects = BTreeMap::new();
    let mut params = ListParams::default().limit(5000);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        objects.extend(page.items.into_iter().map(|o| (o.name_any(), o)));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(objects),
        }
    }
}

/// What a copy must equal: labels, spec, status.
fn essence<K: Resource + Serialize>(object: &K) -> serde_json::Value {
    let json = serde_json::to_value(object).unwrap_or_default();
    serde_json::json!({
        "labels": object.meta().labels.clone().unwrap_or_default(),
        "spec": json.get("spec"),
        "status": json.get("status"),
    })
}

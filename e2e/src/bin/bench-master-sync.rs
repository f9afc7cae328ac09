//! Benchmark of master-controller-manager: N Projects, N Users and 3N UserProjectBindings
//! in a master, two seeds. Prints: time to full convergence, write requests to the seeds
//! during two no-change resync periods, peak RSS of the binary, and p50/p99 of the time
//! from a single update in the master to its arrival in a seed.
//!
//! Usage: cargo build --release --bins && target/release/bench-master-sync [N=10000] [resync-seconds=30]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use mla_common::api::*;
use mla_e2e::master::{NAMESPACE, master_identity, prepare_master, register_seed};
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port, write_requests};

const CREATE_CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|v| v.parse()).transpose()?.unwrap_or(10_000);
    let resync: u64 = std::env::args().nth(2).map(|v| v.parse()).transpose()?.unwrap_or(30);
    let binary = std::env::current_exe()?.with_file_name("master-controller-manager");
    anyhow::ensure!(binary.exists(), "{} missing: cargo build --release --bins", binary.display());

    let (master, seed0, seed1) = tokio::try_join!(
        ControlPlane::start("bench-master"),
        ControlPlane::start("bench-seed0"),
        ControlPlane::start("bench-seed1")
    )?;
    tokio::try_join!(master.install_crds(), seed0.install_crds(), seed1.install_crds())?;
    prepare_master(&master).await?;
    register_seed(&master, &seed0, "seed-0").await?;
    register_seed(&master, &seed1, "seed-1").await?;

    let started = Instant::now();
    create_objects(&master, n).await?;
    let total = 5 * n;
    println!(
        "created {n} Projects, {n} Users, {} UserProjectBindings in the master in {:.1} s",
        3 * n,
        started.elapsed().as_secs_f64()
    );

    let port = free_port()?;
    let kubeconfig = master.kubeconfig(&master_identity()).await?;
    let mut command = Command::new(&binary);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .arg(format!("--leader-election-namespace={NAMESPACE}"))
        .arg(format!("--resync-period={resync}s"))
        .arg("--log-level=warn");
    let log = master.dir().join("master-controller-manager.log");
    let process = ManagedProcess::spawn("master-controller-manager", command, &log)?;
    let started = Instant::now();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    eventually("full convergence", Duration::from_secs(3600), || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await?.text().await?;
            let in_sync: f64 = text
                .lines()
                .filter(|l| l.starts_with("mla_seed_objects_in_sync{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            Ok((in_sync as usize >= 2 * total).then_some(()))
        }
    })
    .await?;
    let convergence = started.elapsed();
    println!(
        "converged: {} copies in 2 seeds in {:.1} s ({:.0} copies/s)",
        2 * total,
        convergence.as_secs_f64(),
        (2 * total) as f64 / convergence.as_secs_f64()
    );

    let writes = |plane: &ControlPlane| {
        let client = plane.client();
        async move { write_requests(&client, "kubermatic.k8c.io").await }
    };
    let before = writes(&seed0).await? + writes(&seed1).await?;
    tokio::time::sleep(Duration::from_secs(2 * resync + 5)).await;
    let after = writes(&seed0).await? + writes(&seed1).await?;
    println!("write requests to the seeds during two {resync} s no-change resync periods: {}", after - before);

    let projects: Api<Project> = Api::all(master.client());
    let copies: Api<Project> = Api::all(seed0.client());
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
    println!(
        "single update, master to seed: p50 {:.0} ms, p99 {:.0} ms (100 updates, polled every 2 ms)",
        latencies[49].as_secs_f64() * 1000.0,
        latencies[98].as_secs_f64() * 1000.0
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", process.id())).context("reading the binary's status")?;
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
    println!("peak RSS of master-controller-manager: {peak}");
    Ok(())
}

async fn create_objects(master: &ControlPlane, n: usize) -> anyhow::Result<()> {
    let client = master.client();
    let projects: Arc<Api<Project>> = Arc::new(Api::all(client.clone()));
    let users: Arc<Api<User>> = Arc::new(Api::all(client.clone()));
    let bindings: Arc<Api<UserProjectBinding>> = Arc::new(Api::all(client));
    let pp = PostParams::default();
    futures::stream::iter(0..n)
        .map(|i| {
            let (projects, users, bindings, pp) = (projects.clone(), users.clone(), bindings.clone(), pp.clone());
            async move {
                let project = format!("project-{i}");
                projects.create(&pp, &Project::new(&project, ProjectSpec { name: format!("Project {i}") })).await?;
                let email = format!("user-{i}@example.com");
                let spec = UserSpec { email: email.clone(), name: format!("User {i}"), admin: i % 100 == 0 };
                users.create(&pp, &User::new(&format!("user-{i}"), spec)).await?;
                for (j, role) in ["owners", "editors", "viewers"].iter().enumerate() {
                    let spec = UserProjectBindingSpec {
                        user_email: email.clone(),
                        project_id: format!("project-{}", (i + j) % n),
                        group: format!("{role}-project-{}", (i + j) % n),
                    };
                    bindings.create(&pp, &UserProjectBinding::new(&format!("binding-{i}-{j}"), spec)).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

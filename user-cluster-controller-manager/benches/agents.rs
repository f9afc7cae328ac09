//! Benchmark of one user-cluster-controller-manager (`cargo bench -p
//! user-cluster-controller-manager --bench agents`): time from enabling monitoring and
//! logging to every agent object applied, write requests during two no-change resync
//! periods in either cluster, and the peak RSS of the process (it runs once per user
//! cluster, so it must stay small).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mla_common::api::*;
use mla_common::pki;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, free_port, write_requests_by_resource};

const BINARY: &str = env!("CARGO_BIN_EXE_user-cluster-controller-manager");
const RESYNC: u64 = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (seed, user) = tokio::try_join!(ControlPlane::start("bench-ucm-seed"), ControlPlane::start("bench-ucm-user"))?;
    seed.install_crds().await?;
    ensure_namespace(&seed.client(), "cluster-c1").await?;
    let ca = pki::create_ca("c1", SystemTime::now())?;
    let data = [("ca.crt", &ca.cert_pem), ("ca.key", &ca.key_pem)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let secret = Secret {
        metadata: ObjectMeta { name: Some("mla-gateway-ca".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(seed.client(), "cluster-c1").create(&PostParams::default(), &secret).await?;
    let clusters: Api<Cluster> = Api::all(seed.client());
    let spec = ClusterSpec { expose_strategy: Some(ExposeStrategy::Tunneling), ..Default::default() };
    clusters.create(&PostParams::default(), &Cluster::new("c1", spec)).await?;
    let status = serde_json::json!({"status": {"namespaceName": "cluster-c1", "address": {"externalName": "c1.example.com", "port": 6443}}});
    clusters.patch_status("c1", &PatchParams::default(), &Patch::Merge(&status)).await?;

    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", seed.admin_kubeconfig().display()))
        .arg(format!("--user-cluster-kubeconfig={}", user.admin_kubeconfig().display()))
        .arg(format!("--admin-addr=127.0.0.1:{}", free_port()?))
        .args([
            "--cluster-name=c1",
            "--cluster-namespace=cluster-c1",
            "--leader-election-namespace=cluster-c1",
            "--log-level=warn",
        ])
        .arg(format!("--resync-period={RESYNC}s"));
    let process = ManagedProcess::spawn("user-cluster-controller-manager", command, &seed.dir().join("ucm.log"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let enable = serde_json::json!({"spec": {"mla": {"monitoringEnabled": true, "loggingEnabled": true}}});
    let started = Instant::now();
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&enable)).await?;
    let deployments: Api<Deployment> = Api::namespaced(user.client(), "mla-system");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(user.client(), "mla-system");
    loop {
        if deployments.get_opt("prometheus").await?.is_some() && daemon_sets.get_opt("promtail").await?.is_some() {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "agents not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("enable to all agent objects applied: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);

    let groups = ["", "apps", "rbac.authorization.k8s.io", "kubermatic.k8c.io"];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: u64 = write_requests_by_resource(&seed.client(), &groups).await?.values().sum::<u64>()
        + write_requests_by_resource(&user.client(), &groups).await?.values().sum::<u64>();
    tokio::time::sleep(Duration::from_secs(2 * RESYNC + 2)).await;
    let after: u64 = write_requests_by_resource(&seed.client(), &groups).await?.values().sum::<u64>()
        + write_requests_by_resource(&user.client(), &groups).await?.values().sum::<u64>();
    println!("write requests (both clusters) during two {RESYNC} s no-change resync periods: {}", after - before);
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.id()))?;
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
    println!("peak RSS of user-cluster-controller-manager: {peak}");
    Ok(())
}

//! Benchmark of the gateway (a program that prints figures; `cargo bench -p
//! seed-controller-manager --bench gateway -- [clusters=1000] [resync-seconds=30]`):
//!
//! - certificates issued per second by our PKI;
//! - N Clusters in one seed: time from start to every gateway reconciled, write requests
//!   during two no-change resync periods, peak RSS of the binary;
//! - remote-write throughput into real Cortex (its distributor, 50 series per request)
//!   through the real gateway (mTLS) against straight to Cortex, same run, same client.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use mla_common::api::*;
use mla_common::pki::{self, CaState};
use mla_e2e::cortex::Cortex;
use mla_e2e::cortex::remote_write::Series;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, Identity, ManagedProcess, free_port, write_requests_by_resource};
use seed_controller_manager::gateway::nginx::{self, GatewayPaths, GatewayServer, Upstreams};

const BINARY: &str = env!("CARGO_BIN_EXE_seed-controller-manager");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let clusters: usize = args.first().map(|v| v.parse()).transpose()?.unwrap_or(1000);
    let resync: u64 = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(30);

    certificates_per_second()?;
    reconcile_many(clusters, resync).await?;
    throughput().await?;
    Ok(())
}

fn certificates_per_second() -> anyhow::Result<()> {
    let now = SystemTime::now();
    let started = Instant::now();
    let cas: Vec<_> = (0..100).map(|i| pki::create_ca(&format!("c{i}"), now)).collect::<Result<_, _>>()?;
    let ca_rate = 100.0 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for ca in &cas {
        for _ in 0..5 {
            pki::issue_gateway_certificate(ca, "c.example.com", Some("192.0.2.1"), now)?;
        }
    }
    let leaf_rate = 500.0 / started.elapsed().as_secs_f64();
    println!("pki: {ca_rate:.0} CAs/s, {leaf_rate:.0} gateway certificates/s (one core)");
    Ok(())
}

async fn reconcile_many(count: usize, resync: u64) -> anyhow::Result<()> {
    let plane = ControlPlane::start("bench-gateway").await?;
    plane.install_crds().await?;
    ensure_namespace(&plane.client(), "kubermatic").await?;
    // Every grant of the binary (rbac*.yaml; the Grafana Role lives in the MLA namespace).
    mla_e2e::apply_seed_manager_rbac(&plane.client()).await?;
    let client = plane.client();
    let clusters: Api<Cluster> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (client, clusters) = (client.clone(), clusters.clone());
            async move {
                let name = format!("bench{i}");
                ensure_namespace(&client, &format!("cluster-{name}")).await?;
                let spec = ClusterSpec {
                    human_readable_name: None,
                    expose_strategy: Some(ExposeStrategy::NodePort),
                    mla: Some(MLASettings { monitoring_enabled: true, logging_enabled: true, ..Default::default() }),
                };
                clusters.create(&PostParams::default(), &Cluster::new(&name, spec)).await?;
                let status = serde_json::json!({"status": {"namespaceName": format!("cluster-{name}"),
                    "address": {"externalName": format!("{name}.seed.example.com"), "ip": "192.0.2.1", "port": 30000}}});
                clusters.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&status)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    println!("created {count} Clusters with namespaces in {:.1} s", started.elapsed().as_secs_f64());

    let identity = Identity::ServiceAccount { namespace: "kubermatic".into(), name: "seed-controller-manager".into() };
    let kubeconfig = plane.kubeconfig(&identity).await?;
    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{}", free_port()?))
        .args(["--leader-election-namespace=kubermatic", "--enable-user-cluster-mla=true", "--log-level=warn"])
        .arg(format!("--resync-period={resync}s"));
    let process = ManagedProcess::spawn("seed-controller-manager", command, &plane.dir().join("seed.log"))?;
    let started = Instant::now();
    loop {
        let list = clusters.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().and_then(|s| s.conditions.get("MLAGatewayReady")).and_then(|c| c.reason.as_deref())
                    == Some("GatewayNotAvailable")
            })
            .count();
        if done == count {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "only {done} of {count} reconciled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "reconciled {count} gateways (2 Secrets, ConfigMap, Deployment, 2 Services, status each) in {:.1} s ({:.1} clusters/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    let groups = ["", "apps", "kubermatic.k8c.io"];
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before: u64 = write_requests_by_resource(&client, &groups).await?.values().sum();
    tokio::time::sleep(Duration::from_secs(2 * resync + 5)).await;
    let after: u64 = write_requests_by_resource(&client, &groups).await?.values().sum();
    println!("write requests during two {resync} s no-change resync periods: {}", after - before);
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.id()))?;
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
    println!("peak RSS of seed-controller-manager: {peak}");
    Ok(())
}

/// Sends remote-write requests of 50 series (one sample each, timestamped now) with 16
/// concurrent keep-alive connections for `duration`, under `tenant` when given (the
/// gateway sets it itself); requests/s.
async fn blast(client: reqwest::Client, url: String, tenant: Option<&'static str>, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let (client, url, done) = (client.clone(), url.clone(), done.clone());
            tokio::spawn(async move {
                let worker = worker.to_string();
                while Instant::now() < deadline {
                    let series: Vec<Series> = (0..50)
                        .map(|i| Series::now("bench_samples", &[("worker", &worker), ("i", &i.to_string())], 1.0))
                        .collect();
                    let (status, body) = mla_e2e::cortex::push(&client, &url, tenant, &series).await.unwrap();
                    assert!((200..300).contains(&status), "{status}: {body}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

async fn throughput() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mla-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("run"))?;
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let now = SystemTime::now();
    let ca = pki::create_ca("bench", now)?;
    let state =
        CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() };
    let gateway = pki::issue_gateway_certificate(&ca, "localhost", Some("127.0.0.1"), now)?;
    std::fs::write(path("gateway.crt"), &gateway.cert_pem)?;
    std::fs::write(path("gateway.key"), &gateway.key_pem)?;
    std::fs::write(path("ca-bundle.crt"), pki::trust_bundle(&state, now)?)?;
    let client_cert = pki::issue_client_certificate(&ca, "prometheus", now)?;

    let cortex = Cortex::start(&dir.join("cortex")).await?;
    // Cortex's default limit (25,000 samples/s per tenant) would be measured instead of
    // the gateway: lifted for the benchmark's tenant.
    cortex.write_runtime_config(
        "overrides:\n  bench:\n    ingestion_rate: 100000000\n    ingestion_burst_size: 100000000\n",
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    // Cortex shows the float limit as Go formats it (`1e+08`).
    while cortex.overrides_in_force().await?["bench"]["ingestion_rate"].as_f64() != Some(1e8) {
        anyhow::ensure!(Instant::now() < deadline, "the benchmark tenant's limits not in force");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backend = cortex.url().to_string();

    let upstreams = Upstreams::all(&backend);
    let server = GatewayServer {
        write_port: free_port()?,
        read_port: free_port()?,
        resolver: None,
        paths: GatewayPaths {
            certificate: path("gateway.crt"),
            certificate_key: path("gateway.key"),
            client_ca_bundle: path("ca-bundle.crt"),
            pid: path("run/nginx.pid"),
            temp_dir: path("run"),
        },
    };
    let _nginx = mla_e2e::nginx::Nginx::start("nginx", &dir, &nginx::render("bench", None, &upstreams, &server)?)?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let identity = reqwest::Identity::from_pem(format!("{}{}", client_cert.cert_pem, client_cert.key_pem).as_bytes())?;
    let tls = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
        .identity(identity)
        .build()?;
    let plain = reqwest::Client::builder().no_proxy().build()?;
    let window = Duration::from_secs(5);
    let direct = blast(plain, format!("{backend}/api/v1/push"), Some("bench"), window).await;
    let through = blast(tls, format!("https://127.0.0.1:{}/api/v1/push", server.write_port), None, window).await;
    println!(
        "remote write into real Cortex, 50 series per request, 16 connections: {through:.0} req/s through the gateway (mTLS), {direct:.0} req/s straight to Cortex: ratio {:.2}; Cortex RSS afterwards {} MiB",
        through / direct,
        cortex.rss_kib().unwrap_or_default() / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Benchmark of the gateway and of the whole binary at steady state (a program that prints
//! figures; `cargo bench -p seed-controller-manager --bench gateway -- [clusters=1000]
//! [resync-seconds=30]`; every figure also goes through `mla_e2e::bench::report`):
//!
//! - certificates issued per second by our PKI;
//! - N MLA Clusters in one seed with every controller on (gateway, alerting against real
//!   Cortex, IAP, user-cluster controller, Grafana against its API test server; see
//!   `support`): time from start to every gateway reconciled and to every controller
//!   converged (all five conditions of every Cluster settled), write requests during two
//!   no-change resync periods, the same after Cortex is stopped (once every Cluster reports
//!   it), and the binary's peak RSS;
//! - remote-write throughput into real Cortex as Prometheus sends it (2,000 samples per
//!   snappy-compressed protobuf request, 8 shards on keep-alive connections) through the real gateway
//!   (nginx, mTLS) and straight to Cortex's distributor, alternating in the same run.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mla_common::pki::{self, CaState};
use mla_e2e::bench::{Met, report};
use mla_e2e::cortex::Cortex;
use mla_e2e::cortex::remote_write::{self, Series};
use mla_e2e::free_port;
use seed_controller_manager::gateway::nginx::{self, GatewayPaths, GatewayServer, Upstreams};
use support::Seed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    // `-- throughput`: only the remote-write part (a minute), e.g. after a gateway change.
    if args.first().map(String::as_str) == Some("throughput") {
        return throughput().await;
    }
    let clusters: usize = args.first().map(|v| v.parse()).transpose()?.unwrap_or(1000);
    let resync: u64 = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(30);

    certificates_per_second()?;
    steady_state(clusters, resync).await?;
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
    report("PKI, one core: CAs issued per second", format!("{ca_rate:.0}"), "-", Met::NoGoal);
    report("PKI, one core: gateway certificates issued per second", format!("{leaf_rate:.0}"), "-", Met::NoGoal);
    Ok(())
}

/// Cold start to convergence, writes at steady state with Cortex up and down, peak RSS.
async fn steady_state(count: usize, resync: u64) -> anyhow::Result<()> {
    let mut seed = Seed::prepare("bench-gateway", count).await?;
    let process = seed.start_manager(resync).await?;
    let start = std::time::Instant::now();
    let limit = Duration::from_secs(3600);
    let gateways = seed.wait_for_since(start, "MLAGatewayReady", &["GatewayNotAvailable"], limit).await?;
    report(
        &format!("seed, {count} MLA Clusters, all controllers on: start -> every gateway reconciled"),
        format!("{:.1} s ({:.1} clusters/s)", gateways.as_secs_f64(), count as f64 / gateways.as_secs_f64()),
        "-",
        Met::NoGoal,
    );
    let converged = seed.wait_converged(start, Duration::from_secs(5), limit).await?;
    report(
        &format!("seed, {count} MLA Clusters: start -> every controller converged (5 conditions settled, last write)"),
        format!("{:.1} s", converged.as_secs_f64()),
        "-",
        Met::NoGoal,
    );
    let period = Duration::from_secs(2 * resync + 5);
    support::report_writes_during(
        &seed.client,
        period,
        &format!(
            "seed, {count} Clusters: writes during two {resync} s no-change resync periods (every controller converged)"
        ),
    )
    .await?;

    // Cortex goes away: one condition change per Cluster, then nothing more.
    seed.cortex.stop();
    let noticed =
        seed.wait_for("MLAAlertingReady", &["BackendUnavailable"], Duration::from_secs(4 * resync + 120)).await?;
    println!("every Cluster reports Cortex unavailable {:.1} s after it stopped", noticed.as_secs_f64());
    support::report_writes_during(
        &seed.client,
        period,
        &format!(
            "seed, {count} Clusters, Cortex stopped: writes during two {resync} s resync periods after the condition change"
        ),
    )
    .await?;
    let rss = mla_e2e::bench::peak_rss_mib(process.id()).unwrap_or(f64::NAN);
    let (goal, met) = if count == 1000 {
        ("<= 100 MiB", Met::from(rss <= 100.0))
    } else {
        ("<= 100 MiB at 1,000 Clusters", Met::NoGoal)
    };
    report(&format!("seed peak RSS, {count} MLA Clusters, all controllers on"), format!("{rss:.0} MiB"), goal, met);
    Ok(())
}

/// Samples in one remote-write request: Prometheus's `max_samples_per_send` default.
const SAMPLES_PER_REQUEST: usize = 2000;
/// Concurrent senders, each on its own keep-alive connection: Prometheus's shards.
const SHARDS: usize = 8;

/// Sends remote-write requests of [`SAMPLES_PER_REQUEST`] series (one sample each,
/// timestamped now) from [`SHARDS`] concurrent senders for `duration`, under `tenant` when
/// given (the gateway sets it itself); samples/s accepted, and the requests Cortex
/// refused with a 5xx (which Prometheus retries: an ingester overwhelmed on this machine).
/// `phase` names the run.
async fn blast(
    client: reqwest::Client,
    url: String,
    tenant: Option<&'static str>,
    phase: &str,
    duration: Duration,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..SHARDS)
        .map(|shard| {
            let (client, url, done, failed) = (client.clone(), url.clone(), done.clone(), failed.clone());
            // The same series in every phase (they run one after the other, so each series'
            // timestamps only grow): 16,000 series, under Cortex's per-metric limit.
            let _ = phase;
            let shard = shard.to_string();
            tokio::spawn(async move {
                let names: Vec<String> = (0..SAMPLES_PER_REQUEST).map(|i| i.to_string()).collect();
                while Instant::now() < deadline {
                    let series: Vec<Series> = names
                        .iter()
                        .map(|i| {
                            Series::now("bench_samples", &[("shard", &shard), ("instance", i), ("job", "bench")], 1.0)
                        })
                        .collect();
                    let mut request = client.post(&url).body(remote_write::compressed_body(&series));
                    for (name, value) in remote_write::HEADERS {
                        request = request.header(name, value);
                    }
                    if let Some(tenant) = tenant {
                        request = request.header(mla_e2e::cortex::TENANT_HEADER, tenant);
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let body = response.text().await.unwrap();
                    if status.is_server_error() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    assert!(status.is_success(), "{status}: {body}");
                    done.fetch_add(SAMPLES_PER_REQUEST as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    (done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed))
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

    // The production configuration, as the controller renders it (upstream groups with
    // keep-alive), on loopback ports and scratch paths.
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
    let direct_url = format!("{backend}/api/v1/push");
    let gateway_url = format!("https://127.0.0.1:{}/api/v1/push", server.write_port);
    // Warm-up (connections, TSDB head), then alternating windows so that drift in the
    // machine's load falls on both sides alike.
    blast(plain.clone(), direct_url.clone(), Some("bench"), "warm-direct", Duration::from_secs(2)).await;
    blast(tls.clone(), gateway_url.clone(), None, "warm-gateway", Duration::from_secs(2)).await;
    let window = Duration::from_secs(5);
    let (mut direct, mut through, mut refused) = (0.0, 0.0, (0, 0));
    for round in 0..3 {
        let (rate, failed) =
            blast(plain.clone(), direct_url.clone(), Some("bench"), &format!("direct{round}"), window).await;
        direct += rate / 3.0;
        refused.0 += failed;
        let (rate, failed) = blast(tls.clone(), gateway_url.clone(), None, &format!("gateway{round}"), window).await;
        through += rate / 3.0;
        refused.1 += failed;
    }
    println!(
        "requests Cortex answered with 5xx (not counted): {} straight, {} through the gateway",
        refused.0, refused.1
    );
    let ratio = through / direct;
    let what = format!("{SAMPLES_PER_REQUEST} samples per request, {SHARDS} shards");
    report(
        &format!("remote write into real Cortex straight to the distributor ({what})"),
        format!("{direct:.0} samples/s"),
        "-",
        Met::NoGoal,
    );
    report(
        &format!("remote write into real Cortex through the gateway, nginx mTLS ({what})"),
        format!("{through:.0} samples/s"),
        "-",
        Met::NoGoal,
    );
    report(
        "remote write: samples/s through the gateway / straight to Cortex, same run",
        format!("{ratio:.2}"),
        ">= 0.9",
        Met::from(ratio >= 0.9),
    );
    println!("Cortex RSS afterwards {} MiB", cortex.rss_kib().unwrap_or_default() / 1024);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

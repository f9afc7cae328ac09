//! Benchmark: MLA (monitoring) enabled on a Cluster -> the first sample of that cluster
//! queryable from Cortex under its tenant, on the real e2e world (`mla_e2e::world`): real
//! kube-apiservers, the three binaries, the gateway's real nginx, real Cortex and the
//! Prometheus 3 agent running the generated configuration unmodified.
//!
//! ```sh
//! cargo bench -p mla-e2e --bench first_sample -- [runs=5]
//! ```
//!
//! Each run makes a new Cluster (new name, so a new tenant, CA, gateway and user-cluster
//! manager) with MLA off, then switches monitoring on and measures from that write. This
//! program plays the kubelet: it starts the gateway's nginx and the user-cluster manager
//! as soon as the seed manager has written their objects, and the agent as soon as the
//! user-cluster manager has written its objects (a real kubelet adds pod scheduling, image
//! pulls and container start on top). The user cluster (one API server) is reused: between
//! runs the previous cluster's processes are stopped, its MLA is switched off and the
//! agents' namespace is deleted.
//!
//! Phases reported per run (seconds since MLA was switched on):
//! - `seed`: the gateway listens (nginx with the seed's config and certificates) and the
//!   user-cluster manager is ready (its Deployment written by the seed manager, then
//!   started here until `/readyz`);
//! - `uccm`: the agent's Deployment, ConfigMap and certificates Secret are in the user
//!   cluster;
//! - `agent`: the agent process started;
//! - `scrape`: the agent's first scrape (the earliest `lastScrape` of its targets,
//!   `/api/v1/targets`): discovery, scrape-pool reload and the per-target offset;
//! - `sample`: the first sample of the cluster queryable under its tenant (remote-write
//!   batching, gateway, Cortex).
//!
//! The figure is min / median / max of `sample` over the runs; it meets the goal when the
//! maximum is at most 15 s. The binaries are built first (`cargo build` of the three, in
//! this program's profile), so the command above is all it takes.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use mla_e2e::bench::{Met, report};
use mla_e2e::world::{World, WorldOptions, binary_dir};
use mla_e2e::{eventually, workspace_root};

const FIGURE: &str = "MLA enabled on a Cluster -> first sample queryable under its tenant (e2e, real parts)";
const GOAL: Duration = Duration::from_secs(15);
const BINARIES: [&str; 3] = ["master-controller-manager", "seed-controller-manager", "user-cluster-controller-manager"];
const PROJECT: &str = "bench";

/// Seconds since MLA was switched on at which each phase ended.
#[derive(Debug, Clone, Copy)]
struct Phases {
    seed: f64,
    uccm: f64,
    agent: f64,
    scrape: f64,
    sample: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let runs: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|v| v.parse()).transpose()?.unwrap_or(5);
    anyhow::ensure!(runs > 0, "runs must be at least 1");
    build_binaries()?;

    let mut world = World::start(WorldOptions::default()).await?;
    // The namespace controller, so that the agents' namespace can be deleted between runs.
    world.user.start_garbage_collector()?;
    world.create_project(PROJECT, "Bench", &[]).await?;

    let mut results = Vec::new();
    let mut previous: Option<String> = None;
    for run in 0..runs {
        if let Some(name) = previous.take() {
            tear_down(&world, &name).await?;
        }
        let name =
            format!("fs{run}-{:x}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs() % 0xffff);
        let phases = measure(&world, &name).await.with_context(|| format!("run {run} (cluster {name})"))?;
        println!(
            "run {run} ({name}): seed {:.1} s, uccm {:.1} s, agent {:.1} s, first scrape {:.1} s, first sample {:.1} s",
            phases.seed, phases.uccm, phases.agent, phases.scrape, phases.sample
        );
        results.push(phases);
        previous = Some(name);
    }

    let samples: Vec<f64> = results.iter().map(|p| p.sample).collect();
    let (min, median, max) = spread(&samples);
    report(
        FIGURE,
        format!("min {min:.1} s / median {median:.1} s / max {max:.1} s ({runs} runs)"),
        &format!("<= {} s", GOAL.as_secs()),
        Met::from(max <= GOAL.as_secs_f64()),
    );
    let phase = |f: fn(&Phases) -> f64| median_of(&results.iter().map(f).collect::<Vec<_>>());
    let (seed, uccm, agent, scrape, sample) =
        (phase(|p| p.seed), phase(|p| p.uccm), phase(|p| p.agent), phase(|p| p.scrape), phase(|p| p.sample));
    report(
        "first sample, median phase ends since MLA on (seed: gateway + UCCM ready; UCCM: agent objects; agent started; first scrape; first sample)",
        format!("{seed:.1} / {uccm:.1} / {agent:.1} / {scrape:.1} / {sample:.1} s"),
        "-",
        Met::NoGoal,
    );
    Ok(())
}

/// One run: a new Cluster with MLA off, then monitoring on; the phases.
async fn measure(world: &World, name: &str) -> anyhow::Result<Phases> {
    world.create_cluster(name, PROJECT, false, false, true).await?;
    // Let the seed manager see the Cluster without MLA first, as an existing cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let on = Instant::now();
    let since = |at: Instant| at.duration_since(on).as_secs_f64();
    world.set_mla(name, true, false).await?;

    // The kubelet's part in the seed: the gateway and the user-cluster manager start as
    // soon as their objects are there.
    tokio::try_join!(async { world.run_gateway(name).await.map(|_| ()) }, world.run_user_manager(name))?;
    let seed = since(Instant::now());

    let agents_namespace = world.agents_namespace.clone();
    let user = world.user.client();
    eventually("the agent's objects in the user cluster", Duration::from_secs(60), || {
        let (user, namespace) = (user.clone(), agents_namespace.clone());
        async move {
            let present =
                Api::<Deployment>::namespaced(user.clone(), &namespace).get_opt("prometheus").await?.is_some()
                    && Api::<ConfigMap>::namespaced(user.clone(), &namespace).get_opt("prometheus").await?.is_some()
                    && Api::<Secret>::namespaced(user, &namespace).get_opt("prometheus-certificates").await?.is_some();
            Ok(present.then_some(()))
        }
    })
    .await?;
    let uccm = since(Instant::now());

    world.run_agent(name).await?;
    let agent = since(Instant::now());
    let agent_url = {
        let agents = world.agents.lock().await;
        let running = agents.get(name).context("the agent is not running")?;
        format!("http://{}:{}", running.address, running.port)
    };

    // Poll Cortex for the cluster's first sample under its tenant, and the agent for its
    // first scrape, until both are known.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let promql = format!("count({{cluster=\"{name}\"}})");
    let mut first_scrape: Option<f64> = None;
    let sample = loop {
        if first_scrape.is_none() {
            first_scrape = earliest_scrape(&http, &agent_url).await.map(|at| {
                let before = SystemTime::now().duration_since(at).unwrap_or_default();
                since(Instant::now()) - before.as_secs_f64()
            });
        }
        if !world.cortex.query(name, &promql).await.unwrap_or_default().is_empty() {
            break since(Instant::now());
        }
        anyhow::ensure!(on.elapsed() < Duration::from_secs(180), "no sample of {name} in Cortex after 180 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A scrape that happened before the sample arrived is in the targets list by now.
    let scrape = match first_scrape {
        Some(at) => at,
        None => {
            let at = earliest_scrape(&http, &agent_url).await.context("the agent reports no scrape")?;
            since(Instant::now()) - SystemTime::now().duration_since(at).unwrap_or_default().as_secs_f64()
        }
    };

    // Under its tenant only: not under the cluster's namespace name, nor under the
    // project's other tenant names, and through the gateway's read path (tenant pinned).
    for other in [format!("cluster-{name}"), PROJECT.to_string(), "fake".to_string()] {
        anyhow::ensure!(
            world.cortex.query(&other, &promql).await?.is_empty(),
            "samples of {name} under tenant {other}"
        );
    }
    let read_port = world.gateways.lock().await.get(name).context("gateway")?.read_port;
    let through_gateway =
        mla_e2e::cortex::query(&http, &format!("http://127.0.0.1:{read_port}/api/prom"), "fake", &promql).await?;
    anyhow::ensure!(!through_gateway.is_empty(), "the gateway's read path does not see {name}'s samples");
    // What came first, and what the heartbeat costs: its scrape of the agent's own
    // /metrics (size, duration) for five series.
    let jobs = world.cortex.query(name, &format!("count by (job) ({{cluster=\"{name}\"}})")).await?;
    let jobs: Vec<String> = jobs
        .iter()
        .map(|r| format!("{}={}", r["metric"]["job"].as_str().unwrap_or("?"), r["value"][1].as_str().unwrap_or("?")))
        .collect();
    let own_metrics = http.get(format!("{agent_url}/metrics")).send().await?.text().await?;
    let duration = world
        .cortex
        .query(name, &format!("scrape_duration_seconds{{cluster=\"{name}\",job=\"mla-agent-heartbeat\"}}"))
        .await?;
    println!(
        "  series by job at the first sample: {}; the agent's /metrics: {} bytes, {} samples; heartbeat scrape took {} s",
        jobs.join(", "),
        own_metrics.len(),
        own_metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count(),
        duration.first().and_then(|r| r["value"][1].as_str()).unwrap_or("?")
    );
    Ok(Phases { seed, uccm, agent, scrape, sample })
}

/// The earliest `lastScrape` of the agent's active targets that were scraped.
async fn earliest_scrape(http: &reqwest::Client, agent_url: &str) -> Option<SystemTime> {
    let text = http.get(format!("{agent_url}/api/v1/targets?state=active")).send().await.ok()?.text().await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["data"]["activeTargets"]
        .as_array()?
        .iter()
        .filter_map(|t| t["lastScrape"].as_str())
        .filter(|s| !s.starts_with("0001-"))
        .filter_map(parse_rfc3339)
        .min()
}

/// `2026-12-01T08:30:00.123456789Z` (Prometheus' UTC form) as a SystemTime.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let (date, rest) = text.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let time = rest.strip_suffix('Z')?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?);
    let nanos: u32 = format!("{:0<9}", &fraction[..fraction.len().min(9)]).parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Stops the previous run's processes, switches its MLA off and deletes the agents'
/// namespace in the user cluster, so the next run starts from an empty one.
async fn tear_down(world: &World, name: &str) -> anyhow::Result<()> {
    world.agents.lock().await.remove(name);
    world.user_managers.lock().await.remove(name);
    world.gateways.lock().await.remove(name);
    world.set_mla(name, false, false).await?;
    let namespaces: Api<Namespace> = Api::all(world.user.client());
    let namespace = world.agents_namespace.clone();
    let _ = namespaces.delete(&namespace, &Default::default()).await;
    eventually("the agents' namespace to be gone", Duration::from_secs(120), || {
        let (namespaces, namespace) = (namespaces.clone(), namespace.clone());
        async move { Ok(namespaces.get_opt(&namespace).await?.is_none().then_some(())) }
    })
    .await
}

/// Builds the three binaries into this program's target directory and profile, where the
/// world runs them from.
/// `MLA_BENCH_PREBUILT=1` skips the build and runs the binaries as they are.
fn build_binaries() -> anyhow::Result<()> {
    let dir = binary_dir()?;
    if std::env::var("MLA_BENCH_PREBUILT").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).arg("build").arg("--bins");
    // Without what cargo adds to this program's environment (its package's variables,
    // the library path), so the build sees the caller's shell and shares its fingerprints
    // with a `cargo build --release --bins` run by hand.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "LD_LIBRARY_PATH"
            || key == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_BIN_EXE_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            command.env_remove(key.as_ref());
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    for binary in BINARIES {
        command.args(["-p", binary]);
    }
    eprintln!("[bench] building the binaries ({profile}): {command:?}");
    let status = command.status().context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of the binaries failed");
    for binary in BINARIES {
        anyhow::ensure!(dir.join(binary).exists(), "{} missing after the build", dir.join(binary).display());
    }
    Ok(())
}

fn spread(values: &[f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, median_of(values), max)
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

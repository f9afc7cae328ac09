//! The largest seed (a program that prints figures; `cargo bench -p seed-controller-manager
//! --bench seed_scale -- [clusters=5000] [resync-seconds=30]`; every figure also goes
//! through `mla_e2e::bench::report`): N MLA Clusters in one seed with every controller on
//! (see `support`), the binary started cold:
//!
//! - start to every gateway reconciled (goal: 3 minutes at 5,000 Clusters);
//! - start to every controller converged (all five conditions of every Cluster settled);
//! - write requests during two no-change resync periods after that (goal: 0);
//! - the binary's peak RSS (goal: 200 MiB at 5,000 Clusters);
//! - the CPU the API server + etcd and the binary used during the cold start, against
//!   what the machine's cores could give in that time, and the API requests served, per
//!   Cluster, by kind;
//! - the limit that binds it, in the same run: the cold start's Clusters/s divided by the
//!   rate at which the API server takes the same writes (copies of what the binary made,
//!   its condition writes and Events) with nothing else running (`Seed::raw_limit`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark program may panic

mod support;

use std::time::Duration;

use mla_e2e::bench::{Met, report};
use support::Seed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let count: usize = args.first().map(|v| v.parse()).transpose()?.unwrap_or(5000);
    let resync: u64 = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(30);
    // The goals are for 5,000 Clusters; another size reports without one.
    let full = count == 5000;
    let goal =
        |goal: &'static str, ok: bool| if full { (goal, Met::from(ok)) } else { ("- (goal at 5,000)", Met::NoGoal) };

    let seed = Seed::prepare("bench-seed-scale", count).await?;
    // CPU of the API server + etcd, and of the binary, over the cold start: what binds it.
    let plane_cpu = || seed.plane.process_ids().into_iter().filter_map(mla_e2e::bench::cpu_seconds).sum::<f64>();
    let plane_before = plane_cpu();
    let requests_before = mla_e2e::requests_where(&seed.client, |_, _, _| true).await?;
    let process = seed.start_manager(resync).await?;
    let start = std::time::Instant::now();
    let limit = Duration::from_secs(3600);
    let gateways = seed.wait_for_since(start, "MLAGatewayReady", &["GatewayNotAvailable"], limit).await?;
    let plane_used = plane_cpu() - plane_before;
    print_requests_per_cluster(&seed.client, &requests_before, count).await?;
    let manager_used = mla_e2e::bench::cpu_seconds(process.id()).unwrap_or(f64::NAN);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let available = cores * gateways.as_secs_f64();
    report(
        &format!("seed, {count} MLA Clusters: CPU used during that cold start (the machine's limit: {cores} cores)"),
        format!(
            "API server + etcd {plane_used:.0} s, seed-controller-manager {manager_used:.0} s, of {available:.0} CPU-s ({:.0} % of the machine)",
            100.0 * (plane_used + manager_used) / available
        ),
        "-",
        Met::NoGoal,
    );
    let (text, met) = goal("<= 180 s", gateways <= Duration::from_secs(180));
    report(
        &format!("seed, {count} MLA Clusters, all controllers on: cold start -> every gateway reconciled"),
        format!("{:.1} s ({:.1} clusters/s)", gateways.as_secs_f64(), count as f64 / gateways.as_secs_f64()),
        text,
        met,
    );
    let converged = seed.wait_converged(start, Duration::from_secs(5), limit).await?;
    // What the binary wrote by controller and kind, per Cluster: how far above the one
    // write per object (and condition) the cold start went.
    println!("the binary's writes until converged, per Cluster (mla_api_writes_total):");
    for (labels, n) in support::binary_writes(seed.admin_port).await? {
        println!("  {:>8.2}  {labels}", n as f64 / count as f64);
    }
    report(
        &format!(
            "seed, {count} MLA Clusters: cold start -> every controller converged (5 conditions settled, last write)"
        ),
        format!("{:.1} s", converged.as_secs_f64()),
        "-",
        Met::NoGoal,
    );
    support::report_writes_during(
        &seed.client,
        Duration::from_secs(2 * resync + 5),
        &format!("seed, {count} MLA Clusters: writes during two {resync} s no-change resync periods"),
    )
    .await?;
    let rss = mla_e2e::bench::peak_rss_mib(process.id()).unwrap_or(f64::NAN);
    let (text, met) = goal("<= 200 MiB", rss <= 200.0);
    report(&format!("seed peak RSS, {count} MLA Clusters, all controllers on"), format!("{rss:.0} MiB"), text, met);

    // The limit, in the same run: the least the API server must take per Cluster, sent
    // as fast as it serves it, with the binary stopped.
    let events = (support::our_events(&seed.client).await? as f64 / count as f64).round() as usize;
    drop(process);
    let sample = (count / 5).clamp(1, 500);
    let limit = seed.raw_limit(sample, events).await?;
    let rate = count as f64 / gateways.as_secs_f64();
    report(
        &format!(
            "seed, {count} MLA Clusters: cold start rate ÷ the API server's rate for the same writes alone \
             ({:.1} writes per Cluster, {sample} Clusters' worth, same run)",
            limit.writes_per_cluster
        ),
        format!("{:.2} ({rate:.1} vs {:.1} Clusters/s)", rate / limit.clusters_per_second, limit.clusters_per_second),
        "-",
        Met::NoGoal,
    );
    Ok(())
}

/// What the API server served during the cold start, per Cluster and by kind (every verb,
/// every client: the binary's share is most of it), the most first: where its CPU went.
async fn print_requests_per_cluster(
    client: &kube::Client,
    before: &std::collections::BTreeMap<String, u64>,
    count: usize,
) -> anyhow::Result<()> {
    let after = mla_e2e::requests_where(client, |_, _, _| true).await?;
    let mut served: Vec<(u64, String)> = after
        .into_iter()
        .map(|(kind, n)| (n - before.get(&kind).copied().unwrap_or(0), kind))
        .filter(|(n, _)| *n > 0)
        .collect();
    served.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = served.iter().map(|(n, _)| n).sum();
    println!(
        "API requests during the cold start: {total} ({:.1} per Cluster); the most served:",
        total as f64 / count as f64
    );
    for (n, kind) in served.iter().take(20) {
        println!("  {:>8.2} per Cluster  {kind}", *n as f64 / count as f64);
    }
    Ok(())
}

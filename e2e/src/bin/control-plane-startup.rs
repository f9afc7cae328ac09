//! Benchmark: time from spawning etcd to a ready kube-apiserver (with bootstrap RBAC
//! roles), for N sequential control planes. Prints each run and the median.
//!
//! Usage: cargo run --release -p mla-e2e --bin control-plane-startup [runs=5]

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(5);
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for run in 1..=runs {
        let started = Instant::now();
        let plane = mla_e2e::ControlPlane::start("startup-bench").await?;
        let elapsed = started.elapsed();
        drop(plane);
        println!("run {run}: {:.2} s", elapsed.as_secs_f64());
        times.push(elapsed);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!("median of {runs}: {:.2} s", median.as_secs_f64());
    Ok(())
}

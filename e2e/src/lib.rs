//! Test support for the MLA controllers: real Kubernetes control planes (etcd and
//! kube-apiserver built by `hack/build-control-plane.sh`) on loopback, as many as a test
//! needs, and helpers to run the binaries under restricted identities.

pub mod agent;
pub mod backend;
pub mod bench;
pub mod control_plane;
pub mod cortex;
pub mod grafana;
pub mod iap;
pub mod kkp;
mod manifests;
pub mod master;
pub mod nginx;
pub mod node;
mod pki;
pub mod process;
pub mod real_parts;
pub mod world;

pub use control_plane::{ControlPlane, Identity};
pub use manifests::{
    apply_manifest, apply_seed_manager_rbac, requests_where, write_requests, write_requests_by_resource,
    write_requests_where,
};
pub use process::{ManagedProcess, Stop};

use std::path::{Path, PathBuf};

/// The workspace root (where `Cargo.toml`, `manifests/` and `hack/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 for a process a test starts (bound and released).
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999
/// by default), not from it: a port from that range is also the local port of the next
/// outgoing connection, and between this call and the process binding it an outgoing
/// connection of the test took one (CI: a Prometheus receiver failed with "bind: address
/// already in use"). Ports go round a range below it from an offset per process, so two
/// test processes rarely try the same ones; one that is bound is skipped. Without room
/// below the ephemeral range (a range starting under 20,000), the kernel picks.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low >= LOW + 10_000 {
        let span = ephemeral_low - LOW;
        let offset = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..span.min(2_000) {
            let port = LOW + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let Ok(port) = u16::try_from(port) else { continue };
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Ok(listener.local_addr()?.port());
            }
        }
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Waits until `check` returns `Ok(Some(v))`, polling every 100 ms, or fails after
/// `timeout` with the last error or `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match last {
                Some(error) => error.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

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
    apply_manifest, apply_seed_manager_rbac, write_requests, write_requests_by_resource, write_requests_where,
};
pub use process::{ManagedProcess, Stop};

use std::path::{Path, PathBuf};

/// The workspace root (where `Cargo.toml`, `manifests/` and `hack/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again
/// at once).
pub fn free_port() -> std::io::Result<u16> {
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

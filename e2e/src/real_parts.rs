//! Where the real third-party parts are: Cortex, Prometheus 3 with promtool, oauth2-proxy
//! and the mock OIDC provider, built from their Go modules by `hack/build-real-parts.sh`
//! (once; later calls answer from its cache).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::workspace_root;

/// The part names `hack/build-real-parts.sh` knows.
pub const PARTS: &[&str] = &["cortex", "prometheus", "oauth2-proxy", "mock-oidc"];

/// The directory holding the binaries of `part` (`cortex`, `prometheus` with `promtool`,
/// `oauth2-proxy`, `mock-oidc`): `$MLA_<PART>_BIN` (e.g. `MLA_CORTEX_BIN`), else what
/// `hack/build-real-parts.sh <part>` prints.
pub fn bin_dir(part: &str) -> anyhow::Result<PathBuf> {
    static DIRS: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    anyhow::ensure!(PARTS.contains(&part), "unknown part {part}");
    let dirs = DIRS.get_or_init(Default::default);
    // Held while building, so concurrent tests wait for one build instead of racing.
    let mut dirs = dirs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = dirs.get(part) {
        return Ok(dir.clone());
    }
    let variable = format!("MLA_{}_BIN", part.to_uppercase().replace('-', "_"));
    let dir = match std::env::var_os(&variable) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = workspace_root().join("hack/build-real-parts.sh");
            let output = Command::new("bash")
                .arg(&script)
                .arg(part)
                .output()
                .map_err(|e| anyhow::anyhow!("running {}: {e}", script.display()))?;
            anyhow::ensure!(
                output.status.success(),
                "{} {part} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{part} ")).map(PathBuf::from))
                .ok_or_else(|| anyhow::anyhow!("{} printed no directory for {part}", script.display()))?
        }
    };
    dirs.insert(part.to_string(), dir.clone());
    Ok(dir)
}

/// The path of binary `name` of `part` (e.g. `("prometheus", "promtool")`).
pub fn binary(part: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir(part)?.join(name);
    anyhow::ensure!(path.is_file(), "{} is missing: run hack/build-real-parts.sh {part}", path.display());
    Ok(path)
}

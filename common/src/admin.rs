//! The admin server of every binary: `/livez`, `/readyz` and `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Whether the binary is ready: every registered gate (one per watch) has synced and
/// shutdown has not begun.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Debug, Default)]
struct ReadinessInner {
    gates: Mutex<BTreeMap<String, bool>>,
    shutting_down: AtomicBool,
}

impl Readiness {
    /// Registers a gate, not ready until [`ReadinessGate::set_ready`] is called.
    pub fn gate(&self, name: impl Into<String>) -> ReadinessGate {
        let name = name.into();
        self.gates().insert(name.clone(), false);
        ReadinessGate { readiness: self.clone(), name }
    }

    /// Registers gate `name` and returns what opens it: for a watch that reports its first
    /// complete list through a callback (`mla_common::runtime::on_first_sync`).
    pub fn opener(&self, name: &str) -> impl FnOnce() + Send + 'static + use<> {
        let gate = self.gate(name);
        move || gate.set_ready()
    }

    /// Ready: not shutting down and every gate ready.
    pub fn is_ready(&self) -> bool {
        !self.inner.shutting_down.load(Ordering::SeqCst) && self.gates().values().all(|ready| *ready)
    }

    /// Marks the binary as shutting down; `/readyz` fails from now on.
    pub fn shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// One line per gate, for `/readyz`'s body.
    fn report(&self) -> String {
        let mut out = String::new();
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            out.push_str("[-]shutdown: shutting down\n");
        }
        for (name, ready) in self.gates().iter() {
            out.push_str(&format!("[{}]{name}\n", if *ready { "+" } else { "-" }));
        }
        out
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.inner.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One condition of readiness, e.g. "the Seed watch has synced".
#[derive(Debug)]
pub struct ReadinessGate {
    readiness: Readiness,
    name: String,
}

impl ReadinessGate {
    /// Marks this gate ready.
    pub fn set_ready(&self) {
        if self.readiness.gates().insert(self.name.clone(), true) != Some(true) {
            tracing::info!(gate = %self.name, "ready");
        }
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    readiness: Readiness,
    metrics: Metrics,
}

/// The admin router; exposed for tests that serve it on their own listener.
pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let status = if state.readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, state.readiness.report())
}

/// Serves OpenMetrics to scrapers that ask for it (Prometheus does) and the classic
/// Prometheus text format to everyone else (curl, older tools, `promtool check metrics`).
async fn metrics_handler(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let Ok(body) = state.metrics.encode() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response();
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], openmetrics_to_text(&body)).into_response()
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4: counter families are named
/// with their `_total` suffix (as their samples are), and `# UNIT` and `# EOF` go.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Binds the admin address and serves until `shutdown` is cancelled. Binding happens
/// before this returns, so a port conflict fails start-up instead of a background task.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(readiness, metrics);
    let task =
        tokio::spawn(
            async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await },
        );
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_total_families() {
        let om = "# HELP a_seconds Time.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\na_seconds_total 1\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_seconds_total Time.\n# TYPE a_seconds_total counter\na_seconds_total 1\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn an_opener_registers_its_gate_closed_and_opens_it_when_called() {
        let readiness = Readiness::default();
        let open = readiness.opener("secrets");
        assert!(!readiness.is_ready());
        assert_eq!(readiness.report(), "[-]secrets\n");
        open();
        assert!(readiness.is_ready());
    }

    #[test]
    fn readiness_needs_every_gate_and_no_shutdown() {
        let readiness = Readiness::default();
        let seeds = readiness.gate("seeds");
        let secrets = readiness.gate("secrets");
        assert!(!readiness.is_ready());
        seeds.set_ready();
        assert!(!readiness.is_ready());
        secrets.set_ready();
        assert!(readiness.is_ready());
        assert_eq!(readiness.report(), "[+]secrets\n[+]seeds\n");
        readiness.shutting_down();
        assert!(!readiness.is_ready());
        assert!(readiness.report().starts_with("[-]shutdown"));
    }
}

//! The admin server of every binary: `/livez`, `/readyz` and `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
        self.readiness.gates().insert(self.name.clone(), true);
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

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
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
    let task = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
    });
    Ok((local, task))
}

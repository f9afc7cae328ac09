//! A recording multi-tenant backend standing in for the Cortex and Loki distributors and
//! query frontends (neither can be built here): every request is recorded with the tenant
//! nginx pinned (`X-Scope-OrgID`), and metrics pushes are passed on to a real Prometheus
//! remote-write receiver so that the samples can be queried.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::{ManagedProcess, free_port};

/// One request the backend received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Every `X-Scope-OrgID` value, joined by `,` (one is expected).
    pub tenant: String,
    /// Request path.
    pub path: String,
    /// The `X-Test-Marker` header, if a test set one to find its request again.
    pub marker: Option<String>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    receiver: String,
    client: reqwest::Client,
}

/// The recording backend and the Prometheus receiver behind it; both stop on drop.
pub struct RecordingBackend {
    url: String,
    receiver_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _receiver: ManagedProcess,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for RecordingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingBackend").field("url", &self.url).finish_non_exhaustive()
    }
}

impl RecordingBackend {
    /// Starts a Prometheus remote-write receiver (data in `dir`) and the recorder.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n")?;
        let mut command = Command::new("prometheus");
        command
            .arg("--web.enable-remote-write-receiver")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let receiver = ManagedProcess::spawn("receiver", command, &dir.join("receiver.log"))?;
        let receiver_url = format!("http://127.0.0.1:{port}");
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared =
            Shared { received: received.clone(), receiver: receiver_url.clone(), client: reqwest::Client::new() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let router =
            axum::Router::new().route("/__received", axum::routing::get(summary)).fallback(record).with_state(shared);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { url, receiver_url, received, _receiver: receiver, stop })
    }

    /// Base URL of the recorder (every upstream of the gateway points here).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Base URL of the Prometheus that holds the pushed samples.
    pub fn receiver_url(&self) -> &str {
        &self.receiver_url
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests received per tenant and path.
    pub fn by_tenant(&self) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for r in self.received() {
            *out.entry((r.tenant, r.path)).or_insert(0) += 1;
        }
        out
    }

    /// Stops the recorder (the receiver stops on drop).
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// `GET /__received`: requests received per tenant and path, as JSON.
async fn summary(State(shared): State<Shared>) -> axum::response::Response {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in shared.received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        *counts.entry(r.tenant.clone()).or_default().entry(r.path.clone()).or_insert(0) += 1;
    }
    let body = serde_json::json!({ "requests_by_tenant_and_path": counts }).to_string();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn record(State(shared): State<Shared>, request: Request) -> axum::response::Response {
    let headers = request.headers().clone();
    let tenant = headers
        .get_all("x-scope-orgid")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let path = request.uri().path().to_string();
    let marker = headers.get("x-test-marker").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    shared.received.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
        tenant,
        path: path.clone(),
        marker: marker.clone(),
    });
    if path != "/api/v1/push" || marker.is_some() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut outgoing = shared.client.post(format!("{}/api/v1/write", shared.receiver)).body(body);
    for name in ["content-type", "content-encoding", "x-prometheus-remote-write-version"] {
        if let Some(value) = headers.get(name) {
            outgoing = outgoing.header(name, value.as_bytes());
        }
    }
    match outgoing.send().await {
        Ok(response) => {
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

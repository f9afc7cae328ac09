//! A recording stand-in for Loki's distributor and query frontend (Loki is AGPL and may
//! not be built here; Cortex runs for real, see [`crate::cortex::Cortex`]): every request is
//! recorded with the tenant nginx pinned (`X-Scope-OrgID`) and answered 204, as Loki's
//! push API answers a good push (grafana/loki `pkg/distributor/http.go`,
//! `Distributor.pushHandler`, read at commit 01b5e3466b4b: `w.WriteHeader(http.
//! StatusNoContent)`). It does not parse the body: Loki answers 400 to a body that is
//! neither JSON nor snappy-compressed protobuf (`push.ParseRequest`), this stand-in does
//! not, so no test may rely on it to refuse a malformed push.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

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
}

/// The recording stand-in; stops when [`RecordingBackend::stop`] is called or the runtime
/// ends.
pub struct RecordingBackend {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for RecordingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingBackend").field("url", &self.url).finish_non_exhaustive()
    }
}

impl RecordingBackend {
    /// Starts the stand-in on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { received: received.clone() };
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
        Ok(Self { url, received, stop })
    }

    /// Base URL (the gateway's Loki distributor and query frontend point here).
    pub fn url(&self) -> &str {
        &self.url
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
    StatusCode::NO_CONTENT.into_response()
}

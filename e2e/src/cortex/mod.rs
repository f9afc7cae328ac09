//! Cortex for tests: real Cortex ([`Cortex`], `process.rs`, built by
//! `hack/build-real-parts.sh`), remote-write requests made by hand ([`remote_write`]), and
//! a stand-in for Loki's ruler ([`CortexServer`], this file).
//!
//! Every test of Cortex behaviour runs real Cortex. Loki is AGPL and may not be built here,
//! and the tests need a Loki ruler, so this file keeps a test server of Loki's ruler API
//! (`/loki/api/v1/rules`, Loki's `docs/sources/reference/loki-http-api.md`, the same shapes
//! as Cortex's ruler API in `cortexproject/cortex` `docs/api/_index.md`, "Ruler"), with
//! in-memory state. Its Cortex routes are gone: where they differed from Cortex 1.21.1
//! (docs/alerting.md lists how), real Cortex was right. Tenancy follows Cortex's and
//! Loki's `tenant` package: a request without `X-Scope-OrgID` is refused with 401
//! `no org id`.
//!
//! Routes, all under `/loki/api/v1/rules`:
//! - `GET /loki/api/v1/rules`: 200 with `{namespace: [group, ...]}`, 404 when none;
//! - `GET .../{namespace}`: the same for one namespace, 404 when none;
//! - `POST .../{namespace}`: one rule group in YAML; 202, or 400 when invalid;
//! - `DELETE .../{namespace}`: 202, 404 when none;
//! - `GET .../{namespace}/{group}`: the group, 404 when none;
//! - `DELETE .../{namespace}/{group}`: 202, 404 when none (Loki's handler answers 404 only
//!   when its store reports the group missing, which depends on the storage backend).
//!
//! Validation refuses what the ruler's `rulefmt` would: a rule group without a name, with
//! unknown keys, or with a rule that is neither exactly one of `record`/`alert` nor has an
//! `expr`. LogQL is not parsed.
//!
//! Test hooks (methods of [`CortexServer`]): mutating calls per tenant, the stored state,
//! and an availability switch that makes every route answer 503.

mod process;
pub mod remote_write;
pub use process::{Calls, Cortex, TENANT_HEADER, is_config_route, listeners, parse_mutating_calls, push, query};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_yaml::Value;

/// Which ruler a rule route belongs to: only Loki's is served here (Cortex's is real).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ruler {
    /// The Loki ruler, `/loki/api/v1/rules`.
    Loki,
}

/// namespace -> group name -> group.
type Namespaces = BTreeMap<String, BTreeMap<String, Value>>;

#[derive(Debug, Default)]
struct Db {
    /// (ruler, tenant) -> namespaces.
    rules: BTreeMap<(Ruler, String), Namespaces>,
    /// tenant -> mutating calls.
    mutations: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Shared {
    db: Mutex<Db>,
    available: AtomicBool,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type App = Arc<Shared>;

/// A running test server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct CortexServer {
    url: String,
    shared: App,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl CortexServer {
    /// Starts a server with no tenants. Must be called inside a tokio runtime.
    pub async fn start() -> std::io::Result<CortexServer> {
        let shared = Arc::new(Shared { db: Mutex::new(Db::default()), available: AtomicBool::new(true) });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let router = router(shared.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "cortex test server stopped");
            }
        });
        Ok(CortexServer { url: format!("http://{addr}"), shared, shutdown: Some(shutdown), task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Mutating calls (POST, DELETE) received for `tenant` while available, whatever their
    /// outcome.
    pub fn mutations(&self, tenant: &str) -> u64 {
        self.shared.db().mutations.get(tenant).copied().unwrap_or(0)
    }

    /// Mutating calls of every tenant.
    pub fn total_mutations(&self) -> u64 {
        self.shared.db().mutations.values().sum()
    }

    /// Every `(namespace, group)` stored in `ruler` for `tenant`.
    pub fn rule_groups(&self, ruler: Ruler, tenant: &str) -> Vec<(String, String)> {
        let db = self.shared.db();
        db.rules
            .get(&(ruler, tenant.to_string()))
            .map(|namespaces| {
                namespaces
                    .iter()
                    .flat_map(|(namespace, groups)| groups.keys().map(move |group| (namespace.clone(), group.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One stored rule group.
    pub fn rule_group(&self, ruler: Ruler, tenant: &str, namespace: &str, group: &str) -> Option<Value> {
        self.shared.db().rules.get(&(ruler, tenant.to_string()))?.get(namespace)?.get(group).cloned()
    }

    /// `false`: every route answers 503 (the backend is down behind its Service); the
    /// state is kept and served again after `true`.
    pub fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::SeqCst);
    }
}

impl Drop for CortexServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

fn router(shared: App) -> Router {
    Router::new()
        .route("/loki/api/v1/rules", get(list_loki_rules))
        .route(
            "/loki/api/v1/rules/{namespace}",
            get(get_loki_namespace).post(set_loki_group).delete(delete_loki_namespace),
        )
        .route("/loki/api/v1/rules/{namespace}/{group}", get(get_loki_group).delete(delete_loki_group))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Availability, tenancy and the mutation counter, before any handler.
async fn gate(State(app): State<App>, request: Request, next: Next) -> Response {
    if !app.available.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n").into_response();
    }
    let Some(tenant) = tenant(request.headers()) else {
        // Cortex's tenant.ExtractTenantIDFromHTTPRequest -> user.ErrNoOrgID.
        return (StatusCode::UNAUTHORIZED, "no org id\n").into_response();
    };
    if matches!(*request.method(), Method::POST | Method::DELETE | Method::PUT | Method::PATCH) {
        *app.db().mutations.entry(tenant).or_insert(0) += 1;
    }
    next.run(request).await
}

fn tenant(headers: &HeaderMap) -> Option<String> {
    headers.get("X-Scope-OrgID").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_string)
}

fn tenant_of(headers: &HeaderMap) -> String {
    tenant(headers).unwrap_or_default()
}

fn yaml_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_yaml::to_string(value) {
        Ok(text) => (status, [("Content-Type", "application/yaml")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

// --- Rulers ---------------------------------------------------------------------------

const GROUP_KEYS: &[&str] =
    &["name", "interval", "rules", "limit", "source_tenants", "evaluation_delay", "query_offset", "labels"];
const RULE_KEYS: &[&str] = &["record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"];

/// What the ruler's `rulefmt` refuses.
pub fn validate_rule_group(group: &Value) -> Result<String, String> {
    let Value::Mapping(map) = group else { return Err("the rule group is not a YAML mapping".into()) };
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !GROUP_KEYS.contains(&key) {
            return Err(format!("field {key} not found in type rulefmt.RuleGroup"));
        }
    }
    let name = map.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err("invalid rules config: rule group name must not be empty".into());
    }
    let rules = match map.get("rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(rules)) => rules.clone(),
        Some(_) => return Err("rules must be a list".into()),
    };
    for (index, rule) in rules.iter().enumerate() {
        let Value::Mapping(rule) = rule else { return Err(format!("rule {index}: not a mapping")) };
        for key in rule.keys() {
            let key = key.as_str().unwrap_or_default();
            if !RULE_KEYS.contains(&key) {
                return Err(format!("rule {index}: field {key} not found in type rulefmt.Rule"));
            }
        }
        let record = rule.get("record").and_then(Value::as_str).unwrap_or_default();
        let alert = rule.get("alert").and_then(Value::as_str).unwrap_or_default();
        if record.is_empty() == alert.is_empty() {
            return Err(format!("group {name:?}, rule {index}: one of 'record' or 'alert' must be set"));
        }
        if rule.get("expr").and_then(Value::as_str).unwrap_or_default().trim().is_empty() {
            return Err(format!("group {name:?}, rule {index}: field 'expr' must be set in rule"));
        }
    }
    Ok(name)
}

fn list_rules(app: &App, ruler: Ruler, headers: &HeaderMap, namespace: Option<&str>) -> Response {
    let db = app.db();
    let Some(namespaces) = db.rules.get(&(ruler, tenant_of(headers))) else {
        return (StatusCode::NOT_FOUND, "no rule groups found\n").into_response();
    };
    let listed: BTreeMap<&String, Vec<&Value>> = namespaces
        .iter()
        .filter(|(name, groups)| namespace.is_none_or(|n| n == name.as_str()) && !groups.is_empty())
        .map(|(name, groups)| (name, groups.values().collect()))
        .collect();
    if listed.is_empty() {
        return (StatusCode::NOT_FOUND, "no rule groups found\n").into_response();
    }
    yaml_response(StatusCode::OK, &listed)
}

fn set_group(app: &App, ruler: Ruler, headers: &HeaderMap, namespace: &str, body: &[u8]) -> Response {
    let group: Value = match serde_yaml::from_slice(body) {
        Ok(group) => group,
        Err(error) => return bad_request(format!("unable to decode rule group: {error}")),
    };
    let name = match validate_rule_group(&group) {
        Ok(name) => name,
        Err(error) => return bad_request(error),
    };
    let mut db = app.db();
    db.rules
        .entry((ruler, tenant_of(headers)))
        .or_default()
        .entry(namespace.to_string())
        .or_default()
        .insert(name, group);
    StatusCode::ACCEPTED.into_response()
}

fn get_group(app: &App, ruler: Ruler, headers: &HeaderMap, namespace: &str, group: &str) -> Response {
    let db = app.db();
    match db.rules.get(&(ruler, tenant_of(headers))).and_then(|n| n.get(namespace)).and_then(|g| g.get(group)) {
        Some(value) => yaml_response(StatusCode::OK, value),
        None => (StatusCode::NOT_FOUND, "group does not exist\n").into_response(),
    }
}

fn delete_group(app: &App, ruler: Ruler, headers: &HeaderMap, namespace: &str, group: &str) -> Response {
    let mut db = app.db();
    let key = (ruler, tenant_of(headers));
    let removed = db.rules.get_mut(&key).and_then(|n| n.get_mut(namespace)).and_then(|g| g.remove(group));
    if let Some(namespaces) = db.rules.get_mut(&key) {
        namespaces.retain(|_, groups| !groups.is_empty());
    }
    match removed {
        Some(_) => StatusCode::ACCEPTED.into_response(),
        None => (StatusCode::NOT_FOUND, "group does not exist\n").into_response(),
    }
}

fn delete_namespace(app: &App, ruler: Ruler, headers: &HeaderMap, namespace: &str) -> Response {
    let mut db = app.db();
    match db.rules.get_mut(&(ruler, tenant_of(headers))).and_then(|n| n.remove(namespace)) {
        Some(_) => StatusCode::ACCEPTED.into_response(),
        None => (StatusCode::NOT_FOUND, "no rule groups found\n").into_response(),
    }
}

async fn list_loki_rules(State(app): State<App>, headers: HeaderMap) -> Response {
    list_rules(&app, Ruler::Loki, &headers, None)
}
async fn get_loki_namespace(State(app): State<App>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    list_rules(&app, Ruler::Loki, &headers, Some(&ns))
}
async fn set_loki_group(State(app): State<App>, headers: HeaderMap, Path(ns): Path<String>, body: Bytes) -> Response {
    set_group(&app, Ruler::Loki, &headers, &ns, &body)
}
async fn delete_loki_namespace(State(app): State<App>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    delete_namespace(&app, Ruler::Loki, &headers, &ns)
}
async fn get_loki_group(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    get_group(&app, Ruler::Loki, &headers, &ns, &group)
}
async fn delete_loki_group(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
) -> Response {
    delete_group(&app, Ruler::Loki, &headers, &ns, &group)
}

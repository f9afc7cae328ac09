//! A Grafana HTTP API test server: the endpoints the MLA controllers use, answered the way
//! Grafana documents and implements them, with in-memory state, because a real Grafana
//! cannot run on the test machines.
//!
//! Sources (all in the `grafana/grafana` repository):
//! - docs: `docs/sources/developers/http_api/{org,admin,user,data_source,dashboard}.md`
//!   (paths, request and response bodies, documented status codes);
//! - OpenAPI: `public/api-merged.json` (response models);
//! - handlers, for error messages and status codes the docs leave out:
//!   `pkg/api/{org,org_users,admin_users,user,datasources,dashboard}.go`,
//!   `pkg/services/dashboards/errors.go`, `pkg/services/datasources/errors.go`,
//!   `pkg/middleware/auth.go` (401 "Unauthorized"), `pkg/services/accesscontrol/middleware.go`
//!   (the RBAC 403 "You'll need additional permissions ... Permissions needed: <action>"),
//!   `pkg/services/authn/clients/password.go` ("Invalid username or password"),
//!   `pkg/services/user/userimpl/store.go` (`GetSignedInUser`: a user sending the
//!   `X-Grafana-Org-Id` of an org they do not belong to gets no role there).
//!
//! Each handler's doc comment names the source it follows. Behaviour that had to be chosen
//! without a source saying so is marked "Assumed". Where Grafana releases differ for the
//! controllers, [`GrafanaConfig::version`] picks the release acted as ([`GrafanaVersion`]:
//! 10.4, 11.0-11.2, 12.x); `docs/grafana.md` ("Grafana versions") has the matrix.
//!
//! Test hooks, outside Grafana's API under `/__test/` (and as methods on
//! [`GrafanaServer`]): mutating-call counters by endpoint group, and an availability
//! switch that makes every Grafana route answer 503.

mod api;
mod dashboards;
mod datasources;
mod state;
mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde_json::json;

use state::Db;
pub use state::Role;
use util::{ApiError, json_response};

/// The Grafana release the server acts as, where releases differ in what the MLA
/// controllers see. Releases read: v10.4.x, v11.0.x-v11.2.x, v12.x of `grafana/grafana`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum GrafanaVersion {
    /// 10.4: datasource uids are not validated; a dashboard saved with `overwrite` takes
    /// over another dashboard of the same **slug** in its folder
    /// (`pkg/services/dashboards/database/database.go` `getExistingDashboardByTitleAndFolder`
    /// queries `slug=?`).
    V10_4,
    /// 11.0 to 11.2: datasource uids are checked only with the feature `failWrongDSUID`
    /// (added in 11.2, off by default; 11.1 logs a warning); a dashboard saved with
    /// `overwrite` takes over another dashboard of the same **title** in its folder.
    V11_2,
    /// 12.x (the default): `failWrongDSUID` is on by default, so a datasource create or
    /// update with a uid `util.ValidateUID` refuses (over 40 characters, or outside
    /// `[a-zA-Z0-9_-]`) is 400 (`pkg/services/datasources/service/store.go`
    /// `AddDataSource`/`UpdateDataSource`, `datasources.ErrDataSourceUIDInvalid`); titles are
    /// not matched on save.
    #[default]
    V12,
}

impl GrafanaVersion {
    /// Every version, oldest first.
    pub const ALL: [GrafanaVersion; 3] = [GrafanaVersion::V10_4, GrafanaVersion::V11_2, GrafanaVersion::V12];

    /// What `GET /api/health` reports.
    pub fn reported(self) -> &'static str {
        match self {
            GrafanaVersion::V10_4 => "10.4.0",
            GrafanaVersion::V11_2 => "11.2.0",
            GrafanaVersion::V12 => "12.0.0",
        }
    }

    /// Datasource uids are validated on create and update (`failWrongDSUID`).
    pub fn validates_datasource_uids(self) -> bool {
        self >= GrafanaVersion::V12
    }

    /// How a dashboard save finds another dashboard that holds its name in the folder.
    pub(crate) fn dashboard_name_match(self) -> Option<NameMatch> {
        match self {
            GrafanaVersion::V10_4 => Some(NameMatch::Slug),
            GrafanaVersion::V11_2 => Some(NameMatch::Title),
            GrafanaVersion::V12 => None,
        }
    }
}

/// What makes two dashboards of a folder "the same name".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameMatch {
    Slug,
    Title,
}

/// Endpoint groups for the mutating-call counters.
pub mod group {
    /// `/api/orgs` and `/api/orgs/:orgId` (create, rename, delete organizations).
    pub const ORGS: &str = "orgs";
    /// `/api/orgs/:orgId/users...` (memberships and roles).
    pub const ORG_USERS: &str = "org_users";
    /// `/api/admin/users...` (create and delete users, server-admin flag).
    pub const USERS: &str = "users";
    /// `/api/datasources...`.
    pub const DATASOURCES: &str = "datasources";
    /// `/api/dashboards...`.
    pub const DASHBOARDS: &str = "dashboards";
    /// Any other path.
    pub const OTHER: &str = "other";
}

/// How the test server is configured, mirroring the `grafana.ini` settings that matter.
#[derive(Debug, Clone)]
pub struct GrafanaConfig {
    /// `[security] admin_user`.
    pub admin_user: String,
    /// `[security] admin_password`.
    pub admin_password: String,
    /// `[auth.proxy] header_name` with `header_property = email`, `enabled = true`;
    /// `None` disables the auth proxy.
    pub auth_proxy_header: Option<String>,
    /// `[auth.proxy] auto_sign_up`.
    pub auth_proxy_auto_sign_up: bool,
    /// `[users] auto_assign_org_id` (Grafana's default: 1).
    pub auto_assign_org_id: i64,
    /// `[users] auto_assign_org_role` (Grafana's default: Viewer).
    pub auto_assign_org_role: Role,
    /// `[users] allow_org_create` (Grafana's default: false; server admins may always).
    pub allow_org_create: bool,
    /// `[auth.basic] password_policy` (Grafana's default: false).
    pub strong_password_policy: bool,
    /// The release to act as.
    pub version: GrafanaVersion,
}

impl GrafanaConfig {
    /// Grafana's defaults plus the auth proxy on `X-Forwarded-Email` with auto sign-up,
    /// as the MLA stack configures it.
    pub fn new(admin_user: &str, admin_password: &str) -> GrafanaConfig {
        GrafanaConfig {
            admin_user: admin_user.to_string(),
            admin_password: admin_password.to_string(),
            auth_proxy_header: Some("X-Forwarded-Email".to_string()),
            auth_proxy_auto_sign_up: true,
            auto_assign_org_id: 1,
            auto_assign_org_role: Role::Viewer,
            allow_org_create: false,
            strong_password_policy: false,
            version: GrafanaVersion::default(),
        }
    }

    /// The same, acting as `version`.
    pub fn with_version(mut self, version: GrafanaVersion) -> GrafanaConfig {
        self.version = version;
        self
    }
}

/// Mutating calls (POST, PUT, PATCH, DELETE) received by endpoint group (see [`group`]),
/// whatever their outcome, while the server was available.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutationCounts {
    /// Calls per group; groups without calls are absent.
    pub by_group: BTreeMap<String, u64>,
}

impl MutationCounts {
    /// All mutating calls.
    pub fn total(&self) -> u64 {
        self.by_group.values().sum()
    }

    /// Mutating calls in one group.
    pub fn get(&self, group: &str) -> u64 {
        self.by_group.get(group).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    config: GrafanaConfig,
    db: Mutex<Db>,
    available: AtomicBool,
    mutations: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mutations(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.mutations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) type App = Arc<Shared>;

/// A running test server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct GrafanaServer {
    url: String,
    addr: SocketAddr,
    shared: App,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrafanaServer {
    /// Starts a server whose admin (user id 1, server admin, Admin of org 1 "Main Org.")
    /// signs in with `admin_user` / `admin_password`. Must be called inside a tokio runtime.
    pub async fn start(admin_user: &str, admin_password: &str) -> std::io::Result<GrafanaServer> {
        GrafanaServer::start_with(GrafanaConfig::new(admin_user, admin_password)).await
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: GrafanaConfig) -> std::io::Result<GrafanaServer> {
        let shared = Arc::new(Shared {
            db: Mutex::new(Db::new(&config.admin_user, &config.admin_password)),
            config,
            available: AtomicBool::new(true),
            mutations: Mutex::new(BTreeMap::new()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let router = router(shared.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "grafana test server stopped");
            }
        });
        Ok(GrafanaServer { url: format!("http://{addr}"), addr, shared, shutdown: Some(shutdown), task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin credentials the server was started with.
    pub fn admin_credentials(&self) -> (&str, &str) {
        (&self.shared.config.admin_user, &self.shared.config.admin_password)
    }

    /// Mutating calls since start or the last [`GrafanaServer::reset_mutations`].
    pub fn mutations(&self) -> MutationCounts {
        MutationCounts { by_group: self.shared.mutations().clone() }
    }

    /// Zeroes the mutation counters.
    pub fn reset_mutations(&self) {
        self.shared.mutations().clear();
    }

    /// `false`: every Grafana route answers 503 (Grafana down behind its load balancer);
    /// the state is kept and served again after `true`.
    pub fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::SeqCst);
    }

    /// The release the server acts as.
    pub fn version(&self) -> GrafanaVersion {
        self.shared.config.version
    }

    /// Marks the datasource `uid` of `org` read-only, as Grafana's file provisioning makes
    /// its datasources (`editable: false`): updates and deletes through the API are then
    /// 403 (`pkg/api/datasources.go`). Returns whether the datasource exists.
    pub fn set_datasource_read_only(&self, org: i64, uid: &str, read_only: bool) -> bool {
        let mut db = self.shared.db();
        match db.datasources.values_mut().find(|d| d.org_id == org && d.uid == uid) {
            Some(ds) => {
                ds.read_only = read_only;
                true
            }
            None => false,
        }
    }

    /// Marks the user with this login or email as externally synced (its org roles come
    /// from LDAP, OAuth or SAML): role updates through the API are then 403
    /// (`pkg/api/org_users.go` `updateOrgUserHelper`). Returns whether the user exists.
    pub fn set_user_externally_synced(&self, login_or_email: &str, synced: bool) -> bool {
        let mut db = self.shared.db();
        let Some(id) = db.user_by_login_or_email(login_or_email).map(|u| u.id) else { return false };
        if let Some(user) = db.users.get_mut(&id) {
            user.externally_synced = synced;
        }
        true
    }

    /// Whether the server currently answers Grafana routes.
    pub fn is_available(&self) -> bool {
        self.shared.available.load(Ordering::SeqCst)
    }
}

impl Drop for GrafanaServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

fn router(shared: App) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/user", get(api::signed_in_user))
        // Organizations: docs/sources/developers/http_api/org.md, "Admin Organizations API".
        .route("/api/orgs", get(api::list_orgs).post(api::create_org))
        .route("/api/orgs/name/{name}", get(api::get_org_by_name))
        .route("/api/orgs/{org_id}", get(api::get_org).put(api::update_org).delete(api::delete_org))
        .route("/api/orgs/{org_id}/users", get(api::list_org_users).post(api::add_org_user))
        .route("/api/orgs/{org_id}/users/{user_id}", patch(api::update_org_user).delete(api::remove_org_user))
        // Users: user.md and admin.md.
        .route("/api/users", get(api::search_users))
        .route("/api/users/lookup", get(api::lookup_user))
        .route("/api/users/{id}", get(api::get_user))
        .route("/api/users/{id}/orgs", get(api::get_user_orgs))
        .route("/api/admin/users", post(api::admin_create_user))
        .route("/api/admin/users/{id}", delete(api::admin_delete_user))
        .route("/api/admin/users/{id}/permissions", put(api::admin_update_permissions))
        // Datasources: data_source.md.
        .route("/api/datasources", get(datasources::list_datasources).post(datasources::create_datasource))
        .route(
            "/api/datasources/uid/{uid}",
            get(datasources::get_datasource).put(datasources::update_datasource).delete(datasources::delete_datasource),
        )
        // Dashboards: dashboard.md and folder_dashboard_search.md.
        .route("/api/dashboards/db", post(dashboards::save_dashboard))
        .route("/api/dashboards/uid/{uid}", get(dashboards::get_dashboard).delete(dashboards::delete_dashboard))
        .route("/api/search", get(dashboards::search))
        // Test hooks.
        .route("/__test/mutations", get(hook_mutations).delete(hook_reset_mutations))
        .route("/__test/available", get(hook_get_available).put(hook_set_available))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// The group a path belongs to, for the mutation counters.
fn group_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "orgs", _, "users", ..] => group::ORG_USERS,
        ["api", "orgs", ..] => group::ORGS,
        ["api", "admin", "users", ..] => group::USERS,
        ["api", "datasources", ..] => group::DATASOURCES,
        ["api", "dashboards", ..] => group::DASHBOARDS,
        _ => group::OTHER,
    }
}

/// Availability switch and mutation counting in front of every Grafana route.
async fn gate(State(shared): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/__test/") {
        return next.run(request).await;
    }
    if !shared.available.load(Ordering::SeqCst) {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "message": "Service Unavailable" }));
    }
    if matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        *shared.mutations().entry(group_of(path).to_string()).or_insert(0) += 1;
    }
    next.run(request).await
}

/// Grafana answers unknown API routes with 404 `{"message":"Not found"}`.
async fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({ "message": "Not found" }))
}

/// Assumed: a JSON 405 for a known path with another method.
async fn method_not_allowed() -> Response {
    json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({ "message": "Method Not Allowed" }))
}

/// `GET /__test/mutations`: `{"total": n, "groups": {"orgs": n, ...}}`.
async fn hook_mutations(State(shared): State<App>) -> Response {
    let groups = shared.mutations().clone();
    let total: u64 = groups.values().sum();
    json_response(StatusCode::OK, &json!({ "total": total, "groups": groups }))
}

/// `DELETE /__test/mutations`: zeroes the counters.
async fn hook_reset_mutations(State(shared): State<App>) -> Response {
    shared.mutations().clear();
    json_response(StatusCode::OK, &json!({ "message": "Mutation counters reset" }))
}

/// `GET /__test/available`: `{"available": bool}`.
async fn hook_get_available(State(shared): State<App>) -> Response {
    json_response(StatusCode::OK, &json!({ "available": shared.available.load(Ordering::SeqCst) }))
}

/// `PUT /__test/available` with `{"available": bool}`.
async fn hook_set_available(State(shared): State<App>, body: Bytes) -> Response {
    let available = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("available").and_then(serde_json::Value::as_bool));
    match available {
        Some(available) => {
            shared.available.store(available, Ordering::SeqCst);
            json_response(StatusCode::OK, &json!({ "available": available }))
        }
        None => ApiError::bad_request_data().into_response(),
    }
}

/// Who is calling, in which org, with which role there.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user_id: i64,
    pub is_admin: bool,
    /// The org the request works in: `X-Grafana-Org-Id`, else the user's current org;
    /// -1 when the user is not a member of it (Grafana's "Org missing").
    pub org_id: i64,
    pub role: Option<Role>,
}

/// Authenticates a request as Grafana does with basic auth and the auth proxy enabled.
///
/// - Auth proxy (`docs/sources/setup-grafana/configure-security/configure-authentication/auth-proxy`):
///   the configured header carries the email (`header_property = email`); an unknown user is
///   created with login = email = the header value, member of `auto_assign_org_id` with
///   `auto_assign_org_role`, as `auto_sign_up` does. The proxy header wins over basic auth.
/// - Basic auth: login or email plus password; a wrong password or unknown user is 401
///   `{"message":"Invalid username or password","messageId":"password-auth.failed",
///   "statusCode":401,"traceID":""}` (`authn/clients/password.go` for the message id and
///   text; the 401 and the envelope as Grafana 10.4 answers them, observed in public
///   reports), a malformed header 401 "Invalid Basic Auth Header", no credentials 401
///   "Unauthorized" (`middleware/auth.go` `notAuthorized`), a bearer token 401 "Invalid API
///   key" (this server has no API keys).
/// - Org: `X-Grafana-Org-Id` if it parses, else the user's current org; not a member there
///   means no role (`GetSignedInUser` sets org -1, "Org missing").
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let mut db = shared.db();
    let config = &shared.config;
    let proxy_value = config
        .auth_proxy_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let user_id = if let Some(email) = proxy_value {
        match db.user_by_login_or_email(&email) {
            Some(user) => user.id,
            None if config.auth_proxy_auto_sign_up => {
                let org_id =
                    if db.orgs.contains_key(&config.auto_assign_org_id) { config.auto_assign_org_id } else { 1 };
                db.insert_user(state::NewUser {
                    login: &email,
                    email: &email,
                    name: "",
                    password: None,
                    org_id,
                    role: config.auto_assign_org_role,
                    is_external: true,
                })
            }
            None => return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")),
        }
    } else {
        let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
        };
        let authorization = authorization.to_str().map_err(|_| invalid_basic_auth())?;
        let (scheme, credentials) = authorization.trim().split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        use base64::Engine as _;
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(credentials.trim()).map_err(|_| invalid_basic_auth())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid_basic_auth())?;
        let (login, password) = decoded.split_once(':').ok_or_else(invalid_basic_auth)?;
        let invalid = || ApiError {
            status: StatusCode::UNAUTHORIZED,
            body: json!({
                "message": "Invalid username or password",
                "messageId": "password-auth.failed",
                "statusCode": 401,
                "traceID": "",
            }),
        };
        let user = db.user_by_login_or_email(login).ok_or_else(invalid)?;
        match &user.password {
            Some(expected) if !password.is_empty() && expected == password => user.id,
            _ => return Err(invalid()),
        }
    };
    let user =
        db.users.get(&user_id).cloned().ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"))?;
    let header_org = headers
        .get("X-Grafana-Org-Id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id > 0);
    let org_id = header_org.unwrap_or_else(|| db.current_org_of(&user));
    let role = db.members.get(&(org_id, user.id)).copied();
    Ok(Caller { user_id: user.id, is_admin: user.is_admin, org_id: if role.is_some() { org_id } else { -1 }, role })
}

fn invalid_basic_auth() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Invalid Basic Auth Header")
}

//! A thin client of Grafana's HTTP API: the calls the controller makes, each recorded in
//! `mla_external_requests_total{api="grafana"}` by endpoint group. Basic auth as Grafana's
//! admin; org-scoped calls carry `X-Grafana-Org-Id`. The password never reaches a log or
//! an error message.

use std::time::{Duration, Instant};

use mla_common::metrics::ExternalApiMetrics;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// The fields of a listed datasource that [`super::datasources::DesiredDatasource::matches`]
/// and the pass read.
const DATASOURCE_FIELDS: [&str; 8] = ["uid", "name", "type", "access", "url", "isDefault", "basicAuth", "jsonData"];

/// The `api` label of every call.
const API: &str = "grafana";
/// Page size of organization and user listings.
const ORG_PAGE: usize = 1000;
/// The first page of `GET /api/orgs`: Grafana's `SearchOrgs` handler (`pkg/api/org.go`)
/// passes `page` through unchanged (default 0) and the store
/// (`pkg/services/org/orgimpl/store.go` `Search`) skips `perpage x page` rows, so the first
/// page is 0.
const FIRST_ORG_PAGE: usize = 0;
/// The first page of `GET /api/users`: `pkg/services/searchusers/searchusers.go`
/// `SearchUser` raises a page below 1 to 1 and the user store skips `perpage x (page - 1)`.
const FIRST_USER_PAGE: usize = 1;

/// Grafana's admin credentials (Secret `<mla namespace>/grafana`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `admin-user`.
    pub user: String,
    /// `admin-password`.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// An organization role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// No basic role.
    None,
    /// Viewer.
    Viewer,
    /// Editor.
    Editor,
    /// Admin.
    Admin,
}

impl Role {
    /// Grafana's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "None",
            Role::Viewer => "Viewer",
            Role::Editor => "Editor",
            Role::Admin => "Admin",
        }
    }

    /// Parses Grafana's spelling; anything else is `None`.
    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "None" => Some(Role::None),
            "Viewer" => Some(Role::Viewer),
            "Editor" => Some(Role::Editor),
            "Admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Why a Grafana call failed.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// No answer: connection refused, DNS, TLS.
    #[error("grafana {method} {endpoint}: unreachable: {reason}")]
    Unreachable {
        /// Endpoint group.
        endpoint: &'static str,
        /// HTTP method.
        method: &'static str,
        /// What the HTTP client said.
        reason: String,
    },
    /// No answer within the request timeout.
    #[error("grafana {method} {endpoint}: timed out")]
    Timeout {
        /// Endpoint group.
        endpoint: &'static str,
        /// HTTP method.
        method: &'static str,
    },
    /// Grafana answered with an error status.
    #[error("grafana {method} {endpoint}: {status}: {message}")]
    Status {
        /// Endpoint group.
        endpoint: &'static str,
        /// HTTP method.
        method: &'static str,
        /// The status code.
        status: u16,
        /// Grafana's `message`, or the start of the body.
        message: String,
    },
    /// Grafana answered 2xx with a body we cannot read.
    #[error("grafana {method} {endpoint}: invalid response: {reason}")]
    InvalidResponse {
        /// Endpoint group.
        endpoint: &'static str,
        /// HTTP method.
        method: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl GrafanaError {
    /// A fixed name of the kind of failure, for metrics, conditions and Events.
    pub fn category(&self) -> &'static str {
        match self {
            GrafanaError::Unreachable { .. } => "unreachable",
            GrafanaError::Timeout { .. } => "timeout",
            GrafanaError::Status { status: 401, .. } => "auth",
            // Grafana refuses one object (a read-only datasource, an externally synced
            // user) or, when every call gets it, the account lacks the permissions.
            GrafanaError::Status { status: 403, .. } => "forbidden",
            GrafanaError::Status { status: 409 | 412, .. } => "conflict",
            GrafanaError::Status { status: 404, .. } => "not_found",
            // Grafana behind its Service or a proxy that has no ready backend.
            GrafanaError::Status { status: 502..=504, .. } => "unreachable",
            GrafanaError::Status { .. } | GrafanaError::InvalidResponse { .. } => "invalid_response",
        }
    }

    /// Whether Grafana answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, GrafanaError::Status { status: 404, .. })
    }

    /// Whether Grafana itself is not answering or does not accept the credentials (as
    /// opposed to refusing one request). A 403 is not: Grafana answers it for single
    /// objects (`pkg/api/datasources.go`: "Cannot update read-only data source"), so it
    /// fails that object only; a 403 on the listings every pass starts with still fails
    /// the pass.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.category(), "unreachable" | "timeout" | "auth")
    }

    /// Whether Grafana refused this one request (403).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, GrafanaError::Status { status: 403, .. })
    }

    /// Whether Grafana refused the request because a precondition failed (412: another
    /// dashboard holds the title, or the dashboard changed since it was read).
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, GrafanaError::Status { status: 412, .. })
    }
}

/// An organization.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Org {
    /// Its id.
    pub id: i64,
    /// Its (unique) name.
    pub name: String,
}

/// A member of an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgUser {
    /// The user's id.
    pub user_id: i64,
    /// Email (lower case).
    pub email: String,
    /// Login (lower case).
    pub login: String,
    /// Role in the org (`None` for a role this client does not know).
    pub role: Role,
}

/// A user as `GET /api/users/lookup` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrafanaUser {
    /// Its id.
    pub id: i64,
    /// Email.
    pub email: String,
    /// Login.
    pub login: String,
    /// Server admin.
    pub is_grafana_admin: bool,
}

/// Most dashboards `GET /api/search` returns in one page (Grafana's maximum `limit`).
const SEARCH_LIMIT: usize = 5000;

/// A dashboard as `GET /api/search` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashboardHit {
    /// Its uid.
    pub uid: String,
    /// Its title.
    pub title: String,
    /// Its folder's uid; empty in the General folder.
    pub folder_uid: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A client of one Grafana with one set of credentials.
#[derive(Clone, Debug)]
pub struct GrafanaClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    metrics: ExternalApiMetrics,
}

/// An HTTP client for Grafana with `timeout` per request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()
}

/// Length of the generated passwords.
const PASSWORD_LENGTH: usize = 32;

/// A random password that Grafana's strong password policy accepts
/// (`[auth.basic] password_policy = true`; `pkg/services/user/password.go`
/// `ValidatePassword`: at least 12 characters with an upper-case letter, a lower-case
/// letter, a digit and a symbol), so user creation works whether or not the policy is on.
/// The users sign in through the auth proxy and never use it.
pub fn random_password() -> String {
    use rand::Rng;
    use rand::seq::SliceRandom;
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const DIGITS: &[u8] = b"0123456789";
    const SYMBOLS: &[u8] = b"!#%+-.:=?@^_~";
    let mut rng = rand::rng();
    let mut pick = |set: &[u8]| char::from(set[rng.random_range(0..set.len())]);
    let mut chars: Vec<char> = vec![pick(UPPER), pick(LOWER), pick(DIGITS), pick(SYMBOLS)];
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    while chars.len() < PASSWORD_LENGTH {
        chars.push(pick(&all));
    }
    chars.shuffle(&mut rng);
    chars.into_iter().collect()
}

fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl GrafanaClient {
    /// A client of the Grafana at `base` (no trailing slash needed).
    pub fn new(http: reqwest::Client, base: &str, credentials: Credentials, metrics: ExternalApiMetrics) -> Self {
        Self { http, base: base.trim_end_matches('/').to_string(), credentials, metrics }
    }

    async fn call(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        org: Option<i64>,
        body: Option<&Value>,
    ) -> Result<Value, GrafanaError> {
        let method_name: &'static str = match method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.credentials.user, Some(&self.credentials.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = org {
            request = request.header("X-Grafana-Org-Id", org.to_string());
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                self.metrics.observe(API, endpoint, method_name, None, started.elapsed());
                return Err(if error.is_timeout() {
                    GrafanaError::Timeout { endpoint, method: method_name }
                } else {
                    // reqwest's message names the URL (never the credentials).
                    GrafanaError::Unreachable { endpoint, method: method_name, reason: error.to_string() }
                });
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await;
        self.metrics.observe(API, endpoint, method_name, Some(status), started.elapsed());
        let text = match text {
            Ok(text) => text,
            Err(error) if error.is_timeout() => return Err(GrafanaError::Timeout { endpoint, method: method_name }),
            Err(error) => {
                return Err(GrafanaError::Unreachable { endpoint, method: method_name, reason: error.to_string() });
            }
        };
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(GrafanaError::Status { endpoint, method: method_name, status, message });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|error| GrafanaError::InvalidResponse {
            endpoint,
            method: method_name,
            reason: error.to_string(),
        })
    }

    fn invalid(endpoint: &'static str, method: &'static str, reason: &str) -> GrafanaError {
        GrafanaError::InvalidResponse { endpoint, method, reason: reason.to_string() }
    }

    /// The id and login of the user the client signs in as.
    pub async fn signed_in_user(&self) -> Result<(i64, String), GrafanaError> {
        let body = self.call(Method::GET, "user", "/api/user", None, None).await?;
        let id = body.get("id").and_then(Value::as_i64).ok_or_else(|| Self::invalid("user", "GET", "no id"))?;
        let login = body.get("login").and_then(Value::as_str).unwrap_or_default().to_string();
        Ok((id, login))
    }

    /// Every organization, page by page from page 0 (see [`FIRST_ORG_PAGE`]). An org seen
    /// on two pages (one created or deleted meanwhile shifts the pages) is listed once.
    pub async fn orgs(&self) -> Result<Vec<Org>, GrafanaError> {
        let mut all: Vec<Org> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for page in FIRST_ORG_PAGE.. {
            let path = format!("/api/orgs?perpage={ORG_PAGE}&page={page}");
            let body = self.call(Method::GET, "orgs", &path, None, None).await?;
            let orgs: Vec<Org> =
                serde_json::from_value(body).map_err(|e| Self::invalid("orgs", "GET", &e.to_string()))?;
            let last = orgs.len() < ORG_PAGE;
            all.extend(orgs.into_iter().filter(|o| seen.insert(o.id)));
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Creates an organization (the client's user becomes its Admin) and returns its id.
    pub async fn create_org(&self, name: &str) -> Result<i64, GrafanaError> {
        let body = self.call(Method::POST, "orgs", "/api/orgs", None, Some(&json!({ "name": name }))).await?;
        body.get("orgId").and_then(Value::as_i64).ok_or_else(|| Self::invalid("orgs", "POST", "no orgId"))
    }

    /// Renames an organization.
    pub async fn rename_org(&self, id: i64, name: &str) -> Result<(), GrafanaError> {
        self.call(Method::PUT, "orgs", &format!("/api/orgs/{id}"), None, Some(&json!({ "name": name }))).await?;
        Ok(())
    }

    /// Deletes an organization; one that is gone already is success.
    pub async fn delete_org(&self, id: i64) -> Result<(), GrafanaError> {
        match self.call(Method::DELETE, "orgs", &format!("/api/orgs/{id}"), None, None).await {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The members of an organization.
    pub async fn org_users(&self, org: i64) -> Result<Vec<OrgUser>, GrafanaError> {
        let body = self.call(Method::GET, "org_users", &format!("/api/orgs/{org}/users"), None, None).await?;
        let list = body.as_array().ok_or_else(|| Self::invalid("org_users", "GET", "not a list"))?;
        Ok(list
            .iter()
            .filter_map(|u| {
                Some(OrgUser {
                    user_id: u.get("userId")?.as_i64()?,
                    email: u.get("email").and_then(Value::as_str).unwrap_or_default().to_lowercase(),
                    login: u.get("login").and_then(Value::as_str).unwrap_or_default().to_lowercase(),
                    role: u.get("role").and_then(Value::as_str).and_then(Role::parse).unwrap_or(Role::None),
                })
            })
            .collect())
    }

    /// Adds a user to an organization.
    pub async fn add_org_user(&self, org: i64, login_or_email: &str, role: Role) -> Result<(), GrafanaError> {
        let body = json!({ "loginOrEmail": login_or_email, "role": role.as_str() });
        self.call(Method::POST, "org_users", &format!("/api/orgs/{org}/users"), None, Some(&body)).await?;
        Ok(())
    }

    /// Changes a member's role.
    pub async fn update_org_user(&self, org: i64, user: i64, role: Role) -> Result<(), GrafanaError> {
        let body = json!({ "role": role.as_str() });
        self.call(Method::PATCH, "org_users", &format!("/api/orgs/{org}/users/{user}"), None, Some(&body)).await?;
        Ok(())
    }

    /// Removes a member.
    pub async fn remove_org_user(&self, org: i64, user: i64) -> Result<(), GrafanaError> {
        self.call(Method::DELETE, "org_users", &format!("/api/orgs/{org}/users/{user}"), None, None).await?;
        Ok(())
    }

    /// The user with this login or email, if any.
    pub async fn lookup_user(&self, login_or_email: &str) -> Result<Option<GrafanaUser>, GrafanaError> {
        let path = format!("/api/users/lookup?loginOrEmail={}", path_segment(login_or_email));
        let body = match self.call(Method::GET, "users", &path, None, None).await {
            Err(error) if error.is_not_found() => return Ok(None),
            other => other?,
        };
        let id = body.get("id").and_then(Value::as_i64).ok_or_else(|| Self::invalid("users", "GET", "no id"))?;
        let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(Some(GrafanaUser {
            id,
            email: text("email"),
            login: text("login"),
            is_grafana_admin: body.get("isGrafanaAdmin").and_then(Value::as_bool).unwrap_or(false),
        }))
    }

    /// Every user, with the server-admin flag (`GET /api/users`, page by page).
    pub async fn users(&self) -> Result<Vec<GrafanaUser>, GrafanaError> {
        let mut all: Vec<GrafanaUser> = Vec::new();
        for page in FIRST_USER_PAGE.. {
            let path = format!("/api/users?perpage={ORG_PAGE}&page={page}&sort=login-asc,email-asc");
            let body = self.call(Method::GET, "users", &path, None, None).await?;
            let list = body.as_array().ok_or_else(|| Self::invalid("users", "GET", "not a list"))?;
            let last = list.len() < ORG_PAGE;
            let known: std::collections::HashSet<i64> = all.iter().map(|u| u.id).collect();
            all.extend(list.iter().filter_map(|u| {
                Some(GrafanaUser {
                    id: u.get("id")?.as_i64()?,
                    email: u.get("email").and_then(Value::as_str).unwrap_or_default().to_string(),
                    login: u.get("login").and_then(Value::as_str).unwrap_or_default().to_string(),
                    is_grafana_admin: u.get("isAdmin").and_then(Value::as_bool).unwrap_or(false),
                })
                .filter(|user| !known.contains(&user.id))
            }));
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Creates a user (login = email) who signs in through the auth proxy; the password is
    /// random and never used.
    pub async fn create_user(&self, email: &str, name: &str) -> Result<i64, GrafanaError> {
        let password = random_password();
        let body = json!({ "name": name, "email": email, "login": email, "password": password });
        let answer = self.call(Method::POST, "users", "/api/admin/users", None, Some(&body)).await?;
        answer.get("id").and_then(Value::as_i64).ok_or_else(|| Self::invalid("users", "POST", "no id"))
    }

    /// Deletes a user; one that is gone already is success.
    pub async fn delete_user(&self, id: i64) -> Result<(), GrafanaError> {
        match self.call(Method::DELETE, "users", &format!("/api/admin/users/{id}"), None, None).await {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Grants or revokes Grafana server admin.
    pub async fn set_server_admin(&self, id: i64, admin: bool) -> Result<(), GrafanaError> {
        let body = json!({ "isGrafanaAdmin": admin });
        self.call(Method::PUT, "users", &format!("/api/admin/users/{id}/permissions"), None, Some(&body)).await?;
        Ok(())
    }

    /// The datasources of an organization (list items), each with only the fields a
    /// comparison reads (`DATASOURCE_FIELDS`): a pass holds every org's list at once, the
    /// superuser org's with every Cluster's datasources.
    pub async fn datasources(&self, org: i64) -> Result<Vec<Value>, GrafanaError> {
        let body = self.call(Method::GET, "datasources", "/api/datasources", Some(org), None).await?;
        match body {
            Value::Array(mut list) => {
                for item in &mut list {
                    if let Some(fields) = item.as_object_mut() {
                        fields.retain(|key, _| DATASOURCE_FIELDS.contains(&key.as_str()));
                    }
                }
                Ok(list)
            }
            _ => Err(Self::invalid("datasources", "GET", "not a list")),
        }
    }

    /// Creates a datasource.
    pub async fn create_datasource(&self, org: i64, body: &Value) -> Result<(), GrafanaError> {
        self.call(Method::POST, "datasources", "/api/datasources", Some(org), Some(body)).await?;
        Ok(())
    }

    /// Replaces a datasource.
    pub async fn update_datasource(&self, org: i64, uid: &str, body: &Value) -> Result<(), GrafanaError> {
        let path = format!("/api/datasources/uid/{}", path_segment(uid));
        self.call(Method::PUT, "datasources", &path, Some(org), Some(body)).await?;
        Ok(())
    }

    /// Deletes a datasource; one that is gone already is success.
    pub async fn delete_datasource(&self, org: i64, uid: &str) -> Result<(), GrafanaError> {
        let path = format!("/api/datasources/uid/{}", path_segment(uid));
        match self.call(Method::DELETE, "datasources", &path, Some(org), None).await {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every dashboard of an organization (search hits, folders excluded).
    pub async fn dashboard_hits(&self, org: i64) -> Result<Vec<DashboardHit>, GrafanaError> {
        let path = format!("/api/search?type=dash-db&limit={SEARCH_LIMIT}");
        let body = self.call(Method::GET, "search", &path, Some(org), None).await?;
        let list = body.as_array().ok_or_else(|| Self::invalid("search", "GET", "not a list"))?;
        Ok(list
            .iter()
            .filter_map(|d| {
                let text = |key: &str| d.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
                Some(DashboardHit {
                    uid: d.get("uid")?.as_str()?.to_string(),
                    title: text("title"),
                    folder_uid: text("folderUid"),
                    tags: d
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|t| t.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                })
            })
            .collect())
    }

    /// A dashboard's model (with Grafana's `version` in it), if it exists.
    pub async fn dashboard(&self, org: i64, uid: &str) -> Result<Option<Value>, GrafanaError> {
        let path = format!("/api/dashboards/uid/{}", path_segment(uid));
        match self.call(Method::GET, "dashboards", &path, Some(org), None).await {
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
            Ok(body) => Ok(body.get("dashboard").cloned()),
        }
    }

    /// Saves a dashboard model by its uid: a new one (`version` None) or over the version
    /// read just before. Never with `overwrite`: Grafana up to 11.2 then takes over another
    /// dashboard of the same title in the folder (its id and uid;
    /// `pkg/services/dashboards/database/database.go` `getExistingDashboardByTitleAndFolder`)
    /// instead of answering 412.
    pub async fn save_dashboard(&self, org: i64, model: &Value, version: Option<i64>) -> Result<(), GrafanaError> {
        let mut model = model.clone();
        if let (Some(version), Value::Object(map)) = (version, &mut model) {
            map.insert("version".into(), json!(version));
        }
        let body = json!({ "dashboard": model, "overwrite": false, "message": "seed-controller-manager" });
        self.call(Method::POST, "dashboards", "/api/dashboards/db", Some(org), Some(&body)).await?;
        Ok(())
    }

    /// Deletes a dashboard; one that is gone already is success.
    pub async fn delete_dashboard(&self, org: i64, uid: &str) -> Result<(), GrafanaError> {
        let path = format!("/api/dashboards/uid/{}", path_segment(uid));
        match self.call(Method::DELETE, "dashboards", &path, Some(org), None).await {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials { user: "admin".into(), password: "hunter2".into() };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }

    #[test]
    fn categories() {
        let status = |status| GrafanaError::Status { endpoint: "orgs", method: "GET", status, message: String::new() };
        assert_eq!(status(401).category(), "auth");
        assert_eq!(status(412).category(), "conflict");
        assert_eq!(status(409).category(), "conflict");
        assert_eq!(status(404).category(), "not_found");
        assert_eq!(status(503).category(), "unreachable");
        assert_eq!(status(500).category(), "invalid_response");
        assert_eq!(GrafanaError::Timeout { endpoint: "orgs", method: "GET" }.category(), "timeout");
    }

    #[test]
    fn passwords_pass_the_strong_policy() {
        for _ in 0..200 {
            let password = random_password();
            assert_eq!(password.len(), PASSWORD_LENGTH);
            assert!(password.chars().any(|c| c.is_ascii_uppercase()), "{password}");
            assert!(password.chars().any(|c| c.is_ascii_lowercase()), "{password}");
            assert!(password.chars().any(|c| c.is_ascii_digit()), "{password}");
            assert!(password.chars().any(|c| !c.is_alphanumeric()), "{password}");
        }
        assert_ne!(random_password(), random_password());
    }

    #[test]
    fn a_403_fails_one_object_not_the_pass() {
        let status = |status| GrafanaError::Status { endpoint: "orgs", method: "GET", status, message: String::new() };
        assert_eq!(status(403).category(), "forbidden");
        assert!(!status(403).is_unavailable() && status(403).is_forbidden());
        assert!(status(401).is_unavailable());
    }

    /// More than a page of orgs and users, against the Grafana test server (which pages
    /// `/api/orgs` from 0 and `/api/users` from 1, as Grafana does).
    #[tokio::test]
    async fn orgs_and_users_are_read_across_pages() {
        let server = mla_e2e::grafana::GrafanaServer::start("admin", "pw").await.expect("server");
        let metrics = ExternalApiMetrics::register(&mla_common::metrics::Metrics::new("test"));
        let credentials = Credentials { user: "admin".into(), password: "pw".into() };
        let client = GrafanaClient::new(reqwest::Client::new(), server.url(), credentials, metrics);
        for n in 0..ORG_PAGE {
            client.create_org(&format!("org-{n:04}")).await.expect("org");
            client.create_user(&format!("u{n:04}@example.com"), "u").await.expect("user");
        }
        let orgs = client.orgs().await.expect("orgs");
        assert_eq!(orgs.len(), ORG_PAGE + 1, "Main Org. and every org, once");
        assert!(orgs.iter().any(|o| o.name == "Main Org.") && orgs.iter().any(|o| o.name == "org-0999"));
        let users = client.users().await.expect("users");
        assert_eq!(users.len(), ORG_PAGE + 1, "the admin and every user, once");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a+b@example.com"), "a%2Bb%40example.com");
        assert_eq!(path_segment("prometheus-c1"), "prometheus-c1");
    }
}

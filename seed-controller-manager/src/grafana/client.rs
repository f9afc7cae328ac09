//! A thin client of Grafana's HTTP API: the calls the controller makes, each recorded in
//! `mla_external_requests_total{api="grafana"}` by endpoint group. Basic auth as Grafana's
//! admin; org-scoped calls carry `X-Grafana-Org-Id`. The password never reaches a log or
//! an error message.

use std::time::{Duration, Instant};

use mla_common::metrics::ExternalApiMetrics;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `api` label of every call.
const API: &str = "grafana";
/// Page size of organization and user listings.
const ORG_PAGE: usize = 1000;

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
            GrafanaError::Status { status: 401 | 403, .. } => "auth",
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

    /// Whether Grafana itself is not answering (as opposed to refusing one request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.category(), "unreachable" | "timeout" | "auth")
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

    /// Every organization.
    pub async fn orgs(&self) -> Result<Vec<Org>, GrafanaError> {
        let mut all = Vec::new();
        for page in 1.. {
            let path = format!("/api/orgs?perpage={ORG_PAGE}&page={page}");
            let body = self.call(Method::GET, "orgs", &path, None, None).await?;
            let orgs: Vec<Org> =
                serde_json::from_value(body).map_err(|e| Self::invalid("orgs", "GET", &e.to_string()))?;
            let last = orgs.len() < ORG_PAGE;
            all.extend(orgs);
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
        let mut all = Vec::new();
        for page in 1.. {
            let path = format!("/api/users?perpage={ORG_PAGE}&page={page}&sort=login-asc,email-asc");
            let body = self.call(Method::GET, "users", &path, None, None).await?;
            let list = body.as_array().ok_or_else(|| Self::invalid("users", "GET", "not a list"))?;
            let last = list.len() < ORG_PAGE;
            all.extend(list.iter().filter_map(|u| {
                Some(GrafanaUser {
                    id: u.get("id")?.as_i64()?,
                    email: u.get("email").and_then(Value::as_str).unwrap_or_default().to_string(),
                    login: u.get("login").and_then(Value::as_str).unwrap_or_default().to_string(),
                    is_grafana_admin: u.get("isAdmin").and_then(Value::as_bool).unwrap_or(false),
                })
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
        let password: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..32).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
        };
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

    /// The datasources of an organization (list items).
    pub async fn datasources(&self, org: i64) -> Result<Vec<Value>, GrafanaError> {
        let body = self.call(Method::GET, "datasources", "/api/datasources", Some(org), None).await?;
        match body {
            Value::Array(list) => Ok(list),
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

    /// The uids of an organization's dashboards carrying `tag`.
    pub async fn dashboards_tagged(&self, org: i64, tag: &str) -> Result<Vec<String>, GrafanaError> {
        let path = format!("/api/search?type=dash-db&limit=5000&tag={}", path_segment(tag));
        let body = self.call(Method::GET, "search", &path, Some(org), None).await?;
        let list = body.as_array().ok_or_else(|| Self::invalid("search", "GET", "not a list"))?;
        Ok(list.iter().filter_map(|d| d.get("uid").and_then(Value::as_str).map(str::to_string)).collect())
    }

    /// A dashboard's model, if it exists.
    pub async fn dashboard(&self, org: i64, uid: &str) -> Result<Option<Value>, GrafanaError> {
        let path = format!("/api/dashboards/uid/{}", path_segment(uid));
        match self.call(Method::GET, "dashboards", &path, Some(org), None).await {
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
            Ok(body) => Ok(body.get("dashboard").cloned()),
        }
    }

    /// Saves a dashboard model (by its uid), overwriting what is there.
    pub async fn save_dashboard(&self, org: i64, model: &Value) -> Result<(), GrafanaError> {
        let body = json!({ "dashboard": model, "overwrite": true, "message": "seed-controller-manager" });
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
        assert_eq!(status(409).category(), "conflict");
        assert_eq!(status(404).category(), "not_found");
        assert_eq!(status(503).category(), "unreachable");
        assert_eq!(status(500).category(), "invalid_response");
        assert_eq!(GrafanaError::Timeout { endpoint: "orgs", method: "GET" }.category(), "timeout");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a+b@example.com"), "a%2Bb%40example.com");
        assert_eq!(path_segment("prometheus-c1"), "prometheus-c1");
    }
}

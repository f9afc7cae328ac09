//! The Grafana API test server against Grafana's documented behaviour
//! (`grafana/grafana` `docs/sources/developers/http_api/*.md`, `public/api-merged.json`,
//! and the handlers in `pkg/api/` for error messages): every endpoint's happy path and
//! documented errors, basic auth, org scoping by `X-Grafana-Org-Id`, auth-proxy sign-up,
//! mutation counting and the availability switch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mla_e2e::grafana::{GrafanaConfig, GrafanaServer, GrafanaVersion, group};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin";
const PASSWORD: &str = "s3cret";

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Admin,
    Basic(&'a str, &'a str),
    Proxy(&'a str),
    Raw(&'a str),
}

struct Grafana {
    server: GrafanaServer,
    http: reqwest::Client,
}

impl Grafana {
    async fn start() -> Grafana {
        Grafana { server: GrafanaServer::start(ADMIN, PASSWORD).await.unwrap(), http: reqwest::Client::new() }
    }

    async fn start_with(config: GrafanaConfig) -> Grafana {
        Grafana { server: GrafanaServer::start_with(config).await.unwrap(), http: reqwest::Client::new() }
    }

    async fn start_version(version: GrafanaVersion) -> Grafana {
        Grafana::start_with(GrafanaConfig::new(ADMIN, PASSWORD).with_version(version)).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        org: Option<i64>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.server.url(), path));
        request = match auth {
            Auth::None => request,
            Auth::Admin => request.basic_auth(ADMIN, Some(PASSWORD)),
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            Auth::Proxy(email) => request.header("X-Forwarded-Email", email),
            Auth::Raw(value) => request.header("Authorization", value),
        };
        if let Some(org) = org {
            request = request.header("X-Grafana-Org-Id", org.to_string());
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        org: Option<i64>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, auth, org, body.as_deref()).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Auth::Admin, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Auth::Admin, None, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Auth::Admin, None, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Auth::Admin, None, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, Auth::Admin, None, None).await
    }

    async fn org_get(&self, org: i64, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Auth::Admin, Some(org), None).await
    }

    async fn org_post(&self, org: i64, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Auth::Admin, Some(org), Some(body)).await
    }

    async fn org_put(&self, org: i64, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Auth::Admin, Some(org), Some(body)).await
    }

    async fn org_delete(&self, org: i64, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, Auth::Admin, Some(org), None).await
    }

    async fn create_org(&self, name: &str) -> i64 {
        let (status, body) = self.post("/api/orgs", json!({ "name": name })).await;
        assert_eq!(status, 200, "{body}");
        body["orgId"].as_i64().unwrap()
    }

    async fn create_user(&self, login: &str, password: &str) -> i64 {
        let body =
            json!({"name": login, "email": format!("{login}@example.com"), "login": login, "password": password});
        let (status, body) = self.post("/api/admin/users", body).await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_i64().unwrap()
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// Grafana's RBAC denial (`accesscontrol/middleware.go` `deny`).
fn assert_access_denied(status: u16, body: &Value, permissions: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["title"], "Access denied");
    assert_eq!(
        message(body),
        format!("You'll need additional permissions to perform this action. Permissions needed: {permissions}")
    );
    assert!(body["accessErrorId"].as_str().unwrap().starts_with("ACE"), "{body}");
}

#[tokio::test]
async fn health_needs_no_auth() {
    let g = Grafana::start().await;
    let (status, body) = g.call(Method::GET, "/api/health", Auth::None, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["database"], "ok");
    assert!(body["version"].is_string());
    assert!(body["commit"].is_string());
}

#[tokio::test]
async fn basic_auth_and_its_errors() {
    let g = Grafana::start().await;
    // No credentials: middleware/auth.go notAuthorized.
    let (status, body) = g.call(Method::GET, "/api/user", Auth::None, None, None).await;
    assert_eq!((status, message(&body)), (401, "Unauthorized"));
    // Wrong password and unknown user: the same message, no hint which part was wrong.
    let (status, body) = g.call(Method::GET, "/api/user", Auth::Basic(ADMIN, "wrong"), None, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"message": "Invalid username or password", "messageId": "password-auth.failed", "statusCode": 401, "traceID": ""})
    );
    let (status, body) = g.call(Method::GET, "/api/orgs", Auth::Basic("nobody", PASSWORD), None, None).await;
    assert_eq!((status, message(&body)), (401, "Invalid username or password"));
    let (status, body) = g.call(Method::GET, "/api/user", Auth::Basic(ADMIN, ""), None, None).await;
    assert_eq!((status, message(&body)), (401, "Invalid username or password"));
    let (status, body) = g.call(Method::GET, "/api/user", Auth::Raw("Basic %%%not-base64"), None, None).await;
    assert_eq!((status, message(&body)), (401, "Invalid Basic Auth Header"));
    let (status, _) = g.call(Method::GET, "/api/user", Auth::Raw("Bearer abc"), None, None).await;
    assert_eq!(status, 401);

    // The admin: user id 1, server admin, in org 1.
    let (status, body) = g.get("/api/user").await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], 1);
    assert_eq!(body["login"], ADMIN);
    assert_eq!(body["orgId"], 1);
    assert_eq!(body["isGrafanaAdmin"], true);
    for field in
        ["email", "name", "theme", "isDisabled", "isExternal", "authLabels", "updatedAt", "createdAt", "avatarUrl"]
    {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    // Basic auth also takes the email as the user name.
    let (status, _) = g.call(Method::GET, "/api/user", Auth::Basic("admin@localhost", PASSWORD), None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn default_state_is_main_org_with_admin() {
    let g = Grafana::start().await;
    let (status, body) = g.get("/api/orgs").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"id": 1, "name": "Main Org."}]));
    let (status, body) = g.get("/api/orgs/1").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Main Org.");
    assert_eq!(body["address"]["zipCode"], "");
    let (status, body) = g.get("/api/orgs/name/Main%20Org.").await;
    assert_eq!((status, body["id"].as_i64()), (200, Some(1)));
    let (status, body) = g.get("/api/orgs/1/users").await;
    assert_eq!(status, 200);
    let users = body.as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["userId"], 1);
    assert_eq!(users[0]["orgId"], 1);
    assert_eq!(users[0]["login"], ADMIN);
    assert_eq!(users[0]["role"], "Admin");
    let (status, body) = g.get("/api/users/1/orgs").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"orgId": 1, "name": "Main Org.", "role": "Admin"}]));
}

#[tokio::test]
async fn organizations_create_read_rename_delete() {
    let g = Grafana::start().await;
    let (status, body) = g.post("/api/orgs", json!({"name": "project-a"})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"orgId": 2, "message": "Organization created"}));
    // The creator is Admin of the new org (CreateWithMember).
    let (_, users) = g.get("/api/orgs/2/users").await;
    assert_eq!(users[0]["userId"], 1);
    assert_eq!(users[0]["role"], "Admin");

    let (status, body) = g.post("/api/orgs", json!({"name": "project-a"})).await;
    assert_eq!((status, message(&body)), (409, "Organization name taken"));
    let (status, body) = g.post("/api/orgs", json!({})).await;
    assert_eq!((status, message(&body)), (400, "bad request data"));

    let (status, body) = g.get("/api/orgs/name/project-a").await;
    assert_eq!((status, body["id"].as_i64()), (200, Some(2)));
    let (status, body) = g.get("/api/orgs/name/missing").await;
    assert_eq!((status, message(&body)), (404, "Organization not found"));
    let (status, body) = g.get("/api/orgs/99").await;
    assert_eq!((status, message(&body)), (404, "Organization not found"));

    let (status, body) = g.put("/api/orgs/2", json!({"name": "project-b"})).await;
    assert_eq!((status, message(&body)), (200, "Organization updated"));
    let (_, body) = g.get("/api/orgs/2").await;
    assert_eq!(body["name"], "project-b");
    let (status, body) = g.put("/api/orgs/2", json!({"name": "Main Org."})).await;
    assert_eq!((status, message(&body)), (400, "Organization name taken"));
    let (status, _) = g.put("/api/orgs/2", json!({"name": "project-b"})).await;
    assert_eq!(status, 200, "renaming to its own name is fine");
    let (status, body) = g.put("/api/orgs/99", json!({"name": "nowhere"})).await;
    assert_eq!((status, message(&body)), (500, "Failed to update organization"));

    g.create_org("project-c").await;
    // Pages count from 0 (`SearchOrgs` passes `page` on, the store skips perpage x page).
    let first = json!([{"id": 1, "name": "Main Org."}, {"id": 2, "name": "project-b"}]);
    let (_, body) = g.get("/api/orgs?perpage=2&page=0").await;
    assert_eq!(body, first);
    let (_, body) = g.get("/api/orgs?perpage=2").await;
    assert_eq!(body, first, "no page is page 0");
    let (_, body) = g.get("/api/orgs?perpage=2&page=1").await;
    assert_eq!(body, json!([{"id": 3, "name": "project-c"}]), "page 1 is the second page");
    let (_, body) = g.get("/api/orgs?perpage=2&page=2").await;
    assert_eq!(body, json!([]));
    let (status, body) = g.get("/api/orgs?perpage=2&page=-1").await;
    assert_eq!((status, message(&body)), (500, "Failed to search orgs"));
    let (_, body) = g.get("/api/orgs?query=project").await;
    assert_eq!(body.as_array().unwrap().len(), 2, "query is a name prefix");
    let (_, body) = g.get("/api/orgs?name=project-c").await;
    assert_eq!(body, json!([{"id": 3, "name": "project-c"}]));

    // Deleting the org the request works in is refused.
    let (status, body) = g.org_delete(2, "/api/orgs/2").await;
    assert_eq!((status, message(&body)), (400, "Can not delete org for current user"));
    let (status, body) = g.delete("/api/orgs/2").await;
    assert_eq!((status, message(&body)), (200, "Organization deleted"));
    let (status, body) = g.get("/api/orgs/2").await;
    assert_eq!((status, message(&body)), (404, "Organization not found"));
    let (status, body) = g.delete("/api/orgs/2").await;
    assert_eq!((status, message(&body)), (404, "Failed to delete organization. ID not found"));
    // Ids are never reused.
    assert_eq!(g.create_org("project-d").await, 4);
    let (_, body) = g.get("/api/users/1/orgs").await;
    let names: Vec<&str> = body.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Main Org.", "project-c", "project-d"]);
}

#[tokio::test]
async fn org_users_add_change_role_remove() {
    let g = Grafana::start().await;
    let org = g.create_org("team").await;
    let alice = g.create_user("alice", "password1").await;

    let (status, body) =
        g.post(&format!("/api/orgs/{org}/users"), json!({"loginOrEmail": "alice", "role": "Viewer"})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"message": "User added to organization", "userId": alice}));
    let (status, body) =
        g.post(&format!("/api/orgs/{org}/users"), json!({"loginOrEmail": "alice@example.com", "role": "Editor"})).await;
    assert_eq!(status, 409);
    assert_eq!(body, json!({"message": "User is already member of this organization", "userId": alice}));
    let (status, body) =
        g.post(&format!("/api/orgs/{org}/users"), json!({"loginOrEmail": "bob", "role": "Viewer"})).await;
    assert_eq!((status, message(&body)), (404, "User not found"));
    let (status, body) =
        g.post(&format!("/api/orgs/{org}/users"), json!({"loginOrEmail": "alice", "role": "Superuser"})).await;
    assert_eq!((status, message(&body)), (400, "Invalid role specified"));

    let (status, body) = g.patch(&format!("/api/orgs/{org}/users/{alice}"), json!({"role": "Editor"})).await;
    assert_eq!((status, message(&body)), (200, "Organization user updated"));
    let (_, users) = g.get(&format!("/api/orgs/{org}/users")).await;
    let entry = users.as_array().unwrap().iter().find(|u| u["userId"] == alice).unwrap().clone();
    assert_eq!(entry["role"], "Editor");
    assert_eq!(entry["login"], "alice");
    assert_eq!(entry["email"], "alice@example.com");
    let (status, body) = g.patch(&format!("/api/orgs/{org}/users/{alice}"), json!({"role": "Owner"})).await;
    assert_eq!((status, message(&body)), (400, "Invalid role specified"));

    // The admin (id 1) is the only Admin of the org.
    let (status, body) = g.patch(&format!("/api/orgs/{org}/users/1"), json!({"role": "Viewer"})).await;
    assert_eq!((status, message(&body)), (400, "Cannot change role so that there is no organization admin left"));
    let (status, body) = g.delete(&format!("/api/orgs/{org}/users/1")).await;
    assert_eq!((status, message(&body)), (400, "Cannot remove last organization admin"));

    let (_, orgs) = g.get(&format!("/api/users/{alice}/orgs")).await;
    assert_eq!(
        orgs,
        json!([{"orgId": 1, "name": "Main Org.", "role": "Viewer"}, {"orgId": org, "name": "team", "role": "Editor"}])
    );

    let (status, body) = g.delete(&format!("/api/orgs/{org}/users/{alice}")).await;
    assert_eq!((status, message(&body)), (200, "User removed from organization"));
    let (_, users) = g.get(&format!("/api/orgs/{org}/users")).await;
    assert!(users.as_array().unwrap().iter().all(|u| u["userId"] != alice));
    // Removing a user who is not a member succeeds (the store deletes nothing)...
    let (status, body) = g.delete(&format!("/api/orgs/{org}/users/{alice}")).await;
    assert_eq!((status, message(&body)), (200, "User removed from organization"));
    // ...but an unknown user, or changing the role of a non-member, are unmapped 500s.
    let (status, body) = g.delete(&format!("/api/orgs/{org}/users/9999")).await;
    assert_eq!((status, message(&body)), (500, "Failed to remove user from organization"));
    let (status, body) = g.patch(&format!("/api/orgs/{org}/users/{alice}"), json!({"role": "Viewer"})).await;
    assert_eq!((status, message(&body)), (500, "Failed update org user"));
    let (status, body) = g.patch("/api/orgs/9999/users/1", json!({"role": "Viewer"})).await;
    assert_eq!((status, message(&body)), (500, "Failed update org user"));
    let (status, body) = g.post("/api/orgs/9999/users", json!({"loginOrEmail": "alice", "role": "Viewer"})).await;
    assert_eq!((status, message(&body)), (500, "Could not add user to organization"));
    let (status, body) = g.delete(&format!("/api/orgs/{org}/users/abc")).await;
    assert_eq!((status, message(&body)), (400, "userId is invalid"));
}

#[tokio::test]
async fn users_create_lookup_permissions_delete() {
    let g = Grafana::start().await;
    // `OrgId` is spelled with a capital O in the docs; Go binds it case-insensitively.
    let org = g.create_org("other").await;
    let body =
        json!({"name": "Carol", "email": "carol@example.com", "login": "carol", "password": "pw1234", "OrgId": org});
    let (status, body) = g.post("/api/admin/users", body).await;
    assert_eq!(status, 200);
    assert_eq!(message(&body), "User created");
    let carol = body["id"].as_i64().unwrap();
    assert_eq!(carol, 2);
    let (_, orgs) = g.get(&format!("/api/users/{carol}/orgs")).await;
    assert_eq!(orgs, json!([{"orgId": org, "name": "other", "role": "Viewer"}]));

    let (status, body) = g
        .post("/api/admin/users", json!({"email": "carol@example.com", "login": "carol2", "password": "pw1234"}))
        .await;
    assert_eq!(
        (status, message(&body)),
        (412, "User with email 'carol@example.com' or username 'carol2' already exists")
    );
    let (status, body) = g.post("/api/admin/users", json!({"login": "dave", "password": "pw"})).await;
    assert_eq!((status, message(&body)), (400, "Password is missing or too short"));
    let (status, body) = g.post("/api/admin/users", json!({"password": "pw1234"})).await;
    assert_eq!((status, message(&body)), (400, "Validation error, need specify either username or email"));
    let (status, body) = g.post("/api/admin/users", json!({"login": "erin", "password": "pw1234", "OrgId": 77})).await;
    assert_eq!((status, message(&body)), (400, "organization not found"));

    for query in ["carol", "carol@example.com", "CAROL"] {
        let (status, body) = g.get(&format!("/api/users/lookup?loginOrEmail={query}")).await;
        assert_eq!((status, body["id"].as_i64()), (200, Some(carol)), "{query}");
        assert_eq!(body["email"], "carol@example.com");
        assert_eq!(body["name"], "Carol");
        assert_eq!(body["isGrafanaAdmin"], false);
    }
    let (status, body) = g.get("/api/users/lookup?loginOrEmail=nobody").await;
    assert_eq!((status, message(&body)), (404, "user not found"));
    let (status, body) = g.get(&format!("/api/users/{carol}")).await;
    assert_eq!((status, body["login"].as_str()), (200, Some("carol")));
    let (status, body) = g.get("/api/users/99").await;
    assert_eq!((status, message(&body)), (404, "user not found"));
    let (status, body) = g.get("/api/users/x").await;
    assert_eq!((status, message(&body)), (400, "id is invalid"));

    // A user that is not a server admin: admin APIs are RBAC 403s.
    let (status, body) = g.call(Method::GET, "/api/orgs", Auth::Basic("carol", "pw1234"), None, None).await;
    assert_access_denied(status, &body, "orgs:read");
    let (status, body) =
        g.call(Method::POST, "/api/orgs", Auth::Basic("carol", "pw1234"), None, Some(json!({"name": "x"}))).await;
    assert_access_denied(status, &body, "orgs:create");
    let (status, body) = g.call(Method::DELETE, "/api/admin/users/1", Auth::Basic("carol", "pw1234"), None, None).await;
    assert_access_denied(status, &body, "users:delete");

    let (status, body) = g.put(&format!("/api/admin/users/{carol}/permissions"), json!({"isGrafanaAdmin": true})).await;
    assert_eq!((status, message(&body)), (200, "User permissions updated"));
    let (_, body) = g.get(&format!("/api/users/{carol}")).await;
    assert_eq!(body["isGrafanaAdmin"], true);
    let (status, _) = g.call(Method::GET, "/api/orgs", Auth::Basic("carol", "pw1234"), None, None).await;
    assert_eq!(status, 200);
    let (status, _) = g.put(&format!("/api/admin/users/{carol}/permissions"), json!({"isGrafanaAdmin": false})).await;
    assert_eq!(status, 200);
    let (status, body) = g.put("/api/admin/users/1/permissions", json!({"isGrafanaAdmin": false})).await;
    assert_eq!((status, message(&body)), (400, "cannot remove last grafana admin"));

    let (status, body) = g.delete(&format!("/api/admin/users/{carol}")).await;
    assert_eq!((status, message(&body)), (200, "User deleted"));
    let (status, body) = g.delete(&format!("/api/admin/users/{carol}")).await;
    assert_eq!((status, message(&body)), (404, "user not found"));
    let (_, users) = g.get(&format!("/api/orgs/{org}/users")).await;
    assert!(users.as_array().unwrap().iter().all(|u| u["userId"] != carol));
    // Ids are not reused.
    assert_eq!(g.create_user("frank", "pw1234").await, 3);
}

#[tokio::test]
async fn users_are_searched_in_pages_by_login() {
    let g = Grafana::start().await;
    for login in ["zoe", "bob", "carl"] {
        g.create_user(login, "pw1234").await;
    }
    let (status, users) = g.get("/api/users").await;
    assert_eq!(status, 200);
    let logins: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["admin", "bob", "carl", "zoe"], "login ascending by default");
    assert_eq!(users[0]["isAdmin"], true);
    assert_eq!(users[1]["isAdmin"], false);
    assert_eq!(users[1]["email"], "bob@example.com");
    let (_, page) = g.get("/api/users?perpage=2&page=2").await;
    let logins: Vec<&str> = page.as_array().unwrap().iter().map(|u| u["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["carl", "zoe"]);
    let (_, page) = g.get("/api/users?perpage=2&page=3").await;
    assert_eq!(page, json!([]));
    let (_, sorted) = g.get("/api/users?sort=login-desc").await;
    assert_eq!(sorted[0]["login"], "zoe");
    let carl = g.get("/api/users/lookup?loginOrEmail=carl").await.1["id"].as_i64().unwrap();
    let (status, body) = g.call(Method::GET, "/api/users", Auth::Basic("carl", "pw1234"), None, None).await;
    assert_access_denied(status, &body, "users:read");
    assert!(carl > 1);
}

fn prometheus(uid: &str, name: &str) -> Value {
    json!({
        "uid": uid,
        "name": name,
        "type": "prometheus",
        "access": "proxy",
        "url": "http://mla-gateway.cluster-abc.svc.cluster.local/api/prom",
        "basicAuth": false,
        "isDefault": false,
        "jsonData": {"httpMethod": "POST", "manageAlerts": false},
        "secureJsonData": {"httpHeaderValue1": "tenant"},
    })
}

#[tokio::test]
async fn datasources_are_scoped_to_the_org_header() {
    let g = Grafana::start().await;
    let org = g.create_org("project").await;

    let (status, body) = g.org_post(org, "/api/datasources", prometheus("prometheus-abc", "Prometheus abc")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message(&body), "Datasource added");
    assert_eq!(body["name"], "Prometheus abc");
    let ds = &body["datasource"];
    assert_eq!(ds["uid"], "prometheus-abc");
    assert_eq!(ds["orgId"], org);
    assert_eq!(ds["version"], 1);
    assert_eq!(ds["jsonData"], json!({"httpMethod": "POST", "manageAlerts": false}));
    assert_eq!(ds["secureJsonFields"], json!({"httpHeaderValue1": true}));
    assert!(ds.get("secureJsonData").is_none(), "secrets are never returned: {ds}");
    let id = body["id"].as_i64().unwrap();

    // The same uid and name in another org (org 1, no header) is a different datasource.
    let (status, body) = g.post("/api/datasources", prometheus("prometheus-abc", "Prometheus abc")).await;
    assert_eq!(status, 200);
    assert_eq!(body["datasource"]["orgId"], 1);
    let (_, list) = g.org_get(org, "/api/datasources").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id);
    assert!(list[0].get("secureJsonFields").is_none());
    assert!(list[0].get("secureJsonData").is_none());

    let (status, body) = g.org_get(org, "/api/datasources/uid/prometheus-abc").await;
    assert_eq!(status, 200);
    for (field, value) in [
        ("id", json!(id)),
        ("name", json!("Prometheus abc")),
        ("type", json!("prometheus")),
        ("access", json!("proxy")),
        ("url", json!("http://mla-gateway.cluster-abc.svc.cluster.local/api/prom")),
        ("basicAuth", json!(false)),
        ("isDefault", json!(false)),
        ("readOnly", json!(false)),
        ("withCredentials", json!(false)),
    ] {
        assert_eq!(body[field], value, "{field}");
    }
    let (status, body) = g.org_get(org, "/api/datasources/uid/loki-abc").await;
    assert_eq!((status, message(&body)), (404, "Data source not found"));

    let (status, body) = g.org_post(org, "/api/datasources", prometheus("prometheus-xyz", "Prometheus abc")).await;
    assert_eq!((status, message(&body)), (409, "data source with the same name already exists"));
    let (status, body) = g.org_post(org, "/api/datasources", prometheus("prometheus-abc", "Other name")).await;
    assert_eq!((status, message(&body)), (409, "data source with the same uid already exists"));
    let (status, body) = g.org_post(org, "/api/datasources", json!({"name": "x", "type": 5})).await;
    assert_eq!((status, message(&body)), (400, "bad request data"));
    let (status, body) = g.org_post(org, "/api/datasources", json!({"type": "loki", "access": "proxy"})).await;
    assert_eq!((status, message(&body)), (400, "bad request data"));
    let (status, body) = g.org_post(org, "/api/datasources", json!({"name": "L", "type": "loki"})).await;
    assert_eq!((status, message(&body)), (400, "bad request data"), "access is required");

    // No uid: one is generated.
    let (status, body) = g
        .org_post(
            org,
            "/api/datasources",
            json!({"name": "Loki", "type": "loki", "access": "proxy", "url": "http://l"}),
        )
        .await;
    assert_eq!(status, 200);
    let loki_uid = body["datasource"]["uid"].as_str().unwrap().to_string();
    assert!(!loki_uid.is_empty());
    let (_, list) = g.org_get(org, "/api/datasources").await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Loki", "Prometheus abc"]);

    // Update: fields replaced, version bumped, secrets merged (unsent keys kept).
    let mut update = prometheus("prometheus-abc", "Prometheus abc");
    update["url"] = json!("http://new");
    update["secureJsonData"] = json!({"basicAuthPassword": "pw"});
    update["version"] = json!(1);
    let (status, body) = g.org_put(org, "/api/datasources/uid/prometheus-abc", update.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message(&body), "Datasource updated");
    assert_eq!(body["id"], id);
    assert_eq!(body["datasource"]["url"], "http://new");
    assert_eq!(body["datasource"]["version"], 2);
    assert_eq!(body["datasource"]["secureJsonFields"], json!({"basicAuthPassword": true, "httpHeaderValue1": true}));
    // A stale version is refused.
    let (status, body) = g.org_put(org, "/api/datasources/uid/prometheus-abc", update).await;
    assert_eq!(
        (status, message(&body)),
        (409, "Datasource has already been updated by someone else. Please reload and try again")
    );
    let (status, body) =
        g.org_put(org, "/api/datasources/uid/prometheus-abc", prometheus("prometheus-abc", "Loki")).await;
    assert_eq!(
        (status, message(&body)),
        (409, "Failed to update datasource: data source with the same name already exists")
    );
    // Without a version Grafana stores version 0 + 1.
    let (status, body) =
        g.org_put(org, "/api/datasources/uid/prometheus-abc", prometheus("prometheus-abc", "Prometheus abc")).await;
    assert_eq!((status, body["datasource"]["version"].as_i64()), (200, Some(1)));
    assert_eq!(body["datasource"]["url"], "http://mla-gateway.cluster-abc.svc.cluster.local/api/prom");
    let (status, body) = g.org_put(org, "/api/datasources/uid/missing", prometheus("missing", "M")).await;
    assert_eq!((status, message(&body)), (404, "Data source not found"));

    let (status, body) = g.org_delete(org, "/api/datasources/uid/prometheus-abc").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"message": "Data source deleted", "id": id}));
    let (status, body) = g.org_delete(org, "/api/datasources/uid/prometheus-abc").await;
    assert_eq!((status, message(&body)), (404, "Data source not found"));
    // Org 1's datasource of the same uid is untouched.
    let (status, _) = g.get("/api/datasources/uid/prometheus-abc").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn org_scoped_calls_need_membership_and_role() {
    let g = Grafana::start().await;
    // An org the admin does not belong to (created by another server admin).
    let other_admin = g.create_user("root2", "pw1234").await;
    g.put(&format!("/api/admin/users/{other_admin}/permissions"), json!({"isGrafanaAdmin": true})).await;
    let (status, body) =
        g.call(Method::POST, "/api/orgs", Auth::Basic("root2", "pw1234"), None, Some(json!({"name": "foreign"}))).await;
    assert_eq!(status, 200);
    let foreign = body["orgId"].as_i64().unwrap();
    let (status, body) = g.org_get(foreign, "/api/datasources").await;
    assert_access_denied(status, &body, "datasources:read");
    let (status, body) = g.org_post(foreign, "/api/datasources", prometheus("p", "P")).await;
    assert_access_denied(status, &body, "datasources:create");
    let (status, body) = g.org_get(foreign, "/api/dashboards/uid/x").await;
    assert_access_denied(status, &body, "dashboards:read");
    // Search is filtered by permissions: nothing, not an error.
    let (status, body) = g.org_get(foreign, "/api/search").await;
    assert_eq!((status, body), (200, json!([])));
    // Once a member with the Admin role, it works.
    g.post(&format!("/api/orgs/{foreign}/users"), json!({"loginOrEmail": ADMIN, "role": "Admin"})).await;
    let (status, body) = g.org_get(foreign, "/api/datasources").await;
    assert_eq!((status, body), (200, json!([])));

    // A Viewer may read dashboards but not manage datasources or save dashboards.
    g.create_user("viewer", "pw1234").await;
    let viewer = Auth::Basic("viewer", "pw1234");
    let (status, body) = g.call(Method::GET, "/api/datasources", viewer, Some(1), None).await;
    assert_access_denied(status, &body, "datasources:read");
    let (status, _) = g.call(Method::GET, "/api/search?type=dash-db", viewer, Some(1), None).await;
    assert_eq!(status, 200);
    let dash = json!({"dashboard": {"title": "T", "uid": "t"}, "overwrite": true});
    let (status, body) = g.call(Method::POST, "/api/dashboards/db", viewer, Some(1), Some(dash)).await;
    assert_access_denied(status, &body, "any of dashboards:create, dashboards:write");
    g.post("/api/dashboards/db", json!({"dashboard": {"title": "T", "uid": "t"}})).await;
    let (status, body) = g.call(Method::GET, "/api/dashboards/uid/t", viewer, None, None).await;
    assert_eq!((status, body["meta"]["canSave"].as_bool()), (200, Some(false)));
    let (status, body) = g.call(Method::DELETE, "/api/dashboards/uid/t", viewer, None, None).await;
    assert_access_denied(status, &body, "dashboards:delete");
}

#[tokio::test]
async fn dashboards_save_versions_and_errors() {
    let g = Grafana::start().await;
    let org = g.create_org("dash").await;
    let model = json!({"id": null, "uid": "cluster-overview", "title": "Cluster Overview", "tags": ["mla"], "schemaVersion": 16, "panels": []});

    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": model, "overwrite": false})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["uid"], "cluster-overview");
    assert_eq!(body["version"], 1);
    assert_eq!(body["slug"], "cluster-overview");
    assert_eq!(body["url"], "/d/cluster-overview/cluster-overview");
    let id = body["id"].as_i64().unwrap();

    let (status, body) = g.org_get(org, "/api/dashboards/uid/cluster-overview").await;
    assert_eq!(status, 200);
    assert_eq!(body["dashboard"]["id"], id);
    assert_eq!(body["dashboard"]["uid"], "cluster-overview");
    assert_eq!(body["dashboard"]["version"], 1);
    assert_eq!(body["dashboard"]["title"], "Cluster Overview");
    assert_eq!(body["dashboard"]["panels"], json!([]));
    assert_eq!(body["meta"]["url"], "/d/cluster-overview/cluster-overview");
    assert_eq!(body["meta"]["slug"], "cluster-overview");
    assert_eq!(body["meta"]["folderUid"], "");
    assert_eq!(body["meta"]["isStarred"], false);
    // Other orgs do not see it.
    let (status, body) = g.get("/api/dashboards/uid/cluster-overview").await;
    assert_eq!((status, message(&body)), (404, "Dashboard not found"));

    // Without overwrite: the stored version must be sent.
    let mut update = model.clone();
    update["version"] = json!(1);
    update["title"] = json!("Cluster Overview 2");
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": update, "overwrite": false})).await;
    assert_eq!((status, body["version"].as_i64(), body["id"].as_i64()), (200, Some(2), Some(id)));
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": update, "overwrite": false})).await;
    assert_eq!(status, 412);
    assert_eq!(
        body,
        json!({"message": "The dashboard has been changed by someone else", "status": "version-mismatch"})
    );
    // With overwrite the version is ignored.
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": model, "overwrite": true})).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(3)));

    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"uid": "x"}})).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"message": "Dashboard title cannot be empty", "status": "empty-name"}));
    let (status, body) =
        g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"uid": "a b", "title": "t"}})).await;
    assert_eq!((status, message(&body)), (400, "uid contains illegal characters"));
    let long = "u".repeat(41);
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"uid": long, "title": "t"}})).await;
    assert_eq!((status, message(&body)), (400, "uid too long, max 40 characters"));
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"id": 999, "title": "t"}})).await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "Dashboard not found");
    let (status, body) =
        g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"title": "t"}, "folderUid": "nope"})).await;
    assert_eq!((status, message(&body)), (400, "Folder not found"));
    let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": 5})).await;
    assert_eq!((status, message(&body)), (400, "bad request data"));

    // No uid: generated.
    let (status, body) =
        g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"title": "Logs", "tags": ["x"]}})).await;
    assert_eq!(status, 200);
    let logs_uid = body["uid"].as_str().unwrap().to_string();
    assert!(!logs_uid.is_empty());

    let (status, body) = g.org_get(org, "/api/search?type=dash-db").await;
    assert_eq!(status, 200);
    let hits = body.as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["uid"], "cluster-overview");
    assert_eq!(hits[0]["type"], "dash-db");
    assert_eq!(hits[0]["url"], "/d/cluster-overview/cluster-overview");
    assert_eq!(hits[0]["tags"], json!(["mla"]));
    assert_eq!(hits[1]["uid"], logs_uid.as_str());
    let (_, body) = g.org_get(org, "/api/search?type=dash-db&query=logs").await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = g.org_get(org, "/api/search?dashboardUIDs=cluster-overview").await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = g.org_get(org, "/api/search?tag=mla").await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let (_, body) = g.get("/api/search?type=dash-db").await;
    assert_eq!(body, json!([]));

    let (status, body) = g.org_delete(org, "/api/dashboards/uid/cluster-overview").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"title": "Cluster Overview", "message": "Dashboard Cluster Overview deleted", "id": id}));
    let (status, body) = g.org_delete(org, "/api/dashboards/uid/cluster-overview").await;
    assert_eq!((status, message(&body)), (404, "Dashboard not found"));
    let (status, _) = g.org_get(org, "/api/dashboards/uid/cluster-overview").await;
    assert_eq!(status, 404);
    // Deleting the org takes its dashboards and datasources along.
    g.org_post(org, "/api/datasources", prometheus("p", "P")).await;
    g.delete(&format!("/api/orgs/{org}")).await;
    let org2 = g.create_org("dash").await;
    let (_, body) = g.org_get(org2, "/api/search").await;
    assert_eq!(body, json!([]));
    let (_, body) = g.org_get(org2, "/api/datasources").await;
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn auth_proxy_signs_users_up_as_viewers_of_the_main_org() {
    let g = Grafana::start().await;
    let (status, body) = g.call(Method::GET, "/api/user", Auth::Proxy("someone@example.com"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["login"], "someone@example.com");
    assert_eq!(body["email"], "someone@example.com");
    assert_eq!(body["isGrafanaAdmin"], false);
    assert_eq!(body["orgId"], 1);
    let id = body["id"].as_i64().unwrap();
    assert_eq!(id, 2);

    // The second request finds the same user.
    let (_, again) = g.call(Method::GET, "/api/user", Auth::Proxy("someone@example.com"), None, None).await;
    assert_eq!(again["id"], id);
    let (status, body) = g.get("/api/users/lookup?loginOrEmail=someone@example.com").await;
    assert_eq!((status, body["id"].as_i64()), (200, Some(id)));
    let (_, orgs) = g.get(&format!("/api/users/{id}/orgs")).await;
    assert_eq!(orgs, json!([{"orgId": 1, "name": "Main Org.", "role": "Viewer"}]));
    let (_, users) = g.get("/api/orgs/1/users").await;
    assert_eq!(users.as_array().unwrap().len(), 2);

    // Proxy users are not server admins...
    let (status, _) = g.call(Method::GET, "/api/orgs", Auth::Proxy("someone@example.com"), None, None).await;
    assert_eq!(status, 403);
    // ...until made one.
    g.put(&format!("/api/admin/users/{id}/permissions"), json!({"isGrafanaAdmin": true})).await;
    let (status, _) = g.call(Method::GET, "/api/orgs", Auth::Proxy("someone@example.com"), None, None).await;
    assert_eq!(status, 200);
    // A user created through the admin API before their first visit is found by email.
    let known = g.create_user("known", "pw1234").await;
    let (_, body) = g.call(Method::GET, "/api/user", Auth::Proxy("known@example.com"), None, None).await;
    assert_eq!(body["id"], known);
}

#[tokio::test]
async fn mutating_calls_are_counted_by_group() {
    let g = Grafana::start().await;
    assert_eq!(g.server.mutations().total(), 0);
    g.get("/api/orgs").await;
    g.get("/api/orgs/1/users").await;
    g.get("/api/datasources").await;
    assert_eq!(g.server.mutations().total(), 0, "reads are not counted");

    let org = g.create_org("counted").await;
    g.post("/api/orgs", json!({"name": "counted"})).await; // 409, still a mutating call
    let user = g.create_user("u", "pw1234").await;
    g.put(&format!("/api/admin/users/{user}/permissions"), json!({"isGrafanaAdmin": false})).await;
    g.post(&format!("/api/orgs/{org}/users"), json!({"loginOrEmail": "u", "role": "Viewer"})).await;
    g.patch(&format!("/api/orgs/{org}/users/{user}"), json!({"role": "Editor"})).await;
    g.org_post(org, "/api/datasources", prometheus("p", "P")).await;
    g.org_put(org, "/api/datasources/uid/p", prometheus("p", "P")).await;
    g.org_post(org, "/api/dashboards/db", json!({"dashboard": {"title": "d", "uid": "d"}, "overwrite": true})).await;
    g.org_delete(org, "/api/dashboards/uid/d").await;
    g.call(Method::GET, "/api/user", Auth::Proxy("new@example.com"), None, None).await; // sign-up is not a client write

    let counts = g.server.mutations();
    assert_eq!(counts.get(group::ORGS), 2);
    assert_eq!(counts.get(group::USERS), 2);
    assert_eq!(counts.get(group::ORG_USERS), 2);
    assert_eq!(counts.get(group::DATASOURCES), 2);
    assert_eq!(counts.get(group::DASHBOARDS), 2);
    assert_eq!(counts.total(), 10);

    // The same over HTTP, for controllers running as separate processes.
    let (status, body) = g.call(Method::GET, "/__test/mutations", Auth::None, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 10);
    assert_eq!(body["groups"]["datasources"], 2);

    g.server.reset_mutations();
    assert_eq!(g.server.mutations().total(), 0);
    g.delete(&format!("/api/orgs/{org}")).await;
    assert_eq!(g.server.mutations().get(group::ORGS), 1);
    let (status, _) = g.call(Method::DELETE, "/__test/mutations", Auth::None, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(g.server.mutations().total(), 0);
}

#[tokio::test]
async fn unavailable_answers_503_and_keeps_state() {
    let g = Grafana::start().await;
    let org = g.create_org("kept").await;
    g.server.reset_mutations();

    g.server.set_available(false);
    assert!(!g.server.is_available());
    for path in ["/api/health", "/api/orgs", "/api/datasources"] {
        let (status, _) = g.get(path).await;
        assert_eq!(status, 503, "{path}");
    }
    let (status, _) = g.post("/api/orgs", json!({"name": "lost"})).await;
    assert_eq!(status, 503);
    assert_eq!(g.server.mutations().total(), 0, "calls refused while down are not counted");

    g.server.set_available(true);
    let (status, body) = g.get(&format!("/api/orgs/{org}")).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("kept")));
    let (status, _) = g.get("/api/orgs/name/lost").await;
    assert_eq!(status, 404);

    // The HTTP switch.
    let (status, _) = g.raw(Method::PUT, "/__test/available", Auth::None, None, Some(r#"{"available":false}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(g.get("/api/health").await.0, 503);
    let (_, body) = g.call(Method::GET, "/__test/available", Auth::None, None, None).await;
    assert_eq!(body["available"], false);
    g.raw(Method::PUT, "/__test/available", Auth::None, None, Some(r#"{"available":true}"#)).await;
    assert_eq!(g.get("/api/health").await.0, 200);
}

#[tokio::test]
async fn malformed_input_is_answered_never_panics() {
    let g = Grafana::start().await;
    for body in ["{", "[1,2]", "\"text\"", "{\"name\": 5}", "\u{0}"] {
        let (status, reply) = g.raw(Method::POST, "/api/orgs", Auth::Admin, None, Some(body)).await;
        assert_eq!((status, message(&reply)), (400, "bad request data"), "{body:?}");
    }
    for body in ["{", "{\"dashboard\": []}", "{\"overwrite\": \"yes\"}"] {
        let (status, _) = g.raw(Method::POST, "/api/dashboards/db", Auth::Admin, None, Some(body)).await;
        assert_eq!(status, 400, "{body:?}");
    }
    let (status, body) =
        g.raw(Method::POST, "/api/datasources", Auth::Admin, None, Some("{\"secureJsonData\": 1}")).await;
    assert_eq!((status, message(&body)), (400, "bad request data"));
    let (status, body) = g.get("/api/orgs/abc").await;
    assert_eq!((status, message(&body)), (400, "orgId is invalid"));
    let (status, _) = g.get("/api/orgs/99999999999999999999999").await;
    assert_eq!(status, 400);
    let (status, _) = g.get("/api/orgs/-1").await;
    assert_eq!(status, 404);
    let (status, _) = g.get("/api/orgs/name/%FF%FE").await;
    assert!(status == 400 || status == 404, "{status}");
    let (status, _) = g.get("/api/orgs?perpage=-5&page=abc").await;
    assert_eq!(status, 200);
    let (status, _) = g.get("/api/orgs?perpage=9223372036854775807&page=9223372036854775807").await;
    assert_eq!(status, 200);
    let (status, body) = g.get("/api/nothing-here").await;
    assert_eq!((status, message(&body)), (404, "Not found"));
    let (status, _) = g.call(Method::GET, "/api/user", Auth::Raw("Basic"), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = g.call(Method::GET, "/api/user", Auth::Admin, Some(-3), None).await;
    assert_eq!(status, 200);
    // Still serving.
    assert_eq!(g.get("/api/health").await.0, 200);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = GrafanaServer::start(ADMIN, PASSWORD).await.unwrap();
    let url = format!("{}/api/health", server.url());
    assert!(reqwest::get(&url).await.unwrap().status().is_success());
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    assert!(client.get(&url).send().await.is_err(), "still answering after drop");
}

#[tokio::test]
async fn health_reports_the_version_acted_as() {
    for (version, reported) in
        [(GrafanaVersion::V10_4, "10.4.0"), (GrafanaVersion::V11_2, "11.2.0"), (GrafanaVersion::V12, "12.0.0")]
    {
        let g = Grafana::start_version(version).await;
        let (_, body) = g.get("/api/health").await;
        assert_eq!(body["version"], reported);
    }
    assert_eq!(Grafana::start().await.server.version(), GrafanaVersion::V12, "the newest by default");
}

/// Grafana 12 validates datasource uids on create and update (`failWrongDSUID` on by
/// default, `util.ValidateUID`: at most 40 of `[a-zA-Z0-9_-]`); 10.4 and 11.x do not.
#[tokio::test]
async fn datasource_uids_are_validated_from_grafana_12() {
    let forty_one = format!("alertmanager-{}", "c".repeat(28));
    let forty = format!("alertmanager-{}", "c".repeat(27));
    for version in GrafanaVersion::ALL {
        let g = Grafana::start_version(version).await;
        let (status, body) = g.org_post(1, "/api/datasources", prometheus(&forty_one, "long")).await;
        if version >= GrafanaVersion::V12 {
            assert_eq!(status, 400, "{version:?}: {body}");
            assert_eq!(
                body,
                json!({"message": "Invalid datasource UID.", "messageId": "datasource.uidInvalid", "statusCode": 400, "traceID": ""})
            );
            let (status, _) = g.org_post(1, "/api/datasources", prometheus("a.b", "dotted")).await;
            assert_eq!(status, 400, "characters outside [a-zA-Z0-9_-]");
        } else {
            assert_eq!(status, 200, "{version:?}: {body}");
        }
        let (status, body) = g.org_post(1, "/api/datasources", prometheus(&forty, "fits")).await;
        assert_eq!(status, 200, "{version:?}: 40 characters: {body}");
        let mut renamed = prometheus(&format!("{forty_one}x"), "fits");
        renamed["url"] = json!("http://elsewhere");
        let (status, _) = g.org_put(1, &format!("/api/datasources/uid/{forty}"), renamed).await;
        assert_eq!(status, if version >= GrafanaVersion::V12 { 400 } else { 200 }, "{version:?}: update");
    }
}

/// A read-only (provisioned) datasource refuses updates and deletes with 403
/// (`pkg/api/datasources.go`); the others in the org are served.
#[tokio::test]
async fn read_only_datasources_refuse_writes() {
    let g = Grafana::start().await;
    g.org_post(1, "/api/datasources", prometheus("provisioned", "Provisioned")).await;
    g.org_post(1, "/api/datasources", prometheus("free", "Free")).await;
    assert!(g.server.set_datasource_read_only(1, "provisioned", true));
    assert!(!g.server.set_datasource_read_only(1, "missing", true));
    let (status, body) = g.org_put(1, "/api/datasources/uid/provisioned", prometheus("provisioned", "P2")).await;
    assert_eq!((status, message(&body)), (403, "Cannot update read-only data source"));
    let (status, body) = g.org_delete(1, "/api/datasources/uid/provisioned").await;
    assert_eq!((status, message(&body)), (403, "Cannot delete read-only data source"));
    let (_, list) = g.org_get(1, "/api/datasources").await;
    assert!(list.as_array().unwrap().iter().any(|d| d["uid"] == "provisioned" && d["readOnly"] == true));
    let (status, _) = g.org_put(1, "/api/datasources/uid/free", prometheus("free", "Free 2")).await;
    assert_eq!(status, 200);
}

/// `getExistingDashboardByTitleAndFolder`: 10.4 finds another dashboard by slug, 11.0-11.2
/// by title; without `overwrite` that is 412 name-exists, with it the save takes the other
/// dashboard over (its id and uid; the uid sent is dropped). 12 keeps both.
#[tokio::test]
async fn dashboard_names_per_version() {
    let name_exists =
        json!({"message": "A dashboard with the same name in the folder already exists", "status": "name-exists"});
    for version in GrafanaVersion::ALL {
        let g = Grafana::start_version(version).await;
        let org = g.create_org("dash").await;
        let theirs = json!({"uid": "theirs", "title": "Cluster Overview", "panels": [1]});
        let (status, body) = g.org_post(org, "/api/dashboards/db", json!({"dashboard": theirs})).await;
        assert_eq!(status, 200, "{body}");
        let ours = json!({"uid": "ours", "title": "Cluster Overview", "panels": [2]});
        let (status, body) =
            g.org_post(org, "/api/dashboards/db", json!({"dashboard": ours, "overwrite": false})).await;
        let same_case_other_slug = json!({"uid": "other", "title": "cluster overview"});
        let (other_status, _) =
            g.org_post(org, "/api/dashboards/db", json!({"dashboard": same_case_other_slug, "overwrite": false})).await;
        match version {
            GrafanaVersion::V10_4 | GrafanaVersion::V11_2 => {
                assert_eq!((status, &body), (412, &name_exists), "{version:?}");
                // The slug of "cluster overview" is the same; the title differs.
                let expected = if version == GrafanaVersion::V10_4 { 412 } else { 200 };
                assert_eq!(other_status, expected, "{version:?}: same slug, other title");
                let (status, body) =
                    g.org_post(org, "/api/dashboards/db", json!({"dashboard": ours, "overwrite": true})).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["uid"], "theirs", "{version:?}: the other dashboard is taken over");
                let (_, taken) = g.org_get(org, "/api/dashboards/uid/theirs").await;
                assert_eq!(taken["dashboard"]["panels"], json!([2]));
                assert_eq!(taken["dashboard"]["version"], 2);
                let (status, _) = g.org_get(org, "/api/dashboards/uid/ours").await;
                assert_eq!(status, 404, "{version:?}: the uid sent is dropped");
            }
            GrafanaVersion::V12 => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["uid"], "ours");
                assert_eq!(other_status, 200);
                let (_, theirs) = g.org_get(org, "/api/dashboards/uid/theirs").await;
                assert_eq!(theirs["dashboard"]["panels"], json!([1]), "untouched");
            }
        }
    }
}

/// `[auth.basic] password_policy = true`: `ValidatePassword` wants 12 characters with an
/// upper-case letter, a lower-case letter, a digit and a symbol.
#[tokio::test]
async fn the_strong_password_policy_refuses_weak_passwords() {
    let mut config = GrafanaConfig::new(ADMIN, PASSWORD);
    config.strong_password_policy = true;
    let g = Grafana::start_with(config).await;
    for weak in ["short", "abcdefghijklmnopqrstuvwxyz0123456789", "Abcdefghijkl1", "ABCDEFGHIJK1!"] {
        let (status, body) =
            g.post("/api/admin/users", json!({"login": "weak", "email": "weak@example.com", "password": weak})).await;
        assert_eq!(status, 400, "{weak}: {body}");
    }
    let (_, body) = g
        .post("/api/admin/users", json!({"login": "weak", "email": "weak@example.com", "password": "Abcdefghijk1"}))
        .await;
    assert_eq!(body["messageId"], "password.password-policy-infringe");
    let (status, body) =
        g.post("/api/admin/users", json!({"login": "ok", "email": "ok@example.com", "password": "Abcdefghij1!"})).await;
    assert_eq!(status, 200, "{body}");
}

/// `updateOrgUserHelper`: the org role of an externally synced user cannot be changed
/// (403 `org.externallySynced`); others' can.
#[tokio::test]
async fn externally_synced_users_keep_their_roles() {
    let g = Grafana::start().await;
    let id = g.create_user("synced", "Synced-password-1!").await;
    assert!(g.server.set_user_externally_synced("synced", true));
    assert!(!g.server.set_user_externally_synced("nobody", true));
    let (status, body) = g.patch(&format!("/api/orgs/1/users/{id}"), json!({"role": "Editor"})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        json!({"message": "cannot change role for externally synced user", "messageId": "org.externallySynced", "statusCode": 403, "traceID": ""})
    );
    let (_, users) = g.get("/api/orgs/1/users").await;
    assert!(users.as_array().unwrap().iter().any(|u| u["login"] == "synced" && u["isExternallySynced"] == true));
    g.server.set_user_externally_synced("synced", false);
    let (status, _) = g.patch(&format!("/api/orgs/1/users/{id}"), json!({"role": "Editor"})).await;
    assert_eq!(status, 200);
}

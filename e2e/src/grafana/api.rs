//! The Grafana API handlers. Each names the documentation and code it follows.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::state::{Dashboard, DataSource, Db, NewUser, Role, User};
use super::util::{self, ApiError, ApiResult, bind, ok, query_int, query_value, query_values, success};
use super::{App, Caller, GRAFANA_VERSION, authenticate};

/// Path parameters; a parameter that does not decode is 400 "bad request data" in
/// Grafana's JSON shape instead of axum's plain-text rejection.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Params(value))
            .map_err(|_| ApiError::bad_request_data())
    }
}

/// `strconv.ParseInt` of a path parameter; Grafana answers 400 "<name> is invalid".
fn parse_id(value: &str, name: &str) -> Result<i64, ApiError> {
    value.trim().parse::<i64>().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, &format!("{name} is invalid")))
}

/// Server-admin routes. Grafana 9+ guards them with RBAC (`authorize(ac.EvalPermission(..))`
/// in `pkg/api/api.go`); of the basic roles only the Grafana server admin holds the global
/// `orgs:*`, `org.users:*` (any org) and `users:*` actions, so anyone else gets the RBAC
/// 403 naming `action` (the action each doc page lists under "Required permissions").
fn require_server_admin(app: &App, headers: &HeaderMap, action: &str) -> Result<Caller, ApiError> {
    let caller = authenticate(app, headers)?;
    if !caller.is_admin {
        return Err(ApiError::access_denied(action));
    }
    Ok(caller)
}

/// Org-scoped routes: the basic role in the request's org must be at least `min` (org
/// Admin for datasources, Editor for dashboard writes, Viewer for reads), else the RBAC 403
/// naming `action`. A caller who is not a member of the org has no permissions there.
fn require_org_role(app: &App, headers: &HeaderMap, min: Role, action: &str) -> Result<Caller, ApiError> {
    let caller = authenticate(app, headers)?;
    match caller.role {
        Some(role) if role >= min => Ok(caller),
        _ => Err(ApiError::access_denied(action)),
    }
}

// ---------------------------------------------------------------------------------------
// Health and signed-in user

/// `GET /api/health` (docs `other.md`, "Health API"): no auth; `{"commit", "database",
/// "version"}`.
pub(crate) async fn health() -> ApiResult {
    ok(json!({ "commit": "mla-e2e", "database": "ok", "version": GRAFANA_VERSION }))
}

/// Grafana's `user.UserProfileDTO` (docs `user.md`, "Get single user by Id" and
/// "Actual User").
fn user_profile(user: &User, org_id: i64) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "login": user.login,
        "theme": "",
        "orgId": org_id,
        "isGrafanaAdmin": user.is_admin,
        "isDisabled": false,
        "isExternal": user.is_external,
        "authLabels": if user.is_external { json!(["Auth Proxy"]) } else { json!([]) },
        "updatedAt": user.updated,
        "createdAt": user.created,
        "avatarUrl": util::avatar_url(&user.email),
    })
}

/// `GET /api/user` (docs `user.md`, "Actual User"): the signed-in user (signed up through
/// the auth proxy on first use). `orgId` is the user's current org.
pub(crate) async fn signed_in_user(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers)?;
    let db = app.db();
    let user = db.users.get(&caller.user_id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user not found"))?;
    ok(user_profile(user, db.current_org_of(user)))
}

// ---------------------------------------------------------------------------------------
// Organizations (docs `org.md` "Admin Organizations API"; code `pkg/api/org.go`)

#[derive(Deserialize, Default)]
#[serde(default)]
struct OrgForm {
    name: Option<String>,
}

fn org_details(id: i64, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "address": {"address1": "", "address2": "", "city": "", "zipCode": "", "state": "", "country": ""},
    })
}

/// `GET /api/orgs?perpage=&page=&name=&query=` (org.md "Search all Organizations";
/// `SearchOrgs`): `[{"id","name"}]` sorted by name; `perpage` defaults to 1000; `name`
/// matches exactly, `query` as a substring. Assumed: `page` counts from 1 (0 and 1 are the
/// first page), as in current Grafana's `SearchOrgs` store query.
pub(crate) async fn list_orgs(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult {
    require_server_admin(&app, &headers, "orgs:read")?;
    let per_page = match query_int(&uri, "perpage") {
        n if n <= 0 => 1000,
        n => n,
    };
    let page = query_int(&uri, "page").max(1);
    let name = query_value(&uri, "name").filter(|n| !n.is_empty());
    let query = query_value(&uri, "query").filter(|q| !q.is_empty()).map(|q| q.to_lowercase());
    let db = app.db();
    let mut orgs: Vec<_> = db
        .orgs
        .values()
        .filter(|o| name.as_ref().is_none_or(|n| &o.name == n))
        .filter(|o| query.as_ref().is_none_or(|q| o.name.to_lowercase().contains(q)))
        .collect();
    orgs.sort_by(|a, b| a.name.cmp(&b.name));
    let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(usize::MAX);
    let list: Vec<Value> =
        orgs.into_iter().skip(skip).take(take).map(|o| json!({"id": o.id, "name": o.name})).collect();
    ok(Value::Array(list))
}

/// `GET /api/orgs/:orgId` (org.md "Get Organization by Id"; `getOrgHelper`): 404
/// "Organization not found".
pub(crate) async fn get_org(State(app): State<App>, headers: HeaderMap, Params(org_id): Params<String>) -> ApiResult {
    require_server_admin(&app, &headers, "orgs:read")?;
    let org_id = parse_id(&org_id, "orgId")?;
    let db = app.db();
    let org = db.orgs.get(&org_id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Organization not found"))?;
    ok(org_details(org.id, &org.name))
}

/// `GET /api/orgs/name/:orgName` (org.md "Get Organization by Name"; `GetOrgByName`): 404
/// "Organization not found".
pub(crate) async fn get_org_by_name(
    State(app): State<App>,
    headers: HeaderMap,
    Params(name): Params<String>,
) -> ApiResult {
    require_server_admin(&app, &headers, "orgs:read")?;
    let db = app.db();
    let org = db.org_by_name(&name).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Organization not found"))?;
    ok(org_details(org.id, &org.name))
}

/// `POST /api/orgs` (org.md "Create Organization"; `CreateOrg`): `{"name"}` ->
/// `{"orgId": N, "message": "Organization created"}`; the creator becomes Admin of the new
/// org (`CreateWithMember`); a taken name is 409 "Organization name taken"; callers that
/// are not server admins get the RBAC 403 for `orgs:create` unless `allow_org_create`.
/// Assumed: an empty name is 400 "bad request data" (`binding:"Required"`).
pub(crate) async fn create_org(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = authenticate(&app, &headers)?;
    if !caller.is_admin && !app.config.allow_org_create {
        return Err(ApiError::access_denied("orgs:create"));
    }
    let form: OrgForm = bind(&body)?;
    let name = form.name.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::bad_request_data());
    }
    let mut db = app.db();
    if db.org_by_name(&name).is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "Organization name taken"));
    }
    let org_id = db.insert_org(&name);
    db.members.insert((org_id, caller.user_id), Role::Admin);
    ok(json!({ "orgId": org_id, "message": "Organization created" }))
}

/// `PUT /api/orgs/:orgId` (org.md "Update Organization"; `updateOrgHelper`): `{"name"}` ->
/// "Organization updated"; a name taken by another org is 400 "Organization name taken".
/// An unknown org is 500 "Failed to update organization" (unmapped store error; the same
/// as grafana-toolbox/grafana-client's integration tests observe outside Grafana 10.0-10.3).
pub(crate) async fn update_org(
    State(app): State<App>,
    headers: HeaderMap,
    Params(org_id): Params<String>,
    body: Bytes,
) -> ApiResult {
    require_server_admin(&app, &headers, "orgs:write")?;
    let org_id = parse_id(&org_id, "orgId")?;
    let form: OrgForm = bind(&body)?;
    let name = form.name.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::bad_request_data());
    }
    let mut db = app.db();
    if db.org_by_name(&name).is_some_and(|o| o.id != org_id) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Organization name taken"));
    }
    let org = db
        .orgs
        .get_mut(&org_id)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed to update organization"))?;
    org.name = name;
    success("Organization updated")
}

/// `DELETE /api/orgs/:orgId` (org.md "Delete Organization"; `DeleteOrgByID`):
/// "Organization deleted"; unknown is 404 "Failed to delete organization. ID not found";
/// the org the caller is working in is 400 "Can not delete org for current user". Its
/// memberships, datasources and dashboards go with it.
pub(crate) async fn delete_org(
    State(app): State<App>,
    headers: HeaderMap,
    Params(org_id): Params<String>,
) -> ApiResult {
    let caller = require_server_admin(&app, &headers, "orgs:delete")?;
    let org_id = parse_id(&org_id, "orgId")?;
    if caller.org_id == org_id {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Can not delete org for current user"));
    }
    let mut db = app.db();
    if !db.orgs.contains_key(&org_id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Failed to delete organization. ID not found"));
    }
    db.delete_org(org_id);
    success("Organization deleted")
}

// ---------------------------------------------------------------------------------------
// Org users (docs `org.md`; code `pkg/api/org_users.go`)

#[derive(Deserialize, Default)]
#[serde(default)]
struct AddOrgUserForm {
    loginoremail: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateOrgUserForm {
    role: Option<String>,
}

fn parse_role(role: Option<&str>) -> Result<Role, ApiError> {
    role.and_then(Role::parse).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "Invalid role specified"))
}

/// `GET /api/orgs/:orgId/users` (org.md "Get Users in Organization"; `OrgUserDTO`):
/// sorted by email then login; an unknown org has no users (200 `[]`).
pub(crate) async fn list_org_users(
    State(app): State<App>,
    headers: HeaderMap,
    Params(org_id): Params<String>,
) -> ApiResult {
    require_server_admin(&app, &headers, "org.users:read")?;
    let org_id = parse_id(&org_id, "orgId")?;
    let db = app.db();
    let mut users: Vec<(&User, Role)> = db
        .members
        .iter()
        .filter(|((o, _), _)| *o == org_id)
        .filter_map(|((_, u), role)| db.users.get(u).map(|user| (user, *role)))
        .collect();
    users.sort_by(|(a, _), (b, _)| (a.email.as_str(), a.login.as_str()).cmp(&(b.email.as_str(), b.login.as_str())));
    let list: Vec<Value> = users
        .into_iter()
        .map(|(user, role)| {
            json!({
                "orgId": org_id,
                "userId": user.id,
                "email": user.email,
                "name": user.name,
                "avatarUrl": util::avatar_url(&user.email),
                "login": user.login,
                "role": role.as_str(),
                "lastSeenAt": user.updated,
                "lastSeenAtAge": "< 1 minute",
                "isDisabled": false,
                "authLabels": if user.is_external { json!(["Auth Proxy"]) } else { json!([]) },
                "isExternallySynced": false,
            })
        })
        .collect();
    ok(Value::Array(list))
}

/// `POST /api/orgs/:orgId/users` (org.md "Add User in Organization"; `AddOrgUser`,
/// `addOrgUserHelper` in `pkg/api/org_users.go`): `{"loginOrEmail","role"}` ->
/// `{"message":"User added to organization","userId":N}`; invalid role 400 "Invalid role
/// specified"; unknown user 404 "User not found"; already a member 409 `{"message":"User is
/// already member of this organization","userId":N}`; an unknown org falls through to 500
/// "Could not add user to organization" (the store's `ErrOrgNotFound` is not mapped).
pub(crate) async fn add_org_user(
    State(app): State<App>,
    headers: HeaderMap,
    Params(org_id): Params<String>,
    body: Bytes,
) -> ApiResult {
    require_server_admin(&app, &headers, "org.users:add")?;
    let form: AddOrgUserForm = bind(&body)?;
    let org_id = parse_id(&org_id, "orgId")?;
    let role = parse_role(form.role.as_deref())?;
    let mut db = app.db();
    let login_or_email = form.loginoremail.unwrap_or_default();
    let user_id = db
        .user_by_login_or_email(&login_or_email)
        .map(|u| u.id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "User not found"))?;
    if db.members.contains_key(&(org_id, user_id)) {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            body: json!({ "message": "User is already member of this organization", "userId": user_id }),
        });
    }
    if !db.orgs.contains_key(&org_id) {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Could not add user to organization"));
    }
    db.members.insert((org_id, user_id), role);
    ok(json!({ "message": "User added to organization", "userId": user_id }))
}

/// `PATCH /api/orgs/:orgId/users/:userId` (org.md "Update Users in Organization";
/// `UpdateOrgUser`, `updateOrgUserHelper`): `{"role"}` -> "Organization user updated";
/// invalid role 400 "Invalid role specified"; leaving the org without an Admin 400 "Cannot
/// change role so that there is no organization admin left"; a user who is not a member
/// (or an unknown org or user) 500 "Failed update org user" (the store's
/// `ErrOrgUserNotFound` is not mapped; the same 500 is what grafana-toolbox/grafana-client's
/// integration tests observe against real Grafana).
pub(crate) async fn update_org_user(
    State(app): State<App>,
    headers: HeaderMap,
    Params((org_id, user_id)): Params<(String, String)>,
    body: Bytes,
) -> ApiResult {
    require_server_admin(&app, &headers, "org.users:write")?;
    let form: UpdateOrgUserForm = bind(&body)?;
    let org_id = parse_id(&org_id, "orgId")?;
    let user_id = parse_id(&user_id, "userId")?;
    let role = parse_role(form.role.as_deref())?;
    let mut db = app.db();
    let current = db
        .members
        .get(&(org_id, user_id))
        .copied()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed update org user"))?;
    if current == Role::Admin && role != Role::Admin && db.org_admin_count(org_id) <= 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Cannot change role so that there is no organization admin left",
        ));
    }
    db.members.insert((org_id, user_id), role);
    success("Organization user updated")
}

/// `DELETE /api/orgs/:orgId/users/:userId` (org.md "Delete User in Organization";
/// `RemoveOrgUser`, `removeOrgUserHelper`): "User removed from organization", also for a
/// user who was not a member (the store deletes nothing and succeeds); when no Admin would
/// be left in the org 400 "Cannot remove last organization admin" (the store's
/// `validateOneAdminLeftInOrg` runs after the delete); an unknown user 500 "Failed to remove
/// user from organization".
pub(crate) async fn remove_org_user(
    State(app): State<App>,
    headers: HeaderMap,
    Params((org_id, user_id)): Params<(String, String)>,
) -> ApiResult {
    require_server_admin(&app, &headers, "org.users:remove")?;
    let user_id = parse_id(&user_id, "userId")?;
    let org_id = parse_id(&org_id, "orgId")?;
    let mut db = app.db();
    if !db.users.contains_key(&user_id) {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed to remove user from organization"));
    }
    let removed_admin = db.members.get(&(org_id, user_id)) == Some(&Role::Admin);
    let admins_after = db.org_admin_count(org_id) - usize::from(removed_admin);
    if admins_after == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Cannot remove last organization admin"));
    }
    db.remove_member(org_id, user_id);
    success("User removed from organization")
}

// ---------------------------------------------------------------------------------------
// Users (docs `user.md`, `admin.md`; code `pkg/api/user.go`, `pkg/api/admin_users.go`)

/// `GET /api/users/lookup?loginOrEmail=` (user.md "Get single user by Username(login) or
/// Email"): the profile; unknown 404 "user not found" (`user.ErrUserNotFound`).
pub(crate) async fn lookup_user(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult {
    require_server_admin(&app, &headers, "users:read")?;
    let login_or_email = query_value(&uri, "loginOrEmail").unwrap_or_default();
    let db = app.db();
    let user = db
        .user_by_login_or_email(&login_or_email)
        .filter(|_| !login_or_email.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user not found"))?;
    ok(user_profile(user, db.current_org_of(user)))
}

/// `GET /api/users?perpage=&page=&sort=` (user.md "Search Users"; `SearchUsers` in
/// `pkg/api/users.go`): `[{"id","name","login","email","avatarUrl","isAdmin","isDisabled",
/// "lastSeenAt","lastSeenAtAge","authLabels"}]`, `perpage` defaulting to 1000 and `page`
/// to 1, ordered by login then email ascending when `sort` is not given. Supported
/// `sort`: a comma-separated list of `login-asc|login-desc|email-asc|email-desc|name-asc|
/// name-desc`. Assumed: `page` 0 is the first page, like 1.
pub(crate) async fn search_users(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult {
    require_server_admin(&app, &headers, "users:read")?;
    let per_page = match query_int(&uri, "perpage") {
        n if n <= 0 => 1000,
        n => n,
    };
    let page = query_int(&uri, "page").max(1);
    let sort = query_value(&uri, "sort").filter(|s| !s.is_empty()).unwrap_or_else(|| "login-asc,email-asc".into());
    let db = app.db();
    let mut users: Vec<&User> = db.users.values().collect();
    users.sort_by(|a, b| {
        for key in sort.split(',').map(str::trim) {
            let ordering = match key {
                "login-asc" => a.login.cmp(&b.login),
                "login-desc" => b.login.cmp(&a.login),
                "email-asc" => a.email.cmp(&b.email),
                "email-desc" => b.email.cmp(&a.email),
                "name-asc" => a.name.cmp(&b.name),
                "name-desc" => b.name.cmp(&a.name),
                _ => std::cmp::Ordering::Equal,
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        a.id.cmp(&b.id)
    });
    let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(usize::MAX);
    let list: Vec<Value> = users
        .into_iter()
        .skip(skip)
        .take(take)
        .map(|user| {
            json!({
                "id": user.id,
                "name": user.name,
                "login": user.login,
                "email": user.email,
                "avatarUrl": util::avatar_url(&user.email),
                "isAdmin": user.is_admin,
                "isDisabled": false,
                "lastSeenAt": user.updated,
                "lastSeenAtAge": "< 1 minute",
                "authLabels": if user.is_external { json!(["Auth Proxy"]) } else { json!([]) },
            })
        })
        .collect();
    ok(Value::Array(list))
}

/// `GET /api/users/:id` (user.md "Get single user by Id"): unknown 404 "user not found";
/// a non-numeric id 400 "id is invalid".
pub(crate) async fn get_user(State(app): State<App>, headers: HeaderMap, Params(id): Params<String>) -> ApiResult {
    require_server_admin(&app, &headers, "users:read")?;
    let id = parse_id(&id, "id")?;
    let db = app.db();
    let user = db.users.get(&id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user not found"))?;
    ok(user_profile(user, db.current_org_of(user)))
}

/// `GET /api/users/:id/orgs` (user.md "Get Organizations for user"): `[{"orgId","name",
/// "role"}]` sorted by org name; an unknown user has none (200 `[]`).
pub(crate) async fn get_user_orgs(State(app): State<App>, headers: HeaderMap, Params(id): Params<String>) -> ApiResult {
    require_server_admin(&app, &headers, "users:read")?;
    let id = parse_id(&id, "id")?;
    let db = app.db();
    let mut orgs: Vec<(String, i64, Role)> = db
        .memberships_of(id)
        .into_iter()
        .filter_map(|(org_id, role)| db.orgs.get(&org_id).map(|o| (o.name.clone(), org_id, role)))
        .collect();
    orgs.sort();
    ok(Value::Array(
        orgs.into_iter()
            .map(|(name, org_id, role)| json!({"orgId": org_id, "name": name, "role": role.as_str()}))
            .collect(),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdminCreateUserForm {
    name: Option<String>,
    email: Option<String>,
    login: Option<String>,
    password: Option<String>,
    orgid: Option<i64>,
}

/// `POST /api/admin/users` (admin.md "Global Users"; `AdminCreateUser`):
/// `{"name","email","login","password","OrgId"}` -> `{"id":N,"message":"User created"}`.
/// Login defaults to the email; neither is 400 "Validation error, need specify either
/// username or email"; a password under 4 characters 400 "Password is missing or too
/// short"; an unknown `OrgId` 400 "organization not found"; a taken login or email 412
/// "User with email '<email>' or username '<login>' already exists". The user joins
/// `OrgId` (default `auto_assign_org_id`) with `auto_assign_org_role`.
pub(crate) async fn admin_create_user(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult {
    require_server_admin(&app, &headers, "users:create")?;
    let form: AdminCreateUserForm = bind(&body)?;
    let email = form.email.unwrap_or_default().trim().to_string();
    let form_login = form.login.unwrap_or_default().trim().to_string();
    let login = if form_login.is_empty() { email.clone() } else { form_login.clone() };
    if login.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Validation error, need specify either username or email"));
    }
    let password = form.password.unwrap_or_default();
    if password.chars().count() < 4 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Password is missing or too short"));
    }
    let mut db = app.db();
    let org_id = match form.orgid.filter(|id| *id > 0) {
        Some(id) if db.orgs.contains_key(&id) => id,
        Some(_) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "organization not found")),
        None => app.config.auto_assign_org_id,
    };
    if db.login_or_email_taken(&login, &email) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            &format!("User with email '{email}' or username '{form_login}' already exists"),
        ));
    }
    let name = form.name.unwrap_or_default();
    let id = db.insert_user(NewUser {
        login: &login,
        email: &email,
        name: &name,
        password: Some(&password),
        org_id,
        role: app.config.auto_assign_org_role,
        is_external: false,
    });
    ok(json!({ "id": id, "message": "User created" }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PermissionsForm {
    isgrafanaadmin: Option<bool>,
}

/// `PUT /api/admin/users/:id/permissions` (admin.md "Permissions";
/// `AdminUpdateUserPermissions`): `{"isGrafanaAdmin": bool}` -> "User permissions updated";
/// taking the flag from the last server admin is 400 "cannot remove last grafana admin";
/// an unknown user falls through to 500 "Failed to update user permissions" (only the
/// last-admin error is mapped).
pub(crate) async fn admin_update_permissions(
    State(app): State<App>,
    headers: HeaderMap,
    Params(id): Params<String>,
    body: Bytes,
) -> ApiResult {
    require_server_admin(&app, &headers, "users.permissions:write")?;
    let form: PermissionsForm = bind(&body)?;
    let id = parse_id(&id, "id")?;
    let is_admin = form.isgrafanaadmin.unwrap_or(false);
    let mut db = app.db();
    let admins = db.users.values().filter(|u| u.is_admin).count();
    let user = db
        .users
        .get_mut(&id)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed to update user permissions"))?;
    if user.is_admin && !is_admin && admins <= 1 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "cannot remove last grafana admin"));
    }
    user.is_admin = is_admin;
    user.updated = util::now_rfc3339();
    success("User permissions updated")
}

/// `DELETE /api/admin/users/:id` (admin.md "Delete global User"; `AdminDeleteUser`):
/// "User deleted"; unknown 404 "user not found". Memberships go with the user.
pub(crate) async fn admin_delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Params(id): Params<String>,
) -> ApiResult {
    require_server_admin(&app, &headers, "users:delete")?;
    let id = parse_id(&id, "id")?;
    let mut db = app.db();
    if !db.users.contains_key(&id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "user not found"));
    }
    db.delete_user(id);
    success("User deleted")
}

// ---------------------------------------------------------------------------------------
// Datasources (docs `data_source.md`; code `pkg/api/datasources.go`,
// `pkg/services/datasources/errors.go`). The whole group needs the org Admin role
// (`reqOrgAdmin` in `pkg/api/api.go`), in the org of `X-Grafana-Org-Id`.

#[derive(Deserialize, Default)]
#[serde(default)]
struct DataSourceForm {
    uid: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    access: Option<String>,
    url: Option<String>,
    user: Option<String>,
    database: Option<String>,
    basicauth: Option<bool>,
    basicauthuser: Option<String>,
    withcredentials: Option<bool>,
    isdefault: Option<bool>,
    jsondata: Option<Value>,
    securejsondata: Option<BTreeMap<String, String>>,
    version: Option<i64>,
}

/// `type` and `access` carry `binding:"Required"` on `AddDataSourceCommand` and
/// `UpdateDataSourceCommand` (`pkg/services/datasources/models.go`), so `web.Bind` refuses
/// them empty: 400 "bad request data". Assumed: `name` too (required up to Grafana 10;
/// newer versions may generate one).
fn required(value: Option<String>) -> Result<String, ApiError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(ApiError::bad_request_data)
}

/// Grafana keeps one default datasource per org (`updateIsDefaultFlag`).
fn clear_other_defaults(db: &mut Db, org_id: i64, keep: i64) {
    for ds in db.datasources.values_mut() {
        if ds.org_id == org_id && ds.id != keep {
            ds.is_default = false;
        }
    }
}

/// `GET /api/datasources` (data_source.md "Get all data sources"; `GetDataSources`): the
/// org's datasources as `DataSourceListItemDTO`, sorted by name case-insensitively.
pub(crate) async fn list_datasources(State(app): State<App>, headers: HeaderMap) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Admin, "datasources:read")?;
    let db = app.db();
    let mut list: Vec<&DataSource> = db.datasources.values().filter(|d| d.org_id == caller.org_id).collect();
    list.sort_by_key(|d| d.name.to_lowercase());
    ok(Value::Array(list.into_iter().map(DataSource::to_list_item).collect()))
}

/// `GET /api/datasources/uid/:uid` (data_source.md "Get a single data source by uid";
/// `GetDataSourceByUID`): unknown in this org 404 "Data source not found".
pub(crate) async fn get_datasource(
    State(app): State<App>,
    headers: HeaderMap,
    Params(uid): Params<String>,
) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Admin, "datasources:read")?;
    let db = app.db();
    let ds = db.datasource_by_uid(caller.org_id, &uid).ok_or_else(datasource_not_found)?;
    ok(ds.to_dto())
}

fn datasource_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Data source not found")
}

/// `POST /api/datasources` (data_source.md "Create a data source"; `AddDataSource`):
/// `{"message":"Datasource added","id","name","datasource": DTO}`, version 1; a name or uid
/// already used in the org is 409 "data source with the same name already exists" /
/// "data source with the same uid already exists"; no uid gets a generated one; missing
/// `jsonData` is stored as `{}`; `secureJsonData` is kept but only reported as
/// `secureJsonFields`.
pub(crate) async fn create_datasource(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Admin, "datasources:create")?;
    let form: DataSourceForm = bind(&body)?;
    let name = required(form.name)?;
    let kind = required(form.kind)?;
    let access = required(form.access)?;
    let mut db = app.db();
    if db.datasources.values().any(|d| d.org_id == caller.org_id && d.name == name) {
        return Err(ApiError::new(StatusCode::CONFLICT, "data source with the same name already exists"));
    }
    let uid = match form.uid.filter(|u| !u.is_empty()) {
        Some(uid) => {
            if db.datasource_by_uid(caller.org_id, &uid).is_some() {
                return Err(ApiError::new(StatusCode::CONFLICT, "data source with the same uid already exists"));
            }
            uid
        }
        None => db.generate_uid(),
    };
    let id = db.next_datasource_id();
    let ds = DataSource {
        id,
        org_id: caller.org_id,
        uid,
        name: name.clone(),
        kind,
        access,
        url: form.url.unwrap_or_default(),
        user: form.user.unwrap_or_default(),
        database: form.database.unwrap_or_default(),
        basic_auth: form.basicauth.unwrap_or(false),
        basic_auth_user: form.basicauthuser.unwrap_or_default(),
        with_credentials: form.withcredentials.unwrap_or(false),
        is_default: form.isdefault.unwrap_or(false),
        json_data: form.jsondata.filter(|v| !v.is_null()).unwrap_or_else(|| Value::Object(Map::new())),
        secure_json_data: form.securejsondata.unwrap_or_default(),
        version: 1,
        read_only: false,
    };
    let dto = ds.to_dto();
    let is_default = ds.is_default;
    db.datasources.insert(id, ds);
    if is_default {
        clear_other_defaults(&mut db, caller.org_id, id);
    }
    ok(json!({ "message": "Datasource added", "id": id, "name": name, "datasource": dto }))
}

/// `PUT /api/datasources/uid/:uid` (data_source.md "Update an existing data source";
/// `UpdateDataSourceByUID`): replaces the fields, merges `secureJsonData` into the stored
/// secrets (keys not sent are kept), bumps `version`, and answers
/// `{"message":"Datasource updated","id","name","datasource": DTO}`. Unknown 404 "Data
/// source not found"; read-only 403 "Cannot update read-only data source"; a name used by
/// another datasource 409 "Failed to update datasource: data source with the same name
/// already exists"; a `version` older than the stored one 409 "Datasource has already been
/// updated by someone else. Please reload and try again". A different non-empty `uid` in
/// the body renames the uid (docs example). Assumed: an empty `uid` keeps the current one.
///
/// Versions follow the store's `UpdateDataSource` (`pkg/services/datasources/service/store.go`):
/// the new version is the body's `version` + 1, so an update without `version` sets it to
/// 1; with a non-zero `version` the update only applies while the stored version is not
/// newer (`WHERE version < body.version + 1`), else `ErrDataSourceUpdatingOldVersion`.
pub(crate) async fn update_datasource(
    State(app): State<App>,
    headers: HeaderMap,
    Params(uid): Params<String>,
    body: Bytes,
) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Admin, "datasources:write")?;
    let form: DataSourceForm = bind(&body)?;
    let name = required(form.name)?;
    let kind = required(form.kind)?;
    let access = required(form.access)?;
    let mut db = app.db();
    let existing = db.datasource_by_uid(caller.org_id, &uid).cloned().ok_or_else(datasource_not_found)?;
    if existing.read_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Cannot update read-only data source"));
    }
    if db.datasources.values().any(|d| d.org_id == caller.org_id && d.id != existing.id && d.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Failed to update datasource: data source with the same name already exists",
        ));
    }
    if let Some(version) = form.version.filter(|v| *v != 0)
        && existing.version > version
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Datasource has already been updated by someone else. Please reload and try again",
        ));
    }
    let new_uid = match form.uid.filter(|u| !u.is_empty() && *u != existing.uid) {
        Some(new_uid) => {
            if db.datasource_by_uid(caller.org_id, &new_uid).is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Failed to update datasource: data source with the same uid already exists",
                ));
            }
            new_uid
        }
        None => existing.uid.clone(),
    };
    let mut secrets = existing.secure_json_data.clone();
    secrets.extend(form.securejsondata.unwrap_or_default());
    let ds = DataSource {
        id: existing.id,
        org_id: existing.org_id,
        uid: new_uid,
        name: name.clone(),
        kind,
        access,
        url: form.url.unwrap_or_default(),
        user: form.user.unwrap_or_default(),
        database: form.database.unwrap_or_default(),
        basic_auth: form.basicauth.unwrap_or(false),
        basic_auth_user: form.basicauthuser.unwrap_or_default(),
        with_credentials: form.withcredentials.unwrap_or(false),
        is_default: form.isdefault.unwrap_or(false),
        json_data: form.jsondata.filter(|v| !v.is_null()).unwrap_or_else(|| Value::Object(Map::new())),
        secure_json_data: secrets,
        version: form.version.unwrap_or(0).saturating_add(1),
        read_only: false,
    };
    let dto = ds.to_dto();
    let is_default = ds.is_default;
    db.datasources.insert(existing.id, ds);
    if is_default {
        clear_other_defaults(&mut db, caller.org_id, existing.id);
    }
    ok(json!({ "message": "Datasource updated", "id": existing.id, "name": name, "datasource": dto }))
}

/// `DELETE /api/datasources/uid/:uid` (data_source.md "Delete an existing data source by
/// uid"; `DeleteDataSourceByUID`): `{"message":"Data source deleted","id":N}`; unknown 404
/// "Data source not found"; read-only 403 "Cannot delete read-only data source".
pub(crate) async fn delete_datasource(
    State(app): State<App>,
    headers: HeaderMap,
    Params(uid): Params<String>,
) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Admin, "datasources:delete")?;
    let mut db = app.db();
    let ds = db.datasource_by_uid(caller.org_id, &uid).cloned().ok_or_else(datasource_not_found)?;
    if ds.read_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Cannot delete read-only data source"));
    }
    db.datasources.remove(&ds.id);
    ok(json!({ "message": "Data source deleted", "id": ds.id }))
}

// ---------------------------------------------------------------------------------------
// Dashboards (docs `dashboard.md`, `folder_dashboard_search.md`; code
// `pkg/api/dashboard.go`, `pkg/services/dashboards/errors.go`,
// `pkg/services/dashboards/database/database.go` `getExistingDashboardByIDOrUIDForUpdate`
// and `getExistingDashboardByTitleAndFolder`). Folders are not implemented: everything
// lives in the General folder.

#[derive(Deserialize, Default)]
#[serde(default)]
struct SaveDashboardForm {
    dashboard: Option<Value>,
    folderuid: Option<String>,
    overwrite: Option<bool>,
    message: Option<String>,
}

/// `POST /api/dashboards/db` (dashboard.md "Create / Update dashboard"): saves
/// `dashboard` (new: version 1 and a new id; existing, found by uid or else by id: version
/// + 1), answering `{"id","uid","url","status":"success","version","slug"}`.
///
/// Errors (`dashboards/errors.go`, bodies from `DashboardErr.Body()`):
/// - no title: 400 `{"message":"Dashboard title cannot be empty","status":"empty-name"}`;
/// - uid with other than `[a-zA-Z0-9_-]`: 400 "uid contains illegal characters"; longer
///   than 40: 400 "uid too long, max 40 characters";
/// - `message` over 500 characters: 400 "message too long, max 500 characters";
/// - `dashboard.id` naming no dashboard of the org: 404 `{"message":"Dashboard not
///   found","status":"not-found"}`;
/// - without `overwrite`, a `dashboard.version` other than the stored one: 412
///   `{"message":"The dashboard has been changed by someone else","status":"version-mismatch"}`;
/// - without `overwrite`, another dashboard of the same title in the folder: 412
///   `{"message":"A dashboard with the same name in the folder already exists",
///   "status":"name-exists"}` (Grafana up to 10; Grafana 11 dropped the title check).
///   Assumed: with `overwrite` both dashboards are kept (Grafana 11 behaviour) rather than
///   the older takeover of the other dashboard;
/// - a non-empty `folderUid`: 400 "Folder not found" (`postDashboard`; no folders here);
/// - callers below Editor in the org: the RBAC 403 "... Permissions needed: any of
///   dashboards:create, dashboards:write" (the route's `EvalAny`).
pub(crate) async fn save_dashboard(State(app): State<App>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = authenticate(&app, &headers)?;
    if caller.role.is_none_or(|r| r < Role::Editor) {
        return Err(ApiError::access_denied("any of dashboards:create, dashboards:write"));
    }
    let form: SaveDashboardForm = bind(&body)?;
    let mut model = match form.dashboard {
        Some(Value::Object(map)) => map,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(ApiError::bad_request_data()),
    };
    let title = model.get("title").and_then(Value::as_str).unwrap_or_default().trim().to_string();
    if title.is_empty() {
        return Err(ApiError::with_status(StatusCode::BAD_REQUEST, "Dashboard title cannot be empty", "empty-name"));
    }
    if form.message.as_deref().is_some_and(|m| m.chars().count() > 500) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "message too long, max 500 characters"));
    }
    let uid = model.get("uid").and_then(Value::as_str).unwrap_or_default().to_string();
    if !util::is_valid_short_uid(&uid) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "uid contains illegal characters"));
    }
    if uid.chars().count() > 40 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "uid too long, max 40 characters"));
    }
    if form.folderuid.as_deref().is_some_and(|f| !f.is_empty()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Folder not found"));
    }
    let id = model.get("id").and_then(Value::as_i64).filter(|id| *id > 0);
    let version = model.get("version").and_then(Value::as_i64).unwrap_or(0);
    let overwrite = form.overwrite.unwrap_or(false);

    let mut db = app.db();
    let existing = if !uid.is_empty() {
        db.dashboard_by_uid(caller.org_id, &uid).cloned()
    } else if let Some(id) = id {
        let found = db.dashboards.get(&id).filter(|d| d.org_id == caller.org_id).cloned();
        Some(found.ok_or_else(|| ApiError::with_status(StatusCode::NOT_FOUND, "Dashboard not found", "not-found"))?)
    } else {
        None
    };
    if let Some(existing) = &existing
        && !overwrite
        && version != existing.version
    {
        return Err(ApiError::with_status(
            StatusCode::PRECONDITION_FAILED,
            "The dashboard has been changed by someone else",
            "version-mismatch",
        ));
    }
    let own_id = existing.as_ref().map(|d| d.id);
    let title_taken = db
        .dashboards
        .values()
        .any(|d| d.org_id == caller.org_id && d.folder_uid.is_empty() && d.title == title && Some(d.id) != own_id);
    if title_taken && !overwrite {
        return Err(ApiError::with_status(
            StatusCode::PRECONDITION_FAILED,
            "A dashboard with the same name in the folder already exists",
            "name-exists",
        ));
    }

    let now = util::now_rfc3339();
    let (id, uid, version, created, created_by) = match existing {
        Some(existing) => (existing.id, existing.uid, existing.version + 1, existing.created, existing.created_by),
        None => {
            let id = db.next_dashboard_id();
            let uid = if uid.is_empty() { db.generate_uid() } else { uid };
            (id, uid, 1, now.clone(), caller.user_id)
        }
    };
    model.insert("id".to_string(), json!(id));
    model.insert("uid".to_string(), json!(uid));
    model.insert("version".to_string(), json!(version));
    let slug = util::slugify(&title);
    let dashboard = Dashboard {
        id,
        org_id: caller.org_id,
        uid: uid.clone(),
        title,
        slug: slug.clone(),
        version,
        folder_uid: String::new(),
        data: Value::Object(model),
        created,
        updated: now,
        created_by,
        updated_by: caller.user_id,
    };
    let url = dashboard.url();
    db.dashboards.insert(id, dashboard);
    ok(json!({ "id": id, "uid": uid, "url": url, "status": "success", "version": version, "slug": slug }))
}

fn login_of(db: &Db, user_id: i64) -> String {
    db.users.get(&user_id).map(|u| u.login.clone()).unwrap_or_else(|| "Anonymous".to_string())
}

/// `GET /api/dashboards/uid/:uid` (dashboard.md "Get dashboard by uid"; `GetDashboard`):
/// `{"dashboard": model, "meta": {...}}` (meta fields from `dtos.DashboardMeta`); unknown
/// in this org 404 "Dashboard not found".
pub(crate) async fn get_dashboard(
    State(app): State<App>,
    headers: HeaderMap,
    Params(uid): Params<String>,
) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Viewer, "dashboards:read")?;
    let db = app.db();
    let dash = db
        .dashboard_by_uid(caller.org_id, &uid)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Dashboard not found"))?;
    let can_edit = caller.role.is_some_and(|r| r >= Role::Editor);
    let can_admin = caller.role.is_some_and(|r| r >= Role::Admin);
    ok(json!({
        "dashboard": dash.data,
        "meta": {
            "type": "db",
            "canSave": can_edit,
            "canEdit": can_edit,
            "canAdmin": can_admin,
            "canStar": true,
            "canDelete": can_edit,
            "slug": dash.slug,
            "url": dash.url(),
            "expires": "0001-01-01T00:00:00Z",
            "created": dash.created,
            "updated": dash.updated,
            "updatedBy": login_of(&db, dash.updated_by),
            "createdBy": login_of(&db, dash.created_by),
            "version": dash.version,
            "hasAcl": false,
            "isFolder": false,
            "folderId": 0,
            "folderUid": "",
            "folderTitle": "General",
            "folderUrl": "",
            "provisioned": false,
            "provisionedExternalId": "",
            "isStarred": false,
        },
    }))
}

/// `DELETE /api/dashboards/uid/:uid` (dashboard.md "Delete dashboard by uid"):
/// `{"title","message":"Dashboard <title> deleted","id"}`; unknown 404 "Dashboard not
/// found"; callers below Editor the RBAC 403 for `dashboards:delete`.
pub(crate) async fn delete_dashboard(
    State(app): State<App>,
    headers: HeaderMap,
    Params(uid): Params<String>,
) -> ApiResult {
    let caller = require_org_role(&app, &headers, Role::Editor, "dashboards:delete")?;
    let mut db = app.db();
    let dash = db
        .dashboard_by_uid(caller.org_id, &uid)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Dashboard not found"))?;
    db.dashboards.remove(&dash.id);
    ok(json!({ "title": dash.title, "message": format!("Dashboard {} deleted", dash.title), "id": dash.id }))
}

/// `GET /api/search` (folder_dashboard_search.md "Search folders and dashboards"): the
/// org's dashboards as `[{"id","uid","title","uri","url","slug","type":"dash-db","tags",
/// "isStarred","sortMeta"}]` sorted by title. Supported filters: `query` (title substring,
/// case-insensitive), `tag` (all must match), `type` (`dash-db`; `dash-folder` finds
/// nothing here), `dashboardUIDs` (repeated or comma-separated), `limit` (default 1000,
/// at most 5000) and `page` (from 1).
pub(crate) async fn search(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult {
    // Signed-in only; results are filtered by what the caller may read, so a caller
    // without a role in the org finds nothing.
    let caller = authenticate(&app, &headers)?;
    let kind = query_value(&uri, "type").unwrap_or_default();
    if kind == "dash-folder" || caller.role.is_none_or(|r| r < Role::Viewer) {
        return ok(json!([]));
    }
    let query = query_value(&uri, "query").unwrap_or_default().to_lowercase();
    let tags = query_values(&uri, "tag");
    let uids: Vec<String> = query_values(&uri, "dashboardUIDs")
        .iter()
        .flat_map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .collect();
    let limit = match query_int(&uri, "limit") {
        n if n <= 0 => 1000,
        n => n.min(5000),
    };
    let page = query_int(&uri, "page").max(1);
    let db = app.db();
    let mut hits: Vec<&Dashboard> = db
        .dashboards
        .values()
        .filter(|d| d.org_id == caller.org_id)
        .filter(|d| query.is_empty() || d.title.to_lowercase().contains(&query))
        .filter(|d| uids.is_empty() || uids.contains(&d.uid))
        .filter(|d| {
            let own = d.tags();
            tags.iter().all(|t| own.iter().any(|o| o.as_str() == Some(t.as_str())))
        })
        .collect();
    hits.sort_by_key(|d| (d.title.to_lowercase(), d.id));
    let skip = usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(usize::MAX);
    let list: Vec<Value> = hits
        .into_iter()
        .skip(skip)
        .take(take)
        .map(|d| {
            json!({
                "id": d.id,
                "uid": d.uid,
                "title": d.title,
                "uri": format!("db/{}", d.slug),
                "url": d.url(),
                "slug": "",
                "type": "dash-db",
                "tags": d.tags(),
                "isStarred": false,
                "sortMeta": 0,
            })
        })
        .collect();
    ok(Value::Array(list))
}

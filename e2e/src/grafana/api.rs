//! The Grafana API handlers. Each names the documentation and code it follows.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::state::{NewUser, Role, User};
use super::util::{self, ApiError, ApiResult, bind, ok, query_int, query_value, success};
use super::{App, Caller, authenticate};

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
pub(crate) fn require_org_role(app: &App, headers: &HeaderMap, min: Role, action: &str) -> Result<Caller, ApiError> {
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
pub(crate) async fn health(State(app): State<App>) -> ApiResult {
    ok(json!({ "commit": "mla-e2e", "database": "ok", "version": app.config.version.reported() }))
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

/// `GET /api/orgs?perpage=&page=&name=&query=` (org.md "Search all Organizations"):
/// `[{"id","name"}]`. `pkg/api/org.go` `SearchOrgs` (10.4, 11.x, 12.x): `perpage` defaults
/// to 1000 (also for 0 or less), `page` is passed on as given (`QueryInt`, default 0);
/// `pkg/services/org/orgimpl/store.go` `Search` skips `perpage x page` rows, so pages
/// count from **0** and page 1 is the second thousand. `name` matches exactly, `query` as
/// a name prefix (`name LIKE query%`). The store sets no order; this server lists by id
/// (insertion order, as SQLite returns the rows). Assumed: a negative page (a negative SQL
/// offset) is 500 "Failed to search orgs".
pub(crate) async fn list_orgs(State(app): State<App>, headers: HeaderMap, uri: Uri) -> ApiResult {
    require_server_admin(&app, &headers, "orgs:read")?;
    let per_page = match query_int(&uri, "perpage") {
        n if n <= 0 => 1000,
        n => n,
    };
    let page = query_int(&uri, "page");
    if page < 0 {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Failed to search orgs"));
    }
    let name = query_value(&uri, "name").filter(|n| !n.is_empty());
    let query = query_value(&uri, "query").filter(|q| !q.is_empty()).map(|q| q.to_lowercase());
    let db = app.db();
    let orgs: Vec<_> = db
        .orgs
        .values()
        .filter(|o| name.as_ref().is_none_or(|n| &o.name == n))
        .filter(|o| query.as_ref().is_none_or(|q| o.name.to_lowercase().starts_with(q)))
        .collect();
    let skip = usize::try_from(page.saturating_mul(per_page)).unwrap_or(usize::MAX);
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
                "isExternallySynced": user.externally_synced,
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
/// invalid role 400 "Invalid role specified"; a user whose auth module syncs org roles 403
/// `org.ErrCannotChangeRoleForExternallySyncedUser` (`pkg/services/org/model.go`:
/// `errutil.Forbidden("org.externallySynced", "cannot change role for externally synced
/// user")`, checked in the handler before the store); leaving the org without an Admin 400 "Cannot
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
    if db.users.get(&user_id).is_some_and(|u| u.externally_synced) {
        return Err(ApiError::errutil(
            StatusCode::FORBIDDEN,
            "cannot change role for externally synced user",
            "org.externallySynced",
        ));
    }
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
/// name-desc`. Pages count from **1**: `pkg/services/searchusers/searchusers.go`
/// `SearchUser` (10.4, 11.x, 12.x) raises a `page` below 1 to 1 and the user store skips
/// `perpage x (page - 1)` rows.
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
/// "User with email '<email>' or username '<login>' already exists". With
/// [`GrafanaConfig::strong_password_policy`] (`[auth.basic] password_policy = true`) a
/// password that `pkg/services/user/password.go` `ValidatePassword` refuses (under 12
/// characters, or without an upper-case letter, a lower-case letter, a digit and a
/// symbol) is 400 `{"message":"New password doesn't comply with the password policy",
/// "messageId":"password.password-policy-infringe",...}`. The user joins
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
    if app.config.strong_password_policy && !util::strong_password(&password) {
        return Err(ApiError::errutil(
            StatusCode::BAD_REQUEST,
            "New password doesn't comply with the password policy",
            "password.password-policy-infringe",
        ));
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

//! The dashboard and search handlers. Each names the documentation and code it follows.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::{Params, require_org_role};
use super::state::{Dashboard, Db, Role};
use super::util::{self, ApiError, ApiResult, bind, ok, query_int, query_value, query_values};
use super::{App, NameMatch, authenticate};

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
/// - another dashboard of the same name in the folder
///   (`pkg/services/dashboards/database/database.go` `getExistingDashboardByTitleAndFolder`,
///   run after `getExistingDashboardByIDOrUIDForUpdate`): acting as 10.4 the name is the
///   slug of the title, as 11.0-11.2 the title, as 12.x there is no such check
///   ([`GrafanaVersion::dashboard_name_match`]). Without `overwrite` it is 412
///   `{"message":"A dashboard with the same name in the folder already exists",
///   "status":"name-exists"}`; **with** `overwrite` the saved dashboard takes the other
///   one's id, uid and version (`dash.SetID`, `dash.SetUID`, `dash.SetVersion`) and
///   replaces it: the uid in the request is dropped, and a dashboard that already had that
///   uid stays as it was;
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
    let slug = util::slugify(&title);
    let holder = app.config.version.dashboard_name_match().and_then(|how| {
        db.dashboards
            .values()
            .find(|d| {
                d.org_id == caller.org_id
                    && d.folder_uid.is_empty()
                    && Some(d.id) != own_id
                    && match how {
                        NameMatch::Slug => d.slug == slug,
                        NameMatch::Title => d.title == title,
                    }
            })
            .cloned()
    });
    let existing = match holder {
        Some(_) if !overwrite => {
            return Err(ApiError::with_status(
                StatusCode::PRECONDITION_FAILED,
                "A dashboard with the same name in the folder already exists",
                "name-exists",
            ));
        }
        // The takeover: the save goes to the other dashboard.
        Some(holder) => Some(holder),
        None => existing,
    };

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

//! The datasource handlers. Each names the documentation and code it follows.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::App;
use super::api::{Params, require_org_role};
use super::state::{DataSource, Db, Role};
use super::util::{self, ApiError, ApiResult, bind, ok};

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
    list.sort_by_cached_key(|d| d.name.to_lowercase());
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

/// `datasources.ErrDataSourceUIDInvalid` (`pkg/services/datasources/errors.go`:
/// `errutil.ValidationFailed("datasource.uidInvalid", "Invalid datasource UID.")`), rendered
/// by the handlers' `response.ErrOrFallback` as a 400.
fn invalid_uid() -> ApiError {
    ApiError::errutil(StatusCode::BAD_REQUEST, "Invalid datasource UID.", "datasource.uidInvalid")
}

fn datasource_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Data source not found")
}

/// `POST /api/datasources` (data_source.md "Create a data source"; `AddDataSource`):
/// `{"message":"Datasource added","id","name","datasource": DTO}`, version 1; a name or uid
/// already used in the org is 409 "data source with the same name already exists" /
/// "data source with the same uid already exists"; no uid gets a generated one; acting as
/// Grafana 12, a uid `util.ValidateUID` refuses is 400 "Invalid datasource UID."; missing
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
            // `AddDataSource` in the store validates after the name check.
            if app.config.version.validates_datasource_uids() && !util::valid_uid(&uid) {
                return Err(invalid_uid());
            }
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
/// the body renames the uid (docs example); acting as Grafana 12, a body uid
/// `util.ValidateUID` refuses is 400 "Invalid datasource UID.". The read-only check comes
/// first (`updateDataSourceByID`, in the handler), the uid check in the store. Assumed: an
/// empty `uid` keeps the current one.
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
    // `UpdateDataSource` in the store validates a non-empty body uid (Grafana 12).
    if app.config.version.validates_datasource_uids()
        && form.uid.as_deref().is_some_and(|u| !u.is_empty() && !util::valid_uid(u))
    {
        return Err(invalid_uid());
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

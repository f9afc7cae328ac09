//! Small helpers: Grafana-shaped JSON responses and errors, request body binding, query
//! strings, timestamps and slugs.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// A JSON response with Grafana's content type.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error answered as Grafana's `response.Error` does: `{"message": "..."}`, optionally
/// with more fields (dashboards add `status`).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError { status, body: json!({ "message": message }) }
    }

    /// Grafana's `DashboardErr.Body()`: `{"status": ..., "message": ...}`.
    pub fn with_status(status: StatusCode, message: &str, grafana_status: &str) -> ApiError {
        ApiError { status, body: json!({ "message": message, "status": grafana_status }) }
    }

    /// An `errutil` error as `response.Err` renders it: `{"message", "messageId",
    /// "statusCode", "traceID"}` (`pkg/apimachinery/errutil`, `Error.Public`).
    pub fn errutil(status: StatusCode, message: &str, message_id: &str) -> ApiError {
        ApiError {
            status,
            body: json!({
                "message": message,
                "messageId": message_id,
                "statusCode": status.as_u16(),
                "traceID": "",
            }),
        }
    }

    /// `web.Bind` failed: Grafana answers 400 "bad request data".
    pub fn bad_request_data() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad request data")
    }

    /// The RBAC denial of `pkg/services/accesscontrol/middleware.go` (`deny`):
    /// `{"title":"Access denied","message":"You'll need additional permissions to perform
    /// this action. Permissions needed: <action>","accessErrorId":"ACE<digits>"}`.
    pub fn access_denied(action: &str) -> ApiError {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        ApiError {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "title": "Access denied",
                "message": format!("You'll need additional permissions to perform this action. Permissions needed: {action}"),
                "accessErrorId": format!("ACE{:010}", nanos),
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body)
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// `200 {"message": ...}`: Grafana's `response.Success`.
pub(crate) fn success(message: &str) -> ApiResult {
    Ok(json_response(StatusCode::OK, &json!({ "message": message })))
}

pub(crate) fn ok(body: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, &body))
}

/// Binds a JSON body like Grafana's `web.Bind` (Go's `encoding/json`): top-level field
/// names match case-insensitively (so `OrgId` and `orgId` both bind), unknown fields are
/// ignored, a type mismatch or malformed JSON is 400 "bad request data". The target type
/// spells its fields in lowercase.
pub(crate) fn bind<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::bad_request_data())?;
    let folded = match value {
        Value::Object(map) => {
            let mut folded = Map::new();
            for (key, value) in map {
                folded.insert(key.to_lowercase(), value);
            }
            Value::Object(folded)
        }
        // `null` binds to the zero value in Go.
        Value::Null => Value::Object(Map::new()),
        _ => return Err(ApiError::bad_request_data()),
    };
    serde_json::from_value(folded).map_err(|_| ApiError::bad_request_data())
}

/// The decoded query string pairs of `uri`, in order.
pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    let Some(query) = uri.query() else { return Vec::new() };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

pub(crate) fn query_value(uri: &Uri, name: &str) -> Option<String> {
    query_pairs(uri).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub(crate) fn query_values(uri: &Uri, name: &str) -> Vec<String> {
    query_pairs(uri).into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect()
}

/// Macaron's `QueryInt`: a missing or malformed value is 0.
pub(crate) fn query_int(uri: &Uri, name: &str) -> i64 {
    query_value(uri, name).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Grafana's `slugify.Slugify` for ASCII titles: lowercase, runs of other characters
/// become one `-`, no leading or trailing `-`.
pub(crate) fn slugify(title: &str) -> String {
    let mut slug = String::new();
    let mut dash = false;
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            if dash && !slug.is_empty() {
                slug.push('-');
            }
            dash = false;
            slug.push(c);
        } else {
            dash = true;
        }
    }
    slug
}

/// Grafana's `util.IsValidShortUID`: letters, digits, `-` and `_`.
pub(crate) fn is_valid_short_uid(uid: &str) -> bool {
    uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The current time as RFC 3339 in UTC, the way Grafana's JSON renders `time.Time`.
pub(crate) fn now_rfc3339() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A stable pseudo avatar path. Grafana uses `/avatar/<md5 of the email>`; this server
/// has no md5, so the hash differs but the shape is the same.
pub(crate) fn avatar_url(email: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in email.trim().to_lowercase().bytes() {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("/avatar/{hash:032x}")
}

/// `pkg/services/user/password.go` `ValidatePassword` with the strong policy on: at least
/// 12 characters (bytes, Go's `len`) with an upper-case letter, a lower-case letter, a
/// number and a symbol (neither letter nor number), by Unicode class.
pub(crate) fn strong_password(password: &str) -> bool {
    password.len() >= 12
        && password.chars().any(char::is_uppercase)
        && password.chars().any(char::is_lowercase)
        && password.chars().any(char::is_numeric)
        && password.chars().any(|c| !c.is_alphabetic() && !c.is_numeric())
}

/// Grafana's `util.ValidateUID` (`pkg/util/shortid_generator.go`): at most 40 characters,
/// all of `[a-zA-Z0-9_-]` (the empty uid passes; callers generate one).
pub(crate) fn valid_uid(uid: &str) -> bool {
    uid.len() <= 40 && is_valid_short_uid(uid)
}

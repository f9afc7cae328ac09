//! A recording stand-in for Loki's distributor and query frontend (Loki is AGPL and may
//! not be built here; Cortex runs for real, see [`crate::cortex::Cortex`]): every request is
//! recorded with the tenant nginx pinned (`X-Scope-OrgID`). Pushes (`/loki/api/v1/push`)
//! are read the way Loki reads them, as grafana/loki `pkg/loghttp/push/push.go`
//! `ParseLokiRequest` does (read at commit 21c78615d558): `Content-Encoding` empty or
//! `snappy` (the body is raw snappy either way), `gzip` or `deflate`, anything else 400
//! `Content-Encoding "<x>" not supported`; `Content-Type: application/json` is the JSON
//! push format (`{"streams":[{"stream":{..},"values":[["<ns>","<line>"],..]}]}`), any
//! other type a snappy-compressed `logproto.PushRequest`. A body that does not parse is
//! answered 400, a good push 204 (`pkg/distributor/http.go` `Distributor.pushHandler`,
//! read at commit 01b5e3466b4b: `w.WriteHeader(http.StatusNoContent)`). Not checked here:
//! gzip and deflate bodies (accepted unread), label syntax beyond `{...}`, and every
//! limit Loki enforces. Other paths (the query frontend) are answered 204.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// One request the backend received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Every `X-Scope-OrgID` value, joined by `,` (one is expected).
    pub tenant: String,
    /// Request path.
    pub path: String,
    /// The `X-Test-Marker` header, if a test set one to find its request again.
    pub marker: Option<String>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
}

/// The recording stand-in; stops when [`RecordingBackend::stop`] is called or the runtime
/// ends.
pub struct RecordingBackend {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for RecordingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingBackend").field("url", &self.url).finish_non_exhaustive()
    }
}

impl RecordingBackend {
    /// Starts the stand-in on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { received: received.clone() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let router =
            axum::Router::new().route("/__received", axum::routing::get(summary)).fallback(record).with_state(shared);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { url, received, stop })
    }

    /// Base URL (the gateway's Loki distributor and query frontend point here).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests received per tenant and path.
    pub fn by_tenant(&self) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for r in self.received() {
            *out.entry((r.tenant, r.path)).or_insert(0) += 1;
        }
        out
    }

    /// Stops the recorder (the receiver stops on drop).
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// `GET /__received`: requests received per tenant and path, as JSON.
async fn summary(State(shared): State<Shared>) -> axum::response::Response {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in shared.received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        *counts.entry(r.tenant.clone()).or_default().entry(r.path.clone()).or_insert(0) += 1;
    }
    let body = serde_json::json!({ "requests_by_tenant_and_path": counts }).to_string();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn record(State(shared): State<Shared>, request: Request) -> axum::response::Response {
    let headers = request.headers().clone();
    let tenant = headers
        .get_all("x-scope-orgid")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let path = request.uri().path().to_string();
    let marker = headers.get("x-test-marker").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    shared.received.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
        tenant,
        path: path.clone(),
        marker: marker.clone(),
    });
    if path != "/loki/api/v1/push" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body\n").into_response();
    };
    match check_push(&header("content-encoding"), &header("content-type"), &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}

/// Whether a Loki push body parses as `ParseLokiRequest` reads it (see the module doc).
pub fn check_push(encoding: &str, content_type: &str, body: &[u8]) -> Result<(), String> {
    match encoding {
        "" | "snappy" => {}
        // Accepted unread: the stand-in does not inflate.
        "gzip" | "deflate" => return Ok(()),
        other => return Err(format!("Content-Encoding {other:?} not supported")),
    }
    if content_type.split(';').next().unwrap_or_default().trim() == "application/json" {
        return check_json_push(body);
    }
    let raw = snappy_decode(body).ok_or("decompression error: corrupt input (snappy)")?;
    check_proto_push(&raw)
}

fn check_json_push(body: &[u8]) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("unmarshal push request: {e}"))?;
    let streams = value.get("streams").and_then(|s| s.as_array()).ok_or("no streams in the push request")?;
    for stream in streams {
        let labels = stream.get("stream").and_then(|l| l.as_object()).ok_or("a stream without a label map")?;
        if labels.values().any(|v| !v.is_string()) {
            return Err("label values must be strings".into());
        }
        let values = stream.get("values").and_then(|v| v.as_array()).ok_or("a stream without values")?;
        for entry in values {
            let entry =
                entry.as_array().filter(|e| e.len() == 2 || e.len() == 3).ok_or("an entry is not [ts, line]")?;
            let ts = entry[0].as_str().filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
            if ts.is_none() || !entry[1].is_string() {
                return Err("an entry's timestamp must be a string of nanoseconds and its line a string".into());
            }
        }
    }
    Ok(())
}

/// `logproto.PushRequest`: streams (1) of `{labels (1) string, entries (2) {timestamp (1),
/// line (2) string}}`.
fn check_proto_push(raw: &[u8]) -> Result<(), String> {
    let bad = |what: &str| format!("unmarshal push request: {what}");
    for (field, value) in proto_fields(raw).ok_or_else(|| bad("not protobuf"))? {
        let (1, Wire::Len(stream)) = (field, value) else { continue };
        let mut labels = None;
        for (field, value) in proto_fields(stream).ok_or_else(|| bad("a stream is not protobuf"))? {
            match (field, value) {
                (1, Wire::Len(text)) => labels = Some(std::str::from_utf8(text).map_err(|_| bad("labels not UTF-8"))?),
                (2, Wire::Len(entry)) => {
                    let fields = proto_fields(entry).ok_or_else(|| bad("an entry is not protobuf"))?;
                    let line = fields.iter().find(|(f, _)| *f == 2);
                    if let Some((_, Wire::Len(line))) = line {
                        std::str::from_utf8(line).map_err(|_| bad("a line is not UTF-8"))?;
                    }
                }
                _ => {}
            }
        }
        let labels = labels.unwrap_or_default().trim();
        if !(labels.starts_with('{') && labels.ends_with('}')) {
            return Err(format!("error parsing labels {labels:?}"));
        }
    }
    Ok(())
}

enum Wire<'a> {
    Varint,
    Fixed,
    Len(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The top-level fields of a protobuf message, `None` when it is not one.
fn proto_fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let value = match key & 7 {
            0 => varint(buf, &mut pos).map(|_| Wire::Varint)?,
            1 | 5 => {
                pos = pos.checked_add(if key & 7 == 1 { 8 } else { 4 }).filter(|p| *p <= buf.len())?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Len(bytes)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

/// Snappy block format (what Go's `snappy.Decode` reads), `None` when corrupt.
pub fn snappy_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    let length = usize::try_from(varint(input, &mut pos)?).ok().filter(|l| *l <= 64 << 20)?;
    let mut out = Vec::with_capacity(length);
    while pos < input.len() {
        let tag = input[pos];
        pos += 1;
        let (copy_len, offset) = match tag & 3 {
            0 => {
                let mut len = usize::from(tag >> 2);
                if len >= 60 {
                    let bytes = len - 59;
                    let raw = input.get(pos..pos + bytes)?;
                    len = raw.iter().rev().fold(0usize, |n, b| (n << 8) | usize::from(*b));
                    pos += bytes;
                }
                let end = pos.checked_add(len + 1).filter(|e| *e <= input.len())?;
                out.extend_from_slice(&input[pos..end]);
                pos = end;
                continue;
            }
            1 => {
                let low = usize::from(*input.get(pos)?);
                pos += 1;
                (usize::from((tag >> 2) & 7) + 4, (usize::from(tag >> 5) << 8) | low)
            }
            2 => {
                let raw = input.get(pos..pos + 2)?;
                pos += 2;
                (usize::from(tag >> 2) + 1, usize::from(u16::from_le_bytes([raw[0], raw[1]])))
            }
            _ => {
                let raw = input.get(pos..pos + 4)?;
                pos += 4;
                (usize::from(tag >> 2) + 1, usize::try_from(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])).ok()?)
            }
        };
        if offset == 0 || offset > out.len() || out.len() + copy_len > length {
            return None;
        }
        for _ in 0..copy_len {
            out.push(out[out.len() - offset]);
        }
    }
    (out.len() == length).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_blocks() {
        // "abcabcabcd": literal "abc", copy (offset 3, length 6), literal "d"; then a copy
        // (tag 1: length 4, offset 9) with nothing to copy from.
        let block = [10, 2 << 2, b'a', b'b', b'c', 1 | ((6 - 4) << 2), 3, 0, b'd'];
        assert_eq!(snappy_decode(&block).as_deref(), Some(&b"abcabcabcd"[..]));
        assert_eq!(snappy_decode(&[5, 0, b'a']), None, "short");
        assert_eq!(snappy_decode(&[3, 1, 9]), None, "offset beyond the output");
    }

    #[test]
    fn pushes_as_loki_reads_them() {
        let json = br#"{"streams":[{"stream":{"app":"a"},"values":[["1700000000000000000","hello"]]}]}"#;
        assert_eq!(check_push("", "application/json", json), Ok(()));
        assert!(check_push("", "application/json", br#"{"streams":[{"stream":{"app":1},"values":[]}]}"#).is_err());
        assert!(check_push("", "application/json", br#"{"streams":[{"stream":{},"values":[[1,"x"]]}]}"#).is_err());
        assert!(check_push("", "application/json", b"not json").is_err());
        assert_eq!(check_push("br", "application/json", json), Err("Content-Encoding \"br\" not supported".into()));

        // PushRequest{streams{labels "{app=\"a\"}", entries{timestamp{seconds 1}, line "hi"}}}.
        let labels = br#"{app="a"}"#;
        let mut entry = vec![0x0a, 0x02, 0x08, 0x01, 0x12, 0x02];
        entry.extend_from_slice(b"hi");
        let mut stream = vec![0x0a, labels.len() as u8];
        stream.extend_from_slice(labels);
        stream.extend_from_slice(&[0x12, entry.len() as u8]);
        stream.extend_from_slice(&entry);
        let mut request = vec![0x0a, stream.len() as u8];
        request.extend_from_slice(&stream);
        let mut snappy = vec![request.len() as u8, ((request.len() - 1) as u8) << 2];
        snappy.extend_from_slice(&request);
        assert_eq!(check_push("", "application/x-protobuf", &snappy), Ok(()));
        assert_eq!(check_push("snappy", "", &snappy), Ok(()));
        assert!(check_push("", "application/x-protobuf", &request).is_err(), "not snappy");
        assert!(check_push("", "application/x-protobuf", b"x").is_err());
    }
}

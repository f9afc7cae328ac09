//! A thin client of the per-tenant configuration APIs of Cortex (Alertmanager, ruler) and
//! Loki (ruler), as Cortex's "HTTP API" document describes them. Every call carries the
//! tenant in `X-Scope-OrgID` and is counted in `mla_external_requests_total`.

use std::time::{Duration, Instant};

use mla_common::api::RuleGroupType;
use mla_common::metrics::ExternalApiMetrics;

use super::AlertingError;

/// The tenant header of Cortex and Loki.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// Rule namespace KKP puts every rule group in.
pub const RULE_NAMESPACE: &str = "default";

/// The backends of one seed.
#[derive(Clone, Debug)]
pub struct CortexClient {
    http: reqwest::Client,
    alertmanager: String,
    cortex_ruler: String,
    loki_ruler: String,
    metrics: ExternalApiMetrics,
}

/// A write the backend refused as invalid (400), with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl CortexClient {
    /// A client of the given base URLs; each call gives up after `timeout`.
    pub fn new(
        alertmanager: &str,
        cortex_ruler: &str,
        loki_ruler: &str,
        timeout: Duration,
        metrics: ExternalApiMetrics,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        let trim = |url: &str| url.trim_end_matches('/').to_string();
        Ok(Self {
            http,
            alertmanager: trim(alertmanager),
            cortex_ruler: trim(cortex_ruler),
            loki_ruler: trim(loki_ruler),
            metrics,
        })
    }

    fn rules_url(&self, kind: RuleGroupType) -> (&'static str, String) {
        match kind {
            RuleGroupType::Metrics => ("cortex", format!("{}/api/v1/rules", self.cortex_ruler)),
            RuleGroupType::Logs => ("loki", format!("{}/loki/api/v1/rules", self.loki_ruler)),
        }
    }

    async fn call(
        &self,
        api: &'static str,
        endpoint: &'static str,
        method: reqwest::Method,
        url: String,
        tenant: &str,
        body: Option<String>,
    ) -> Result<(u16, String), AlertingError> {
        let verb: &'static str = match method {
            reqwest::Method::GET => "GET",
            reqwest::Method::POST => "POST",
            reqwest::Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        let mut request = self.http.request(method, url).header(TENANT_HEADER, tenant);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/yaml").body(body);
        }
        let started = Instant::now();
        let result = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        }
        .await;
        let status = result.as_ref().ok().map(|(status, _)| *status);
        self.metrics.observe(api, endpoint, verb, status, started.elapsed());
        result.map_err(|error| AlertingError::Backend {
            api,
            operation: verb,
            tenant: tenant.to_string(),
            message: without_url(&error),
        })
    }

    /// The tenant's Alertmanager configuration body, `None` when it has none.
    pub async fn get_alertmanager(&self, tenant: &str) -> Result<Option<String>, AlertingError> {
        let url = format!("{}/api/v1/alerts", self.alertmanager);
        match self.call("cortex", "alerts", reqwest::Method::GET, url, tenant, None).await? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => Err(unexpected("cortex", "GET", tenant, status, &body)),
        }
    }

    /// Stores the tenant's Alertmanager configuration; `Err(Refused)` inside when Cortex
    /// found it invalid.
    pub async fn set_alertmanager(&self, tenant: &str, body: String) -> Result<Result<(), Refused>, AlertingError> {
        let url = format!("{}/api/v1/alerts", self.alertmanager);
        match self.call("cortex", "alerts", reqwest::Method::POST, url, tenant, Some(body)).await? {
            (200 | 201, _) => Ok(Ok(())),
            (400, body) => Ok(Err(Refused(body.trim().to_string()))),
            (status, body) => Err(unexpected("cortex", "POST", tenant, status, &body)),
        }
    }

    /// Removes the tenant's Alertmanager configuration (none is fine).
    pub async fn delete_alertmanager(&self, tenant: &str) -> Result<(), AlertingError> {
        let url = format!("{}/api/v1/alerts", self.alertmanager);
        match self.call("cortex", "alerts", reqwest::Method::DELETE, url, tenant, None).await? {
            (200 | 202 | 204 | 404, _) => Ok(()),
            (status, body) => Err(unexpected("cortex", "DELETE", tenant, status, &body)),
        }
    }

    /// One rule group of the tenant in [`RULE_NAMESPACE`], `None` when absent.
    pub async fn get_rule_group(
        &self,
        kind: RuleGroupType,
        tenant: &str,
        group: &str,
    ) -> Result<Option<String>, AlertingError> {
        let (api, base) = self.rules_url(kind);
        let url = with_segments(&base, &[RULE_NAMESPACE, group]);
        match self.call(api, "rules", reqwest::Method::GET, url, tenant, None).await? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => Err(unexpected(api, "GET", tenant, status, &body)),
        }
    }

    /// Stores one rule group in [`RULE_NAMESPACE`]; `Err(Refused)` inside when invalid.
    pub async fn set_rule_group(
        &self,
        kind: RuleGroupType,
        tenant: &str,
        body: String,
    ) -> Result<Result<(), Refused>, AlertingError> {
        let (api, base) = self.rules_url(kind);
        let url = with_segments(&base, &[RULE_NAMESPACE]);
        match self.call(api, "rules", reqwest::Method::POST, url, tenant, Some(body)).await? {
            (200..=202, _) => Ok(Ok(())),
            // Cortex 1.21 answers invalid PromQL with 400 and an empty body.
            (400, body) if body.trim().is_empty() => Ok(Err(Refused("HTTP 400 without a reason".into()))),
            (400, body) => Ok(Err(Refused(body.trim().to_string()))),
            (status, body) => Err(unexpected(api, "POST", tenant, status, &body)),
        }
    }

    /// Removes one rule group (absent is fine).
    pub async fn delete_rule_group(
        &self,
        kind: RuleGroupType,
        tenant: &str,
        namespace: &str,
        group: &str,
    ) -> Result<(), AlertingError> {
        let (api, base) = self.rules_url(kind);
        let url = with_segments(&base, &[namespace, group]);
        match self.call(api, "rules", reqwest::Method::DELETE, url, tenant, None).await? {
            (200 | 202 | 204 | 404, _) => Ok(()),
            (status, body) => Err(unexpected(api, "DELETE", tenant, status, &body)),
        }
    }

    /// Every `(namespace, group)` of the tenant in one ruler.
    pub async fn list_rule_groups(
        &self,
        kind: RuleGroupType,
        tenant: &str,
    ) -> Result<Vec<(String, String)>, AlertingError> {
        let (api, base) = self.rules_url(kind);
        match self.call(api, "rules", reqwest::Method::GET, base, tenant, None).await? {
            (200, body) => parse_rule_listing(&body).map_err(|message| AlertingError::Backend {
                api,
                operation: "GET",
                tenant: tenant.to_string(),
                message,
            }),
            (404, _) => Ok(Vec::new()),
            (status, body) => Err(unexpected(api, "GET", tenant, status, &body)),
        }
    }
}

/// `(namespace, group name)` pairs of a ruler's `GET /api/v1/rules` answer
/// (`{namespace: [group, ...]}`).
pub fn parse_rule_listing(body: &str) -> Result<Vec<(String, String)>, String> {
    let listing: std::collections::BTreeMap<String, Vec<serde_yaml::Value>> =
        serde_yaml::from_str(body).map_err(|e| format!("unreadable rule listing: {e}"))?;
    Ok(listing
        .into_iter()
        .flat_map(|(namespace, groups)| {
            groups.into_iter().filter_map(move |group| {
                let name = group.get("name")?.as_str()?.to_string();
                Some((namespace.clone(), name))
            })
        })
        .collect())
}

/// `base` with each of `segments` appended as one percent-encoded path segment: names
/// read back from a ruler may hold `/`, `?` or `#`, which must not change the route.
pub fn with_segments(base: &str, segments: &[&str]) -> String {
    let mut url = base.to_string();
    for segment in segments {
        url.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    url
}

fn unexpected(api: &'static str, operation: &'static str, tenant: &str, status: u16, body: &str) -> AlertingError {
    let mut body = body.trim().to_string();
    body.truncate(300);
    AlertingError::Backend { api, operation, tenant: tenant.to_string(), message: format!("HTTP {status}: {body}") }
}

/// The error without the URL reqwest puts in its message (the URL holds no secret, but
/// the message goes to Events and conditions, where the kind of failure is what counts).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            with_segments("http://r/api/v1/rules", &["default", "g-1.a"]),
            "http://r/api/v1/rules/default/g-1.a"
        );
        assert_eq!(with_segments("http://r", &["a/b", "c?d#e f"]), "http://r/a%2Fb/c%3Fd%23e%20f");
    }

    #[test]
    fn rule_listing_names_every_group() {
        let body = "default:\n  - name: a\n    rules: []\n  - name: b\n    rules: []\nother:\n  - name: c\n";
        assert_eq!(
            parse_rule_listing(body).unwrap_or_default(),
            vec![
                ("default".to_string(), "a".to_string()),
                ("default".to_string(), "b".to_string()),
                ("other".to_string(), "c".to_string())
            ]
        );
        assert!(parse_rule_listing("- not a map").is_err());
    }
}

//! The Loki ruler stand-in answers as Loki's ruler API is documented (Cortex itself runs
//! for real in the tests: `mla_e2e::cortex::Cortex`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use mla_e2e::cortex::{CortexServer, Ruler};
use reqwest::StatusCode;

async fn call(method: reqwest::Method, url: String, tenant: Option<&str>, body: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn loki_rule_groups_per_tenant() {
    use reqwest::Method;
    let server = CortexServer::start().await.unwrap();
    let base = format!("{}/loki/api/v1/rules", server.url());
    let group =
        "name: g1\nrules:\n  - alert: Errors\n    expr: sum(rate({app=\"x\"} |= \"error\" [5m])) > 1\n    for: 5m\n";

    assert_eq!(call(Method::GET, base.clone(), Some("a"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(Method::POST, format!("{base}/default"), Some("a"), Some(group)).await.0, StatusCode::ACCEPTED);
    let (status, body) = call(Method::GET, format!("{base}/default/g1"), Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_yaml::from_str::<serde_yaml::Value>(&body).unwrap(),
        serde_yaml::from_str::<serde_yaml::Value>(group).unwrap()
    );
    let (status, body) = call(Method::GET, base.clone(), Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: serde_yaml::Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(listed["default"][0]["name"], serde_yaml::Value::from("g1"));
    assert_eq!(call(Method::GET, format!("{base}/default/g1"), Some("b"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.rule_groups(Ruler::Loki, "a"), vec![("default".to_string(), "g1".to_string())]);

    // Refused as rulefmt refuses: no expr, both record and alert, unknown keys, no name.
    for body in [
        "name: g2\nrules:\n  - alert: A\n",
        "name: g2\nrules:\n  - alert: A\n    record: b\n    expr: up\n",
        "name: g2\nbogus: 1\nrules: []\n",
        "rules: []\n",
        "- not a mapping\n",
    ] {
        let (status, text) = call(Method::POST, format!("{base}/default"), Some("a"), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
    }
    assert!(server.rule_group(Ruler::Loki, "a", "default", "g2").is_none());

    assert_eq!(call(Method::DELETE, format!("{base}/default/g1"), Some("a"), None).await.0, StatusCode::ACCEPTED);
    assert!(server.rule_groups(Ruler::Loki, "a").is_empty());
    assert_eq!(call(Method::POST, format!("{base}/default"), Some("a"), Some(group)).await.0, StatusCode::ACCEPTED);
    assert_eq!(call(Method::DELETE, format!("{base}/default"), Some("a"), None).await.0, StatusCode::ACCEPTED);
    assert!(server.rule_groups(Ruler::Loki, "a").is_empty());

    // Tenancy and availability.
    let (status, body) = call(Method::POST, format!("{base}/default"), None, Some(group)).await;
    assert_eq!((status, body.trim()), (StatusCode::UNAUTHORIZED, "no org id"));
    server.set_available(false);
    assert_eq!(call(Method::GET, base.clone(), Some("a"), None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    server.set_available(true);
    assert_eq!(call(Method::GET, base, Some("a"), None).await.0, StatusCode::NOT_FOUND);
}

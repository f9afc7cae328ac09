//! The Cortex/Loki test server answers as Cortex's "HTTP API" document says.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use mla_e2e::cortex::{CortexServer, Ruler};
use reqwest::StatusCode;

const CONFIG: &str =
    "template_files: {}\nalertmanager_config: |\n  route:\n    receiver: team\n  receivers:\n    - name: team\n";

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
async fn alertmanager_config_per_tenant() {
    let server = CortexServer::start().await.unwrap();
    let url = format!("{}/api/v1/alerts", server.url());
    use reqwest::Method;

    let (status, body) = call(Method::GET, url.clone(), None, None).await;
    assert_eq!((status, body.trim()), (StatusCode::UNAUTHORIZED, "no org id"));
    assert_eq!(call(Method::GET, url.clone(), Some("a"), None).await.0, StatusCode::NOT_FOUND);

    assert_eq!(call(Method::POST, url.clone(), Some("a"), Some(CONFIG)).await.0, StatusCode::CREATED);
    let (status, body) = call(Method::GET, url.clone(), Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let got: serde_yaml::Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(got, serde_yaml::from_str::<serde_yaml::Value>(CONFIG).unwrap());
    assert_eq!(call(Method::GET, url.clone(), Some("b"), None).await.0, StatusCode::NOT_FOUND, "tenants are apart");

    // Refused: not YAML, unknown keys, an undefined receiver, empty; the stored one stays.
    for bad in [
        "::: not yaml",
        "alertmanager_config: |\n  route:\n    receiver: nobody\n  receivers:\n    - name: team\n",
        "alertmanager_config: |\n  bogus: 1\n  route:\n    receiver: team\n  receivers:\n    - name: team\n",
        "alertmanager_config: |\n  receivers:\n    - name: team\n",
        "alertmanager_config: ''\n",
        "unknown_field: 1\n",
    ] {
        let (status, body) = call(Method::POST, url.clone(), Some("a"), Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert!(server.alertmanager_config("a").unwrap().contains("receiver: team"));

    assert_eq!(call(Method::DELETE, url.clone(), Some("a"), None).await.0, StatusCode::OK);
    assert_eq!(call(Method::DELETE, url.clone(), Some("a"), None).await.0, StatusCode::OK, "idempotent");
    assert_eq!(call(Method::GET, url.clone(), Some("a"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.mutations("a"), 9);
    assert_eq!(server.mutations("b"), 0);

    server.set_available(false);
    assert_eq!(call(Method::GET, url.clone(), Some("a"), None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    server.set_available(true);
    assert_eq!(call(Method::GET, url, Some("a"), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rule_groups_per_tenant_and_ruler() {
    use reqwest::Method;
    let server = CortexServer::start().await.unwrap();
    let base = server.url().to_string();
    let group = "name: g1\nrules:\n  - alert: Down\n    expr: up == 0\n    for: 5m\n";
    let log_group = "name: g1\nrules:\n  - alert: Errors\n    expr: sum(rate({app=\"x\"} |= \"error\" [5m])) > 1\n";

    assert_eq!(call(Method::GET, format!("{base}/api/v1/rules"), Some("a"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        call(Method::POST, format!("{base}/api/v1/rules/default"), Some("a"), Some(group)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(Method::POST, format!("{base}/loki/api/v1/rules/default"), Some("a"), Some(log_group)).await.0,
        StatusCode::ACCEPTED
    );
    let (status, body) = call(Method::GET, format!("{base}/api/v1/rules/default/g1"), Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_yaml::from_str::<serde_yaml::Value>(&body).unwrap(),
        serde_yaml::from_str::<serde_yaml::Value>(group).unwrap()
    );
    let (status, body) = call(Method::GET, format!("{base}/api/v1/rules"), Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: serde_yaml::Value = serde_yaml::from_str(&body).unwrap();
    assert_eq!(listed["default"][0]["name"], serde_yaml::Value::from("g1"));
    assert_eq!(
        call(Method::GET, format!("{base}/api/v1/rules/default/g1"), Some("b"), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.rule_groups(Ruler::Loki, "a"), vec![("default".to_string(), "g1".to_string())]);

    // Refused: bad PromQL (promtool, when installed), no expr, both record and alert,
    // unknown keys, no name.
    let mut bad = vec![
        "name: g2\nrules:\n  - alert: A\n",
        "name: g2\nrules:\n  - alert: A\n    record: b\n    expr: up\n",
        "name: g2\nbogus: 1\nrules: []\n",
        "rules: []\n",
        "- not a mapping\n",
    ];
    if which_promtool() {
        bad.push("name: g2\nrules:\n  - alert: A\n    expr: up ==\n");
    }
    for body in bad {
        let (status, text) = call(Method::POST, format!("{base}/api/v1/rules/default"), Some("a"), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
    }
    assert!(server.rule_group(Ruler::Cortex, "a", "default", "g2").is_none());

    assert_eq!(
        call(Method::DELETE, format!("{base}/api/v1/rules/default/g1"), Some("a"), None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(Method::DELETE, format!("{base}/api/v1/rules/default/g1"), Some("a"), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(server.rule_groups(Ruler::Cortex, "a").is_empty());
    assert_eq!(server.rule_groups(Ruler::Loki, "a").len(), 1, "the Loki ruler is separate");
    assert_eq!(
        call(Method::DELETE, format!("{base}/loki/api/v1/rules/default"), Some("a"), None).await.0,
        StatusCode::ACCEPTED
    );
    assert!(server.rule_groups(Ruler::Loki, "a").is_empty());
    let (status, body) = call(Method::POST, format!("{base}/api/v1/rules/default"), None, Some(group)).await;
    assert_eq!((status, body.trim()), (StatusCode::UNAUTHORIZED, "no org id"));
}

fn which_promtool() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("promtool").is_file()))
}

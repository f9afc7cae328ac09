//! Real Cortex 1.21 as `mla_e2e::cortex::Cortex` runs it: loopback only, multi-tenant, and
//! the answers of its configuration APIs the controllers depend on (including the ones the
//! old test server got wrong).

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use std::time::Duration;

use mla_e2e::cortex::Cortex;
use mla_e2e::eventually;
use reqwest::{Method, StatusCode};

async fn call(
    cortex: &Cortex,
    method: Method,
    path: &str,
    tenant: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", cortex.url()));
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

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mla-cortex-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn cortex_runs_on_loopback_with_tenants_apart() {
    let mut cortex = Cortex::start(&scratch("process")).await.unwrap();
    eprintln!(
        "measured: cortex ready {:?} after start; RSS {} KiB",
        cortex.started_in(),
        cortex.rss_kib().unwrap_or_default()
    );
    // Only the two ports it was given, on 127.0.0.1: no memberlist, no Alertmanager gossip.
    let listeners = cortex.listeners().unwrap();
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert!(listeners.iter().all(|l| l.starts_with("tcp 127.0.0.1:")), "{listeners:?}");

    let (status, body) = call(&cortex, Method::GET, "/api/v1/alerts", None, None).await;
    assert_eq!((status, body.trim()), (StatusCode::UNAUTHORIZED, "no org id"));

    // Alertmanager configuration per tenant: 404 with none, 201 on POST, 400 with the
    // reason for an undefined receiver, DELETE 200 also when there is none.
    let config =
        "template_files: {}\nalertmanager_config: |\n  route:\n    receiver: team\n  receivers:\n    - name: team\n";
    let (status, body) = call(&cortex, Method::GET, "/api/v1/alerts", Some("a"), None).await;
    assert_eq!((status, body.trim()), (StatusCode::NOT_FOUND, "alertmanager storage object not found"));
    assert_eq!(call(&cortex, Method::POST, "/api/v1/alerts", Some("a"), Some(config)).await.0, StatusCode::CREATED);
    let bad = config.replace("receiver: team", "receiver: nobody");
    let (status, body) = call(&cortex, Method::POST, "/api/v1/alerts", Some("a"), Some(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("undefined receiver \"nobody\" used in route"), "{body}");
    let (status, body) = call(&cortex, Method::GET, "/api/v1/alerts", Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, config, "served exactly as sent");
    assert!(cortex.alertmanager_config("b").await.unwrap().is_none(), "tenants are apart");
    assert_eq!(call(&cortex, Method::DELETE, "/api/v1/alerts", Some("b"), None).await.0, StatusCode::OK);

    // Rule groups come back rebuilt from storage: durations normalised, empty and zero
    // fields dropped, label values as strings.
    let sent = "name: g1\ninterval: 60s\nlimit: 0\nrules:\n  - alert: A\n    expr: up == 0\n    for: 900s\n    keep_firing_for: 90s\n    labels:\n      severity: critical\n      n: 1\n    annotations: {}\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    for: 0s\n";
    let (status, _) = call(&cortex, Method::POST, "/api/v1/rules/default", Some("a"), Some(sent)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(&cortex, Method::GET, "/api/v1/rules/default/g1", Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "name: g1\ninterval: 1m\nrules:\n    - alert: A\n      expr: up == 0\n      for: 15m\n      keep_firing_for: 1m30s\n      labels:\n        \"n\": \"1\"\n        severity: critical\n    - record: job:up:sum\n      expr: sum by (job) (up)\n"
    );
    // Refused: no rules at all, invalid PromQL (400 with an empty body), both record and
    // alert. Accepted: unknown keys in a rule (ignored).
    let (status, body) =
        call(&cortex, Method::POST, "/api/v1/rules/default", Some("a"), Some("name: g2\nrules: []\n")).await;
    assert_eq!((status, body.trim()), (StatusCode::BAD_REQUEST, "invalid rules config: rule group 'g2' has no rules"));
    let (status, body) = call(
        &cortex,
        Method::POST,
        "/api/v1/rules/default",
        Some("a"),
        Some("name: g2\nrules:\n  - alert: A\n    expr: up ==\n"),
    )
    .await;
    assert_eq!((status, body.trim()), (StatusCode::BAD_REQUEST, ""));
    let both = "name: g2\nrules:\n  - alert: A\n    record: b\n    expr: up\n";
    let (status, body) = call(&cortex, Method::POST, "/api/v1/rules/default", Some("a"), Some(both)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("only one of 'record' and 'alert' must be set"), "{body}");
    let unknown = "name: g3\nrules:\n  - alert: A\n    expr: up\n    bogus: 1\n";
    assert_eq!(
        call(&cortex, Method::POST, "/api/v1/rules/default", Some("a"), Some(unknown)).await.0,
        StatusCode::ACCEPTED
    );
    // Deleting a group that is not there: 202; a namespace that is not there: 404.
    assert_eq!(
        call(&cortex, Method::DELETE, "/api/v1/rules/default/nope", Some("b"), None).await.0,
        StatusCode::ACCEPTED
    );
    let (status, body) = call(&cortex, Method::DELETE, "/api/v1/rules/default", Some("b"), None).await;
    assert_eq!((status, body.trim()), (StatusCode::NOT_FOUND, "group namespace does not exist"));
    assert_eq!(cortex.rule_groups("b").await.unwrap(), vec![]);
    assert_eq!(cortex.rule_groups("a").await.unwrap().len(), 2);

    // Every mutating configuration call is counted by route, whatever its status.
    let calls = cortex.mutating_calls().await.unwrap();
    assert_eq!(calls[&("POST".to_string(), "api_v1_alerts".to_string())], 2, "{calls:?}");
    assert_eq!(calls[&("POST".to_string(), "api_v1_rules_namespace".to_string())], 5, "{calls:?}");
    assert_eq!(cortex.config_mutations().await.unwrap(), 10, "{calls:?}");

    // Runtime overrides are reloaded from the file and shown per tenant.
    cortex.write_runtime_config("overrides:\n  a:\n    ingestion_rate: 5\n").unwrap();
    let overrides = eventually("the override in force", Duration::from_secs(10), || {
        let cortex = &cortex;
        async move {
            let overrides = cortex.overrides_in_force().await?;
            Ok((overrides["a"]["ingestion_rate"] == 5).then_some(overrides))
        }
    })
    .await
    .unwrap();
    assert!(overrides.get("b").is_none());

    // An always-firing rule of tenant a reaches a's Alertmanager, and not b's.
    let always = "name: always\ninterval: 1s\nrules:\n  - alert: AlwaysFiring\n    expr: vector(1)\n";
    assert_eq!(
        call(&cortex, Method::POST, "/api/v1/rules/default", Some("a"), Some(always)).await.0,
        StatusCode::ACCEPTED
    );
    let fired = std::time::Instant::now();
    eventually("the alert in tenant a's Alertmanager", Duration::from_secs(30), || {
        let cortex = &cortex;
        async move {
            let alerts = cortex.alertmanager_alerts("a").await?;
            Ok(alerts.iter().any(|a| a["labels"]["alertname"] == "AlwaysFiring").then_some(()))
        }
    })
    .await
    .unwrap();
    eprintln!(
        "measured: an always-firing rule's alert in the tenant's Alertmanager {:?} after the rule was posted",
        fired.elapsed()
    );
    assert_eq!(call(&cortex, Method::POST, "/api/v1/alerts", Some("b"), Some(config)).await.0, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cortex.alertmanager_alerts("b").await.unwrap().is_empty(), "tenant b got a's alert");

    // The Alertmanager is served where KKP's gateway sends its read path's Alertmanager
    // routes, and nowhere else.
    let (status, _) = call(&cortex, Method::GET, "/api/prom/alertmanager/api/v2/status", Some("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&cortex, Method::GET, "/alertmanager/api/v2/status", Some("a"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A restart (after a crash) serves what was stored.
    cortex.restart().await.unwrap();
    assert!(cortex.alertmanager_config("a").await.unwrap().is_some_and(|c| c.contains("receiver: team")));
    assert!(cortex.rule_group("a", "default", "g1").await.unwrap().is_some());
}

/// Samples pushed under a tenant are found under that tenant only; an ingestion-rate
/// override refuses that tenant's excess pushes (429) and no other tenant's.
#[tokio::test]
async fn samples_per_tenant_and_ingestion_limits() {
    use mla_e2e::cortex::remote_write::Series;
    let cortex = Cortex::start(&scratch("samples")).await.unwrap();
    let (status, body) = cortex.push("a", &[Series::now("e2e_marker", &[("job", "t")], 7.0)]).await.unwrap();
    assert!((200..300).contains(&status), "{status}: {body}");
    let found = eventually("the sample under tenant a", Duration::from_secs(20), || {
        let cortex = &cortex;
        async move {
            let result = cortex.query("a", "e2e_marker").await?;
            Ok((!result.is_empty()).then_some(result))
        }
    })
    .await
    .unwrap();
    assert_eq!(found[0]["value"][1], "7");
    assert!(cortex.query("b", "e2e_marker").await.unwrap().is_empty(), "another tenant sees nothing");
    let (status, _) = mla_e2e::cortex::push(
        &reqwest::Client::new(),
        &format!("{}/api/v1/push", cortex.url()),
        None,
        &[Series::now("e2e_marker", &[], 1.0)],
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "no tenant, no push");

    // 1 sample/s with a burst of 5 for tenant a only.
    cortex.write_runtime_config("overrides:\n  a:\n    ingestion_rate: 1\n    ingestion_burst_size: 5\n").unwrap();
    eventually("the limit in force", Duration::from_secs(10), || {
        let cortex = &cortex;
        async move { Ok((cortex.overrides_in_force().await?["a"]["ingestion_rate"] == 1).then_some(())) }
    })
    .await
    .unwrap();
    let burst: Vec<Series> = (0..20).map(|i| Series::now("e2e_burst", &[("i", &i.to_string())], 1.0)).collect();
    // The distributor re-reads a tenant's limits every 10 s (`limiter.RateLimiter`'s
    // recheck period): the first refusal may take that long.
    let limited = std::time::Instant::now();
    let (status, body) = eventually("tenant a's excess refused", Duration::from_secs(20), || {
        let (cortex, burst) = (&cortex, &burst);
        async move {
            let (status, body) = cortex.push("a", burst).await?;
            Ok((status != 200).then_some((status, body)))
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 429, "{body}");
    eprintln!("measured: the ingestion limit refused tenant a's pushes {:?} after it was in force", limited.elapsed());
    eprintln!("observed: tenant a over its ingestion rate: HTTP {status}: {}", body.trim());
    let (status, body) = cortex.push("b", &burst).await.unwrap();
    assert!((200..300).contains(&status), "tenant b has no limit: {status}: {body}");
}

//! Real traffic through the MLA gateway: Debian's nginx runs the rendered config (only
//! ports and file paths adapted) with certificates from our PKI, in front of a backend that
//! records what reaches it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::time::{Duration, Instant, SystemTime};

use mla_common::api::{LoggingRateLimitSettings, MLAAdminSettingSpec};
use mla_common::pki::{self, CaState, CertifiedKeyPem};
use seed_controller_manager::gateway::nginx::{self, Upstreams};
use support::{Nginx, Recorded, ScratchDir, start_backend};

const CLUSTER: &str = "abc123";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn client(ca_pem: &str, identity: Option<&CertifiedKeyPem>) -> reqwest::Client {
    client_with(ca_pem, identity, reqwest::ClientBuilder::new())
}

fn client_with(ca_pem: &str, identity: Option<&CertifiedKeyPem>, builder: reqwest::ClientBuilder) -> reqwest::Client {
    let mut builder = builder
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"));
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

fn write_file(dir: &ScratchDir, rel: &str, content: &str) {
    std::fs::write(dir.join(rel), content).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_pins_the_tenant_and_refuses_strangers() {
    let dir = ScratchDir::new("traffic");
    std::fs::create_dir_all(dir.join("certs")).expect("mkdir");
    std::fs::create_dir_all(dir.join("run")).expect("mkdir");
    let now = SystemTime::now();
    // A CA with 20 days left, so that the rotation at the end happens now.
    let ca = pki::create_ca(CLUSTER, now - pki::CA_VALIDITY + 20 * DAY).expect("CA");
    let ca_state =
        CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() };
    let gateway = pki::issue_gateway_certificate(&ca, "localhost", Some("127.0.0.1"), now).expect("gateway cert");
    write_file(&dir, "certs/gateway.crt", &gateway.cert_pem);
    write_file(&dir, "certs/gateway.key", &gateway.key_pem);
    write_file(&dir, "certs/ca-bundle.crt", &pki::trust_bundle(&ca_state, now).expect("bundle"));

    let (backend, records) = start_backend().await;
    let upstreams = Upstreams::all(&backend);
    let server = support::scratch_server(&dir);
    // Only the logs push path is limited: 1 request/s, burst 1.
    let settings = MLAAdminSettingSpec {
        cluster_name: CLUSTER.into(),
        logging_rate_limits: Some(LoggingRateLimitSettings {
            ingestion_rate: Some(1),
            ingestion_burst_size: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = nginx::render(CLUSTER, Some(&settings), &upstreams, &server).expect("render");
    let nginx = Nginx::start(&dir, &config);
    let write = format!("https://127.0.0.1:{}", server.write_port);
    let read = format!("http://127.0.0.1:{}", server.read_port);

    // Ready when the probe answers.
    let plain = reqwest::Client::builder().no_proxy().build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = plain.get(format!("{read}/")).send().await
            && response.status() == 200
        {
            assert_eq!(response.text().await.expect("body"), "OK\n");
            break;
        }
        assert!(Instant::now() < deadline, "nginx did not become ready:\n{}", nginx.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let take = || std::mem::take(&mut *records.lock().unwrap());

    // A client certificate from the cluster's CA: the push arrives, with the tenant pinned
    // whatever the client claimed.
    let prometheus = pki::issue_client_certificate(&ca, "prometheus", now).expect("client cert");
    let agent = client(&ca.cert_pem, Some(&prometheus));
    let response = agent
        .post(format!("{write}/api/v1/push?x=1"))
        .header("X-Scope-OrgID", "someone-else")
        .header("x-scope-orgid", "and-another")
        .body("samples")
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 204, "{}", nginx.log());
    assert_eq!(
        take(),
        vec![Recorded { method: "POST".into(), uri: "/api/v1/push?x=1".into(), tenants: vec![CLUSTER.into()] }]
    );
    let response = agent.post(format!("{write}/loki/api/v1/push")).body("lines").send().await.expect("push");
    assert_eq!(response.status(), 204);
    assert_eq!(take()[0].tenants, vec![CLUSTER.to_string()]);

    // Unknown paths and methods: 404, nothing forwarded.
    for (method, path) in
        [("POST", "/api/v1/query"), ("GET", "/api/v1/push"), ("POST", "/"), ("PUT", "/loki/api/v1/push")]
    {
        let response =
            agent.request(method.parse().expect("method"), format!("{write}{path}")).send().await.expect("request");
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    assert_eq!(take(), vec![]);

    // No client certificate, one from another CA, an expired one: refused with 400 (nginx
    // finishes the handshake and answers "400 Bad Request"), nothing forwarded.
    let other_ca = pki::create_ca(CLUSTER, now).expect("other CA");
    let foreign = pki::issue_client_certificate(&other_ca, "prometheus", now).expect("foreign cert");
    let expired = pki::issue_client_certificate(&ca, "prometheus", now - 400 * DAY).expect("old cert");
    for (what, identity) in [("no certificate", None), ("another CA", Some(&foreign)), ("expired", Some(&expired))] {
        let result = client(&ca.cert_pem, identity).post(format!("{write}/api/v1/push")).body("x").send().await;
        assert_eq!(result.expect(what).status(), 400, "{what}");
    }
    assert_eq!(take(), vec![], "nothing from strangers reaches the backend");

    // TLS 1.2 is refused.
    let tls12 = client_with(
        &ca.cert_pem,
        Some(&prometheus),
        reqwest::ClientBuilder::new().max_tls_version(reqwest::tls::Version::TLS_1_2),
    );
    let result = tls12.post(format!("{write}/api/v1/push")).body("x").send().await;
    assert!(result.as_ref().is_err_and(reqwest::Error::is_connect), "TLS 1.2 accepted: {result:?}");

    // Over the logs push limit: 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = agent.post(format!("{write}/loki/api/v1/push")).body("lines").send().await.expect("push");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[0], 204, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 204 || *s == 429), "{statuses:?}");
    take();

    // Read path: the tenant is pinned too, and routes go where KKP sends them.
    for (path, forwarded) in [
        ("/api/prom/api/v1/query?query=up", "/api/prom/api/v1/query?query=up"),
        ("/api/prom/api/v1/rules?type=alert", "/prometheus/api/v1/rules?type=alert"),
        ("/api/prom/api/v1/alerts", "/api/v1/alerts"),
        ("/api/prom/alertmanager/api/v2/alerts", "/api/prom/alertmanager/api/v2/alerts"),
        ("/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D", "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D"),
        ("/prometheus/api/v1/rules", "/prometheus/api/v1/rules"),
    ] {
        let response =
            plain.get(format!("{read}{path}")).header("X-Scope-OrgID", "someone-else").send().await.expect("get");
        assert_eq!(response.status(), 204, "{path}");
        assert_eq!(
            take(),
            vec![Recorded { method: "GET".into(), uri: forwarded.into(), tenants: vec![CLUSTER.into()] }],
            "{path}"
        );
    }
    let response = plain.get(format!("{read}/metrics")).send().await.expect("get");
    assert_eq!(response.status(), 404);
    assert_eq!(take(), vec![]);

    // CA rotation: the bundle holds the old and the new CA; after a reload (no restart)
    // agents with certificates from either CA get through, and the gateway's new
    // certificate from the new CA is accepted by clients trusting the bundle.
    let (rotated, change) = pki::reconcile_ca(&ca_state, CLUSTER, now).expect("reconcile").expect("rotation");
    assert!(matches!(change, pki::CaChange::Rotated(pki::RenewalReason::Expiring)), "{change:?}");
    let new_ca = rotated.current().expect("new CA");
    let bundle = pki::trust_bundle(&rotated, now).expect("bundle");
    let new_gateway = pki::issue_gateway_certificate(&new_ca, "localhost", Some("127.0.0.1"), now).expect("cert");
    write_file(&dir, "certs/gateway.crt", &new_gateway.cert_pem);
    write_file(&dir, "certs/gateway.key", &new_gateway.key_pem);
    write_file(&dir, "certs/ca-bundle.crt", &bundle);
    nginx.reload();
    let renewed = pki::issue_client_certificate(&new_ca, "prometheus", now).expect("client cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = client(&bundle, Some(&renewed)).post(format!("{write}/api/v1/push")).body("x").send().await;
        if matches!(&result, Ok(response) if response.status() == 204) {
            break;
        }
        assert!(Instant::now() < deadline, "new CA not accepted after reload: {result:?}\n{}", nginx.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_agent = client(&bundle, Some(&prometheus));
    let response = old_agent.post(format!("{write}/api/v1/push")).body("x").send().await.expect("push");
    assert_eq!(response.status(), 204, "an agent still on the old CA is cut off");
    let records = take();
    assert!(records.iter().all(|r| r.tenants == vec![CLUSTER.to_string()]), "{records:?}");
    let stranger = client(&bundle, Some(&foreign)).post(format!("{write}/api/v1/push")).body("x").send().await;
    assert!(!matches!(&stranger, Ok(response) if response.status() == 204), "another CA accepted after rotation");
    drop(nginx);
}

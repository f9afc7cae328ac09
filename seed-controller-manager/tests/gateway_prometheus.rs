//! Prometheus 3 in agent mode (`--agent`, hack/build-real-parts.sh) pushes through
//! the real gateway with a client certificate from the cluster's CA, while the gateway's
//! certificate is renewed and the CA rotated the staged way (successor trusted first, then
//! issuing, then the old CA dropped). The agent's own metrics must show no failed sample.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use mla_common::pki::{self, CaState, CertifiedKeyPem};
use seed_controller_manager::gateway::nginx::{self, Upstreams};
use support::{Nginx, Records, ScratchDir, free_port, start_backend};

const CLUSTER: &str = "prom-tenant";

struct Agent {
    _process: mla_e2e::ManagedProcess,
    port: u16,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &ScratchDir, write_port: u16) -> Self {
        let port = free_port();
        let config = format!(
            r#"global:
  scrape_interval: 1s
  external_labels:
    cluster: {CLUSTER}
scrape_configs:
  - job_name: agent
    static_configs:
      - targets: ["127.0.0.1:{port}"]
remote_write:
  - url: https://127.0.0.1:{write_port}/api/v1/push
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
      server_name: localhost
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
"#,
            ca = dir.str("agent/ca.crt"),
            cert = dir.str("agent/client.crt"),
            key = dir.str("agent/client.key"),
        );
        std::fs::write(dir.join("agent/prometheus.yml"), config).unwrap();
        let log = dir.join("agent/prometheus.log");
        let prometheus = mla_e2e::real_parts::binary("prometheus", "prometheus").expect("Prometheus 3");
        let mut command = Command::new(prometheus);
        command
            .arg("--agent")
            .arg(format!("--config.file={}", dir.str("agent/prometheus.yml")))
            .arg(format!("--storage.agent.path={}", dir.str("agent/wal")))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let process = mla_e2e::ManagedProcess::spawn("agent", command, &log)
            .expect("prometheus (hack/build-real-parts.sh builds it)");
        Self { _process: process, port, log }
    }

    /// Sum of a counter in the agent's own metrics.
    async fn counter(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

fn write(dir: &ScratchDir, rel: &str, content: &str) {
    std::fs::write(dir.join(rel), content).unwrap();
}

fn gateway_files(dir: &ScratchDir, gateway: &CertifiedKeyPem, state: &CaState, now: SystemTime) {
    write(dir, "certs/gateway.crt", &gateway.cert_pem);
    write(dir, "certs/gateway.key", &gateway.key_pem);
    write(dir, "certs/ca-bundle.crt", &pki::trust_bundle(state, now).unwrap());
}

/// Waits until `more` further pushes with exactly our tenant have reached the backend.
async fn pushes(records: &Records, more: usize, agent: &Agent, nginx: &Nginx) {
    let target = records.lock().unwrap().len() + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.lock().unwrap().len() < target {
        assert!(
            Instant::now() < deadline,
            "pushes stopped arriving\nagent: {}\nnginx: {}",
            std::fs::read_to_string(&agent.log).unwrap_or_default(),
            nginx.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for record in records.lock().unwrap().iter() {
        assert_eq!(record.uri, "/api/v1/push");
        assert_eq!(record.tenants, vec![CLUSTER.to_string()], "exactly the cluster's tenant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pushes_through_certificate_renewal_and_ca_rotation_without_a_failed_sample() {
    let dir = ScratchDir::new("prometheus");
    for sub in ["certs", "run", "agent"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let now = SystemTime::now();
    let first = pki::create_ca(CLUSTER, now).unwrap();
    let state =
        CaState { cert_pem: Some(first.cert_pem.clone()), key_pem: Some(first.key_pem.clone()), ..Default::default() };
    let gateway = pki::issue_gateway_certificate(&first, "localhost", Some("127.0.0.1"), now).unwrap();
    gateway_files(&dir, &gateway, &state, now);
    let agent_cert = pki::issue_client_certificate(&first, "prometheus", now).unwrap();
    write(&dir, "agent/ca.crt", &pki::trust_bundle(&state, now).unwrap());
    write(&dir, "agent/client.crt", &agent_cert.cert_pem);
    write(&dir, "agent/client.key", &agent_cert.key_pem);

    let (backend, records) = start_backend().await;
    let upstreams = Upstreams::all(&backend);
    let server = support::scratch_server(&dir);
    let nginx = Nginx::start(&dir, &nginx::render(CLUSTER, None, &upstreams, &server).unwrap());
    let agent = Agent::start(&dir, server.write_port);
    pushes(&records, 3, &agent, &nginx).await;

    // 1. The gateway's certificate is renewed (same CA): reload, pushes go on.
    let renewed = pki::issue_gateway_certificate(&first, "localhost", Some("127.0.0.1"), SystemTime::now()).unwrap();
    gateway_files(&dir, &renewed, &state, SystemTime::now());
    nginx.reload();
    pushes(&records, 3, &agent, &nginx).await;

    // 2. The successor CA is prepared: trusted by gateway and agent, not issuing yet.
    let second = pki::create_ca(CLUSTER, SystemTime::now()).unwrap();
    let prepared = CaState {
        next_cert_pem: Some(second.cert_pem.clone()),
        next_key_pem: Some(second.key_pem.clone()),
        ..state.clone()
    };
    gateway_files(&dir, &renewed, &prepared, SystemTime::now());
    write(&dir, "agent/ca.crt", &pki::trust_bundle(&prepared, SystemTime::now()).unwrap());
    nginx.reload();
    pushes(&records, 3, &agent, &nginx).await;

    // 3. Promotion: the successor issues; the gateway's certificate comes from it; the old
    //    CA stays trusted, so the agent's old client certificate still works.
    let promoted = CaState {
        cert_pem: Some(second.cert_pem.clone()),
        key_pem: Some(second.key_pem.clone()),
        previous_cert_pem: Some(first.cert_pem.clone()),
        ..Default::default()
    };
    let from_second =
        pki::issue_gateway_certificate(&second, "localhost", Some("127.0.0.1"), SystemTime::now()).unwrap();
    gateway_files(&dir, &from_second, &promoted, SystemTime::now());
    nginx.reload();
    pushes(&records, 3, &agent, &nginx).await;

    // 4. The agent gets a client certificate from the new CA (and the new bundle).
    let agent_cert = pki::issue_client_certificate(&second, "prometheus", SystemTime::now()).unwrap();
    write(&dir, "agent/ca.crt", &pki::trust_bundle(&promoted, SystemTime::now()).unwrap());
    write(&dir, "agent/client.key", &agent_cert.key_pem);
    write(&dir, "agent/client.crt", &agent_cert.cert_pem);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pushes(&records, 3, &agent, &nginx).await;

    // 5. The old CA is dropped from the gateway's bundle.
    gateway_files(&dir, &from_second, &promoted.without_previous(), SystemTime::now());
    nginx.reload();
    pushes(&records, 5, &agent, &nginx).await;

    let sent = agent.counter("prometheus_remote_storage_samples_total").await;
    let failed = agent.counter("prometheus_remote_storage_samples_failed_total").await;
    let retried = agent.counter("prometheus_remote_storage_samples_retried_total").await;
    let dropped = agent.counter("prometheus_remote_storage_samples_dropped_total").await;
    println!("agent: {sent} samples sent, {failed} failed, {retried} retried, {dropped} dropped");
    assert!(sent > 100.0, "{sent} samples sent");
    assert_eq!(
        (failed, dropped),
        (0.0, 0.0),
        "failed or dropped samples; agent log:\n{}",
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );
}

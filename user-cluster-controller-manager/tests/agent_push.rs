//! The generated `prometheus.yaml`, run by a real Prometheus in agent mode with a client
//! certificate from the cluster CA, pushes through a real gateway (nginx with the seed
//! manager's rendered config) into a real Prometheus remote-write receiver: the samples
//! arrive labelled `cluster=<name>`, under the cluster's tenant. With two replicas, each
//! agent's samples carry its own `__replica__` (the pod name, expanded from `POD_NAME`),
//! which is what Cortex's HA tracker deduplicates by.
//!
//! Only listen addresses and file paths are adapted, plus one thing Debian's Prometheus
//! 2.42 cannot run: the Kubernetes service discovery jobs (it is built without that SD),
//! which are dropped here; they are checked by `agents_config.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use mla_common::pki::{self, CaState};
use mla_e2e::{ManagedProcess, eventually, free_port};
use seed_controller_manager::gateway::nginx::{self, GatewayPaths, GatewayServer, Upstreams};
use user_cluster_controller_manager::agents::common::TlsPaths;
use user_cluster_controller_manager::agents::prometheus::{PrometheusConfigInput, prometheus_config};

const CLUSTER: &str = "push-c1";

#[derive(Clone)]
struct Forwarder {
    receiver: String,
    tenants: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

/// Records the tenant header, then passes the remote-write request on to the receiver.
async fn forward(State(forwarder): State<Forwarder>, request: Request) -> StatusCode {
    let headers = request.headers().clone();
    let tenants: Vec<String> =
        headers.get_all("x-scope-orgid").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    forwarder.tenants.lock().unwrap().push(tenants.join(","));
    let body = axum::body::to_bytes(request.into_body(), 64 << 20).await.unwrap();
    let mut outgoing = forwarder.client.post(format!("{}/api/v1/write", forwarder.receiver)).body(body);
    for name in ["content-type", "content-encoding", "x-prometheus-remote-write-version"] {
        if let Some(value) = headers.get(name) {
            outgoing = outgoing.header(name, value.as_bytes());
        }
    }
    StatusCode::from_u16(outgoing.send().await.unwrap().status().as_u16()).unwrap()
}

fn path(dir: &Path, rel: &str) -> String {
    dir.join(rel).to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_agent_config_pushes_through_the_gateway_under_the_clusters_tenant() {
    let results = push(&["single"], "single").await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["metric"]["cluster"], CLUSTER);
    assert_eq!(results[0]["metric"]["job"], "prometheus");
    assert!(results[0]["metric"].get("__replica__").is_none(), "one replica: no replica label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_push_samples_labelled_by_replica() {
    let results = push(&["prometheus-7d9f-a", "prometheus-7d9f-b"], "replicas").await;
    let mut replicas: Vec<String> =
        results.iter().map(|r| r["metric"]["__replica__"].as_str().unwrap_or_default().to_string()).collect();
    replicas.sort();
    assert_eq!(replicas, ["prometheus-7d9f-a", "prometheus-7d9f-b"], "{results:?}");
    assert!(results.iter().all(|r| r["metric"]["cluster"] == CLUSTER));
}

/// Runs one agent per entry of `pods` (its `POD_NAME`) with the generated configuration
/// (replicas = `pods.len()`) through the gateway into the receiver; returns the receiver's
/// `up{cluster=...}` series once there is one per agent.
async fn push(pods: &[&str], test: &str) -> Vec<serde_json::Value> {
    let dir: PathBuf = std::env::temp_dir().join(format!("mla-agent-push-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["gateway", "run", "agent/certs", "receiver"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let now = SystemTime::now();
    let ca = pki::create_ca(CLUSTER, now).unwrap();
    let state =
        CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() };
    let gateway = pki::issue_gateway_certificate(&ca, "localhost", Some("127.0.0.1"), now).unwrap();
    let bundle = pki::trust_bundle(&state, now).unwrap();
    std::fs::write(dir.join("gateway/gateway.crt"), &gateway.cert_pem).unwrap();
    std::fs::write(dir.join("gateway/gateway.key"), &gateway.key_pem).unwrap();
    std::fs::write(dir.join("gateway/ca-bundle.crt"), &bundle).unwrap();
    let client = pki::issue_client_certificate(&ca, "prometheus", now).unwrap();
    std::fs::write(dir.join("agent/certs/ca.crt"), &bundle).unwrap();
    std::fs::write(dir.join("agent/certs/client.crt"), &client.cert_pem).unwrap();
    std::fs::write(dir.join("agent/certs/client.key"), &client.key_pem).unwrap();

    // The receiver: a real Prometheus with the remote-write receiver on.
    let receiver_port = free_port().unwrap();
    let mut receiver = Command::new("prometheus");
    receiver
        .arg("--web.enable-remote-write-receiver")
        .arg(format!("--config.file={}", path(&dir, "receiver/prometheus.yml")))
        .arg(format!("--storage.tsdb.path={}", path(&dir, "receiver/data")))
        .arg(format!("--web.listen-address=127.0.0.1:{receiver_port}"));
    std::fs::write(dir.join("receiver/prometheus.yml"), "global: {}\n").unwrap();
    let _receiver = ManagedProcess::spawn("receiver", receiver, &dir.join("receiver/log")).unwrap();
    let receiver_url = format!("http://127.0.0.1:{receiver_port}");

    let tenants = Arc::new(Mutex::new(Vec::new()));
    let forwarder =
        Forwarder { receiver: receiver_url.clone(), tenants: tenants.clone(), client: reqwest::Client::new() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(forward).with_state(forwarder);
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The gateway, exactly as rendered for the seed (listen addresses and paths adapted).
    let server = GatewayServer {
        write_port: free_port().unwrap(),
        read_port: free_port().unwrap(),
        resolver: None,
        paths: GatewayPaths {
            certificate: path(&dir, "gateway/gateway.crt"),
            certificate_key: path(&dir, "gateway/gateway.key"),
            client_ca_bundle: path(&dir, "gateway/ca-bundle.crt"),
            pid: path(&dir, "run/nginx.pid"),
            temp_dir: path(&dir, "run"),
        },
    };
    let config = nginx::render(CLUSTER, None, &Upstreams::all(&backend), &server).unwrap();
    let _nginx = mla_e2e::nginx::Nginx::start("nginx", &dir, &config).unwrap();

    // The agents, with the generated configuration.
    let mut input = PrometheusConfigInput::new(CLUSTER, &format!("https://localhost:{}", server.write_port));
    input.scrape_interval = Duration::from_secs(1);
    input.client_tls = TlsPaths::in_dir(&path(&dir, "agent/certs"));
    input.replicas = pods.len() as i32;
    let generated = prometheus_config(&input).unwrap().yaml;
    let mut agents = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let agent_port = free_port().unwrap();
        let mut config: serde_yaml::Value = serde_yaml::from_str(&generated).unwrap();
        let jobs = config["scrape_configs"].as_sequence_mut().unwrap();
        jobs.retain(|job| job.get("kubernetes_sd_configs").is_none());
        assert_eq!(jobs.len(), 1, "only the self-scrape job has no Kubernetes SD");
        let adapted =
            serde_yaml::to_string(&config).unwrap().replace("localhost:9090", &format!("127.0.0.1:{agent_port}"));
        std::fs::write(dir.join(format!("agent/prometheus-{i}.yml")), adapted).unwrap();
        std::fs::create_dir_all(dir.join(format!("agent/wal-{i}"))).unwrap();
        let mut agent = Command::new("prometheus");
        // Prometheus 2 expands environment variables in external labels only with this
        // feature; Prometheus 3 (the Deployment's image) always does.
        agent
            .arg("--enable-feature=agent,expand-external-labels")
            .arg(format!("--config.file={}", path(&dir, &format!("agent/prometheus-{i}.yml"))))
            .arg(format!("--storage.agent.path={}", path(&dir, &format!("agent/wal-{i}"))))
            .arg(format!("--web.listen-address=127.0.0.1:{agent_port}"))
            .env("POD_NAME", pod);
        agents.push(ManagedProcess::spawn("agent", agent, &dir.join(format!("agent/log-{i}"))).unwrap());
    }

    // The agents' own samples arrive in the receiver with the cluster label...
    let query = format!("{receiver_url}/api/v1/query?query=up%7Bcluster%3D%22{CLUSTER}%22%7D");
    let results =
        eventually("samples of every agent with the cluster label in the receiver", Duration::from_secs(60), || {
            let query = query.clone();
            async move {
                let body = reqwest::get(&query).await?.text().await?;
                let json: serde_json::Value = serde_json::from_str(&body)?;
                Ok(json["data"]["result"].as_array().filter(|r| r.len() == pods.len()).cloned())
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#}\nagent log:\n{}", std::fs::read_to_string(dir.join("agent/log-0")).unwrap_or_default())
        });
    // ... and every push carried exactly the cluster's tenant.
    let seen = tenants.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|t| t == CLUSTER), "tenants seen: {seen:?}");
    drop(agents);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

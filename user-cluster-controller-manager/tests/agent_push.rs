//! The generated `prometheus.yaml`, run unmodified by a real Prometheus 3 agent (built by
//! `hack/build-real-parts.sh`) as its pod runs it (`mla_e2e::agent`: the Deployment's
//! arguments, the ConfigMap, the certificates Secret and a ServiceAccount token at the
//! pod's paths, the cluster's API server as the in-cluster API), pushes through a real
//! gateway (nginx with the seed manager's rendered config) into a real Prometheus 3
//! remote-write receiver: the samples arrive labelled `cluster=<name>`, under the
//! cluster's tenant, including those of a target found by the Kubernetes service discovery
//! (an annotated Pod, listed and watched with the ServiceAccount's token under the agent's
//! ClusterRole). With two
//! replicas, each agent's samples carry its own `__replica__` (the pod name, expanded from
//! `POD_NAME`), which is what Cortex's HA tracker deduplicates by.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use mla_common::pki::{self, CaState};
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port};
use seed_controller_manager::gateway::nginx::{self, GatewayPaths, GatewayServer, Upstreams};
use user_cluster_controller_manager::agents::common::NAMESPACE;
use user_cluster_controller_manager::agents::prometheus::{
    PrometheusConfigInput, PrometheusDeploymentSettings, objects, prometheus_config,
};

const CLUSTER: &str = "push-c1";
/// The gateway's external name and port as the agent is given them (resolved and
/// forwarded to the loopback gateway by `mla_e2e::agent`).
const GATEWAY_HOST: &str = "mla-gateway.push-c1.seed.example.com";
const GATEWAY_PORT: u16 = 30443;

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
    let (results, heartbeat) = push(&["single"], "single").await;
    // The heartbeat job keeps only the series Prometheus adds to each scrape: every
    // sample it scraped is dropped.
    assert_eq!(
        heartbeat,
        [
            "scrape_duration_seconds",
            "scrape_samples_post_metric_relabeling",
            "scrape_samples_scraped",
            "scrape_series_added",
            "up"
        ]
    );
    let own: Vec<_> = results.iter().filter(|r| r["metric"]["job"] == "prometheus").collect();
    assert_eq!(own.len(), 1, "{results:?}");
    assert_eq!(own[0]["value"][1], "1", "the self-scrape target localhost:9090 is up: {results:?}");
    assert!(own[0]["metric"].get("__replica__").is_none(), "one replica: no replica label");
    // The Kubernetes service discovery (in-cluster credentials, the agent's ClusterRole)
    // found the annotated Pod, and the agent scraped it.
    let pods: Vec<_> = results.iter().filter(|r| r["metric"]["job"] == "kubernetes-pods").collect();
    assert_eq!(pods.len(), 1, "{results:?}");
    assert_eq!(pods[0]["value"][1], "1", "{results:?}");
    assert_eq!(pods[0]["metric"]["kubernetes_pod_name"], "exporter", "{results:?}");
    assert_eq!(pods[0]["metric"]["kubernetes_namespace"], "default", "{results:?}");
    assert!(results.iter().all(|r| r["metric"]["cluster"] == CLUSTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_push_samples_labelled_by_replica() {
    let (results, _) = push(&["prometheus-7d9f-a", "prometheus-7d9f-b"], "replicas").await;
    let mut replicas: Vec<String> = results
        .iter()
        .filter(|r| r["metric"]["job"] == "prometheus")
        .map(|r| r["metric"]["__replica__"].as_str().unwrap_or_default().to_string())
        .collect();
    replicas.sort();
    assert_eq!(replicas, ["prometheus-7d9f-a", "prometheus-7d9f-b"], "{results:?}");
    assert!(results.iter().all(|r| r["metric"]["cluster"] == CLUSTER));
}

/// Runs one agent per entry of `pods` (its pod name) with the generated configuration
/// (replicas = `pods.len()`) and objects in a real API server, through the gateway into
/// the receiver; returns the receiver's `up{cluster=...}` series of the `prometheus` and
/// `kubernetes-pods` jobs once both are there for every agent, and the metric names of
/// the heartbeat job (`up=1` among them) once it has been scraped.
async fn push(pods: &[&str], test: &str) -> (Vec<serde_json::Value>, Vec<String>) {
    let dir: PathBuf = std::env::temp_dir().join(format!("mla-agent-push-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["gateway", "run", "receiver"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let now = SystemTime::now();
    let ca = pki::create_ca(CLUSTER, now).unwrap();
    let state =
        CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() };
    let gateway = pki::issue_gateway_certificate(&ca, "push-c1.seed.example.com", None, now).unwrap();
    let bundle = pki::trust_bundle(&state, now).unwrap();
    std::fs::write(dir.join("gateway/gateway.crt"), &gateway.cert_pem).unwrap();
    std::fs::write(dir.join("gateway/gateway.key"), &gateway.key_pem).unwrap();
    std::fs::write(dir.join("gateway/ca-bundle.crt"), &bundle).unwrap();
    let client = pki::issue_client_certificate(&ca, "prometheus", now).unwrap();

    // The receiver: a real Prometheus 3 with the remote-write receiver on.
    let prometheus = mla_e2e::real_parts::binary("prometheus", "prometheus").unwrap();
    let receiver_port = free_port().unwrap();
    let mut receiver = Command::new(&prometheus);
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

    // The user cluster with the agent's objects as the controller makes them, with the
    // production configuration (paths of the pod; a 1s interval to be quick).
    let plane = ControlPlane::start(&format!("agent-push-{test}")).await.unwrap();
    let kube = plane.client();
    let namespace =
        Namespace { metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(kube.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    let mut input = PrometheusConfigInput::new(CLUSTER, &format!("https://{GATEWAY_HOST}:{GATEWAY_PORT}"));
    input.scrape_interval = Duration::from_secs(1);
    input.replicas = pods.len() as i32;
    let generated = prometheus_config(&input).unwrap().yaml;
    let settings = PrometheusDeploymentSettings { replicas: pods.len() as i32, ..Default::default() };
    let made = objects(&settings, &generated);
    let pp = PostParams::default();
    Api::namespaced(kube.clone(), NAMESPACE).create(&pp, &made.config_map).await.unwrap();
    Api::namespaced(kube.clone(), NAMESPACE).create(&pp, &made.service_account).await.unwrap();
    Api::all(kube.clone()).create(&pp, &made.cluster_role).await.unwrap();
    Api::all(kube.clone()).create(&pp, &made.cluster_role_binding).await.unwrap();
    Api::namespaced(kube.clone(), NAMESPACE).create(&pp, &made.deployment).await.unwrap();
    let certificates = Secret {
        metadata: ObjectMeta { name: Some("prometheus-certificates".into()), ..Default::default() },
        string_data: Some(
            [("client.crt", &client.cert_pem), ("client.key", &client.key_pem), ("ca.crt", &bundle)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(kube.clone(), NAMESPACE).create(&pp, &certificates).await.unwrap();

    // The agents, as their pods run them.
    let started = Instant::now();
    let mut agents = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let spec = mla_e2e::agent::read_pod(&plane, NAMESPACE, pod, server.write_port).await.unwrap().expect("pod");
        assert_eq!(spec.config["prometheus.yaml"], generated, "the ConfigMap's file runs as generated");
        agents.push(mla_e2e::agent::run(&format!("agent-{i}"), &spec, &dir.join(format!("agent-{i}"))).await.unwrap());
    }

    // A Pod annotated for scraping, whose IP is the first agent's address (its own
    // /metrics stands in for an exporter): found by every agent's `kubernetes-pods` job.
    mla_e2e::agent::publish_scrape_target_pod(&plane, "default", "exporter", agents[0].address, 9090).await.unwrap();

    // The agents' samples arrive in the receiver with the cluster label...
    let query = format!(
        "{receiver_url}/api/v1/query?query=up%7Bcluster%3D%22{CLUSTER}%22%2Cjob%3D~%22prometheus%7Ckubernetes-pods%22%7D"
    );
    let results = eventually("samples of every agent and job with the cluster label", Duration::from_secs(60), || {
        let query = query.clone();
        async move {
            let body = reqwest::get(&query).await?.text().await?;
            let json: serde_json::Value = serde_json::from_str(&body)?;
            Ok(json["data"]["result"].as_array().filter(|r| r.len() == 2 * pods.len()).cloned())
        }
    })
    .await;
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            let all = format!("{receiver_url}/api/v1/query?query=up");
            let seen = reqwest::get(&all).await.unwrap().text().await.unwrap();
            let targets = format!("{}/api/v1/targets", agents[0].url());
            let targets = reqwest::get(&targets).await.unwrap().text().await.unwrap();
            panic!("{e:#}\nup in the receiver: {seen}\nagent targets: {targets}\nagent log:\n{}", agents[0].log_text())
        }
    };
    eprintln!("every agent's first samples in the receiver {} ms after start", started.elapsed().as_millis());
    let query =
        format!("{receiver_url}/api/v1/query?query=%7Bcluster%3D%22{CLUSTER}%22%2Cjob%3D%22mla-agent-heartbeat%22%7D");
    let heartbeat = eventually("the heartbeat job's up=1", Duration::from_secs(30), || {
        let query = query.clone();
        async move {
            let body = reqwest::get(&query).await?.text().await?;
            let json: serde_json::Value = serde_json::from_str(&body)?;
            let series = json["data"]["result"].as_array().cloned().unwrap_or_default();
            let up = series.iter().any(|r| r["metric"]["__name__"] == "up" && r["value"][1] == "1");
            let mut names: Vec<String> =
                series.iter().filter_map(|r| r["metric"]["__name__"].as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            Ok(up.then_some(names))
        }
    })
    .await
    .unwrap();
    // ... and every push carried exactly the cluster's tenant.
    let seen = tenants.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|t| t == CLUSTER), "tenants seen: {seen:?}");
    drop(agents);
    let _ = std::fs::remove_dir_all(&dir);
    (results, heartbeat)
}

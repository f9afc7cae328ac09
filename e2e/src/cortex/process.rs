//! Real Cortex (1.21, built by `hack/build-real-parts.sh cortex`) as one process on
//! loopback for tests, the demo and benchmarks: `target: all` (distributor, ingester,
//! querier, query frontend, ruler, Alertmanager, compactor, store gateway), multi-tenant
//! (`X-Scope-OrgID`), every ring in memory, blocks, rules and Alertmanager configurations
//! on the local file system, and a runtime configuration file reloaded every second
//! (`cortex.yaml` beside this file).
//!
//! Beyond the URL, the helpers here are what a test checks against Cortex: its own request
//! counters (mutating calls per route), PromQL queries under a tenant, the configurations
//! it serves and the overrides in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::remote_write;
use crate::{ManagedProcess, free_port};

/// The tenant header.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

const CONFIG_TEMPLATE: &str = include_str!("cortex.yaml");

/// How long Cortex may take to become ready (it takes well under a second; a cold page
/// cache on a busy machine takes longer).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Cortex; stopped (SIGKILL to its group) on drop. Its data directory stays, so
/// [`Cortex::restart`] brings back what it stored.
#[derive(Debug)]
pub struct Cortex {
    url: String,
    http_address: std::net::Ipv4Addr,
    dir: PathBuf,
    http_port: u16,
    grpc_port: u16,
    process: Option<ManagedProcess>,
    started_in: Duration,
    http: reqwest::Client,
}

/// Mutating calls Cortex served, by `(method, route)` as Cortex names them in
/// `cortex_request_duration_seconds_count` (e.g. `("POST", "api_v1_rules_namespace")`).
pub type Calls = BTreeMap<(String, String), u64>;

impl Cortex {
    /// Starts Cortex with its data, configuration and log under `dir` and waits until
    /// `/ready` answers 200.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_on(dir, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Like [`Cortex::start`], with the HTTP server on `address` (the pods e2e's host
    /// address, which pods reach) instead of 127.0.0.1; gRPC and the rings stay on loopback.
    pub async fn start_on(dir: &Path, address: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        // The ruler's scratch directory: Cortex logs an error at start when it is missing.
        std::fs::create_dir_all(dir.join("ruler-tmp"))?;
        let runtime_config = dir.join("runtime-config.yaml");
        if !runtime_config.exists() {
            std::fs::write(&runtime_config, "overrides: {}\n")?;
        }
        let mut cortex = Self {
            url: String::new(),
            http_address: address,
            dir,
            http_port: free_port()?,
            grpc_port: free_port()?,
            process: None,
            started_in: Duration::ZERO,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        };
        cortex.url = format!("http://{address}:{}", cortex.http_port);
        cortex.launch().await?;
        Ok(cortex)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let binary = crate::real_parts::binary("cortex", "cortex")?;
        let config = CONFIG_TEMPLATE
            .replace("{DIR}", &self.dir.display().to_string())
            .replace("{HTTP_ADDR}", &self.http_address.to_string())
            .replace("{HTTP_PORT}", &self.http_port.to_string())
            .replace("{GRPC_PORT}", &self.grpc_port.to_string());
        let config_path = self.dir.join("cortex.yaml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(binary);
        command.arg(format!("-config.file={}", config_path.display())).current_dir(&self.dir);
        let started = Instant::now();
        let mut process = ManagedProcess::spawn("cortex", command, &self.dir.join("cortex.log"))?;
        let ready = format!("{}/ready", self.url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = self.http.get(&ready).timeout(Duration::from_secs(2)).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                break;
            }
            if let Some(status) = process.try_wait()? {
                anyhow::bail!("cortex exited ({status}) before it was ready; see {}", self.log().display());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "cortex not ready after {READY_TIMEOUT:?}; see {}",
                self.log().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.started_in = started.elapsed();
        self.process = Some(process);
        Ok(())
    }

    /// The base URL (`http://127.0.0.1:<port>`): distributor (`/api/v1/push`), query
    /// frontend (`/prometheus/...`, `/api/prom/...`), ruler (`/api/v1/rules`) and
    /// Alertmanager (`/api/v1/alerts`, `/api/prom/alertmanager/...`) alike.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory holding data, configuration and `cortex.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cortex's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("cortex.log")
    }

    /// The runtime configuration file Cortex reloads every second.
    pub fn runtime_config_path(&self) -> PathBuf {
        self.dir.join("runtime-config.yaml")
    }

    /// Replaces the runtime configuration file the way a kubelet updates a mounted
    /// ConfigMap: written beside it, then renamed over it.
    pub fn write_runtime_config(&self, text: &str) -> anyhow::Result<()> {
        Ok(write_atomically(&self.dir, text)?)
    }

    /// Keeps the runtime configuration file equal to key `key` of ConfigMap
    /// `namespace/name`, as a kubelet does for a Pod that mounts it (checked every 200 ms;
    /// a kubelet takes up to a minute, which would only slow tests down). Runs until the
    /// returned task is aborted.
    pub fn mount_config_map(
        &self,
        client: kube::Client,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> tokio::task::JoinHandle<()> {
        let maps = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, namespace);
        let (name, key, dir) = (name.to_string(), key.to_string(), self.dir.clone());
        tokio::spawn(async move {
            let mut written = None;
            loop {
                if let Ok(Some(map)) = maps.get_opt(&name).await {
                    let text = map.data.unwrap_or_default().remove(&key).unwrap_or_default();
                    if written.as_ref() != Some(&text) && write_atomically(&dir, &text).is_ok() {
                        written = Some(text);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// How long the last start took until `/ready` answered 200.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ManagedProcess::id)
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
    }

    /// Every socket Cortex listens on (TCP in LISTEN state, and bound UDP sockets), from
    /// its file descriptors and `/proc/net`.
    pub fn listeners(&self) -> anyhow::Result<Vec<String>> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("cortex is not running"))?;
        listeners(pid)
    }

    /// Stops Cortex (SIGKILL: an outage as a crash would make it). The data stays.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts Cortex again on the same ports and data, waiting until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    fn get(&self, path: &str, tenant: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.url));
        match tenant {
            Some(tenant) => request.header(TENANT_HEADER, tenant),
            None => request,
        }
    }

    /// Cortex's own metrics text (`/metrics`).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.get("/metrics", None).send().await?.error_for_status()?;
        Ok(response.text().await?)
    }

    /// Mutating requests (POST, PUT, PATCH, DELETE) Cortex served since it started, per
    /// `(method, route)`, whatever their status: from `cortex_request_duration_seconds_count`.
    pub async fn mutating_calls(&self) -> anyhow::Result<Calls> {
        Ok(parse_mutating_calls(&self.metrics().await?))
    }

    /// Mutating calls to the configuration APIs (Alertmanager configuration, rule groups,
    /// silences): every mutating call except pushes of samples and PromQL queries sent as
    /// POST.
    pub async fn config_mutations(&self) -> anyhow::Result<u64> {
        Ok(self.mutating_calls().await?.iter().filter(|((_, route), _)| is_config_route(route)).map(|(_, n)| n).sum())
    }

    /// Pushes `series` under `tenant` to the distributor (`/api/v1/push`); the status
    /// and body of the answer.
    pub async fn push(&self, tenant: &str, series: &[remote_write::Series]) -> anyhow::Result<(u16, String)> {
        push(&self.http, &format!("{}/api/v1/push", self.url), Some(tenant), series).await
    }

    /// An instant PromQL query under `tenant` through the query frontend; the result
    /// vector (each element `{metric, value}`).
    pub async fn query(&self, tenant: &str, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        query(&self.http, &format!("{}/prometheus", self.url), tenant, promql).await
    }

    /// The tenant's Alertmanager configuration as Cortex's Alertmanager serves it
    /// (`GET /api/v1/alerts`: `{template_files, alertmanager_config}`), `None` on 404.
    pub async fn alertmanager_config(&self, tenant: &str) -> anyhow::Result<Option<String>> {
        let response = self.get("/api/v1/alerts", Some(tenant)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.error_for_status()?.text().await?;
        let value: Value = serde_yaml::from_str(&body)?;
        Ok(value.get("alertmanager_config").and_then(Value::as_str).map(str::to_string))
    }

    /// The configuration the tenant's Alertmanager runs (`config.original` of
    /// `/api/prom/alertmanager/api/v2/status`), `None` while it runs none: unlike
    /// [`Cortex::alertmanager_config`] (storage), this is what is in force.
    pub async fn alertmanager_running_config(&self, tenant: &str) -> anyhow::Result<Option<String>> {
        let response = self.get("/api/prom/alertmanager/api/v2/status", Some(tenant)).send().await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
        Ok(body["config"]["original"].as_str().map(str::to_string))
    }

    /// One rule group of the tenant as the ruler serves it, `None` on 404.
    pub async fn rule_group(&self, tenant: &str, namespace: &str, group: &str) -> anyhow::Result<Option<Value>> {
        let response = self.get(&format!("/api/v1/rules/{namespace}/{group}"), Some(tenant)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(serde_yaml::from_str(&response.error_for_status()?.text().await?)?))
    }

    /// Every `(namespace, group)` of the tenant in the ruler's storage.
    pub async fn rule_groups(&self, tenant: &str) -> anyhow::Result<Vec<(String, String)>> {
        let response = self.get("/api/v1/rules", Some(tenant)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let listing: BTreeMap<String, Vec<Value>> = serde_yaml::from_str(&response.error_for_status()?.text().await?)?;
        Ok(listing
            .into_iter()
            .flat_map(|(namespace, groups)| {
                groups.into_iter().filter_map(move |g| Some((namespace.clone(), g.get("name")?.as_str()?.to_string())))
            })
            .collect())
    }

    /// The rule groups the ruler has loaded and evaluates for the tenant (Prometheus'
    /// `/api/v1/rules` shape under `/prometheus`): `data.groups`.
    pub async fn loaded_rule_groups(&self, tenant: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let response = self.get("/prometheus/api/v1/rules", Some(tenant)).send().await?.error_for_status()?;
        let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
        Ok(body["data"]["groups"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts the tenant's Alertmanager holds (`/api/prom/alertmanager/api/v2/alerts`).
    pub async fn alertmanager_alerts(&self, tenant: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let response =
            self.get("/api/prom/alertmanager/api/v2/alerts", Some(tenant)).send().await?.error_for_status()?;
        Ok(serde_json::from_str(&response.text().await?)?)
    }

    /// The per-tenant overrides in force, as `/runtime_config?mode=diff` shows them
    /// (`overrides: {tenant: {limit: value}}`, only what differs from the defaults).
    pub async fn overrides_in_force(&self) -> anyhow::Result<Value> {
        let body = self.get("/runtime_config?mode=diff", None).send().await?.error_for_status()?.text().await?;
        let value: Value = serde_yaml::from_str(&body)?;
        Ok(value.get("overrides").cloned().unwrap_or(Value::Null))
    }
}

/// Replaces `runtime-config.yaml` in `dir`: written beside it, then renamed over it, so
/// Cortex never reads half a file.
fn write_atomically(dir: &Path, text: &str) -> std::io::Result<()> {
    let staged = dir.join(".runtime-config.yaml.new");
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, dir.join("runtime-config.yaml"))
}

/// An instant PromQL query under `tenant` against a Prometheus-compatible API at `base`
/// (Cortex's `/prometheus`, or a gateway's read path `/api/prom`); the result vector.
pub async fn query(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    promql: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let response = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .header(TENANT_HEADER, tenant)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "query {promql:?} as {tenant}: HTTP {status}: {body}");
    let value: serde_json::Value = serde_json::from_str(&body)?;
    Ok(value["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Sends a remote-write request of `series` to `url`, with `tenant` in `X-Scope-OrgID`
/// when given; the status and body of the answer.
pub async fn push(
    http: &reqwest::Client,
    url: &str,
    tenant: Option<&str>,
    series: &[remote_write::Series],
) -> anyhow::Result<(u16, String)> {
    let mut request = http.post(url).body(remote_write::body(series));
    for (name, value) in remote_write::HEADERS {
        request = request.header(name, value);
    }
    if let Some(tenant) = tenant {
        request = request.header(TENANT_HEADER, tenant);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Mutating requests per `(method, route)` from Cortex's metrics text
/// (`cortex_request_duration_seconds_count{method=..,route=..,status_code=..,ws=..} n`),
/// summed over status codes.
pub fn parse_mutating_calls(metrics: &str) -> Calls {
    let mut calls = Calls::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("cortex_request_duration_seconds_count{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label = |name: &str| {
            labels.split(',').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_string())
            })
        };
        let (Some(method), Some(route)) = (label("method"), label("route")) else { continue };
        if !matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
            continue;
        }
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *calls.entry((method, route)).or_insert(0) += count;
    }
    calls
}

/// Whether a route (as Cortex names it) is a configuration API rather than the data path
/// (pushes) or a query sent as POST.
pub fn is_config_route(route: &str) -> bool {
    let data_path = route.ends_with("push")
        || route.contains("api_v1_query")
        || route.contains("api_v1_series")
        || route.contains("api_v1_labels")
        || route.contains("api_v1_read");
    !data_path
}

/// The sockets process `pid` listens on, as `tcp 127.0.0.1:9009` / `udp6 [::]:7946`: TCP
/// sockets in LISTEN state and unconnected UDP sockets among its file descriptors.
pub fn listeners(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut inodes = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy().to_string();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut found = Vec::new();
    for (table, listen_state) in [("tcp", Some("0A")), ("tcp6", Some("0A")), ("udp", None), ("udp6", None)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, remote, state, _, _, _, _, _, inode, ..] = fields.as_slice() else { continue };
            // A UDP socket with a peer is a client's (Go connects one to learn its own
            // address); only an unconnected one receives from anyone.
            let unconnected = remote.trim_start_matches('0').starts_with(':') && remote.ends_with(":0000");
            if !inodes.contains(*inode) || listen_state.map_or(!unconnected, |s| s != *state) {
                continue;
            }
            found.push(format!("{table} {}", socket_address(local)));
        }
    }
    Ok(found)
}

/// `0100007F:2329` (IPv4, each 32-bit word in host order) to `127.0.0.1:9001`; IPv6 the
/// same way, in brackets.
fn socket_address(hex: &str) -> String {
    let Some((ip, port)) = hex.split_once(':') else { return hex.to_string() };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let words: Vec<u32> =
        (0..ip.len() / 8).filter_map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.swap_bytes().to_be_bytes()).collect();
    match bytes.len() {
        4 => format!("{}.{}.{}.{}:{port}", bytes[0], bytes[1], bytes[2], bytes[3]),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(octets))
        }
        _ => hex.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_from_proc() {
        assert_eq!(socket_address("0100007F:2329"), "127.0.0.1:9001");
        assert_eq!(socket_address("00000000:1E96"), "0.0.0.0:7830");
        assert_eq!(socket_address("00000000000000000000000001000000:0050"), "[::1]:80");
    }

    #[test]
    fn mutating_calls_from_metrics() {
        let text = "# HELP x\n\
cortex_request_duration_seconds_count{method=\"POST\",route=\"api_v1_rules_namespace\",status_code=\"202\",ws=\"false\"} 3\n\
cortex_request_duration_seconds_count{method=\"POST\",route=\"api_v1_rules_namespace\",status_code=\"400\",ws=\"false\"} 1\n\
cortex_request_duration_seconds_count{method=\"GET\",route=\"api_v1_rules\",status_code=\"200\",ws=\"false\"} 9\n\
cortex_request_duration_seconds_count{method=\"POST\",route=\"api_v1_push\",status_code=\"200\",ws=\"false\"} 5\n";
        let calls = parse_mutating_calls(text);
        assert_eq!(calls.get(&("POST".to_string(), "api_v1_rules_namespace".to_string())), Some(&4));
        assert_eq!(calls.len(), 2);
        assert!(!is_config_route("api_v1_push"));
        assert!(is_config_route("api_v1_rules_namespace"));
    }
}

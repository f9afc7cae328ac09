//! The metrics agent: Prometheus in agent mode (stateless apart from its WAL), scraping the
//! user cluster and writing everything to the cluster's MLA gateway (DESIGN.md, "User
//! cluster objects").
//!
//! [`prometheus_config`] renders `prometheus.yaml` from structured values with serde_yaml,
//! never by pasting strings: the cluster name and gateway URL are validated first, and the
//! extra scrape configs from `prometheus-scraping*` and `monitoring-scraping*` ConfigMaps
//! ([`scrape_configs`]) are parsed, checked one by one and written back as YAML trees, each as one element of `scrape_configs`. An input can
//! therefore add scrape jobs but never another top-level key, a second `remote_write` or a
//! different `external_labels`. A bad extra scrape config is skipped and reported in
//! [`PrometheusConfig::skipped`]; the rest still render.
//!
//! The built-in jobs follow KKP's user-cluster Prometheus: Prometheus itself, the API
//! servers, nodes and cAdvisor through the API server's node proxy, and service endpoints
//! and pods annotated `prometheus.io/scrape` (plus the `prometheus.io/scrape-slow` variants
//! every 5 minutes), with the same target labels (`kubernetes_namespace`, `kubernetes_name`,
//! `kubernetes_pod_name`, `kubernetes_node`) so KKP's dashboards keep working. Differences
//! from KKP: agent mode (no rules, no local TSDB), services discovered through
//! EndpointSlices rather than the deprecated Endpoints, `authorization.credentials_file`
//! instead of the deprecated `bearer_token_file`, and no blackbox / pushgateway jobs (they
//! need components this system does not install). One job of our own,
//! `mla-agent-heartbeat`, scrapes the agent every 5 s and keeps only the per-scrape series
//! (`up`, ...), so that a new cluster's first sample arrives within seconds rather than
//! after the up to 30 s offset of a first scrape (see `heartbeat()`).
//!
//! With more than one replica, every replica sends the same samples; each then adds the
//! external label `__replica__` with its pod name (`${POD_NAME}`, expanded from the
//! environment: Prometheus 3 always expands external label values, Prometheus 2 with
//! `--enable-feature=expand-external-labels`), which with `cluster` is the pair Cortex's
//! HA tracker deduplicates by default (docs/user-cluster-controller-manager.md). A single
//! replica carries no such label, so its series never change when it is the only one.
//!
//! The output is valid for Prometheus 3 (`--agent`): the tests run its `promtool check
//! config` (with and without `--agent`) on every rendered variant, Kubernetes discovery
//! included, and run the agent on it unmodified (`e2e/src/agent.rs`).
//!
//! Layout: this module renders the file; [`scrape_configs`] checks the users' extra
//! scrape configs; [`objects`] builds the Kubernetes objects that run the agent.

mod objects;
mod scrape_configs;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_yaml::Value;

use super::common::{self, CERTIFICATES_DIR, ConfigError, TlsPaths};

pub use objects::*;
use scrape_configs::checked_extra_scrape_configs;
pub use scrape_configs::{ExtraScrapeConfig, SkippedScrapeConfig, extra_scrape_configs};

/// Name of the Deployment, ConfigMap and ServiceAccount, and the client certificate's CN.
pub const PROMETHEUS: &str = "prometheus";
/// ClusterRole and ClusterRoleBinding of the agent.
pub const CLUSTER_ROLE: &str = "system:mla:prometheus";
/// Secret with the agent's client certificate (see [`common::certificates_secret`]).
pub const CERTIFICATES_SECRET: &str = "prometheus-certificates";
/// `prometheus.yaml` in the ConfigMap.
pub const CONFIG_KEY: &str = "prometheus.yaml";
/// Prometheus image when the controller is not told otherwise.
pub const DEFAULT_IMAGE: &str = "quay.io/prometheus/prometheus:v3.16.0";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/prometheus/mla";
/// The agent's WAL (an emptyDir: the agent is stateless beyond samples not yet sent).
pub const STORAGE_DIR: &str = "/var/lib/prometheus";
/// External label naming the replica when several send the same samples (Cortex's
/// default `ha_replica_label`; the cluster label is `cluster`, its default
/// `ha_cluster_label`).
pub const REPLICA_LABEL: &str = "__replica__";
/// Environment variable holding the pod's name (set from the downward API).
pub const POD_NAME_ENV: &str = "POD_NAME";
/// Scrape interval when none is given.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(30);
/// Job of the agent's heartbeat (see [`heartbeat`]): `up{job="mla-agent-heartbeat"}`.
pub const HEARTBEAT_JOB: &str = "mla-agent-heartbeat";
/// Scrape interval (and timeout) of the heartbeat job.
pub const HEARTBEAT_INTERVAL: &str = "5s";
/// The service account token and API server CA every pod gets.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Files the in-cluster API access reads: the pod's service account token and the API
/// server's CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountPaths {
    /// Bearer token.
    pub token_file: String,
    /// CA of the API server.
    pub ca_file: String,
}

impl Default for ServiceAccountPaths {
    fn default() -> Self {
        Self { token_file: format!("{SERVICE_ACCOUNT_DIR}/token"), ca_file: format!("{SERVICE_ACCOUNT_DIR}/ca.crt") }
    }
}

/// What [`prometheus_config`] renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfigInput {
    /// The user cluster's name: the `cluster` external label (DNS-1123 label).
    pub cluster_name: String,
    /// Base URL of the cluster's MLA gateway write path, `https://host[:port]`.
    pub gateway_url: String,
    /// Global scrape interval (whole seconds, at least 1s).
    pub scrape_interval: Duration,
    /// The client certificate for the gateway.
    pub client_tls: TlsPaths,
    /// In-cluster API access.
    pub service_account: ServiceAccountPaths,
    /// Extra scrape configs, in any order (they are ordered by source).
    pub extra_scrape_configs: Vec<ExtraScrapeConfig>,
    /// Replicas of the agent; above 1 each adds the [`REPLICA_LABEL`] external label.
    pub replicas: i32,
}

impl PrometheusConfigInput {
    /// Input with the production defaults: 30s interval, certificates where
    /// [`deployment`] mounts them, the pod's own service account, no extra configs.
    pub fn new(cluster_name: &str, gateway_url: &str) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            gateway_url: gateway_url.into(),
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            client_tls: TlsPaths::in_dir(CERTIFICATES_DIR),
            service_account: ServiceAccountPaths::default(),
            extra_scrape_configs: Vec::new(),
            replicas: 1,
        }
    }
}

/// A rendered `prometheus.yaml` and the extra scrape configs it leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// The file.
    pub yaml: String,
    /// Extra scrape configs that were not usable, in source order.
    pub skipped: Vec<SkippedScrapeConfig>,
}

// ---- prometheus.yaml ----

#[derive(Serialize)]
struct PrometheusYaml {
    global: Global,
    scrape_configs: Vec<Value>,
    remote_write: Vec<RemoteWrite>,
}

#[derive(Serialize)]
struct Global {
    scrape_interval: String,
    scrape_timeout: String,
    external_labels: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct RemoteWrite {
    url: String,
    name: &'static str,
    tls_config: TlsConfig,
}

#[derive(Serialize)]
struct TlsConfig {
    ca_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
}

#[derive(Serialize)]
struct Authorization {
    credentials_file: String,
}

#[derive(Serialize)]
struct KubernetesSd {
    role: &'static str,
}

#[derive(Serialize)]
struct StaticConfig {
    targets: Vec<&'static str>,
}

#[derive(Serialize)]
struct ScrapeConfig {
    job_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_interval: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization: Option<Authorization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_config: Option<TlsConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    static_configs: Vec<StaticConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kubernetes_sd_configs: Vec<KubernetesSd>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relabel_configs: Vec<Relabel>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metric_relabel_configs: Vec<Relabel>,
}

impl ScrapeConfig {
    fn new(job_name: &'static str) -> Self {
        Self {
            job_name,
            scrape_interval: None,
            scrape_timeout: None,
            scheme: None,
            authorization: None,
            tls_config: None,
            static_configs: Vec::new(),
            kubernetes_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
        }
    }

    /// HTTPS to the API server with the pod's service account.
    fn api_server(mut self, service_account: &ServiceAccountPaths) -> Self {
        self.scheme = Some("https");
        self.authorization = Some(Authorization { credentials_file: service_account.token_file.clone() });
        self.tls_config = Some(TlsConfig { ca_file: service_account.ca_file.clone(), cert_file: None, key_file: None });
        self
    }

    fn discover(mut self, role: &'static str) -> Self {
        self.kubernetes_sd_configs.push(KubernetesSd { role });
        self
    }

    fn slow(mut self) -> Self {
        self.scrape_interval = Some("5m");
        self.scrape_timeout = Some("30s");
        self
    }
}

#[derive(Serialize, Default)]
struct Relabel {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    source_labels: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<&'static str>,
    action: &'static str,
}

fn keep(source: &'static str, regex: &'static str) -> Relabel {
    Relabel { source_labels: vec![source], regex: Some(regex), action: "keep", ..Default::default() }
}

fn drop_matching(source: &'static str, regex: &'static str) -> Relabel {
    Relabel { source_labels: vec![source], regex: Some(regex), action: "drop", ..Default::default() }
}

fn copy(source: &'static str, target: &'static str) -> Relabel {
    Relabel { source_labels: vec![source], target_label: Some(target), action: "replace", ..Default::default() }
}

fn replace(
    sources: Vec<&'static str>,
    regex: &'static str,
    replacement: &'static str,
    target: &'static str,
) -> Relabel {
    Relabel {
        source_labels: sources,
        regex: Some(regex),
        target_label: Some(target),
        replacement: Some(replacement),
        action: "replace",
    }
}

fn labelmap(regex: &'static str) -> Relabel {
    Relabel { regex: Some(regex), action: "labelmap", ..Default::default() }
}

/// `prometheus.io/scheme`, `prometheus.io/path` and `prometheus.io/port` annotations of
/// `kind` (`service` or `pod`) choose how a target is scraped.
fn annotated_target(kind: &'static str) -> [Relabel; 3] {
    let (scheme, path, port) = match kind {
        "service" => (
            "__meta_kubernetes_service_annotation_prometheus_io_scheme",
            "__meta_kubernetes_service_annotation_prometheus_io_path",
            "__meta_kubernetes_service_annotation_prometheus_io_port",
        ),
        _ => (
            "__meta_kubernetes_pod_annotation_prometheus_io_scheme",
            "__meta_kubernetes_pod_annotation_prometheus_io_path",
            "__meta_kubernetes_pod_annotation_prometheus_io_port",
        ),
    };
    [
        replace(vec![scheme], "(https?)", "$1", "__scheme__"),
        replace(vec![path], "(.+)", "$1", "__metrics_path__"),
        // The shortest host before an optional port keeps `[ipv6]:port` addresses intact.
        replace(vec!["__address__", port], r"(.+?)(?::\d+)?;(\d+)", "$1:$2", "__address__"),
    ]
}

fn service_endpoints(job: &'static str, annotation: &'static str) -> ScrapeConfig {
    let mut config = ScrapeConfig::new(job).discover("endpointslice");
    config.relabel_configs.push(keep(annotation, "true"));
    config.relabel_configs.extend(annotated_target("service"));
    config.relabel_configs.extend([
        labelmap("__meta_kubernetes_service_label_(.+)"),
        copy("__meta_kubernetes_namespace", "kubernetes_namespace"),
        copy("__meta_kubernetes_service_name", "kubernetes_name"),
        copy("__meta_kubernetes_pod_node_name", "kubernetes_node"),
    ]);
    config
}

fn pods(job: &'static str, annotation: &'static str) -> ScrapeConfig {
    let mut config = ScrapeConfig::new(job).discover("pod");
    config.relabel_configs.push(keep(annotation, "true"));
    config.relabel_configs.push(drop_matching("__meta_kubernetes_pod_phase", "Pending|Succeeded|Failed"));
    config.relabel_configs.extend(annotated_target("pod"));
    config.relabel_configs.extend([
        labelmap("__meta_kubernetes_pod_label_(.+)"),
        copy("__meta_kubernetes_namespace", "kubernetes_namespace"),
        copy("__meta_kubernetes_pod_name", "kubernetes_pod_name"),
        copy("__meta_kubernetes_pod_node_name", "kubernetes_node"),
    ]);
    config
}

/// Kubelet metrics of every node at `path` (below `/api/v1/nodes/<node>/proxy`), through
/// the API server, so that no node port must be reachable from the pod network.
fn nodes(job: &'static str, metrics_path: &'static str, service_account: &ServiceAccountPaths) -> ScrapeConfig {
    let mut config = ScrapeConfig::new(job).api_server(service_account).discover("node");
    config.relabel_configs = vec![
        labelmap("__meta_kubernetes_node_label_(.+)"),
        Relabel {
            target_label: Some("__address__"),
            replacement: Some("kubernetes.default.svc:443"),
            action: "replace",
            ..Default::default()
        },
        replace(vec!["__meta_kubernetes_node_name"], "(.+)", metrics_path, "__metrics_path__"),
    ];
    config
}

/// The agent's own heartbeat: every [`HEARTBEAT_INTERVAL`] it scrapes itself and drops
/// every scraped sample, keeping only the five series Prometheus adds to each scrape
/// (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
/// `scrape_samples_post_metric_relabeling`, `scrape_series_added`; metric relabelling
/// does not apply to them). Prometheus delays a target's first scrape by an offset within
/// its interval (`scrape/target.go`, `Target.offset`), up to 30 s at the global interval;
/// this job's offset is at most 5 s, so a new cluster's first sample reaches its tenant
/// seconds after the agent starts, at 1 sample/s in steady state
/// (docs/user-cluster-controller-manager.md, "First sample").
fn heartbeat() -> ScrapeConfig {
    let mut heartbeat = ScrapeConfig::new(HEARTBEAT_JOB);
    heartbeat.scrape_interval = Some(HEARTBEAT_INTERVAL);
    heartbeat.scrape_timeout = Some(HEARTBEAT_INTERVAL);
    heartbeat.static_configs.push(StaticConfig { targets: vec!["localhost:9090"] });
    heartbeat.metric_relabel_configs.push(drop_matching("__name__", ".+"));
    heartbeat
}

/// The built-in scrape jobs, in output order.
fn builtin_scrape_configs(service_account: &ServiceAccountPaths) -> Vec<ScrapeConfig> {
    let mut prometheus = ScrapeConfig::new("prometheus");
    prometheus.static_configs.push(StaticConfig { targets: vec!["localhost:9090"] });
    let mut api_servers =
        ScrapeConfig::new("kubernetes-apiservers").api_server(service_account).discover("endpointslice");
    api_servers.relabel_configs.push(Relabel {
        source_labels: vec![
            "__meta_kubernetes_namespace",
            "__meta_kubernetes_service_name",
            "__meta_kubernetes_endpointslice_port_name",
        ],
        regex: Some("default;kubernetes;https"),
        action: "keep",
        ..Default::default()
    });
    vec![
        prometheus,
        heartbeat(),
        api_servers,
        nodes("kubernetes-nodes", "/api/v1/nodes/${1}/proxy/metrics", service_account),
        nodes("kubernetes-nodes-cadvisor", "/api/v1/nodes/${1}/proxy/metrics/cadvisor", service_account),
        service_endpoints("kubernetes-service-endpoints", "__meta_kubernetes_service_annotation_prometheus_io_scrape"),
        service_endpoints(
            "kubernetes-service-endpoints-slow",
            "__meta_kubernetes_service_annotation_prometheus_io_scrape_slow",
        )
        .slow(),
        pods("kubernetes-pods", "__meta_kubernetes_pod_annotation_prometheus_io_scrape"),
        pods("kubernetes-pods-slow", "__meta_kubernetes_pod_annotation_prometheus_io_scrape_slow").slow(),
    ]
}

/// `cluster=<name>`, and with more than one replica `__replica__=${POD_NAME}`.
fn external_labels(cluster: &str, replicas: i32) -> BTreeMap<&'static str, String> {
    let mut labels = BTreeMap::from([("cluster", cluster.to_string())]);
    if replicas > 1 {
        labels.insert(REPLICA_LABEL, format!("${{{POD_NAME_ENV}}}"));
    }
    labels
}

/// Renders `prometheus.yaml` (see the module documentation). Fails only on an invalid
/// cluster name, gateway URL, interval or path; bad extra scrape configs are skipped.
pub fn prometheus_config(input: &PrometheusConfigInput) -> Result<PrometheusConfig, ConfigError> {
    let cluster = common::validate_cluster_name(&input.cluster_name)?;
    let gateway = common::validate_gateway_url(&input.gateway_url)?;
    let interval = input.scrape_interval;
    if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 || interval > Duration::from_secs(3600) {
        return Err(ConfigError::Invalid {
            field: "scrape interval",
            value: format!("{interval:?}"),
            reason: "must be whole seconds between 1s and 1h",
        });
    }
    let interval_ms = interval.as_millis() as u64;
    let timeout_ms = interval_ms.min(10_000);
    let client_tls = input.client_tls.validated()?;
    let service_account = ServiceAccountPaths {
        token_file: common::validate_path("service account token file", &input.service_account.token_file)?,
        ca_file: common::validate_path("service account CA file", &input.service_account.ca_file)?,
    };

    let builtin = builtin_scrape_configs(&service_account);
    let reserved: BTreeSet<&str> = builtin.iter().map(|c| c.job_name).collect();
    let mut scrape_configs = builtin.iter().map(serde_yaml::to_value).collect::<Result<Vec<_>, _>>()?;
    let (extra, skipped) = checked_extra_scrape_configs(&input.extra_scrape_configs, &reserved, interval_ms);
    scrape_configs.extend(extra);

    let config = PrometheusYaml {
        global: Global {
            scrape_interval: format!("{}s", interval.as_secs()),
            scrape_timeout: format!("{}s", timeout_ms / 1000),
            external_labels: external_labels(cluster, input.replicas),
        },
        scrape_configs,
        remote_write: vec![RemoteWrite {
            url: format!("{gateway}/api/v1/push"),
            name: "mla-gateway",
            tls_config: TlsConfig {
                ca_file: client_tls.ca_file,
                cert_file: Some(client_tls.cert_file),
                key_file: Some(client_tls.key_file),
            },
        }],
    };
    Ok(PrometheusConfig { yaml: serde_yaml::to_string(&config)?, skipped })
}

#[cfg(test)]
mod tests {
    use super::scrape_configs::MAX_SOURCE_BYTES;
    use super::*;

    fn input(extra: &[(&str, &str)]) -> PrometheusConfigInput {
        PrometheusConfigInput {
            extra_scrape_configs: extra
                .iter()
                .map(|(source, yaml)| ExtraScrapeConfig { source: source.to_string(), yaml: yaml.to_string() })
                .collect(),
            ..PrometheusConfigInput::new("abc", "https://gw.example.com:30443")
        }
    }

    fn parsed(config: &PrometheusConfig) -> Value {
        serde_yaml::from_str(&config.yaml).expect("output parses")
    }

    fn jobs(config: &PrometheusConfig) -> Vec<String> {
        parsed(config)["scrape_configs"]
            .as_sequence()
            .expect("list")
            .iter()
            .map(|c| c["job_name"].as_str().expect("job_name").to_string())
            .collect()
    }

    #[test]
    fn top_level_shape_and_fixed_values() {
        let config = prometheus_config(&input(&[])).expect("renders");
        let value = parsed(&config);
        let keys: Vec<_> = value.as_mapping().expect("mapping").keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["global", "scrape_configs", "remote_write"]);
        assert_eq!(value["global"]["external_labels"]["cluster"].as_str(), Some("abc"));
        assert_eq!(value["global"]["scrape_interval"].as_str(), Some("30s"));
        assert_eq!(value["remote_write"][0]["url"].as_str(), Some("https://gw.example.com:30443/api/v1/push"));
        assert_eq!(value["remote_write"][0]["tls_config"]["cert_file"].as_str(), Some("/etc/ssl/mla/client.crt"));
        assert!(config.skipped.is_empty());
    }

    #[test]
    fn heartbeat_scrapes_the_agent_often_and_keeps_only_the_scrape_series() {
        let value = parsed(&prometheus_config(&input(&[])).expect("renders"));
        let jobs = value["scrape_configs"].as_sequence().expect("list");
        let heartbeat = jobs.iter().find(|j| j["job_name"].as_str() == Some(HEARTBEAT_JOB)).expect("heartbeat job");
        assert_eq!(heartbeat["scrape_interval"].as_str(), Some("5s"));
        assert_eq!(heartbeat["scrape_timeout"].as_str(), Some("5s"));
        assert_eq!(heartbeat["static_configs"][0]["targets"][0].as_str(), Some("localhost:9090"));
        let drop = &heartbeat["metric_relabel_configs"][0];
        assert_eq!(drop["action"].as_str(), Some("drop"));
        assert_eq!(drop["source_labels"][0].as_str(), Some("__name__"));
        assert_eq!(drop["regex"].as_str(), Some(".+"));
        // Every other built-in job keeps the global interval (or the slow 5m) and its samples.
        for job in jobs.iter().filter(|j| j["job_name"].as_str() != Some(HEARTBEAT_JOB)) {
            assert!(job.get("metric_relabel_configs").is_none(), "{job:?}");
            assert!(matches!(job["scrape_interval"].as_str(), None | Some("5m")), "{job:?}");
        }
        // A user's job of the same name is refused, not merged.
        let taken = prometheus_config(&input(&[("cm/k", "- job_name: mla-agent-heartbeat")])).expect("renders");
        assert!(taken.skipped[0].reason.contains("reserved"), "{:?}", taken.skipped);
    }

    #[test]
    fn several_replicas_label_each_sample_with_the_pod_name() {
        let single = parsed(&prometheus_config(&input(&[])).expect("renders"));
        assert!(single["global"]["external_labels"].get(REPLICA_LABEL).is_none(), "one replica: no replica label");
        let mut two = input(&[]);
        two.replicas = 2;
        let value = parsed(&prometheus_config(&two).expect("renders"));
        assert_eq!(value["global"]["external_labels"][REPLICA_LABEL].as_str(), Some("${POD_NAME}"));
        assert_eq!(value["global"]["external_labels"]["cluster"].as_str(), Some("abc"));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let mut bad = input(&[]);
        bad.cluster_name = "abc\nremote_write: []".into();
        assert!(matches!(prometheus_config(&bad), Err(ConfigError::Invalid { field: "cluster name", .. })));
        let mut bad = input(&[]);
        bad.gateway_url = "https://evil/api/v1/push?x=".into();
        assert!(matches!(prometheus_config(&bad), Err(ConfigError::Invalid { field: "gateway URL", .. })));
        let mut bad = input(&[]);
        bad.scrape_interval = Duration::from_millis(1500);
        assert!(prometheus_config(&bad).is_err());
        let mut bad = input(&[]);
        bad.client_tls.key_file = "/x\n".into();
        assert!(prometheus_config(&bad).is_err());
    }

    #[test]
    fn short_interval_shortens_the_timeout() {
        let mut short = input(&[]);
        short.scrape_interval = Duration::from_secs(5);
        let value = parsed(&prometheus_config(&short).expect("renders"));
        assert_eq!(value["global"]["scrape_timeout"].as_str(), Some("5s"));
    }

    #[test]
    fn extra_configs_are_appended_in_source_order() {
        let config = prometheus_config(&input(&[
            ("prometheus-scraping-b/jobs.yaml", "- job_name: b1\n- job_name: b2\n"),
            ("prometheus-scraping-a/job.yaml", "job_name: a\nstatic_configs: [{targets: ['x:1']}]\n"),
        ]))
        .expect("renders");
        assert!(config.skipped.is_empty(), "{:?}", config.skipped);
        let jobs = jobs(&config);
        assert_eq!(&jobs[jobs.len() - 3..], ["a", "b1", "b2"]);
    }

    #[test]
    fn bad_extra_configs_are_skipped_with_reasons() {
        let cases = [
            ("scalar", "just a string", "must be a list"),
            ("number", "42", "must be a list"),
            ("empty", "", "empty"),
            ("empty-list", "[]", "empty list"),
            ("not-yaml", "job_name: [", "not valid YAML"),
            ("missing-job", "- scrape_interval: 1m", "missing job_name"),
            ("job-not-string", "- job_name: [a]", "job_name must be a string"),
            ("job-chars", "- job_name: 'a b'", "must be 1 to 128"),
            ("unknown-key", "- job_name: u\n  rule_files: [x]", "unknown field \"rule_files\""),
            ("bad-duration", "- job_name: d\n  scrape_interval: 30", "duration"),
            ("bad-timeout", "- job_name: t\n  scrape_interval: 10s\n  scrape_timeout: 20s", "longer"),
            ("global-timeout", "- job_name: t2\n  scrape_timeout: 1m", "longer"),
            ("bad-scheme", "- job_name: s\n  scheme: ftp", "http or https"),
            ("bad-relabel", "- job_name: r\n  relabel_configs: [{action: explode}]", "invalid action"),
            ("no-target", "- job_name: nt\n  relabel_configs: [{source_labels: [a]}]", "needs a target_label"),
            ("sd-role", "- job_name: sd\n  kubernetes_sd_configs: [{role: everything}]", "invalid role"),
            ("sd-no-role", "- job_name: sd\n  kubernetes_sd_configs: [{namespaces: {names: [a]}}]", "missing role"),
            ("sd-key", "- job_name: sd\n  kubernetes_sd_configs: [{role: pod, watch: all}]", "unknown field"),
            ("bad-static", "- job_name: st\n  static_configs: [{targets: x}]", "targets"),
            ("tagged", "- job_name: tg\n  metrics_path: !custom /x", "tags are not allowed"),
            ("non-string-key", "- job_name: k\n  ? [a]\n  : b", "keys must be strings"),
            ("nan", "- job_name: n\n  params: {x: [.nan]}", "non-finite"),
            ("comment-only", "# nothing here\n", "empty"),
            ("reserved", "- job_name: kubernetes-pods", "reserved"),
            ("multi-doc", "- job_name: m1\n---\n- job_name: m2\n", "not valid YAML"),
            ("duplicate-key", "job_name: dk\njob_name: dk2\n", "not valid YAML"),
        ];
        for (name, yaml, want) in cases {
            let config = prometheus_config(&input(&[(name, yaml)])).expect("renders");
            assert_eq!(config.skipped.len(), 1, "{name}: {:?}", config.skipped);
            assert!(config.skipped[0].reason.contains(want), "{name}: {:?}", config.skipped[0]);
            assert_eq!(jobs(&config).len(), 9, "{name}");
        }
    }

    #[test]
    fn one_bad_element_keeps_its_neighbours() {
        let config =
            prometheus_config(&input(&[("cm/key", "- job_name: ok1\n- scrape_interval: 1m\n- job_name: ok2\n")]))
                .expect("renders");
        assert_eq!(
            config.skipped,
            [SkippedScrapeConfig { name: "cm/key[1]".into(), reason: "missing job_name".into() }]
        );
        assert!(jobs(&config).ends_with(&["ok1".to_string(), "ok2".to_string()]));
    }

    #[test]
    fn duplicate_job_names_keep_the_first() {
        let config = prometheus_config(&input(&[("cm-b/k", "- job_name: same"), ("cm-a/k", "- job_name: same")]))
            .expect("renders");
        assert_eq!(config.skipped.len(), 1);
        assert_eq!(config.skipped[0].name, "cm-b/k");
        assert!(config.skipped[0].reason.contains("first defined in cm-a/k"), "{:?}", config.skipped);
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_skipped() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                    job_name: bomb\n";
        let deep = format!("job_name: deep\nparams: {}x{}\n", "[".repeat(60), "]".repeat(60));
        let very_deep = format!("{}x{}", "[".repeat(500), "]".repeat(500));
        let huge = format!("job_name: huge\nmetrics_path: /{}\n", "a".repeat(MAX_SOURCE_BYTES));
        let config = prometheus_config(&input(&[
            ("bomb", bomb),
            ("deep", &deep),
            ("very-deep", &very_deep),
            ("huge", &huge),
            ("ok", "job_name: ok"),
        ]))
        .expect("renders");
        let names: Vec<_> = config.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["bomb", "deep", "huge", "very-deep"], "{:?}", config.skipped);
        assert!(jobs(&config).ends_with(&["ok".to_string()]));
    }

    #[test]
    fn benign_anchors_are_expanded() {
        let yaml = "- job_name: one\n  relabel_configs: &r [{action: labelmap, regex: 'x_(.+)'}]\n\
                    - job_name: two\n  relabel_configs: *r\n";
        let config = prometheus_config(&input(&[("cm/k", yaml)])).expect("renders");
        assert!(config.skipped.is_empty(), "{:?}", config.skipped);
        assert!(!config.yaml.contains('&') && !config.yaml.contains('*'));
    }
}

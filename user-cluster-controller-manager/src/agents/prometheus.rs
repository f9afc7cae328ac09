//! The metrics agent: Prometheus in agent mode (stateless apart from its WAL), scraping the
//! user cluster and writing everything to the cluster's MLA gateway (DESIGN.md, "User
//! cluster objects").
//!
//! [`prometheus_config`] renders `prometheus.yaml` from structured values with serde_yaml,
//! never by pasting strings: the cluster name and gateway URL are validated first, and the
//! extra scrape configs from `prometheus-scraping*` ConfigMaps are parsed, checked one by
//! one and written back as YAML trees, each as one element of `scrape_configs`. An input can
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
//! need components this system does not install).
//!
//! The output is valid for Prometheus 3 (`--agent`) and for Prometheus 2.42's
//! `promtool check config --agent`, which the tests run on every rendered variant.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mla_common::api::MLASettings;
use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

use super::common::{
    self, CERTIFICATES_DIR, CONFIG_HASH_ANNOTATION, ConfigError, NAMESPACE, TlsPaths, cluster_meta, meta,
};

/// Name of the Deployment, ConfigMap and ServiceAccount, and the client certificate's CN.
pub const PROMETHEUS: &str = "prometheus";
/// ClusterRole and ClusterRoleBinding of the agent.
pub const CLUSTER_ROLE: &str = "system:mla:prometheus";
/// Secret with the agent's client certificate (see [`common::certificates_secret`]).
pub const CERTIFICATES_SECRET: &str = "prometheus-certificates";
/// `prometheus.yaml` in the ConfigMap.
pub const CONFIG_KEY: &str = "prometheus.yaml";
/// ConfigMaps in [`NAMESPACE`] whose name starts with this hold extra scrape configs.
pub const EXTRA_SCRAPE_CONFIG_PREFIX: &str = "prometheus-scraping";
/// Prometheus image when the controller is not told otherwise.
pub const DEFAULT_IMAGE: &str = "quay.io/prometheus/prometheus:v3.5.0";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/prometheus/mla";
/// The agent's WAL (an emptyDir: the agent is stateless beyond samples not yet sent).
pub const STORAGE_DIR: &str = "/var/lib/prometheus";
/// Scrape interval when none is given.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(30);
/// The service account token and API server CA every pod gets.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const PORT: i32 = 9090;
/// Largest extra scrape config source (one ConfigMap key) that is read.
const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Largest parsed tree of one source (after aliases are expanded).
const MAX_SOURCE_NODES: usize = 20_000;
/// Deepest nesting of one source.
const MAX_SOURCE_DEPTH: usize = 32;
/// Longest reason reported for a skipped config (reasons end up in Events).
const MAX_REASON_CHARS: usize = 300;

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

/// One source of extra scrape configs: a data key of a `prometheus-scraping*` ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraScrapeConfig {
    /// Where it comes from, `<ConfigMap>/<key>`; names it in [`SkippedScrapeConfig`] and
    /// orders the sources.
    pub source: String,
    /// A YAML list of scrape configs, or a single scrape config.
    pub yaml: String,
}

/// An extra scrape config that was left out of `prometheus.yaml`, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedScrapeConfig {
    /// The source (`<ConfigMap>/<key>`), with `[<index>]` when one element of a list was
    /// skipped.
    pub name: String,
    /// Why, for an Event.
    pub reason: String,
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

/// The extra scrape config sources among `config_maps`: every data key of every ConfigMap
/// named `prometheus-scraping*` (binary data is ignored).
pub fn extra_scrape_configs(config_maps: &[ConfigMap]) -> Vec<ExtraScrapeConfig> {
    let mut sources = Vec::new();
    for config_map in config_maps {
        let Some(name) = config_map.metadata.name.as_deref() else { continue };
        if !name.starts_with(EXTRA_SCRAPE_CONFIG_PREFIX) {
            continue;
        }
        for (key, yaml) in config_map.data.iter().flatten() {
            sources.push(ExtraScrapeConfig { source: format!("{name}/{key}"), yaml: yaml.clone() });
        }
    }
    sources.sort_by(|a, b| a.source.cmp(&b.source));
    sources
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
            external_labels: BTreeMap::from([("cluster", cluster.to_string())]),
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

// ---- extra scrape configs ----

/// Keys a scrape config may have (Prometheus 3.5), besides any `*_sd_configs`. Unknown keys
/// make Prometheus refuse the whole file, so they are refused here, per scrape config.
const SCRAPE_CONFIG_KEYS: &[&str] = &[
    "job_name",
    "scrape_interval",
    "scrape_timeout",
    "scrape_protocols",
    "fallback_scrape_protocol",
    "scrape_native_histograms",
    "always_scrape_classic_histograms",
    "convert_classic_histograms_to_nhcb",
    "scrape_failure_log_file",
    "metrics_path",
    "honor_labels",
    "honor_timestamps",
    "track_timestamps_staleness",
    "scheme",
    "params",
    "enable_compression",
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "follow_redirects",
    "enable_http2",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "http_headers",
    "static_configs",
    "relabel_configs",
    "metric_relabel_configs",
    "body_size_limit",
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "native_histogram_bucket_limit",
    "native_histogram_min_bucket_factor",
    "target_limit",
    "keep_dropped_targets",
    "metric_name_validation_scheme",
    "metric_name_escaping_scheme",
];
const DURATION_KEYS: &[&str] = &["scrape_interval", "scrape_timeout"];
const BOOL_KEYS: &[&str] = &[
    "honor_labels",
    "honor_timestamps",
    "track_timestamps_staleness",
    "enable_compression",
    "follow_redirects",
    "enable_http2",
    "proxy_from_environment",
    "scrape_native_histograms",
    "always_scrape_classic_histograms",
    "convert_classic_histograms_to_nhcb",
];
const COUNT_KEYS: &[&str] = &[
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "native_histogram_bucket_limit",
    "target_limit",
    "keep_dropped_targets",
];
const RELABEL_KEYS: &[&str] =
    &["source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"];
const RELABEL_ACTIONS: &[&str] = &[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
];

/// Parses and checks every source; returns the usable scrape configs (in source order,
/// unique job names) and what was skipped.
fn checked_extra_scrape_configs(
    sources: &[ExtraScrapeConfig],
    reserved: &BTreeSet<&str>,
    global_interval_ms: u64,
) -> (Vec<Value>, Vec<SkippedScrapeConfig>) {
    let mut sources: Vec<&ExtraScrapeConfig> = sources.iter().collect();
    sources.sort_by(|a, b| a.source.cmp(&b.source));
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut skip = |name: String, reason: String| {
        let mut reason = reason.replace(['\n', '\r'], " ");
        if reason.chars().count() > MAX_REASON_CHARS {
            reason = reason.chars().take(MAX_REASON_CHARS).collect::<String>() + "...";
        }
        skipped.push(SkippedScrapeConfig { name, reason });
    };
    for source in sources {
        let elements = match parse_source(&source.yaml) {
            Ok(elements) => elements,
            Err(reason) => {
                skip(source.source.clone(), reason);
                continue;
            }
        };
        let single = elements.len() == 1;
        for (index, element) in elements.into_iter().enumerate() {
            let name = if single { source.source.clone() } else { format!("{}[{index}]", source.source) };
            match check_scrape_config(&element, global_interval_ms) {
                Err(reason) => skip(name, reason),
                Ok(job) if reserved.contains(job.as_str()) => {
                    skip(name, format!("job_name {job:?} is reserved for a built-in job"))
                }
                Ok(job) => {
                    if let Some(first) = seen.get(&job) {
                        skip(name, format!("duplicate job_name {job:?}, first defined in {first}"));
                    } else {
                        seen.insert(job, name);
                        kept.push(element);
                    }
                }
            }
        }
    }
    (kept, skipped)
}

/// The scrape configs of one source: a list, or a single mapping.
fn parse_source(yaml: &str) -> Result<Vec<Value>, String> {
    if yaml.len() > MAX_SOURCE_BYTES {
        return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
    }
    if yaml.trim().is_empty() {
        return Err("empty".into());
    }
    let budget = Cell::new(MAX_SOURCE_NODES);
    let value = BudgetedValue { budget: &budget, depth: 0 }
        .deserialize(serde_yaml::Deserializer::from_str(yaml))
        .map_err(|err| format!("not valid YAML: {err}"))?;
    check_tree(&value)?;
    match value {
        Value::Sequence(elements) if elements.is_empty() => Err("empty list".into()),
        Value::Sequence(elements) => Ok(elements),
        Value::Mapping(_) => Ok(vec![value]),
        Value::Null => Err("empty".into()),
        _ => Err("must be a list of scrape configs or a single scrape config (a mapping)".into()),
    }
}

/// Builds a [`Value`] while counting its nodes, and stops at [`MAX_SOURCE_NODES`] or
/// [`MAX_SOURCE_DEPTH`]. serde_yaml limits how often aliases are followed but not how big
/// the expanded tree gets: one wide anchor referenced by many aliases would otherwise
/// expand to billions of nodes before any check could look at it.
#[derive(Clone, Copy)]
struct BudgetedValue<'a> {
    budget: &'a Cell<usize>,
    depth: usize,
}

impl BudgetedValue<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        let left = self.budget.get();
        if left == 0 {
            return Err(E::custom(format_args!("more than {MAX_SOURCE_NODES} YAML nodes (after expanding aliases)")));
        }
        if self.depth > MAX_SOURCE_DEPTH {
            return Err(E::custom(format_args!("nested deeper than {MAX_SOURCE_DEPTH} levels")));
        }
        self.budget.set(left - 1);
        Ok(())
    }

    fn child(self) -> Self {
        Self { budget: self.budget, depth: self.depth + 1 }
    }
}

impl<'de> DeserializeSeed<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value without tags")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element_seed(self.child())? {
            elements.push(element);
        }
        Ok(Value::Sequence(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let value = map.next_value_seed(self.child())?;
            if mapping.contains_key(&key) {
                return Err(de::Error::custom("duplicate mapping key"));
            }
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("YAML tags are not allowed"))
    }
}

/// Refuses YAML that Prometheus cannot read into its structs: non-string keys, non-finite
/// numbers. (Size, depth and tags are refused while parsing, by [`BudgetedValue`].)
fn check_tree(value: &Value) -> Result<(), String> {
    match value {
        Value::Tagged(tagged) => Err(format!("YAML tag {} is not allowed", tagged.tag)),
        Value::Sequence(elements) => elements.iter().try_for_each(check_tree),
        Value::Mapping(mapping) => mapping.iter().try_for_each(|(key, value)| {
            if !key.is_string() {
                return Err("mapping keys must be strings".to_string());
            }
            check_tree(value)
        }),
        Value::Number(number) if number.as_f64().is_some_and(|f| !f.is_finite()) => {
            Err("non-finite numbers are not allowed".into())
        }
        _ => Ok(()),
    }
}

/// Checks one scrape config as far as Prometheus would refuse the whole file for it;
/// returns its job name.
fn check_scrape_config(value: &Value, global_interval_ms: u64) -> Result<String, String> {
    let mapping = value.as_mapping().ok_or("a scrape config must be a mapping")?;
    let job = match mapping.get("job_name") {
        None => return Err("missing job_name".into()),
        Some(Value::String(job)) => job.clone(),
        Some(_) => return Err("job_name must be a string".into()),
    };
    if job.is_empty() || job.len() > 128 || !job.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b)) {
        return Err(format!("job_name {job:?} must be 1 to 128 letters, digits, '_', '.', ':', '/' and '-'"));
    }
    let with_job = |reason: String| format!("job {job:?}: {reason}");
    for (key, field) in mapping {
        // Keys are strings: check_tree has refused the rest.
        let key = key.as_str().unwrap_or_default();
        check_field(key, field).map_err(with_job)?;
    }
    let duration = |key: &str| mapping.get(key).and_then(Value::as_str).and_then(parse_duration_ms);
    if let Some(timeout) = duration("scrape_timeout") {
        let interval = duration("scrape_interval").filter(|i| *i > 0).unwrap_or(global_interval_ms);
        if timeout > interval {
            return Err(with_job("scrape_timeout is longer than scrape_interval".into()));
        }
    }
    Ok(job)
}

fn check_field(key: &str, value: &Value) -> Result<(), String> {
    let sd_configs = key.ends_with("_sd_configs") && key.len() > "_sd_configs".len();
    if !sd_configs && !SCRAPE_CONFIG_KEYS.contains(&key) {
        return Err(format!("unknown field {key:?}"));
    }
    let err = |what: &str| Err(format!("{key} must be {what}"));
    if key == "kubernetes_sd_configs" {
        return check_list(key, value, check_kubernetes_sd_config);
    }
    if sd_configs {
        return match value.as_sequence() {
            Some(list) if list.iter().all(Value::is_mapping) => Ok(()),
            _ => err("a list of mappings"),
        };
    }
    if DURATION_KEYS.contains(&key) {
        return match value.as_str().and_then(parse_duration_ms) {
            Some(_) => Ok(()),
            None => err("a duration such as 30s or 1m"),
        };
    }
    if BOOL_KEYS.contains(&key) {
        return if value.is_bool() { Ok(()) } else { err("true or false") };
    }
    if COUNT_KEYS.contains(&key) {
        return if value.as_u64().is_some() { Ok(()) } else { err("a non-negative integer") };
    }
    match key {
        "scheme" => match value.as_str() {
            Some("http" | "https") => Ok(()),
            _ => err("http or https"),
        },
        "metrics_path" => match value.as_str() {
            Some(path) if path.starts_with('/') => Ok(()),
            _ => err("a path starting with /"),
        },
        "static_configs" => check_list(key, value, check_static_config),
        "relabel_configs" | "metric_relabel_configs" => check_list(key, value, check_relabel_config),
        "params" => match value.as_mapping() {
            Some(params)
                if params.values().all(|v| v.as_sequence().is_some_and(|l| l.iter().all(Value::is_string))) =>
            {
                Ok(())
            }
            _ => err("a mapping of names to lists of strings"),
        },
        "job_name" => Ok(()),
        "basic_auth" | "authorization" | "oauth2" | "tls_config" | "proxy_connect_header" | "http_headers" => {
            if value.is_mapping() { Ok(()) } else { err("a mapping") }
        }
        "scrape_protocols" => match value.as_sequence() {
            Some(list) if list.iter().all(Value::is_string) => Ok(()),
            _ => err("a list of strings"),
        },
        _ => {
            if value.is_string() {
                Ok(())
            } else {
                err("a string")
            }
        }
    }
}

fn check_list(key: &str, value: &Value, check: fn(&Mapping) -> Result<(), String>) -> Result<(), String> {
    let list = value.as_sequence().ok_or_else(|| format!("{key} must be a list"))?;
    for (index, element) in list.iter().enumerate() {
        let mapping = element.as_mapping().ok_or_else(|| format!("{key}[{index}] must be a mapping"))?;
        check(mapping).map_err(|reason| format!("{key}[{index}]: {reason}"))?;
    }
    Ok(())
}

/// Kubernetes discovery is checked more closely than other discovery mechanisms: it is the
/// one this system is about, and Debian's promtool (used by the tests) is built without it.
fn check_kubernetes_sd_config(config: &Mapping) -> Result<(), String> {
    const KEYS: &[&str] = &[
        "role",
        "api_server",
        "kubeconfig_file",
        "namespaces",
        "selectors",
        "attach_metadata",
        "basic_auth",
        "authorization",
        "oauth2",
        "bearer_token",
        "bearer_token_file",
        "tls_config",
        "proxy_url",
        "no_proxy",
        "proxy_from_environment",
        "proxy_connect_header",
        "http_headers",
        "follow_redirects",
        "enable_http2",
    ];
    const ROLES: &[&str] = &["node", "service", "pod", "endpoints", "endpointslice", "ingress"];
    let strings = |v: &Value| v.as_sequence().is_some_and(|l| l.iter().all(Value::is_string));
    for (key, value) in config {
        let key = key.as_str().unwrap_or_default();
        let valid = match key {
            "role" => value.as_str().is_some_and(|r| ROLES.contains(&r)),
            "namespaces" => value.as_mapping().is_some_and(|m| {
                m.iter().all(|(k, v)| match k.as_str() {
                    Some("names") => strings(v),
                    Some("own_namespace") => v.is_bool(),
                    _ => false,
                })
            }),
            "selectors" => value.as_sequence().is_some_and(|l| {
                l.iter().all(|s| {
                    s.as_mapping().is_some_and(|m| {
                        m.get("role").and_then(Value::as_str).is_some_and(|r| ROLES.contains(&r))
                            && m.iter()
                                .all(|(k, v)| matches!(k.as_str(), Some("role" | "label" | "field")) && v.is_string())
                    })
                })
            }),
            "attach_metadata" => value.as_mapping().is_some_and(|m| {
                m.iter().all(|(k, v)| matches!(k.as_str(), Some("node" | "namespace")) && v.is_bool())
            }),
            "follow_redirects" | "enable_http2" | "proxy_from_environment" => value.is_bool(),
            "basic_auth" | "authorization" | "oauth2" | "tls_config" | "proxy_connect_header" | "http_headers" => {
                value.is_mapping()
            }
            _ if KEYS.contains(&key) => value.is_string(),
            _ => return Err(format!("unknown field {key:?}")),
        };
        if !valid {
            return Err(format!("invalid {key}"));
        }
    }
    if !config.contains_key("role") {
        return Err("missing role".into());
    }
    Ok(())
}

fn check_static_config(config: &Mapping) -> Result<(), String> {
    for (key, value) in config {
        match key.as_str().unwrap_or_default() {
            "targets" => {
                if !value.as_sequence().is_some_and(|l| l.iter().all(Value::is_string)) {
                    return Err("targets must be a list of strings".into());
                }
            }
            "labels" => {
                if !value.as_mapping().is_some_and(|m| m.values().all(Value::is_string)) {
                    return Err("labels must map label names to strings".into());
                }
            }
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    Ok(())
}

fn check_relabel_config(config: &Mapping) -> Result<(), String> {
    for (key, value) in config {
        let key = key.as_str().unwrap_or_default();
        if !RELABEL_KEYS.contains(&key) {
            return Err(format!("unknown field {key:?}"));
        }
        let valid = match key {
            "source_labels" => value.as_sequence().is_some_and(|l| l.iter().all(Value::is_string)),
            "action" => value.as_str().is_some_and(|a| RELABEL_ACTIONS.contains(&a.to_ascii_lowercase().as_str())),
            "modulus" => value.as_u64().is_some(),
            // go-yaml reads a scalar into a string field; only lists and mappings fail.
            _ => !value.is_sequence() && !value.is_mapping() && !value.is_null(),
        };
        if !valid {
            return Err(format!("invalid {key}"));
        }
    }
    // Prometheus refuses these actions without a target label.
    let action = config.get("action").and_then(Value::as_str).unwrap_or("replace").to_ascii_lowercase();
    let needs_target = ["replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"];
    let target = config.get("target_label").and_then(Value::as_str).unwrap_or_default();
    if needs_target.contains(&action.as_str()) && target.is_empty() {
        return Err(format!("action {action} needs a target_label"));
    }
    if action == "hashmod" && config.get("modulus").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Err("action hashmod needs a positive modulus".into());
    }
    Ok(())
}

/// A Prometheus duration (`1h30m`, `15s`, `500ms`, `0`) in milliseconds: units in
/// descending order, each at most once.
fn parse_duration_ms(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..].bytes().take_while(u8::is_ascii_lowercase).count();
        if digits == 0 || letters == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit = &rest[digits..digits + letters];
        let position = UNITS.iter().position(|(name, _)| *name == unit)?;
        if position < next_unit {
            return None;
        }
        next_unit = position + 1;
        total = total.checked_add(number.checked_mul(UNITS[position].1)?)?;
        rest = &rest[digits + letters..];
    }
    Some(total)
}

// ---- Kubernetes objects ----

/// How the agent's pods run.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusDeploymentSettings {
    /// Prometheus 3 image.
    pub image: String,
    /// Replicas. Each replica scrapes everything: more than one gives redundancy, at the
    /// price of duplicate samples the backend must deduplicate.
    pub replicas: i32,
    /// Requests and limits of the Prometheus container.
    pub resources: ResourceRequirements,
}

impl Default for PrometheusDeploymentSettings {
    fn default() -> Self {
        Self { image: DEFAULT_IMAGE.into(), replicas: 1, resources: default_resources() }
    }
}

impl PrometheusDeploymentSettings {
    /// The defaults with the Cluster's `spec.mla.monitoringReplicas` and
    /// `monitoringResources` where set (negative replicas are ignored).
    pub fn from_mla(mla: Option<&MLASettings>) -> Self {
        let defaults = Self::default();
        Self {
            image: defaults.image,
            replicas: mla.and_then(|m| m.monitoring_replicas).filter(|r| *r >= 0).unwrap_or(defaults.replicas),
            resources: common::resources_or(mla.and_then(|m| m.monitoring_resources.as_ref()), defaults.resources),
        }
    }
}

fn default_resources() -> ResourceRequirements {
    let quantity = |v: &str| Quantity(v.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), quantity("100m")), ("memory".into(), quantity("256Mi"))])),
        limits: Some(BTreeMap::from([("cpu".into(), quantity("1")), ("memory".into(), quantity("1Gi"))])),
        ..Default::default()
    }
}

/// Every object of the metrics agent, in the order to apply them.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusObjects {
    /// `prometheus.yaml`.
    pub config_map: ConfigMap,
    /// The agent's identity.
    pub service_account: ServiceAccount,
    /// What it may read.
    pub cluster_role: ClusterRole,
    /// Binds the role to the identity.
    pub cluster_role_binding: ClusterRoleBinding,
    /// The agent.
    pub deployment: Deployment,
}

/// The agent's objects for `prometheus_yaml` (from [`prometheus_config`]), with the
/// Deployment's config hash computed from it.
pub fn objects(settings: &PrometheusDeploymentSettings, prometheus_yaml: &str) -> PrometheusObjects {
    PrometheusObjects {
        config_map: config_map(prometheus_yaml),
        service_account: service_account(),
        cluster_role: cluster_role(),
        cluster_role_binding: cluster_role_binding(),
        deployment: deployment(settings, &common::config_hash(prometheus_yaml)),
    }
}

/// The ConfigMap with `prometheus.yaml`.
pub fn config_map(prometheus_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(PROMETHEUS, PROMETHEUS),
        data: Some(BTreeMap::from([(CONFIG_KEY.into(), prometheus_yaml.into())])),
        ..Default::default()
    }
}

/// The agent's ServiceAccount.
pub fn service_account() -> ServiceAccount {
    ServiceAccount { metadata: meta(PROMETHEUS, PROMETHEUS), ..Default::default() }
}

/// What the agent may read: discovery of nodes, services, endpoints and pods, the kubelet
/// metrics through the node proxy, and the API server's `/metrics`. Nothing else, and
/// nothing writable.
pub fn cluster_role() -> ClusterRole {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    ClusterRole {
        metadata: cluster_meta(CLUSTER_ROLE, PROMETHEUS),
        rules: Some(vec![
            rule(&[""], &["nodes", "services", "endpoints", "pods"], &["get", "list", "watch"]),
            rule(&[""], &["nodes/proxy", "nodes/metrics"], &["get"]),
            rule(&["discovery.k8s.io"], &["endpointslices"], &["get", "list", "watch"]),
            PolicyRule {
                non_resource_urls: Some(vec!["/metrics".into()]),
                verbs: vec!["get".into()],
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// Binds [`cluster_role`] to the agent's ServiceAccount.
pub fn cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: cluster_meta(CLUSTER_ROLE, PROMETHEUS),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: PROMETHEUS.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    }
}

/// The agent's Deployment: Prometheus 3 in agent mode, non-root on a read-only root file
/// system, with the ConfigMap, the certificates Secret and an emptyDir for the WAL.
/// `config_hash` ([`common::config_hash`] of `prometheus.yaml`) goes into the pod template,
/// so a new configuration rolls the pods; the rollout keeps the old pod until a new one is
/// ready, so a configuration Prometheus refuses never stops the metrics.
pub fn deployment(settings: &PrometheusDeploymentSettings, config_hash: &str) -> Deployment {
    let probe = |path: &str, initial_delay: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let container = Container {
        name: PROMETHEUS.into(),
        image: Some(settings.image.clone()),
        args: Some(vec![
            "--agent".into(),
            format!("--config.file={CONFIG_DIR}/{CONFIG_KEY}"),
            format!("--storage.agent.path={STORAGE_DIR}"),
            "--web.enable-lifecycle".into(),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/-/ready", 5)),
        liveness_probe: Some(probe("/-/healthy", 30)),
        resources: Some(settings.resources.clone()),
        security_context: Some(common::container_security_context()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("certificates", CERTIFICATES_DIR, true),
            mount("storage", STORAGE_DIR, false),
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(PROMETHEUS, PROMETHEUS),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: LabelSelector { match_labels: Some(common::labels(PROMETHEUS)), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common::labels(PROMETHEUS)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.into(), config_hash.into())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(PROMETHEUS.into()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65534),
                        run_as_group: Some(65534),
                        fs_group: Some(65534),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource { name: PROMETHEUS.into(), ..Default::default() }),
                            ..Default::default()
                        },
                        common::secret_volume("certificates", CERTIFICATES_SECRET),
                        Volume {
                            name: "storage".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
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
            assert_eq!(jobs(&config).len(), 8, "{name}");
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

    #[test]
    fn durations() {
        for (text, ms) in
            [("0", 0), ("30s", 30_000), ("1m30s", 90_000), ("500ms", 500), ("1h", 3_600_000), ("2d", 172_800_000)]
        {
            assert_eq!(parse_duration_ms(text), Some(ms), "{text}");
        }
        for bad in ["", "30", "s", "1s1m", "1m1m", "1.5s", "-1s", "1 s", "1S", "99999999999999999999y"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_maps_with_the_prefix_are_sources() {
        let cm = |name: &str, data: &[(&str, &str)]| ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        };
        let sources = extra_scrape_configs(&[
            cm("prometheus-scraping-z", &[("b", "B"), ("a", "A")]),
            cm("prometheus", &[("prometheus.yaml", "x")]),
            cm("prometheus-scraping", &[("k", "K")]),
        ]);
        let names: Vec<_> = sources.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(names, ["prometheus-scraping-z/a", "prometheus-scraping-z/b", "prometheus-scraping/k"]);
    }

    fn pod_spec(d: &Deployment) -> PodSpec {
        d.spec.clone().and_then(|s| s.template.spec).expect("pod spec")
    }

    #[test]
    fn deployment_runs_the_agent_non_root_on_read_only_root() {
        let d = deployment(&PrometheusDeploymentSettings::default(), "h");
        let pod = pod_spec(&d);
        let pod_security = pod.security_context.clone().expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_ne!(pod_security.run_as_user, Some(0));
        let container = &pod.containers[0];
        let security = container.security_context.clone().expect("security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let args = container.args.clone().expect("args");
        assert!(args.contains(&"--agent".to_string()));
        assert!(args.contains(&"--config.file=/etc/prometheus/mla/prometheus.yaml".to_string()));
        assert!(args.contains(&"--storage.agent.path=/var/lib/prometheus".to_string()));
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes[1].secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some(CERTIFICATES_SECRET));
        assert!(volumes[2].empty_dir.is_some());
        assert_eq!(pod.service_account_name.as_deref(), Some(PROMETHEUS));
    }

    #[test]
    fn config_changes_roll_the_pods_and_nothing_else_does() {
        let settings = PrometheusDeploymentSettings::default();
        let a = deployment(&settings, &common::config_hash("a"));
        let b = deployment(&settings, &common::config_hash("b"));
        assert_ne!(a.spec.as_ref().map(|s| &s.template), b.spec.as_ref().map(|s| &s.template));
        assert_eq!(a, deployment(&settings, &common::config_hash("a")));
        let annotations = a.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).expect("annotations");
        assert_eq!(annotations.get(CONFIG_HASH_ANNOTATION), Some(&common::config_hash("a")));
    }

    #[test]
    fn replicas_and_resources_come_from_the_cluster() {
        let resources = ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("3Gi".into()))])),
            ..Default::default()
        };
        let mla = MLASettings {
            monitoring_enabled: true,
            monitoring_replicas: Some(3),
            monitoring_resources: Some(resources.clone()),
            ..Default::default()
        };
        let settings = PrometheusDeploymentSettings::from_mla(Some(&mla));
        assert_eq!(settings.replicas, 3);
        assert_eq!(settings.resources, resources);
        let d = deployment(&settings, "h");
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(pod_spec(&d).containers[0].resources.as_ref(), Some(&resources));
        let defaults = PrometheusDeploymentSettings::from_mla(None);
        assert_eq!(defaults, PrometheusDeploymentSettings::default());
        let negative = MLASettings { monitoring_replicas: Some(-1), ..Default::default() };
        assert_eq!(PrometheusDeploymentSettings::from_mla(Some(&negative)).replicas, 1);
    }

    #[test]
    fn rbac_is_read_only_and_least() {
        let role = cluster_role();
        let rules = role.rules.expect("rules");
        for rule in &rules {
            for verb in &rule.verbs {
                assert!(["get", "list", "watch"].contains(&verb.as_str()), "{verb}");
            }
            for resource in rule.resources.iter().flatten() {
                assert!(
                    ["nodes", "services", "endpoints", "pods", "nodes/proxy", "nodes/metrics", "endpointslices"]
                        .contains(&resource.as_str()),
                    "{resource}"
                );
                assert!(!resource.contains('*') && resource != "secrets" && resource != "configmaps");
            }
            assert!(rule.api_groups.iter().flatten().all(|g| g.is_empty() || g == "discovery.k8s.io"));
        }
        let proxy = rules.iter().find(|r| r.resources.iter().flatten().any(|r| r == "nodes/proxy")).expect("proxy");
        assert_eq!(proxy.verbs, ["get"]);
        let urls = rules.iter().find(|r| r.non_resource_urls.is_some()).expect("non-resource");
        assert_eq!(urls.non_resource_urls.as_deref(), Some(&["/metrics".to_string()][..]));
        let binding = cluster_role_binding();
        assert_eq!(binding.role_ref.name, CLUSTER_ROLE);
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (PROMETHEUS, Some(NAMESPACE)));
    }

    #[test]
    fn objects_hash_the_config_they_carry() {
        let settings = PrometheusDeploymentSettings::default();
        let a = objects(&settings, "a: 1\n");
        assert_eq!(a.deployment, deployment(&settings, &common::config_hash("a: 1\n")));
        assert_ne!(a.deployment, objects(&settings, "a: 2\n").deployment);
        assert_eq!(a.service_account.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(a.cluster_role.metadata.namespace, None);
    }

    #[test]
    fn config_map_holds_the_file() {
        let cm = config_map("x: 1\n");
        assert_eq!(cm.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(cm.data.expect("data").get(CONFIG_KEY).map(String::as_str), Some("x: 1\n"));
    }
}

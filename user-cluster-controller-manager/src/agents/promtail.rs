//! The log agent: Promtail as a DaemonSet reading every node's `/var/log/pods` and pushing
//! to the cluster's MLA gateway (DESIGN.md, "User cluster objects").
//!
//! [`LoggingAgent`] is the seam for the log agent: the controller asks it for the rendered
//! configuration and the objects, and does not know which agent it runs. Promtail reached
//! its end of life in 2026; Grafana Alloy is to be added as a second variant beside
//! [`LoggingAgent::Promtail`] (its own config renderer and objects, same inputs), so that a
//! cluster can be moved from one to the other by switching the variant.
//!
//! `promtail.yaml` is built from structured values with serde_yaml: the cluster name and
//! gateway URL are validated and nothing else from outside reaches it. The scrape jobs
//! follow KKP's Promtail configuration (the five `kubernetes-pods-*` / `kubernetes-other`
//! jobs of Loki's reference configuration, which derive the `app` label from the pod's
//! labels or controller): every container's files under
//! `/var/log/pods/*<pod uid>/<container>/*.log` (or the static pod's config hash), parsed
//! with the `cri` stage. Differences from KKP: the config-hash path applies only to pods
//! that have the annotation (as in Loki's chart); the `cluster` label is added as a client
//! external label; each Promtail only follows the pods of its own node (`__host__`, which
//! Promtail compares with `HOSTNAME`, set from the node name); positions live on the node
//! (`/var/lib/promtail`) so a restarted pod does not send logs twice; no privileged init
//! container raising `fs.inotify.max_user_instances`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, ServiceAccount, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mla_common::api::MLASettings;
use serde::Serialize;

use super::common::{
    self, CERTIFICATES_DIR, CONFIG_HASH_ANNOTATION, ConfigError, NAMESPACE, TlsPaths, cluster_meta, meta,
};

/// Name of the DaemonSet, config Secret and ServiceAccount, and the client certificate's CN.
pub const PROMTAIL: &str = "promtail";
/// ClusterRole and ClusterRoleBinding of the agent.
pub const CLUSTER_ROLE: &str = "system:mla:promtail";
/// Secret with the agent's client certificate (see [`common::certificates_secret`]).
pub const CERTIFICATES_SECRET: &str = "promtail-certificates";
/// `promtail.yaml` in the config Secret.
pub const CONFIG_KEY: &str = "promtail.yaml";
/// Promtail image when the controller is not told otherwise.
pub const DEFAULT_IMAGE: &str = "docker.io/grafana/promtail:3.5.1";
/// Where the config Secret is mounted.
pub const CONFIG_DIR: &str = "/etc/promtail";
/// Node directory (hostPath) with Promtail's positions file.
pub const POSITIONS_DIR: &str = "/var/lib/promtail";
/// The pods' log files on the node.
pub const POD_LOGS_DIR: &str = "/var/log/pods";
/// Where Docker (cri-dockerd) keeps the files `/var/log/pods` links to.
pub const DOCKER_CONTAINERS_DIR: &str = "/var/lib/docker/containers";

const HTTP_PORT: i32 = 3101;

/// The log agent run in a user cluster. Only Promtail today; Grafana Alloy is to become a
/// second variant (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoggingAgent {
    /// Grafana Promtail.
    #[default]
    Promtail,
}

/// What the log agent's configuration is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfigInput {
    /// The user cluster's name: the `cluster` label of every log stream (DNS-1123 label).
    pub cluster_name: String,
    /// Base URL of the cluster's MLA gateway write path, `https://host[:port]`.
    pub gateway_url: String,
    /// The client certificate for the gateway.
    pub client_tls: TlsPaths,
}

impl LoggingConfigInput {
    /// Input with the certificates where the agent's pods mount them.
    pub fn new(cluster_name: &str, gateway_url: &str) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            gateway_url: gateway_url.into(),
            client_tls: TlsPaths::in_dir(CERTIFICATES_DIR),
        }
    }
}

/// How the log agent's pods run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggingAgentSettings {
    /// The agent's image.
    pub image: String,
    /// Requests and limits of the agent container.
    pub resources: ResourceRequirements,
    /// Also mount `/var/lib/docker/containers` (read-only), which `/var/log/pods` links into
    /// on nodes running Docker through cri-dockerd.
    pub docker_containers: bool,
}

/// Every object of the log agent, in the order to apply them.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggingAgentObjects {
    /// The rendered configuration.
    pub config: Secret,
    /// The agent's identity.
    pub service_account: ServiceAccount,
    /// What it may read.
    pub cluster_role: ClusterRole,
    /// Binds the role to the identity.
    pub cluster_role_binding: ClusterRoleBinding,
    /// The agent on every node.
    pub daemon_set: DaemonSet,
}

impl LoggingAgent {
    /// Name of the agent's DaemonSet, ServiceAccount and config Secret, and the client
    /// certificate's common name.
    pub fn name(self) -> &'static str {
        match self {
            LoggingAgent::Promtail => PROMTAIL,
        }
    }

    /// The Secret with the agent's client certificate.
    pub fn certificates_secret_name(self) -> &'static str {
        match self {
            LoggingAgent::Promtail => CERTIFICATES_SECRET,
        }
    }

    /// The agent's default settings, with the Cluster's `spec.mla.loggingResources` where
    /// set.
    pub fn settings(self, mla: Option<&MLASettings>) -> LoggingAgentSettings {
        match self {
            LoggingAgent::Promtail => LoggingAgentSettings {
                image: DEFAULT_IMAGE.into(),
                resources: common::resources_or(mla.and_then(|m| m.logging_resources.as_ref()), default_resources()),
                docker_containers: true,
            },
        }
    }

    /// Renders the agent's configuration file.
    pub fn render_config(self, input: &LoggingConfigInput) -> Result<String, ConfigError> {
        match self {
            LoggingAgent::Promtail => promtail_config(input),
        }
    }

    /// The agent's objects for `config` (from [`LoggingAgent::render_config`]).
    pub fn objects(self, settings: &LoggingAgentSettings, config: &str) -> LoggingAgentObjects {
        match self {
            LoggingAgent::Promtail => LoggingAgentObjects {
                config: config_secret(config),
                service_account: service_account(),
                cluster_role: cluster_role(),
                cluster_role_binding: cluster_role_binding(),
                daemon_set: daemon_set(settings, &common::config_hash(config)),
            },
        }
    }
}

// ---- promtail.yaml ----

#[derive(Serialize)]
struct PromtailYaml {
    server: Server,
    positions: Positions,
    clients: Vec<Client>,
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Serialize)]
struct Server {
    http_listen_port: i32,
    /// 0: no gRPC server (Promtail does not need one).
    grpc_listen_port: i32,
    log_level: &'static str,
}

#[derive(Serialize)]
struct Positions {
    filename: String,
}

#[derive(Serialize)]
struct Client {
    url: String,
    tls_config: TlsConfig,
    external_labels: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct TlsConfig {
    ca_file: String,
    cert_file: String,
    key_file: String,
}

#[derive(Serialize)]
struct ScrapeConfig {
    job_name: &'static str,
    pipeline_stages: Vec<BTreeMap<&'static str, BTreeMap<String, String>>>,
    kubernetes_sd_configs: Vec<KubernetesSd>,
    relabel_configs: Vec<Relabel>,
}

#[derive(Serialize)]
struct KubernetesSd {
    role: &'static str,
}

#[derive(Serialize, Default)]
struct Relabel {
    source_labels: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    separator: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<&'static str>,
    action: &'static str,
}

fn relabel(action: &'static str, sources: Vec<&'static str>, regex: Option<&'static str>) -> Relabel {
    Relabel { source_labels: sources, regex, action, ..Default::default() }
}

fn copy(source: &'static str, target: &'static str) -> Relabel {
    Relabel { source_labels: vec![source], target_label: Some(target), action: "replace", ..Default::default() }
}

/// How a job names its streams' `app` (and `component`), as in KKP's configuration.
enum AppFrom {
    /// The label `app.kubernetes.io/name`.
    NameLabel,
    /// The label `app`, for pods without `app.kubernetes.io/name`.
    AppLabel,
    /// The controller's name, for pods of a direct controller (StatefulSet, DaemonSet, Job).
    DirectController,
    /// The controller's name without its hash, for pods of a ReplicaSet (Deployment).
    IndirectController,
    /// The pod's name, for everything else.
    PodName,
}

fn pods_job(job_name: &'static str, app_from: AppFrom) -> ScrapeConfig {
    const NAME_LABEL: &str = "__meta_kubernetes_pod_label_app_kubernetes_io_name";
    const APP_LABEL: &str = "__meta_kubernetes_pod_label_app";
    const CONTROLLER: &str = "__meta_kubernetes_pod_controller_name";
    const HASHED_CONTROLLER: &str = "([0-9a-z-.]+)-[0-9a-f]{8,10}";
    let drop_labelled = || Relabel { separator: Some(""), ..relabel("drop", vec![NAME_LABEL, APP_LABEL], Some(".+")) };
    let mut rules = match app_from {
        AppFrom::NameLabel => vec![
            copy(NAME_LABEL, "app"),
            relabel("drop", vec!["app"], Some("")),
            copy("__meta_kubernetes_pod_label_app_kubernetes_io_component", "component"),
        ],
        AppFrom::AppLabel => vec![
            relabel("drop", vec![NAME_LABEL], Some(".+")),
            copy(APP_LABEL, "app"),
            relabel("drop", vec!["app"], Some("")),
            copy("__meta_kubernetes_pod_label_component", "component"),
        ],
        AppFrom::DirectController => vec![
            drop_labelled(),
            relabel("drop", vec![CONTROLLER], Some("[0-9a-z-.]+-[0-9a-f]{8,10}")),
            copy(CONTROLLER, "app"),
        ],
        AppFrom::IndirectController => vec![
            drop_labelled(),
            relabel("keep", vec![CONTROLLER], Some("[0-9a-z-.]+-[0-9a-f]{8,10}")),
            Relabel { target_label: Some("app"), ..relabel("replace", vec![CONTROLLER], Some(HASHED_CONTROLLER)) },
        ],
        AppFrom::PodName => vec![
            drop_labelled(),
            relabel("drop", vec![CONTROLLER], Some(".+")),
            copy("__meta_kubernetes_pod_name", "app"),
            copy("__meta_kubernetes_pod_label_component", "component"),
        ],
    };
    rules.extend([
        // Promtail follows only targets whose __host__ is its own HOSTNAME (the node name).
        copy("__meta_kubernetes_pod_node_name", "__host__"),
        copy("__meta_kubernetes_pod_node_name", "node_name"),
        copy("__meta_kubernetes_namespace", "namespace"),
        Relabel {
            separator: Some("/"),
            target_label: Some("job"),
            replacement: Some("$1"),
            ..relabel("replace", vec!["namespace", "app"], None)
        },
        copy("__meta_kubernetes_pod_name", "pod"),
        copy("__meta_kubernetes_pod_container_name", "container"),
        Relabel {
            separator: Some("/"),
            target_label: Some("__path__"),
            replacement: Some("/var/log/pods/*$1/*.log"),
            ..relabel("replace", vec!["__meta_kubernetes_pod_uid", "__meta_kubernetes_pod_container_name"], None)
        },
        // Static pods log under their config hash (their mirror pod's UID differs). Only
        // when the annotation is there: KKP applies this rule to every pod, which turns
        // the path of a pod without it into `/var/log/pods/*/<container>/*.log`, the logs
        // of every pod on the node with a container of that name.
        Relabel {
            separator: Some("/"),
            target_label: Some("__path__"),
            replacement: Some("/var/log/pods/*$1/*.log"),
            ..relabel(
                "replace",
                vec![
                    "__meta_kubernetes_pod_annotationpresent_kubernetes_io_config_hash",
                    "__meta_kubernetes_pod_annotation_kubernetes_io_config_hash",
                    "__meta_kubernetes_pod_container_name",
                ],
                Some("true/(.*)"),
            )
        },
    ]);
    ScrapeConfig {
        job_name,
        pipeline_stages: vec![BTreeMap::from([("cri", BTreeMap::new())])],
        kubernetes_sd_configs: vec![KubernetesSd { role: "pod" }],
        relabel_configs: rules,
    }
}

/// Renders `promtail.yaml` (see the module documentation).
pub fn promtail_config(input: &LoggingConfigInput) -> Result<String, ConfigError> {
    let cluster = common::validate_cluster_name(&input.cluster_name)?;
    let gateway = common::validate_gateway_url(&input.gateway_url)?;
    let tls = input.client_tls.validated()?;
    let config = PromtailYaml {
        server: Server { http_listen_port: HTTP_PORT, grpc_listen_port: 0, log_level: "info" },
        positions: Positions { filename: format!("{POSITIONS_DIR}/positions.yaml") },
        clients: vec![Client {
            url: format!("{gateway}/loki/api/v1/push"),
            tls_config: TlsConfig { ca_file: tls.ca_file, cert_file: tls.cert_file, key_file: tls.key_file },
            external_labels: BTreeMap::from([("cluster", cluster.to_string())]),
        }],
        scrape_configs: vec![
            pods_job("kubernetes-pods-app-kubernetes-io-name", AppFrom::NameLabel),
            pods_job("kubernetes-pods-app", AppFrom::AppLabel),
            pods_job("kubernetes-pods-direct-controllers", AppFrom::DirectController),
            pods_job("kubernetes-pods-indirect-controller", AppFrom::IndirectController),
            pods_job("kubernetes-other", AppFrom::PodName),
        ],
    };
    Ok(serde_yaml::to_string(&config)?)
}

// ---- Kubernetes objects ----

fn default_resources() -> ResourceRequirements {
    let quantity = |v: &str| Quantity(v.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), quantity("50m")), ("memory".into(), quantity("64Mi"))])),
        limits: Some(BTreeMap::from([("cpu".into(), quantity("200m")), ("memory".into(), quantity("128Mi"))])),
        ..Default::default()
    }
}

/// The Secret with `promtail.yaml` (a Secret, as KKP keeps it, though it holds only paths).
pub fn config_secret(promtail_yaml: &str) -> Secret {
    Secret {
        metadata: meta(PROMTAIL, PROMTAIL),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(CONFIG_KEY.into(), ByteString(promtail_yaml.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

/// The agent's ServiceAccount.
pub fn service_account() -> ServiceAccount {
    ServiceAccount { metadata: meta(PROMTAIL, PROMTAIL), ..Default::default() }
}

/// What the agent may read: pods (to discover log files) and nodes. Nothing writable.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: cluster_meta(CLUSTER_ROLE, PROMTAIL),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into(), "nodes".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Binds [`cluster_role`] to the agent's ServiceAccount.
pub fn cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: cluster_meta(CLUSTER_ROLE, PROMTAIL),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: PROMTAIL.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    }
}

/// The Promtail DaemonSet: on every node, whatever its taints, reading `/var/log/pods`
/// read-only. It runs as root, because the log files belong to root and are not readable by
/// others, but with no capabilities, no privilege escalation and a read-only root file
/// system. `config_hash` goes into the pod template so a new configuration rolls the pods.
pub fn daemon_set(settings: &LoggingAgentSettings, config_hash: &str) -> DaemonSet {
    let host_path = |name: &str, path: &str, type_: Option<&str>| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: type_.map(Into::into) }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut volumes = vec![
        common::secret_volume("config", PROMTAIL),
        common::secret_volume("certificates", CERTIFICATES_SECRET),
        host_path("positions", POSITIONS_DIR, Some("DirectoryOrCreate")),
        host_path("pods", POD_LOGS_DIR, None),
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("certificates", CERTIFICATES_DIR, true),
        mount("positions", POSITIONS_DIR, false),
        mount("pods", POD_LOGS_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if settings.docker_containers {
        volumes.push(host_path("docker-containers", DOCKER_CONTAINERS_DIR, None));
        mounts.push(mount("docker-containers", DOCKER_CONTAINERS_DIR, true));
    }
    let container = Container {
        name: PROMTAIL.into(),
        image: Some(settings.image.clone()),
        args: Some(vec![format!("-config.file={CONFIG_DIR}/{CONFIG_KEY}")]),
        env: Some(vec![EnvVar {
            name: "HOSTNAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "spec.nodeName".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("http-metrics".into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::String("http-metrics".into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(5),
            ..Default::default()
        }),
        resources: Some(settings.resources.clone()),
        security_context: Some(common::container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    DaemonSet {
        metadata: meta(PROMTAIL, PROMTAIL),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(common::labels(PROMTAIL)), ..Default::default() },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common::labels(PROMTAIL)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.into(), config_hash.into())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(PROMTAIL.into()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(0),
                        run_as_group: Some(0),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    // Every node, whatever its taints: a node's logs matter most when it is
                    // unhealthy, cordoned or dedicated.
                    tolerations: Some(vec![Toleration { operator: Some("Exists".into()), ..Default::default() }]),
                    containers: vec![container],
                    volumes: Some(volumes),
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
    use serde_yaml::Value;

    use super::*;

    fn input() -> LoggingConfigInput {
        LoggingConfigInput::new("abc", "https://gw.example.com:30443/")
    }

    fn pod_spec(ds: &DaemonSet) -> PodSpec {
        ds.spec.clone().and_then(|s| s.template.spec).expect("pod spec")
    }

    #[test]
    fn config_pushes_to_the_gateway_with_the_cluster_label() {
        let yaml = LoggingAgent::Promtail.render_config(&input()).expect("renders");
        let value: Value = serde_yaml::from_str(&yaml).expect("parses");
        let keys: Vec<_> = value.as_mapping().expect("mapping").keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["server", "positions", "clients", "scrape_configs"]);
        let clients = value["clients"].as_sequence().expect("clients");
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0]["url"].as_str(), Some("https://gw.example.com:30443/loki/api/v1/push"));
        assert_eq!(clients[0]["external_labels"]["cluster"].as_str(), Some("abc"));
        assert_eq!(clients[0]["tls_config"]["key_file"].as_str(), Some("/etc/ssl/mla/client.key"));
        assert_eq!(value["positions"]["filename"].as_str(), Some("/var/lib/promtail/positions.yaml"));
        for job in value["scrape_configs"].as_sequence().expect("jobs") {
            let rules = job["relabel_configs"].as_sequence().expect("rules");
            let paths: Vec<_> = rules.iter().filter(|r| r["target_label"].as_str() == Some("__path__")).collect();
            assert_eq!(paths.len(), 2);
            assert_eq!(paths[0]["replacement"].as_str(), Some("/var/log/pods/*$1/*.log"));
            assert_eq!(paths[1]["regex"].as_str(), Some("true/(.*)"), "static pods only");
            assert!(rules.iter().any(|r| r["target_label"].as_str() == Some("__host__")));
        }
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let mut bad = input();
        bad.cluster_name = "a: b".into();
        assert!(matches!(promtail_config(&bad), Err(ConfigError::Invalid { field: "cluster name", .. })));
        let mut bad = input();
        bad.gateway_url = "http://gw".into();
        assert!(matches!(promtail_config(&bad), Err(ConfigError::Invalid { field: "gateway URL", .. })));
    }

    #[test]
    fn tolerates_every_taint_and_reads_pod_logs_read_only() {
        let agent = LoggingAgent::Promtail;
        let objects = agent.objects(&agent.settings(None), "x");
        let pod = pod_spec(&objects.daemon_set);
        let tolerations = pod.tolerations.clone().expect("tolerations");
        assert_eq!(tolerations, [Toleration { operator: Some("Exists".into()), ..Default::default() }]);
        let container = &pod.containers[0];
        let mounts = container.volume_mounts.clone().expect("mounts");
        let pods = mounts.iter().find(|m| m.mount_path == POD_LOGS_DIR).expect("pods mount");
        assert_eq!(pods.read_only, Some(true));
        let docker = mounts.iter().find(|m| m.mount_path == DOCKER_CONTAINERS_DIR).expect("docker mount");
        assert_eq!(docker.read_only, Some(true));
        let volumes = pod.volumes.clone().expect("volumes");
        let host_paths: Vec<_> = volumes.iter().filter_map(|v| v.host_path.as_ref()).map(|h| h.path.as_str()).collect();
        assert_eq!(host_paths, [POSITIONS_DIR, POD_LOGS_DIR, DOCKER_CONTAINERS_DIR]);
        let secrets: Vec<_> = volumes.iter().filter_map(|v| v.secret.as_ref()?.secret_name.as_deref()).collect();
        assert_eq!(secrets, [PROMTAIL, CERTIFICATES_SECRET]);
        let security = container.security_context.clone().expect("security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
        assert_eq!(security.privileged, None);
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        assert_eq!(objects.daemon_set.metadata.namespace.as_deref(), Some(NAMESPACE));
    }

    #[test]
    fn docker_containers_mount_is_optional() {
        let settings = LoggingAgentSettings { docker_containers: false, ..LoggingAgent::Promtail.settings(None) };
        let pod = pod_spec(&daemon_set(&settings, "h"));
        assert!(pod.volumes.expect("volumes").iter().all(|v| v.name != "docker-containers"));
    }

    #[test]
    fn config_changes_roll_the_pods() {
        let agent = LoggingAgent::Promtail;
        let settings = agent.settings(None);
        let a = agent.objects(&settings, "a").daemon_set;
        let b = agent.objects(&settings, "b").daemon_set;
        assert_ne!(a, b);
        assert_eq!(a, agent.objects(&settings, "a").daemon_set);
        let annotations = a.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).expect("annotations");
        assert_eq!(annotations.get(CONFIG_HASH_ANNOTATION), Some(&common::config_hash("a")));
    }

    #[test]
    fn resources_come_from_the_cluster() {
        let resources = ResourceRequirements {
            requests: Some(BTreeMap::from([("memory".into(), Quantity("100Mi".into()))])),
            ..Default::default()
        };
        let mla =
            MLASettings { logging_enabled: true, logging_resources: Some(resources.clone()), ..Default::default() };
        let settings = LoggingAgent::Promtail.settings(Some(&mla));
        assert_eq!(settings.resources, resources);
        let pod = pod_spec(&daemon_set(&settings, "h"));
        assert_eq!(pod.containers[0].resources.as_ref(), Some(&resources));
        assert_eq!(LoggingAgent::Promtail.settings(None).resources, default_resources());
    }

    #[test]
    fn rbac_reads_pods_and_nodes_only() {
        let rules = cluster_role().rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_string(), "nodes".to_string()][..]));
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        let binding = cluster_role_binding();
        assert_eq!(binding.role_ref.name, CLUSTER_ROLE);
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (PROMTAIL, Some(NAMESPACE)));
    }

    #[test]
    fn config_secret_holds_the_file() {
        let secret = config_secret("a: 1\n");
        let data = secret.data.expect("data");
        assert_eq!(data.get(CONFIG_KEY).map(|b| b.0.as_slice()), Some(&b"a: 1\n"[..]));
        assert_eq!(LoggingAgent::Promtail.certificates_secret_name(), CERTIFICATES_SECRET);
        assert_eq!(LoggingAgent::Promtail.name(), PROMTAIL);
    }
}

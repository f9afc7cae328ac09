//! The metrics agent's Kubernetes objects: its ConfigMap, ServiceAccount, RBAC and
//! Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mla_common::api::MLASettings;

use super::super::common::{self, CERTIFICATES_DIR, CONFIG_HASH_ANNOTATION, NAMESPACE, cluster_meta, meta};

use super::{
    CERTIFICATES_SECRET, CLUSTER_ROLE, CONFIG_DIR, CONFIG_KEY, DEFAULT_IMAGE, POD_NAME_ENV, PROMETHEUS, STORAGE_DIR,
};

const PORT: i32 = 9090;
/// `--scrape.discovery-reload-interval` of the agent: how long discovered targets may
/// wait before the scrape manager applies them (Prometheus' default 5s). A hidden flag
/// of Prometheus since 2.x, still accepted by 3.5 and 3.16.
pub const DISCOVERY_RELOAD_INTERVAL: &str = "1s";

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
            // Discovered targets become scrape pools within a second instead of the
            // default 5 s (scrape/manager.go, `Manager.reloader`); reloads still happen
            // only after the discovery manager sends a change, which it throttles to
            // once per 5 s (docs/user-cluster-controller-manager.md, "First sample").
            format!("--scrape.discovery-reload-interval={DISCOVERY_RELOAD_INTERVAL}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // The pod's name, for the replica label (see the module documentation of `prometheus`).
        env: Some(vec![EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
                ..Default::default()
            }),
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
        assert!(args.contains(&"--scrape.discovery-reload-interval=1s".to_string()));
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes[1].secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some(CERTIFICATES_SECRET));
        assert!(volumes[2].empty_dir.is_some());
        assert_eq!(pod.service_account_name.as_deref(), Some(PROMETHEUS));
        let env = container.env.clone().expect("env");
        let pod_name = env.iter().find(|e| e.name == POD_NAME_ENV).expect("POD_NAME");
        let field = pod_name.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
        assert_eq!(field, Some("metadata.name"), "the replica label's value comes from the pod name");
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

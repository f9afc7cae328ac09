//! The Kubernetes objects of a cluster's MLA gateway, built by pure functions (DESIGN.md,
//! "Seed objects per Cluster").

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mla_common::api::ExposeStrategy;
use mla_common::pki::{self, CaState, CertifiedKeyPem};

/// Secret with the cluster's CA (and, around a rotation, its predecessor or successor).
pub const CA_SECRET: &str = "mla-gateway-ca";
/// Secret with the gateway's serving certificate and the client CA bundle.
pub const CERTIFICATES_SECRET: &str = "mla-gateway-certificates";
/// Name of the ConfigMap, the Deployment and the read-path Service.
pub const GATEWAY: &str = "mla-gateway";
/// The write-path Service, exposed to the user cluster.
pub const EXTERNAL_SERVICE: &str = "mla-gateway-ext";
/// Serving certificate key in [`CERTIFICATES_SECRET`].
pub const GATEWAY_CERT_KEY: &str = "gateway.crt";
/// Serving key in [`CERTIFICATES_SECRET`].
pub const GATEWAY_KEY_KEY: &str = "gateway.key";
/// CA bundle that client certificates must chain to, in [`CERTIFICATES_SECRET`]. The CA's
/// private key never reaches the gateway pod.
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// nginx.conf in the ConfigMap.
pub const CONFIG_KEY: &str = "nginx.conf";
/// Pod template annotation carrying a hash of nginx.conf: a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "mla.k8c.io/config-hash";
/// Where the certificates Secret is mounted (matches `nginx::GatewayPaths::default`).
pub const CERTIFICATES_DIR: &str = "/etc/ssl/mla-gateway";
/// Annotation asking the seed's nodeport-proxy to expose a Service (KKP convention):
/// `"true"` per NodePort, `"SNI"` by TLS server name.
pub const EXPOSE_ANNOTATION: &str = "nodeport-proxy.k8s.io/expose";
/// Annotation asking the per-cluster (LoadBalancer) nodeport-proxy to expose a Service.
pub const EXPOSE_NAMESPACED_ANNOTATION: &str = "nodeport-proxy.k8s.io/expose-namespaced";
/// For SNI exposure: which port is reached under which host name.
pub const PORT_MAPPING_ANNOTATION: &str = "nodeport-proxy.k8s.io/port-mapping";
/// Host name prefix of the gateway when exposed by SNI (Tunneling).
pub const SNI_PREFIX: &str = "mla-gateway.";

/// Label naming the app on every gateway object and pod (KKP's gateway pods carry it too).
pub const APP_LABEL: &str = "app.kubernetes.io/name";
/// Label marking what this system made; part of our Deployment's selector, so that our
/// Deployment never adopts the ReplicaSets of a gateway KKP made.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "seed-controller-manager";
/// Name of the write-path port of Service `mla-gateway-ext` (and of the container port):
/// user-cluster-controller-manager finds the agents' NodePort by this name. Stable: a
/// change strands every agent.
pub const EXTERNAL_PORT_NAME: &str = "https-ext";
/// KKP's name of that port (port 80). A Service KKP made keeps it, served by our pods too,
/// so that agents KKP configured keep their NodePort (docs/gateway.md, "Taking over").
pub const KKP_EXTERNAL_PORT_NAME: &str = "http-ext";
/// The write server's port in the pod (ours and KKP's alike).
pub const WRITE_PORT: i32 = 8080;

/// How the gateway pods run.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayDeploymentSettings {
    /// nginx image (an unprivileged one: it runs as a non-root user on read-only root).
    pub image: String,
    /// Replicas of the gateway.
    pub replicas: i32,
    /// Requests and limits of the nginx container.
    pub resources: ResourceRequirements,
}

impl Default for GatewayDeploymentSettings {
    fn default() -> Self {
        let quantity = |v: &str| Quantity(v.to_string());
        Self {
            image: "docker.io/nginxinc/nginx-unprivileged:1.27-alpine".into(),
            replicas: 1,
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".into(), quantity("50m")), ("memory".into(), quantity("32Mi"))])),
                limits: Some(BTreeMap::from([("memory".into(), quantity("256Mi"))])),
                ..Default::default()
            },
        }
    }
}

/// Labels every object of the gateway carries; also the Deployment's selector.
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.into(), GATEWAY.into()), (MANAGED_BY_LABEL.into(), MANAGED_BY.into())])
}

/// The Services' selector: the app label alone, which our pods and the pods of a gateway
/// KKP made share, so that both serve while one replaces the other.
pub fn service_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.into(), GATEWAY.into())])
}

/// Whether a gateway Deployment's selector is ours (else it is KKP's, or of an older
/// build, and the Deployment must be replaced: a selector cannot change).
pub fn has_our_selector(deployment: &Deployment) -> bool {
    deployment.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()) == Some(&labels())
        && deployment.spec.as_ref().is_some_and(|s| s.selector.match_expressions.as_ref().is_none_or(Vec::is_empty))
}

/// Whether a ReplicaSet is what is left of a replaced gateway Deployment: a gateway pod
/// set (app label) that no Deployment owns and that is not ours.
pub fn is_orphaned_gateway_replica_set(replica_set: &k8s_openapi::api::apps::v1::ReplicaSet) -> bool {
    let labels = replica_set.metadata.labels.clone().unwrap_or_default();
    labels.get(APP_LABEL).map(String::as_str) == Some(GATEWAY)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY)
        && replica_set.metadata.owner_references.as_ref().is_none_or(Vec::is_empty)
}

/// Whether our gateway Deployment has rolled out: every wanted replica updated and
/// available, as seen by the Deployment controller for the current generation.
pub fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else { return false };
    status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
}

fn meta(name: &str, namespace: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

/// The CA Secret holding `state`.
pub fn ca_secret(namespace: &str, owner: &OwnerReference, state: &CaState) -> Secret {
    let mut entries = Vec::new();
    for (key, value) in [
        (pki::CA_CERT_KEY, &state.cert_pem),
        (pki::CA_KEY_KEY, &state.key_pem),
        (pki::CA_PREVIOUS_CERT_KEY, &state.previous_cert_pem),
        (pki::CA_NEXT_CERT_KEY, &state.next_cert_pem),
        (pki::CA_NEXT_KEY_KEY, &state.next_key_pem),
    ] {
        if let Some(value) = value {
            entries.push((key, value.as_str()));
        }
    }
    Secret {
        metadata: meta(CA_SECRET, namespace, owner),
        type_: Some("Opaque".into()),
        data: Some(data(&entries)),
        ..Default::default()
    }
}

/// Reads the CA state out of the CA Secret (absent keys stay `None`).
pub fn ca_state(secret: Option<&Secret>) -> CaState {
    CaState::from_secret(secret)
}

/// A string value of a Secret.
pub fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    secret?.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// The certificates Secret mounted by the gateway.
pub fn certificates_secret(namespace: &str, owner: &OwnerReference, gateway: &CertifiedKeyPem, bundle: &str) -> Secret {
    Secret {
        metadata: meta(CERTIFICATES_SECRET, namespace, owner),
        type_: Some("Opaque".into()),
        data: Some(data(&[
            (GATEWAY_CERT_KEY, &gateway.cert_pem),
            (GATEWAY_KEY_KEY, &gateway.key_pem),
            (CA_BUNDLE_KEY, bundle),
        ])),
        ..Default::default()
    }
}

/// The ConfigMap with nginx.conf.
pub fn config_map(namespace: &str, owner: &OwnerReference, nginx_conf: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(GATEWAY, namespace, owner),
        data: Some(BTreeMap::from([(CONFIG_KEY.into(), nginx_conf.into())])),
        ..Default::default()
    }
}

/// A short, stable hash of the configuration for the pod template annotation.
pub fn config_hash(nginx_conf: &str) -> String {
    mla_common::validation::config_hash(nginx_conf)
}

/// nginx in the foreground, plus a watcher that reloads it (gracefully: open connections
/// finish on the old workers) when the mounted certificates change. Secret volumes are
/// updated in place by the kubelet, so renewals need no restart.
const ENTRYPOINT: &str = r#"set -eu
nginx -e stderr -c /etc/nginx/mla/nginx.conf -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT "$nginx_pid"; wait "$nginx_pid"; exit 0' TERM INT
sum() { cat /etc/ssl/mla-gateway/*.crt /etc/ssl/mla-gateway/*.key 2>/dev/null | md5sum; }
last=$(sum)
while kill -0 "$nginx_pid" 2>/dev/null; do
  sleep 10 & wait $!
  now=$(sum)
  if [ "$now" != "$last" ]; then
    nginx -e stderr -c /etc/nginx/mla/nginx.conf -s reload && last=$now
  fi
done
wait "$nginx_pid""#;

/// The gateway Deployment.
pub fn deployment(
    namespace: &str,
    owner: &OwnerReference,
    settings: &GatewayDeploymentSettings,
    config_hash: &str,
) -> Deployment {
    let port =
        |name: &str, port: i32| ContainerPort { name: Some(name.into()), container_port: port, ..Default::default() };
    let probe = |period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".into()),
            port: IntOrString::String("http-int".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(path != "/tmp"),
        ..Default::default()
    };
    let container = Container {
        name: "nginx".into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), ENTRYPOINT.into()]),
        ports: Some(vec![port(EXTERNAL_PORT_NAME, WRITE_PORT), port("http-int", 8081)]),
        readiness_probe: Some(probe(5)),
        liveness_probe: Some(probe(10)),
        resources: Some(settings.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("config", "/etc/nginx/mla"),
            mount("certificates", CERTIFICATES_DIR),
            mount("tmp", "/tmp"),
        ]),
        ..Default::default()
    };
    let mut template_annotations = BTreeMap::new();
    template_annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string());
    Deployment {
        metadata: meta(GATEWAY, namespace, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: LabelSelector { match_labels: Some(labels()), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(template_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(101),
                        run_as_group: Some(101),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource { name: GATEWAY.into(), ..Default::default() }),
                            ..Default::default()
                        },
                        Volume {
                            name: "certificates".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(CERTIFICATES_SECRET.into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
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

/// The read-path Service (seed-internal): port 80 to the read server.
pub fn internal_service(namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(GATEWAY, namespace, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(service_selector()),
            ports: Some(vec![ServicePort {
                name: Some("http-int".into()),
                port: 80,
                target_port: Some(IntOrString::String("http-int".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The write-path Service the agents reach, exposed by the seed's nodeport-proxy as KKP
/// exposes it: `NodePort` → a NodePort Service with `expose: "true"`; `LoadBalancer` → a
/// NodePort Service the cluster's own proxy exposes (`expose-namespaced: "true"`);
/// `Tunneling` → a ClusterIP Service reached by SNI as `mla-gateway.<externalName>`.
///
/// `kkp_port`: the Service KKP made has its port `http-ext` (80): it stays, now ours and
/// pointing at the same write port, so that agents using its NodePort are not cut off.
/// Both ports target the write port by number, which KKP's pods and ours both listen on,
/// so that either serves while one gateway replaces the other.
pub fn external_service(
    namespace: &str,
    owner: &OwnerReference,
    strategy: ExposeStrategy,
    external_name: &str,
    kkp_port: bool,
) -> Service {
    let (type_, annotations) = match strategy {
        ExposeStrategy::NodePort => ("NodePort", vec![(EXPOSE_ANNOTATION, "true".to_string())]),
        ExposeStrategy::LoadBalancer => ("NodePort", vec![(EXPOSE_NAMESPACED_ANNOTATION, "true".to_string())]),
        ExposeStrategy::Tunneling => (
            "ClusterIP",
            vec![
                (EXPOSE_ANNOTATION, "SNI".to_string()),
                (
                    PORT_MAPPING_ANNOTATION,
                    serde_json::json!({ EXTERNAL_PORT_NAME: format!("{SNI_PREFIX}{external_name}") }).to_string(),
                ),
            ],
        ),
    };
    let mut metadata = meta(EXTERNAL_SERVICE, namespace, owner);
    metadata.annotations = Some(annotations.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(WRITE_PORT)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![port(EXTERNAL_PORT_NAME, WRITE_PORT)];
    if kkp_port {
        ports.push(port(KKP_EXTERNAL_PORT_NAME, 80));
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(service_selector()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a write-path Service has KKP's port (`http-ext`).
pub fn has_kkp_port(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p.name.as_deref() == Some(KKP_EXTERNAL_PORT_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "kubermatic.k8c.io/v1".into(),
            kind: "Cluster".into(),
            name: "abc".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn ca_state_round_trips_through_the_secret() {
        let state = CaState {
            cert_pem: Some("cert".into()),
            key_pem: Some("key".into()),
            previous_cert_pem: None,
            next_cert_pem: Some("next".into()),
            next_key_pem: Some("next-key".into()),
        };
        let secret = ca_secret("cluster-abc", &owner(), &state);
        assert_eq!(ca_state(Some(&secret)), state);
        assert!(!secret.data.as_ref().expect("data").contains_key(pki::CA_PREVIOUS_CERT_KEY));
        assert_eq!(ca_state(None), CaState::default());
    }

    #[test]
    fn config_changes_change_the_pod_template_and_nothing_else_does() {
        let settings = GatewayDeploymentSettings::default();
        let a = deployment("ns", &owner(), &settings, &config_hash("a"));
        let b = deployment("ns", &owner(), &settings, &config_hash("b"));
        assert_ne!(a, b);
        assert_eq!(a, deployment("ns", &owner(), &settings, &config_hash("a")));
        assert_eq!(config_hash("worker_processes 1;"), config_hash("worker_processes 1;"));
    }

    #[test]
    fn gateway_pod_never_sees_the_ca_key() {
        let d = deployment("ns", &owner(), &GatewayDeploymentSettings::default(), "h");
        let volumes = d.spec.and_then(|s| s.template.spec).and_then(|s| s.volumes).unwrap_or_default();
        let secrets: Vec<_> = volumes.iter().filter_map(|v| v.secret.as_ref()?.secret_name.clone()).collect();
        assert_eq!(secrets, vec![CERTIFICATES_SECRET.to_string()]);
    }

    #[test]
    fn external_service_follows_the_expose_strategy() {
        let service = |s| external_service("ns", &owner(), s, "c1.example.com", false);
        let kind = |s| service(s).spec.and_then(|s| s.type_).unwrap_or_default();
        let annotation = |s, key: &str| service(s).metadata.annotations.and_then(|a| a.get(key).cloned());
        assert_eq!(kind(ExposeStrategy::NodePort), "NodePort");
        assert_eq!(annotation(ExposeStrategy::NodePort, EXPOSE_ANNOTATION).as_deref(), Some("true"));
        assert_eq!(kind(ExposeStrategy::LoadBalancer), "NodePort");
        assert_eq!(annotation(ExposeStrategy::LoadBalancer, EXPOSE_NAMESPACED_ANNOTATION).as_deref(), Some("true"));
        assert_eq!(kind(ExposeStrategy::Tunneling), "ClusterIP");
        assert_eq!(annotation(ExposeStrategy::Tunneling, EXPOSE_ANNOTATION).as_deref(), Some("SNI"));
        assert_eq!(
            annotation(ExposeStrategy::Tunneling, PORT_MAPPING_ANNOTATION).as_deref(),
            Some(r#"{"https-ext":"mla-gateway.c1.example.com"}"#)
        );
    }

    #[test]
    fn a_service_kkp_made_keeps_its_port_for_the_agents_kkp_configured() {
        let ours = external_service("ns", &owner(), ExposeStrategy::NodePort, "c1.example.com", false);
        assert!(!has_kkp_port(&ours));
        let taken_over = external_service("ns", &owner(), ExposeStrategy::NodePort, "c1.example.com", true);
        assert!(has_kkp_port(&taken_over));
        let ports = taken_over.spec.and_then(|s| s.ports).unwrap_or_default();
        let names: Vec<_> = ports.iter().map(|p| (p.name.clone().unwrap_or_default(), p.port)).collect();
        assert_eq!(names, [("https-ext".to_string(), 8080), ("http-ext".to_string(), 80)]);
        assert!(ports.iter().all(|p| p.target_port == Some(IntOrString::Int(8080))), "both pods' write port");
    }

    #[test]
    fn services_select_every_gateway_pod_and_the_deployment_only_ours() {
        let service = internal_service("ns", &owner());
        assert_eq!(service.spec.and_then(|s| s.selector), Some(service_selector()));
        let deployment = deployment("ns", &owner(), &GatewayDeploymentSettings::default(), "h");
        assert!(has_our_selector(&deployment));
        let mut kkp = deployment.clone();
        if let Some(spec) = kkp.spec.as_mut() {
            spec.selector.match_labels = Some(service_selector());
        }
        assert!(!has_our_selector(&kkp));
    }

    #[test]
    fn only_unowned_foreign_gateway_replica_sets_are_orphans() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        let replica_set = |labels: &[(&str, &str)], owned: bool| ReplicaSet {
            metadata: ObjectMeta {
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                owner_references: owned.then(|| vec![owner()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let kkp = [(APP_LABEL, GATEWAY), ("pod-template-hash", "abc")];
        assert!(is_orphaned_gateway_replica_set(&replica_set(&kkp, false)));
        assert!(!is_orphaned_gateway_replica_set(&replica_set(&kkp, true)), "still owned by its Deployment");
        let ours = [(APP_LABEL, GATEWAY), (MANAGED_BY_LABEL, MANAGED_BY)];
        assert!(!is_orphaned_gateway_replica_set(&replica_set(&ours, false)));
        assert!(!is_orphaned_gateway_replica_set(&replica_set(&[(APP_LABEL, "other")], false)));
    }

    #[test]
    fn rolled_out_needs_every_replica_available_for_this_generation() {
        let mut d = deployment("ns", &owner(), &GatewayDeploymentSettings::default(), "h");
        d.metadata.generation = Some(2);
        assert!(!rolled_out(&d));
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(2),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        });
        assert!(rolled_out(&d));
        d.metadata.generation = Some(3);
        assert!(!rolled_out(&d), "the controller has not seen the latest spec");
    }
}

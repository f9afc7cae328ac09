//! The Kubernetes objects of a cluster's identity-aware proxy (oauth2-proxy in front of the
//! Alertmanager UI on the gateway read path), built by pure functions, and the list of
//! emails it lets in.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mla_common::api::{User, UserProjectBinding};
use mla_common::validation::dns_label_problem;

/// Name of the Deployment, Service, Ingress and Secret of the IAP in the cluster namespace.
pub const IAP: &str = "mla-iap";
/// ConfigMap with the emails that are let in.
pub const EMAILS_CONFIG_MAP: &str = "mla-iap-emails";
/// Key of the emails file in [`EMAILS_CONFIG_MAP`].
pub const EMAILS_KEY: &str = "authenticated-emails";
/// Key of the cookie secret in the IAP Secret.
pub const COOKIE_SECRET_KEY: &str = "cookie-secret";
/// Key of the OIDC client secret in the IAP Secret (a copy of the one in the mla namespace).
pub const CLIENT_SECRET_KEY: &str = "client-secret";
/// Pod template annotation with the version of the source client Secret: pods read the
/// client secret from the environment at start, so a rotated one needs new pods.
pub const CLIENT_SECRET_VERSION_ANNOTATION: &str = "mla.k8c.io/client-secret-version";
/// Path prefix of Cortex Alertmanager's UI and API on the gateway read server; the IAP
/// proxies only this.
pub const ALERTMANAGER_PATH: &str = "/api/prom/alertmanager/";
/// oauth2-proxy's liveness and readiness path.
pub const PING_PATH: &str = "/ping";
/// Where the emails ConfigMap is mounted. The whole directory, not a subPath: the kubelet
/// updates it in place and oauth2-proxy re-reads the file when it changes.
pub const EMAILS_DIR: &str = "/etc/oauth2-proxy/emails";
/// oauth2-proxy's listening port.
pub const HTTP_PORT: i32 = 4180;

const APP_LABEL: &str = "app.kubernetes.io/name";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "seed-controller-manager";

/// How every cluster's IAP is configured (from the flags).
#[derive(Clone, Debug, PartialEq)]
pub struct IapSettings {
    /// OIDC issuer of the platform.
    pub issuer_url: String,
    /// OIDC client ID the proxies authenticate as.
    pub client_id: String,
    /// oauth2-proxy image.
    pub image: String,
    /// Replicas of each proxy.
    pub replicas: i32,
    /// Host name of a cluster's IAP, with `{cluster}` and `{domain}` placeholders.
    pub host_template: String,
    /// Value of `{domain}`.
    pub domain: String,
    /// `spec.ingressClassName` of the Ingress, if any.
    pub ingress_class: Option<String>,
    /// Secret (in each cluster namespace) with the Ingress's TLS certificate, if any.
    pub tls_secret: Option<String>,
    /// Extra annotations of the Ingress (e.g. a cert-manager issuer).
    pub ingress_annotations: BTreeMap<String, String>,
}

impl Default for IapSettings {
    fn default() -> Self {
        Self {
            issuer_url: "https://kkp.example.com/dex".into(),
            client_id: "mla-iap".into(),
            image: "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6".into(),
            replicas: 1,
            host_template: "alertmanager.{cluster}.{domain}".into(),
            domain: "example.com".into(),
            ingress_class: Some("nginx".into()),
            tls_secret: None,
            ingress_annotations: BTreeMap::new(),
        }
    }
}

/// The IAP host of `cluster`, or why it is not a valid DNS name.
pub fn host(settings: &IapSettings, cluster: &str) -> Result<String, String> {
    let host = settings.host_template.replace("{cluster}", cluster).replace("{domain}", &settings.domain);
    if host.len() > 253 {
        return Err(format!("host {host:?} is longer than 253 characters"));
    }
    for label in host.split('.') {
        if let Some(problem) = dns_label_problem(label) {
            return Err(format!("host {host:?}: label {label:?} {problem}"));
        }
    }
    Ok(host)
}

/// Why `email` cannot go into oauth2-proxy's emails file, or `None` when it can.
///
/// oauth2-proxy parses the file as CSV (`,` separates fields, `"` quotes, `#` starts a
/// comment, lines end records, one field per record) and fails on the whole file when a
/// record is malformed. Only plain addresses are let through: ASCII, no whitespace, no
/// control characters, none of `,` `"` `#`, one `@`, a dotted DNS-like domain.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.len() > 254 {
        return Some("is longer than 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else { return Some("has no '@'") };
    if local.is_empty() || local.len() > 64 {
        return Some("must have a local part of 1 to 64 characters");
    }
    let local_ok = local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok {
        return Some("may have only letters, digits and !$%&'*+/=?^_`{|}~.- before the '@'");
    }
    if domain.is_empty() || domain.split('.').any(|label| label.is_empty()) {
        return Some("must have a domain of non-empty dot-separated labels");
    }
    if !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Some("may have only letters, digits, '-' and '.' after the '@'");
    }
    None
}

/// Who a cluster's IAP lets in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedEmails {
    /// Lower-cased (oauth2-proxy compares lower-cased), sorted, without duplicates.
    pub emails: BTreeSet<String>,
    /// Values that are not plain addresses and were left out.
    pub rejected: BTreeSet<String>,
}

/// The emails bound to `project` (UserProjectBinding `spec.projectID`) plus those of users
/// with `spec.admin`. Without a project only the admins are let in. Project service
/// accounts (`serviceaccount-...`, KKP's mark) are never let in: they cannot sign in.
pub fn allowed_emails<'a>(
    project: Option<&str>,
    bindings: impl IntoIterator<Item = &'a UserProjectBinding>,
    users: impl IntoIterator<Item = &'a User>,
) -> AllowedEmails {
    allowed_emails_with_groups(project, bindings, users, crate::grafana::users::Groups::default())
}

/// [`allowed_emails`] plus the Users whose `spec.groups` hold the group of a
/// GroupProjectBinding of `project` (any role).
pub fn allowed_emails_with_groups<'a>(
    project: Option<&str>,
    bindings: impl IntoIterator<Item = &'a UserProjectBinding>,
    users: impl IntoIterator<Item = &'a User>,
    groups: crate::grafana::users::Groups<'_>,
) -> AllowedEmails {
    let bound = bindings
        .into_iter()
        .filter(|b| project.is_some_and(|p| b.spec.project_id == p))
        .map(|b| b.spec.user_email.as_str());
    let users: Vec<&User> = users.into_iter().collect();
    let project_groups: Vec<&str> = groups
        .bindings
        .iter()
        .filter(|b| project.is_some_and(|p| b.spec.project_id == p) && b.metadata.deletion_timestamp.is_none())
        .map(|b| b.spec.group.as_str())
        .collect();
    let members = users.iter().filter(|u| {
        groups
            .members
            .and_then(|m| m.get(u.metadata.name.as_deref().unwrap_or_default()))
            .is_some_and(|of| of.iter().any(|g| project_groups.contains(&g.as_str())))
    });
    let members = members.map(|u| u.spec.email.as_str());
    let admins = users.iter().filter(|u| u.spec.admin).map(|u| u.spec.email.as_str());
    let mut allowed = AllowedEmails::default();
    for email in bound.chain(members).chain(admins).filter(|email| !crate::scope::is_service_account_email(email)) {
        if email_problem(email).is_some() {
            allowed.rejected.insert(email.to_string());
        } else {
            allowed.emails.insert(email.to_ascii_lowercase());
        }
    }
    allowed
}

/// oauth2-proxy's `--authenticated-emails-file`: one address per line.
pub fn emails_file(emails: &BTreeSet<String>) -> String {
    emails.iter().map(|email| format!("{email}\n")).collect()
}

/// A new cookie secret: 32 random bytes, URL-safe base64 (oauth2-proxy decodes it back to
/// 32 bytes, an AES-256 key).
pub fn generate_cookie_secret() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(rand::random::<[u8; 32]>())
}

/// Whether `value` is a cookie secret we would keep: it decodes to 32 bytes.
pub fn cookie_secret_is_usable(value: &str) -> bool {
    base64::engine::general_purpose::URL_SAFE.decode(value).is_ok_and(|bytes| bytes.len() == 32)
}

/// A string value of a Secret.
pub fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    secret?.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Labels every object of the IAP carries; also the Deployment's selector.
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.into(), IAP.into()), (MANAGED_BY_LABEL.into(), MANAGED_BY.into())])
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

/// The IAP Secret: the cluster's cookie secret and a copy of the OIDC client secret.
pub fn secret(namespace: &str, owner: &OwnerReference, cookie_secret: &str, client_secret: &[u8]) -> Secret {
    Secret {
        metadata: meta(IAP, namespace, owner),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (COOKIE_SECRET_KEY.to_string(), ByteString(cookie_secret.as_bytes().to_vec())),
            (CLIENT_SECRET_KEY.to_string(), ByteString(client_secret.to_vec())),
        ])),
        ..Default::default()
    }
}

/// The ConfigMap with the emails file.
pub fn emails_config_map(namespace: &str, owner: &OwnerReference, emails: &BTreeSet<String>) -> ConfigMap {
    ConfigMap {
        metadata: meta(EMAILS_CONFIG_MAP, namespace, owner),
        data: Some(BTreeMap::from([(EMAILS_KEY.to_string(), emails_file(emails))])),
        ..Default::default()
    }
}

/// oauth2-proxy's command line for the cluster in `namespace` reached as `host`.
pub fn args(settings: &IapSettings, namespace: &str, host: &str) -> Vec<String> {
    let upstream = format!("{}{ALERTMANAGER_PATH}", crate::gateway_read_url(namespace));
    vec![
        "--provider=oidc".into(),
        format!("--oidc-issuer-url={}", settings.issuer_url),
        format!("--client-id={}", settings.client_id),
        format!("--redirect-url=https://{host}/oauth2/callback"),
        format!("--upstream={upstream}"),
        format!("--http-address=0.0.0.0:{HTTP_PORT}"),
        format!("--authenticated-emails-file={EMAILS_DIR}/{EMAILS_KEY}"),
        "--cookie-name=_mla_iap".into(),
        "--cookie-secure=true".into(),
        "--reverse-proxy=true".into(),
        "--skip-provider-button=true".into(),
        format!("--ping-path={PING_PATH}"),
        "--silence-ping-logging=true".into(),
    ]
}

/// The oauth2-proxy Deployment. `client_secret_version` is the source client Secret's
/// resourceVersion: when it changes, the pods are replaced and read the new secret.
pub fn deployment(
    settings: &IapSettings,
    namespace: &str,
    owner: &OwnerReference,
    host: &str,
    client_secret_version: &str,
) -> Deployment {
    let secret_env = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: IAP.into(), key: key.into(), optional: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let probe = |period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(PING_PATH.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let quantity = |v: &str| Quantity(v.to_string());
    let container = Container {
        name: "oauth2-proxy".into(),
        image: Some(settings.image.clone()),
        args: Some(args(settings, namespace, host)),
        env: Some(vec![
            secret_env("OAUTH2_PROXY_CLIENT_SECRET", CLIENT_SECRET_KEY),
            secret_env("OAUTH2_PROXY_COOKIE_SECRET", COOKIE_SECRET_KEY),
        ]),
        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: HTTP_PORT, ..Default::default() }]),
        readiness_probe: Some(probe(5)),
        liveness_probe: Some(probe(10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), quantity("10m")), ("memory".into(), quantity("32Mi"))])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("128Mi"))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "emails".into(),
            mount_path: EMAILS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(IAP, namespace, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: LabelSelector { match_labels: Some(labels()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(BTreeMap::from([(
                        CLIENT_SECRET_VERSION_ANNOTATION.to_string(),
                        client_secret_version.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "emails".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: EMAILS_CONFIG_MAP.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service in front of the proxies: port 80 to oauth2-proxy.
pub fn service(namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(IAP, namespace, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Ingress publishing the proxy as `host`.
pub fn ingress(settings: &IapSettings, namespace: &str, owner: &OwnerReference, host: &str) -> Ingress {
    let mut metadata = meta(IAP, namespace, owner);
    if !settings.ingress_annotations.is_empty() {
        metadata.annotations = Some(settings.ingress_annotations.clone());
    }
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: settings.ingress_class.clone(),
            tls: settings
                .tls_secret
                .as_ref()
                .map(|secret| vec![IngressTLS { hosts: Some(vec![host.into()]), secret_name: Some(secret.clone()) }]),
            rules: Some(vec![IngressRule {
                host: Some(host.into()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: IAP.into(),
                                port: Some(ServiceBackendPort { name: Some("http".into()), number: None }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use mla_common::api::{UserProjectBindingSpec, UserSpec};

    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "kubermatic.k8c.io/v1".into(),
            kind: "Cluster".into(),
            name: "c1".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn binding(email: &str, project: &str) -> UserProjectBinding {
        UserProjectBinding::new(
            &format!("{project}-{}", email.len()),
            UserProjectBindingSpec {
                user_email: email.into(),
                project_id: project.into(),
                group: format!("editors-{project}"),
            },
        )
    }

    fn user(email: &str, admin: bool) -> User {
        User::new(email, UserSpec { email: email.into(), name: "n".into(), admin })
    }

    #[test]
    fn only_the_projects_members_and_admins_are_let_in() {
        let bindings = [
            binding("alice@example.com", "p1"),
            binding("Bob@Example.com", "p1"),
            binding("carol@example.com", "p2"),
            binding("alice@example.com", "p1"),
        ];
        let users = [user("root@example.com", true), user("carol@example.com", false)];
        let allowed = allowed_emails(Some("p1"), &bindings, &users);
        assert_eq!(
            emails_file(&allowed.emails),
            "alice@example.com\nbob@example.com\nroot@example.com\n",
            "lower-cased, sorted, once each; p2's carol out"
        );
        assert!(allowed.rejected.is_empty());
        let no_project = allowed_emails(None, &bindings, &users);
        assert_eq!(emails_file(&no_project.emails), "root@example.com\n");
    }

    #[test]
    fn hostile_emails_never_add_an_entry() {
        let hostile = [
            "mallory@example.com\nevil@attacker.example",
            "mallory@example.com\revil@attacker.example",
            "mallory@example.com,evil@attacker.example",
            "\"evil@attacker.example\"@example.com",
            "#evil@attacker.example",
            "evil@attacker.example ",
            " evil@attacker.example",
            "evil@attacker.example\u{0}",
            "évil@attacker.example",
            "evil@@attacker.example",
            "evil@attacker..example",
            "evil@",
            "@attacker.example",
            "no-at-sign",
        ];
        let mut bindings: Vec<_> = hostile.iter().map(|e| binding(e, "p1")).collect();
        bindings.push(binding("alice@example.com", "p1"));
        let allowed = allowed_emails(Some("p1"), &bindings, &[]);
        assert_eq!(emails_file(&allowed.emails), "alice@example.com\n");
        assert_eq!(allowed.rejected.len(), hostile.len());
        for email in ["o'brien+alerts@sub.example.co.uk", "a@localhost", "x_y-z.1@a-b.example"] {
            assert_eq!(email_problem(email), None, "{email}");
        }
    }

    proptest::proptest! {
        /// Whatever the bindings hold, each line of the file is one whole, plain binding
        /// value: nothing can split into two entries, start a comment or quote.
        #[test]
        fn no_binding_value_adds_an_entry(values in proptest::collection::vec(
            proptest::string::string_regex("[a-zA-Z0-9@.,#\"' \t\r\n\u{0}\u{2028}é+_-]{0,40}").expect("regex"),
            0..8,
        )) {
            let bindings: Vec<_> = values.iter().map(|v| binding(v, "p1")).collect();
            let allowed = allowed_emails(Some("p1"), &bindings, &[]);
            let file = emails_file(&allowed.emails);
            let inputs: BTreeSet<String> = values.iter().map(|v| v.to_ascii_lowercase()).collect();
            proptest::prop_assert_eq!(file.lines().count(), allowed.emails.len());
            for line in file.lines() {
                proptest::prop_assert!(inputs.contains(line), "{:?} is no binding value", line);
                proptest::prop_assert!(email_problem(line).is_none());
                proptest::prop_assert!(!line.contains([',', '"', '#', ' ', '\t', '\r']), "{:?}", line);
            }
            for value in &values {
                let kept = allowed.emails.contains(&value.to_ascii_lowercase());
                proptest::prop_assert!(kept != allowed.rejected.contains(value), "{:?} kept or rejected", value);
            }
        }
    }

    #[test]
    fn members_of_a_projects_groups_are_let_in() {
        use mla_common::api::{GroupProjectBinding, GroupProjectBindingSpec, GroupProjectRole, UserSpec};
        let user = |name: &str, email: &str| {
            User::new(name, UserSpec { email: email.into(), name: name.into(), admin: false })
        };
        let (ann, bob) = (user("ann", "ann@example.com"), user("bob", "bob@example.com"));
        let members = BTreeMap::from([
            ("ann".to_string(), vec!["sre".to_string()]),
            ("bob".to_string(), vec!["dev".to_string()]),
        ]);
        let sre = GroupProjectBinding::new(
            "p1-sre",
            GroupProjectBindingSpec { group: "sre".into(), project_id: "p1".into(), role: GroupProjectRole::Viewers },
        );
        let group_bindings = [&sre];
        let groups = crate::grafana::users::Groups { members: Some(&members), bindings: &group_bindings };
        let allowed = allowed_emails_with_groups(Some("p1"), &[], [&ann, &bob], groups);
        assert_eq!(emails_file(&allowed.emails), "ann@example.com\n");
        let other = allowed_emails_with_groups(Some("p2"), &[], [&ann, &bob], groups);
        assert!(other.emails.is_empty());
    }

    #[test]
    fn project_service_accounts_are_never_let_in() {
        let bindings = [binding("serviceaccount-7d4b5695vb@localhost", "p1"), binding("ann@example.com", "p1")];
        let allowed = allowed_emails(Some("p1"), &bindings, &[]);
        assert_eq!(emails_file(&allowed.emails), "ann@example.com\n");
        assert!(allowed.rejected.is_empty(), "left out, not reported as invalid");
    }

    #[test]
    fn every_line_of_the_file_is_a_plain_address() {
        let emails: BTreeSet<String> = ["a@example.com", "b.c+d@example.org"].iter().map(|s| s.to_string()).collect();
        let file = emails_file(&emails);
        assert_eq!(file.lines().count(), emails.len());
        assert!(file.lines().all(|line| email_problem(line).is_none() && !line.contains(',')));
        assert_eq!(emails_file(&BTreeSet::new()), "", "nobody is let in by an empty file");
    }

    #[test]
    fn the_host_comes_from_the_template() {
        let settings = IapSettings { domain: "iap.example.com".into(), ..IapSettings::default() };
        assert_eq!(host(&settings, "x7k2m9").as_deref(), Ok("alertmanager.x7k2m9.iap.example.com"));
        let custom = IapSettings { host_template: "am-{cluster}.{domain}".into(), ..settings.clone() };
        assert_eq!(host(&custom, "c1").as_deref(), Ok("am-c1.iap.example.com"));
        assert!(host(&settings, "Bad_Name").is_err());
        assert!(host(&settings, "a/b").is_err());
        assert!(host(&settings, &"a".repeat(64)).is_err());
    }

    #[test]
    fn the_proxy_authenticates_against_the_issuer_and_forwards_to_the_gateway() {
        let settings = IapSettings::default();
        let d = deployment(&settings, "cluster-c1", &owner(), "alertmanager.c1.example.com", "42");
        let pod = d.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec");
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap_or_default();
        for expected in [
            "--provider=oidc",
            "--oidc-issuer-url=https://kkp.example.com/dex",
            "--client-id=mla-iap",
            "--redirect-url=https://alertmanager.c1.example.com/oauth2/callback",
            "--upstream=http://mla-gateway.cluster-c1.svc.cluster.local/api/prom/alertmanager/",
            "--authenticated-emails-file=/etc/oauth2-proxy/emails/authenticated-emails",
            "--ping-path=/ping",
            "--cookie-secure=true",
        ] {
            assert!(args.contains(&expected.to_string()), "{expected} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--email-domain")), "no domain-wide admission: {args:?}");
        let security = container.security_context.clone().expect("security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let probe_path = |p: &Option<Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
        assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/ping"));
        assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/ping"));
        // Secrets reach the process through the environment, never the command line.
        assert!(!args.iter().any(|a| a.contains("secret")), "{args:?}");
        let env: Vec<_> = container.env.clone().unwrap_or_default().into_iter().map(|e| e.name).collect();
        assert_eq!(env, ["OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"]);
        // The emails directory is mounted whole, so the kubelet can update it in place.
        let mount = &container.volume_mounts.clone().unwrap_or_default()[0];
        assert_eq!((mount.mount_path.as_str(), mount.sub_path.as_deref()), (EMAILS_DIR, None));
        // Only a client secret rotation changes the pod template.
        let again = deployment(&settings, "cluster-c1", &owner(), "alertmanager.c1.example.com", "42");
        let rotated = deployment(&settings, "cluster-c1", &owner(), "alertmanager.c1.example.com", "43");
        assert_eq!(d, again);
        assert_ne!(d.spec.map(|s| s.template), rotated.spec.map(|s| s.template));
    }

    #[test]
    fn the_ingress_publishes_the_host_with_the_class_and_optional_tls() {
        let settings = IapSettings::default();
        let plain = ingress(&settings, "cluster-c1", &owner(), "alertmanager.c1.example.com");
        let spec = plain.spec.clone().expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(spec.tls, None);
        let rule = &spec.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("alertmanager.c1.example.com"));
        let backend = rule.http.as_ref().expect("http").paths[0].backend.service.clone().expect("service");
        assert_eq!(backend.name, IAP);
        assert_eq!(plain.metadata.owner_references, Some(vec![owner()]));

        let with_tls = IapSettings {
            tls_secret: Some("iap-tls".into()),
            ingress_class: None,
            ingress_annotations: BTreeMap::from([("cert-manager.io/cluster-issuer".into(), "letsencrypt".into())]),
            ..settings
        };
        let tls = ingress(&with_tls, "cluster-c1", &owner(), "alertmanager.c1.example.com");
        let spec = tls.spec.expect("spec");
        assert_eq!(spec.ingress_class_name, None);
        let entry = &spec.tls.expect("tls")[0];
        assert_eq!(entry.secret_name.as_deref(), Some("iap-tls"));
        assert_eq!(entry.hosts, Some(vec!["alertmanager.c1.example.com".to_string()]));
        assert_eq!(tls.metadata.annotations.expect("annotations")["cert-manager.io/cluster-issuer"], "letsencrypt");
    }

    #[test]
    fn cookie_secrets_are_random_32_byte_keys() {
        let a = generate_cookie_secret();
        let b = generate_cookie_secret();
        assert_ne!(a, b);
        assert!(cookie_secret_is_usable(&a) && cookie_secret_is_usable(&b));
        assert!(!cookie_secret_is_usable("short"));
        assert!(!cookie_secret_is_usable(""));
        let s = secret("cluster-c1", &owner(), &a, b"client");
        let data = s.data.expect("data");
        assert_eq!(data[COOKIE_SECRET_KEY].0, a.as_bytes());
        assert_eq!(data[CLIENT_SECRET_KEY].0, b"client");
    }
}

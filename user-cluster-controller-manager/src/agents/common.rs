//! What the agents' builders share: the namespace, labels, input validation (cluster name,
//! gateway URL), the client certificate paths, the config hash and the certificates Secret.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Namespace, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mla_common::pki::CertifiedKeyPem;

/// Namespace of the agents in the user cluster.
pub const NAMESPACE: &str = "mla-system";
/// Pod template annotation carrying a hash of the agent's configuration: a change rolls
/// the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "mla.k8c.io/config-hash";
/// Client certificate in an agent's certificates Secret.
pub const CLIENT_CERT_KEY: &str = "client.crt";
/// Its private key.
pub const CLIENT_KEY_KEY: &str = "client.key";
/// CA certificates the agent verifies the gateway with (the cluster CA's trust bundle).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Where an agent's certificates Secret is mounted (as KKP mounts it).
pub const CERTIFICATES_DIR: &str = "/etc/ssl/mla";

pub(crate) const APP_LABEL: &str = "app.kubernetes.io/name";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "user-cluster-controller-manager";

/// Why an agent's configuration could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An input is not acceptable in the configuration.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Which input, e.g. `cluster name`, `gateway URL`, `scrape interval`.
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// serde_yaml could not write the configuration (a bug: every value is a plain tree).
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Files an agent authenticates to the gateway with, and verifies it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// CA bundle the gateway's serving certificate must chain to.
    pub ca_file: String,
    /// The agent's client certificate.
    pub cert_file: String,
    /// Its private key.
    pub key_file: String,
}

impl TlsPaths {
    /// The keys of a certificates Secret mounted at `dir`.
    pub fn in_dir(dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        Self {
            ca_file: format!("{dir}/{CA_CERT_KEY}"),
            cert_file: format!("{dir}/{CLIENT_CERT_KEY}"),
            key_file: format!("{dir}/{CLIENT_KEY_KEY}"),
        }
    }

    pub(crate) fn validated(&self) -> Result<Self, ConfigError> {
        Ok(Self {
            ca_file: validate_path("CA file", &self.ca_file)?,
            cert_file: validate_path("certificate file", &self.cert_file)?,
            key_file: validate_path("key file", &self.key_file)?,
        })
    }
}

impl Default for TlsPaths {
    fn default() -> Self {
        Self::in_dir(CERTIFICATES_DIR)
    }
}

/// Labels every object of agent `app` carries; also its pods' selector.
pub fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(APP_LABEL.into(), app.into()), (MANAGED_BY_LABEL.into(), MANAGED_BY.into())])
}

/// Metadata of a namespaced object of agent `app` in [`NAMESPACE`].
pub(crate) fn meta(name: &str, app: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some(NAMESPACE.into()), ..cluster_meta(name, app) }
}

/// Metadata of a cluster-scoped object of agent `app`.
pub(crate) fn cluster_meta(name: &str, app: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), labels: Some(labels(app)), ..Default::default() }
}

/// The agents' namespace. Pod Security admission must allow it `privileged`: the log
/// agent mounts the nodes' log directories (hostPath) and reads them as root, which the
/// `baseline` and `restricted` levels refuse.
pub fn namespace() -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.into(), MANAGED_BY.into()),
                ("pod-security.kubernetes.io/enforce".into(), "privileged".into()),
            ])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An agent's certificates Secret (`name`, e.g. `prometheus-certificates`): its client
/// certificate and key, and the CA bundle it verifies the gateway with.
pub fn certificates_secret(name: &str, app: &str, client: &CertifiedKeyPem, ca_bundle: &str) -> Secret {
    let data =
        [(CLIENT_CERT_KEY, &client.cert_pem), (CLIENT_KEY_KEY, &client.key_pem), (CA_CERT_KEY, &ca_bundle.into())]
            .into_iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
            .collect();
    Secret { metadata: meta(name, app), type_: Some("Opaque".into()), data: Some(data), ..Default::default() }
}

/// A Secret volume readable by the pod's user (mode 0440: the owner is root and the group
/// is the pod's fsGroup).
pub(crate) fn secret_volume(volume: &str, secret: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container security context: no privilege escalation, no capabilities, read-only root.
pub(crate) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// `overrides` when the Cluster sets any request or limit, else `defaults`.
pub(crate) fn resources_or(
    overrides: Option<&ResourceRequirements>,
    defaults: ResourceRequirements,
) -> ResourceRequirements {
    match overrides {
        Some(r)
            if r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty()) =>
        {
            r.clone()
        }
        _ => defaults,
    }
}

/// A short, stable hash of a configuration for [`CONFIG_HASH_ANNOTATION`].
pub fn config_hash(config: &str) -> String {
    mla_common::validation::config_hash(config)
}

/// A DNS-1123 label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
pub fn validate_cluster_name(value: &str) -> Result<&str, ConfigError> {
    validate_dns_label("cluster name", value)
}

/// `value` of `field` if it is a DNS-1123 label.
pub fn validate_dns_label<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ConfigError> {
    match mla_common::validation::dns_label_problem(value) {
        None => Ok(value),
        Some(reason) => Err(ConfigError::Invalid { field, value: value.to_string(), reason }),
    }
}

/// `https://host[:port]` with an optional trailing `/` and nothing else (no path, query,
/// user); returned in canonical form (lower case, no trailing `/`). Host is a DNS name, an
/// IPv4 address or a bracketed IPv6 address.
pub fn validate_gateway_url(url: &str) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::Invalid { field: "gateway URL", value: url.to_string(), reason };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("must be https://host[:port]"))?;
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid("scheme must be https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let authority =
        host_port(authority).ok_or_else(|| invalid("must be https://host[:port] without path, query or user"))?;
    Ok(format!("https://{authority}"))
}

/// `host`, `host:port`, `[ipv6]` or `[ipv6]:port` in canonical form, or `None`.
fn host_port(value: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(&host) {
            return None;
        }
        (host, port)
    };
    match port {
        None => Some(host),
        Some(port) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            Some(format!("{host}:{port}"))
        }
    }
}

/// Lower-case DNS name: dot-separated labels of `a-z0-9-`, not starting or ending with `-`.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An absolute file path of `A-Za-z0-9._/-` only.
pub(crate) fn validate_path(field: &'static str, value: &str) -> Result<String, ConfigError> {
    if !value.starts_with('/') || !mla_common::validation::is_plain_path(value) {
        return Err(ConfigError::Invalid {
            field,
            value: value.to_string(),
            reason: "must be an absolute path of letters, digits, '.', '_', '/' and '-'",
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for bad in ["", "ABC", "abc;", "a b", "-abc", "abc-", "a.b", "x\n}", &"a".repeat(64)] {
            assert!(validate_cluster_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "abc-123", &"a".repeat(63)] {
            assert_eq!(validate_cluster_name(good).expect(good), good);
        }
    }

    #[test]
    fn gateway_urls() {
        let ok = [
            ("https://mla-gateway.c1.example.com:30443", "https://mla-gateway.c1.example.com:30443"),
            ("HTTPS://Gateway.Example.:443/", "https://gateway.example:443"),
            ("https://10.0.0.1", "https://10.0.0.1"),
            ("https://[fd00:0::1]:8080", "https://[fd00::1]:8080"),
        ];
        for (input, want) in ok {
            assert_eq!(validate_gateway_url(input).expect(input), want);
        }
        let bad = [
            "",
            "gateway:443",
            "http://gateway",
            "https://",
            "https://gateway:0",
            "https://gateway:65536",
            "https://gateway:+1",
            "https://gateway/api",
            "https://gateway:443/api/v1/push",
            "https://user@gateway",
            "https://gateway?x=1",
            "https://gateway#x",
            "https://gate way",
            "https://gate_way",
            "https://[::1",
            "https://g\u{e4}teway",
            "https://gateway\n",
            "https://-gateway",
        ];
        for input in bad {
            assert!(validate_gateway_url(input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn paths() {
        assert!(validate_path("p", "/etc/ssl/mla/ca.crt").is_ok());
        for bad in ["", "relative/ca.crt", "/etc/ssl/ca.crt\n", "/etc/${HOME}", "/a b"] {
            assert!(validate_path("p", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn config_hash_is_stable_and_sensitive() {
        assert_eq!(config_hash("a"), config_hash("a"));
        assert_ne!(config_hash("a"), config_hash("b"));
        assert_eq!(config_hash("").len(), 16);
    }

    #[test]
    fn resources_default_only_when_nothing_is_set() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let defaults = ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
            ..Default::default()
        };
        let empty = ResourceRequirements::default();
        assert_eq!(resources_or(None, defaults.clone()), defaults);
        assert_eq!(resources_or(Some(&empty), defaults.clone()), defaults);
        let custom = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("1".into()))])),
            ..Default::default()
        };
        assert_eq!(resources_or(Some(&custom), defaults), custom);
    }
}

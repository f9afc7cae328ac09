//! The identity-aware proxy (IAP) in front of each cluster's Alertmanager UI: oauth2-proxy
//! per MLA-enabled Cluster, signing people in at the platform's OIDC issuer and letting in
//! only the emails bound to the cluster's project plus the platform admins.

pub mod controller;
pub mod resources;

use std::collections::BTreeMap;
use std::future::Future;

use mla_common::runtime::Runtime;
use mla_common::validation::dns_label_problem;

use crate::SeedSettings;
use resources::IapSettings;

/// Flags of this controller. Without `--iap-oidc-issuer-url` the IAP is off and nothing is
/// made.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "iap")] // every controller's flags are a struct named `Args`: ids must differ
pub struct Args {
    /// OIDC issuer the IAPs sign people in at (the platform's Dex); without it no IAP is
    /// made.
    #[arg(long, env = "MLA_IAP_OIDC_ISSUER_URL")]
    pub iap_oidc_issuer_url: Option<String>,
    /// OIDC client ID of the IAPs.
    #[arg(long, env = "MLA_IAP_OIDC_CLIENT_ID", default_value = "mla-iap")]
    pub iap_oidc_client_id: String,
    /// Secret in --mla-namespace holding the OIDC client secret.
    #[arg(long, env = "MLA_IAP_OIDC_CLIENT_SECRET_NAME", default_value = "mla-iap-oidc")]
    pub iap_oidc_client_secret_name: String,
    /// Key of the client secret in that Secret.
    #[arg(long, env = "MLA_IAP_OIDC_CLIENT_SECRET_KEY", default_value = "client-secret")]
    pub iap_oidc_client_secret_key: String,
    /// Domain the IAP hosts live under (`{domain}` in --iap-host-template).
    #[arg(long, env = "MLA_IAP_DOMAIN")]
    pub iap_domain: Option<String>,
    /// Host name of a cluster's IAP; `{cluster}` is the cluster's name, `{domain}` is
    /// --iap-domain.
    #[arg(long, env = "MLA_IAP_HOST_TEMPLATE", default_value = "alertmanager.{cluster}.{domain}")]
    pub iap_host_template: String,
    /// IngressClass of the IAP Ingresses; empty for the cluster's default class.
    #[arg(long, env = "MLA_IAP_INGRESS_CLASS", default_value = "nginx")]
    pub iap_ingress_class: String,
    /// Secret in each cluster namespace with the TLS certificate of the IAP host (for
    /// example one cert-manager issues through --iap-ingress-annotation); without it the
    /// Ingress has no TLS section and the ingress controller's default certificate serves.
    #[arg(long, env = "MLA_IAP_TLS_SECRET")]
    pub iap_tls_secret: Option<String>,
    /// Extra annotation of every IAP Ingress, as KEY=VALUE; repeatable.
    #[arg(long = "iap-ingress-annotation", env = "MLA_IAP_INGRESS_ANNOTATIONS", value_delimiter = ',', value_parser = parse_annotation)]
    pub iap_ingress_annotations: Vec<(String, String)>,
    /// oauth2-proxy image.
    #[arg(long, env = "MLA_IAP_IMAGE", default_value = "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6")]
    pub iap_image: String,
    /// Replicas of each IAP.
    #[arg(long, env = "MLA_IAP_REPLICAS", default_value_t = 1)]
    pub iap_replicas: i32,
}

fn parse_annotation(value: &str) -> Result<(String, String), String> {
    let (key, value) = value.split_once('=').ok_or_else(|| format!("{value:?} is not KEY=VALUE"))?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b)) {
        return Err(format!("{key:?} is not an annotation key"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Where the client secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSecretSource {
    /// Namespace (the mla namespace).
    pub namespace: String,
    /// Secret name.
    pub name: String,
    /// Key.
    pub key: String,
}

fn plain_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

fn is_secret_key(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(|label| dns_label_problem(label).is_none())
}

impl Args {
    /// The settings of a configured IAP; `Ok(None)` when no issuer is set (the IAP is off),
    /// an error naming the flag when a flag is unusable.
    pub fn settings(&self, mla_namespace: &str) -> anyhow::Result<Option<(IapSettings, ClientSecretSource)>> {
        let Some(issuer_url) = self.iap_oidc_issuer_url.clone().filter(|u| !u.is_empty()) else { return Ok(None) };
        anyhow::ensure!(
            plain_value(&issuer_url) && (issuer_url.starts_with("https://") || issuer_url.starts_with("http://")),
            "--iap-oidc-issuer-url must be an http(s) URL without spaces"
        );
        anyhow::ensure!(plain_value(&self.iap_oidc_client_id), "--iap-oidc-client-id must be set, without spaces");
        anyhow::ensure!(
            is_dns_subdomain(&self.iap_oidc_client_secret_name),
            "--iap-oidc-client-secret-name must be a Secret name"
        );
        anyhow::ensure!(
            is_secret_key(&self.iap_oidc_client_secret_key),
            "--iap-oidc-client-secret-key must be a Secret key"
        );
        anyhow::ensure!(plain_value(&self.iap_image), "--iap-image must be set, without spaces");
        anyhow::ensure!(self.iap_replicas >= 1, "--iap-replicas must be at least 1");
        anyhow::ensure!(
            self.iap_host_template.contains("{cluster}"),
            "--iap-host-template must contain {{cluster}}: every cluster needs its own host"
        );
        let domain = self.iap_domain.clone().unwrap_or_default();
        anyhow::ensure!(
            !self.iap_host_template.contains("{domain}") || is_dns_subdomain(&domain),
            "--iap-domain must be a DNS name (the host template uses {{domain}})"
        );
        let ingress_class = Some(self.iap_ingress_class.clone()).filter(|c| !c.is_empty());
        anyhow::ensure!(
            ingress_class.as_deref().is_none_or(is_dns_subdomain),
            "--iap-ingress-class must be an IngressClass name"
        );
        anyhow::ensure!(
            self.iap_tls_secret.as_deref().is_none_or(is_dns_subdomain),
            "--iap-tls-secret must be a Secret name"
        );
        let settings = IapSettings {
            issuer_url,
            client_id: self.iap_oidc_client_id.clone(),
            image: self.iap_image.clone(),
            replicas: self.iap_replicas,
            host_template: self.iap_host_template.clone(),
            domain,
            ingress_class,
            tls_secret: self.iap_tls_secret.clone(),
            ingress_annotations: self.iap_ingress_annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
        };
        // A template that cannot make a host for a typical cluster name is refused now
        // rather than on every Cluster.
        resources::host(&settings, "abcdefghij").map_err(|e| anyhow::anyhow!("--iap-host-template: {e}"))?;
        let source = ClientSecretSource {
            namespace: mla_namespace.to_string(),
            name: self.iap_oidc_client_secret_name.clone(),
            key: self.iap_oidc_client_secret_key.clone(),
        };
        Ok(Some((settings, source)))
    }
}

/// Checks the flags and returns the controller, running until shutdown. Without an issuer
/// the IAP is off: it says so once and the returned future does nothing (and needs none of
/// the IAP's RBAC).
pub fn start(
    runtime: &Runtime,
    seed: &SeedSettings,
    args: &Args,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let configured = args.settings(&seed.mla_namespace)?;
    let controller = match configured {
        Some((settings, source)) => Some(controller::run(runtime, seed, settings, source)),
        None => {
            tracing::info!(
                "the Alertmanager IAP is not configured (no --iap-oidc-issuer-url): no IAP is made for any cluster"
            );
            None
        }
    };
    Ok(async move {
        if let Some(controller) = controller {
            controller.await;
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        iap: Args,
    }

    fn parse(args: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).expect("parses").iap
    }

    #[test]
    fn without_an_issuer_the_iap_is_off() {
        assert_eq!(parse(&[]).settings("mla").expect("valid").map(|s| s.0), None);
    }

    #[test]
    fn a_configured_iap_uses_its_flags() {
        let args = parse(&[
            "--iap-oidc-issuer-url=https://kkp.example.com/dex",
            "--iap-domain=iap.example.com",
            "--iap-tls-secret=iap-tls",
            "--iap-ingress-annotation=cert-manager.io/cluster-issuer=letsencrypt",
        ]);
        let (settings, source) = args.settings("mla").expect("valid").expect("configured");
        assert_eq!(settings.issuer_url, "https://kkp.example.com/dex");
        assert_eq!(resources::host(&settings, "c1").as_deref(), Ok("alertmanager.c1.iap.example.com"));
        assert_eq!(settings.ingress_annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
        assert_eq!(settings.tls_secret.as_deref(), Some("iap-tls"));
        assert_eq!(
            source,
            ClientSecretSource { namespace: "mla".into(), name: "mla-iap-oidc".into(), key: "client-secret".into() }
        );
    }

    #[test]
    fn bad_flags_are_refused_at_start() {
        let issuer = "--iap-oidc-issuer-url=https://kkp.example.com/dex";
        for bad in [
            vec!["--iap-oidc-issuer-url=ftp://x"],
            vec!["--iap-oidc-issuer-url=https://a b"],
            vec![issuer],
            vec![issuer, "--iap-domain=bad domain"],
            vec![issuer, "--iap-domain=x.example.com", "--iap-host-template=alertmanager.{domain}"],
            vec![issuer, "--iap-domain=x.example.com", "--iap-replicas=0"],
            vec![issuer, "--iap-domain=x.example.com", "--iap-oidc-client-secret-key=a/b"],
        ] {
            assert!(parse(&bad).settings("mla").is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["test", "--iap-ingress-annotation=novalue"]).is_err());
    }
}

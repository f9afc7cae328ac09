//! Grafana for the platform's users: an organization per Project, users and roles from
//! UserProjectBindings, datasources per MLA Cluster, a superuser organization with every
//! cluster's datasources, and dashboards from ConfigMaps. See `docs/grafana.md`.

pub mod client;
pub mod controller;
mod dashboard_pass;
pub mod dashboards;
mod datasource_pass;
pub mod datasources;
mod member_pass;
pub mod orgs;
mod release;
pub mod users;

use std::future::Future;
use std::time::Duration;

use mla_common::cli::parse_duration;
use mla_common::runtime::Runtime;

use crate::SeedSettings;

/// Flags of this controller.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "grafana")]
#[command(next_help_heading = "Grafana")]
pub struct Args {
    /// Grafana's base URL; default `http://grafana.<mla namespace>.svc.cluster.local`.
    #[arg(long, env = "MLA_GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// Secret in the MLA namespace with Grafana's `admin-user` and `admin-password`.
    #[arg(long, env = "MLA_GRAFANA_SECRET", default_value = "grafana")]
    pub grafana_secret: String,
    /// Timeout of each Grafana request.
    #[arg(long, env = "MLA_GRAFANA_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub grafana_timeout: Duration,
    /// Organization holding every cluster's datasources, for the platform team; empty: none.
    #[arg(long, env = "MLA_GRAFANA_SUPERUSER_ORG", default_value = "mla-superuser")]
    pub grafana_superuser_org: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            grafana_url: None,
            grafana_secret: "grafana".into(),
            grafana_timeout: Duration::from_secs(10),
            grafana_superuser_org: "mla-superuser".into(),
        }
    }
}

/// Checks the flags and returns the controller, running until shutdown.
pub fn start(
    runtime: &Runtime,
    seed: &SeedSettings,
    args: &Args,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let url =
        args.grafana_url.clone().unwrap_or_else(|| format!("http://grafana.{}.svc.cluster.local", seed.mla_namespace));
    let parsed = reqwest::Url::parse(&url).map_err(|e| anyhow::anyhow!("invalid --grafana-url {url:?}: {e}"))?;
    anyhow::ensure!(matches!(parsed.scheme(), "http" | "https"), "--grafana-url must be http or https");
    anyhow::ensure!(!args.grafana_timeout.is_zero(), "--grafana-timeout must be positive");
    let superuser_org = Some(args.grafana_superuser_org.trim().to_string()).filter(|n| !n.is_empty());
    let settings = controller::Settings {
        mla_enabled: seed.mla_enabled,
        scope: seed.scope.clone(),
        mla_namespace: seed.mla_namespace.clone(),
        url,
        secret: args.grafana_secret.clone(),
        timeout: args.grafana_timeout,
        superuser_org,
        resync_period: seed.resync_period,
    };
    controller::run(runtime, settings, seed.external.clone())
}

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
    /// Grafana calls (and the Kubernetes writes of the same steps) a pass keeps in flight
    /// at once: one org's, user's or datasource's step each.
    #[arg(long, env = "MLA_GRAFANA_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub grafana_concurrency: usize,
}

/// Default of `--grafana-concurrency`: enough to keep a Grafana on the same network busy
/// (each call is a round trip) without flooding one backed by SQLite, which serialises
/// writes anyway.
pub const DEFAULT_CONCURRENCY: usize = 16;

impl Default for Args {
    fn default() -> Self {
        Self {
            grafana_url: None,
            grafana_secret: "grafana".into(),
            grafana_timeout: Duration::from_secs(10),
            grafana_superuser_org: "mla-superuser".into(),
            grafana_concurrency: DEFAULT_CONCURRENCY,
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
    anyhow::ensure!(args.grafana_concurrency >= 1, "--grafana-concurrency must be at least 1");
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
        concurrency: args.grafana_concurrency,
    };
    controller::run(runtime, settings, seed.external.clone())
}

//! Command-line arguments every binary shares, flattened into each binary's own `Args`.
//! Every flag has an environment variable fallback so a Deployment can set either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,kube=debug`.
    #[arg(long = "log-level", env = "MLA_LOG_LEVEL", default_value = "info")]
    pub level: String,
    /// Log format.
    #[arg(long = "log-format", env = "MLA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub format: LogFormat,
}

/// Admin server flags.
#[derive(Clone, Debug, Args)]
pub struct AdminArgs {
    /// Address of the admin server serving /livez, /readyz and /metrics.
    #[arg(long = "admin-addr", env = "MLA_ADMIN_ADDR", default_value = "0.0.0.0:8085")]
    pub addr: SocketAddr,
}

/// Flags choosing the Kubernetes API server this binary works against.
#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// Kubeconfig file; without it the in-cluster configuration is used (or
    /// ~/.kube/config outside a cluster).
    #[arg(long = "kubeconfig", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use instead of its current context.
    #[arg(long = "kube-context", env = "MLA_KUBE_CONTEXT")]
    pub context: Option<String>,
}

/// Leader election flags.
#[derive(Clone, Debug, Args)]
pub struct LeaderElectionArgs {
    /// Take part in leader election; without it this replica always leads (run one only).
    #[arg(
        long = "leader-elect",
        env = "MLA_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub enabled: bool,
    /// Name of the Lease; defaults to the binary's name.
    #[arg(long = "leader-election-lease-name", env = "MLA_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease; defaults to the pod's namespace (POD_NAMESPACE), else
    /// `kube-system`.
    #[arg(long = "leader-election-namespace", env = "MLA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a lease is valid without renewal; a new leader takes over at most this
    /// long after the old one stops renewing.
    #[arg(
        long = "leader-election-lease-duration",
        env = "MLA_LEASE_DURATION",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership and exits.
    #[arg(
        long = "leader-election-renew-deadline",
        env = "MLA_LEASE_RENEW_DEADLINE",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew the lease.
    #[arg(
        long = "leader-election-retry-period",
        env = "MLA_LEASE_RETRY_PERIOD",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub retry_period: Duration,
    /// Identity of this replica in the lease; defaults to POD_NAME, else the host name
    /// with a random suffix.
    #[arg(long = "leader-election-identity", env = "MLA_LEASE_IDENTITY")]
    pub identity: Option<String>,
}

/// The flags every binary has, in one struct to flatten.
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// Parses `500ms`, `15s`, `2m`, `1h30m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("invalid duration {value:?}: {e}"))
}

/// Parses a namespace name (a DNS-1123 label), for flags naming namespaces.
pub fn parse_namespace(value: &str) -> Result<String, String> {
    match crate::validation::dns_label_problem(value) {
        None => Ok(value.to_string()),
        Some(problem) => Err(format!("namespace {value:?} {problem}")),
    }
}

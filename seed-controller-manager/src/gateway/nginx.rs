//! The `nginx.conf` of a cluster's MLA gateway (DESIGN.md, "Gateway contract"), rendered by
//! a pure function from the cluster's name, its MLAAdminSetting, the upstream URLs and the
//! deployment's paths and ports.
//!
//! Every value that reaches the file is validated first and written from its parsed form:
//! the tenant is a DNS-1123 label, upstreams are `http(s)://host[:port]`, limits are
//! integers, paths are plain. No input can add a directive, a location or a server.
//!
//! The read server's routes follow KKP's gateway (`/api/prom/...`, `/loki/api/...`, the
//! Alertmanager and ruler routes), with two additions: `/api/prom/rules` (Cortex ruler
//! configuration API) and `/loki/api/v1/rules` (Loki ruler configuration API) go to the
//! rulers instead of the query frontends, which do not serve them.
//!
//! Each backend is an `upstream` group with idle keep-alive connections (HTTP/1.1,
//! `Connection ""`): a request does not pay for a new TCP connection to Cortex or Loki. A
//! DNS name in a group is a `server ... resolve` (nginx >= 1.27.3, which the gateway image
//! has): nginx resolves it with the configured `resolver` while it runs, again after each
//! `valid` period, so a Service whose ClusterIP changes (deleted and made again) is
//! followed without a restart, and nginx starts even while a backend's Service does not
//! resolve yet. `proxy_pass` names the group in a URL with variables (`$request_uri`),
//! which nginx looks up among the groups first.
//!
//! Certificates are read from fixed paths ([`GatewayPaths`]): nginx re-reads the certificate,
//! key and client CA bundle on `nginx -s reload`, which replaces the workers gracefully
//! (open connections finish on the old ones), so a renewed certificate or a CA rotation
//! needs a reload, not a restart and not a new config.
//!
//! Everything nginx writes goes to `pid` and `temp_dir` (an emptyDir on the read-only root
//! file system) or to stderr/stdout; start it with `-e stderr` so that it does not try to
//! open its compiled-in error log before reading this file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use mla_common::api::MLAAdminSettingSpec;

const TEMPLATE: &str = include_str!("nginx.conf.tmpl");

/// Why the gateway's configuration could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// An input is not acceptable in the configuration.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Which input, e.g. `cluster name`, `cortex-distributor upstream URL`,
        /// `spec.loggingRateLimits.ingestionRate`.
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The template refers to a value the renderer does not provide (a bug, caught by tests).
    #[error("nginx.conf template: unknown placeholder {0:?}")]
    Template(String),
}

/// Base URLs (`http(s)://host[:port]`, no path) of the backends the gateway forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams {
    /// Receives `POST /api/v1/push` (Prometheus remote write).
    pub cortex_distributor: String,
    /// Receives `POST /loki/api/v1/push`.
    pub loki_distributor: String,
    /// Serves `/api/prom/...` queries.
    pub cortex_query_frontend: String,
    /// Serves `/loki/api/...` queries.
    pub loki_query_frontend: String,
    /// Serves the Alertmanager UI and API and the tenant's Alertmanager configuration.
    pub cortex_alertmanager: String,
    /// Serves Cortex rules and rule groups.
    pub cortex_ruler: String,
    /// Serves Loki rules and rule groups.
    pub loki_ruler: String,
}

impl Upstreams {
    /// Every backend at one base URL (a test or benchmark backend that records everything).
    pub fn all(url: &str) -> Self {
        Self {
            cortex_distributor: url.into(),
            loki_distributor: url.into(),
            cortex_query_frontend: url.into(),
            loki_query_frontend: url.into(),
            cortex_alertmanager: url.into(),
            cortex_ruler: url.into(),
            loki_ruler: url.into(),
        }
    }

    /// The Services of the shared MLA stack in `namespace` (full names, as nginx's resolver
    /// does not apply search domains).
    pub fn in_namespace(namespace: &str) -> Self {
        let url = |service: &str, port: u16| format!("http://{service}.{namespace}.svc.cluster.local:{port}");
        Self {
            cortex_distributor: url("cortex-distributor", 8080),
            loki_distributor: url("loki-distributed-distributor", 3100),
            cortex_query_frontend: url("cortex-query-frontend", 8080),
            loki_query_frontend: url("loki-distributed-query-frontend", 3100),
            cortex_alertmanager: url("cortex-alertmanager", 8080),
            cortex_ruler: url("cortex-ruler", 8080),
            loki_ruler: url("loki-distributed-ruler", 3100),
        }
    }
}

/// Files nginx reads and writes. The defaults are where the gateway's Deployment mounts
/// them; the pod's root file system is read-only, so `pid` and `temp_dir` must be on a
/// writable volume (an emptyDir at `/tmp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPaths {
    /// Serving certificate (`gateway.crt` of the Secret `mla-gateway-certificates`).
    pub certificate: String,
    /// Its key (`gateway.key`).
    pub certificate_key: String,
    /// CA certificates that client certificates must chain to: the trust bundle of the
    /// cluster's CA (current and, during a rotation, previous CA).
    pub client_ca_bundle: String,
    /// nginx's pid file.
    pub pid: String,
    /// Directory for request and response buffers.
    pub temp_dir: String,
}

impl Default for GatewayPaths {
    fn default() -> Self {
        Self {
            certificate: "/etc/ssl/mla-gateway/gateway.crt".into(),
            certificate_key: "/etc/ssl/mla-gateway/gateway.key".into(),
            client_ca_bundle: "/etc/ssl/mla-gateway/ca-bundle.crt".into(),
            pid: "/tmp/nginx.pid".into(),
            temp_dir: "/tmp".into(),
        }
    }
}

/// How the gateway process runs: listen ports, DNS resolver and file paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayServer {
    /// Port of the write server (TLS, client certificates).
    pub write_port: u16,
    /// Port of the read server (plain HTTP, seed-internal).
    pub read_port: u16,
    /// DNS server that resolves upstream names (`host` or `host:port`); `None` when every
    /// upstream is an IP address.
    pub resolver: Option<String>,
    /// Files.
    pub paths: GatewayPaths,
}

impl Default for GatewayServer {
    fn default() -> Self {
        Self {
            write_port: 8080,
            read_port: 8081,
            resolver: Some("kube-dns.kube-system.svc.cluster.local".into()),
            paths: GatewayPaths::default(),
        }
    }
}

/// A request-rate limit: requests per second and burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limit {
    rate: u32,
    burst: u32,
}

/// Renders `nginx.conf` for the gateway of cluster `cluster_name` (the tenant), with the
/// limits of `settings` (absent or zero: no limit) and the given upstreams and server
/// settings.
pub fn render(
    cluster_name: &str,
    settings: Option<&MLAAdminSettingSpec>,
    upstreams: &Upstreams,
    server: &GatewayServer,
) -> Result<String, RenderError> {
    let tenant = validate_label("cluster name", cluster_name)?;
    if server.write_port == 0 || server.read_port == 0 || server.write_port == server.read_port {
        return Err(RenderError::Invalid {
            field: "listen ports",
            value: format!("{}/{}", server.write_port, server.read_port),
            reason: "write and read port must be different and not 0",
        });
    }
    let paths = &server.paths;

    let monitoring = settings.and_then(|s| s.monitoring_rate_limits.as_ref());
    let logging = settings.and_then(|s| s.logging_rate_limits.as_ref());
    let limits = [
        (
            "metrics_push",
            "metrics_push_limit",
            limit(
                ("spec.monitoringRateLimits.ingestionRate", monitoring.and_then(|m| m.ingestion_rate)),
                ("spec.monitoringRateLimits.ingestionBurstSize", monitoring.and_then(|m| m.ingestion_burst_size)),
            )?,
        ),
        (
            "logs_push",
            "logs_push_limit",
            limit(
                ("spec.loggingRateLimits.ingestionRate", logging.and_then(|l| l.ingestion_rate)),
                ("spec.loggingRateLimits.ingestionBurstSize", logging.and_then(|l| l.ingestion_burst_size)),
            )?,
        ),
        (
            "metrics_query",
            "metrics_query_limit",
            limit(
                ("spec.monitoringRateLimits.queryRate", monitoring.and_then(|m| m.query_rate)),
                ("spec.monitoringRateLimits.queryBurstSize", monitoring.and_then(|m| m.query_burst_size)),
            )?,
        ),
        (
            "logs_query",
            "logs_query_limit",
            limit(
                ("spec.loggingRateLimits.queryRate", logging.and_then(|l| l.query_rate)),
                ("spec.loggingRateLimits.queryBurstSize", logging.and_then(|l| l.query_burst_size)),
            )?,
        ),
    ];

    let mut values: BTreeMap<&str, String> = BTreeMap::from([
        ("tenant", tenant.to_string()),
        ("write_port", server.write_port.to_string()),
        ("read_port", server.read_port.to_string()),
        ("pid", validate_path("pid path", &paths.pid)?),
        ("temp_dir", validate_path("temp directory", &paths.temp_dir)?.trim_end_matches('/').to_string()),
        ("certificate", validate_path("certificate path", &paths.certificate)?),
        ("certificate_key", validate_path("certificate key path", &paths.certificate_key)?),
        ("client_ca_bundle", validate_path("client CA bundle path", &paths.client_ca_bundle)?),
        (
            "resolver",
            match &server.resolver {
                Some(resolver) => format!("resolver {} valid=30s;", host_port("resolver", resolver)?),
                None => String::new(),
            },
        ),
    ]);
    let resolving = server.resolver.is_some();
    let mut groups = String::new();
    for (placeholder, field, url) in [
        ("cortex_distributor", "cortex-distributor upstream URL", &upstreams.cortex_distributor),
        ("loki_distributor", "loki-distributor upstream URL", &upstreams.loki_distributor),
        ("cortex_query_frontend", "cortex-query-frontend upstream URL", &upstreams.cortex_query_frontend),
        ("loki_query_frontend", "loki-query-frontend upstream URL", &upstreams.loki_query_frontend),
        ("cortex_alertmanager", "cortex-alertmanager upstream URL", &upstreams.cortex_alertmanager),
        ("cortex_ruler", "cortex-ruler upstream URL", &upstreams.cortex_ruler),
        ("loki_ruler", "loki-ruler upstream URL", &upstreams.loki_ruler),
    ] {
        let target = upstream(field, url)?;
        groups.push_str(&upstream_group(placeholder, &target, resolving));
        values.insert(placeholder, format!("{}://{placeholder}", target.scheme));
    }
    values.insert("upstreams", groups);
    let mut zones = String::new();
    for (zone, placeholder, limit) in limits {
        let directive = match limit {
            Some(Limit { rate, burst }) => {
                let _ = writeln!(zones, "limit_req_zone tenant zone={zone}:1m rate={rate}r/s;");
                if burst > 0 {
                    format!("limit_req zone={zone} burst={burst} nodelay;")
                } else {
                    format!("limit_req zone={zone};")
                }
            }
            None => String::new(),
        };
        values.insert(placeholder, directive);
    }
    values.insert("limit_req_zones", zones);
    fill(TEMPLATE, &values)
}

/// The limit from a rate and a burst field: `None` when the rate is absent or zero.
fn limit(rate: (&'static str, Option<i32>), burst: (&'static str, Option<i32>)) -> Result<Option<Limit>, RenderError> {
    let non_negative = |(field, value): (&'static str, Option<i32>)| {
        let value = value.unwrap_or(0);
        u32::try_from(value).map_err(|_| RenderError::Invalid {
            field,
            value: value.to_string(),
            reason: "must not be negative",
        })
    };
    let rate = non_negative(rate)?;
    let burst = non_negative(burst)?;
    Ok((rate > 0).then_some(Limit { rate, burst }))
}

/// Replaces `{{name}}` placeholders. A placeholder alone on its line is a block: each line
/// of its value is indented like the placeholder, and an empty value removes the line.
fn fill(template: &str, values: &BTreeMap<&str, String>) -> Result<String, RenderError> {
    let lookup = |name: &str| values.get(name).ok_or_else(|| RenderError::Template(name.to_string()));
    let mut out = String::with_capacity(template.len() + 1024);
    for line in template.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("{{").and_then(|rest| rest.strip_suffix("}}"))
            && !name.contains("{{")
        {
            let indent = &line[..line.len() - trimmed.len()];
            for value_line in lookup(name)?.lines() {
                out.push_str(indent);
                out.push_str(value_line);
                out.push('\n');
            }
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| RenderError::Template(after.to_string()))?;
            out.push_str(lookup(&after[..end])?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// A DNS-1123 label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
fn validate_label<'a>(field: &'static str, value: &'a str) -> Result<&'a str, RenderError> {
    match mla_common::validation::dns_label_problem(value) {
        None => Ok(value),
        Some(reason) => Err(RenderError::Invalid { field, value: value.to_string(), reason }),
    }
}

/// Idle connections each gateway keeps open to each backend group (per worker). Prometheus
/// sends with up to 50 shards by default; more than this many concurrent requests open
/// further connections, which are closed after their request.
const UPSTREAM_KEEPALIVE: u32 = 32;

/// A backend from its validated URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Upstream {
    /// `http` or `https`.
    scheme: &'static str,
    /// Host (DNS name, IPv4 address or `[IPv6 address]`) in canonical form.
    host: String,
    /// The port, the scheme's default when the URL names none (an upstream `server`
    /// defaults to 80 whatever the scheme).
    port: u16,
    /// Whether the host is a DNS name (not an address).
    named: bool,
}

/// The `upstream` block `name` for `target`: keep-alive connections, and a DNS name
/// resolved again while nginx runs when a resolver is configured (`server ... resolve`,
/// nginx >= 1.27.3; the `zone` holds the addresses it resolved). Without a resolver a name
/// is resolved once, when nginx loads the configuration.
fn upstream_group(name: &str, target: &Upstream, resolving: bool) -> String {
    let resolve = if target.named && resolving { " resolve" } else { "" };
    format!(
        "upstream {name} {{\n    zone {name} 64k;\n    server {}:{}{resolve};\n    keepalive {UPSTREAM_KEEPALIVE};\n}}\n",
        target.host, target.port
    )
}

/// `http://host[:port]` or `https://host[:port]`, an optional trailing `/`, nothing else;
/// parsed into its canonical form (lower case, no trailing `/`).
fn upstream(field: &'static str, url: &str) -> Result<Upstream, RenderError> {
    let invalid = |reason| RenderError::Invalid { field, value: url.to_string(), reason };
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| invalid("must be http://host[:port] or https://host[:port]"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return Err(invalid("scheme must be http or https")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let authority = host_port(field, authority)
        .map_err(|_| invalid("must be http(s)://host[:port] without path, query or user"))?;
    // host_port's canonical form: `[v6]`, `[v6]:port`, `host` or `host:port`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') => (host.to_string(), port.parse::<u16>().ok()),
        _ => (authority.clone(), None),
    };
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    let named = !host.starts_with('[') && host.parse::<Ipv4Addr>().is_err();
    Ok(Upstream { scheme, host, port, named })
}

/// `host`, `host:port`, `[ipv6]` or `[ipv6]:port`, where host is a DNS name or an IPv4
/// address; returned in canonical form.
fn host_port(field: &'static str, value: &str) -> Result<String, RenderError> {
    let invalid = || RenderError::Invalid {
        field,
        value: value.to_string(),
        reason: "must be host or host:port (DNS name, IPv4 address or [IPv6 address])",
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(invalid)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| invalid())?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(&host) {
            return Err(invalid());
        }
        (host, port)
    };
    match port {
        None => Ok(host),
        Some(port) => {
            let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            match port.parse::<u16>() {
                Ok(port) if valid && port > 0 => Ok(format!("{host}:{port}")),
                _ => Err(invalid()),
            }
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

/// A file path of `A-Za-z0-9._/-` only.
fn validate_path(field: &'static str, value: &str) -> Result<String, RenderError> {
    if !mla_common::validation::is_plain_path(value) {
        return Err(RenderError::Invalid {
            field,
            value: value.to_string(),
            reason: "must be a non-empty path of letters, digits, '.', '_', '/' and '-'",
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use mla_common::api::{LoggingRateLimitSettings, MonitoringRateLimitSettings};

    use super::*;

    fn render_default(cluster: &str, settings: Option<&MLAAdminSettingSpec>) -> Result<String, RenderError> {
        render(cluster, settings, &Upstreams::in_namespace("mla"), &GatewayServer::default())
    }

    #[test]
    fn template_has_no_unknown_or_leftover_placeholders() {
        let config = render_default("abc123", None).expect("renders");
        assert!(!config.contains("{{") && !config.contains("}}"), "{config}");
    }

    #[test]
    fn tenant_header_everywhere_it_proxies() {
        let config = render_default("abc123", None).expect("renders");
        let proxies = config.matches("proxy_pass ").count();
        assert_eq!(config.matches("proxy_set_header X-Scope-OrgID abc123;").count(), proxies);
        assert_eq!(proxies, 10);
    }

    #[test]
    fn upstreams_are_keep_alive_groups_resolved_while_running() {
        let config = render_default("abc123", None).expect("renders");
        assert!(config.contains(
            "upstream cortex_distributor {\n        zone cortex_distributor 64k;\n        server cortex-distributor.mla.svc.cluster.local:8080 resolve;\n        keepalive 32;\n    }"
        ), "{config}");
        assert!(config.contains("proxy_pass http://cortex_distributor$request_uri;"));
        // Every proxied request reuses a connection: HTTP/1.1 without `Connection: close`.
        assert_eq!(config.matches("proxy_set_header Connection \"\";").count(), config.matches("proxy_pass ").count());
        assert!(config.contains("proxy_http_version 1.1;"));
        // Without a resolver nginx resolves a name once, at start; addresses need none.
        let server = GatewayServer { resolver: None, ..GatewayServer::default() };
        let config = render("abc123", None, &Upstreams::all("http://127.0.0.1:9009"), &server).expect("renders");
        assert!(config.contains("server 127.0.0.1:9009;"), "{config}");
        assert!(!config.contains("resolve"), "{config}");
        let config = render("abc123", None, &Upstreams::in_namespace("mla"), &server).expect("renders");
        assert!(config.contains("server cortex-distributor.mla.svc.cluster.local:8080;"), "{config}");
    }

    #[test]
    fn cluster_name_must_be_a_label() {
        for bad in ["", "ABC", "abc;", "a b", "-abc", "abc-", "a.b", "x\n}", &"a".repeat(64)] {
            let err = render_default(bad, None).expect_err(bad);
            assert!(matches!(err, RenderError::Invalid { field: "cluster name", .. }), "{err}");
        }
        render_default(&"a".repeat(63), None).expect("63 characters are fine");
    }

    #[test]
    fn upstream_urls() {
        let ok = [
            ("http://cortex.mla.svc.cluster.local:8080", "http://cortex.mla.svc.cluster.local:8080"),
            ("HTTPS://Cortex.Example.:443/", "https://cortex.example:443"),
            ("http://127.0.0.1:1", "http://127.0.0.1:1"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://[0:0::1]", "http://[::1]:80"),
            ("http://cortex", "http://cortex:80"),
            ("https://cortex", "https://cortex:443"),
        ];
        for (input, want) in ok {
            let parsed = upstream("u", input).expect(input);
            assert_eq!(format!("{}://{}:{}", parsed.scheme, parsed.host, parsed.port), want);
        }
        assert!(upstream("u", "http://cortex.mla:80").expect("valid").named);
        assert!(!upstream("u", "http://10.0.0.1:80").expect("valid").named);
        assert!(!upstream("u", "http://[fd00::1]:80").expect("valid").named);
        let bad = [
            "",
            "cortex:8080",
            "ftp://cortex",
            "http://",
            "http://cortex:0",
            "http://cortex:65536",
            "http://cortex:+80",
            "http://cortex:80/path",
            "http://user@cortex",
            "http://cortex?x=1",
            "http://cortex;",
            "http://cor tex",
            "http://cortex}",
            "http://$host",
            "http://cor_tex",
            "http://[::1",
            "http://[::1]x",
            "http://c\u{f6}rtex",
            "http://cortex:80:80",
            "http://-cortex",
        ];
        for input in bad {
            assert!(upstream("u", input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn upstream_errors_name_the_upstream() {
        let mut upstreams = Upstreams::in_namespace("mla");
        upstreams.loki_ruler = "http://loki;ruler".into();
        let err = render("abc", None, &upstreams, &GatewayServer::default()).expect_err("refused");
        assert!(err.to_string().contains("loki-ruler upstream URL"), "{err}");
    }

    #[test]
    fn limits() {
        let settings = MLAAdminSettingSpec {
            cluster_name: "abc".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: Some(100),
                ingestion_burst_size: Some(0),
                query_rate: Some(0),
                query_burst_size: Some(7),
                ..Default::default()
            }),
            logging_rate_limits: Some(LoggingRateLimitSettings {
                ingestion_rate: Some(i32::MAX),
                ingestion_burst_size: Some(i32::MAX),
                query_rate: Some(3),
                query_burst_size: Some(5),
            }),
        };
        let config = render_default("abc", Some(&settings)).expect("renders");
        assert!(config.contains("limit_req_zone tenant zone=metrics_push:1m rate=100r/s;"));
        assert!(config.contains("limit_req zone=metrics_push;"));
        assert!(!config.contains("metrics_query"), "zero rate is no limit");
        assert!(config.contains("limit_req_zone tenant zone=logs_push:1m rate=2147483647r/s;"));
        assert!(config.contains("limit_req zone=logs_push burst=2147483647 nodelay;"));
        assert!(config.contains("limit_req zone=logs_query burst=5 nodelay;"));
        assert!(!config.contains("$binary_remote_addr"));
    }

    #[test]
    fn negative_limits_are_refused() {
        let settings = MLAAdminSettingSpec {
            cluster_name: "abc".into(),
            logging_rate_limits: Some(LoggingRateLimitSettings { query_burst_size: Some(-1), ..Default::default() }),
            ..Default::default()
        };
        let err = render_default("abc", Some(&settings)).expect_err("refused");
        assert!(err.to_string().contains("spec.loggingRateLimits.queryBurstSize"), "{err}");
    }

    #[test]
    fn server_settings_are_validated() {
        let upstreams = Upstreams::in_namespace("mla");
        let same_ports = GatewayServer { read_port: 8080, ..GatewayServer::default() };
        assert!(render("abc", None, &upstreams, &same_ports).is_err());
        let bad_resolver = GatewayServer { resolver: Some("1.2.3.4 ipv6=off".into()), ..GatewayServer::default() };
        assert!(render("abc", None, &upstreams, &bad_resolver).is_err());
        let mut bad_path = GatewayServer::default();
        bad_path.paths.certificate = "/etc/ssl/x.crt;".into();
        assert!(render("abc", None, &upstreams, &bad_path).is_err());
        let no_resolver = GatewayServer { resolver: None, ..GatewayServer::default() };
        assert!(!render("abc", None, &upstreams, &no_resolver).expect("renders").contains("resolver"));
    }

    #[test]
    fn fill_blocks_and_inline() {
        let values = BTreeMap::from([("a", "x;\ny;".to_string()), ("b", String::new()), ("c", "C".to_string())]);
        let out = fill("  {{a}}\n  {{b}}\nk {{c}}{{c}};\n", &values).expect("fills");
        assert_eq!(out, "  x;\n  y;\nk CC;\n");
        assert!(matches!(fill("{{d}}", &values), Err(RenderError::Template(_))));
        assert!(matches!(fill("x {{c", &values), Err(RenderError::Template(_))));
    }
}

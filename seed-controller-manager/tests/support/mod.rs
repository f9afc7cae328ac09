//! Helpers of the gateway tests: scratch directories with certificates from our PKI, the
//! real nginx, and a parser of the structure of an nginx configuration.

#![allow(dead_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use mla_common::pki;

/// nginx to test with: `$NGINX`, else Debian's. A missing nginx fails the test (it is
/// installed by `hack/install-test-deps.sh`); it is never skipped.
pub fn nginx_bin() -> PathBuf {
    let path = std::env::var_os("NGINX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        path.is_file(),
        "nginx not found at {} (install it with hack/install-test-deps.sh or set NGINX)",
        path.display()
    );
    path
}

/// A directory removed when dropped (unless `MLA_KEEP_TEST_DIRS` is set).
#[derive(Debug)]
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "{name}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The path as a string for the config (scratch paths are plain ASCII).
    pub fn str(&self, rel: &str) -> String {
        self.join(rel).to_str().expect("ASCII path").to_string()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("MLA_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A cluster CA with the gateway's certificate and the trust bundle written into
/// `<dir>/certs/` under the names of the production defaults.
#[derive(Debug)]
pub struct GatewayCerts {
    pub ca: pki::CertifiedKeyPem,
    pub gateway: pki::CertifiedKeyPem,
}

pub fn write_certs(dir: &ScratchDir, cluster: &str) -> GatewayCerts {
    let now = SystemTime::now();
    let ca = pki::create_ca(cluster, now).expect("CA");
    let gateway = pki::issue_gateway_certificate(&ca, "localhost", Some("127.0.0.1"), now).expect("gateway cert");
    let state =
        pki::CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() };
    let bundle = pki::trust_bundle(&state, now).expect("bundle");
    std::fs::create_dir_all(dir.join("certs")).expect("certs dir");
    std::fs::create_dir_all(dir.join("run")).expect("run dir");
    std::fs::write(dir.join("certs/gateway.crt"), &gateway.cert_pem).expect("write");
    std::fs::write(dir.join("certs/gateway.key"), &gateway.key_pem).expect("write");
    std::fs::write(dir.join("certs/ca-bundle.crt"), bundle).expect("write");
    GatewayCerts { ca, gateway }
}

/// Runs `nginx -t` on `config` with `dir` as prefix; `Err` holds nginx's output.
pub fn nginx_check(dir: &ScratchDir, config: &str) -> Result<(), String> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx.conf");
    let prefix = format!("{}/", dir.path.display());
    let output = Command::new(nginx_bin())
        .args(["-t", "-q", "-e", "stderr", "-p", &prefix, "-c"])
        .arg(&conf)
        .output()
        .expect("run nginx -t");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

/// Whether the nginx tests run with resolves a `server` name of an `upstream` block while
/// it runs (`resolve`, nginx >= 1.27.3; Debian's 1.22 does not).
pub fn nginx_resolves_upstreams() -> bool {
    let Ok(output) = Command::new(nginx_bin()).arg("-v").output() else { return false };
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    let Some(version) = text.trim().rsplit('/').next() else { return false };
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    parts.as_slice() >= [1, 27, 3].as_slice()
}

/// `config` made checkable by this machine's nginx without a DNS server: every upstream
/// `server` that is a DNS name is pointed at 127.0.0.1 (same port), since `nginx -t`
/// resolves a name without `resolve` at once; `resolve` is kept when this nginx knows it
/// (a resolver must then be configured), else dropped. Addresses stay as they are.
pub fn localize_upstreams(config: &str) -> String {
    let keep_resolve = nginx_resolves_upstreams();
    config
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let Some(rest) = trimmed.strip_prefix("server ").and_then(|r| r.strip_suffix(';')) else {
                return line.to_string();
            };
            let (address, resolve) = match rest.strip_suffix(" resolve") {
                Some(address) => (address, true),
                None => (rest, false),
            };
            let indent = &line[..line.len() - trimmed.len()];
            let Some((host, port)) = address.rsplit_once(':') else { return line.to_string() };
            if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
                return line.to_string();
            }
            let flag = if resolve && keep_resolve { " resolve" } else { "" };
            format!("{indent}server 127.0.0.1:{port}{flag};")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// One directive of an nginx configuration: name, arguments, and its block if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Splits a configuration into tokens the way nginx does: `#` at the start of a token
/// begins a comment, quotes group, `;`, `{`, `}` end words.
fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                tokens.push(match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('\\') => word.push(match chars.next().ok_or("dangling escape")? {
                            't' => '\t',
                            'r' => '\r',
                            'n' => '\n',
                            other => other,
                        }),
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                    }
                }
                tokens.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        word.push(chars.next().ok_or("dangling escape")?);
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// Parses a configuration into its directive tree.
pub fn parse(text: &str) -> Result<Vec<Directive>, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let directives = parse_block(&tokens, &mut pos, false)?;
    if pos != tokens.len() {
        return Err("unexpected '}' at top level".into());
    }
    Ok(directives)
}

fn parse_block(tokens: &[Token], pos: &mut usize, nested: bool) -> Result<Vec<Directive>, String> {
    let mut directives = Vec::new();
    loop {
        match tokens.get(*pos) {
            None if nested => return Err("unclosed block".into()),
            None => return Ok(directives),
            Some(Token::Close) if nested => {
                *pos += 1;
                return Ok(directives);
            }
            Some(Token::Close) => return Ok(directives),
            Some(Token::Word(_)) => {
                let mut words = Vec::new();
                while let Some(Token::Word(word)) = tokens.get(*pos) {
                    words.push(word.clone());
                    *pos += 1;
                }
                let name = words.remove(0);
                match tokens.get(*pos) {
                    Some(Token::Semicolon) => {
                        *pos += 1;
                        directives.push(Directive { name, args: words, block: None });
                    }
                    Some(Token::Open) => {
                        *pos += 1;
                        let block = parse_block(tokens, pos, true)?;
                        directives.push(Directive { name, args: words, block: Some(block) });
                    }
                    _ => return Err(format!("directive {name} not terminated")),
                }
            }
            Some(other) => return Err(format!("unexpected {other:?}")),
        }
    }
}

/// A server block reduced to what the contract fixes: its listen arguments and, per
/// location (modifier and path), the tenant it pins and where it sends requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerShape {
    pub listen: Vec<String>,
    pub locations: Vec<LocationShape>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationShape {
    pub matcher: String,
    /// Value of `proxy_set_header X-Scope-OrgID`, if set.
    pub tenant: Option<String>,
    /// `proxy_pass` argument, or `return <code>`.
    pub target: String,
}

/// The servers of the `http` block of a parsed configuration, or why it does not have
/// the expected overall shape (top-level directives `worker_processes`, ..., `events`, `http`).
pub fn server_shapes(config: &[Directive]) -> Result<Vec<ServerShape>, String> {
    let names: Vec<&str> = config.iter().map(|d| d.name.as_str()).collect();
    let expected_top = ["worker_processes", "worker_rlimit_nofile", "pid", "error_log", "events", "http"];
    if names != expected_top {
        return Err(format!("top-level directives {names:?}"));
    }
    let http = config.iter().find(|d| d.name == "http").and_then(|d| d.block.as_ref()).ok_or("no http block")?;
    let mut servers = Vec::new();
    let mut groups = std::collections::BTreeMap::new();
    for directive in http {
        match (directive.name.as_str(), &directive.block) {
            ("server", Some(block)) => servers.push(server_shape(block)?),
            ("upstream", Some(block)) => {
                let [name] = directive.args.as_slice() else { return Err(format!("upstream {:?}", directive.args)) };
                let address = upstream_shape(name, block)?;
                if groups.insert(name.clone(), address).is_some() {
                    return Err(format!("upstream {name} twice"));
                }
            }
            (_, Some(_)) => return Err(format!("unexpected block {} in http", directive.name)),
            _ => {}
        }
    }
    // A proxy_pass naming a group goes to the group's one server.
    for location in servers.iter_mut().flat_map(|s| s.locations.iter_mut()) {
        let Some((scheme, rest)) = location.target.split_once("://") else { continue };
        let end = rest.find(['/', '$']).unwrap_or(rest.len());
        if let Some(address) = groups.get(&rest[..end]) {
            location.target = format!("{scheme}://{address}{}", &rest[end..]);
        }
    }
    Ok(servers)
}

/// The one server (`host:port`) of an upstream group, or why the group is not what the
/// renderer makes: a zone of its own name, one server (`resolve` allowed), keep-alive.
fn upstream_shape(name: &str, block: &[Directive]) -> Result<String, String> {
    let names: Vec<&str> = block.iter().map(|d| d.name.as_str()).collect();
    if names != ["zone", "server", "keepalive"] || block.iter().any(|d| d.block.is_some()) {
        return Err(format!("upstream {name} has {names:?}"));
    }
    if block[0].args != [name.to_string(), "64k".to_string()] {
        return Err(format!("upstream {name} zone {:?}", block[0].args));
    }
    match block[1].args.as_slice() {
        [address] => Ok(address.clone()),
        [address, flag] if flag == "resolve" => Ok(address.clone()),
        other => Err(format!("upstream {name} server {other:?}")),
    }
}

fn server_shape(block: &[Directive]) -> Result<ServerShape, String> {
    let listens: Vec<&Directive> = block.iter().filter(|d| d.name == "listen").collect();
    let [listen] = listens.as_slice() else { return Err(format!("{} listen directives", listens.len())) };
    let mut locations = Vec::new();
    for directive in block {
        match (directive.name.as_str(), &directive.block) {
            ("location", Some(body)) => {
                let tenant = body
                    .iter()
                    .find(|d| {
                        d.name == "proxy_set_header" && d.args.first().map(String::as_str) == Some("X-Scope-OrgID")
                    })
                    .map(|d| d.args[1..].join(" "));
                let proxy = body.iter().find(|d| d.name == "proxy_pass").map(|d| d.args.join(" "));
                let ret = body.iter().find(|d| d.name == "return").map(|d| format!("return {}", d.args.join(" ")));
                let target = match (proxy, ret) {
                    (Some(proxy), None) => proxy,
                    (None, Some(ret)) => ret,
                    other => return Err(format!("location {:?} has {other:?}", directive.args)),
                };
                for inner in body {
                    if inner.block.is_some() && inner.name != "if" {
                        return Err(format!("unexpected block {} in location {:?}", inner.name, directive.args));
                    }
                }
                locations.push(LocationShape { matcher: directive.args.join(" "), tenant, target });
            }
            (name, Some(_)) => return Err(format!("unexpected block {name} in server")),
            _ => {}
        }
    }
    Ok(ServerShape { listen: listen.args.clone(), locations })
}

/// The servers and locations the contract asks for, for a gateway of `tenant` on the given
/// ports sending to the given (canonical) upstreams.
pub fn expected_shapes(tenant: &str, write_port: u16, read_port: u16, up: &ExpectedUpstreams) -> Vec<ServerShape> {
    let proxied = |matcher: &str, target: String| LocationShape {
        matcher: matcher.to_string(),
        tenant: Some(tenant.to_string()),
        target,
    };
    let fixed = |matcher: &str, target: &str| LocationShape {
        matcher: matcher.to_string(),
        tenant: None,
        target: target.to_string(),
    };
    vec![
        ServerShape {
            listen: vec![write_port.to_string(), "ssl".into()],
            locations: vec![
                proxied("= /api/v1/push", format!("{}$request_uri", up.cortex_distributor)),
                proxied("= /loki/api/v1/push", format!("{}$request_uri", up.loki_distributor)),
                fixed("/", "return 404"),
            ],
        },
        ServerShape {
            listen: vec![read_port.to_string()],
            locations: vec![
                fixed("= /", "return 200 OK\n"),
                proxied("/api/prom/", format!("{}$request_uri", up.cortex_query_frontend)),
                proxied("/api/prom/alertmanager/", format!("{}$request_uri", up.cortex_alertmanager)),
                proxied("= /api/prom/api/v1/alerts", format!("{}/api/v1/alerts$is_args$args", up.cortex_alertmanager)),
                proxied(
                    "= /api/prom/api/v1/rules",
                    format!("{}/prometheus/api/v1/rules$is_args$args", up.cortex_ruler),
                ),
                proxied("/api/prom/rules", format!("{}$request_uri", up.cortex_ruler)),
                proxied("/loki/api/", format!("{}$request_uri", up.loki_query_frontend)),
                proxied("/loki/api/v1/rules", format!("{}$request_uri", up.loki_ruler)),
                proxied("/prometheus/", format!("{}$request_uri", up.loki_ruler)),
                fixed("/", "return 404"),
            ],
        },
    ]
}

/// Canonical upstream base URLs, as the test expects them in `proxy_pass`.
#[derive(Clone, Debug)]
pub struct ExpectedUpstreams {
    pub cortex_distributor: String,
    pub loki_distributor: String,
    pub cortex_query_frontend: String,
    pub loki_query_frontend: String,
    pub cortex_alertmanager: String,
    pub cortex_ruler: String,
    pub loki_ruler: String,
}

/// Every directive name in the configuration, nested ones included.
pub fn all_directive_names(config: &[Directive]) -> Vec<String> {
    let mut names = Vec::new();
    for directive in config {
        names.push(directive.name.clone());
        if let Some(block) = &directive.block {
            names.extend(all_directive_names(block));
        }
    }
    names
}

/// The only directives a rendered configuration may contain.
pub const ALLOWED_DIRECTIVES: &[&str] = &[
    "worker_processes",
    "worker_rlimit_nofile",
    "pid",
    "error_log",
    "events",
    "worker_connections",
    "http",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "access_log",
    "default_type",
    "server_tokens",
    "sendfile",
    "tcp_nopush",
    "client_max_body_size",
    "proxy_http_version",
    "resolver",
    "upstream",
    "zone",
    "keepalive",
    "limit_req_status",
    "limit_req_zone",
    "server",
    "listen",
    "ssl_protocols",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_verify_client",
    "ssl_client_certificate",
    "location",
    "if",
    "return",
    "limit_req",
    "proxy_set_header",
    "proxy_pass",
];

/// What reached the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub tenants: Vec<String>,
}

pub type Records = Arc<Mutex<Vec<Recorded>>>;

async fn record(State(records): State<Records>, request: Request) -> StatusCode {
    let tenants = request
        .headers()
        .get_all("x-scope-orgid")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    records.lock().unwrap().push(Recorded {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        tenants,
    });
    StatusCode::NO_CONTENT
}

pub async fn start_backend() -> (String, Records) {
    let records = Records::default();
    let router = axum::Router::new().fallback(record).with_state(records.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, records)
}

/// A free port for a process the test starts (`mla_e2e::free_port`: below the ephemeral
/// range, which outgoing connections take from).
pub fn free_port() -> u16 {
    mla_e2e::free_port().expect("a free port")
}

/// nginx in the foreground on loopback (`mla_e2e::nginx`): its whole process group is
/// stopped when dropped, and by a watchdog if the test process dies.
pub struct Nginx(mla_e2e::nginx::Nginx);

impl Nginx {
    pub fn start(dir: &ScratchDir, config: &str) -> Self {
        Self(mla_e2e::nginx::Nginx::start("nginx", &dir.path, config).expect("start nginx"))
    }

    pub fn log(&self) -> String {
        self.0.log()
    }

    /// `nginx -s reload`: re-reads the config and the certificate files.
    pub fn reload(&self) {
        self.0.reload().expect("nginx -s reload");
    }
}

/// The gateway's server settings for a scratch directory: free loopback ports, no
/// resolver, certificates under `certs/` and nginx's own files under `run/`.
pub fn scratch_server(dir: &ScratchDir) -> seed_controller_manager::gateway::nginx::GatewayServer {
    use seed_controller_manager::gateway::nginx::{GatewayPaths, GatewayServer};
    GatewayServer {
        write_port: free_port(),
        read_port: free_port(),
        resolver: None,
        paths: GatewayPaths {
            certificate: dir.str("certs/gateway.crt"),
            certificate_key: dir.str("certs/gateway.key"),
            client_ca_bundle: dir.str("certs/ca-bundle.crt"),
            pid: dir.str("run/nginx.pid"),
            temp_dir: dir.str("run"),
        },
    }
}

/// The seed-controller-manager binary of a controller test, running as its ServiceAccount.
pub struct SeedManager {
    pub process: mla_e2e::ManagedProcess,
    /// Base URL of its admin server.
    pub admin: String,
    /// Its log file.
    pub log: PathBuf,
}

/// Runs the binary as the `kubermatic/seed-controller-manager` ServiceAccount of `plane`
/// (its RBAC applied by the caller) with the flags every controller test uses and `flags`,
/// logging to `log_name` in the plane's directory, and waits up to `wait` until it is ready.
pub async fn spawn_seed_manager<S: AsRef<std::ffi::OsStr>>(
    plane: &mla_e2e::ControlPlane,
    flags: impl IntoIterator<Item = S>,
    log_name: &str,
    wait: Duration,
) -> anyhow::Result<SeedManager> {
    let identity =
        mla_e2e::Identity::ServiceAccount { namespace: "kubermatic".into(), name: "seed-controller-manager".into() };
    let kubeconfig = plane.kubeconfig(&identity).await?;
    let port = mla_e2e::free_port()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_seed-controller-manager"));
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .args(["--leader-election-namespace=kubermatic", "--resync-period=3s"])
        .args(flags)
        .arg("--log-level=info,kube=warn");
    let log = plane.dir().join(log_name);
    let process = mla_e2e::ManagedProcess::spawn("seed-controller-manager", command, &log)?;
    let admin = format!("http://127.0.0.1:{port}");
    let readyz = format!("{admin}/readyz");
    mla_e2e::eventually("the binary to be ready", wait, || {
        let readyz = readyz.clone();
        async move { Ok(reqwest::get(&readyz).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
    })
    .await
    .map_err(|e| e.context(std::fs::read_to_string(&log).unwrap_or_default()))?;
    Ok(SeedManager { process, admin, log })
}

/// A Cluster of `project` with monitoring and logging as given (status is set separately).
pub fn cluster(name: &str, project: &str, monitoring: bool, logging: bool) -> mla_common::api::Cluster {
    use mla_common::api::{Cluster, ClusterSpec, ExposeStrategy, MLASettings, PROJECT_ID_LABEL};
    let mut cluster = Cluster::new(
        name,
        ClusterSpec {
            human_readable_name: Some(name.into()),
            expose_strategy: Some(ExposeStrategy::Tunneling),
            mla: Some(MLASettings { monitoring_enabled: monitoring, logging_enabled: logging, ..Default::default() }),
        },
    );
    cluster.metadata.labels = Some([(PROJECT_ID_LABEL.to_string(), project.to_string())].into());
    cluster
}

/// Waits up to `wait` for a Warning Event with `reason` whose note contains `contains` in
/// `namespace`; failing, lists the Events there.
pub async fn warning_event(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    contains: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client.clone(), namespace);
    let found = mla_e2e::eventually(&format!("a {reason} Event in {namespace}"), wait, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some("Warning")
                        && e.note.as_deref().unwrap_or_default().contains(contains)
                })
                .then_some(()))
        }
    })
    .await;
    if found.is_err() {
        let list = events.list(&Default::default()).await?;
        let seen: Vec<_> = list.items.into_iter().map(|e| (e.reason, e.note)).collect();
        anyhow::bail!("no {reason} Event with {contains:?} in {namespace}; events: {seen:?}");
    }
    Ok(())
}

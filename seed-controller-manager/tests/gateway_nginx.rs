//! The MLA gateway's nginx.conf: golden files of the main variants, each accepted by the
//! real nginx (`nginx -t`), and hostile inputs in every field that reaches the file, which
//! are either refused or rendered into exactly the intended servers and locations.
//!
//! `UPDATE_GOLDEN=1 cargo test -p seed-controller-manager --test gateway_nginx` rewrites the
//! golden files in `testdata/`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

// The renderer lives in the binary crate; the test compiles the module itself.
mod support;

use std::net::Ipv6Addr;
use std::path::PathBuf;

use mla_common::api::{LoggingRateLimitSettings, MLAAdminSettingSpec, MonitoringRateLimitSettings};
use proptest::prelude::*;
use seed_controller_manager::gateway::nginx::{self, GatewayPaths, GatewayServer, Upstreams, render};
use support::{ExpectedUpstreams, ScratchDir};

const CLUSTER: &str = "w9cw5xcvkq";

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(format!("{name}.nginx.conf"))
}

fn monitoring_limits() -> MonitoringRateLimitSettings {
    MonitoringRateLimitSettings {
        ingestion_rate: Some(1000),
        ingestion_burst_size: Some(2000),
        max_series_per_metric: Some(50000),
        max_series_total: Some(1000000),
        query_rate: Some(20),
        query_burst_size: Some(40),
        max_samples_per_query: Some(1000000),
        max_series_per_query: Some(100000),
    }
}

fn logging_limits() -> LoggingRateLimitSettings {
    LoggingRateLimitSettings {
        ingestion_rate: Some(500),
        ingestion_burst_size: Some(0),
        query_rate: Some(10),
        query_burst_size: Some(15),
    }
}

fn custom_upstreams() -> Upstreams {
    Upstreams {
        cortex_distributor: "https://cortex-distributor.observability.svc.cluster.local:9443/".into(),
        loki_distributor: "http://10.0.12.7:3100".into(),
        cortex_query_frontend: "http://cortex-query-frontend.observability".into(),
        loki_query_frontend: "http://[fd00::17]:3100".into(),
        cortex_alertmanager: "http://Cortex-Alertmanager.observability.svc.cluster.local:8080".into(),
        cortex_ruler: "http://cortex-ruler.observability.svc.cluster.local:8080".into(),
        loki_ruler: "http://loki-ruler.observability.svc.cluster.local:3100".into(),
    }
}

struct Variant {
    name: &'static str,
    settings: Option<MLAAdminSettingSpec>,
    upstreams: Upstreams,
    server: GatewayServer,
}

fn settings(
    monitoring: Option<MonitoringRateLimitSettings>,
    logging: Option<LoggingRateLimitSettings>,
) -> MLAAdminSettingSpec {
    MLAAdminSettingSpec {
        cluster_name: CLUSTER.into(),
        monitoring_rate_limits: monitoring,
        logging_rate_limits: logging,
    }
}

fn variants() -> Vec<Variant> {
    let mla = Upstreams::in_namespace("mla");
    vec![
        Variant { name: "no-limits", settings: None, upstreams: mla.clone(), server: GatewayServer::default() },
        Variant {
            name: "zero-limits",
            settings: Some(settings(
                Some(MonitoringRateLimitSettings::default()),
                Some(LoggingRateLimitSettings {
                    ingestion_rate: Some(0),
                    ingestion_burst_size: Some(100),
                    query_rate: Some(0),
                    query_burst_size: Some(0),
                }),
            )),
            upstreams: mla.clone(),
            server: GatewayServer::default(),
        },
        Variant {
            name: "monitoring-limits",
            settings: Some(settings(Some(monitoring_limits()), None)),
            upstreams: mla.clone(),
            server: GatewayServer::default(),
        },
        Variant {
            name: "all-limits",
            settings: Some(settings(Some(monitoring_limits()), Some(logging_limits()))),
            upstreams: mla,
            server: GatewayServer::default(),
        },
        Variant {
            name: "custom-upstreams",
            settings: None,
            upstreams: custom_upstreams(),
            server: GatewayServer { resolver: Some("10.96.0.10:53".into()), ..GatewayServer::default() },
        },
    ]
}

fn render_variant(variant: &Variant) -> String {
    render(CLUSTER, variant.settings.as_ref(), &variant.upstreams, &variant.server)
        .unwrap_or_else(|err| panic!("{}: {err}", variant.name))
}

#[test]
fn goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for variant in variants() {
        let rendered = render_variant(&variant);
        let path = golden_path(variant.name);
        if update {
            std::fs::create_dir_all(path.parent().expect("testdata")).expect("mkdir testdata");
            std::fs::write(&path, &rendered).expect("write golden");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if golden != rendered {
            stale.push(format!("{} ({})", variant.name, path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "rendered config differs from golden files {stale:?}; rerun with UPDATE_GOLDEN=1 and review the diff"
    );
}

/// The committed golden files, with only file paths and the resolver moved into a scratch
/// directory, pass `nginx -t`, and have exactly the contract's servers and locations.
#[test]
fn goldens_pass_nginx_t() {
    let dir = ScratchDir::new("golden");
    support::write_certs(&dir, CLUSTER);
    for variant in variants() {
        let path = golden_path(variant.name);
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let production = &variant.server;
        let mut config = golden.clone();
        // The pid file (in the temp directory) before the temp directory.
        for (from, to) in [
            (production.paths.pid.clone(), dir.str("run/nginx.pid")),
            // Only the temp path directives: the scratch directory may itself be below /tmp.
            (format!("_temp_path {}/", production.paths.temp_dir), format!("_temp_path {}/", dir.str("run"))),
            (production.paths.certificate.clone(), dir.str("certs/gateway.crt")),
            (production.paths.certificate_key.clone(), dir.str("certs/gateway.key")),
            (production.paths.client_ca_bundle.clone(), dir.str("certs/ca-bundle.crt")),
        ] {
            assert!(config.contains(&from), "{}: {from} not in golden", variant.name);
            config = config.replace(&from, &to);
        }
        if let Some(resolver) = &production.resolver {
            config = config.replace(&format!("resolver {resolver} "), "resolver 127.0.0.1 ");
        }
        let config = support::localize_upstreams(&config);
        if let Err(output) = support::nginx_check(&dir, &config) {
            panic!("golden {} fails nginx -t:\n{output}\n{config}", variant.name);
        }
        let parsed = support::parse(&golden).expect("golden parses");
        let shapes = support::server_shapes(&parsed).expect("golden has the expected overall shape");
        let expected = support::expected_shapes(CLUSTER, 8080, 8081, &canonical_upstreams(&variant.upstreams));
        assert_eq!(shapes, expected, "{}", variant.name);
    }
}

#[test]
fn goldens_limit_the_tenant_not_clients() {
    let all = std::fs::read_to_string(golden_path("all-limits")).expect("golden");
    for zone in ["metrics_push", "logs_push", "metrics_query", "logs_query"] {
        assert!(all.contains(&format!("limit_req_zone tenant zone={zone}:1m")), "{zone}");
    }
    assert!(all.contains("limit_req zone=metrics_push burst=2000 nodelay;"));
    assert!(all.contains("limit_req zone=logs_push;"));
    assert!(all.contains("limit_req_status 429;"));
    assert!(!all.contains("binary_remote_addr"));
    let none = std::fs::read_to_string(golden_path("zero-limits")).expect("golden");
    assert!(!none.contains("limit_req "), "zero means no limit");
    assert!(!none.contains("limit_req_zone"), "zero means no limit");
}

/// The canonical form the renderer writes: lower case, no trailing `/` or `.`, IPv6 in
/// its shortest form, the scheme's port when none is given (an upstream server needs one).
fn canonical(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let lower = lower.strip_suffix('/').unwrap_or(&lower);
    let Some((scheme, authority)) = lower.split_once("://") else { return lower.to_string() };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let with_port = |port: &str| if port.is_empty() { default_port.to_string() } else { port.to_string() };
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((ip, after)) = rest.split_once(']')
        && let Ok(ip) = ip.parse::<Ipv6Addr>()
    {
        return format!("{scheme}://[{ip}]{}", with_port(after));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, format!(":{port}")),
        None => (authority, String::new()),
    };
    format!("{scheme}://{}{}", host.strip_suffix('.').unwrap_or(host), with_port(&port))
}

fn canonical_upstreams(up: &Upstreams) -> ExpectedUpstreams {
    ExpectedUpstreams {
        cortex_distributor: canonical(&up.cortex_distributor),
        loki_distributor: canonical(&up.loki_distributor),
        cortex_query_frontend: canonical(&up.cortex_query_frontend),
        loki_query_frontend: canonical(&up.loki_query_frontend),
        cortex_alertmanager: canonical(&up.cortex_alertmanager),
        cortex_ruler: canonical(&up.cortex_ruler),
        loki_ruler: canonical(&up.loki_ruler),
    }
}

// ---- hostile input ----

/// A generated value and whether it was built to be valid.
#[derive(Clone, Debug)]
struct Gen {
    value: String,
    valid: bool,
}

fn hostile_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9;{}\"'$#\\\\ \t\n\r.:/\\[\\]@?=%-]{0,30}",
        Just("abc; } server { listen 9999; location / { proxy_pass http://evil; } } #".to_string()),
        Just("abc\nproxy_set_header X-Scope-OrgID other".to_string()),
        Just("${tenant}".to_string()),
        Just("\u{1F600}\u{202E}".to_string()),
    ]
    .boxed()
}

fn cluster_name_valid() -> BoxedStrategy<Gen> {
    "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?".prop_map(|value| Gen { value, valid: true }).boxed()
}

fn cluster_name(valid_weight: u32) -> BoxedStrategy<Gen> {
    prop_oneof![
        valid_weight => cluster_name_valid(),
        1 => hostile_text().prop_map(|value| Gen { value, valid: false }),
    ]
    .boxed()
}

fn host() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-zA-Z]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}",
        any::<[u8; 4]>().prop_map(|ip| std::net::Ipv4Addr::from(ip).to_string()),
        any::<[u16; 8]>().prop_map(|ip| format!("[{}]", Ipv6Addr::from(ip))),
    ]
    .boxed()
}

fn valid_upstream() -> BoxedStrategy<String> {
    (prop_oneof![Just("http"), Just("https"), Just("HTTP")], host(), prop::option::of(1u16..), any::<bool>())
        .prop_map(|(scheme, host, port, slash)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{}", if slash { "/" } else { "" })
        })
        .boxed()
}

fn hostile_upstream() -> BoxedStrategy<Gen> {
    prop_oneof![
        (valid_upstream(), hostile_text())
            .prop_map(|(url, junk)| Gen { value: format!("{url}{junk}"), valid: junk.is_empty() }),
        hostile_text().prop_map(|value| Gen { value, valid: false }),
    ]
    .boxed()
}

fn upstream(valid_weight: u32) -> BoxedStrategy<Gen> {
    prop_oneof![
        valid_weight => valid_upstream().prop_map(|value| Gen { value, valid: true }),
        2 => hostile_upstream(),
    ]
    .boxed()
}

fn limit(valid_weight: u32) -> BoxedStrategy<Option<i32>> {
    prop_oneof![
        1 => Just(None),
        valid_weight => (0..=i32::MAX).prop_map(Some),
        1 => any::<i32>().prop_map(Some),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Inputs {
    cluster: Gen,
    upstreams: [Gen; 7],
    limits: [Option<i32>; 8],
}

fn inputs(valid_weight: u32) -> BoxedStrategy<Inputs> {
    inputs_from(cluster_name(valid_weight), upstream(valid_weight), limit(valid_weight))
}

/// Inputs built to be valid.
fn valid_inputs() -> BoxedStrategy<Inputs> {
    inputs_from(
        cluster_name_valid(),
        valid_upstream().prop_map(|value| Gen { value, valid: true }).boxed(),
        prop::option::of(0..=i32::MAX).boxed(),
    )
}

/// Valid inputs except one field, which is hostile.
fn one_hostile_field() -> BoxedStrategy<Inputs> {
    (valid_inputs(), 0..16usize, hostile_text(), hostile_upstream(), any::<i32>())
        .prop_map(|(mut inputs, field, text, bad_upstream, number)| {
            match field {
                0 => inputs.cluster = Gen { value: text, valid: false },
                1..=7 => inputs.upstreams[field - 1] = bad_upstream,
                _ => inputs.limits[field - 8] = Some(number),
            }
            inputs
        })
        .boxed()
}

fn inputs_from(
    cluster: BoxedStrategy<Gen>,
    upstream: BoxedStrategy<Gen>,
    limit: BoxedStrategy<Option<i32>>,
) -> BoxedStrategy<Inputs> {
    let upstreams: [BoxedStrategy<Gen>; 7] = std::array::from_fn(|_| upstream.clone());
    let limits: [BoxedStrategy<Option<i32>>; 8] = std::array::from_fn(|_| limit.clone());
    (cluster, upstreams, limits).prop_map(|(cluster, upstreams, limits)| Inputs { cluster, upstreams, limits }).boxed()
}

impl Inputs {
    fn upstreams(&self) -> Upstreams {
        let u = |i: usize| self.upstreams[i].value.clone();
        Upstreams {
            cortex_distributor: u(0),
            loki_distributor: u(1),
            cortex_query_frontend: u(2),
            loki_query_frontend: u(3),
            cortex_alertmanager: u(4),
            cortex_ruler: u(5),
            loki_ruler: u(6),
        }
    }

    fn settings(&self) -> MLAAdminSettingSpec {
        let l = self.limits;
        MLAAdminSettingSpec {
            cluster_name: self.cluster.value.clone(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: l[0],
                ingestion_burst_size: l[1],
                query_rate: l[2],
                query_burst_size: l[3],
                ..Default::default()
            }),
            logging_rate_limits: Some(LoggingRateLimitSettings {
                ingestion_rate: l[4],
                ingestion_burst_size: l[5],
                query_rate: l[6],
                query_burst_size: l[7],
            }),
        }
    }

    fn all_valid(&self) -> bool {
        self.cluster.valid && self.upstreams.iter().all(|u| u.valid) && self.limits.iter().all(|l| l.unwrap_or(0) >= 0)
    }

    /// Zones the settings ask for: a positive rate.
    fn expected_zones(&self) -> usize {
        [0, 2, 4, 6].iter().filter(|&&i| self.limits[i].unwrap_or(0) > 0).count()
    }
}

/// Renders `inputs` and checks the outcome: refused with an error naming the field, or
/// exactly the intended structure. Returns the config when rendered.
fn check_rendered(inputs: &Inputs, server: &GatewayServer) -> Result<Option<String>, TestCaseError> {
    let settings = inputs.settings();
    let upstreams = inputs.upstreams();
    match render(&inputs.cluster.value, Some(&settings), &upstreams, server) {
        Err(err) => {
            prop_assert!(!inputs.all_valid(), "valid inputs refused: {err}");
            prop_assert!(matches!(err, nginx::RenderError::Invalid { .. }), "{err}");
            Ok(None)
        }
        Ok(config) => {
            let parsed = support::parse(&config).map_err(|e| TestCaseError::fail(format!("{e}\n{config}")))?;
            let shapes = support::server_shapes(&parsed).map_err(|e| TestCaseError::fail(format!("{e}\n{config}")))?;
            let expected = support::expected_shapes(
                &inputs.cluster.value,
                server.write_port,
                server.read_port,
                &canonical_upstreams(&upstreams),
            );
            prop_assert_eq!(shapes, expected);
            let names = support::all_directive_names(&parsed);
            for name in &names {
                prop_assert!(support::ALLOWED_DIRECTIVES.contains(&name.as_str()), "directive {name}");
            }
            prop_assert_eq!(names.iter().filter(|n| *n == "limit_req_zone").count(), inputs.expected_zones());
            prop_assert_eq!(names.iter().filter(|n| *n == "limit_req").count(), inputs.expected_zones());
            Ok(Some(config))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    /// Mostly hostile inputs: refused, or rendered into exactly the intended structure.
    #[test]
    fn hostile_inputs_never_change_the_structure(inputs in inputs(2)) {
        check_rendered(&inputs, &GatewayServer::default())?;
    }

    /// One hostile field among valid ones, so no other field's refusal hides it.
    #[test]
    fn one_hostile_field_is_refused_or_harmless(inputs in one_hostile_field()) {
        check_rendered(&inputs, &GatewayServer::default())?;
    }
}

fn scratch_server(dir: &ScratchDir) -> GatewayServer {
    GatewayServer {
        write_port: 18080,
        read_port: 18081,
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

/// Mostly valid inputs with some hostile ones, so that most cases render: every rendered
/// config passes the real `nginx -t` (64 cases, each one nginx run).
#[test]
fn rendered_configs_pass_nginx_t() {
    let dir = ScratchDir::new("proptest");
    support::write_certs(&dir, "proptest");
    let server = scratch_server(&dir);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let rendered = std::cell::Cell::new(0);
    runner
        .run(&prop_oneof![valid_inputs(), one_hostile_field()], |inputs| {
            if let Some(config) = check_rendered(&inputs, &server)? {
                rendered.set(rendered.get() + 1);
                if let Err(output) = support::nginx_check(&dir, &support::localize_upstreams(&config)) {
                    return Err(TestCaseError::fail(format!("nginx -t failed:\n{output}\n{config}")));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{err}"));
    let rendered = rendered.get();
    assert!(rendered >= 16, "only {rendered} of 64 cases rendered: the generator is too hostile to test nginx");
}

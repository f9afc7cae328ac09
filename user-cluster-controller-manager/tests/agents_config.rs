//! The agents' configuration files: golden files of `prometheus.yaml` and `promtail.yaml`,
//! every rendered Prometheus configuration accepted by the real `promtool check config`
//! of Prometheus 3 (the agent's version, built by `hack/build-real-parts.sh`; Kubernetes
//! service discovery included; a missing promtool fails the tests), and hostile extra
//! scrape configs, which are skipped with a reason while the rest still renders and passes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p user-cluster-controller-manager --test agents_config`
//! rewrites the golden files in `testdata/`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use mla_common::pki;
use proptest::prelude::*;
use serde_yaml::Value;
use user_cluster_controller_manager::agents::common::{CERTIFICATES_DIR, TlsPaths};
use user_cluster_controller_manager::agents::prometheus::{
    ExtraScrapeConfig, PrometheusConfig, PrometheusConfigInput, SERVICE_ACCOUNT_DIR, ServiceAccountPaths,
    prometheus_config,
};
use user_cluster_controller_manager::agents::promtail::{LoggingAgent, LoggingConfigInput};

const CLUSTER: &str = "w9cw5xcvkq";
const GATEWAY: &str = "https://mla-gateway.w9cw5xcvkq.europe-west3-c.example.com:30443";
/// Jobs every Prometheus configuration has.
const BUILTIN_JOBS: usize = 9;

const SHOP_FRONTEND: &str = "\
- job_name: shop-frontend
  metrics_path: /stats/prometheus
  kubernetes_sd_configs:
  - role: pod
    namespaces:
      names: [shop]
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_label_app]
    regex: shop-frontend
    action: keep
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
";

const EXTERNAL_EXPORTERS: &str = "\
job_name: external-exporters
scrape_interval: 1m
scrape_timeout: 20s
honor_labels: true
static_configs:
- targets: ['10.0.0.5:9100', 'db.internal.example.com:9187']
  labels:
    env: prod
metric_relabel_configs:
- source_labels: [__name__]
  regex: go_.*
  action: drop
";

fn source(name: &str, yaml: &str) -> ExtraScrapeConfig {
    ExtraScrapeConfig { source: name.into(), yaml: yaml.into() }
}

struct Variant {
    name: &'static str,
    extra: Vec<ExtraScrapeConfig>,
    skipped: &'static [&'static str],
    replicas: i32,
}

fn prometheus_variants() -> Vec<Variant> {
    vec![
        Variant { name: "prometheus-basic", extra: vec![], skipped: &[], replicas: 1 },
        Variant {
            name: "prometheus-extra-scrape-configs",
            extra: vec![
                source("prometheus-scraping-static/exporters.yaml", EXTERNAL_EXPORTERS),
                source("prometheus-scraping-shop/jobs.yaml", SHOP_FRONTEND),
            ],
            skipped: &[],
            replicas: 1,
        },
        Variant {
            name: "prometheus-bad-extra-skipped",
            extra: vec![
                source("prometheus-scraping-shop/jobs.yaml", SHOP_FRONTEND),
                source("prometheus-scraping-broken/jobs.yaml", "- scrape_interval: 1m\n  static_configs: []\n"),
            ],
            skipped: &["prometheus-scraping-broken/jobs.yaml"],
            replicas: 1,
        },
        // KKP >= 2.22's custom scrape config ConfigMaps, and two replicas: each labels its
        // samples `__replica__: ${POD_NAME}` (Prometheus 3 expands it; promtool runs with
        // `POD_NAME` set, as the pod has it).
        Variant {
            name: "prometheus-replicas-monitoring-scraping",
            extra: vec![source("monitoring-scraping-static/exporters.yaml", EXTERNAL_EXPORTERS)],
            skipped: &[],
            replicas: 2,
        },
    ]
}

fn render_variant(variant: &Variant) -> PrometheusConfig {
    let input = PrometheusConfigInput {
        extra_scrape_configs: variant.extra.clone(),
        replicas: variant.replicas,
        ..PrometheusConfigInput::new(CLUSTER, GATEWAY)
    };
    let config = prometheus_config(&input).unwrap_or_else(|err| panic!("{}: {err}", variant.name));
    let skipped: Vec<_> = config.skipped.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(skipped, variant.skipped, "{}: {:?}", variant.name, config.skipped);
    config
}

fn promtail_yaml() -> String {
    LoggingAgent::Promtail.render_config(&LoggingConfigInput::new(CLUSTER, GATEWAY)).expect("promtail renders")
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(format!("{name}.yaml"))
}

#[test]
fn goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut rendered: Vec<(&str, String)> =
        prometheus_variants().iter().map(|v| (v.name, render_variant(v).yaml)).collect();
    rendered.push(("promtail", promtail_yaml()));
    let mut stale = Vec::new();
    for (name, yaml) in rendered {
        let path = golden_path(name);
        if update {
            std::fs::create_dir_all(path.parent().expect("testdata")).expect("mkdir testdata");
            std::fs::write(&path, &yaml).expect("write golden");
            continue;
        }
        if std::fs::read_to_string(&path).unwrap_or_default() != yaml {
            stale.push(format!("{name} ({})", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "rendered configs differ from golden files {stale:?}; rerun with UPDATE_GOLDEN=1 and review the diff"
    );
}

// ---- promtool ----

/// A directory removed when dropped (unless `MLA_KEEP_TEST_DIRS` is set).
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!("{name}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }

    fn str(&self, rel: &str) -> String {
        self.path.join(rel).to_str().expect("UTF-8 path").to_string()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("MLA_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A scratch directory with the files `prometheus.yaml` refers to: the client certificate
/// from a real cluster CA in `certs/`, a service account token and CA in `sa/`.
struct PromtoolDir {
    dir: ScratchDir,
}

impl PromtoolDir {
    fn new(name: &str) -> Self {
        let dir = ScratchDir::new(name);
        let now = SystemTime::now();
        let ca = pki::create_ca(CLUSTER, now).expect("CA");
        let client = pki::issue_client_certificate(&ca, "prometheus", now).expect("client certificate");
        for (rel, content) in [
            ("certs/ca.crt", ca.cert_pem.as_str()),
            ("certs/client.crt", client.cert_pem.as_str()),
            ("certs/client.key", client.key_pem.as_str()),
            ("sa/token", "not-a-real-token"),
            ("sa/ca.crt", ca.cert_pem.as_str()),
        ] {
            let path = dir.path.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        Self { dir }
    }

    /// Input whose file paths point into this directory.
    fn input(&self, extra: Vec<ExtraScrapeConfig>, replicas: i32) -> PrometheusConfigInput {
        PrometheusConfigInput {
            client_tls: TlsPaths::in_dir(&self.dir.str("certs")),
            service_account: ServiceAccountPaths {
                token_file: self.dir.str("sa/token"),
                ca_file: self.dir.str("sa/ca.crt"),
            },
            extra_scrape_configs: extra,
            replicas,
            ..PrometheusConfigInput::new(CLUSTER, GATEWAY)
        }
    }

    /// A production config with its file paths moved into this directory.
    fn localize(&self, yaml: &str) -> String {
        assert!(yaml.contains(CERTIFICATES_DIR) && yaml.contains(SERVICE_ACCOUNT_DIR));
        yaml.replace(&format!("{CERTIFICATES_DIR}/"), &format!("{}/", self.dir.str("certs")))
            .replace(&format!("{SERVICE_ACCOUNT_DIR}/"), &format!("{}/", self.dir.str("sa")))
    }

    /// `promtool check config` on `yaml`, in normal and in agent mode, with Prometheus 3's
    /// promtool: every field, the Kubernetes service discovery blocks included, and the
    /// TLS and authorization files must exist.
    fn check(&self, yaml: &str) -> Result<(), String> {
        let path = self.dir.path.join("prometheus.yaml");
        std::fs::write(&path, yaml).expect("write prometheus.yaml");
        for agent in [false, true] {
            let mut command = Command::new(promtool());
            command.args(["check", "config"]).env("POD_NAME", "prometheus-7d9f-a");
            if agent {
                command.arg("--agent");
            }
            let output = command.arg(&path).output().unwrap_or_else(|err| panic!("cannot run promtool: {err}"));
            if !output.status.success() {
                return Err(format!(
                    "promtool check config{} failed:\n{}{}",
                    if agent { " --agent" } else { "" },
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        Ok(())
    }
}

/// Prometheus 3's promtool (`hack/build-real-parts.sh prometheus`); missing, it fails.
fn promtool() -> PathBuf {
    mla_e2e::real_parts::binary("prometheus", "promtool").unwrap_or_else(|err| panic!("promtool is required: {err:#}"))
}

#[test]
fn goldens_pass_promtool() {
    let dir = PromtoolDir::new("golden");
    for variant in prometheus_variants() {
        let path = golden_path(variant.name);
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        if let Err(output) = dir.check(&dir.localize(&golden)) {
            panic!("golden {} fails promtool:\n{output}", variant.name);
        }
    }
}

#[test]
fn rendered_with_local_paths_passes_promtool() {
    let dir = PromtoolDir::new("local");
    for variant in prometheus_variants() {
        let config = prometheus_config(&dir.input(variant.extra.clone(), variant.replicas)).expect("renders");
        if let Err(output) = dir.check(&config.yaml) {
            panic!("{} fails promtool:\n{output}\n{}", variant.name, config.yaml);
        }
    }
}

/// A promtool that is not there fails, it does not skip: the check must not silently stop
/// running. And it is Prometheus 3's.
#[test]
fn promtool_is_installed() {
    let output = Command::new(promtool()).arg("--version").output().expect("promtool is required");
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(version.starts_with("promtool, version 3."), "{version}");
}

fn parsed(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("rendered YAML parses")
}

fn job_names(yaml: &str) -> Vec<String> {
    parsed(yaml)["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|job| job["job_name"].as_str().expect("job_name").to_string())
        .collect()
}

/// The parts no extra scrape config may change.
fn assert_fixed_structure(yaml: &str) {
    let value = parsed(yaml);
    let keys: Vec<_> = value.as_mapping().expect("mapping").keys().filter_map(Value::as_str).collect();
    assert_eq!(keys, ["global", "scrape_configs", "remote_write"], "{yaml}");
    assert_eq!(value["global"]["external_labels"].as_mapping().map(|m| m.len()), Some(1));
    assert_eq!(value["global"]["external_labels"]["cluster"].as_str(), Some(CLUSTER));
    let remote_write = value["remote_write"].as_sequence().expect("remote_write");
    assert_eq!(remote_write.len(), 1);
    assert_eq!(remote_write[0]["url"].as_str(), Some(format!("{GATEWAY}/api/v1/push").as_str()));
}

#[test]
fn hostile_extra_scrape_configs_are_skipped_and_the_rest_passes_promtool() {
    let laughs = "\
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
job_name: laughs
";
    // One wide anchor referenced many times: few alias jumps, a huge tree.
    let wide = format!(
        "- job_name: wide\n  params:\n    x: &x [{}]\n    y: [{}]\n",
        vec!["v"; 2000].join(", "),
        vec!["*x"; 2000].join(", ")
    );
    let deep = format!("job_name: deep\nparams: {{x: {}v{}}}\n", "[".repeat(200), "]".repeat(200));
    let sources = vec![
        source("prometheus-scraping-a-laughs/k", laughs),
        source("prometheus-scraping-b-wide/k", &wide),
        source("prometheus-scraping-c-not-a-list/k", "just: [a, mapping]\nwithout: job\n"),
        source("prometheus-scraping-d-scalar/k", "'- job_name: injected'"),
        source("prometheus-scraping-e-deep/k", &deep),
        source("prometheus-scraping-f-missing-job/k", "- static_configs: [{targets: ['x:1']}]"),
        source("prometheus-scraping-g-dup/k", "- job_name: shop-frontend\n  metrics_path: /other"),
        source("prometheus-scraping-h-injection/k", "- job_name: \"inj\\nremote_write:\\n- url: http://evil\"\n"),
        source("prometheus-scraping-i-top-level/k", "- job_name: top\n  remote_write: [{url: 'http://evil'}]\n"),
        source("prometheus-scraping-j-tag/k", "- !custom\n  job_name: tag\n"),
        // A global tag is resolved by the parser and does not reach the output.
        source("prometheus-scraping-l-global-tag/k", "- !!python/object:os.system\n  job_name: global-tag\n"),
        source("prometheus-scraping-k-builtin/k", "- job_name: kubernetes-nodes\n"),
        // A benign anchor among the good ones is fine.
        source(
            "prometheus-scraping-good/k",
            "- job_name: anchored-1\n  static_configs: &targets [{targets: ['a:1']}]\n\
             - job_name: anchored-2\n  static_configs: *targets\n",
        ),
        source("prometheus-scraping-shop/jobs.yaml", SHOP_FRONTEND),
    ];
    let dir = PromtoolDir::new("hostile");
    let config = prometheus_config(&dir.input(sources, 1)).expect("renders despite hostile sources");
    let skipped: Vec<_> = config.skipped.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        skipped,
        [
            "prometheus-scraping-a-laughs/k",
            "prometheus-scraping-b-wide/k",
            "prometheus-scraping-c-not-a-list/k",
            "prometheus-scraping-d-scalar/k",
            "prometheus-scraping-e-deep/k",
            "prometheus-scraping-f-missing-job/k",
            "prometheus-scraping-h-injection/k",
            "prometheus-scraping-i-top-level/k",
            "prometheus-scraping-j-tag/k",
            "prometheus-scraping-k-builtin/k",
            // Sorted after `g-dup`, `shop` loses the job name to it.
            "prometheus-scraping-shop/jobs.yaml",
        ],
        "{:#?}",
        config.skipped
    );
    for skipped in &config.skipped {
        assert!(!skipped.reason.is_empty() && !skipped.reason.contains('\n'), "{skipped:?}");
        assert!(skipped.reason.chars().count() <= 303, "{skipped:?}");
    }
    let reason = |name: &str| &config.skipped.iter().find(|s| s.name.contains(name)).expect(name).reason;
    assert!(reason("laughs").contains("YAML nodes") || reason("laughs").contains("repetition"), "{}", reason("laughs"));
    assert!(reason("wide").contains("YAML nodes"), "{}", reason("wide"));
    assert!(reason("deep").contains("nested") || reason("deep").contains("recursion"), "{}", reason("deep"));
    assert!(reason("missing-job").contains("missing job_name"));
    assert!(reason("shop").contains("duplicate job_name"));
    assert!(reason("top-level").contains("unknown field \"remote_write\""));
    assert!(reason("builtin").contains("reserved"));
    let jobs = job_names(&config.yaml);
    assert_eq!(jobs[BUILTIN_JOBS..], ["shop-frontend", "anchored-1", "anchored-2", "global-tag"].map(String::from));
    assert!(!config.yaml.contains("python") && !config.yaml.contains("evil"), "{}", config.yaml);
    assert_fixed_structure(&config.yaml);
    if let Err(output) = dir.check(&config.yaml) {
        panic!("{output}\n{}", config.yaml);
    }
}

// ---- generated extra scrape configs ----

/// A field of a generated scrape config: valid for Prometheus 2.42 and 3, or not.
fn field() -> BoxedStrategy<(String, Value)> {
    let s = |v: &str| Value::String(v.into());
    let yaml = |v: &str| serde_yaml::from_str::<Value>(v).expect("strategy YAML");
    prop_oneof![
        prop::sample::select(vec!["5s", "15s", "1m", "1m30s", "2h", "0", "30", "1.5s", "soon", "-1s"])
            .prop_map(move |v| ("scrape_interval".to_string(), s(v))),
        prop::sample::select(vec!["5s", "10s", "1m", "x"]).prop_map(move |v| ("scrape_timeout".to_string(), s(v))),
        prop::sample::select(vec!["/metrics", "/x/y", "metrics", ""]).prop_map(move |v| ("metrics_path".into(), s(v))),
        prop::sample::select(vec!["http", "https", "ftp"]).prop_map(move |v| ("scheme".to_string(), s(v))),
        prop::sample::select(vec![yaml("true"), yaml("false"), yaml("'yes'"), yaml("1")])
            .prop_map(|v| ("honor_labels".to_string(), v)),
        prop::sample::select(vec![yaml("100"), yaml("0"), yaml("-1"), yaml("'10'")])
            .prop_map(|v| ("sample_limit".to_string(), v)),
        prop::sample::select(vec![
            yaml("[{targets: ['a:1', 'b.example.com:9100'], labels: {env: prod}}]"),
            yaml("[{targets: []}]"),
            yaml("[{targets: 'a:1'}]"),
            yaml("[{targets: ['a:1'], extra: 1}]"),
            yaml("{targets: ['a:1']}"),
        ])
        .prop_map(|v| ("static_configs".to_string(), v)),
        prop::sample::select(vec![
            yaml("[{source_labels: [__name__], regex: 'go_.*', action: drop}]"),
            yaml("[{target_label: team, replacement: shop}]"),
            yaml("[{action: labelmap, regex: '__meta_kubernetes_pod_label_(.+)'}]"),
            yaml("[{action: hashmod, source_labels: [__address__], target_label: __tmp_hash, modulus: 4}]"),
            yaml("[{action: explode}]"),
            yaml("[{source_labels: __name__}]"),
            yaml("[{regex: [a]}]"),
        ])
        .prop_map(|v| ("relabel_configs".to_string(), v)),
        prop::sample::select(vec![
            yaml("[{role: pod}]"),
            yaml("[{role: service, namespaces: {names: [a, b]}}]"),
            yaml("[{role: endpoints}]"),
            yaml("{role: pod}"),
        ])
        .prop_map(|v| ("kubernetes_sd_configs".to_string(), v)),
        prop::sample::select(vec![yaml("{module: [http_2xx]}"), yaml("{module: http_2xx}")])
            .prop_map(|v| ("params".to_string(), v)),
        prop::sample::select(vec!["rule_files", "remote_write", "global", "unknown_option"])
            .prop_map(|k| (k.to_string(), Value::Null)),
    ]
    .boxed()
}

fn job_name() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => "[a-z][a-z0-9-]{0,8}".prop_map(Value::String),
        1 => Just(Value::String("kubernetes-pods".into())),
        1 => any::<String>().prop_map(Value::String),
        1 => Just(Value::Number(7.into())),
    ]
    .boxed()
}

/// A scrape config of generated fields, as YAML text; sometimes without job_name.
fn scrape_config() -> BoxedStrategy<String> {
    (prop::option::weighted(0.9, job_name()), prop::collection::vec(field(), 0..5))
        .prop_map(|(job, fields)| {
            let mut mapping = serde_yaml::Mapping::new();
            if let Some(job) = job {
                mapping.insert("job_name".into(), job);
            }
            for (key, value) in fields {
                mapping.insert(key.into(), value);
            }
            serde_yaml::to_string(&vec![Value::Mapping(mapping)]).expect("to YAML")
        })
        .boxed()
}

/// Generated extra scrape configs: whatever the renderer keeps, the real promtool accepts,
/// and the fixed structure is never touched (64 cases, two promtool runs each).
#[test]
fn generated_extra_configs_are_skipped_or_accepted_by_promtool() {
    let dir = PromtoolDir::new("generated");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let kept = std::cell::Cell::new(0);
    runner
        .run(&prop::collection::vec(scrape_config(), 1..4), |sources| {
            let sources: Vec<_> = sources
                .iter()
                .enumerate()
                .map(|(i, yaml)| source(&format!("prometheus-scraping-{i}/k"), yaml))
                .collect();
            let config = prometheus_config(&dir.input(sources.clone(), 1)).expect("renders");
            assert_fixed_structure(&config.yaml);
            let jobs = job_names(&config.yaml);
            prop_assert_eq!(jobs.len(), BUILTIN_JOBS + sources.len() - config.skipped.len());
            kept.set(kept.get() + jobs.len() - BUILTIN_JOBS);
            if let Err(output) = dir.check(&config.yaml) {
                return Err(TestCaseError::fail(format!("{output}\n{sources:#?}\n{}", config.yaml)));
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(kept.get() >= 16, "only {} generated configs kept: the generator is too hostile", kept.get());
}

#[test]
fn promtail_golden_has_one_client_with_the_cluster_label() {
    let value = parsed(&std::fs::read_to_string(golden_path("promtail")).expect("golden"));
    let clients = value["clients"].as_sequence().expect("clients");
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["url"].as_str(), Some(format!("{GATEWAY}/loki/api/v1/push").as_str()));
    assert_eq!(clients[0]["external_labels"]["cluster"].as_str(), Some(CLUSTER));
    assert_eq!(clients[0]["tls_config"]["ca_file"].as_str(), Some(format!("{CERTIFICATES_DIR}/ca.crt").as_str()));
}

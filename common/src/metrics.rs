//! The metrics registry of a binary: process metrics, build info, leadership and one
//! labelled sub-registry per controller. Label values never carry object names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The registry of one binary, shared by the admin server (which encodes it on every
/// scrape) and the controllers (which register into it at start-up).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    controllers: ControllerFamilies,
    writes: ApiWrites,
}

impl Metrics {
    /// A registry with `process_*` metrics, `mla_build_info{binary, version}` and the
    /// reconcile metrics every controller shares (`mla_reconciles_total`,
    /// `mla_reconcile_errors_total`, `mla_reconcile_duration_seconds`, each labelled with
    /// the controller's name) and `mla_api_writes_total` ([`ApiWrites`]).
    pub fn new(binary: &'static str) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let metrics = Self {
            registry: Arc::new(RwLock::new(root)),
            controllers: ControllerFamilies::default(),
            writes: ApiWrites::default(),
        };
        metrics.register("", |registry| {
            let build_info = Family::<BuildLabels, Gauge>::default();
            build_info
                .get_or_create(&BuildLabels {
                    binary: binary.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                })
                .set(1);
            registry.register("build_info", "Build of this binary; always 1", build_info);
            metrics.controllers.register(registry);
            registry.register(
                "api_writes",
                "Write requests sent to the Kubernetes API, by field manager, kind and verb; \
                 none at steady state",
                metrics.writes.0.clone(),
            );
        });
        metrics
    }

    /// The counter of write requests every [`crate::apply::Applier`] of the binary adds to.
    pub fn writes(&self) -> ApiWrites {
        self.writes.clone()
    }

    /// Runs `f` with a sub-registry whose metrics are named `mla_<prefix>_<name>` (or
    /// `mla_<name>` for an empty prefix): one per controller for the metrics only it has.
    /// Names must be unique across the binary.
    pub fn register(&self, prefix: &str, f: impl FnOnce(&mut Registry)) {
        let mut root = self.registry.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mla = root.sub_registry_with_prefix("mla");
        if prefix.is_empty() { f(mla) } else { f(mla.sub_registry_with_prefix(prefix)) }
    }

    /// The reconcile metrics of one controller.
    pub fn controller(&self, name: &'static str) -> ControllerMetrics {
        ControllerMetrics { controller: name, families: self.controllers.clone() }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    binary: String,
    version: String,
}

/// Labels of `mla_api_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The writer's field manager, `<binary>/<controller>`.
    pub manager: String,
    /// The object's kind.
    pub kind: String,
    /// `apply`, `apply_status`, `add_finalizer`, `remove_finalizer`, `delete`, and for the
    /// requests a controller sends itself, `create`, `patch` and `patch_status`.
    pub verb: &'static str,
}

/// Write requests sent to the Kubernetes API (`mla_api_writes_total`): at steady state a
/// controller writes nothing, so any rate here is work being done (or a write that does
/// not stick, which this shows by kind).
#[derive(Clone, Debug, Default)]
pub struct ApiWrites(Family<WriteLabels, Counter>);

impl ApiWrites {
    /// Counts one request.
    pub fn inc(&self, manager: &str, kind: &str, verb: &'static str) {
        self.0.get_or_create(&WriteLabels { manager: manager.to_string(), kind: kind.to_string(), verb }).inc();
    }
}

/// Labels of reconcile outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Name of the controller.
    pub controller: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Name of the controller.
    pub controller: &'static str,
    /// [`crate::Error::category`].
    pub category: &'static str,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Name of the controller.
    pub controller: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

#[derive(Clone, Debug)]
struct ControllerFamilies {
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily<ControllerLabels>,
}

impl Default for ControllerFamilies {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl ControllerFamilies {
    fn register(&self, registry: &mut Registry) {
        registry.register("reconciles", "Reconciles by controller and result", self.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and error category",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile",
            prometheus_client::registry::Unit::Seconds,
            self.duration.clone(),
        );
    }
}

/// The reconcile metrics of one controller.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    controller: &'static str,
    families: ControllerFamilies,
}

impl ControllerMetrics {
    /// Records one reconcile's outcome and duration.
    pub fn observe(&self, elapsed: Duration, error: Option<&crate::Error>) {
        self.observe_category(elapsed, error.map(crate::Error::category));
    }

    /// Records one reconcile's outcome and duration, with the error's category when it
    /// failed (for controllers whose errors are not all [`crate::Error`]s).
    pub fn observe_category(&self, elapsed: Duration, error: Option<&'static str>) {
        let controller = self.controller;
        self.families.duration.get_or_create(&ControllerLabels { controller }).observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.families.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        if let Some(category) = error {
            self.families.errors.get_or_create(&ErrorLabels { controller, category }).inc();
        }
    }
}

/// Labels of calls to an API outside Kubernetes (Grafana, Cortex, Loki).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExternalCallLabels {
    /// The API: `grafana`, `cortex`, `loki`.
    pub api: &'static str,
    /// Endpoint group, e.g. `orgs`, `datasources`, `alertmanager`, `rules`; never a path
    /// with names or ids in it.
    pub endpoint: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// HTTP status code, or `error` when no response arrived (connect failure, timeout).
    pub status: String,
}

/// Labels of external call durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExternalEndpointLabels {
    /// The API.
    pub api: &'static str,
    /// Endpoint group.
    pub endpoint: &'static str,
}

/// `mla_external_requests_total{api, endpoint, method, status}` and
/// `mla_external_request_duration_seconds{api, endpoint}`, shared by every HTTP client of
/// the binary. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ExternalApiMetrics {
    requests: Family<ExternalCallLabels, Counter>,
    duration: HistogramFamily<ExternalEndpointLabels>,
}

impl ExternalApiMetrics {
    /// Registers the families in `metrics`; call once per binary and clone the result.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self { requests: Family::default(), duration: Family::new_with_constructor(duration_histogram) };
        metrics.register("", |registry| {
            registry.register(
                "external_requests",
                "Calls to external APIs by api, endpoint group, method and status",
                this.requests.clone(),
            );
            registry.register_with_unit(
                "external_request_duration",
                "Duration of calls to external APIs",
                prometheus_client::registry::Unit::Seconds,
                this.duration.clone(),
            );
        });
        this
    }

    /// Records one call; `status` is `None` when no response arrived.
    pub fn observe(
        &self,
        api: &'static str,
        endpoint: &'static str,
        method: &'static str,
        status: Option<u16>,
        elapsed: Duration,
    ) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests.get_or_create(&ExternalCallLabels { api, endpoint, method, status }).inc();
        self.duration.get_or_create(&ExternalEndpointLabels { api, endpoint }).observe(elapsed.as_secs_f64());
    }

    /// Calls recorded so far with these labels (for tests and benchmarks).
    pub fn count(&self, api: &'static str, endpoint: &'static str, method: &'static str, status: Option<u16>) -> u64 {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests.get_or_create(&ExternalCallLabels { api, endpoint, method, status }).get()
    }
}

/// Labels of the certificate expiry gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateKindLabels {
    /// What the certificates are: `ca`, `gateway`, `client`.
    pub kind: &'static str,
}

/// `mla_certificate_expiry_earliest_timestamp_seconds{kind}`: the earliest notAfter (Unix
/// seconds) among the certificates of a kind that a controller manages. It remembers each
/// object's certificate (by name, never exported) and publishes the minimum per kind; a
/// kind without certificates has no series. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CertificateExpiry {
    earliest: Family<CertificateKindLabels, Gauge>,
    state: Arc<Mutex<ExpiryState>>,
}

/// Each object's notAfter by kind, and the same ordered by time per kind, so that a change
/// costs O(log n): every gateway reconcile records two certificates, and recomputing the
/// minimum over all of them each time was quadratic over a cold start of thousands of
/// Clusters.
#[derive(Debug, Default)]
struct ExpiryState {
    by_object: std::collections::HashMap<(&'static str, String), i64>,
    by_kind: BTreeMap<&'static str, std::collections::BTreeSet<(i64, String)>>,
}

impl ExpiryState {
    fn remove(&mut self, kind: &'static str, object: &str) -> bool {
        let Some(t) = self.by_object.remove(&(kind, object.to_string())) else { return false };
        if let Some(times) = self.by_kind.get_mut(kind) {
            times.remove(&(t, object.to_string()));
        }
        true
    }

    fn insert(&mut self, kind: &'static str, object: &str, t: i64) -> bool {
        match self.by_object.insert((kind, object.to_string()), t) {
            Some(old) if old == t => false,
            old => {
                let times = self.by_kind.entry(kind).or_default();
                if let Some(old) = old {
                    times.remove(&(old, object.to_string()));
                }
                times.insert((t, object.to_string()));
                true
            }
        }
    }

    fn earliest(&self, kind: &'static str) -> Option<i64> {
        self.by_kind.get(kind).and_then(|times| times.first()).map(|(t, _)| *t)
    }
}

impl CertificateExpiry {
    /// Registers the gauge in `metrics`; call once per binary and clone the result.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self { earliest: Family::default(), state: Arc::default() };
        metrics.register("", |registry| {
            registry.register(
                "certificate_expiry_earliest_timestamp_seconds",
                "Earliest notAfter (Unix seconds) of the certificates a controller manages, by kind",
                this.earliest.clone(),
            );
        });
        this
    }

    /// Records the notAfter of `object`'s certificate of `kind`; `None` (no certificate, or
    /// one that cannot be read) forgets it.
    pub fn set(&self, kind: &'static str, object: &str, not_after: Option<i64>) {
        let mut state = self.lock();
        let changed = match not_after {
            Some(t) => state.insert(kind, object, t),
            None => state.remove(kind, object),
        };
        if changed {
            self.publish(&state, kind);
        }
    }

    /// Forgets every certificate of `object`.
    pub fn forget(&self, object: &str) {
        let mut state = self.lock();
        let kinds: Vec<&'static str> = state.by_kind.keys().copied().collect();
        for kind in kinds {
            if state.remove(kind, object) {
                self.publish(&state, kind);
            }
        }
    }

    /// Forgets the certificates of every object for which `keep` is false (objects that
    /// are gone). Looks at every certificate: for a sweep now and then, not per change.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut state = self.lock();
        let gone: Vec<(&'static str, String)> =
            state.by_object.keys().filter(|(_, name)| !keep(name)).cloned().collect();
        for (kind, object) in gone {
            state.remove(kind, &object);
            self.publish(&state, kind);
        }
    }

    /// The published value of `kind` (for tests).
    pub fn earliest(&self, kind: &'static str) -> Option<i64> {
        self.lock().earliest(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: &ExpiryState, kind: &'static str) {
        match state.earliest(kind) {
            Some(t) => {
                self.earliest.get_or_create(&CertificateKindLabels { kind }).set(t);
            }
            None => {
                self.earliest.remove(&CertificateKindLabels { kind });
            }
        }
    }
}

/// The standard `process_*` metrics, read from procfs on each scrape (Linux only; on other
/// systems nothing is reported).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/self/stat` times; 100 on every Linux architecture we
/// ship for (the kernel's USER_HZ).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else { return Ok(()) };
        let counter = ConstCounter::new(stats.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", stats.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", stats.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors", stats.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", stats.max_fds),
            ("process_start_time_seconds", "Start time of the process since unix epoch in seconds", stats.start_time),
            ("process_threads", "Number of OS threads in the process", stats.threads),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time: f64,
    threads: f64,
}

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
        let threads = field(20)?;
        let start_ticks = field(22)?;
        let virtual_bytes = field(23)?;

        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb * 1024.0);
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Some(Self {
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time: boot_time + start_ticks / USER_HZ,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appliers_write_requests_are_counted_by_manager_kind_and_verb() {
        let metrics = Metrics::new("test-binary");
        let applier = crate::apply::Applier::new("test-binary/gateway", crate::leader::LeaderState::always())
            .counting(metrics.writes());
        applier.count::<k8s_openapi::api::core::v1::ConfigMap>("apply");
        applier.count::<k8s_openapi::api::core::v1::ConfigMap>("apply");
        applier.count::<k8s_openapi::api::core::v1::Secret>("delete");
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(r#"mla_api_writes_total{manager="test-binary/gateway",kind="ConfigMap",verb="apply"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"mla_api_writes_total{manager="test-binary/gateway",kind="Secret",verb="delete"} 1"#));
    }

    #[test]
    fn process_stats_are_read_from_procfs() {
        let stats = ProcessStats::read().expect("procfs is readable on Linux");
        assert!(stats.resident_bytes > 1_000_000.0, "rss {}", stats.resident_bytes);
        assert!(stats.threads >= 1.0);
        assert!(stats.open_fds >= 3.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!((now - stats.start_time).abs() < 3600.0, "start time {} now {now}", stats.start_time);
    }

    #[test]
    fn encodes_prefixed_controller_metrics_and_unprefixed_process_metrics() {
        let metrics = Metrics::new("test-binary");
        let controller = metrics.controller("widgets");
        controller.observe(Duration::from_millis(3), None);
        controller.observe(
            Duration::from_millis(5),
            Some(&crate::Error::InvalidSpec { kind: "Widget", object: "w".into(), reason: "bad".into() }),
        );
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(r#"mla_reconciles_total{controller="widgets",result="success"} 1"#), "{text}");
        assert!(
            text.contains(r#"mla_reconcile_errors_total{controller="widgets",category="invalid_spec"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mla_build_info{binary="test-binary",version=""#), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn external_calls_are_counted_by_api_endpoint_method_and_status() {
        let metrics = Metrics::new("test-binary");
        let external = ExternalApiMetrics::register(&metrics);
        external.observe("grafana", "orgs", "POST", Some(200), Duration::from_millis(2));
        external.observe("grafana", "orgs", "POST", None, Duration::from_millis(2));
        assert_eq!(external.count("grafana", "orgs", "POST", Some(200)), 1);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(
                r#"mla_external_requests_total{api="grafana",endpoint="orgs",method="POST",status="error"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("mla_external_request_duration_seconds_count"), "{text}");
    }

    #[test]
    fn certificate_expiry_publishes_the_earliest_per_kind_and_forgets_objects() {
        let metrics = Metrics::new("test-binary");
        let expiry = CertificateExpiry::register(&metrics);
        expiry.set("gateway", "c1", Some(2_000));
        expiry.set("gateway", "c2", Some(1_000));
        expiry.set("ca", "c1", Some(9_000));
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(r#"mla_certificate_expiry_earliest_timestamp_seconds{kind="gateway"} 1000"#), "{text}");
        assert!(text.contains(r#"mla_certificate_expiry_earliest_timestamp_seconds{kind="ca"} 9000"#), "{text}");
        assert!(!text.contains("c1") && !text.contains("c2"), "no object names: {text}");

        // Renewed: the later date counts.
        expiry.set("gateway", "c2", Some(5_000));
        assert_eq!(expiry.earliest("gateway"), Some(2_000));
        // c1 gone (deleted or MLA off): its certificates no longer count; a kind with none
        // left has no series.
        expiry.retain(|name| name != "c1");
        assert_eq!(expiry.earliest("gateway"), Some(5_000));
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(r#"mla_certificate_expiry_earliest_timestamp_seconds{kind="gateway"} 5000"#), "{text}");
        assert!(!text.contains(r#"kind="ca""#), "{text}");
        expiry.forget("c2");
        expiry.set("client", "c3", None);
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains("mla_certificate_expiry_earliest_timestamp_seconds{"), "{text}");
    }
}

//! The extra scrape configs users put into `prometheus-scraping*` and `monitoring-scraping*`
//! ConfigMaps: read, bounded, and checked one by one, so that a bad one is skipped with a
//! reason and never reaches `prometheus.yaml`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

/// Largest extra scrape config source (one ConfigMap key) that is read.
pub(super) const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Largest parsed tree of one source (after aliases are expanded).
const MAX_SOURCE_NODES: usize = 20_000;
/// Deepest nesting of one source.
const MAX_SOURCE_DEPTH: usize = 32;
/// Longest reason reported for a skipped config (reasons end up in Events).
const MAX_REASON_CHARS: usize = 300;

/// One source of extra scrape configs: a data key of a `prometheus-scraping*` ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraScrapeConfig {
    /// Where it comes from, `<ConfigMap>/<key>`; names it in [`SkippedScrapeConfig`] and
    /// orders the sources.
    pub source: String,
    /// A YAML list of scrape configs, or a single scrape config.
    pub yaml: String,
}

/// An extra scrape config that was left out of `prometheus.yaml`, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedScrapeConfig {
    /// The source (`<ConfigMap>/<key>`), with `[<index>]` when one element of a list was
    /// skipped.
    pub name: String,
    /// Why, for an Event.
    pub reason: String,
}

/// ConfigMaps in the agents' namespace whose name starts with one of these hold extra
/// scrape configs: `prometheus-scraping` (KKP before 2.22, Prometheus) and
/// `monitoring-scraping` (KKP since 2.22, Grafana Agent), so a cluster's custom scrape
/// configs keep working whichever KKP version they were written for.
pub const EXTRA_SCRAPE_CONFIG_PREFIXES: [&str; 2] = ["prometheus-scraping", "monitoring-scraping"];

/// The extra scrape config sources among `config_maps`: every data key of every ConfigMap
/// named `prometheus-scraping*` or `monitoring-scraping*` (binary data is ignored).
pub fn extra_scrape_configs(config_maps: &[ConfigMap]) -> Vec<ExtraScrapeConfig> {
    let mut sources = Vec::new();
    for config_map in config_maps {
        let Some(name) = config_map.metadata.name.as_deref() else { continue };
        if !EXTRA_SCRAPE_CONFIG_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        for (key, yaml) in config_map.data.iter().flatten() {
            sources.push(ExtraScrapeConfig { source: format!("{name}/{key}"), yaml: yaml.clone() });
        }
    }
    sources.sort_by(|a, b| a.source.cmp(&b.source));
    sources
}

/// Keys a scrape config may have (Prometheus 3.5), besides any `*_sd_configs`. Unknown keys
/// make Prometheus refuse the whole file, so they are refused here, per scrape config.
const SCRAPE_CONFIG_KEYS: &[&str] = &[
    "job_name",
    "scrape_interval",
    "scrape_timeout",
    "scrape_protocols",
    "fallback_scrape_protocol",
    "scrape_native_histograms",
    "always_scrape_classic_histograms",
    "convert_classic_histograms_to_nhcb",
    "scrape_failure_log_file",
    "metrics_path",
    "honor_labels",
    "honor_timestamps",
    "track_timestamps_staleness",
    "scheme",
    "params",
    "enable_compression",
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "follow_redirects",
    "enable_http2",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "http_headers",
    "static_configs",
    "relabel_configs",
    "metric_relabel_configs",
    "body_size_limit",
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "native_histogram_bucket_limit",
    "native_histogram_min_bucket_factor",
    "target_limit",
    "keep_dropped_targets",
    "metric_name_validation_scheme",
    "metric_name_escaping_scheme",
];
const DURATION_KEYS: &[&str] = &["scrape_interval", "scrape_timeout"];
const BOOL_KEYS: &[&str] = &[
    "honor_labels",
    "honor_timestamps",
    "track_timestamps_staleness",
    "enable_compression",
    "follow_redirects",
    "enable_http2",
    "proxy_from_environment",
    "scrape_native_histograms",
    "always_scrape_classic_histograms",
    "convert_classic_histograms_to_nhcb",
];
const COUNT_KEYS: &[&str] = &[
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "native_histogram_bucket_limit",
    "target_limit",
    "keep_dropped_targets",
];
const RELABEL_KEYS: &[&str] =
    &["source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"];
const RELABEL_ACTIONS: &[&str] = &[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
];

/// Parses and checks every source; returns the usable scrape configs (in source order,
/// unique job names) and what was skipped.
pub(super) fn checked_extra_scrape_configs(
    sources: &[ExtraScrapeConfig],
    reserved: &BTreeSet<&str>,
    global_interval_ms: u64,
) -> (Vec<Value>, Vec<SkippedScrapeConfig>) {
    let mut sources: Vec<&ExtraScrapeConfig> = sources.iter().collect();
    sources.sort_by(|a, b| a.source.cmp(&b.source));
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut skip = |name: String, reason: String| {
        let mut reason = reason.replace(['\n', '\r'], " ");
        if reason.chars().count() > MAX_REASON_CHARS {
            reason = reason.chars().take(MAX_REASON_CHARS).collect::<String>() + "...";
        }
        skipped.push(SkippedScrapeConfig { name, reason });
    };
    for source in sources {
        let elements = match parse_source(&source.yaml) {
            Ok(elements) => elements,
            Err(reason) => {
                skip(source.source.clone(), reason);
                continue;
            }
        };
        let single = elements.len() == 1;
        for (index, element) in elements.into_iter().enumerate() {
            let name = if single { source.source.clone() } else { format!("{}[{index}]", source.source) };
            match check_scrape_config(&element, global_interval_ms) {
                Err(reason) => skip(name, reason),
                Ok(job) if reserved.contains(job.as_str()) => {
                    skip(name, format!("job_name {job:?} is reserved for a built-in job"))
                }
                Ok(job) => {
                    if let Some(first) = seen.get(&job) {
                        skip(name, format!("duplicate job_name {job:?}, first defined in {first}"));
                    } else {
                        seen.insert(job, name);
                        kept.push(element);
                    }
                }
            }
        }
    }
    (kept, skipped)
}

/// The scrape configs of one source: a list, or a single mapping.
fn parse_source(yaml: &str) -> Result<Vec<Value>, String> {
    if yaml.len() > MAX_SOURCE_BYTES {
        return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
    }
    if yaml.trim().is_empty() {
        return Err("empty".into());
    }
    let budget = Cell::new(MAX_SOURCE_NODES);
    let value = BudgetedValue { budget: &budget, depth: 0 }
        .deserialize(serde_yaml::Deserializer::from_str(yaml))
        .map_err(|err| format!("not valid YAML: {err}"))?;
    check_tree(&value)?;
    match value {
        Value::Sequence(elements) if elements.is_empty() => Err("empty list".into()),
        Value::Sequence(elements) => Ok(elements),
        Value::Mapping(_) => Ok(vec![value]),
        Value::Null => Err("empty".into()),
        _ => Err("must be a list of scrape configs or a single scrape config (a mapping)".into()),
    }
}

/// Builds a [`Value`] while counting its nodes, and stops at [`MAX_SOURCE_NODES`] or
/// [`MAX_SOURCE_DEPTH`]. serde_yaml limits how often aliases are followed but not how big
/// the expanded tree gets: one wide anchor referenced by many aliases would otherwise
/// expand to billions of nodes before any check could look at it.
#[derive(Clone, Copy)]
struct BudgetedValue<'a> {
    budget: &'a Cell<usize>,
    depth: usize,
}

impl BudgetedValue<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        let left = self.budget.get();
        if left == 0 {
            return Err(E::custom(format_args!("more than {MAX_SOURCE_NODES} YAML nodes (after expanding aliases)")));
        }
        if self.depth > MAX_SOURCE_DEPTH {
            return Err(E::custom(format_args!("nested deeper than {MAX_SOURCE_DEPTH} levels")));
        }
        self.budget.set(left - 1);
        Ok(())
    }

    fn child(self) -> Self {
        Self { budget: self.budget, depth: self.depth + 1 }
    }
}

impl<'de> DeserializeSeed<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value without tags")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element_seed(self.child())? {
            elements.push(element);
        }
        Ok(Value::Sequence(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let value = map.next_value_seed(self.child())?;
            if mapping.contains_key(&key) {
                return Err(de::Error::custom("duplicate mapping key"));
            }
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("YAML tags are not allowed"))
    }
}

/// Refuses YAML that Prometheus cannot read into its structs: non-string keys, non-finite
/// numbers. (Size, depth and tags are refused while parsing, by [`BudgetedValue`].)
fn check_tree(value: &Value) -> Result<(), String> {
    match value {
        Value::Tagged(tagged) => Err(format!("YAML tag {} is not allowed", tagged.tag)),
        Value::Sequence(elements) => elements.iter().try_for_each(check_tree),
        Value::Mapping(mapping) => mapping.iter().try_for_each(|(key, value)| {
            if !key.is_string() {
                return Err("mapping keys must be strings".to_string());
            }
            check_tree(value)
        }),
        Value::Number(number) if number.as_f64().is_some_and(|f| !f.is_finite()) => {
            Err("non-finite numbers are not allowed".into())
        }
        _ => Ok(()),
    }
}

/// Checks one scrape config as far as Prometheus would refuse the whole file for it;
/// returns its job name.
fn check_scrape_config(value: &Value, global_interval_ms: u64) -> Result<String, String> {
    let mapping = value.as_mapping().ok_or("a scrape config must be a mapping")?;
    let job = match mapping.get("job_name") {
        None => return Err("missing job_name".into()),
        Some(Value::String(job)) => job.clone(),
        Some(_) => return Err("job_name must be a string".into()),
    };
    if job.is_empty() || job.len() > 128 || !job.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b)) {
        return Err(format!("job_name {job:?} must be 1 to 128 letters, digits, '_', '.', ':', '/' and '-'"));
    }
    let with_job = |reason: String| format!("job {job:?}: {reason}");
    for (key, field) in mapping {
        // Keys are strings: check_tree has refused the rest.
        let key = key.as_str().unwrap_or_default();
        check_field(key, field).map_err(with_job)?;
    }
    let duration = |key: &str| mapping.get(key).and_then(Value::as_str).and_then(parse_duration_ms);
    if let Some(timeout) = duration("scrape_timeout") {
        let interval = duration("scrape_interval").filter(|i| *i > 0).unwrap_or(global_interval_ms);
        if timeout > interval {
            return Err(with_job("scrape_timeout is longer than scrape_interval".into()));
        }
    }
    Ok(job)
}

fn check_field(key: &str, value: &Value) -> Result<(), String> {
    let sd_configs = key.ends_with("_sd_configs") && key.len() > "_sd_configs".len();
    if !sd_configs && !SCRAPE_CONFIG_KEYS.contains(&key) {
        return Err(format!("unknown field {key:?}"));
    }
    let err = |what: &str| Err(format!("{key} must be {what}"));
    if key == "kubernetes_sd_configs" {
        return check_list(key, value, check_kubernetes_sd_config);
    }
    if sd_configs {
        return match value.as_sequence() {
            Some(list) if list.iter().all(Value::is_mapping) => Ok(()),
            _ => err("a list of mappings"),
        };
    }
    if DURATION_KEYS.contains(&key) {
        return match value.as_str().and_then(parse_duration_ms) {
            Some(_) => Ok(()),
            None => err("a duration such as 30s or 1m"),
        };
    }
    if BOOL_KEYS.contains(&key) {
        return if value.is_bool() { Ok(()) } else { err("true or false") };
    }
    if COUNT_KEYS.contains(&key) {
        return if value.as_u64().is_some() { Ok(()) } else { err("a non-negative integer") };
    }
    match key {
        "scheme" => match value.as_str() {
            Some("http" | "https") => Ok(()),
            _ => err("http or https"),
        },
        "metrics_path" => match value.as_str() {
            Some(path) if path.starts_with('/') => Ok(()),
            _ => err("a path starting with /"),
        },
        "static_configs" => check_list(key, value, check_static_config),
        "relabel_configs" | "metric_relabel_configs" => check_list(key, value, check_relabel_config),
        "params" => match value.as_mapping() {
            Some(params)
                if params.values().all(|v| v.as_sequence().is_some_and(|l| l.iter().all(Value::is_string))) =>
            {
                Ok(())
            }
            _ => err("a mapping of names to lists of strings"),
        },
        "job_name" => Ok(()),
        "basic_auth" | "authorization" | "oauth2" | "tls_config" | "proxy_connect_header" | "http_headers" => {
            if value.is_mapping() { Ok(()) } else { err("a mapping") }
        }
        "scrape_protocols" => match value.as_sequence() {
            Some(list) if list.iter().all(Value::is_string) => Ok(()),
            _ => err("a list of strings"),
        },
        _ => {
            if value.is_string() {
                Ok(())
            } else {
                err("a string")
            }
        }
    }
}

fn check_list(key: &str, value: &Value, check: fn(&Mapping) -> Result<(), String>) -> Result<(), String> {
    let list = value.as_sequence().ok_or_else(|| format!("{key} must be a list"))?;
    for (index, element) in list.iter().enumerate() {
        let mapping = element.as_mapping().ok_or_else(|| format!("{key}[{index}] must be a mapping"))?;
        check(mapping).map_err(|reason| format!("{key}[{index}]: {reason}"))?;
    }
    Ok(())
}

/// Kubernetes discovery is checked more closely than other discovery mechanisms: it is the
/// one this system is about (the agents are built with it; other mechanisms may be
/// missing from an agent's build).
fn check_kubernetes_sd_config(config: &Mapping) -> Result<(), String> {
    const KEYS: &[&str] = &[
        "role",
        "api_server",
        "kubeconfig_file",
        "namespaces",
        "selectors",
        "attach_metadata",
        "basic_auth",
        "authorization",
        "oauth2",
        "bearer_token",
        "bearer_token_file",
        "tls_config",
        "proxy_url",
        "no_proxy",
        "proxy_from_environment",
        "proxy_connect_header",
        "http_headers",
        "follow_redirects",
        "enable_http2",
    ];
    const ROLES: &[&str] = &["node", "service", "pod", "endpoints", "endpointslice", "ingress"];
    let strings = |v: &Value| v.as_sequence().is_some_and(|l| l.iter().all(Value::is_string));
    for (key, value) in config {
        let key = key.as_str().unwrap_or_default();
        let valid = match key {
            "role" => value.as_str().is_some_and(|r| ROLES.contains(&r)),
            "namespaces" => value.as_mapping().is_some_and(|m| {
                m.iter().all(|(k, v)| match k.as_str() {
                    Some("names") => strings(v),
                    Some("own_namespace") => v.is_bool(),
                    _ => false,
                })
            }),
            "selectors" => value.as_sequence().is_some_and(|l| {
                l.iter().all(|s| {
                    s.as_mapping().is_some_and(|m| {
                        m.get("role").and_then(Value::as_str).is_some_and(|r| ROLES.contains(&r))
                            && m.iter()
                                .all(|(k, v)| matches!(k.as_str(), Some("role" | "label" | "field")) && v.is_string())
                    })
                })
            }),
            "attach_metadata" => value.as_mapping().is_some_and(|m| {
                m.iter().all(|(k, v)| matches!(k.as_str(), Some("node" | "namespace")) && v.is_bool())
            }),
            "follow_redirects" | "enable_http2" | "proxy_from_environment" => value.is_bool(),
            "basic_auth" | "authorization" | "oauth2" | "tls_config" | "proxy_connect_header" | "http_headers" => {
                value.is_mapping()
            }
            _ if KEYS.contains(&key) => value.is_string(),
            _ => return Err(format!("unknown field {key:?}")),
        };
        if !valid {
            return Err(format!("invalid {key}"));
        }
    }
    if !config.contains_key("role") {
        return Err("missing role".into());
    }
    Ok(())
}

fn check_static_config(config: &Mapping) -> Result<(), String> {
    for (key, value) in config {
        match key.as_str().unwrap_or_default() {
            "targets" => {
                if !value.as_sequence().is_some_and(|l| l.iter().all(Value::is_string)) {
                    return Err("targets must be a list of strings".into());
                }
            }
            "labels" => {
                if !value.as_mapping().is_some_and(|m| m.values().all(Value::is_string)) {
                    return Err("labels must map label names to strings".into());
                }
            }
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    Ok(())
}

fn check_relabel_config(config: &Mapping) -> Result<(), String> {
    for (key, value) in config {
        let key = key.as_str().unwrap_or_default();
        if !RELABEL_KEYS.contains(&key) {
            return Err(format!("unknown field {key:?}"));
        }
        let valid = match key {
            "source_labels" => value.as_sequence().is_some_and(|l| l.iter().all(Value::is_string)),
            "action" => value.as_str().is_some_and(|a| RELABEL_ACTIONS.contains(&a.to_ascii_lowercase().as_str())),
            "modulus" => value.as_u64().is_some(),
            // go-yaml reads a scalar into a string field; only lists and mappings fail.
            _ => !value.is_sequence() && !value.is_mapping() && !value.is_null(),
        };
        if !valid {
            return Err(format!("invalid {key}"));
        }
    }
    // Prometheus refuses these actions without a target label.
    let action = config.get("action").and_then(Value::as_str).unwrap_or("replace").to_ascii_lowercase();
    let needs_target = ["replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"];
    let target = config.get("target_label").and_then(Value::as_str).unwrap_or_default();
    if needs_target.contains(&action.as_str()) && target.is_empty() {
        return Err(format!("action {action} needs a target_label"));
    }
    if action == "hashmod" && config.get("modulus").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Err("action hashmod needs a positive modulus".into());
    }
    Ok(())
}

/// A Prometheus duration (`1h30m`, `15s`, `500ms`, `0`) in milliseconds: units in
/// descending order, each at most once.
fn parse_duration_ms(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..].bytes().take_while(u8::is_ascii_lowercase).count();
        if digits == 0 || letters == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit = &rest[digits..digits + letters];
        let position = UNITS.iter().position(|(name, _)| *name == unit)?;
        if position < next_unit {
            return None;
        }
        next_unit = position + 1;
        total = total.checked_add(number.checked_mul(UNITS[position].1)?)?;
        rest = &rest[digits + letters..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[test]
    fn durations() {
        for (text, ms) in
            [("0", 0), ("30s", 30_000), ("1m30s", 90_000), ("500ms", 500), ("1h", 3_600_000), ("2d", 172_800_000)]
        {
            assert_eq!(parse_duration_ms(text), Some(ms), "{text}");
        }
        for bad in ["", "30", "s", "1s1m", "1m1m", "1.5s", "-1s", "1 s", "1S", "99999999999999999999y"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_maps_with_the_prefix_are_sources() {
        let cm = |name: &str, data: &[(&str, &str)]| ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        };
        let sources = extra_scrape_configs(&[
            cm("prometheus-scraping-z", &[("b", "B"), ("a", "A")]),
            cm("prometheus", &[("prometheus.yaml", "x")]),
            cm("prometheus-scraping", &[("k", "K")]),
            cm("monitoring-scraping-kkp", &[("job.yaml", "J")]),
            cm("mla-monitoring-agent", &[("config.river", "x")]),
        ]);
        let names: Vec<_> = sources.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(
            names,
            [
                "monitoring-scraping-kkp/job.yaml",
                "prometheus-scraping-z/a",
                "prometheus-scraping-z/b",
                "prometheus-scraping/k"
            ]
        );
    }
}

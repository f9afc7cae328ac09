//! The form in which a ruler serves a rule group back. Cortex (and Loki, with the same
//! code) does not keep the YAML it was sent: it converts the group into its protobuf
//! form (`rulespb.RuleGroupDesc`), stores that, and rebuilds YAML from it on every read.
//! On the way, durations are rewritten in Prometheus' canonical form (`900s` -> `15m`,
//! `60s` -> `1m`), zero and empty fields disappear (`for: 0s`, `limit: 0`, `labels: {}`,
//! `annotations: {}`), label and annotation values become strings (`n: 1` -> `"n": "1"`),
//! and unknown keys are dropped. Comparing what we want with what the ruler serves
//! therefore compares both sides in this form; otherwise every resync posts every group
//! again (answers captured from Cortex 1.21.1 are in the tests below and in
//! `e2e/tests/cortex.rs`).

use serde_yaml::{Mapping, Value};

/// Group keys the ruler keeps, with how each is normalised.
const GROUP_DURATIONS: &[&str] = &["interval", "query_offset", "evaluation_delay"];
const RULE_DURATIONS: &[&str] = &["for", "keep_firing_for"];
const STRINGS: &[&str] = &["name", "record", "alert", "expr"];
const MAPS: &[&str] = &["labels", "annotations"];

/// `group` (one rule group) as the ruler would serve it back. Values the ruler would
/// refuse (an unparsable duration, say) are kept as they are: such a group is never
/// stored, so it never compares equal to what is stored.
pub fn rule_group(group: &Value) -> Value {
    let Value::Mapping(map) = group else { return group.clone() };
    let mut out = Mapping::new();
    for (key, value) in map {
        let Some(name) = key.as_str() else { continue };
        let normalised = match name {
            "name" => string(value),
            _ if GROUP_DURATIONS.contains(&name) => duration(value),
            "limit" => value.as_u64().filter(|n| *n > 0).map(Value::from).or_else(|| non_number(value)),
            "labels" => string_map(value),
            "source_tenants" => value.as_sequence().filter(|s| !s.is_empty()).map(|_| value.clone()),
            "rules" => value
                .as_sequence()
                .filter(|s| !s.is_empty())
                .map(|rules| Value::Sequence(rules.iter().map(rule).collect())),
            _ => None,
        };
        if let Some(normalised) = normalised {
            out.insert(key.clone(), normalised);
        }
    }
    Value::Mapping(out)
}

fn rule(rule: &Value) -> Value {
    let Value::Mapping(map) = rule else { return rule.clone() };
    let mut out = Mapping::new();
    for (key, value) in map {
        let Some(name) = key.as_str() else { continue };
        let normalised = if STRINGS.contains(&name) {
            string(value)
        } else if RULE_DURATIONS.contains(&name) {
            duration(value)
        } else if MAPS.contains(&name) {
            string_map(value)
        } else {
            None
        };
        if let Some(normalised) = normalised {
            out.insert(key.clone(), normalised);
        }
    }
    Value::Mapping(out)
}

/// A non-empty string field; a scalar of another type as its text.
fn string(value: &Value) -> Option<Value> {
    scalar_text(value).filter(|s| !s.is_empty()).map(Value::String)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A map of strings (labels, annotations), absent when empty.
fn string_map(value: &Value) -> Option<Value> {
    let Value::Mapping(map) = value else { return None };
    let out: Mapping = map
        .iter()
        .filter_map(|(k, v)| Some((Value::String(scalar_text(k)?), Value::String(scalar_text(v).unwrap_or_default()))))
        .collect();
    (!out.is_empty()).then_some(Value::Mapping(out))
}

/// A number where a number is wanted but not positive: what the ruler does with it is
/// its business (it refuses or drops it); kept only if it is not a number at all.
fn non_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) | Value::Null => None,
        other => Some(other.clone()),
    }
}

/// A duration in Prometheus' canonical form, absent when zero; unparsable text as is.
fn duration(value: &Value) -> Option<Value> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Some(other.clone()),
    };
    match parse_duration_ms(&text) {
        Some(0) => None,
        Some(ms) => Some(Value::String(format_duration_ms(ms))),
        None => Some(Value::String(text)),
    }
}

const UNITS: &[(&str, u64)] = &[
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Prometheus' duration syntax (`model.ParseDuration` in `prometheus/common`): units
/// `y w d h m s ms`, each at most once, in that order; `0` alone is zero.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    match text {
        "0" => return Some(0),
        "" => return None,
        _ => {}
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`: the longest unit that matches.
        let (index, (unit, factor)) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (unit, _))| rest.starts_with(unit) && !(*unit == "m" && rest.starts_with("ms")))
            .max_by_key(|(_, (unit, _))| unit.len())?;
        rest = &rest[unit.len()..];
        total = total.checked_add(number.checked_mul(*factor)?)?;
        next_unit = index + 1;
    }
    Some(total)
}

/// `model.Duration.String`: the largest units first, years and weeks only when they
/// divide the duration exactly (`90d`, not `12w6d`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    for (unit, factor) in UNITS {
        let exact_only = matches!(*unit, "y" | "w");
        if exact_only && !rest.is_multiple_of(*factor) {
            continue;
        }
        let count = rest / factor;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            rest -= count * factor;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML")
    }

    #[test]
    fn durations_as_prometheus_writes_them() {
        for (text, canonical) in [
            ("900s", Some("15m")),
            ("60s", Some("1m")),
            ("90s", Some("1m30s")),
            ("1d", Some("1d")),
            ("24h", Some("1d")),
            ("2h", Some("2h")),
            ("90d", Some("90d")),
            ("14d", Some("2w")),
            ("1500ms", Some("1s500ms")),
            ("1h30m", Some("1h30m")),
            ("0s", Some("0s")),
        ] {
            let ms = parse_duration_ms(text).unwrap_or_else(|| panic!("{text} parses"));
            assert_eq!(Some(format_duration_ms(ms).as_str()), canonical, "{text}");
        }
        for bad in ["", "5", "m", "5x", "1m1h", "1.5m", "-1m", "1m1m"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    /// What Cortex 1.21.1 answered (`GET /api/v1/rules/default/g1`) to what was posted.
    #[test]
    fn cortex_answers_compare_equal_to_what_was_sent() {
        let sent = yaml(
            "name: g1\ninterval: 60s\nlimit: 0\nrules:\n  - alert: A\n    expr: up == 0\n    for: 900s\n    keep_firing_for: 90s\n    labels:\n      severity: critical\n      n: 1\n    annotations: {}\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    for: 0s\n",
        );
        let served = yaml(
            "name: g1\ninterval: 1m\nrules:\n    - alert: A\n      expr: up == 0\n      for: 15m\n      keep_firing_for: 1m30s\n      labels:\n        \"n\": \"1\"\n        severity: critical\n    - record: job:up:sum\n      expr: sum by (job) (up)\n",
        );
        assert_ne!(sent, served, "the raw forms differ");
        assert_eq!(rule_group(&sent), rule_group(&served));
        assert_eq!(rule_group(&served), served, "what Cortex serves is already normal");

        // Group labels and offsets, zero durations dropped, unknown rule keys dropped.
        let sent = yaml(
            "name: g4\ninterval: 0s\nquery_offset: 30s\nevaluation_delay: 0s\nlabels: {team: a}\nrules:\n  - alert: B\n    expr: up\n    labels: {}\n    bogus: 1\n",
        );
        let served =
            yaml("name: g4\nquery_offset: 30s\nrules:\n    - alert: B\n      expr: up\nlabels:\n    team: a\n");
        assert_eq!(rule_group(&sent), rule_group(&served));

        // A multi-line expression is kept byte for byte (trailing newline included).
        let sent = yaml("name: g3\nrules:\n  - alert: A\n    expr: |\n      sum(rate(x[5m]))\n        > 3\n");
        let served = yaml("name: g3\nrules:\n    - alert: A\n      expr: |\n        sum(rate(x[5m]))\n          > 3\n");
        assert_eq!(rule_group(&sent), rule_group(&served));
    }

    #[test]
    fn real_changes_still_differ() {
        let base = yaml("name: g\nrules:\n  - alert: A\n    expr: up == 0\n    for: 15m\n");
        for changed in [
            "name: g\nrules:\n  - alert: A\n    expr: up == 1\n    for: 15m\n",
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    for: 16m\n",
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n",
            "name: g\ninterval: 30s\nrules:\n  - alert: A\n    expr: up == 0\n    for: 15m\n",
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    for: 15m\n    labels: {a: b}\n",
            "name: g\nrules:\n  - alert: B\n    expr: up == 0\n    for: 15m\n",
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    for: 15m\n  - alert: A\n    expr: up == 0\n    for: 15m\n",
        ] {
            assert_ne!(rule_group(&base), rule_group(&yaml(changed)), "{changed}");
        }
    }
}

//! Dashboards from ConfigMaps named `grafana-dashboards*` in the MLA namespace: each data
//! key holds one dashboard's JSON. They go into every managed org, tagged so that the ones
//! removed from the ConfigMaps can be found and deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::Value;

use super::client::DashboardHit;

/// Prefix of the ConfigMaps holding dashboards.
pub const CONFIG_MAP_PREFIX: &str = "grafana-dashboards";
/// Tag on every dashboard this controller manages.
pub const MANAGED_TAG: &str = "mla-managed";

/// A dashboard as this controller wants it in every org.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredDashboard {
    /// Its uid.
    pub uid: String,
    /// The ConfigMap it comes from.
    pub config_map: String,
    /// Its key there.
    pub key: String,
    /// The model to save: the ConfigMap's JSON with the uid set, the managed tag added,
    /// and no `id` or `version` (Grafana's own).
    pub model: Value,
}

/// A ConfigMap key that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The ConfigMap.
    pub config_map: String,
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Grafana's uid rule: 1 to 40 of `[A-Za-z0-9_-]`.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 40 && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A stable uid for a dashboard without one: `mla-` and a hash of where it comes from.
fn derived_uid(config_map: &str, key: &str) -> String {
    format!("mla-{}", mla_common::validation::config_hash(&format!("{config_map}/{key}")))
}

/// The model with what Grafana sets itself taken out, for comparing.
fn comparable(model: &Value) -> Value {
    let mut model = model.clone();
    if let Value::Object(map) = &mut model {
        map.remove("id");
        map.remove("version");
    }
    model
}

/// Whether a dashboard Grafana returned already is `desired`.
pub fn matches(current: &Value, desired: &DesiredDashboard) -> bool {
    comparable(current) == desired.model
}

/// Another dashboard of the org's General folder with `desired`'s title (ignoring case),
/// if any. Grafana up to 10.4 keeps slugs of titles unique per folder, 11.0 to 11.2 the
/// titles (`pkg/services/dashboards/database/database.go`
/// `getExistingDashboardByTitleAndFolder`); comparing titles without case covers both for
/// the titles people write.
pub fn title_holder<'a>(desired: &DesiredDashboard, hits: &'a [DashboardHit]) -> Option<&'a DashboardHit> {
    let title = desired.model.get("title").and_then(Value::as_str).unwrap_or_default().trim().to_lowercase();
    hits.iter().find(|h| h.uid != desired.uid && h.folder_uid.is_empty() && h.title.trim().to_lowercase() == title)
}

/// The dashboards of the `grafana-dashboards*` ConfigMaps among `config_maps`, and the
/// keys that cannot be served (not JSON, not an object, no title, a bad or duplicate uid).
pub fn desired_dashboards(config_maps: &[&ConfigMap]) -> (Vec<DesiredDashboard>, Vec<Problem>) {
    let mut sorted: Vec<&&ConfigMap> =
        config_maps.iter().filter(|cm| cm.name_any().starts_with(CONFIG_MAP_PREFIX)).collect();
    sorted.sort_by_key(|cm| cm.name_any());
    let mut dashboards: BTreeMap<String, DesiredDashboard> = BTreeMap::new();
    let mut problems = Vec::new();
    for cm in sorted {
        let cm_name = cm.name_any();
        for (key, text) in cm.data.clone().unwrap_or_default() {
            let problem = |reason: String| Problem { config_map: cm_name.clone(), key: key.clone(), reason };
            let mut model = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    problems.push(problem("not a JSON object".into()));
                    continue;
                }
                Err(error) => {
                    problems.push(problem(format!("invalid JSON: {error}")));
                    continue;
                }
            };
            if model.get("title").and_then(Value::as_str).is_none_or(|t| t.trim().is_empty()) {
                problems.push(problem("the dashboard has no title".into()));
                continue;
            }
            let uid = match model.get("uid") {
                None | Some(Value::Null) => derived_uid(&cm_name, &key),
                Some(Value::String(uid)) if valid_uid(uid) => uid.clone(),
                Some(_) => {
                    problems.push(problem("uid must be 1 to 40 of letters, digits, '-' and '_'".into()));
                    continue;
                }
            };
            if dashboards.contains_key(&uid) {
                problems.push(problem(format!("uid {uid} is used by another dashboard")));
                continue;
            }
            model.remove("id");
            model.remove("version");
            model.insert("uid".into(), Value::String(uid.clone()));
            let mut tags: Vec<Value> = match model.get("tags") {
                Some(Value::Array(tags)) => tags.iter().filter(|t| t.is_string()).cloned().collect(),
                _ => Vec::new(),
            };
            if !tags.iter().any(|t| t.as_str() == Some(MANAGED_TAG)) {
                tags.push(Value::String(MANAGED_TAG.into()));
            }
            model.insert("tags".into(), Value::Array(tags));
            dashboards.insert(
                uid.clone(),
                DesiredDashboard { uid, config_map: cm_name.clone(), key: key.clone(), model: Value::Object(model) },
            );
        }
    }
    (dashboards.into_values().collect(), problems)
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn dashboards_are_read_and_bad_keys_reported() {
        let good = config_map(
            "grafana-dashboards-nodes",
            &[
                ("nodes.json", r#"{"uid": "nodes", "title": "Nodes", "id": 7, "version": 3, "tags": ["k8s"]}"#),
                ("plain.json", r#"{"title": "Plain"}"#),
                ("broken.json", "{not json"),
                ("untitled.json", r#"{"uid": "u"}"#),
                ("zz-dup.json", r#"{"uid": "nodes", "title": "Again"}"#),
            ],
        );
        let ignored = config_map("other", &[("x.json", r#"{"title": "X"}"#)]);
        let (dashboards, problems) = desired_dashboards(&[&good, &ignored]);
        assert_eq!(dashboards.len(), 2, "{dashboards:?}");
        let nodes = dashboards.iter().find(|d| d.uid == "nodes").expect("nodes");
        assert_eq!(nodes.model, json!({"uid": "nodes", "title": "Nodes", "tags": ["k8s", MANAGED_TAG]}));
        let plain = dashboards.iter().find(|d| d.uid != "nodes").expect("plain");
        assert!(plain.uid.starts_with("mla-") && plain.uid.len() <= 40);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["broken.json", "untitled.json", "zz-dup.json"], "the first key (in order) keeps a uid");
    }

    #[test]
    fn grafana_fields_are_ignored_when_comparing() {
        let cm = config_map("grafana-dashboards", &[("a.json", r#"{"uid": "a", "title": "A"}"#)]);
        let (dashboards, _) = desired_dashboards(&[&cm]);
        let saved = json!({"uid": "a", "title": "A", "tags": [MANAGED_TAG], "id": 12, "version": 4});
        assert!(matches(&saved, &dashboards[0]));
        let edited = json!({"uid": "a", "title": "A (edited)", "tags": [MANAGED_TAG], "id": 12, "version": 5});
        assert!(!matches(&edited, &dashboards[0]));
    }

    #[test]
    fn a_title_held_by_another_dashboard_is_found() {
        let cm = config_map("grafana-dashboards", &[("a.json", r#"{"uid": "a", "title": "Nodes"}"#)]);
        let (dashboards, _) = desired_dashboards(&[&cm]);
        let hit = |uid: &str, title: &str, folder: &str| DashboardHit {
            uid: uid.into(),
            title: title.into(),
            folder_uid: folder.into(),
            tags: Vec::new(),
        };
        assert_eq!(title_holder(&dashboards[0], &[hit("a", "Nodes", "")]), None, "itself");
        assert_eq!(title_holder(&dashboards[0], &[hit("b", "Nodes", "f1")]), None, "another folder");
        assert_eq!(title_holder(&dashboards[0], &[hit("b", "Pods", "")]), None);
        let holder = hit("b", "nodes", "");
        assert_eq!(title_holder(&dashboards[0], std::slice::from_ref(&holder)), Some(&holder));
    }
}

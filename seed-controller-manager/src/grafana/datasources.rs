//! The datasources of a Cluster: Prometheus, Loki and Alertmanager, pointing at the
//! cluster's gateway read path, only for the features that are on.

use kube::ResourceExt;
use mla_common::api::Cluster;
use serde_json::{Value, json};

/// The kinds of datasource a cluster gets; each is also the prefix of its uid.
pub const KINDS: [&str; 3] = ["prometheus", "loki", "alertmanager"];

/// A datasource as this controller wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredDatasource {
    /// `<kind>-<cluster>`.
    pub uid: String,
    /// Shown to people; unique per org because it carries the cluster name.
    pub name: String,
    /// Plugin type.
    pub kind: &'static str,
    /// Where Grafana sends queries.
    pub url: String,
    /// Plugin settings.
    pub json_data: Value,
}

/// Grafana's longest datasource uid (`pkg/util/shortid_generator.go` `ValidateUID`: 1 to 40
/// of `[a-zA-Z0-9_-]`), enforced on create and update since Grafana 12
/// (`pkg/services/datasources/service/store.go`, feature `failWrongDSUID` on by default).
pub const MAX_UID: usize = 40;
/// Hex digits of the cluster-name hash in a shortened uid.
const HASH_DIGITS: usize = 10;

/// `<kind>-<cluster>` as KKP names them, when that fits in [`MAX_UID`] characters (so
/// datasources KKP made are adopted); else `<kind>-<start of cluster>-<hash>`: the cluster
/// name cut so that the whole is exactly 40 characters, and 10 hex digits of a hash of the
/// full name. Cluster names are DNS labels, so every character is one Grafana allows.
pub fn uid(kind: &str, cluster: &str) -> String {
    let full = format!("{kind}-{cluster}");
    if full.len() <= MAX_UID {
        return full;
    }
    let hash = mla_common::validation::config_hash(cluster);
    let keep = MAX_UID.saturating_sub(kind.len() + 2 + HASH_DIGITS);
    let start: String = cluster.chars().take(keep).collect();
    format!("{kind}-{start}-{}", &hash[..HASH_DIGITS.min(hash.len())])
}

/// Whether `uid` is one this controller makes (for any cluster).
pub fn is_managed_uid(uid: &str) -> bool {
    KINDS
        .iter()
        .any(|kind| uid.strip_prefix(kind).and_then(|rest| rest.strip_prefix('-')).is_some_and(|c| !c.is_empty()))
}

/// The cluster a managed datasource uid belongs to, among `clusters` (by their uids);
/// for a uid of no known cluster, what follows the kind (the cluster name, or its
/// shortened form).
pub fn owner<'a>(uid: &'a str, clusters: &'a std::collections::HashMap<String, String>) -> Option<&'a str> {
    if let Some(cluster) = clusters.get(uid) {
        return Some(cluster.as_str());
    }
    KINDS.iter().find_map(|kind| uid.strip_prefix(kind)?.strip_prefix('-')).filter(|c| !c.is_empty())
}

/// Every uid of the given clusters, mapped to its cluster.
pub fn uids_of<'a>(clusters: impl IntoIterator<Item = &'a str>) -> std::collections::HashMap<String, String> {
    clusters
        .into_iter()
        .flat_map(|cluster| KINDS.iter().map(move |kind| (uid(kind, cluster), cluster.to_string())))
        .collect()
}

/// The datasources of `cluster` whose gateway read path is `gateway_url`; none when MLA is
/// off. Alertmanager is there with either feature (KKP); Prometheus with monitoring; Loki
/// with logging.
pub fn cluster_datasources(cluster: &Cluster, gateway_url: &str) -> Vec<DesiredDatasource> {
    let Some(mla) = cluster.spec.mla.as_ref() else { return Vec::new() };
    let name = cluster.name_any();
    let human = cluster.spec.human_readable_name.as_deref().map(str::trim).filter(|h| !h.is_empty() && *h != name);
    let label = |kind: &str| match human {
        Some(human) => format!("{kind} {human} ({name})"),
        None => format!("{kind} {name}"),
    };
    let alertmanager_uid = uid("alertmanager", &name);
    let mut out = Vec::new();
    if mla.monitoring_enabled || mla.logging_enabled {
        out.push(DesiredDatasource {
            uid: alertmanager_uid.clone(),
            name: label("Alertmanager"),
            kind: "alertmanager",
            url: format!("{gateway_url}/api/prom"),
            json_data: json!({ "implementation": "cortex", "handleGrafanaManagedAlerts": true }),
        });
    }
    if mla.monitoring_enabled {
        out.push(DesiredDatasource {
            uid: uid("prometheus", &name),
            name: label("Prometheus"),
            kind: "prometheus",
            url: format!("{gateway_url}/api/prom"),
            json_data: json!({ "alertmanagerUid": alertmanager_uid, "httpMethod": "POST" }),
        });
    }
    if mla.logging_enabled {
        out.push(DesiredDatasource {
            uid: uid("loki", &name),
            name: label("Loki"),
            kind: "loki",
            // Grafana's Loki plugin appends /loki/api/v1/...; the gateway routes /loki/api/.
            url: gateway_url.to_string(),
            json_data: json!({ "alertmanagerUid": alertmanager_uid }),
        });
    }
    out
}

impl DesiredDatasource {
    /// The body of a create or update call.
    pub fn body(&self) -> Value {
        json!({
            "uid": self.uid,
            "name": self.name,
            "type": self.kind,
            "access": "proxy",
            "url": self.url,
            "isDefault": false,
            "basicAuth": false,
            "jsonData": self.json_data,
        })
    }

    /// Whether Grafana's list item `current` already says what we want.
    pub fn matches(&self, current: &Value) -> bool {
        let text = |key: &str| current.get(key).and_then(Value::as_str).unwrap_or_default();
        text("name") == self.name
            && text("type") == self.kind
            && text("access") == "proxy"
            && text("url") == self.url
            && !current.get("isDefault").and_then(Value::as_bool).unwrap_or(false)
            && !current.get("basicAuth").and_then(Value::as_bool).unwrap_or(false)
            && current.get("jsonData").cloned().unwrap_or_else(|| json!({})) == self.json_data
    }
}

/// A change to an org's datasources.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasourceChange {
    /// Create it.
    Create(DesiredDatasource),
    /// Replace it.
    Update(DesiredDatasource),
    /// Delete the datasource with this uid.
    Delete(String),
}

/// The changes that make an org's datasources (`current`, Grafana's list) hold exactly
/// `desired` among the ones this controller manages; others are left alone. Deletions come
/// first: a datasource replaced under a new uid (a long cluster name's KKP uid made before
/// Grafana 12) frees its name, which Grafana keeps unique per org, before the new one is
/// created.
///
/// Both sides are indexed by uid: the superuser org holds the datasources of every Cluster
/// (15,000 at 5,000 Clusters), where comparing each with each took most of the seed
/// manager's CPU during a cold start (perf: 85 %).
pub fn changes(desired: &[DesiredDatasource], current: &[Value]) -> Vec<DatasourceChange> {
    fn uid_of(ds: &Value) -> &str {
        ds.get("uid").and_then(Value::as_str).unwrap_or_default()
    }
    let wanted: std::collections::HashSet<&str> = desired.iter().map(|d| d.uid.as_str()).collect();
    let mut present: std::collections::HashMap<&str, &Value> = std::collections::HashMap::with_capacity(current.len());
    let mut out = Vec::new();
    for have in current {
        let uid = uid_of(have);
        // The first of duplicates counts, as the linear search this replaced found it.
        present.entry(uid).or_insert(have);
        if is_managed_uid(uid) && !wanted.contains(uid) {
            out.push(DatasourceChange::Delete(uid.to_string()));
        }
    }
    for want in desired {
        match present.get(want.uid.as_str()).copied() {
            None => out.push(DatasourceChange::Create(want.clone())),
            Some(have) if !want.matches(have) => out.push(DatasourceChange::Update(want.clone())),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mla_common::api::{ClusterSpec, MLASettings};

    use super::*;

    fn cluster(monitoring: bool, logging: bool) -> Cluster {
        Cluster::new(
            "c1",
            ClusterSpec {
                human_readable_name: Some("shop".into()),
                mla: Some(MLASettings {
                    monitoring_enabled: monitoring,
                    logging_enabled: logging,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    const URL: &str = "http://mla-gateway.cluster-c1.svc.cluster.local";

    #[test]
    fn datasources_follow_the_enabled_features() {
        let all = cluster_datasources(&cluster(true, true), URL);
        let uids: Vec<&str> = all.iter().map(|d| d.uid.as_str()).collect();
        assert_eq!(uids, ["alertmanager-c1", "prometheus-c1", "loki-c1"]);
        assert_eq!(all[1].url, format!("{URL}/api/prom"));
        assert_eq!(all[2].url, URL);
        assert_eq!(all[0].json_data["implementation"], "cortex");
        assert_eq!(all[1].name, "Prometheus shop (c1)");
        let monitoring = cluster_datasources(&cluster(true, false), URL);
        assert_eq!(monitoring.iter().map(|d| d.kind).collect::<Vec<_>>(), ["alertmanager", "prometheus"]);
        let logging = cluster_datasources(&cluster(false, true), URL);
        assert_eq!(logging.iter().map(|d| d.kind).collect::<Vec<_>>(), ["alertmanager", "loki"]);
        assert!(cluster_datasources(&cluster(false, false), URL).is_empty());
    }

    #[test]
    fn changes_create_update_delete_and_leave_others() {
        let desired = cluster_datasources(&cluster(true, false), URL);
        let mut settled: Vec<Value> = desired.iter().map(DesiredDatasource::body).collect();
        settled.push(json!({"uid": "team-prom", "name": "Team", "type": "prometheus"}));
        assert!(changes(&desired, &settled).is_empty(), "steady state");
        let mut drifted = settled.clone();
        drifted[1]["url"] = json!("http://elsewhere");
        drifted.push(json!({"uid": "loki-c1", "name": "Loki c1", "type": "loki"}));
        drifted.push(json!({"uid": "prometheus-gone", "name": "x", "type": "prometheus"}));
        let changes = changes(&desired, &drifted[1..]);
        assert_eq!(
            changes,
            vec![
                DatasourceChange::Delete("loki-c1".into()),
                DatasourceChange::Delete("prometheus-gone".into()),
                DatasourceChange::Create(desired[0].clone()),
                DatasourceChange::Update(desired[1].clone()),
            ]
        );
        assert!(is_managed_uid("loki-c1") && !is_managed_uid("loki-") && !is_managed_uid("lokic1"));
    }

    fn grafana_accepts(uid: &str) -> bool {
        !uid.is_empty()
            && uid.len() <= MAX_UID
            && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn uids_keep_kkp_names_while_they_fit_and_shorten_deterministically() {
        // alertmanager- is 13 characters: 27 of cluster name fit, 28 do not.
        let fits = "a".repeat(27);
        assert_eq!(uid("alertmanager", &fits), format!("alertmanager-{fits}"));
        assert_eq!(uid("alertmanager", &fits).len(), MAX_UID);
        let long = "b".repeat(28);
        let short = uid("alertmanager", &long);
        assert_eq!(short.len(), MAX_UID, "{short}");
        assert!(short.starts_with("alertmanager-bbbbbbbbbbbbbbbb-"), "{short}");
        assert_eq!(short, uid("alertmanager", &long), "deterministic");
        // prometheus- (11) and loki- (5) keep longer names whole.
        assert_eq!(uid("prometheus", &"c".repeat(29)), format!("prometheus-{}", "c".repeat(29)));
        assert_eq!(uid("loki", &"c".repeat(35)), format!("loki-{}", "c".repeat(35)));
        assert_eq!(uid("loki", &"c".repeat(36)).len(), MAX_UID);
        // Names sharing the kept start still differ; every form is one Grafana 12 accepts.
        let (x, y) = (format!("{}-x", "shop".repeat(10)), format!("{}-y", "shop".repeat(10)));
        for kind in KINDS {
            assert_ne!(uid(kind, &x), uid(kind, &y));
            for cluster in [x.as_str(), y.as_str(), "c1", &"d".repeat(63)] {
                let made = uid(kind, cluster);
                assert!(grafana_accepts(&made) && is_managed_uid(&made), "{made}");
                let known = uids_of([cluster]);
                assert_eq!(owner(&made, &known), Some(cluster));
            }
        }
        assert_eq!(owner("prometheus-gone", &uids_of(["c1"])), Some("gone"));
    }
}

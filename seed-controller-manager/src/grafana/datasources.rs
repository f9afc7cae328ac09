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

/// `<kind>-<cluster>`, as KKP names them.
pub fn uid(kind: &str, cluster: &str) -> String {
    format!("{kind}-{cluster}")
}

/// Whether `uid` is one this controller makes (for any cluster).
pub fn is_managed_uid(uid: &str) -> bool {
    KINDS
        .iter()
        .any(|kind| uid.strip_prefix(kind).and_then(|rest| rest.strip_prefix('-')).is_some_and(|c| !c.is_empty()))
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
/// `desired` among the ones this controller manages; others are left alone.
pub fn changes(desired: &[DesiredDatasource], current: &[Value]) -> Vec<DatasourceChange> {
    let uid_of = |ds: &Value| ds.get("uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut out = Vec::new();
    for want in desired {
        match current.iter().find(|ds| uid_of(ds) == want.uid) {
            None => out.push(DatasourceChange::Create(want.clone())),
            Some(have) if !want.matches(have) => out.push(DatasourceChange::Update(want.clone())),
            Some(_) => {}
        }
    }
    for have in current {
        let uid = uid_of(have);
        if is_managed_uid(&uid) && !desired.iter().any(|d| d.uid == uid) {
            out.push(DatasourceChange::Delete(uid));
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
                DatasourceChange::Create(desired[0].clone()),
                DatasourceChange::Update(desired[1].clone()),
                DatasourceChange::Delete("loki-c1".into()),
                DatasourceChange::Delete("prometheus-gone".into()),
            ]
        );
        assert!(is_managed_uid("loki-c1") && !is_managed_uid("loki-") && !is_managed_uid("lokic1"));
    }
}

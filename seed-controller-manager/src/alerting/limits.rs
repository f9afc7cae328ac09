//! Per-tenant Cortex limits: the tenant's entry under `overrides:` in Cortex's runtime
//! configuration (a ConfigMap in the MLA namespace that Cortex reloads), from the
//! MLAAdminSetting's `monitoringRateLimits`. Other tenants' entries and every other key
//! are left as they are.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use mla_common::api::MonitoringRateLimitSettings;
use serde_yaml::{Mapping, Value};

use super::AlertingError;

/// The tenant's overrides, KKP's mapping of setting to Cortex limit name; only positive
/// values (zero or absent means Cortex's default). `None` when nothing is set.
pub fn cortex_overrides(limits: Option<&MonitoringRateLimitSettings>) -> Option<Mapping> {
    let limits = limits?;
    let mut map = Mapping::new();
    for (name, value) in [
        ("ingestion_rate", limits.ingestion_rate),
        ("ingestion_burst_size", limits.ingestion_burst_size),
        ("max_series_per_metric", limits.max_series_per_metric),
        ("max_series_per_user", limits.max_series_total),
        ("max_samples_per_query", limits.max_samples_per_query),
        ("max_series_per_query", limits.max_series_per_query),
    ] {
        if let Some(value) = value.filter(|v| *v > 0) {
            map.insert(Value::from(name), Value::from(i64::from(value)));
        }
    }
    (!map.is_empty()).then_some(map)
}

/// The runtime configuration with `tenant`'s entry set to `overrides` (removed for
/// `None`); `Ok(None)` when it already says that.
pub fn update_runtime_config(text: &str, tenant: &str, overrides: Option<&Mapping>) -> Result<Option<String>, String> {
    let mut root = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Mapping::new(),
        Ok(Value::Mapping(map)) => map,
        Ok(_) => return Err("the runtime configuration is not a YAML mapping".into()),
        Err(e) => return Err(format!("the runtime configuration is not YAML: {e}")),
    };
    let mut entries = match root.get("overrides") {
        None | Some(Value::Null) => Mapping::new(),
        Some(Value::Mapping(map)) => map.clone(),
        Some(_) => return Err("overrides in the runtime configuration is not a mapping".into()),
    };
    let key = Value::from(tenant);
    let current = entries.get(&key);
    let unchanged = match (current, overrides) {
        (None, None) => true,
        (Some(Value::Mapping(have)), Some(want)) => have == want,
        _ => false,
    };
    if unchanged {
        return Ok(None);
    }
    match overrides {
        Some(want) => {
            entries.insert(key, Value::Mapping(want.clone()));
        }
        None => {
            entries.remove(&key);
        }
    }
    root.insert(Value::from("overrides"), Value::Mapping(entries));
    serde_yaml::to_string(&Value::Mapping(root)).map(Some).map_err(|e| e.to_string())
}

/// Where the runtime configuration lives.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Namespace of the ConfigMap (the MLA namespace).
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Key of the YAML in it.
    pub key: String,
}

/// Why a limits change was not made.
#[derive(Debug)]
pub enum LimitsOutcome {
    /// The entry is as wanted (written or already so).
    Done,
    /// The ConfigMap does not exist (and an entry was wanted).
    Missing,
    /// The ConfigMap holds something that is not a runtime configuration.
    Unreadable(String),
}

/// Sets (or removes) `tenant`'s entry: read, change, write with the read resourceVersion
/// as precondition, again on conflict (others write this ConfigMap too). When the cached
/// copy (`cached`, a reflector of that ConfigMap) already holds the entry as wanted,
/// nothing is read or written; any change is made on a fresh read.
pub async fn sync(
    client: &kube::Client,
    applier: &mla_common::apply::Applier,
    config: &RuntimeConfig,
    cached: &kube::runtime::reflector::Store<ConfigMap>,
    tenant: &str,
    overrides: Option<&Mapping>,
) -> Result<LimitsOutcome, AlertingError> {
    if let Some(current) = cached.get(&kube::runtime::reflector::ObjectRef::new(&config.name).within(&config.namespace))
    {
        let text = current.data.as_ref().and_then(|d| d.get(&config.key)).map(String::as_str).unwrap_or_default();
        if let Ok(None) = update_runtime_config(text, tenant, overrides) {
            return Ok(LimitsOutcome::Done);
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    let object = format!("{}/{}", config.namespace, config.name);
    let kube_error = |verb: &'static str, source: kube::Error| {
        AlertingError::Kube(mla_common::Error::kube(verb, "ConfigMap", object.clone(), source))
    };
    for _ in 0..5 {
        let Some(current) = api.get_opt(&config.name).await.map_err(|e| kube_error("get", e))? else {
            return Ok(if overrides.is_some() { LimitsOutcome::Missing } else { LimitsOutcome::Done });
        };
        let text = current.data.as_ref().and_then(|d| d.get(&config.key)).cloned().unwrap_or_default();
        let updated = match update_runtime_config(&text, tenant, overrides) {
            Ok(None) => return Ok(LimitsOutcome::Done),
            Ok(Some(updated)) => updated,
            Err(reason) => return Ok(LimitsOutcome::Unreadable(reason)),
        };
        applier.ensure_leader("patch", &object)?;
        // The resourceVersion makes the patch a test-and-set: 409 if someone wrote since.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "data": {config.key.as_str(): updated},
        });
        let params = PatchParams { field_manager: Some(applier.field_manager().to_string()), ..Default::default() };
        applier.count::<ConfigMap>("patch");
        match api.patch(&config.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(LimitsOutcome::Done),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(kube_error("patch", error)),
        }
    }
    Err(AlertingError::Conflict { object })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MonitoringRateLimitSettings {
        MonitoringRateLimitSettings {
            ingestion_rate: Some(100),
            ingestion_burst_size: Some(200),
            max_series_per_metric: Some(0),
            max_series_total: Some(5000),
            query_rate: Some(7),
            query_burst_size: Some(8),
            max_samples_per_query: None,
            max_series_per_query: Some(30),
        }
    }

    #[test]
    fn kkp_names_and_only_positive_values() {
        let map = cortex_overrides(Some(&limits())).expect("some limits");
        let text = serde_yaml::to_string(&map).unwrap_or_default();
        assert_eq!(
            text,
            "ingestion_rate: 100\ningestion_burst_size: 200\nmax_series_per_user: 5000\nmax_series_per_query: 30\n"
        );
        assert_eq!(cortex_overrides(None), None);
        assert_eq!(cortex_overrides(Some(&MonitoringRateLimitSettings::default())), None);
    }

    #[test]
    fn other_tenants_and_keys_stay() {
        let text = "multi_kv_config:\n  primary: consul\noverrides:\n  other:\n    ingestion_rate: 5\n";
        let map = cortex_overrides(Some(&limits()));
        let updated = update_runtime_config(text, "c1", map.as_ref()).expect("valid").expect("changed");
        let value: Value = serde_yaml::from_str(&updated).unwrap_or_default();
        assert_eq!(value["overrides"]["other"]["ingestion_rate"], Value::from(5));
        assert_eq!(value["overrides"]["c1"]["ingestion_rate"], Value::from(100));
        assert_eq!(value["multi_kv_config"]["primary"], Value::from("consul"));
        assert_eq!(update_runtime_config(&updated, "c1", map.as_ref()), Ok(None), "no change, no write");
        let removed = update_runtime_config(&updated, "c1", None).expect("valid").expect("changed");
        let value: Value = serde_yaml::from_str(&removed).unwrap_or_default();
        assert!(value["overrides"].get("c1").is_none());
        assert_eq!(value["overrides"]["other"]["ingestion_rate"], Value::from(5));
        assert_eq!(update_runtime_config(&removed, "c1", None), Ok(None));
    }

    #[test]
    fn empty_and_garbage() {
        let map = cortex_overrides(Some(&limits()));
        assert!(update_runtime_config("", "c1", map.as_ref()).expect("valid").is_some());
        assert!(update_runtime_config("overrides:\n", "c1", map.as_ref()).expect("valid").is_some());
        assert_eq!(update_runtime_config("", "c1", None), Ok(None));
        assert!(update_runtime_config("- a", "c1", None).is_err());
        assert!(update_runtime_config("overrides: 3", "c1", None).is_err());
        assert!(update_runtime_config("a: [", "c1", None).is_err());
    }
}

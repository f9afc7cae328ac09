//! The tenant's Alertmanager configuration: the default KKP creates, reading the user's
//! Secret into the body Cortex takes, and deciding whether Cortex already holds it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// The configuration a new cluster starts with, KKP's default (`resources.
/// DefaultAlertmanagerConfig`): every alert routed to the receiver `'null'`, which has no
/// notifier, so nothing is sent and no notification fails until the user sets a real one.
/// In the body shape Cortex takes.
pub const DEFAULT_CONFIG: &str = r#"template_files: {}
alertmanager_config: |
  route:
    receiver: 'null'
  receivers:
    - name: 'null'
"#;

/// The body of Cortex's `POST /api/v1/alerts` and answer of `GET /api/v1/alerts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Template file name to content.
    #[serde(default)]
    pub template_files: BTreeMap<String, String>,
    /// The Alertmanager configuration, as a YAML string.
    #[serde(default)]
    pub alertmanager_config: String,
}

impl TenantConfig {
    /// The YAML body to send.
    pub fn to_body(&self) -> Result<String, String> {
        serde_yaml::to_string(self).map_err(|e| e.to_string())
    }

    /// Whether `other` means the same configuration: same templates, and an
    /// `alertmanager_config` that parses to the same YAML (Cortex stores the string as
    /// sent, so this is normally plain equality).
    pub fn same_as(&self, other: &TenantConfig) -> bool {
        if self.template_files != other.template_files {
            return false;
        }
        if self.alertmanager_config == other.alertmanager_config {
            return true;
        }
        let parse = |text: &str| serde_yaml::from_str::<Value>(text).ok();
        matches!((parse(&self.alertmanager_config), parse(&other.alertmanager_config)), (Some(a), Some(b)) if a == b)
    }
}

/// Reads the Secret's `alertmanager.yaml`: either Cortex's body shape
/// (`template_files`, `alertmanager_config`) as KKP stores it, or a bare Alertmanager
/// configuration (wrapped without templates). Refuses what cannot be a configuration:
/// not YAML, not a mapping, an empty or unparsable `alertmanager_config`.
pub fn parse_secret_config(text: &str) -> Result<TenantConfig, String> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("alertmanager.yaml is not YAML: {e}"))?;
    let Value::Mapping(map) = &value else { return Err("alertmanager.yaml is not a YAML mapping".into()) };
    let config = if map.contains_key("alertmanager_config") || map.contains_key("template_files") {
        serde_yaml::from_value::<TenantConfig>(value.clone()).map_err(|e| {
            format!(
                "alertmanager.yaml: template_files must map names to text and alertmanager_config must be a string: {e}"
            )
        })?
    } else {
        TenantConfig { template_files: BTreeMap::new(), alertmanager_config: text.to_string() }
    };
    if config.alertmanager_config.trim().is_empty() {
        return Err("alertmanager.yaml has an empty alertmanager_config".into());
    }
    match serde_yaml::from_str::<Value>(&config.alertmanager_config) {
        Ok(Value::Mapping(_)) => Ok(config),
        Ok(_) => Err("alertmanager_config is not a YAML mapping".into()),
        Err(e) => Err(format!("alertmanager_config is not YAML: {e}")),
    }
}

/// Reads Cortex's answer to `GET /api/v1/alerts`.
pub fn parse_cortex_config(body: &str) -> Result<TenantConfig, String> {
    serde_yaml::from_str(body).map_err(|e| format!("unreadable Alertmanager configuration from Cortex: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_valid_configuration() {
        let config = parse_secret_config(DEFAULT_CONFIG).expect("parses");
        assert!(config.template_files.is_empty());
        // KKP's default: one receiver that sends nothing, so no notification ever fails.
        assert!(config.alertmanager_config.contains("receiver: 'null'"));
        assert!(!config.alertmanager_config.contains("_configs"), "no notifier: {}", config.alertmanager_config);
        // That Cortex's Alertmanager runs it is checked against real Cortex
        // (tests/alerting_controller.rs).
    }

    #[test]
    fn bare_configurations_are_wrapped() {
        let bare = "route:\n  receiver: a\nreceivers:\n  - name: a\n";
        let config = parse_secret_config(bare).expect("parses");
        assert_eq!(config.alertmanager_config, bare);
        assert!(config.to_body().expect("serializes").contains("alertmanager_config:"));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "a: [",
            "- a list",
            "alertmanager_config: ''",
            "alertmanager_config: {route: 1}",
            "alertmanager_config: 'just text'",
            "template_files: 3\nalertmanager_config: 'route: {}'",
        ] {
            assert!(parse_secret_config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn same_config_compares_by_meaning() {
        let a = TenantConfig { template_files: BTreeMap::new(), alertmanager_config: "route: {receiver: a}\n".into() };
        let b = TenantConfig { template_files: BTreeMap::new(), alertmanager_config: "route:\n  receiver: a\n".into() };
        assert!(a.same_as(&b));
        let c = TenantConfig { alertmanager_config: "route:\n  receiver: b\n".into(), ..b.clone() };
        assert!(!a.same_as(&c));
        let d = TenantConfig { template_files: [("t".to_string(), "x".to_string())].into(), ..b };
        assert!(!a.same_as(&d));
        // What Cortex answers round-trips to what was sent.
        let sent = parse_secret_config(DEFAULT_CONFIG).expect("parses");
        let answer = parse_cortex_config(&sent.to_body().expect("serializes")).expect("parses");
        assert!(sent.same_as(&answer));
    }
}

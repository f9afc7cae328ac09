use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConditionStatus, LocalObjectReference};

/// The only name an Alertmanager may have in a cluster namespace.
pub const ALERTMANAGER_NAME: &str = "alertmanager";
/// Key of the Alertmanager configuration in its Secret.
pub const ALERTMANAGER_CONFIG_KEY: &str = "alertmanager.yaml";

/// The Alertmanager configuration of one cluster's tenant.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "Alertmanager",
    plural = "alertmanagers",
    namespaced,
    status = "AlertmanagerStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "The Alertmanager configuration of one cluster's tenant, read from the Secret spec.configSecret (key alertmanager.yaml).",
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.configSecret.name"),
    printcolumn(name = "Config", type_ = "string", json_path = ".status.configStatus.status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSpec {
    /// The Secret in this namespace whose key `alertmanager.yaml` holds the configuration.
    pub config_secret: LocalObjectReference,
}

/// Observed state of an Alertmanager.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerStatus {
    /// Whether the configuration was accepted by the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_status: Option<AlertmanagerConfigurationStatus>,
}

/// Outcome of the last push of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerConfigurationStatus {
    /// `True` when the configuration is active, `False` when it was refused (KKP's
    /// values: a core/v1 ConditionStatus; a plain string in the schema, as in KKP's CRD).
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    /// When the configuration was last pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// Why the last push failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

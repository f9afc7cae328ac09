use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only name an MLAAdminSetting may have in a cluster namespace.
pub const MLA_ADMIN_SETTING_NAME: &str = "mla-admin-settings";

/// Per-cluster limits the platform team sets for the cluster's tenant.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "MLAAdminSetting",
    plural = "mlaadminsettings",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "Rate and size limits of one cluster's tenant in Cortex, Loki and the MLA gateway; named mla-admin-settings in the cluster namespace.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MLAAdminSettingSpec {
    /// Name of the Cluster these settings are for.
    #[schemars(length(min = 1))]
    pub cluster_name: String,
    /// Limits of the metrics tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_rate_limits: Option<MonitoringRateLimitSettings>,
    /// Limits of the logs tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_rate_limits: Option<LoggingRateLimitSettings>,
}

/// Cortex limits of a tenant; zero or absent means the backend's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringRateLimitSettings {
    /// Samples per second accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_rate: Option<i32>,
    /// Samples accepted in one burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_burst_size: Option<i32>,
    /// Active series per metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_series_per_metric: Option<i32>,
    /// Active series in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_series_total: Option<i32>,
    /// Queries per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub query_rate: Option<i32>,
    /// Queries accepted in one burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub query_burst_size: Option<i32>,
    /// Samples one query may load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_samples_per_query: Option<i32>,
    /// Series one query may return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_series_per_query: Option<i32>,
}

/// Loki limits of a tenant; zero or absent means the backend's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingRateLimitSettings {
    /// Log lines per second accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_rate: Option<i32>,
    /// Log lines accepted in one burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ingestion_burst_size: Option<i32>,
    /// Queries per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub query_rate: Option<i32>,
    /// Queries accepted in one burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub query_burst_size: Option<i32>,
}

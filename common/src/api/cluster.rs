use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Conditions, ExposeStrategy};

/// Label on a Cluster naming its project.
pub const PROJECT_ID_LABEL: &str = "project-id";
/// Label on a Cluster naming the controller-manager worker that serves it (KKP's
/// `worker-name`): a manager serves only Clusters whose label equals its own worker name,
/// and with the default empty name only Clusters without the label.
pub const WORKER_NAME_LABEL: &str = "worker-name";

/// A user cluster, as the seed sees it. KKP's own Cluster CRD requires more spec fields
/// (version, cloud, network); this one requires only what MLA needs, and the controllers
/// read either.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    status = "ClusterStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A user cluster whose control plane runs in the seed namespace status.namespaceName; spec.mla switches its monitoring and logging on.",
    printcolumn(name = "Human Name", type_ = "string", json_path = ".spec.humanReadableName"),
    printcolumn(name = "Project", type_ = "string", json_path = ".metadata.labels.project-id"),
    printcolumn(name = "Monitoring", type_ = "boolean", json_path = ".spec.mla.monitoringEnabled"),
    printcolumn(name = "Logging", type_ = "boolean", json_path = ".spec.mla.loggingEnabled"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".status.extendedHealth.mlaGateway"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = add_pause)]
pub struct ClusterSpec {
    /// Name shown to people; the object name is the cluster ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_readable_name: Option<String>,
    /// How the cluster's endpoints (among them the MLA gateway's write path) are exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_strategy: Option<ExposeStrategy>,
    /// Monitoring and logging of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<MLASettings>,
}

/// KKP's `spec.pause` (a paused Cluster is left alone by every controller), in the schema
/// so that the API server keeps it. It is not a field of [`ClusterSpec`] because struct
/// literals of `ClusterSpec` throughout the workspace would all have to change;
/// seed-controller-manager reads it through its own projection of the Cluster
/// (`seed_controller_manager::scope`).
fn add_pause(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
        properties.insert(
            "pause".into(),
            serde_json::json!({
                "description": "Leave the cluster alone: no controller changes anything for a paused Cluster (KKP's semantics).",
                "type": "boolean",
                "default": false,
            }),
        );
    }
}

/// Monitoring, logging and alerting settings of a user cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MLASettings {
    /// Run the metrics agent (Prometheus in agent mode) and the metrics path.
    #[serde(default)]
    pub monitoring_enabled: bool,
    /// Run the log agent (Promtail) and the logs path.
    #[serde(default)]
    pub logging_enabled: bool,
    /// Replicas of the metrics agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub monitoring_replicas: Option<i32>,
    /// Resource requests and limits of the metrics agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_resources: Option<ResourceRequirements>,
    /// Resource requests and limits of the log agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_resources: Option<ResourceRequirements>,
}

/// Health of one component, as KKP reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthStatus {
    /// Not running or not ready.
    HealthStatusDown,
    /// Running and ready.
    HealthStatusUp,
    /// Being set up or rolled out.
    HealthStatusProvisioning,
}

/// Observed state of a Cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Seed namespace of the cluster's control plane, `cluster-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_name: Option<String>,
    /// Where the cluster's API server is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<ClusterAddress>,
    /// Conditions keyed by type (KKP's map shape). As in KKP's CRD, every condition must
    /// carry `kubermaticVersion`, `lastHeartbeatTime` and `status`.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    #[schemars(transform = require_kkp_condition_fields)]
    pub conditions: Conditions,
    /// Health of the cluster's components; KKP reports many more, this system writes the
    /// MLA ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_health: Option<ExtendedClusterHealth>,
}

/// KKP's Cluster CRD requires these in every condition; ours does too, so that a writer
/// that forgets them fails against our CRDs as it would against KKP's.
fn require_kkp_condition_fields(schema: &mut schemars::Schema) {
    if let Some(condition) = schema.get_mut("additionalProperties").and_then(serde_json::Value::as_object_mut) {
        condition.insert("required".into(), serde_json::json!(["kubermaticVersion", "lastHeartbeatTime", "status"]));
    }
}

/// Addresses of a user cluster's control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddress {
    /// External URL of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Port of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i32>,
    /// DNS name under which the cluster is reached from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// URL of the API server inside the seed.
    #[serde(default, rename = "internalURL", skip_serializing_if = "Option::is_none")]
    pub internal_url: Option<String>,
    /// IP address external_name resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// Health of the MLA components of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedClusterHealth {
    /// The cluster's MLA gateway in the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla_gateway: Option<HealthStatus>,
    /// The metrics agent in the user cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<HealthStatus>,
    /// The log agent in the user cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<HealthStatus>,
    /// The tenant's Alertmanager configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager_config: Option<HealthStatus>,
    /// Health KKP reports for its other components, kept as they are.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Cluster {
    /// The project this cluster belongs to (label `project-id`).
    pub fn project_id(&self) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(PROJECT_ID_LABEL).map(String::as_str)
    }

    /// Whether any MLA feature is switched on.
    pub fn mla_enabled(&self) -> bool {
        self.spec.mla.as_ref().is_some_and(|m| m.monitoring_enabled || m.logging_enabled)
    }

    /// The worker name this Cluster is served by (label `worker-name`; empty without it).
    pub fn worker_name(&self) -> &str {
        self.metadata.labels.as_ref().and_then(|l| l.get(WORKER_NAME_LABEL)).map_or("", String::as_str)
    }

    /// The condition of type `condition_type` in the status, if any.
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.get(condition_type)
    }

    /// The reference that makes this cluster the controlling owner of an object, so that the
    /// garbage collector removes the object with the cluster.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: Cluster::api_version(&()).into_owned(),
            kind: Cluster::kind(&()).into_owned(),
            name: self.name_any(),
            uid: self.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_reference_names_the_cluster() {
        let mut cluster = Cluster::new("abc123", ClusterSpec::default());
        cluster.metadata.uid = Some("0000-1111".into());
        assert_eq!(
            cluster.owner_reference(),
            OwnerReference {
                api_version: "kubermatic.k8c.io/v1".into(),
                kind: "Cluster".into(),
                name: "abc123".into(),
                uid: "0000-1111".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }
        );
    }
}

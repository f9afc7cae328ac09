use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, ExposeStrategy, ObjectReference};

/// A seed cluster, registered in the master cluster.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "Seed",
    plural = "seeds",
    namespaced,
    status = "SeedStatus",
    derive = "PartialEq",
    doc = "A seed cluster that hosts user-cluster control planes and their MLA stack. spec.kubeconfig names the Secret (key spec.kubeconfig.fieldPath, default `kubeconfig`) the master uses to reach it.",
    printcolumn(name = "Kubeconfig", type_ = "string", json_path = ".spec.kubeconfig.name"),
    printcolumn(name = "Expose", type_ = "string", json_path = ".spec.exposeStrategy"),
    printcolumn(name = "MLA", type_ = "boolean", json_path = ".spec.mla.userClusterMLAEnabled"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    /// The Secret holding a kubeconfig for the seed cluster: its namespace defaults to the
    /// Seed's, the key (`fieldPath`) to `kubeconfig`.
    #[x_kube(validation = Rule::new("has(self.name) && self.name != ''").message("spec.kubeconfig.name is required"))]
    pub kubeconfig: ObjectReference,
    /// Default expose strategy for the seed's user clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_strategy: Option<ExposeStrategy>,
    /// MLA settings of the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<SeedMLASettings>,
}

impl SeedSpec {
    /// The key of the kubeconfig in the Secret: `spec.kubeconfig.fieldPath`, by default
    /// `kubeconfig` (KKP's `DefaultKubeconfigFieldPath`).
    pub fn kubeconfig_key(&self) -> &str {
        self.kubeconfig.field_path.as_deref().filter(|key| !key.is_empty()).unwrap_or("kubeconfig")
    }
}

/// MLA settings of a seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedMLASettings {
    /// Whether user-cluster MLA is offered in this seed.
    #[serde(default, rename = "userClusterMLAEnabled")]
    pub user_cluster_mla_enabled: bool,
}

/// Observed state of a Seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedStatus {
    /// Conditions keyed by type (KKP's map shape). KKP's own controllers write them
    /// (`KubeconfigValid`, `ResourcesReconciled`); this system only reads them.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    #[schemars(transform = kkp_seed_condition)]
    pub conditions: Conditions,
}

/// A Seed condition in KKP's CRD has no `kubermaticVersion` (Cluster conditions do) and
/// requires `lastHeartbeatTime` and `status`: our schema says the same.
fn kkp_seed_condition(schema: &mut schemars::Schema) {
    if let Some(condition) = schema.get_mut("additionalProperties").and_then(serde_json::Value::as_object_mut) {
        if let Some(properties) = condition.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
            properties.remove("kubermaticVersion");
        }
        condition.insert("required".into(), serde_json::json!(["lastHeartbeatTime", "status"]));
    }
}

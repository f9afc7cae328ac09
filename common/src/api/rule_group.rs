use k8s_openapi::ByteString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ObjectReference;

/// What a rule group evaluates, and so which ruler it goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RuleGroupType {
    /// PromQL rules for the Cortex ruler.
    #[default]
    Metrics,
    /// LogQL rules for the Loki ruler.
    Logs,
}

/// One Prometheus-format rule group for a cluster's tenant. RuleGroups in the `mla`
/// namespace are templates copied into every MLA-enabled cluster namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "RuleGroup",
    plural = "rulegroups",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "A Prometheus-format rule group (spec.data) evaluated for the tenant of spec.cluster by the Cortex (Metrics) or Loki (Logs) ruler.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.ruleGroupType"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.isDefault"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroupSpec {
    /// Metrics (Cortex ruler) or Logs (Loki ruler).
    pub rule_group_type: RuleGroupType,
    /// The Cluster whose tenant the rules run for (`name` is used).
    pub cluster: ObjectReference,
    /// The rule group in Prometheus' YAML format (base64 in YAML and JSON).
    #[schemars(schema_with = "byte_string_schema")]
    pub data: ByteString,
    /// Copied from a template in the `mla` namespace.
    #[serde(default)]
    pub is_default: bool,
}

/// `[]byte` as Kubernetes serializes it: a base64 string, checked by the API server.
fn byte_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "byte" })
}

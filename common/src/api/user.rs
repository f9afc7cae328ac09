use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A person who can sign in to the platform.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "User",
    plural = "users",
    status = "UserStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A person who can sign in to the platform; spec.admin makes them a platform administrator.",
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.email"),
    printcolumn(name = "Name", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Admin", type_ = "boolean", json_path = ".spec.admin"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = add_groups)]
pub struct UserSpec {
    /// Email address the user signs in with; it identifies the user in Grafana and the IAP.
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: String,
    /// Full name of the user.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Platform administrator: Grafana server admin and Editor in every organization.
    #[serde(default)]
    pub admin: bool,
}

/// KKP's `spec.groups` (the identity-provider groups the user belongs to, which
/// GroupProjectBindings grant roles to), in the schema so that the API server keeps it. It
/// is not a field of [`UserSpec`] because struct literals of `UserSpec` throughout the
/// workspace would all have to change; seed-controller-manager reads it through its own
/// projection of the User (`seed_controller_manager::scope::UserGroups`).
fn add_groups(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
        properties.insert(
            "groups".into(),
            serde_json::json!({
                "description": "Identity-provider groups of the user, set by the platform at login; GroupProjectBindings grant roles to them.",
                "type": "array",
                "items": { "type": "string" },
            }),
        );
    }
}

/// Observed state of a User.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// When the user was last seen by the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

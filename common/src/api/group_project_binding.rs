use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The role a GroupProjectBinding grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupProjectRole {
    /// May read the project's resources.
    #[default]
    Viewers,
    /// May change the project's resources.
    Editors,
    /// Editors who may also manage the project's members.
    Owners,
}

/// Grants every user whose `spec.groups` contains `spec.group` the role `spec.role` in
/// project `spec.projectID` (KKP's GroupProjectBinding, unchanged).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "GroupProjectBinding",
    plural = "groupprojectbindings",
    derive = "PartialEq",
    derive = "Default",
    doc = "Grants the members of the identity-provider group spec.group (User.spec.groups) the role spec.role in project spec.projectID.",
    printcolumn(name = "ProjectID", type_ = "string", json_path = ".spec.projectID"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct GroupProjectBindingSpec {
    /// The group, as the identity provider names it in `User.spec.groups`.
    pub group: String,
    /// ID (metadata.name) of the project.
    #[serde(rename = "projectID")]
    #[schemars(
        length(max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub project_id: String,
    /// The members' role in the project: viewers, editors or owners.
    pub role: GroupProjectRole,
}

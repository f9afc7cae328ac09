use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The roles a binding can grant, as the prefix of `spec.group`.
pub const BINDING_GROUP_PREFIXES: [&str; 4] = ["owners", "editors", "viewers", "projectmanagers"];

/// Grants a user (by email) a role in a project.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "UserProjectBinding",
    plural = "userprojectbindings",
    derive = "PartialEq",
    derive = "Default",
    doc = "Grants the user with spec.userEmail the role spec.group in project spec.projectID.",
    validation = Rule::new("self.spec.group.endsWith('-' + self.spec.projectID)").message("spec.group must end with '-' followed by spec.projectID").field_path(".spec.group"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userEmail"),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.projectID"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct UserProjectBindingSpec {
    /// Email of the bound user.
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub user_email: String,
    /// ID (metadata.name) of the project.
    #[serde(rename = "projectID")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub project_id: String,
    /// Role in the project: `<owners|editors|viewers|projectmanagers>-<projectID>`.
    #[schemars(
        length(max = 127),
        regex(pattern = r"^(owners|editors|viewers|projectmanagers)-[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub group: String,
}

impl UserProjectBindingSpec {
    /// The role part of `group` (`owners`, `editors`, ...), if the group is well formed for
    /// this binding's project.
    pub fn role(&self) -> Option<&str> {
        let role = self.group.strip_suffix(&self.project_id)?.strip_suffix('-')?;
        BINDING_GROUP_PREFIXES.contains(&role).then_some(role)
    }
}

//! Where the agents live in the user cluster. The builders make every object for the
//! default namespace `mla-system`; a [`Placement`] moves them into the namespace the
//! controller was told to use and names their cluster-scoped RBAC after it.
//!
//! Why another namespace at all: in a KKP installation whose own user-cluster MLA is off,
//! KKP's user-cluster-controller-manager deletes the namespace `mla-system` on every
//! reconcile; with its MLA on, it deletes `prometheus`/`promtail` objects there and the
//! ClusterRoles and ClusterRoleBindings `system:mla:prometheus` and `system:mla:promtail`
//! (its legacy names). Agents in another namespace, with cluster-scoped names derived from
//! it, are out of reach of both.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Resource;

use super::common::{self, ConfigError, NAMESPACE};

/// Prefix of the agents' cluster-scoped RBAC names in the default namespace.
const DEFAULT_RBAC_PREFIX: &str = "system:mla:";

/// The agents' namespace and the names derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    namespace: String,
}

impl Default for Placement {
    fn default() -> Self {
        Self { namespace: NAMESPACE.into() }
    }
}

impl Placement {
    /// The agents in `namespace` (a DNS-1123 label).
    pub fn new(namespace: &str) -> Result<Self, ConfigError> {
        common::validate_dns_label("agents namespace", namespace)?;
        Ok(Self { namespace: namespace.into() })
    }

    /// The agents' namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name of a cluster-scoped object whose default name is `default_name`
    /// (`system:mla:<agent>`): unchanged in `mla-system`, else `system:<namespace>:<agent>`.
    pub fn cluster_scoped_name(&self, default_name: &str) -> String {
        match default_name.strip_prefix(DEFAULT_RBAC_PREFIX) {
            Some(agent) if self.namespace != NAMESPACE => format!("system:{}:{agent}", self.namespace),
            _ => default_name.to_string(),
        }
    }

    /// The namespace object.
    pub fn namespace_object(&self) -> Namespace {
        let mut namespace = common::namespace();
        namespace.metadata.name = Some(self.namespace.clone());
        namespace
    }

    /// A namespaced agent object, moved into the agents' namespace.
    pub fn namespaced<K: Resource<Scope = NamespaceResourceScope>>(&self, mut object: K) -> K {
        object.meta_mut().namespace = Some(self.namespace.clone());
        object
    }

    /// An agent's ClusterRole, renamed.
    pub fn cluster_role(&self, mut role: ClusterRole) -> ClusterRole {
        role.metadata.name = role.metadata.name.as_deref().map(|name| self.cluster_scoped_name(name));
        role
    }

    /// An agent's ClusterRoleBinding, renamed, bound to the renamed role and to the
    /// ServiceAccount in the agents' namespace.
    pub fn cluster_role_binding(&self, mut binding: ClusterRoleBinding) -> ClusterRoleBinding {
        binding.metadata.name = binding.metadata.name.as_deref().map(|name| self.cluster_scoped_name(name));
        binding.role_ref.name = self.cluster_scoped_name(&binding.role_ref.name);
        for subject in binding.subjects.iter_mut().flatten() {
            if subject.kind == "ServiceAccount" {
                subject.namespace = Some(self.namespace.clone());
            }
        }
        binding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::prometheus;

    #[test]
    fn the_default_changes_nothing() {
        let placement = Placement::default();
        assert_eq!(placement.namespace(), "mla-system");
        assert_eq!(
            placement.cluster_role_binding(prometheus::cluster_role_binding()),
            prometheus::cluster_role_binding()
        );
        assert_eq!(placement.namespaced(prometheus::service_account()), prometheus::service_account());
        assert_eq!(placement.namespace_object(), common::namespace());
    }

    #[test]
    fn another_namespace_moves_objects_and_renames_cluster_scoped_ones() {
        let placement = Placement::new("mla-agents").expect("valid");
        let binding = placement.cluster_role_binding(prometheus::cluster_role_binding());
        assert_eq!(binding.metadata.name.as_deref(), Some("system:mla-agents:prometheus"));
        assert_eq!(binding.role_ref.name, "system:mla-agents:prometheus");
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(subject.namespace.as_deref(), Some("mla-agents"));
        let role = placement.cluster_role(prometheus::cluster_role());
        assert_eq!(role.metadata.name.as_deref(), Some("system:mla-agents:prometheus"));
        let account = placement.namespaced(prometheus::service_account());
        assert_eq!(account.metadata.namespace.as_deref(), Some("mla-agents"));
        assert_eq!(placement.namespace_object().metadata.name.as_deref(), Some("mla-agents"));
        // KKP's legacy cleanup deletes exactly these names; none of ours matches them.
        for kkp_deletes in ["system:mla:prometheus", "system:mla:promtail"] {
            assert_ne!(role.metadata.name.as_deref(), Some(kkp_deletes));
        }
    }

    #[test]
    fn invalid_namespaces_are_refused() {
        for bad in ["", "Mla", "mla_system", "a.b", &"x".repeat(64)] {
            assert!(Placement::new(bad).is_err(), "{bad:?}");
        }
    }
}

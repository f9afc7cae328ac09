//! The kinds the master copies to every seed, and how a copy is made from the original.

use std::fmt::Debug;

use kube::core::ClusterResourceScope;
use kube::{Resource, ResourceExt};
use mla_common::api::{Project, User, UserProjectBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A cluster-scoped kind copied from the master to every seed: labels and spec first,
/// then status.
pub trait Synced:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Name of the per-kind controllers and of the `kind` metric label.
    const CONTROLLER: &'static str;
    /// Finalizer on master objects that guards the deletion of their copies.
    const FINALIZER: &'static str;

    /// The copy to apply in a seed: name, labels and spec; no status.
    fn copy(&self) -> Self;

    /// The status to apply to the copy, if the kind has one and the original sets it.
    fn status_copy(&self) -> Option<Self>;
}

fn copy_meta<K: Resource>(original: &K) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: original.meta().name.clone(),
        labels: original.meta().labels.clone().filter(|labels| !labels.is_empty()),
        ..Default::default()
    }
}

fn status_meta<K: Resource>(original: &K) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta { name: Some(original.name_any()), ..Default::default() }
}

impl Synced for Project {
    const CONTROLLER: &'static str = "project-sync";
    const FINALIZER: &'static str = "kubermatic.k8c.io/cleanup-seed-projects";

    fn copy(&self) -> Self {
        Project { metadata: copy_meta(self), spec: self.spec.clone(), status: None }
    }

    fn status_copy(&self) -> Option<Self> {
        let status = self.status.clone()?;
        Some(Project { metadata: status_meta(self), spec: self.spec.clone(), status: Some(status) })
    }
}

impl Synced for User {
    const CONTROLLER: &'static str = "user-sync";
    const FINALIZER: &'static str = "kubermatic.k8c.io/cleanup-seed-users";

    fn copy(&self) -> Self {
        User { metadata: copy_meta(self), spec: self.spec.clone(), status: None }
    }

    fn status_copy(&self) -> Option<Self> {
        let status = self.status.clone()?;
        Some(User { metadata: status_meta(self), spec: self.spec.clone(), status: Some(status) })
    }
}

impl Synced for UserProjectBinding {
    const CONTROLLER: &'static str = "userprojectbinding-sync";
    const FINALIZER: &'static str = "kubermatic.k8c.io/cleanup-seed-user-project-bindings";

    fn copy(&self) -> Self {
        UserProjectBinding { metadata: copy_meta(self), spec: self.spec.clone() }
    }

    fn status_copy(&self) -> Option<Self> {
        None
    }
}

#[cfg(test)]
mod tests {
    use mla_common::api::{ProjectPhase, ProjectSpec, ProjectStatus};

    use super::*;

    #[test]
    fn a_copy_carries_name_labels_and_spec_only() {
        let mut project = Project::new("p1", ProjectSpec { name: "Shop".into() });
        project.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        project.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        project.metadata.finalizers = Some(vec![Project::FINALIZER.into()]);
        project.metadata.resource_version = Some("42".into());
        project.metadata.uid = Some("uid".into());
        project.status = Some(ProjectStatus { phase: Some(ProjectPhase::Active) });

        let copy = serde_json::to_value(project.copy()).expect("json");
        assert_eq!(
            copy,
            serde_json::json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
                "metadata": {"name": "p1", "labels": {"team": "a"}}, "spec": {"name": "Shop"}})
        );
        let status = serde_json::to_value(project.status_copy().expect("status")).expect("json");
        assert_eq!(status["status"], serde_json::json!({"phase": "Active"}));
        assert_eq!(status["metadata"], serde_json::json!({"name": "p1"}));
    }
}

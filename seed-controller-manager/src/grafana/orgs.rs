//! One Grafana organization per Project: its name, and what to do to reach it from the
//! Project's annotation and Grafana's list of organizations.

use kube::ResourceExt;
use mla_common::api::Project;

use super::client::Org;

/// Project annotation holding the id of its organization.
pub const ORG_ANNOTATION: &str = "mla.k8c.io/organization";

/// `<spec.name>-<project name>`, as KKP names it.
pub fn org_name(project: &Project) -> String {
    format!("{}-{}", project.spec.name, project.name_any())
}

/// The id the Project's annotation names, if it parses.
pub fn annotated_id(project: &Project) -> Option<i64> {
    project.annotations().get(ORG_ANNOTATION).and_then(|v| v.trim().parse().ok()).filter(|id| *id > 0)
}

/// What to do about a Project's organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrgPlan {
    /// The annotation names the organization of the right name: nothing to do.
    Keep(i64),
    /// An organization of the right name exists but the annotation is missing, stale (the
    /// annotated org was deleted) or foreign (it names another org): adopt it.
    Annotate(i64),
    /// The annotated organization is ours under an old display name of the Project:
    /// rename it (and keep the annotation).
    Rename(i64),
    /// No organization of the right name: create one (and annotate it).
    Create,
}

/// Decides from the annotation and Grafana's organizations. An annotated organization is
/// recognised as ours under an old name when its name ends with `-<project name>`;
/// anything else is foreign and left alone.
pub fn plan(project: &Project, orgs: &[Org]) -> OrgPlan {
    let name = org_name(project);
    let annotated = annotated_id(project);
    if let Some(org) = orgs.iter().find(|o| o.name == name) {
        return if annotated == Some(org.id) { OrgPlan::Keep(org.id) } else { OrgPlan::Annotate(org.id) };
    }
    let suffix = format!("-{}", project.name_any());
    match annotated.and_then(|id| orgs.iter().find(|o| o.id == id)) {
        Some(org) if org.name.ends_with(&suffix) => OrgPlan::Rename(org.id),
        _ => OrgPlan::Create,
    }
}

#[cfg(test)]
mod tests {
    use mla_common::api::ProjectSpec;

    use super::*;

    fn project(annotation: Option<&str>) -> Project {
        let mut project = Project::new("p1", ProjectSpec { name: "Shop".into() });
        if let Some(value) = annotation {
            project.metadata.annotations = Some([(ORG_ANNOTATION.to_string(), value.to_string())].into());
        }
        project
    }

    fn org(id: i64, name: &str) -> Org {
        Org { id, name: name.into() }
    }

    #[test]
    fn names_follow_kkp() {
        assert_eq!(org_name(&project(None)), "Shop-p1");
    }

    #[test]
    fn keeps_adopts_repairs_renames_and_creates() {
        let orgs = [org(1, "Main Org."), org(5, "Shop-p1"), org(7, "Other-p2")];
        assert_eq!(plan(&project(Some("5")), &orgs), OrgPlan::Keep(5));
        assert_eq!(plan(&project(None), &orgs), OrgPlan::Annotate(5), "adopt an org of that name");
        assert_eq!(plan(&project(Some("9")), &orgs), OrgPlan::Annotate(5), "stale id");
        assert_eq!(plan(&project(Some("7")), &orgs), OrgPlan::Annotate(5), "foreign id");
        assert_eq!(plan(&project(Some("garbage")), &orgs), OrgPlan::Annotate(5));
        let renamed = [org(1, "Main Org."), org(5, "Old Shop-p1")];
        assert_eq!(plan(&project(Some("5")), &renamed), OrgPlan::Rename(5));
        let foreign = [org(1, "Main Org."), org(7, "Other-p2")];
        assert_eq!(plan(&project(Some("7")), &foreign), OrgPlan::Create, "never take over a foreign org");
        assert_eq!(plan(&project(Some("5")), &[org(1, "Main Org.")]), OrgPlan::Create, "deleted behind our back");
        assert_eq!(plan(&project(None), &[]), OrgPlan::Create);
    }
}

//! Grafana users and their organization roles from Users and UserProjectBindings.

use std::collections::{BTreeMap, BTreeSet};

use kube::Resource;
use mla_common::api::{User, UserProjectBinding};

use super::client::Role;

/// The role a binding's group grants: owners and editors edit, everyone else views.
pub fn role_for_group(role: Option<&str>) -> Role {
    match role {
        Some("owners" | "editors") => Role::Editor,
        _ => Role::Viewer,
    }
}

/// What one User should be in Grafana.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredUser {
    /// Email, the login (lower case).
    pub email: String,
    /// Full name.
    pub name: String,
    /// Grafana server admin.
    pub admin: bool,
    /// Role per managed organization it belongs to.
    pub orgs: BTreeMap<i64, Role>,
}

/// Every User that is not being deleted, with its memberships: the highest role of its
/// bindings in each project that has an organization (`project_orgs`: project -> org id);
/// admins are Editors in every managed org (projects' and the superuser org).
pub fn desired_users(
    users: &[&User],
    bindings: &[&UserProjectBinding],
    project_orgs: &BTreeMap<String, i64>,
    superuser_org: Option<i64>,
) -> BTreeMap<String, DesiredUser> {
    let mut desired: BTreeMap<String, DesiredUser> = users
        .iter()
        .filter(|u| u.meta().deletion_timestamp.is_none())
        .map(|u| {
            let email = u.spec.email.to_lowercase();
            let mut orgs = BTreeMap::new();
            if u.spec.admin {
                for org in project_orgs.values().copied().chain(superuser_org) {
                    orgs.insert(org, Role::Editor);
                }
            }
            (email.clone(), DesiredUser { email, name: u.spec.name.clone(), admin: u.spec.admin, orgs })
        })
        .collect();
    for binding in bindings.iter().filter(|b| b.meta().deletion_timestamp.is_none()) {
        let Some(user) = desired.get_mut(&binding.spec.user_email.to_lowercase()) else { continue };
        let Some(org) = project_orgs.get(&binding.spec.project_id) else { continue };
        let role = role_for_group(binding.spec.role());
        let entry = user.orgs.entry(*org).or_insert(role);
        *entry = (*entry).max(role);
    }
    desired
}

/// A change to one user's memberships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add to the org with this role.
    Add(i64, Role),
    /// Change the role in the org.
    Update(i64, Role),
    /// Remove from the org.
    Remove(i64),
}

/// The changes that make `current` (the user's role per org, as far as `managed` orgs go)
/// equal `desired`. Orgs outside `managed` are never touched; the default org is part of
/// `managed`, so a user that auto-assignment put there is taken out unless desired there.
pub fn membership_changes(
    desired: &BTreeMap<i64, Role>,
    current: &BTreeMap<i64, Role>,
    managed: &BTreeSet<i64>,
) -> Vec<MembershipChange> {
    let mut changes = Vec::new();
    for (org, role) in desired {
        match current.get(org) {
            None => changes.push(MembershipChange::Add(*org, *role)),
            Some(have) if have != role => changes.push(MembershipChange::Update(*org, *role)),
            Some(_) => {}
        }
    }
    for org in current.keys() {
        if managed.contains(org) && !desired.contains_key(org) {
            changes.push(MembershipChange::Remove(*org));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use mla_common::api::{UserProjectBindingSpec, UserSpec};

    use super::*;

    fn user(email: &str, admin: bool) -> User {
        User::new(email, UserSpec { email: email.into(), name: email.into(), admin })
    }

    fn binding(email: &str, project: &str, role: &str) -> UserProjectBinding {
        UserProjectBinding::new(
            &format!("{email}-{project}"),
            UserProjectBindingSpec {
                user_email: email.into(),
                project_id: project.into(),
                group: format!("{role}-{project}"),
            },
        )
    }

    #[test]
    fn roles_from_groups() {
        assert_eq!(role_for_group(Some("owners")), Role::Editor);
        assert_eq!(role_for_group(Some("editors")), Role::Editor);
        assert_eq!(role_for_group(Some("viewers")), Role::Viewer);
        assert_eq!(role_for_group(Some("projectmanagers")), Role::Viewer);
        assert_eq!(role_for_group(None), Role::Viewer);
    }

    #[test]
    fn bindings_become_memberships_and_admins_edit_everywhere() {
        let (alice, bob, root) = (user("Alice@x.io", false), user("bob@x.io", false), user("root@x.io", true));
        let bindings = [
            binding("alice@x.io", "p1", "viewers"),
            binding("alice@x.io", "p1", "owners"),
            binding("bob@x.io", "p2", "projectmanagers"),
            binding("bob@x.io", "p3", "owners"), // p3 has no org yet
            binding("nobody@x.io", "p1", "owners"),
        ];
        let orgs = BTreeMap::from([("p1".to_string(), 10), ("p2".to_string(), 20)]);
        let users = [&alice, &bob, &root];
        let desired = desired_users(&users, &bindings.iter().collect::<Vec<_>>(), &orgs, Some(99));
        assert_eq!(desired.len(), 3);
        assert_eq!(desired["alice@x.io"].orgs, BTreeMap::from([(10, Role::Editor)]), "the highest role wins");
        assert_eq!(desired["bob@x.io"].orgs, BTreeMap::from([(20, Role::Viewer)]));
        assert!(desired["root@x.io"].admin);
        assert_eq!(
            desired["root@x.io"].orgs,
            BTreeMap::from([(10, Role::Editor), (20, Role::Editor), (99, Role::Editor)])
        );
    }

    #[test]
    fn changes_add_update_and_remove_only_in_managed_orgs() {
        let desired = BTreeMap::from([(10, Role::Editor), (20, Role::Viewer)]);
        let current = BTreeMap::from([(1, Role::Viewer), (10, Role::Viewer), (30, Role::Editor), (40, Role::Admin)]);
        let managed = BTreeSet::from([1, 10, 20, 30]);
        let changes = membership_changes(&desired, &current, &managed);
        assert_eq!(
            changes,
            vec![
                MembershipChange::Update(10, Role::Editor),
                MembershipChange::Add(20, Role::Viewer),
                MembershipChange::Remove(1),
                MembershipChange::Remove(30),
            ]
        );
        let settled = BTreeMap::from([(10, Role::Editor), (20, Role::Viewer), (40, Role::Admin)]);
        assert!(membership_changes(&desired, &settled, &managed).is_empty(), "org 40 is not ours");
    }
}

//! Grafana users and their organization roles from Users, UserProjectBindings and, through
//! the Users' groups, GroupProjectBindings (KKP's rules).

use std::collections::{BTreeMap, BTreeSet};

use kube::{Resource, ResourceExt};
use mla_common::api::{GroupProjectBinding, GroupProjectRole, User, UserProjectBinding};

use super::client::Role;
use crate::scope;

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

/// The role a GroupProjectBinding grants (KKP: owners and editors edit, viewers view).
pub fn role_for_group_binding(role: GroupProjectRole) -> Role {
    match role {
        GroupProjectRole::Owners | GroupProjectRole::Editors => Role::Editor,
        GroupProjectRole::Viewers => Role::Viewer,
    }
}

/// Where a User's roles come from besides its own bindings: its groups (User name ->
/// `spec.groups`) and the GroupProjectBindings granting roles to groups.
#[derive(Clone, Copy, Debug, Default)]
pub struct Groups<'a> {
    /// `spec.groups` per User name.
    pub members: Option<&'a BTreeMap<String, Vec<String>>>,
    /// Every GroupProjectBinding.
    pub bindings: &'a [&'a GroupProjectBinding],
}

/// Every User that is not being deleted and is not a project service account (those get
/// no Grafana user, as in KKP), with its memberships: the highest role of its
/// UserProjectBindings and of the GroupProjectBindings of its groups in each project that
/// has an organization (`project_orgs`: project -> org id); admins are Editors in every
/// managed org (projects' and the superuser org).
pub fn desired_users(
    users: &[&User],
    bindings: &[&UserProjectBinding],
    groups: Groups<'_>,
    project_orgs: &BTreeMap<String, i64>,
    superuser_org: Option<i64>,
) -> BTreeMap<String, DesiredUser> {
    let mut desired: BTreeMap<String, DesiredUser> = users
        .iter()
        .filter(|u| u.meta().deletion_timestamp.is_none() && !scope::is_service_account(u))
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
    for user in users {
        let Some(member_of) = groups.members.and_then(|m| m.get(&user.name_any())) else { continue };
        let Some(want) = desired.get_mut(&user.spec.email.to_lowercase()) else { continue };
        for binding in groups.bindings.iter().filter(|b| b.meta().deletion_timestamp.is_none()) {
            if !member_of.contains(&binding.spec.group) {
                continue;
            }
            let Some(org) = project_orgs.get(&binding.spec.project_id) else { continue };
            let role = role_for_group_binding(binding.spec.role);
            let entry = want.orgs.entry(*org).or_insert(role);
            *entry = (*entry).max(role);
        }
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
        let desired = desired_users(&users, &bindings.iter().collect::<Vec<_>>(), Groups::default(), &orgs, Some(99));
        assert_eq!(desired.len(), 3);
        assert_eq!(desired["alice@x.io"].orgs, BTreeMap::from([(10, Role::Editor)]), "the highest role wins");
        assert_eq!(desired["bob@x.io"].orgs, BTreeMap::from([(20, Role::Viewer)]));
        assert!(desired["root@x.io"].admin);
        assert_eq!(
            desired["root@x.io"].orgs,
            BTreeMap::from([(10, Role::Editor), (20, Role::Editor), (99, Role::Editor)])
        );
    }

    fn group_binding(group: &str, project: &str, role: GroupProjectRole) -> GroupProjectBinding {
        GroupProjectBinding::new(
            &format!("{project}-{group}"),
            mla_common::api::GroupProjectBindingSpec { group: group.into(), project_id: project.into(), role },
        )
    }

    #[test]
    fn group_bindings_grant_roles_to_the_groups_members() {
        let (alice, bob, carol) = (user("alice@x.io", false), user("bob@x.io", false), user("carol@x.io", false));
        let members = BTreeMap::from([
            ("alice@x.io".to_string(), vec!["sre".to_string()]),
            ("bob@x.io".to_string(), vec!["dev".to_string(), "sre".to_string()]),
        ]);
        let group_bindings = [
            group_binding("sre", "p1", GroupProjectRole::Viewers),
            group_binding("dev", "p2", GroupProjectRole::Owners),
            group_binding("sre", "p3", GroupProjectRole::Editors), // p3 has no org
        ];
        let bindings = [binding("alice@x.io", "p1", "editors"), binding("bob@x.io", "p1", "viewers")];
        let orgs = BTreeMap::from([("p1".to_string(), 10), ("p2".to_string(), 20)]);
        let groups = Groups { members: Some(&members), bindings: &group_bindings.iter().collect::<Vec<_>>() };
        let desired = desired_users(&[&alice, &bob, &carol], &bindings.iter().collect::<Vec<_>>(), groups, &orgs, None);
        // KKP: a UserProjectBinding and a GroupProjectBinding with different roles make an Editor.
        assert_eq!(desired["alice@x.io"].orgs, BTreeMap::from([(10, Role::Editor)]));
        assert_eq!(desired["bob@x.io"].orgs, BTreeMap::from([(10, Role::Viewer), (20, Role::Editor)]));
        assert!(desired["carol@x.io"].orgs.is_empty(), "in no group");
    }

    #[test]
    fn project_service_accounts_get_no_grafana_user() {
        let robot = User::new(
            "serviceaccount-7d4b5695vb",
            UserSpec { email: "serviceaccount-7d4b5695vb@localhost".into(), name: "ci".into(), admin: false },
        );
        let bindings = [binding("serviceaccount-7d4b5695vb@localhost", "p1", "editors")];
        let orgs = BTreeMap::from([("p1".to_string(), 10)]);
        let desired = desired_users(&[&robot], &bindings.iter().collect::<Vec<_>>(), Groups::default(), &orgs, None);
        assert!(desired.is_empty(), "{desired:?}");
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

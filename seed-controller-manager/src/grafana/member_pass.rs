//! The organization and user steps of a pass: each Project's organization, each User's
//! Grafana user and memberships.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mla_common::api::{Project, User};

use super::client::{GrafanaClient, GrafanaUser, Org, Role};
use super::controller::{Context, DEFAULT_ORG, FINALIZER, StepError, has_finalizer, is_deleting};
use super::{orgs, users};
use crate::scope::{self, KKP_MLA_FINALIZER};

/// Applies the Project's organization annotation, unless it already says `id`.
async fn annotate(ctx: &Context, project: &Project, id: i64) -> Result<(), StepError> {
    let value = id.to_string();
    if project.annotations().get(orgs::ORG_ANNOTATION) == Some(&value) {
        return Ok(());
    }
    let name = project.name_any();
    ctx.applier.ensure_leader("annotate", &name)?;
    let patch = serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1",
        "kind": "Project",
        "metadata": { "name": name, "annotations": { orgs::ORG_ANNOTATION: value } },
    });
    let api: Api<Project> = Api::all(ctx.client.clone());
    ctx.applier.count::<Project>("apply");
    api.patch(&name, &PatchParams::apply(ctx.applier.field_manager()).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| mla_common::Error::kube("apply", "Project", name.clone(), source))?;
    Ok(())
}

/// The orgs of a pass, shared by the Project steps running at once (never locked across
/// a call).
fn locked(all_orgs: &Mutex<Vec<Org>>) -> std::sync::MutexGuard<'_, Vec<Org>> {
    all_orgs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes sure the Project has its organization; returns its id (None once deleted).
pub(super) async fn reconcile_project(
    ctx: &Context,
    grafana: &GrafanaClient,
    project: &Project,
    all_orgs: &Mutex<Vec<Org>>,
) -> Result<Option<i64>, StepError> {
    let api: Api<Project> = Api::all(ctx.client.clone());
    if is_deleting(project) {
        // KKP's finalizer stands for the same cleanup (the project's organization).
        let kkp = scope::has_finalizer(project, KKP_MLA_FINALIZER);
        if has_finalizer(project) || kkp {
            let plan = orgs::plan(project, &locked(all_orgs));
            let ours = match plan {
                orgs::OrgPlan::Keep(id) | orgs::OrgPlan::Annotate(id) | orgs::OrgPlan::Rename(id) => Some(id),
                orgs::OrgPlan::Create => None,
            };
            if let Some(id) = ours {
                grafana.delete_org(id).await?;
                locked(all_orgs).retain(|o| o.id != id);
                tracing::info!(project = %project.name_any(), org = id, "deleted the Grafana organization");
            }
            ctx.applier.remove_finalizers(&api, project, &[FINALIZER, KKP_MLA_FINALIZER]).await?;
        }
        return Ok(None);
    }
    // The finalizer was added before (many Projects at a time; `add_finalizers`).
    let name = orgs::org_name(project);
    let plan = orgs::plan(project, &locked(all_orgs));
    let id = match plan {
        orgs::OrgPlan::Keep(id) => return Ok(Some(id)),
        orgs::OrgPlan::Annotate(id) => id,
        orgs::OrgPlan::Rename(id) => {
            grafana.rename_org(id, &name).await?;
            if let Some(org) = locked(all_orgs).iter_mut().find(|o| o.id == id) {
                org.name = name.clone();
            }
            id
        }
        orgs::OrgPlan::Create => {
            let id = grafana.create_org(&name).await?;
            locked(all_orgs).push(Org { id, name: name.clone() });
            ctx.events
                .normal(
                    &project.object_ref(&()),
                    "GrafanaOrganizationCreated",
                    "ReconcileGrafana",
                    format!("created Grafana organization {name} ({id})"),
                )
                .await;
            id
        }
    };
    annotate(ctx, project, id).await?;
    Ok(Some(id))
}

/// Makes the Grafana user of `user` what `desired` says, or deletes it with the User.
#[allow(clippy::too_many_arguments)]
pub(super) async fn reconcile_user(
    ctx: &Context,
    grafana: &GrafanaClient,
    user: &User,
    me: i64,
    desired: &BTreeMap<String, users::DesiredUser>,
    known: &HashMap<String, GrafanaUser>,
    memberships: &HashMap<String, BTreeMap<i64, Role>>,
    scope: &BTreeSet<i64>,
) -> Result<(), StepError> {
    let api: Api<User> = Api::all(ctx.client.clone());
    let email = user.spec.email.to_lowercase();
    if is_deleting(user) {
        // KKP's finalizer stands for the same cleanup (the Grafana user).
        if has_finalizer(user) || scope::has_finalizer(user, KKP_MLA_FINALIZER) {
            let existing = match known.get(&email) {
                Some(existing) => Some(existing.clone()),
                None => grafana.lookup_user(&email).await?,
            };
            if let Some(existing) = existing.filter(|u| u.id != me) {
                grafana.delete_user(existing.id).await?;
                tracing::info!(user = %user.name_any(), "deleted the Grafana user");
            }
            ctx.applier.remove_finalizers(&api, user, &[FINALIZER, KKP_MLA_FINALIZER]).await?;
        }
        return Ok(());
    }
    // The finalizer was added before (many Users at a time; `add_finalizers`).
    let Some(want) = desired.get(&email) else { return Ok(()) };
    // A user missing from the listing is created; one that signed up since the listing
    // makes Grafana refuse the creation (412), and is looked up instead.
    let created = match known.get(&email) {
        Some(_) => None,
        None => match grafana.create_user(&email, &want.name).await {
            Ok(id) => Some(id),
            Err(error) if error.is_precondition_failed() => None,
            Err(error) => return Err(error.into()),
        },
    };
    let existing = match (created, known.get(&email)) {
        (Some(_), _) => None,
        (None, Some(existing)) => Some(existing.clone()),
        (None, None) => grafana.lookup_user(&email).await?,
    };
    let (id, is_admin, current) = match (created, existing) {
        (_, Some(existing)) => {
            (existing.id, existing.is_grafana_admin, memberships.get(&email).cloned().unwrap_or_default())
        }
        // Auto-assignment made it a member of the default org.
        (Some(id), None) => (id, false, BTreeMap::from([(DEFAULT_ORG, Role::Viewer)])),
        (None, None) => {
            // Refused as existing, yet not found: the next pass tries again.
            return Err(StepError::Grafana(super::client::GrafanaError::InvalidResponse {
                endpoint: "users",
                method: "POST",
                reason: format!("user {email} exists by Grafana's answer but cannot be looked up"),
            }));
        }
    };
    if id == me {
        // Never change the account this controller signs in with.
        return Ok(());
    }
    if is_admin != want.admin {
        grafana.set_server_admin(id, want.admin).await?;
    }
    for change in users::membership_changes(&want.orgs, &current, scope) {
        match change {
            users::MembershipChange::Add(org, role) => grafana.add_org_user(org, &email, role).await?,
            users::MembershipChange::Update(org, role) => grafana.update_org_user(org, id, role).await?,
            users::MembershipChange::Remove(org) => grafana.remove_org_user(org, id).await?,
        }
    }
    Ok(())
}

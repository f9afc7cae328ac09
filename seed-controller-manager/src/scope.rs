//! Which objects this manager serves, by KKP's rules, and KKP's MLA finalizers.
//!
//! KKP's seed controllers leave a Cluster alone while `spec.pause` is set or while its
//! `worker-name` label differs from the manager's `--worker-name` (empty by default: only
//! Clusters without the label); project service accounts (Users named or mailed
//! `serviceaccount-...`) get no Grafana user. This module holds those rules, the read-only
//! projections of the KKP fields our typed API does not carry as struct fields
//! (`Cluster.spec.pause`, `User.spec.groups`), and the names of KKP's finalizers that this
//! system releases once it has done the cleanup they stand for (docs/design.md,
//! "KKP's finalizers").

use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{CustomResource, Resource, ResourceExt};
use mla_common::api::{Cluster, User};
use serde::{Deserialize, Serialize};

/// KKP's finalizer on Projects, Users, Clusters, MLAAdminSettings and dashboard
/// ConfigMaps, put there by KKP's MLA controllers (Grafana organization, Grafana user,
/// datasources and gateway, tenant limits, dashboards).
pub const KKP_MLA_FINALIZER: &str = "kubermatic.k8c.io/mla";
/// KKP's finalizer on Clusters whose tenant has an Alertmanager configuration in Cortex.
pub const KKP_ALERTMANAGER_FINALIZER: &str = "kubermatic.k8c.io/alertmanager";
/// KKP's finalizer on RuleGroups pushed to a ruler.
pub const KKP_RULE_GROUP_FINALIZER: &str = "kubermatic.k8c.io/rule-group";

/// Prefix of project service accounts' User names and emails (KKP's
/// `helper.IsProjectServiceAccount`).
pub const SERVICE_ACCOUNT_PREFIX: &str = "serviceaccount-";

/// How long to wait before looking again at a Cluster whose projection lags its watch.
pub const STALE_RETRY: Duration = Duration::from_secs(1);

/// The part of a Cluster's spec that our typed [`ClusterSpec`](mla_common::api::ClusterSpec)
/// does not carry: KKP's pause switch.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    root = "ClusterPause",
    schema = "disabled"
)]
pub struct ClusterPauseSpec {
    /// KKP's `spec.pause`.
    #[serde(default)]
    pub pause: bool,
}

/// The part of a User's spec that our typed [`UserSpec`](mla_common::api::UserSpec) does
/// not carry: the identity-provider groups GroupProjectBindings grant roles to.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubermatic.k8c.io",
    version = "v1",
    kind = "User",
    plural = "users",
    root = "UserGroups",
    schema = "disabled"
)]
pub struct UserGroupsSpec {
    /// KKP's `spec.groups`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Whether a User is a project service account (by name or email, as KKP decides).
pub fn is_service_account(user: &User) -> bool {
    user.name_any().starts_with(SERVICE_ACCOUNT_PREFIX) || is_service_account_email(&user.spec.email)
}

/// Whether an email belongs to a project service account.
pub fn is_service_account_email(email: &str) -> bool {
    email.to_ascii_lowercase().starts_with(SERVICE_ACCOUNT_PREFIX)
}

/// What to do with a Cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Ours and not paused: reconcile it.
    Yes,
    /// Paused or another worker's: touch nothing, not even finalizers or status.
    No,
    /// The pause projection has not yet seen this version of the Cluster: look again
    /// shortly ([`STALE_RETRY`]).
    NotYetKnown,
}

/// KKP's rules for which Clusters a manager serves.
#[derive(Clone)]
pub struct ClusterScope {
    worker_name: String,
    pauses: Store<ClusterPause>,
}

impl std::fmt::Debug for ClusterScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterScope").field("worker_name", &self.worker_name).finish_non_exhaustive()
    }
}

impl ClusterScope {
    /// A scope of `worker_name` reading pauses from `pauses` (a reflector of
    /// [`ClusterPause`]).
    pub fn new(worker_name: impl Into<String>, pauses: Store<ClusterPause>) -> Self {
        Self { worker_name: worker_name.into(), pauses }
    }

    /// Whether this manager serves `cluster` now. The pause is read from the projection
    /// only when it holds the same resourceVersion as `cluster`, so a Cluster whose pause
    /// was just switched is never judged by the old value.
    pub fn serves(&self, cluster: &Cluster) -> Serve {
        decide(&self.worker_name, cluster, self.pauses.get(&ObjectRef::new(&cluster.name_any())).as_deref())
    }
}

/// [`ClusterScope::serves`] with the projection given.
pub fn decide(worker_name: &str, cluster: &Cluster, pause: Option<&ClusterPause>) -> Serve {
    if cluster.worker_name() != worker_name {
        return Serve::No;
    }
    match pause {
        Some(pause) if pause.meta().resource_version == cluster.meta().resource_version => {
            if pause.spec.pause {
                Serve::No
            } else {
                Serve::Yes
            }
        }
        _ => Serve::NotYetKnown,
    }
}

/// The projection of every Cluster's pause, for [`ClusterScope::new`], and the future that
/// keeps it current (run it beside the controllers); its readiness gate is
/// `scope/clusters`. Only the name, resourceVersion and `spec.pause` are read: the rest
/// of the metadata (managedFields, labels, annotations) is dropped.
pub fn reflect_pauses(
    runtime: &mla_common::runtime::Runtime,
) -> (Store<ClusterPause>, impl std::future::Future<Output = ()> + Send + 'static) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let gate = runtime.readiness.gate("scope/clusters");
    let shutdown = runtime.shutdown.clone();
    let api = kube::Api::<ClusterPause>::all(runtime.client.clone());
    let watch = mla_common::runtime::relisting_watcher(api, watcher::Config::default()).default_backoff().modify(
        |pause: &mut ClusterPause| {
            let meta = &mut pause.metadata;
            *meta = kube::api::ObjectMeta {
                name: meta.name.take(),
                resource_version: meta.resource_version.take(),
                ..Default::default()
            };
        },
    );
    let task = async move {
        let stream = mla_common::runtime::mark_synced(reflector::reflector(writer, watch), gate).for_each(|event| {
            if let Err(error) = event {
                tracing::warn!(watch = "scope/clusters", %error, "watch failed; retrying");
            }
            futures::future::ready(())
        });
        tokio::select! {
            () = stream => {}
            () = shutdown.cancelled() => {}
        }
    };
    (store, task)
}

/// Whether `object` carries `finalizer`.
pub fn has_finalizer<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.meta().finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == finalizer))
}

#[cfg(test)]
mod tests {
    use mla_common::api::{ClusterSpec, UserSpec, WORKER_NAME_LABEL};

    use super::*;

    fn cluster(worker: Option<&str>, version: &str) -> Cluster {
        let mut cluster = Cluster::new("c1", ClusterSpec::default());
        if let Some(worker) = worker {
            cluster.metadata.labels = Some([(WORKER_NAME_LABEL.to_string(), worker.to_string())].into());
        }
        cluster.metadata.resource_version = Some(version.into());
        cluster
    }

    fn pause(paused: bool, version: &str) -> ClusterPause {
        let mut pause = ClusterPause::new("c1", ClusterPauseSpec { pause: paused });
        pause.metadata.resource_version = Some(version.into());
        pause
    }

    #[test]
    fn only_clusters_of_this_worker_are_served() {
        assert_eq!(decide("", &cluster(None, "1"), Some(&pause(false, "1"))), Serve::Yes);
        assert_eq!(decide("", &cluster(Some("alice"), "1"), Some(&pause(false, "1"))), Serve::No);
        assert_eq!(decide("alice", &cluster(Some("alice"), "1"), Some(&pause(false, "1"))), Serve::Yes);
        assert_eq!(decide("alice", &cluster(None, "1"), Some(&pause(false, "1"))), Serve::No);
        // KKP compares the label's value: an empty label is the same as none.
        assert_eq!(decide("", &cluster(Some(""), "1"), Some(&pause(false, "1"))), Serve::Yes);
    }

    #[test]
    fn paused_clusters_are_left_alone() {
        assert_eq!(decide("", &cluster(None, "2"), Some(&pause(true, "2"))), Serve::No);
    }

    #[test]
    fn a_lagging_projection_is_not_trusted() {
        assert_eq!(decide("", &cluster(None, "3"), Some(&pause(true, "2"))), Serve::NotYetKnown);
        assert_eq!(decide("", &cluster(None, "3"), None), Serve::NotYetKnown);
    }

    #[test]
    fn kkp_objects_deserialize_into_the_projections() {
        let pause: ClusterPause = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "c1"},
            "spec": {"pause": true, "pauseReason": "maintenance", "version": "1.31.1", "cloud": {"dc": "x"}}
        }))
        .expect("a KKP Cluster parses");
        assert!(pause.spec.pause);
        let groups: UserGroups = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": "u1"},
            "spec": {"email": "a@example.com", "name": "A", "admin": false, "groups": ["sre", "dev"]}
        }))
        .expect("a KKP User parses");
        assert_eq!(groups.spec.groups, ["sre", "dev"]);
    }

    #[test]
    fn service_accounts_are_known_by_name_or_email() {
        let user =
            |name: &str, email: &str| User::new(name, UserSpec { email: email.into(), name: "n".into(), admin: false });
        assert!(is_service_account(&user("serviceaccount-7d4b5695vb", "serviceaccount-7d4b5695vb@localhost")));
        assert!(is_service_account(&user("x", "serviceaccount-abc@localhost")));
        assert!(!is_service_account(&user("u1", "serviceaccount@example.com")));
        assert!(!is_service_account(&user("u1", "a@example.com")));
    }
}

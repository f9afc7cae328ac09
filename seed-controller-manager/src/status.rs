//! The part of a Cluster's status each seed controller owns: one condition and, for some,
//! fields of `extendedHealth`. Every controller writes it with its own field manager, so
//! server-side apply keeps the controllers' parts apart.

use kube::{Api, ResourceExt};
use mla_common::api::{Cluster, ClusterSpec, ClusterStatus, Condition, ExtendedClusterHealth};
use mla_common::apply::{Applied, Applier};

/// The status patch of one controller for the Cluster `name`: its condition of type
/// `condition_type` (none: the controller lets go of it) and its health fields, if any.
pub fn desired_status(
    name: &str,
    condition: Option<(&str, Condition)>,
    extended_health: Option<ExtendedClusterHealth>,
) -> Cluster {
    let mut desired = Cluster::new(name, ClusterSpec::default());
    desired.status = Some(ClusterStatus {
        conditions: condition.map(|(condition_type, c)| (condition_type.to_string(), c)).into_iter().collect(),
        extended_health,
        ..Default::default()
    });
    desired
}

/// Applies [`desired_status`] to `cluster`, only when its status does not hold it already.
pub async fn apply(
    applier: &Applier,
    client: &kube::Client,
    cluster: &Cluster,
    condition: Option<(&str, Condition)>,
    extended_health: Option<ExtendedClusterHealth>,
) -> Result<Applied, mla_common::Error> {
    let desired = desired_status(&cluster.name_any(), condition, extended_health);
    let api: Api<Cluster> = Api::all(client.clone());
    applier.apply_status(&api, &desired, Some(cluster)).await
}

#[cfg(test)]
mod tests {
    use mla_common::api::{ConditionStatus, HealthStatus};

    use super::*;

    #[test]
    fn a_condition_and_health_are_the_whole_patch() {
        let condition = Condition { status: ConditionStatus::True, ..Default::default() };
        let health = ExtendedClusterHealth { mla_gateway: Some(HealthStatus::HealthStatusUp), ..Default::default() };
        let desired = desired_status("abc", Some(("MLAGatewayReady", condition.clone())), Some(health.clone()));
        assert_eq!(desired.name_any(), "abc");
        assert_eq!(
            desired.status,
            Some(ClusterStatus {
                conditions: [("MLAGatewayReady".to_string(), condition)].into(),
                extended_health: Some(health),
                ..Default::default()
            })
        );
    }

    #[test]
    fn nothing_wanted_releases_everything() {
        assert_eq!(desired_status("abc", None, None).status, Some(ClusterStatus::default()));
    }
}

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What this system writes into `kubermaticVersion` of every condition it writes: the
/// workspace version every binary is built with (all crates share it), fixed at build time
/// so that two replicas or two runs of one build write the same value. KKP's Cluster CRD
/// requires the field; KKP fills it with its own version, so the `mla-controllers-` prefix
/// tells the two apart.
pub const CONTROLLER_VERSION: &str = concat!("mla-controllers-v", env!("CARGO_PKG_VERSION"));

/// The status of a condition, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    /// Also what any other value reads as: KKP's schema allows any string here, and one odd
    /// condition must not make the whole object unreadable.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One condition in KKP's condition map (`status.conditions.<type>`).
///
/// KKP keys conditions by type instead of keeping the usual list, so the type is not a
/// field here but the map key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// True, False or Unknown (a plain string in the schema, as in KKP's CRDs).
    #[schemars(with = "String")]
    pub status: ConditionStatus,
    /// Version of the controller that last wrote this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubermatic_version: Option<String>,
    /// Last time the condition was confirmed by its controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// A machine-readable, CamelCase reason for the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message with details about the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Condition {
    /// The condition a controller should write when it now concludes `status`, `reason` and
    /// `message`: `existing` unchanged when it says the same (so a pass with nothing new
    /// writes nothing), else a new condition whose lastTransitionTime is now when the status
    /// changed and kept when only the reason or message did.
    ///
    /// Every condition written carries [`CONTROLLER_VERSION`] and lastHeartbeatTime = now,
    /// which KKP's Cluster CRD requires. An existing condition without them (written by an
    /// older build) counts as changed, so the next pass completes it once.
    pub fn next(existing: Option<&Condition>, status: ConditionStatus, reason: &str, message: String) -> Condition {
        Self::next_at(existing, status, reason, message, Time(k8s_openapi::jiff::Timestamp::now()))
    }

    /// [`Condition::next`] with `now` given.
    pub fn next_at(
        existing: Option<&Condition>,
        status: ConditionStatus,
        reason: &str,
        message: String,
        now: Time,
    ) -> Condition {
        if let Some(existing) = existing
            && existing.status == status
            && existing.reason.as_deref() == Some(reason)
            && existing.message.as_deref() == Some(message.as_str())
            && existing.kubermatic_version.is_some()
            && existing.last_heartbeat_time.is_some()
        {
            return existing.clone();
        }
        let last_transition_time = match existing {
            Some(existing) if existing.status == status => existing.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        Condition {
            status,
            kubermatic_version: Some(CONTROLLER_VERSION.into()),
            last_heartbeat_time: Some(now),
            last_transition_time,
            reason: Some(reason.into()),
            message: Some(message),
        }
    }
}

/// KKP's condition map: condition type to condition.
pub type Conditions = BTreeMap<String, Condition>;

/// A reference to an object by name (and, where it may live elsewhere, namespace).
///
/// Shaped like `core/v1.ObjectReference`, of which KKP uses only these fields here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Name of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the referenced object; defaults to the referring object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kind of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// API version of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// UID of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// A part of the referenced object; for a Seed's kubeconfig, the key in the Secret
    /// (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// Resource version of the referenced object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// A reference to a Secret or other object in the same namespace, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[serde(default)]
    pub name: String,
}

/// How a cluster's (and a seed's) endpoints are exposed to the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExposeStrategy {
    /// A NodePort Service per endpoint.
    NodePort,
    /// A LoadBalancer Service per endpoint.
    LoadBalancer,
    /// Endpoints reached through the seed's tunneling agent.
    Tunneling,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("a valid timestamp"))
    }

    fn condition(status: ConditionStatus, reason: &str, message: &str, since: i64) -> Condition {
        Condition {
            status,
            kubermatic_version: Some("v2.26".into()),
            last_heartbeat_time: Some(at(since + 5)),
            last_transition_time: Some(at(since)),
            reason: Some(reason.into()),
            message: Some(message.into()),
        }
    }

    #[test]
    fn a_first_condition_transitions_now() {
        let next = Condition::next_at(None, ConditionStatus::False, "Waiting", "not yet".into(), at(100));
        assert_eq!(
            next,
            Condition {
                status: ConditionStatus::False,
                kubermatic_version: Some(CONTROLLER_VERSION.into()),
                last_heartbeat_time: Some(at(100)),
                last_transition_time: Some(at(100)),
                reason: Some("Waiting".into()),
                message: Some("not yet".into()),
            }
        );
    }

    #[test]
    fn the_same_conclusion_keeps_the_existing_condition() {
        let existing = condition(ConditionStatus::True, "Available", "up", 10);
        let next = Condition::next_at(Some(&existing), ConditionStatus::True, "Available", "up".into(), at(100));
        assert_eq!(next, existing);
    }

    #[test]
    fn a_new_message_keeps_the_transition_time() {
        let existing = condition(ConditionStatus::False, "Waiting", "not yet", 10);
        let next = Condition::next_at(Some(&existing), ConditionStatus::False, "Failed", "broken".into(), at(100));
        assert_eq!(next.last_transition_time, Some(at(10)));
        assert_eq!((next.reason.as_deref(), next.message.as_deref()), (Some("Failed"), Some("broken")));
        assert_eq!(
            (next.kubermatic_version.as_deref(), next.last_heartbeat_time),
            (Some(CONTROLLER_VERSION), Some(at(100)))
        );
    }

    #[test]
    fn a_condition_of_an_older_build_is_completed_once() {
        let mut existing = condition(ConditionStatus::True, "Available", "up", 10);
        existing.kubermatic_version = None;
        existing.last_heartbeat_time = None;
        let next = Condition::next_at(Some(&existing), ConditionStatus::True, "Available", "up".into(), at(100));
        assert_eq!(next.kubermatic_version.as_deref(), Some(CONTROLLER_VERSION));
        assert_eq!(next.last_heartbeat_time, Some(at(100)));
        assert_eq!(next.last_transition_time, Some(at(10)), "the status did not change");
        let again = Condition::next_at(Some(&next), ConditionStatus::True, "Available", "up".into(), at(200));
        assert_eq!(again, next, "a completed condition is kept as it is");
    }

    #[test]
    fn the_version_is_the_build_version() {
        assert_eq!(CONTROLLER_VERSION, format!("mla-controllers-v{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn a_kkp_condition_deserializes() {
        let json = serde_json::json!({
            "status": "True",
            "kubermaticVersion": "v2.31.0",
            "lastHeartbeatTime": "2026-08-21T10:00:00Z",
            "lastTransitionTime": "2026-08-21T09:00:00Z",
            "reason": "ClusterUpdateSuccessful",
            "message": ""
        });
        let condition: Condition = serde_json::from_value(json).expect("KKP's condition deserializes");
        assert_eq!(condition.status, ConditionStatus::True);
        assert_eq!(condition.kubermatic_version.as_deref(), Some("v2.31.0"));
    }

    #[test]
    fn a_new_status_transitions_now() {
        let existing = condition(ConditionStatus::False, "Waiting", "not yet", 10);
        let next = Condition::next_at(Some(&existing), ConditionStatus::True, "Waiting", "not yet".into(), at(100));
        assert_eq!(next.status, ConditionStatus::True);
        assert_eq!(next.last_transition_time, Some(at(100)));
    }
}

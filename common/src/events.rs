//! Events on the objects users look at, published only by the leader.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::leader::LeaderState;

/// Publishes Events as `<binary>/<controller>`.
#[derive(Clone)]
pub struct EventPublisher {
    recorder: Recorder,
    leader: LeaderState,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher").finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// A publisher reporting as `controller`, from instance `instance` (the pod name).
    pub fn new(client: kube::Client, controller: String, instance: Option<String>, leader: LeaderState) -> Self {
        Self { recorder: Recorder::new(client, Reporter { controller, instance }), leader }
    }

    /// A Normal event.
    pub async fn normal(&self, object: &ObjectReference, reason: &str, action: &str, note: impl Into<String>) {
        self.publish(object, EventType::Normal, reason, action, note.into()).await
    }

    /// A Warning event.
    pub async fn warning(&self, object: &ObjectReference, reason: &str, action: &str, note: impl Into<String>) {
        self.publish(object, EventType::Warning, reason, action, note.into()).await
    }

    /// A Warning event for a failed reconcile, with the error's category as reason.
    pub async fn error(&self, object: &ObjectReference, action: &str, error: &crate::Error) {
        self.warning(object, &reason_of(error.category()), action, error.to_string()).await
    }

    async fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, action: &str, mut note: String) {
        if !self.leader.is_leader() {
            return;
        }
        // The API server refuses notes over 1 KiB.
        if note.len() > 1024 {
            let mut cut = 1021;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(error) = self.recorder.publish(&event, object).await {
            // An Event that cannot be written must not fail the reconcile that reports it.
            tracing::warn!(%error, reason, "publishing an Event failed");
        }
    }
}

/// `kube_conflict` -> `KubeConflict`: Event reasons are CamelCase.
fn reason_of(category: &str) -> String {
    category
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(super::reason_of("kube_conflict"), "KubeConflict");
        assert_eq!(super::reason_of("invalid_spec"), "InvalidSpec");
    }
}

//! The error type of controllers, with a static category for metrics and Events.

use std::time::Duration;

/// A failure in one step of a reconcile. Every variant names the object it concerns so the
/// message alone tells an operator where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{verb} {kind} {object}: {source}")]
    Kube {
        /// What was attempted: get, list, apply, delete, ...
        verb: &'static str,
        /// Kind of the object.
        kind: String,
        /// `namespace/name` or `name` of the object.
        object: String,
        /// The client's error (boxed: it is large and errors travel by value).
        #[source]
        source: Box<kube::Error>,
    },
    /// The object's spec cannot be acted on until someone changes it.
    #[error("invalid {kind} {object}: {reason}")]
    InvalidSpec {
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name` of the object.
        object: String,
        /// What is wrong, for the condition and the Event.
        reason: String,
    },
    /// Something the object depends on is not there (yet).
    #[error("{kind} {object} is missing: {reason}")]
    MissingDependency {
        /// Kind of the missing object.
        kind: &'static str,
        /// `namespace/name` or `name` of the missing object.
        object: String,
        /// Why it is needed.
        reason: String,
    },
    /// An API outside Kubernetes (Grafana, Cortex, Loki) failed.
    #[error("{service} {operation}: {message}")]
    External {
        /// grafana, cortex, loki.
        service: &'static str,
        /// What was attempted.
        operation: String,
        /// What went wrong.
        message: String,
    },
    /// This replica does not hold the lease and so must not write.
    #[error("not the leader: refusing to {verb} {kind} {object}")]
    NotLeader {
        /// The write that was refused.
        verb: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name` of the object.
        object: String,
    },
    /// An object could not be (de)serialized.
    #[error("serializing {kind} {object}: {source}")]
    Serialization {
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name` of the object.
        object: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A failed Kubernetes call: `verb` of the `kind` object `object` (`namespace/name` or
    /// `name`).
    pub fn kube(verb: &'static str, kind: impl Into<String>, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { verb, kind: kind.into(), object: object.into(), source: Box::new(source) }
    }

    /// A short, fixed name of the kind of failure: a metric label value and the reason of
    /// Events, never carrying object names.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) if status.code == 409 => "kube_conflict",
                kube::Error::Api(status) if status.code == 404 => "kube_not_found",
                kube::Error::Api(status) if status.code == 403 => "kube_forbidden",
                kube::Error::Api(status) if status.code == 422 || status.code == 400 => "kube_invalid",
                _ => "kube_api",
            },
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::MissingDependency { .. } => "missing_dependency",
            Error::External { .. } => "external_api",
            Error::NotLeader { .. } => "not_leader",
            Error::Serialization { .. } => "serialization",
        }
    }

    /// Whether retrying without a change to the object cannot help. A permanent error
    /// waits for the next change of the object (or a long resync) instead of backing off.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec { .. } | Error::Serialization { .. } => true,
            Error::Kube { source, .. } => {
                matches!(source.as_ref(), kube::Error::Api(status) if status.code == 422 || status.code == 400)
            }
            _ => false,
        }
    }

    /// How long a permanent error waits before the object is looked at again anyway (in
    /// case what it depends on changed without an event reaching us).
    pub const PERMANENT_RECHECK: Duration = Duration::from_secs(15 * 60);
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

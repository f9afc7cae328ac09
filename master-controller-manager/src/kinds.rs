//! The kinds the master copies to every seed, and how a copy is made from the original.
//!
//! Objects are held untyped ([`Raw`]): metadata as `ObjectMeta`, everything else as JSON,
//! so a copy carries every field of the original, also fields our own types do not know
//! (KKP's User has many more than we read). What is copied is what KKP's own master
//! synchronizers copy (`pkg/controller/master-controller-manager/*-synchronizer` and, in
//! KKP EE, `pkg/ee/group-project-binding/sync-controller`): the spec, the labels, and
//! for Projects and Users the status; never annotations. Both then write the same values,
//! so running beside KKP's synchronizers is no write war.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use kube::Resource;
use kube::api::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// API group and version of every synced kind.
pub const GROUP: &str = "kubermatic.k8c.io";
/// API version of every synced kind.
pub const VERSION: &str = "v1";

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

    /// The copy to apply in a seed: name, labels and every field but status.
    fn copy(&self) -> Self;

    /// The status to apply to the copy, if the kind has a status subresource and the
    /// original sets it.
    fn status_copy(&self) -> Option<Self>;

    /// The original's status (JSON), for kinds whose status is copied.
    fn status_value(&self) -> Option<&Value>;

    /// The original's fields other than metadata, apiVersion, kind and status (JSON).
    fn body(&self) -> Map<String, Value>;

    /// Fingerprint of the fields other than metadata, apiVersion, kind and status, with
    /// Go zero values left out (see [`digest`]).
    fn body_digest(&self) -> u64;

    /// Fingerprint of the status (see [`digest`]), None when the object has none.
    fn status_digest(&self) -> Option<u64>;
}

/// What tells one synced kind from another.
pub trait KindInfo: Clone + Debug + Send + Sync + 'static {
    /// The kind, e.g. `User`.
    const KIND: &'static str;
    /// The plural resource name, e.g. `users`.
    const PLURAL: &'static str;
    /// Name of the per-kind controllers and of the `kind` metric label.
    const CONTROLLER: &'static str;
    /// Finalizer on master objects (KKP's synchronizers use the same names).
    const FINALIZER: &'static str;
    /// Whether the kind has a status subresource whose content is copied.
    const COPIES_STATUS: bool;
}

/// An object of a synced kind as the API server holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Raw<M: KindInfo> {
    /// Typed metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// apiVersion, kind, spec, status and whatever else the object has.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
    #[serde(skip)]
    kind: PhantomData<fn() -> M>,
}

impl<M: KindInfo> Raw<M> {
    /// An object named `name` with `fields` (apiVersion and kind are added).
    pub fn new(name: &str, fields: Map<String, Value>) -> Self {
        let mut object =
            Self { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, fields, kind: PhantomData };
        object.set_type();
        object
    }

    fn set_type(&mut self) {
        self.fields.insert("apiVersion".into(), Value::String(format!("{GROUP}/{VERSION}")));
        self.fields.insert("kind".into(), Value::String(M::KIND.into()));
    }
}

impl<M: KindInfo> Resource for Raw<M> {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(M::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(M::PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Keys of an object that are not its content.
const NOT_BODY: [&str; 4] = ["apiVersion", "kind", "metadata", "status"];

impl<M: KindInfo> Synced for Raw<M> {
    const CONTROLLER: &'static str = M::CONTROLLER;
    const FINALIZER: &'static str = M::FINALIZER;

    fn copy(&self) -> Self {
        let mut copy = Raw::new(&self.object_name(), self.body());
        copy.metadata.labels = self.metadata.labels.clone().filter(|labels| !labels.is_empty());
        copy
    }

    fn status_copy(&self) -> Option<Self> {
        let status = self.status_value()?.clone();
        Some(Raw::new(&self.object_name(), [("status".to_string(), status)].into_iter().collect()))
    }

    fn status_value(&self) -> Option<&Value> {
        if !M::COPIES_STATUS {
            return None;
        }
        self.fields.get("status").filter(|status| !status.is_null())
    }

    fn body(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(key, _)| !NOT_BODY.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn body_digest(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        hash_map(self.fields.iter().filter(|(key, _)| !NOT_BODY.contains(&key.as_str())), &mut hasher);
        hasher.finish()
    }

    fn status_digest(&self) -> Option<u64> {
        self.fields.get("status").filter(|status| !status.is_null()).map(digest)
    }
}

impl<M: KindInfo> Raw<M> {
    fn object_name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
}

macro_rules! kind {
    ($marker:ident, $alias:ident, $kind:literal, $plural:literal, $controller:literal, $finalizer:literal, $status:literal) => {
        #[doc = concat!("Marker of the kind `", $kind, "`.")]
        #[derive(Clone, Debug)]
        pub enum $marker {}

        impl KindInfo for $marker {
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const CONTROLLER: &'static str = $controller;
            const FINALIZER: &'static str = $finalizer;
            const COPIES_STATUS: bool = $status;
        }

        #[doc = concat!("A `", $kind, "`, untyped.")]
        pub type $alias = Raw<$marker>;
    };
}

kind!(ProjectKind, Project, "Project", "projects", "project-sync", "kubermatic.k8c.io/cleanup-seed-projects", true);
kind!(UserKind, User, "User", "users", "user-sync", "kubermatic.k8c.io/cleanup-seed-users", true);
kind!(
    UserProjectBindingKind,
    UserProjectBinding,
    "UserProjectBinding",
    "userprojectbindings",
    "userprojectbinding-sync",
    "kubermatic.k8c.io/cleanup-seed-user-project-bindings",
    false
);
kind!(
    GroupProjectBindingKind,
    GroupProjectBinding,
    "GroupProjectBinding",
    "groupprojectbindings",
    "groupprojectbinding-sync",
    "kubermatic.k8c.io/cleanup-seed-group-project-bindings",
    false
);

/// What must be removed from `current` so that it holds no field `desired` lacks: a JSON
/// merge patch of nulls, or None when nothing is to be removed. Objects are compared key
/// by key; lists and scalars are left to server-side apply, which replaces them whole.
/// Fields whose value is empty (null, false, 0, "", and lists or objects of only such
/// values) are left alone: Go clients such as KKP's synchronizers write zero values the
/// master object leaves out, and removing them would start a write war.
pub fn foreign_fields(current: &Value, desired: &Value) -> Option<Value> {
    let (Value::Object(current), Value::Object(desired)) = (current, desired) else { return None };
    let mut patch = Map::new();
    for (key, have) in current {
        match desired.get(key) {
            None | Some(Value::Null) if !is_zero(have) => {
                patch.insert(key.clone(), Value::Null);
            }
            None | Some(Value::Null) => {}
            Some(want) => {
                if let Some(nested) = foreign_fields(have, want) {
                    patch.insert(key.clone(), nested);
                }
            }
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// A fingerprint of `value` that two values share when they are equal up to what the
/// copy comparison tolerates: object keys in any order, fields holding Go zero values
/// (see [`is_zero`]) left out as if absent, numbers compared by value. Two values with the
/// same fingerprint need no write: applying one over the other changes nothing we compare,
/// and neither has a field the other lacks but a zero value ([`foreign_fields`] leaves
/// those alone too). Lists are compared element by element, in order.
pub fn digest(value: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_value(value, &mut hasher);
    hasher.finish()
}

fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => {
            hasher.write_u8(1);
            b.hash(hasher);
        }
        Value::Number(n) => {
            hasher.write_u8(2);
            // As `json_contains` compares them: 1 and 1.0 are the same number.
            n.as_f64().unwrap_or_default().to_bits().hash(hasher);
        }
        Value::String(s) => {
            hasher.write_u8(3);
            s.hash(hasher);
        }
        Value::Array(list) => {
            hasher.write_u8(4);
            hasher.write_usize(list.len());
            for item in list {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            hasher.write_u8(5);
            hash_map(map.iter(), hasher);
        }
    }
}

/// Hashes the entries whose value is not a zero value, sorted by key (the map type keeps
/// keys sorted only without serde_json's `preserve_order`).
fn hash_map<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>, hasher: &mut DefaultHasher) {
    let mut entries: Vec<_> = entries.filter(|(_, value)| !is_zero(value)).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    hasher.write_usize(entries.len());
    for (key, value) in entries {
        key.hash(hasher);
        hash_value(value, hasher);
    }
}

/// Whether `value` is a Go zero value, or a list or object made only of such values.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(list) => list.iter().all(is_zero),
        Value::Object(map) => map.values().all(is_zero),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(value: Value) -> User {
        serde_json::from_value(value).expect("a User")
    }

    #[test]
    fn a_copy_carries_name_labels_and_every_field_but_status() {
        let original = user(json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "User",
            "metadata": {"name": "u1", "labels": {"team": "a"}, "annotations": {"note": "x"},
                         "finalizers": [User::FINALIZER], "resourceVersion": "42", "uid": "uid"},
            "spec": {"email": "a@example.com", "name": "A", "admin": false, "groups": ["devs"],
                     "settings": {"useClusterList": true, "lastSeenChangelogVersion": "v2.31"}},
            "status": {"lastSeen": "2026-11-01T00:00:00Z"}
        }));
        let copy = serde_json::to_value(original.copy()).expect("json");
        assert_eq!(
            copy,
            json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "User",
                "metadata": {"name": "u1", "labels": {"team": "a"}},
                "spec": {"email": "a@example.com", "name": "A", "admin": false, "groups": ["devs"],
                         "settings": {"useClusterList": true, "lastSeenChangelogVersion": "v2.31"}}})
        );
        let status = serde_json::to_value(original.status_copy().expect("status")).expect("json");
        assert_eq!(
            status,
            json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": "u1"},
                   "status": {"lastSeen": "2026-11-01T00:00:00Z"}})
        );
    }

    #[test]
    fn bindings_have_no_status_copy_and_empty_labels_are_left_out() {
        let binding: UserProjectBinding = serde_json::from_value(json!({
            "apiVersion": "kubermatic.k8c.io/v1", "kind": "UserProjectBinding",
            "metadata": {"name": "b1", "labels": {}},
            "spec": {"userEmail": "a@example.com", "projectID": "p1", "group": "owners-p1"}
        }))
        .expect("a binding");
        assert!(binding.status_copy().is_none());
        assert_eq!(serde_json::to_value(binding.copy()).expect("json")["metadata"], json!({"name": "b1"}));
    }

    #[test]
    fn digests_ignore_key_order_zero_values_and_number_spelling() {
        let a =
            json!({"spec": {"email": "a", "admin": false, "groups": [], "n": 1, "s": {"x": ""}}, "status": {"p": "A"}});
        let b = json!({"spec": {"n": 1.0, "email": "a"}, "status": {"p": "A"}});
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"spec": {"n": 1, "email": "b"}})));
        assert_ne!(digest(&a), digest(&json!({"spec": {"n": 1, "email": "a", "admin": true}, "status": {"p": "A"}})));
        // List elements keep their order and their zero values.
        assert_ne!(digest(&json!({"l": [1, 2]})), digest(&json!({"l": [2, 1]})));
        assert_ne!(digest(&json!({"l": [0, 1]})), digest(&json!({"l": [1]})));
        let u1 = user(
            json!({"metadata": {"name": "u"}, "spec": {"email": "a", "admin": false}, "status": {"lastSeen": "x"}}),
        );
        let u2 = user(json!({"metadata": {"name": "u", "labels": {"l": "1"}}, "spec": {"email": "a"}}));
        assert_eq!(u1.body_digest(), u2.body_digest());
        assert_eq!(u1.status_digest(), Some(digest(&json!({"lastSeen": "x"}))));
        assert_eq!(u2.status_digest(), None);
    }

    #[test]
    fn foreign_fields_are_nulled_and_zero_values_left_alone() {
        let current = json!({"spec": {"email": "a", "groups": ["x"], "admin": false, "settings": {"a": 1, "b": ""}}});
        let desired = json!({"spec": {"email": "a", "settings": {"b": ""}}});
        assert_eq!(
            foreign_fields(&current, &desired),
            Some(json!({"spec": {"groups": null, "settings": {"a": null}}}))
        );
        assert_eq!(foreign_fields(&desired, &desired), None);
        // Lists are replaced whole by the apply; nothing to remove inside them.
        assert_eq!(foreign_fields(&json!({"l": [1, 2]}), &json!({"l": [1]})), None);
    }
}

//! Writes through server-side apply, one field manager per controller, gated on
//! leadership, and skipped when the object already says what we would write.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::leader::LeaderState;

/// Field manager `<binary>/<controller>`, as DESIGN.md asks.
pub fn field_manager(binary: &str, controller: &str) -> String {
    format!("{binary}/{controller}")
}

/// Applies objects for one controller.
#[derive(Clone, Debug)]
pub struct Applier {
    field_manager: String,
    leader: LeaderState,
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The object already held every field we own with the values we want: no request.
    Unchanged,
    /// A request was sent.
    Patched,
}

impl Applier {
    /// An applier writing as `field_manager`, only while `leader` leads.
    pub fn new(field_manager: impl Into<String>, leader: LeaderState) -> Self {
        Self { field_manager: field_manager.into(), leader }
    }

    /// The field manager this applier writes as.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Server-side applies `desired` unless `current` already contains it. `desired`
    /// must carry apiVersion, kind and name, and only the fields this controller owns.
    pub async fn apply<K>(&self, api: &Api<K>, desired: &K, current: Option<&K>) -> Result<Applied>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        let object = desired.name_any();
        let desired_json = to_json(desired, &object)?;
        if let Some(current) = current
            && json_contains(&to_json(current, &object)?, &desired_json)
        {
            return Ok(Applied::Unchanged);
        }
        self.ensure_leader("apply", &object)?;
        api.patch(&object, &self.params(), &Patch::Apply(&desired_json))
            .await
            .map_err(|source| kube_error::<K>("apply", object, source))?;
        Ok(Applied::Patched)
    }

    /// Server-side applies the status of `desired` unless `current`'s status contains it.
    pub async fn apply_status<K>(&self, api: &Api<K>, desired: &K, current: Option<&K>) -> Result<Applied>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        let object = desired.name_any();
        let desired_json = to_json(desired, &object)?;
        let status = |v: &serde_json::Value| v.get("status").cloned().unwrap_or_default();
        if let Some(current) = current
            && json_contains(&status(&to_json(current, &object)?), &status(&desired_json))
        {
            return Ok(Applied::Unchanged);
        }
        self.ensure_leader("apply status of", &object)?;
        api.patch_status(&object, &self.params(), &Patch::Apply(&desired_json))
            .await
            .map_err(|source| kube_error::<K>("apply status of", object, source))?;
        Ok(Applied::Patched)
    }

    /// Deletes `name`; an object that is already gone is success.
    pub async fn delete<K>(&self, api: &Api<K>, name: &str) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        self.ensure_leader("delete", name)?;
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(kube_error::<K>("delete", name.to_string(), source)),
        }
    }

    /// Fails unless this replica leads. Every write of a controller goes through here.
    pub fn ensure_leader(&self, verb: &'static str, object: &str) -> Result<()> {
        if self.leader.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader { verb, kind: "object", object: object.to_string() })
        }
    }

    fn params(&self) -> PatchParams {
        PatchParams::apply(&self.field_manager).force()
    }
}

fn to_json<K: Serialize>(object: &K, name: &str) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialization { kind: "object", object: name.into(), source })
}

fn kube_error<K: Resource>(verb: &'static str, object: String, source: kube::Error) -> Error
where
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    Error::Kube { verb, kind, object, source: Box::new(source) }
}

/// Whether `current` already holds everything in `desired`: every field of a desired
/// object is present in the current one with an equal value (recursively); lists must
/// match element by element. Fields only the server sets (resourceVersion, uid, status
/// written by others) are ignored because they are absent from `desired`.
pub fn json_contains(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => desired.iter().all(|(key, want)| match current.get(key) {
            Some(have) => json_contains(have, want),
            // An absent field equals a desired null or empty value (omitempty on the server).
            None => is_empty(want),
        }),
        (Value::Array(current), Value::Array(desired)) => {
            current.len() == desired.len() && current.iter().zip(desired).all(|(have, want)| json_contains(have, want))
        }
        (Value::Number(have), Value::Number(want)) => have.as_f64() == want.as_f64(),
        (have, want) => have == want,
    }
}

fn is_empty(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn contains_ignores_extra_server_fields() {
        let current = json!({"metadata": {"name": "a", "resourceVersion": "7", "labels": {"x": "1", "y": "2"}}, "spec": {"n": 1}});
        assert!(json_contains(&current, &json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"n": 1}})));
        assert!(!json_contains(&current, &json!({"metadata": {"labels": {"x": "2"}}})));
        assert!(!json_contains(&current, &json!({"spec": {"m": 1}})));
        assert!(json_contains(&current, &json!({"spec": {"m": null, "l": []}})));
    }

    #[test]
    fn contains_compares_lists_by_position_and_length() {
        let current = json!({"l": [{"a": 1, "b": 2}, {"a": 3}]});
        assert!(json_contains(&current, &json!({"l": [{"a": 1}, {"a": 3}]})));
        assert!(!json_contains(&current, &json!({"l": [{"a": 1}]})));
        assert!(!json_contains(&current, &json!({"l": [{"a": 3}, {"a": 1}]})));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_contains(&json!({"n": 1.0}), &json!({"n": 1})));
    }
}

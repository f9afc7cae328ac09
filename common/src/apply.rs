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

/// How many times [`Applier::add_finalizer`] tries its test-and-set patch when another
/// writer changed the finalizers in between.
pub const FINALIZER_ATTEMPTS: u32 = 4;

/// Applies objects for one controller.
#[derive(Clone, Debug)]
pub struct Applier {
    field_manager: String,
    leader: LeaderState,
    writes: Option<crate::metrics::ApiWrites>,
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
        Self { field_manager: field_manager.into(), leader, writes: None }
    }

    /// This applier, counting every write request it sends in `writes`.
    pub fn counting(self, writes: crate::metrics::ApiWrites) -> Self {
        Self { writes: Some(writes), ..self }
    }

    /// Counts one write request of `verb` on a `K` this applier's controller sends (the
    /// applier's own writes count themselves; this is for the few a controller sends
    /// directly: a create that must not overwrite, a test-and-set merge patch).
    pub fn count<K: Resource>(&self, verb: &'static str)
    where
        K::DynamicType: Default,
    {
        if let Some(writes) = &self.writes {
            writes.inc(&self.field_manager, &K::kind(&K::DynamicType::default()), verb);
        }
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
            && self.holds(&expand_cached(to_json(current, &object)?), &desired_json, None)
        {
            return Ok(Applied::Unchanged);
        }
        self.ensure_leader("apply", &object)?;
        self.count::<K>("apply");
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
        let desired_status = serde_json::json!({ "status": desired_json.get("status").cloned().unwrap_or_default() });
        if let Some(current) = current
            && self.holds(&to_json(current, &object)?, &desired_status, Some("status"))
        {
            return Ok(Applied::Unchanged);
        }
        self.ensure_leader("apply status of", &object)?;
        self.count::<K>("apply_status");
        api.patch_status(&object, &self.params(), &Patch::Apply(&desired_json))
            .await
            .map_err(|source| kube_error::<K>("apply status of", object, source))?;
        Ok(Applied::Patched)
    }

    /// Whether `current` already is what applying `desired` would make it: it contains
    /// every desired field, and we own no field that `desired` leaves out (applying would
    /// remove that field, so skipping the apply would leave it behind).
    fn holds(&self, current: &serde_json::Value, desired: &serde_json::Value, subresource: Option<&str>) -> bool {
        json_contains(current, desired)
            && !managed_fields(current, &self.field_manager, subresource)
                .is_some_and(|fields| owned_field_missing(&fields, desired))
    }

    /// Adds `finalizer` to the object unless present, with a test-and-set JSON patch
    /// that fails (409/422) if the finalizers changed since `current` was read. Another
    /// writer's finalizer arriving in between (five seed controllers each add theirs to a
    /// new Cluster at about the same time) is not an error: the object is read again and
    /// the patch tried again with what it holds now, up to [`FINALIZER_ATTEMPTS`] times;
    /// without it, every such race cost a reconcile's backoff (and, in a Grafana pass, a
    /// whole second pass).
    pub async fn add_finalizer<K>(&self, api: &Api<K>, current: &K, finalizer: &str) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        let name = current.name_any();
        let mut finalizers = current.meta().finalizers.clone();
        for attempt in 1..=FINALIZER_ATTEMPTS {
            let present = finalizers.clone().unwrap_or_default();
            if present.iter().any(|f| f == finalizer) {
                return Ok(());
            }
            self.ensure_leader("add finalizer to", &name)?;
            let patch: json_patch::Patch = if finalizers.is_none() {
                serde_json::from_value(serde_json::json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
                ]))
            } else {
                serde_json::from_value(serde_json::json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": present},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
                ]))
            }
            .map_err(|source| Error::Serialization {
                kind: "finalizer patch",
                object: name.clone(),
                source,
            })?;
            self.count::<K>("add_finalizer");
            match api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status))
                    if (status.code == 409 || status.code == 422) && attempt < FINALIZER_ATTEMPTS =>
                {
                    let fresh = api.get(&name).await.map_err(|source| kube_error::<K>("read", name.clone(), source))?;
                    if fresh.meta().deletion_timestamp.is_some() {
                        // Being deleted: no finalizer can be added any more; the caller
                        // gets the refusal, and its next look sees the deletion.
                        return Err(kube_error::<K>("add finalizer to", name, kube::Error::Api(status)));
                    }
                    finalizers = fresh.meta().finalizers.clone();
                }
                Err(source) => return Err(kube_error::<K>("add finalizer to", name, source)),
            }
        }
        Ok(())
    }

    /// Removes `finalizer` from the object if present, with a test-and-set JSON patch.
    pub async fn remove_finalizer<K>(&self, api: &Api<K>, current: &K, finalizer: &str) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        let finalizers = current.meta().finalizers.clone().unwrap_or_default();
        let Some(index) = finalizers.iter().position(|f| f == finalizer) else { return Ok(()) };
        let name = current.name_any();
        self.ensure_leader("remove finalizer from", &name)?;
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]))
        .map_err(|source| Error::Serialization { kind: "finalizer patch", object: name.clone(), source })?;
        self.count::<K>("remove_finalizer");
        match api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(kube_error::<K>("remove finalizer from", name, source)),
        }
    }

    /// Removes every finalizer of `finalizers` the object carries, in one test-and-set JSON
    /// patch (the list must still be what `current` holds, else 409/422 and a retry): used
    /// to release our finalizer and KKP's together after one cleanup.
    pub async fn remove_finalizers<K>(&self, api: &Api<K>, current: &K, finalizers: &[&str]) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        let present = current.meta().finalizers.clone().unwrap_or_default();
        let kept: Vec<&String> = present.iter().filter(|f| !finalizers.contains(&f.as_str())).collect();
        if kept.len() == present.len() {
            return Ok(());
        }
        let name = current.name_any();
        self.ensure_leader("remove finalizers from", &name)?;
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": present},
            {"op": "replace", "path": "/metadata/finalizers", "value": kept},
        ]))
        .map_err(|source| Error::Serialization { kind: "finalizer patch", object: name.clone(), source })?;
        self.count::<K>("remove_finalizer");
        match api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(kube_error::<K>("remove finalizers from", name, source)),
        }
    }

    /// Deletes `name`; an object that is already gone is success.
    pub async fn delete<K>(&self, api: &Api<K>, name: &str) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
        K::DynamicType: Default,
    {
        self.ensure_leader("delete", name)?;
        self.count::<K>("delete");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(kube_error::<K>("delete", name.to_string(), source)),
        }
    }

    /// Whether this replica leads (and so may write) right now.
    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
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

/// The `fieldsV1` set that `manager` owns through Apply on `subresource` (None: the main
/// resource), from the object's managedFields; a set kept as its JSON text
/// ([`compact_managed_fields`]) is parsed back.
fn managed_fields<'a>(
    object: &'a serde_json::Value,
    manager: &str,
    subresource: Option<&str>,
) -> Option<std::borrow::Cow<'a, serde_json::Value>> {
    object.pointer("/metadata/managedFields")?.as_array()?.iter().find_map(|entry| {
        let matches = entry.get("manager")?.as_str()? == manager
            && entry.get("operation")?.as_str()? == "Apply"
            && entry.get("subresource").and_then(|s| s.as_str()) == subresource;
        let fields = entry.get("fieldsV1").filter(|_| matches)?;
        match fields {
            serde_json::Value::String(text) => serde_json::from_str(text).ok().map(std::borrow::Cow::Owned),
            fields => Some(std::borrow::Cow::Borrowed(fields)),
        }
    })
}

/// Keeps each managedFields entry's `fieldsV1` set as its JSON text instead of a tree of
/// maps, for objects held in a cache. The set of a Deployment our controller applied
/// names every field of its spec: as a `serde_json::Value` that is about a hundred maps
/// (a B-tree node each, ~0.5 KiB even for one key), over 20 KiB per object, which made
/// the managedFields most of a seed manager's memory at a thousand Clusters (heaptrack);
/// as text it is one allocation of a few hundred bytes. The applier parses it back when
/// it compares ([`Applier::apply`]); nothing else reads it.
pub fn compact_managed_fields(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    for entry in meta.managed_fields.iter_mut().flatten() {
        if let Some(fields) = entry.fields_v1.as_mut()
            && !fields.0.is_string()
        {
            fields.0 = serde_json::Value::String(fields.0.to_string());
        }
    }
}

/// The annotation under which a cached Deployment keeps its pod template as JSON text
/// ([`compact_deployment`]). Only in a controller's memory: never written to the API.
pub const CACHED_POD_TEMPLATE: &str = "mla.k8c.io/cached-pod-template";

/// Keeps a cached Deployment's pod template as its JSON text (in the
/// [`CACHED_POD_TEMPLATE`] annotation of the cached copy) instead of k8s-openapi's
/// structs: a `Container` or `Volume` holds every optional field inline, so a template of
/// a few containers and volumes took about 10 KiB per Deployment, the largest part of a
/// seed manager's caches after the managedFields (heaptrack, 1,000 Clusters); as text it
/// is one allocation of 2-3 KiB. Only the applier reads the template of a cached
/// Deployment, and [`Applier::apply`] puts it back before it compares; the rest of the
/// object (selector, replicas, status, metadata) stays as it is.
pub fn compact_deployment(deployment: &mut k8s_openapi::api::apps::v1::Deployment) {
    let Some(spec) = deployment.spec.as_mut() else { return };
    if deployment.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CACHED_POD_TEMPLATE)) {
        return;
    }
    let template = std::mem::take(&mut spec.template);
    match serde_json::to_string(&template) {
        Ok(text) => {
            deployment
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CACHED_POD_TEMPLATE.into(), text);
        }
        // Cannot happen for a value that was just deserialized; keep it as it was.
        Err(_) => spec.template = template,
    }
}

/// An object's JSON with a pod template kept by [`compact_deployment`] put back in place.
fn expand_cached(mut object: serde_json::Value) -> serde_json::Value {
    let text = object
        .pointer_mut("/metadata/annotations")
        .and_then(serde_json::Value::as_object_mut)
        .and_then(|annotations| annotations.remove(CACHED_POD_TEMPLATE));
    if let Some(template) = text.as_ref().and_then(|t| t.as_str()).and_then(|t| serde_json::from_str(t).ok())
        && let Some(spec) = object.get_mut("spec").and_then(serde_json::Value::as_object_mut)
    {
        spec.insert("template".into(), template);
    }
    object
}

/// Whether `fields` (a managedFields `fieldsV1` set) names a field, by `f:<name>` path,
/// that `desired` does not have. List elements (`k:`, `v:`, `i:`) are left to
/// [`json_contains`], which compares lists whole.
pub fn owned_field_missing(fields: &serde_json::Value, desired: &serde_json::Value) -> bool {
    let Some(fields) = fields.as_object() else { return false };
    fields.iter().any(|(key, sub)| {
        let Some(name) = key.strip_prefix("f:") else { return false };
        match desired.get(name) {
            None | Some(serde_json::Value::Null) => true,
            Some(value) if value.is_object() => owned_field_missing(sub, value),
            Some(_) => false,
        }
    })
}

/// What Go's `omitempty` leaves out of the server's answer: null, false, 0, "", {} and [].
fn is_empty(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
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
        // The server leaves out what Go's omitempty drops.
        assert!(json_contains(&current, &json!({"spec": {"readOnly": false, "n": 1, "s": "", "z": 0}})));
        assert!(!json_contains(&current, &json!({"spec": {"readOnly": true}})));
    }

    #[test]
    fn contains_compares_lists_by_position_and_length() {
        let current = json!({"l": [{"a": 1, "b": 2}, {"a": 3}]});
        assert!(json_contains(&current, &json!({"l": [{"a": 1}, {"a": 3}]})));
        assert!(!json_contains(&current, &json!({"l": [{"a": 1}]})));
        assert!(!json_contains(&current, &json!({"l": [{"a": 3}, {"a": 1}]})));
    }

    #[test]
    fn a_field_we_own_but_no_longer_want_needs_an_apply() {
        let owned =
            json!({"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}}, "f:spec": {"f:name": {}, "f:admin": {}}});
        let desired = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"name": "x", "admin": false}});
        assert!(!owned_field_missing(&owned, &desired));
        let label_dropped = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"name": "x", "admin": false}});
        assert!(owned_field_missing(&owned, &label_dropped));
        let no_labels = json!({"metadata": {}, "spec": {"name": "x", "admin": false}});
        assert!(owned_field_missing(&owned, &no_labels));
        let field_dropped = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"name": "x"}});
        assert!(owned_field_missing(&owned, &field_dropped));
    }

    #[test]
    fn a_compacted_fields_set_compares_as_the_tree_did() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let mut object: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "a", "managedFields": [
                {"manager": "me", "operation": "Apply", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}}}]},
            "data": {"a": "1", "b": "2"}
        }))
        .expect("parses");
        compact_managed_fields(&mut object.metadata);
        let current = serde_json::to_value(&object).expect("serializes");
        let stored = current.pointer("/metadata/managedFields/0/fieldsV1").expect("kept");
        assert!(stored.is_string(), "kept as text: {stored}");
        assert_eq!(managed_fields(&current, "me", None).as_deref(), Some(&json!({"f:data": {"f:a": {}, "f:b": {}}})));
        let applier = Applier::new("me", LeaderState::always());
        assert!(applier.holds(&current, &json!({"data": {"a": "1", "b": "2"}}), None));
        assert!(!applier.holds(&current, &json!({"data": {"a": "1"}}), None), "b is ours and no longer wanted");
        // Compacting twice changes nothing.
        let before = object.metadata.clone();
        compact_managed_fields(&mut object.metadata);
        assert_eq!(object.metadata, before);
    }

    #[test]
    fn a_compacted_deployment_compares_as_the_whole_one_did() {
        use k8s_openapi::api::apps::v1::Deployment;
        let desired = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "gw", "namespace": "ns", "annotations": {"a": "1"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "gw"}},
                     "template": {"metadata": {"labels": {"app": "gw"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:1", "args": ["-g", "x"]}]}}}
        });
        let mut cached: Deployment = serde_json::from_value(desired.clone()).expect("parses");
        compact_deployment(&mut cached);
        assert_eq!(cached.spec.as_ref().map(|s| s.template.clone()), Some(Default::default()), "template moved out");
        assert!(cached.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CACHED_POD_TEMPLATE)));
        assert_eq!(cached.spec.as_ref().and_then(|s| s.replicas), Some(2), "the rest stays");
        let applier = Applier::new("me", LeaderState::always());
        let current = expand_cached(serde_json::to_value(&cached).expect("serializes"));
        assert!(applier.holds(&current, &desired, None));
        assert!(
            current.pointer(&format!("/metadata/annotations/{}", CACHED_POD_TEMPLATE.replace('/', "~1"))).is_none()
        );
        let mut changed = desired.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(!applier.holds(&current, &changed, None), "a template change is seen");
        // Compacting twice keeps the text.
        let before = cached.clone();
        compact_deployment(&mut cached);
        assert_eq!(cached, before);
    }

    #[test]
    fn managed_fields_are_found_by_manager_operation_and_subresource() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "me", "operation": "Update", "fieldsV1": {"f:x": {}}},
            {"manager": "me", "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}},
            {"manager": "me", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
            {"manager": "other", "operation": "Apply", "fieldsV1": {"f:y": {}}},
        ]}});
        assert_eq!(managed_fields(&object, "me", None).as_deref(), Some(&json!({"f:spec": {}})));
        assert_eq!(managed_fields(&object, "me", Some("status")).as_deref(), Some(&json!({"f:status": {}})));
        assert_eq!(managed_fields(&object, "nobody", None), None);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_contains(&json!({"n": 1.0}), &json!({"n": 1})));
    }
}

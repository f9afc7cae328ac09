//! What a seed synchronizer keeps of the copies in its seed: per copy a few fingerprints
//! instead of the object. Holding every copy in full (spec, status, managedFields), once
//! per seed, was most of the binary's memory (620 MiB for 50,000 objects in 2 seeds);
//! a [`CopyState`] is under a hundred bytes. The copy's body is read again (one GET)
//! only when its fingerprint differs from the original's.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::kinds::{Synced, digest};

/// A copy in a seed, reduced to what tells whether it equals its original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyState {
    /// Fingerprint of the body (everything but metadata, apiVersion, kind, status).
    body: u64,
    /// Fingerprint of the status, if any.
    status: Option<u64>,
    /// The copy's labels, sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// Label keys our field manager owns (through any operation).
    owned_labels: Box<[Box<str>]>,
    /// Whether our field manager wrote to it (only such copies are swept as orphans).
    pub ours: bool,
    /// Whether it is being deleted.
    pub deleting: bool,
}

impl CopyState {
    /// The state of `copy`, with `manager` the field manager we write as.
    pub fn of<K: Synced>(copy: &K, manager: &str) -> Self {
        let mut ours = false;
        let mut owned_labels = Vec::new();
        for entry in copy.meta().managed_fields.iter().flatten() {
            if entry.manager.as_deref() != Some(manager) {
                continue;
            }
            ours = true;
            if entry.subresource.as_deref().is_some_and(|s| !s.is_empty()) {
                continue;
            }
            let labels = entry.fields_v1.as_ref().and_then(|f| f.0.pointer("/f:metadata/f:labels"));
            for key in labels.and_then(|l| l.as_object()).into_iter().flat_map(|l| l.keys()) {
                if let Some(key) = key.strip_prefix("f:") {
                    owned_labels.push(Box::from(key));
                }
            }
        }
        owned_labels.sort_unstable();
        owned_labels.dedup();
        let labels = copy.labels().iter().map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str()))).collect();
        Self {
            body: copy.body_digest(),
            status: copy.status_digest(),
            labels,
            owned_labels: owned_labels.into_boxed_slice(),
            ours,
            deleting: copy.meta().deletion_timestamp.is_some(),
        }
    }

    /// Whether the copy already is what syncing `original` would make it, so that a
    /// sync needs no request: every label of the original with its value and no label
    /// we own that the original lacks (an apply would remove it), the body equal up to
    /// Go zero values, and the status too where the original has one to copy.
    pub fn matches<K: Synced>(&self, original: &K) -> bool {
        let empty = BTreeMap::new();
        let want = original.meta().labels.as_ref().unwrap_or(&empty);
        let label = |key: &str| self.labels.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.labels[i].1);
        want.iter().all(|(k, v)| label(k) == Some(v.as_str()))
            && self.owned_labels.iter().all(|k| want.contains_key(&**k))
            && self.body == original.body_digest()
            && original.status_value().is_none_or(|status| self.status == Some(digest(status)))
    }
}

/// The states of every copy of one kind in one seed, kept current from a watch of the
/// seed. Like a reflector store, a re-list replaces the contents only once complete.
#[derive(Debug, Default)]
pub struct Copies {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, CopyState>,
    relist: Option<HashMap<String, CopyState>>,
}

impl Copies {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `f` with the state of the copy `name`, None when the seed has no such copy.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(Option<&CopyState>) -> R) -> R {
        f(self.read().live.get(name))
    }

    /// Names of the copies for which `keep` holds.
    pub fn names(&self, keep: impl Fn(&str, &CopyState) -> bool) -> Vec<String> {
        self.read().live.iter().filter(|(name, state)| keep(name, state)).map(|(name, _)| name.clone()).collect()
    }

    /// Applies a watch event; returns the name of a copy whose state changed (added,
    /// changed or deleted), whose original must be looked at again.
    pub fn apply<K: Synced>(&self, event: watcher::Event<K>, manager: &str) -> Option<String> {
        match event {
            watcher::Event::Apply(copy) => {
                let state = CopyState::of(&copy, manager);
                let name = copy.name_any();
                let mut inner = self.write();
                if inner.live.get(&name) == Some(&state) {
                    return None;
                }
                inner.live.insert(name.clone(), state);
                Some(name)
            }
            watcher::Event::Delete(copy) => {
                let name = copy.name_any();
                self.write().live.remove(&name).map(|_| name)
            }
            watcher::Event::Init => {
                self.write().relist = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(copy) => {
                let state = CopyState::of(&copy, manager);
                self.write().relist.get_or_insert_with(HashMap::new).insert(copy.name_any(), state);
                None
            }
            watcher::Event::InitDone => {
                let mut inner = self.write();
                if let Some(mut listed) = inner.relist.take() {
                    listed.shrink_to_fit();
                    inner.live = listed;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::Project;

    const ME: &str = "master-controller-manager/seed-sync";

    fn project(value: serde_json::Value) -> Project {
        serde_json::from_value(value).expect("a Project")
    }

    #[test]
    fn a_copy_matches_its_original_up_to_zero_values_and_foreign_labels() {
        let original = project(json!({
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["f"], "annotations": {"x": "y"}},
            "spec": {"name": "P"}, "status": {"phase": "Active"}
        }));
        let copy = project(json!({
            "metadata": {"name": "p", "labels": {"a": "1", "seed-only": "x"}, "resourceVersion": "9",
                         "managedFields": [{"manager": ME, "operation": "Update",
                                            "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {}}}]},
            "spec": {"name": "P", "extra": ""}, "status": {"phase": "Active"}
        }));
        let state = CopyState::of(&copy, ME);
        assert!(state.ours && !state.deleting);
        assert!(state.matches(&original));

        let renamed = project(
            json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"name": "Q"}, "status": {"phase": "Active"}}),
        );
        assert!(!state.matches(&renamed));
        let relabelled = project(
            json!({"metadata": {"name": "p", "labels": {"a": "2"}}, "spec": {"name": "P"}, "status": {"phase": "Active"}}),
        );
        assert!(!state.matches(&relabelled));
        // We own label a: an original without it needs it removed from the copy.
        let unlabelled =
            project(json!({"metadata": {"name": "p"}, "spec": {"name": "P"}, "status": {"phase": "Active"}}));
        assert!(!state.matches(&unlabelled));
        let inactive = project(
            json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"name": "P"}, "status": {"phase": "Inactive"}}),
        );
        assert!(!state.matches(&inactive));
        // An original without status leaves the copy's status alone.
        let no_status = project(json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"name": "P"}}));
        assert!(state.matches(&no_status));

        let foreign =
            project(json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"name": "P", "more": 1}}));
        assert!(!CopyState::of(&foreign, ME).matches(&original));
        assert!(!CopyState::of(&foreign, ME).ours);
    }

    #[test]
    fn a_relist_replaces_the_states_once_complete() {
        let copies = Copies::default();
        let p = |name: &str, display: &str| project(json!({"metadata": {"name": name}, "spec": {"name": display}}));
        assert_eq!(copies.apply(watcher::Event::Apply(p("a", "A")), ME), Some("a".into()));
        assert_eq!(copies.apply(watcher::Event::Apply(p("a", "A")), ME), None, "unchanged: nothing to look at");
        assert_eq!(copies.apply(watcher::Event::Apply(p("a", "B")), ME), Some("a".into()));
        copies.apply(watcher::Event::<Project>::Init, ME);
        copies.apply(watcher::Event::InitApply(p("b", "B")), ME);
        assert!(copies.with("a", |s| s.is_some()), "the old contents stay until the list is complete");
        copies.apply(watcher::Event::<Project>::InitDone, ME);
        assert!(copies.with("a", |s| s.is_none()));
        assert!(copies.with("b", |s| s.is_some()));
        assert_eq!(copies.apply(watcher::Event::Delete(p("b", "B")), ME), Some("b".into()));
        assert!(copies.names(|_, _| true).is_empty());
    }
}

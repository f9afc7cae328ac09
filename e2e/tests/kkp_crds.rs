//! Our generated CRDs (`manifests/crds/`) are a faithful subset of KKP's: for every field
//! we declare, KKP declares it too, with the same type, format and enum; we require no
//! field KKP leaves optional (so every object KKP accepts, ours accepts); in the parts of
//! status we write, every field KKP requires is one we declare and require too (so what
//! we write is valid on KKP). Names, scope and the status subresource match as well.
//!
//! KKP's CRDs: `MLA_KKP_CRDS` or `../shared/reference/kkp-crds` (see `mla_e2e::kkp`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code may panic

use std::collections::BTreeSet;

use mla_e2e::{kkp, workspace_root};
use serde_json::Value;

/// Status paths the binaries write (server-side apply of their own fields): KKP must not
/// require anything there that we cannot write.
const WRITTEN: &[&str] = &["Cluster.status", "Alertmanager.status"];

/// Deliberate differences, each with its reason (also in docs/kkp.md). A difference found
/// that is not listed fails the test; a listed one that no longer occurs fails it too, so
/// the list stays true.
const DELIBERATE: &[(&str, &str)] = &[
    ("Alertmanager.spec: required here, optional in KKP", SPEC),
    ("Cluster.spec: required here, optional in KKP", SPEC),
    ("GroupProjectBinding.spec: required here, optional in KKP", SPEC),
    ("MLAAdminSetting.spec: required here, optional in KKP", SPEC),
    ("Project.spec: required here, optional in KKP", SPEC),
    ("RuleGroup.spec: required here, optional in KKP", SPEC),
    ("User.spec: required here, optional in KKP", SPEC),
    ("UserProjectBinding.spec: required here, optional in KKP", SPEC),
    (
        r#"Seed.spec.kubeconfig: x-kubernetes-validations [{"message":"spec.kubeconfig.name is required","rule":"has(self.name) && self.name != ''"}] here, null in KKP"#,
        OWN_VALIDATION,
    ),
    (r#"User.spec.email: pattern "^[^@\\s]+@[^@\\s]+$" here, null in KKP"#, OWN_VALIDATION),
    (
        r#"UserProjectBinding: x-kubernetes-validations [{"fieldPath":".spec.group","message":"spec.group must end with '-' followed by spec.projectID","rule":"self.spec.group.endsWith('-' + self.spec.projectID)"}] here, null in KKP"#,
        OWN_VALIDATION,
    ),
    (
        r#"UserProjectBinding.spec.group: pattern "^(owners|editors|viewers|projectmanagers)-[a-z0-9]([-a-z0-9]*[a-z0-9])?$" here, null in KKP"#,
        OWN_VALIDATION,
    ),
    (
        r#"UserProjectBinding.spec.projectID: pattern "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" here, null in KKP"#,
        OWN_VALIDATION,
    ),
    (r#"UserProjectBinding.spec.userEmail: pattern "^[^@\\s]+@[^@\\s]+$" here, null in KKP"#, OWN_VALIDATION),
];

/// Why some of our fields are validated where KKP's are not: our CRDs are installed only
/// on a platform without KKP (docs/kkp.md: never beside KKP's), where the API server is
/// the place to refuse a malformed email, group or project ID with a clear message; KKP's
/// own API validates these before it writes them.
const OWN_VALIDATION: &str = "validation of our CRDs, installed only without KKP";

/// Why every root requires `spec` here: kube-derive makes `spec` required, and KKP never
/// writes an object without it (its Go types serialize the spec struct always, even
/// empty), so no object KKP writes is refused.
const SPEC: &str = "kube-derive requires spec; KKP always writes it";

fn schema(crd: &Value) -> &Value {
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).expect("spec.versions");
    let v1 = versions.iter().find(|v| v["name"] == "v1").expect("a v1 version");
    &v1["schema"]["openAPIV3Schema"]
}

fn strings(value: Option<&Value>) -> BTreeSet<String> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    value.and_then(Value::as_array).into_iter().flatten().map(text).collect()
}

fn keys(value: Option<&Value>) -> BTreeSet<String> {
    value.and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k.clone()).collect()
}

fn compare(ours: &Value, theirs: Option<&Value>, path: &str, written: bool, found: &mut Vec<String>) {
    let Some(theirs) = theirs else {
        found.push(format!("{path}: not in KKP's schema"));
        return;
    };
    // Checks KKP has and we lack only make ours accept more, which is harmless; ours
    // beyond KKP's would refuse what KKP accepts.
    for attribute in ["pattern", "x-kubernetes-validations"] {
        if let Some(own) = ours.get(attribute)
            && Some(own) != theirs.get(attribute)
        {
            found.push(format!(
                "{path}: {attribute} {own} here, {} in KKP",
                theirs.get(attribute).unwrap_or(&Value::Null)
            ));
        }
    }
    for attribute in ["type", "format", "x-kubernetes-int-or-string"] {
        if ours.get(attribute) != theirs.get(attribute) {
            found.push(format!(
                "{path}: {attribute} {} here, {} in KKP",
                ours.get(attribute).unwrap_or(&Value::Null),
                theirs.get(attribute).unwrap_or(&Value::Null)
            ));
        }
    }
    let (our_enum, their_enum) = (strings(ours.get("enum")), strings(theirs.get("enum")));
    if our_enum != their_enum {
        found.push(format!("{path}: enum {our_enum:?} here, {their_enum:?} in KKP"));
    }
    let (our_required, their_required) = (strings(ours.get("required")), strings(theirs.get("required")));
    let our_properties = keys(ours.get("properties"));
    for field in our_required.difference(&their_required) {
        found.push(format!("{path}.{field}: required here, optional in KKP"));
    }
    for name in their_required.difference(&our_required) {
        // Where we only read, accepting more than KKP does is harmless; where we write,
        // what KKP requires must be ours to write and required by our schema too.
        if written && our_properties.contains(name) {
            found.push(format!("{path}.{name}: required in KKP where we write, optional here"));
        } else if written {
            found.push(format!("{path}.{name}: required in KKP where we write, unknown here"));
        }
    }
    if let Some(properties) = ours.get("properties").and_then(Value::as_object) {
        for (name, schema) in properties {
            let child = format!("{path}.{name}");
            let written = written || WRITTEN.contains(&child.as_str());
            compare(schema, theirs.get("properties").and_then(|p| p.get(name)), &child, written, found);
        }
    }
    if let Some(items) = ours.get("items") {
        compare(items, theirs.get("items"), &format!("{path}[]"), written, found);
    }
    if let Some(values) = ours.get("additionalProperties").filter(|v| v.is_object()) {
        let theirs = theirs.get("additionalProperties").filter(|v| v.is_object());
        compare(values, theirs, &format!("{path}{{}}"), written, found);
    }
}

#[test]
fn our_crds_are_a_faithful_subset_of_kkps() {
    let Some(dir) = kkp::crds_dir().expect("KKP's CRDs") else { return };
    let ours = kkp::read_crds(&workspace_root().join("manifests/crds")).expect("our CRDs");
    let theirs = kkp::read_crds(&dir).expect("KKP's CRDs");
    assert!(!ours.is_empty(), "no CRDs in manifests/crds");
    let mut found = Vec::new();
    for (kind, crd) in &ours {
        let Some(their_crd) = theirs.get(kind) else {
            found.push(format!("{kind}: no CRD in KKP"));
            continue;
        };
        for pointer in ["/metadata/name", "/spec/group", "/spec/scope", "/spec/names/plural", "/spec/names/singular"] {
            if crd.pointer(pointer) != their_crd.pointer(pointer) {
                found.push(format!(
                    "{kind}: {pointer} {:?} here, {:?} in KKP",
                    crd.pointer(pointer),
                    their_crd.pointer(pointer)
                ));
            }
        }
        let status_subresource = |crd: &Value| {
            crd.pointer("/spec/versions")
                .and_then(Value::as_array)
                .and_then(|v| v.iter().find(|v| v["name"] == "v1"))
                .is_some_and(|v| v.pointer("/subresources/status").is_some())
        };
        if status_subresource(crd) != status_subresource(their_crd) {
            found.push(format!(
                "{kind}: status subresource {} here, {} in KKP",
                status_subresource(crd),
                status_subresource(their_crd)
            ));
        }
        compare(schema(crd), Some(schema(their_crd)), kind, false, &mut found);
    }
    let deliberate: BTreeSet<&str> = DELIBERATE.iter().map(|(d, _)| *d).collect();
    let unexpected: Vec<&String> = found.iter().filter(|f| !deliberate.contains(f.as_str())).collect();
    let stale: Vec<&&str> = deliberate.iter().filter(|d| !found.iter().any(|f| f == **d)).collect();
    println!("compared {} CRDs with KKP's in {}", ours.len(), dir.display());
    for difference in &found {
        println!("  {difference}");
    }
    assert!(unexpected.is_empty(), "differences from KKP's CRDs that are not deliberate:\n{unexpected:#?}");
    assert!(stale.is_empty(), "listed as deliberate but no longer found:\n{stale:#?}");
}

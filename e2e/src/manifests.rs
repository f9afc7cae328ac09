//! Applying the YAML in `manifests/` to a test control plane, as an operator would.

use std::path::Path;

use anyhow::Context;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;

/// Server-side applies every document of a (multi-document) YAML file; namespaced objects
/// without a namespace go to `default`.
pub async fn apply_manifest(client: &kube::Client, path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut applied = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject =
            serde_yaml::from_value(value).with_context(|| format!("parsing {}", path.display()))?;
        let types =
            object.types.clone().with_context(|| format!("{}: a document without apiVersion/kind", path.display()))?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, capabilities) =
            pinned_kind(client, &gvk).await.with_context(|| format!("discovering {gvk:?}"))?;
        let name = object.metadata.name.clone().context("a document without metadata.name")?;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                let namespace = object.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                Api::namespaced_with(client.clone(), &namespace, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &PatchParams::apply("mla-e2e").force(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name} from {}", types.kind, path.display()))?;
        applied.push(format!("{}/{name}", types.kind));
    }
    Ok(applied)
}

/// The write requests (POST, PUT, PATCH, DELETE) the API server has served for `group`,
/// from its own `apiserver_request_total` counter.
pub async fn write_requests(client: &kube::Client, group: &str) -> anyhow::Result<u64> {
    Ok(write_requests_by_resource(client, &[group]).await?.values().sum())
}

/// The write requests the API server has served for the resources of `groups`, by
/// `group/resource/subresource verb`, from its own `apiserver_request_total` counter.
pub async fn write_requests_by_resource(
    client: &kube::Client,
    groups: &[&str],
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    write_requests_where(client, |group, _| groups.contains(&group)).await
}

/// The write requests the API server has served for the resources `keep(group, resource)`
/// accepts, by `group/resource/subresource verb`, from its own `apiserver_request_total`
/// counter.
pub async fn write_requests_where(
    client: &kube::Client,
    keep: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    const WRITES: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
    requests_where(client, |group, resource, verb| keep(group, resource) && WRITES.contains(&verb)).await
}

/// The requests of any verb (GET, LIST, WATCH, the writes) the API server has served for
/// what `keep(group, resource, verb)` accepts, by `group/resource/subresource verb`, from
/// its own `apiserver_request_total` counter.
pub async fn requests_where(
    client: &kube::Client,
    keep: impl Fn(&str, &str, &str) -> bool,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            labels[start..].split('"').next().map(str::to_string)
        };
        let (Some(group), Some(verb)) = (label("group"), label("verb")) else { continue };
        let resource = label("resource").unwrap_or_default();
        if keep(&group, &resource, &verb) {
            let key = format!("{group}/{resource}/{} {verb}", label("subresource").unwrap_or_default());
            *counts.entry(key).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    Ok(counts)
}

/// Applies every RBAC manifest of seed-controller-manager (`manifests/seed-controller-manager/rbac*.yaml`),
/// creating the namespaces they live in (`kubermatic` for the binary, `mla` for the shared
/// stack) first.
pub async fn apply_seed_manager_rbac(client: &kube::Client) -> anyhow::Result<()> {
    for namespace in ["kubermatic", "mla"] {
        crate::master::ensure_namespace(client, namespace).await?;
    }
    let dir = crate::workspace_root().join("manifests/seed-controller-manager");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rbac") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    for file in &files {
        apply_manifest(client, file).await?;
    }
    Ok(())
}

//! Setting up master-controller-manager's world: a master with Seeds pointing at seed
//! control planes, each with the RBAC of `manifests/master-controller-manager/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mla_common::api::{ObjectReference, Seed, SeedSpec};

use crate::{ControlPlane, Identity, apply_manifest, workspace_root};

/// Namespace of Seeds and the binary in the master (and of its identity in seeds).
pub const NAMESPACE: &str = "kubermatic";

/// A file of `manifests/master-controller-manager/`.
pub fn manifest(file: &str) -> PathBuf {
    workspace_root().join("manifests/master-controller-manager").join(file)
}

/// The ServiceAccount the binary runs as in the master.
pub fn master_identity() -> Identity {
    Identity::ServiceAccount { namespace: NAMESPACE.into(), name: "master-controller-manager".into() }
}

/// The ServiceAccount the master uses in each seed.
pub fn seed_identity() -> Identity {
    Identity::ServiceAccount { namespace: NAMESPACE.into(), name: "master-controller-manager-seed".into() }
}

/// Creates (or keeps) a namespace.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply("mla-e2e").force(), &Patch::Apply(ns))
        .await?;
    Ok(())
}

/// Prepares the master: namespace and the binary's RBAC.
pub async fn prepare_master(master: &ControlPlane) -> anyhow::Result<()> {
    ensure_namespace(&master.client(), NAMESPACE).await?;
    apply_manifest(&master.client(), &manifest("rbac.yaml")).await?;
    Ok(())
}

/// Registers `plane` as Seed `name`: the seed RBAC applied there, a kubeconfig of the
/// seed ServiceAccount in a Secret of the master, and the Seed object.
pub async fn register_seed(master: &ControlPlane, plane: &ControlPlane, name: &str) -> anyhow::Result<()> {
    ensure_namespace(&plane.client(), NAMESPACE).await?;
    apply_manifest(&plane.client(), &manifest("seed-rbac.yaml")).await?;
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig(&seed_identity()).await?)?;
    put_kubeconfig_secret(master, &format!("{name}-kubeconfig"), &kubeconfig).await?;
    create_seed(master, name, &format!("{name}-kubeconfig")).await
}

/// Writes a kubeconfig Secret into the master's Seed namespace.
pub async fn put_kubeconfig_secret(master: &ControlPlane, name: &str, kubeconfig: &str) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some(BTreeMap::from([("kubeconfig".to_string(), kubeconfig.to_string())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(master.client(), NAMESPACE)
        .patch(name, &PatchParams::apply("mla-e2e").force(), &Patch::Apply(secret))
        .await?;
    Ok(())
}

/// Creates a Seed naming the kubeconfig Secret `secret`.
pub async fn create_seed(master: &ControlPlane, name: &str, secret: &str) -> anyhow::Result<()> {
    let spec = SeedSpec {
        kubeconfig: ObjectReference { name: Some(secret.into()), ..Default::default() },
        expose_strategy: None,
        mla: None,
    };
    Api::<Seed>::namespaced(master.client(), NAMESPACE).create(&PostParams::default(), &Seed::new(name, spec)).await?;
    Ok(())
}

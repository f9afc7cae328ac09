//! The deployed form on real nodes (see mla_e2e::node and docs/testing.md, "Pods").

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use mla_e2e::control_plane::Options;
use mla_e2e::node::{Network, Node, NodeOptions};
use mla_e2e::{ControlPlane, eventually};

#[tokio::test]
async fn smoke() -> anyhow::Result<()> {
    let network = Network::create()?;
    let base = network.dir().to_path_buf();
    let mut plane = ControlPlane::start_with(
        "seed",
        &base,
        &Options { address: Some(network.host_address()), pods: true },
    )
    .await?;
    plane.start_pod_controllers()?;
    let node = Node::start(
        &plane,
        &network,
        "seed-1",
        &NodeOptions {
            images: vec![PathBuf::from("/tmp/podsdev/pause.tar")],
            sandbox_image: "docker.io/mla-controllers/pause:dev".into(),
        },
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(plane.client(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pause"},
        "spec": {"selector": {"matchLabels": {"app": "pause"}}, "template": {"metadata": {"labels": {"app": "pause"}},
          "spec": {"containers": [{"name": "pause", "image": "mla-controllers/pause:dev"}]}}}
    }))?;
    deployments.patch("pause", &PatchParams::apply("test"), &Patch::Apply(&deployment)).await?;
    eventually("pause ready", Duration::from_secs(120), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("pause").await?;
            Ok((d.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= 1).then_some(()))
        }
    })
    .await?;
    drop(node);
    Ok(())
}

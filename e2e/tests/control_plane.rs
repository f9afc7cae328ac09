//! The test harness itself: control planes start, are independent, enforce RBAC, and hand
//! out working kubeconfigs for restricted identities.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use mla_e2e::{ControlPlane, Identity};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

#[tokio::test]
async fn control_planes_are_independent_and_enforce_rbac() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(ControlPlane::start("a"), ControlPlane::start("b"))?;
    let ns = a.namespace("harness").await?;
    Api::<ConfigMap>::namespaced(a.client(), &ns).create(&PostParams::default(), &config_map("only-in-a")).await?;
    assert!(
        Api::<Namespace>::all(b.client()).get_opt(&ns).await?.is_none(),
        "namespace leaked into the other control plane"
    );

    // A ServiceAccount may do exactly what its Role allows.
    let sa = Identity::ServiceAccount { namespace: ns.clone(), name: "reader".into() };
    let as_sa = a.client_as(&sa).await?;
    let cms = Api::<ConfigMap>::namespaced(as_sa.clone(), &ns);
    let denied = cms.list(&Default::default()).await.expect_err("no Role yet: listing must be forbidden");
    assert!(matches!(denied, kube::Error::Api(ref s) if s.code == 403), "{denied:?}");

    let role = Role {
        metadata: ObjectMeta { name: Some("read-cms".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(a.client(), &ns).create(&PostParams::default(), &role).await?;
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("read-cms".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "read-cms".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(a.client(), &ns).create(&PostParams::default(), &binding).await?;
    let listed = mla_e2e::eventually("RBAC to allow the ServiceAccount", std::time::Duration::from_secs(10), || {
        let cms = cms.clone();
        async move { Ok(cms.list(&Default::default()).await.ok()) }
    })
    .await?;
    assert_eq!(listed.items.len(), 1);
    let write =
        cms.create(&PostParams::default(), &config_map("not-allowed")).await.expect_err("create is not granted");
    assert!(matches!(write, kube::Error::Api(ref s) if s.code == 403), "{write:?}");

    // A certificate user without bindings can do nothing.
    let user = a.client_as(&Identity::User { name: "nobody".into(), group: None }).await?;
    let denied = Api::<ConfigMap>::namespaced(user, &ns).list(&Default::default()).await.expect_err("forbidden");
    assert!(matches!(denied, kube::Error::Api(ref s) if s.code == 403), "{denied:?}");
    Ok(())
}

#[tokio::test]
async fn processes_are_gone_after_drop() -> anyhow::Result<()> {
    let plane = ControlPlane::start("drop").await?;
    let dir = plane.dir().to_path_buf();
    let url = plane.url();
    drop(plane);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    let port = url.rsplit(':').next().unwrap_or_default().to_string();
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(), "API server still listening on {url}");
    Ok(())
}

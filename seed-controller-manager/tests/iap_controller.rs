//! The Alertmanager IAP in the real binary, against a real API server, as the
//! seed-controller-manager ServiceAccount under `rbac.yaml` + `rbac-iap.yaml`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, apply_manifest, eventually, workspace_root, write_requests_by_resource};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "cluster-c1";

struct Seed {
    plane: ControlPlane,
    _binary: ManagedProcess,
    admin: String,
    log: std::path::PathBuf,
}

/// The IAP flags of the main test.
const IAP_FLAGS: &[&str] = &[
    "--iap-oidc-issuer-url=https://kkp.example.com/dex",
    "--iap-oidc-client-id=mla-alertmanager",
    "--iap-oidc-client-secret-name=iap-client",
    "--iap-domain=iap.example.com",
    "--iap-ingress-class=public",
    "--iap-tls-secret=iap-tls",
];

/// A seed with the binary running as its ServiceAccount under `manifests` (and the grants
/// of the controllers that always run), with `flags`.
async fn start(name: &str, manifests: &[&str], flags: &[&str]) -> anyhow::Result<Seed> {
    let plane = ControlPlane::start(name).await?;
    plane.install_crds().await?;
    let client = plane.client();
    for namespace in ["kubermatic", "mla", NS] {
        ensure_namespace(&client, namespace).await?;
    }
    // The Grafana and alerting controllers always run: the binary is ready only with their
    // grants too.
    for manifest in manifests.iter().chain(&["rbac-grafana.yaml", "rbac-alerting.yaml"]) {
        apply_manifest(&client, &workspace_root().join("manifests/seed-controller-manager").join(manifest)).await?;
    }
    let mut all_flags = vec!["--enable-user-cluster-mla=true"];
    all_flags.extend_from_slice(flags);
    let manager = support::spawn_seed_manager(&plane, all_flags, "seed-controller-manager.log", WAIT).await?;
    Ok(Seed { plane, _binary: manager.process, admin: manager.admin, log: manager.log })
}

fn cluster(name: &str, project: &str) -> Cluster {
    support::cluster(name, project, true, false)
}

fn binding(name: &str, email: &str, project: &str) -> UserProjectBinding {
    UserProjectBinding::new(
        name,
        UserProjectBindingSpec {
            user_email: email.into(),
            project_id: project.into(),
            group: format!("viewers-{project}"),
        },
    )
}

fn user(name: &str, email: &str, admin: bool) -> User {
    User::new(name, UserSpec { email: email.into(), name: name.into(), admin })
}

fn client_secret(value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some("iap-client".into()), namespace: Some("mla".into()), ..Default::default() },
        string_data: Some([("client-secret".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// The lines of the emails file, once it equals `expected`.
async fn emails_become(config_maps: &Api<ConfigMap>, expected: &[&str]) -> anyhow::Result<()> {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(&format!("allowed emails {expected:?}"), WAIT, || {
        let (config_maps, expected) = (config_maps.clone(), expected.clone());
        async move {
            let Some(cm) = config_maps.get_opt("mla-iap-emails").await? else { return Ok(None) };
            let file = cm.data.unwrap_or_default().get("authenticated-emails").cloned().unwrap_or_default();
            let lines: BTreeSet<String> = file.lines().map(str::to_string).collect();
            Ok((lines == expected && file.lines().count() == expected.len()).then_some(()))
        }
    })
    .await
}

async fn condition(clusters: &Api<Cluster>, reason: &str) -> anyhow::Result<Condition> {
    eventually(&format!("MLAIAPReady reason {reason}"), WAIT, || async move {
        let cluster = clusters.get("c1").await?;
        let found = cluster.status.and_then(|s| s.conditions.get("MLAIAPReady").cloned());
        Ok(found.filter(|c| c.reason.as_deref() == Some(reason)))
    })
    .await
}

fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn template_annotation(deployment: &Deployment, key: &str) -> Option<String> {
    deployment.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(key).cloned()
}

async fn writes(client: &kube::Client) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    write_requests_by_resource(client, &["", "apps", "networking.k8s.io", "kubermatic.k8c.io"]).await
}

#[tokio::test]
async fn iap_lifecycle() -> anyhow::Result<()> {
    let seed = start("iap", &["rbac.yaml", "rbac-iap.yaml"], IAP_FLAGS).await?;
    let client = seed.plane.client();
    let pp = PostParams::default();
    let users: Api<User> = Api::all(client.clone());
    users.create(&pp, &user("root", "Root@Example.com", true)).await?;
    users.create(&pp, &user("alice", "alice@example.com", false)).await?;
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    bindings.create(&pp, &binding("alice-p1", "alice@example.com", "p1")).await?;
    bindings.create(&pp, &binding("bob-p2", "bob@example.com", "p2")).await?;

    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters.create(&pp, &cluster("c1", "p1")).await?;
    condition(&clusters, "WaitingForNamespace").await?;
    let status =
        serde_json::json!({"status": {"namespaceName": NS, "address": {"externalName": "c1.seed.example.com"}}});
    clusters.patch_status("c1", &PatchParams::default(), &Patch::Merge(&status)).await?;

    // Without the OIDC client secret nothing is deployed; the condition and an Event say why.
    let missing = condition(&clusters, "ClientSecretMissing").await?;
    assert!(missing.message.unwrap_or_default().contains("mla/iap-client"));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    assert!(deployments.get_opt("mla-iap").await?.is_none());
    let mla_secrets: Api<Secret> = Api::namespaced(client.clone(), "mla");
    mla_secrets.create(&pp, &client_secret("s3cr3t")).await?;
    let c1 = clusters.get("c1").await?;
    condition(&clusters, "IAPNotAvailable").await?;

    // Every object, owned by the Cluster.
    let deployment = deployments.get("mla-iap").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service = services.get("mla-iap").await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
    let ingress = ingresses.get("mla-iap").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get("mla-iap").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let emails = config_maps.get("mla-iap-emails").await?;
    let uid = c1.uid().unwrap();
    for owners in [
        &deployment.metadata.owner_references,
        &service.metadata.owner_references,
        &ingress.metadata.owner_references,
        &secret.metadata.owner_references,
        &emails.metadata.owner_references,
    ] {
        assert_eq!(owners.as_ref().map(|o| o[0].uid.clone()), Some(uid.clone()));
    }

    // oauth2-proxy signs in at the platform issuer and forwards to this cluster's gateway.
    let pod = deployment.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    for expected in [
        "--oidc-issuer-url=https://kkp.example.com/dex",
        "--client-id=mla-alertmanager",
        "--upstream=http://mla-gateway.cluster-c1.svc.cluster.local/api/prom/alertmanager/",
        "--redirect-url=https://alertmanager.c1.iap.example.com/oauth2/callback",
        "--authenticated-emails-file=/etc/oauth2-proxy/emails/authenticated-emails",
    ] {
        assert!(args.contains(&expected.to_string()), "{expected} in {args:?}");
    }
    assert_eq!(container.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/ping"));
    let ingress_spec = ingress.spec.clone().unwrap();
    assert_eq!(ingress_spec.ingress_class_name.as_deref(), Some("public"));
    assert_eq!(ingress_spec.rules.unwrap()[0].host.as_deref(), Some("alertmanager.c1.iap.example.com"));
    assert_eq!(ingress_spec.tls.unwrap()[0].secret_name.as_deref(), Some("iap-tls"));

    // The secrets: the client secret copied, a 32-byte cookie secret.
    assert_eq!(secret_text(&secret, "client-secret"), "s3cr3t");
    let cookie = secret_text(&secret, "cookie-secret");
    assert_eq!(base64::engine::general_purpose::URL_SAFE.decode(&cookie)?.len(), 32);

    // Who is let in: the project's members and the admins (lower-cased), not p2's bob.
    emails_become(&config_maps, &["alice@example.com", "root@example.com"]).await?;

    // Bindings added and removed change the list.
    bindings.create(&pp, &binding("carol-p1", "carol@example.com", "p1")).await?;
    emails_become(&config_maps, &["alice@example.com", "carol@example.com", "root@example.com"]).await?;
    bindings.delete("alice-p1", &DeleteParams::default()).await?;
    emails_become(&config_maps, &["carol@example.com", "root@example.com"]).await?;
    // An admin who stops being one is out; a new admin is in.
    let demote = serde_json::json!({"spec": {"admin": false}});
    users.patch("root", &PatchParams::default(), &Patch::Merge(&demote)).await?;
    users.create(&pp, &user("dave", "dave@example.com", true)).await?;
    emails_become(&config_maps, &["carol@example.com", "dave@example.com"]).await?;
    // A member of a group bound to the project (KKP's GroupProjectBinding through
    // User.spec.groups) is in while in the group; a project service account never is.
    users.create(&pp, &user("frank", "frank@example.com", false)).await?;
    let join = serde_json::json!({"spec": {"groups": ["sre"]}});
    users.patch("frank", &PatchParams::default(), &Patch::Merge(&join)).await?;
    let group_binding = GroupProjectBinding::new(
        "p1-sre",
        GroupProjectBindingSpec { group: "sre".into(), project_id: "p1".into(), role: GroupProjectRole::Viewers },
    );
    let group_bindings: Api<GroupProjectBinding> = Api::all(client.clone());
    group_bindings.create(&pp, &group_binding).await?;
    bindings.create(&pp, &binding("robot-p1", "serviceaccount-7d4b5695vb@localhost", "p1")).await?;
    emails_become(&config_maps, &["carol@example.com", "dave@example.com", "frank@example.com"]).await?;
    let leave = serde_json::json!({"spec": {"groups": ["dev"]}});
    users.patch("frank", &PatchParams::default(), &Patch::Merge(&leave)).await?;
    emails_become(&config_maps, &["carol@example.com", "dave@example.com"]).await?;

    // Hostile emails. Those the schema lets through (a comma or a quote would make
    // oauth2-proxy's CSV parser add a field or refuse the whole file) ...
    bindings.create(&pp, &binding("mallory-comma", "evil@attacker.example,mallory", "p1")).await?;
    bindings.create(&pp, &binding("mallory-quote", "evil\"@attacker.example", "p1")).await?;
    // ... and, with the schema's pattern removed (as on a KKP CRD without it), a newline.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let unguard = serde_json::json!([{"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/userEmail/pattern"}]);
    crds.patch(
        "userprojectbindings.kubermatic.k8c.io",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(unguard)?),
    )
    .await?;
    let newline = binding("mallory-newline", "mallory@example.com\nevil@attacker.example", "p1");
    eventually("the unguarded schema to accept a newline", WAIT, || {
        let (bindings, newline) = (bindings.clone(), newline.clone());
        async move { Ok(bindings.create(&PostParams::default(), &newline).await.ok().map(|_| ())) }
    })
    .await?;
    bindings.create(&pp, &binding("erin-p1", "erin@example.com", "p1")).await?;
    emails_become(&config_maps, &["carol@example.com", "dave@example.com", "erin@example.com"]).await?;
    let file = config_maps.get("mla-iap-emails").await?.data.unwrap()["authenticated-emails"].clone();
    assert!(!file.contains("attacker") && !file.contains(',') && !file.contains('"'), "{file:?}");
    let rejected = eventually("the rejection in the condition", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("c1").await?;
            let message = c.status.and_then(|s| s.conditions.get("MLAIAPReady").cloned()).and_then(|c| c.message);
            Ok(message.filter(|m| m.contains("left out") && m.contains("\\n")))
        }
    })
    .await?;
    assert!(rejected.contains("evil@attacker.example,mallory"), "{rejected}");
    support::warning_event(&client, "default", "InvalidEmail", "", WAIT).await?;

    // Available replicas make the condition True.
    let available = serde_json::json!({"status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}});
    deployments.patch_status("mla-iap", &PatchParams::default(), &Patch::Merge(&available)).await?;
    let ready = condition(&clusters, "IAPAvailable").await?;
    assert_eq!(ready.status, ConditionStatus::True);

    // Steady state: two resync periods, zero writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = writes(&client).await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(writes(&client).await?, before, "writes during two no-change resync periods");

    // The cookie secret never changed; a rotated client secret reaches the copy and rolls
    // the pods (which read it at start).
    let version = template_annotation(&deployments.get("mla-iap").await?, "mla.k8c.io/client-secret-version");
    let rotate = serde_json::json!({"stringData": {"client-secret": "n3w"}});
    mla_secrets.patch("iap-client", &PatchParams::default(), &Patch::Merge(&rotate)).await?;
    eventually("the rotated client secret copied and the pods rolled", WAIT, || {
        let (secrets, deployments, version) = (secrets.clone(), deployments.clone(), version.clone());
        async move {
            let copied = secret_text(&secrets.get("mla-iap").await?, "client-secret") == "n3w";
            let rolled =
                template_annotation(&deployments.get("mla-iap").await?, "mla.k8c.io/client-secret-version") != version;
            Ok((copied && rolled).then_some(()))
        }
    })
    .await?;
    assert_eq!(secret_text(&secrets.get("mla-iap").await?, "cookie-secret"), cookie, "the cookie secret is stable");

    // Disabling MLA removes everything and the condition.
    let disable = serde_json::json!({"spec": {"mla": {"monitoringEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&disable)).await?;
    eventually("the IAP removed", WAIT, || {
        let (secrets, config_maps, deployments, services, ingresses, clusters) = (
            secrets.clone(),
            config_maps.clone(),
            deployments.clone(),
            services.clone(),
            ingresses.clone(),
            clusters.clone(),
        );
        async move {
            let gone = secrets.get_opt("mla-iap").await?.is_none()
                && config_maps.get_opt("mla-iap-emails").await?.is_none()
                && deployments.get_opt("mla-iap").await?.is_none()
                && services.get_opt("mla-iap").await?.is_none()
                && ingresses.get_opt("mla-iap").await?.is_none()
                && !clusters.get("c1").await?.status.unwrap_or_default().conditions.contains_key("MLAIAPReady");
            Ok(gone.then_some(()))
        }
    })
    .await?;

    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert!(metrics.contains("mla_reconciles_total{controller=\"iap\",result=\"success\"}"), "{metrics}");
    assert!(!metrics.contains("c1"), "no object names in metrics");
    Ok(())
}

#[tokio::test]
async fn without_an_issuer_nothing_is_made() -> anyhow::Result<()> {
    // Not even rbac-iap.yaml is needed.
    let seed = start("iap-off", &["rbac.yaml"], &[]).await?;
    let client = seed.plane.client();
    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters.create(&PostParams::default(), &cluster("c1", "p1")).await?;
    let status =
        serde_json::json!({"status": {"namespaceName": NS, "address": {"externalName": "c1.seed.example.com"}}});
    clusters.patch_status("c1", &PatchParams::default(), &Patch::Merge(&status)).await?;
    // The gateway is made: the cluster has been reconciled.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    eventually("the gateway Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move { Ok(deployments.get_opt("mla-gateway").await?.map(|_| ())) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await; // beyond one resync period
    assert!(deployments.get_opt("mla-iap").await?.is_none());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    assert!(secrets.get_opt("mla-iap").await?.is_none());
    let c1 = clusters.get("c1").await?;
    assert!(!c1.status.unwrap_or_default().conditions.contains_key("MLAIAPReady"));
    let log = std::fs::read_to_string(&seed.log)?;
    assert_eq!(log.matches("the Alertmanager IAP is not configured").count(), 1, "{log}");
    Ok(())
}

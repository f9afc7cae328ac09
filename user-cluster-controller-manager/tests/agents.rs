//! The binary against two real API servers (a seed and a user cluster): agents installed,
//! certified from the cluster CA, health reported, extra scrape configs, removal, and a
//! steady state with zero writes in either cluster.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::process::Command;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_common::pki;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{
    ControlPlane, Identity, ManagedProcess, apply_manifest, eventually, free_port, workspace_root,
    write_requests_by_resource,
};

const BINARY: &str = env!("CARGO_BIN_EXE_user-cluster-controller-manager");
const WAIT: Duration = Duration::from_secs(30);

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

async fn writes(plane: &ControlPlane) -> std::collections::BTreeMap<String, u64> {
    write_requests_by_resource(&plane.client(), &["", "apps", "rbac.authorization.k8s.io", "kubermatic.k8c.io"])
        .await
        .unwrap()
}

#[tokio::test]
async fn agents_lifecycle() -> anyhow::Result<()> {
    let (seed, user) = tokio::try_join!(ControlPlane::start("agents-seed"), ControlPlane::start("agents-user"))?;
    seed.install_crds().await?;
    let seed_client = seed.client();
    ensure_namespace(&seed_client, "cluster-c1").await?;

    // What the seed-controller-manager would have made: the cluster's CA.
    let ca = pki::create_ca("c1", SystemTime::now())?;
    let ca_secret = Secret {
        metadata: ObjectMeta { name: Some("mla-gateway-ca".into()), ..Default::default() },
        data: Some(
            [("ca.crt", &ca.cert_pem), ("ca.key", &ca.key_pem)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(seed_client.clone(), "cluster-c1").create(&PostParams::default(), &ca_secret).await?;
    let clusters: Api<Cluster> = Api::all(seed_client.clone());
    let spec = ClusterSpec {
        human_readable_name: None,
        expose_strategy: Some(ExposeStrategy::Tunneling),
        mla: Some(MLASettings { monitoring_enabled: true, logging_enabled: true, ..Default::default() }),
    };
    clusters.create(&PostParams::default(), &Cluster::new("c1", spec)).await?;
    let status = serde_json::json!({"status": {"namespaceName": "cluster-c1", "address": {"externalName": "c1.seed.example.com", "port": 6443}}});
    clusters.patch_status("c1", &PatchParams::default(), &Patch::Merge(&status)).await?;

    // Run under exactly the RBAC the seed manager grants (seed) and the manifest (user).
    let cluster = clusters.get("c1").await?;
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "kubermatic.k8c.io/v1".into(),
        kind: "Cluster".into(),
        name: "c1".into(),
        uid: cluster.uid().unwrap(),
        ..Default::default()
    };
    let settings = seed_controller_manager::usercluster::UserClusterSettings {
        mla_enabled: true,
        image: "unused".into(),
        kubeconfig_secret: "admin-kubeconfig".into(),
        kubeconfig_key: "kubeconfig".into(),
    };
    let objects = seed_controller_manager::usercluster::objects("c1", "cluster-c1", &owner, &settings);
    let pp = PostParams::default();
    Api::namespaced(seed_client.clone(), "cluster-c1").create(&pp, &objects.service_account).await?;
    Api::namespaced(seed_client.clone(), "cluster-c1").create(&pp, &objects.role).await?;
    Api::namespaced(seed_client.clone(), "cluster-c1").create(&pp, &objects.role_binding).await?;
    Api::all(seed_client.clone()).create(&pp, &objects.cluster_role).await?;
    Api::all(seed_client.clone()).create(&pp, &objects.cluster_role_binding).await?;
    let seed_kubeconfig = seed
        .kubeconfig(&Identity::ServiceAccount {
            namespace: "cluster-c1".into(),
            name: "mla-user-cluster-controller-manager".into(),
        })
        .await?;
    apply_manifest(
        &user.client(),
        &workspace_root().join("manifests/user-cluster-controller-manager/user-cluster-rbac.yaml"),
    )
    .await?;
    let user_kubeconfig =
        user.kubeconfig(&Identity::User { name: "mla-user-cluster-controller-manager".into(), group: None }).await?;

    let port = free_port()?;
    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", seed_kubeconfig.display()))
        .arg(format!("--user-cluster-kubeconfig={}", user_kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .args(["--cluster-name=c1", "--cluster-namespace=cluster-c1", "--leader-election-namespace=cluster-c1"])
        .args(["--resync-period=3s", "--log-level=info,kube=warn"]);
    let log = seed.dir().join("user-cluster-controller-manager.log");
    let _binary = ManagedProcess::spawn("user-cluster-controller-manager", command, &log)?;

    let user_client = user.client();
    let secrets: Api<Secret> = Api::namespaced(user_client.clone(), "mla-system");
    let deployments: Api<Deployment> = Api::namespaced(user_client.clone(), "mla-system");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(user_client.clone(), "mla-system");
    let config_maps: Api<ConfigMap> = Api::namespaced(user_client.clone(), "mla-system");
    eventually("the agents in the user cluster", WAIT, || {
        let (deployments, daemon_sets) = (deployments.clone(), daemon_sets.clone());
        async move {
            Ok((deployments.get_opt("prometheus").await?.is_some() && daemon_sets.get_opt("promtail").await?.is_some())
                .then_some(()))
        }
    })
    .await
    .map_err(|e| e.context(std::fs::read_to_string(&log).unwrap_or_default()))?;

    // Client certificates from the cluster's CA, with the CA as trust.
    let mut not_afters = Vec::new();
    for (secret, cn) in [("prometheus-certificates", "prometheus"), ("promtail-certificates", "promtail")] {
        let s = secrets.get(secret).await?;
        not_afters.push(pki::not_after(&text(&s, "client.crt")).expect("a certificate"));
        let spec = pki::LeafSpec::client(cn)?;
        let verdict = pki::leaf_renewal(
            Some(&text(&s, "client.crt")),
            Some(&text(&s, "client.key")),
            &ca.cert_pem,
            &spec,
            SystemTime::now(),
        );
        assert_eq!(verdict, None, "{secret}: a valid {cn} client certificate from the cluster CA");
        assert!(text(&s, "ca.crt").contains(ca.cert_pem.trim()));
    }
    // The expiry gauge: the earlier of the two client certificates.
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = reqwest::get(&metrics_url).await?.text().await?;
    let gauge = "mla_certificate_expiry_earliest_timestamp_seconds{kind=\"client\"} ";
    let published = metrics.lines().find_map(|l| l.strip_prefix(gauge)?.trim().parse::<i64>().ok());
    assert_eq!(published, not_afters.iter().min().copied(), "{metrics}");
    let prometheus_yaml = config_maps.get("prometheus").await?.data.unwrap_or_default()["prometheus.yaml"].clone();
    assert!(prometheus_yaml.contains("https://mla-gateway.c1.seed.example.com:6443/api/v1/push"), "{prometheus_yaml}");
    assert!(prometheus_yaml.contains("cluster: c1"), "{prometheus_yaml}");

    // Health on the seed's Cluster.
    eventually("health reported", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let health = clusters.get("c1").await?.status.and_then(|s| s.extended_health).unwrap_or_default();
            Ok((health.monitoring == Some(HealthStatus::HealthStatusProvisioning)
                && health.logging == Some(HealthStatus::HealthStatusProvisioning))
            .then_some(()))
        }
    })
    .await?;

    // Extra scrape configs: a good one is used, a bad one skipped with an Event.
    let scrape = |name: &str, yaml: &str| ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some([("scrape.yaml".to_string(), yaml.to_string())].into()),
        ..Default::default()
    };
    config_maps
        .create(
            &PostParams::default(),
            &scrape(
                "prometheus-scraping-good",
                "- job_name: my-app\n  static_configs:\n    - targets: ['my-app:8080']\n",
            ),
        )
        .await?;
    config_maps
        .create(&PostParams::default(), &scrape("prometheus-scraping-bad", "this: [is not a scrape config"))
        .await?;
    eventually("the good extra scrape config in prometheus.yaml", WAIT, || {
        let config_maps = config_maps.clone();
        async move {
            Ok(config_maps.get("prometheus").await?.data.unwrap_or_default()["prometheus.yaml"]
                .contains("job_name: my-app")
                .then_some(()))
        }
    })
    .await?;
    let events: Api<Event> = Api::namespaced(seed_client.clone(), "default");
    eventually("an InvalidScrapeConfig Event on the Cluster", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("InvalidScrapeConfig")
                        && e.note.as_deref().unwrap_or_default().contains("prometheus-scraping-bad")
                })
                .then_some(()))
        }
    })
    .await?;

    // Steady state: two resync periods without a write in either cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (writes(&seed).await, writes(&user).await);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!((writes(&seed).await, writes(&user).await), before, "writes during two no-change resync periods");

    // Resources from spec.mla reach the Deployment.
    let patch = serde_json::json!({"spec": {"mla": {"monitoringResources": {"limits": {"memory": "512Mi"}}}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("the new memory limit on Prometheus", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("prometheus").await?;
            let limit = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers[0].resources.clone())
                .and_then(|r| r.limits)
                .and_then(|l| l.get("memory").cloned());
            Ok((limit.map(|q| q.0).as_deref() == Some("512Mi")).then_some(()))
        }
    })
    .await?;

    // A CA rotation in the seed (successor promoted, old CA still trusted): the agents get
    // certificates from the new CA and a bundle with both.
    let next = pki::create_ca("c1", SystemTime::now())?;
    let rotated = serde_json::json!({"stringData": {"ca.crt": next.cert_pem, "ca.key": next.key_pem, "ca-previous.crt": ca.cert_pem}});
    Api::<Secret>::namespaced(seed_client.clone(), "cluster-c1")
        .patch("mla-gateway-ca", &PatchParams::default(), &Patch::Merge(&rotated))
        .await?;
    eventually("client certificates from the new CA", WAIT, || {
        let (secrets, next_pem, old_pem) = (secrets.clone(), next.cert_pem.clone(), ca.cert_pem.clone());
        async move {
            let mut renewed = true;
            for (name, cn) in [("prometheus-certificates", "prometheus"), ("promtail-certificates", "promtail")] {
                let s = secrets.get(name).await?;
                let spec = pki::LeafSpec::client(cn)?;
                let from_new = pki::leaf_renewal(
                    Some(&text(&s, "client.crt")),
                    Some(&text(&s, "client.key")),
                    &next_pem,
                    &spec,
                    SystemTime::now(),
                )
                .is_none();
                let bundle = text(&s, "ca.crt");
                renewed &= from_new && bundle.contains(next_pem.trim()) && bundle.contains(old_pem.trim());
            }
            Ok(renewed.then_some(()))
        }
    })
    .await?;

    // Logging off: promtail goes, Prometheus stays.
    let patch = serde_json::json!({"spec": {"mla": {"loggingEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("promtail removed", WAIT, || {
        let (daemon_sets, secrets) = (daemon_sets.clone(), secrets.clone());
        async move {
            Ok((daemon_sets.get_opt("promtail").await?.is_none()
                && secrets.get_opt("promtail-certificates").await?.is_none())
            .then_some(()))
        }
    })
    .await?;
    assert!(deployments.get_opt("prometheus").await?.is_some());

    // Logging back on: Promtail returns.
    let patch = serde_json::json!({"spec": {"mla": {"loggingEnabled": true}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("promtail back", WAIT, || {
        let daemon_sets = daemon_sets.clone();
        async move { Ok(daemon_sets.get_opt("promtail").await?.map(|_| ())) }
    })
    .await?;
    let patch = serde_json::json!({"spec": {"mla": {"loggingEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;

    // Monitoring off too: the namespace goes (it stays Terminating here: no namespace
    // controller runs in the test control plane).
    let patch = serde_json::json!({"spec": {"mla": {"monitoringEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let namespaces: Api<Namespace> = Api::all(user_client.clone());
    eventually("mla-system deleted", WAIT, || {
        let namespaces = namespaces.clone();
        async move {
            Ok(namespaces
                .get_opt("mla-system")
                .await?
                .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
                .then_some(()))
        }
    })
    .await?;
    let health = clusters.get("c1").await?.status.and_then(|s| s.extended_health).unwrap_or_default();
    assert_eq!((health.monitoring, health.logging), (None, None), "health cleared: {health:?}");
    assert!(clusters.get("c1").await?.finalizers().is_empty());
    // Nothing left behind outside the namespace either.
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(user_client.clone());
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(user_client.clone());
    for name in ["system:mla:prometheus", "system:mla:promtail"] {
        assert!(roles.get_opt(name).await?.is_none() && bindings.get_opt(name).await?.is_none(), "{name} left behind");
    }
    Ok(())
}

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
        agents_namespace: "mla-system".into(),
        extended_health: true,
        prometheus_image: None,
        promtail_image: None,
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

/// A seed and a user cluster with cluster `name`'s CA, the Cluster (`spec`, NodePort
/// address), the seed-side RBAC the seed manager grants and the user-side manifest, and
/// the binary started with `extra` flags.
struct Beside {
    seed: ControlPlane,
    user: ControlPlane,
    log: std::path::PathBuf,
    _binary: ManagedProcess,
}

async fn start_with(name: &str, spec: ClusterSpec, extra: &[&str]) -> anyhow::Result<Beside> {
    let (seed_name, user_name) = (format!("{name}-seed"), format!("{name}-user"));
    let (seed, user) = tokio::try_join!(ControlPlane::start(&seed_name), ControlPlane::start(&user_name))?;
    seed.install_crds().await?;
    let seed_client = seed.client();
    let ns = format!("cluster-{name}");
    ensure_namespace(&seed_client, &ns).await?;
    let ca = pki::create_ca(name, SystemTime::now())?;
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
    Api::<Secret>::namespaced(seed_client.clone(), &ns).create(&PostParams::default(), &ca_secret).await?;
    let clusters: Api<Cluster> = Api::all(seed_client.clone());
    clusters.create(&PostParams::default(), &Cluster::new(name, spec)).await?;
    let status = serde_json::json!({"status": {"namespaceName": ns, "address": {"externalName": format!("{name}.seed.example.com"), "port": 6443}}});
    clusters.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    let cluster = clusters.get(name).await?;
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "kubermatic.k8c.io/v1".into(),
        kind: "Cluster".into(),
        name: name.into(),
        uid: cluster.uid().unwrap(),
        ..Default::default()
    };
    let settings = seed_controller_manager::usercluster::UserClusterSettings {
        mla_enabled: true,
        image: "unused".into(),
        kubeconfig_secret: "admin-kubeconfig".into(),
        kubeconfig_key: "kubeconfig".into(),
        agents_namespace: "mla-system".into(),
        extended_health: true,
        prometheus_image: None,
        promtail_image: None,
    };
    let objects = seed_controller_manager::usercluster::objects(name, &ns, &owner, &settings);
    let pp = PostParams::default();
    Api::namespaced(seed_client.clone(), &ns).create(&pp, &objects.service_account).await?;
    Api::namespaced(seed_client.clone(), &ns).create(&pp, &objects.role).await?;
    Api::namespaced(seed_client.clone(), &ns).create(&pp, &objects.role_binding).await?;
    Api::all(seed_client.clone()).create(&pp, &objects.cluster_role).await?;
    Api::all(seed_client.clone()).create(&pp, &objects.cluster_role_binding).await?;
    let seed_kubeconfig = seed
        .kubeconfig(&Identity::ServiceAccount {
            namespace: ns.clone(),
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
        .arg(format!("--cluster-name={name}"))
        .arg(format!("--cluster-namespace={ns}"))
        .arg(format!("--leader-election-namespace={ns}"))
        .args(["--resync-period=3s", "--log-level=info,kube=warn"])
        .args(extra);
    let log = seed.dir().join("user-cluster-controller-manager.log");
    let binary = ManagedProcess::spawn("user-cluster-controller-manager", command, &log)?;
    Ok(Beside { seed, user, log, _binary: binary })
}

/// What KKP's own user-cluster-controller-manager does on every reconcile (read at
/// kubermatic/kubermatic 2974df5, `pkg/controller/user-cluster-controller-manager/resources`):
/// with its MLA off it deletes its agents' objects and the namespace `mla-system` and clears
/// `extendedHealth.monitoring`/`logging`; with its MLA on it deletes the legacy
/// `prometheus`/`promtail` objects in `mla-system` and their ClusterRoles/Bindings. The
/// stand-in does both, as KKP does (read, then write only what is there).
async fn kkp_user_cluster_controller_manager_pass(
    seed: &kube::Client,
    user: &kube::Client,
    cluster: &str,
) -> anyhow::Result<u32> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let mut writes = 0;
    let namespaces: Api<Namespace> = Api::all(user.clone());
    if namespaces.get_opt("mla-system").await?.is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()) {
        namespaces.delete("mla-system", &Default::default()).await?;
        writes += 1;
    }
    let roles: Api<ClusterRole> = Api::all(user.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(user.clone());
    for name in [
        "system:mla:prometheus",
        "system:mla:promtail",
        "system:mla:mla-monitoring-agent",
        "system:mla:mla-logging-agent",
    ] {
        if roles.get_opt(name).await?.is_some() {
            roles.delete(name, &Default::default()).await?;
            writes += 1;
        }
        if bindings.get_opt(name).await?.is_some() {
            bindings.delete(name, &Default::default()).await?;
            writes += 1;
        }
    }
    let clusters: Api<Cluster> = Api::all(seed.clone());
    let health = clusters.get(cluster).await?.status.and_then(|s| s.extended_health).unwrap_or_default();
    if health.monitoring.is_some() || health.logging.is_some() {
        let clear = serde_json::json!({"status": {"extendedHealth": {"monitoring": null, "logging": null}}});
        let params = PatchParams {
            field_manager: Some("kubermatic-usercluster-controller-manager".into()),
            ..Default::default()
        };
        clusters.patch_status(cluster, &params, &Patch::Merge(&clear)).await?;
        writes += 1;
    }
    Ok(writes)
}

/// Beside KKP's own user-cluster-controller-manager (its MLA off, and its legacy cleanup):
/// with `--agents-namespace=mla-agents --extended-health=false`, nothing of ours is
/// deleted, no field is written by both, and the steady state makes no write from either.
/// Also: KKP's gateway Service (port `http-ext`, not first) gives the port by name,
/// `monitoring-scraping*` ConfigMaps are read, and two replicas carry `__replica__`.
#[tokio::test]
async fn beside_kkp_user_cluster_controller_manager() -> anyhow::Result<()> {
    let spec = ClusterSpec {
        human_readable_name: None,
        expose_strategy: Some(ExposeStrategy::NodePort),
        mla: Some(MLASettings {
            monitoring_enabled: true,
            logging_enabled: true,
            monitoring_replicas: Some(2),
            ..Default::default()
        }),
    };
    let world = start_with("kkp", spec, &["--agents-namespace=mla-agents", "--extended-health=false"]).await?;
    let (seed_client, user_client) = (world.seed.client(), world.user.client());
    // KKP's gateway Service as KKP makes it: `http-ext` 80, here after another port.
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mla-gateway-ext", "namespace": "cluster-kkp"},
        "spec": {"type": "NodePort", "selector": {"app": "mla-gateway"}, "ports": [
            {"name": "metrics", "port": 9090, "targetPort": 9090, "nodePort": 30090},
            {"name": "http-ext", "port": 80, "targetPort": "http-ext", "nodePort": 30080}]}
    }))?;
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(seed_client.clone(), "cluster-kkp")
        .create(&PostParams::default(), &service)
        .await?;

    // KKP's user-cluster-controller-manager, reconciling all the time.
    let stand_in = {
        let (seed_client, user_client) = (seed_client.clone(), user_client.clone());
        tokio::spawn(async move {
            loop {
                if let Err(error) = kkp_user_cluster_controller_manager_pass(&seed_client, &user_client, "kkp").await {
                    eprintln!("KKP stand-in: {error:#}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let config_maps: Api<ConfigMap> = Api::namespaced(user_client.clone(), "mla-agents");
    let deployments: Api<Deployment> = Api::namespaced(user_client.clone(), "mla-agents");
    let daemon_sets: Api<DaemonSet> = Api::namespaced(user_client.clone(), "mla-agents");
    eventually("the agents in mla-agents", WAIT, || {
        let (deployments, daemon_sets) = (deployments.clone(), daemon_sets.clone());
        async move {
            Ok((deployments.get_opt("prometheus").await?.is_some() && daemon_sets.get_opt("promtail").await?.is_some())
                .then_some(()))
        }
    })
    .await
    .map_err(|e| e.context(std::fs::read_to_string(&world.log).unwrap_or_default()))?;
    let scrape = ConfigMap {
        metadata: ObjectMeta { name: Some("monitoring-scraping-app".into()), ..Default::default() },
        data: Some(
            [("job.yaml".to_string(), "job_name: kkp-custom\nstatic_configs: [{targets: ['app:8080']}]\n".to_string())]
                .into(),
        ),
        ..Default::default()
    };
    config_maps.create(&PostParams::default(), &scrape).await?;
    let prometheus_yaml = eventually("the monitoring-scraping job in prometheus.yaml", WAIT, || {
        let config_maps = config_maps.clone();
        async move {
            let yaml = config_maps.get("prometheus").await?.data.unwrap_or_default()["prometheus.yaml"].clone();
            Ok(yaml.contains("job_name: kkp-custom").then_some(yaml))
        }
    })
    .await?;
    assert!(prometheus_yaml.contains("https://kkp.seed.example.com:30080/api/v1/push"), "{prometheus_yaml}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&prometheus_yaml)?;
    assert_eq!(parsed["global"]["external_labels"]["__replica__"].as_str(), Some("${POD_NAME}"));
    assert_eq!(parsed["global"]["external_labels"]["cluster"].as_str(), Some("kkp"));
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(user_client.clone());
    for name in ["system:mla-agents:prometheus", "system:mla-agents:promtail"] {
        assert!(roles.get_opt(name).await?.is_some(), "{name}");
    }

    // Health as our own conditions; extendedHealth.monitoring/logging stay KKP's.
    let clusters: Api<Cluster> = Api::all(seed_client.clone());
    eventually("agent conditions on the Cluster", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let cluster = clusters.get("kkp").await?;
            let reason = |t: &str| cluster.condition(t).and_then(|c| c.reason.clone());
            Ok((reason("MLAMonitoringAgentReady").as_deref() == Some("AgentProvisioning")
                && reason("MLALoggingAgentReady").as_deref() == Some("AgentProvisioning"))
            .then_some(()))
        }
    })
    .await?;
    let cluster = clusters.get("kkp").await?;
    let health = cluster.status.as_ref().and_then(|s| s.extended_health.clone()).unwrap_or_default();
    assert_eq!((health.monitoring, health.logging), (None, None), "{health:?}");
    let ours: Vec<_> = cluster
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref().is_some_and(|m| m.starts_with("user-cluster-controller-manager")))
        .filter_map(|m| m.fields_v1.as_ref().map(|f| f.0.to_string()))
        .collect();
    assert!(ours.iter().all(|f| !f.contains("extendedHealth")), "we own no extendedHealth field: {ours:?}");

    // Steady state beside KKP: no write from either side in two resync periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (writes(&world.seed).await, writes(&world.user).await);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!((writes(&world.seed).await, writes(&world.user).await), before, "writes beside KKP");
    assert_eq!(kkp_user_cluster_controller_manager_pass(&seed_client, &user_client, "kkp").await?, 0);
    assert!(deployments.get_opt("prometheus").await?.is_some() && daemon_sets.get_opt("promtail").await?.is_some());

    // Monitoring off: its condition goes, the log agent's stays.
    let patch = serde_json::json!({"spec": {"mla": {"monitoringEnabled": false}}});
    clusters.patch("kkp", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("the monitoring condition removed", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let cluster = clusters.get("kkp").await?;
            Ok((cluster.condition("MLAMonitoringAgentReady").is_none()
                && cluster.condition("MLALoggingAgentReady").is_some())
            .then_some(()))
        }
    })
    .await?;
    stand_in.abort();
    Ok(())
}

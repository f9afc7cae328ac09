//! The alerting controllers in the real binary, against a real API server and real Cortex
//! (its Alertmanager, ruler and runtime configuration), under the RBAC of
//! `manifests/seed-controller-manager/`. Loki cannot be built here (AGPL): its ruler is the
//! test server's.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::cortex::remote_write::Series;
use mla_e2e::cortex::{Cortex, CortexServer, Ruler};
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, apply_manifest, eventually, workspace_root};

const WAIT: Duration = Duration::from_secs(30);
const RUNTIME_CONFIG: &str = "cortex-runtime-config";
const RUNTIME_KEY: &str = "runtime_config.yaml";

struct Seed {
    plane: ControlPlane,
    cortex: Cortex,
    /// The Loki ruler (a test server: Loki cannot be built here).
    loki: CortexServer,
    binary: ManagedProcess,
    admin: String,
    _kubelet: tokio::task::JoinHandle<()>,
}

async fn start(name: &str) -> anyhow::Result<Seed> {
    let plane = ControlPlane::start(name).await?;
    plane.install_crds().await?;
    let client = plane.client();
    for namespace in ["kubermatic", "mla"] {
        ensure_namespace(&client, namespace).await?;
    }
    // The Grafana controller always runs: the binary is ready only with its grants too.
    for manifest in ["rbac.yaml", "rbac-alerting.yaml", "rbac-grafana.yaml"] {
        apply_manifest(&client, &workspace_root().join("manifests/seed-controller-manager").join(manifest)).await?;
    }
    // Cortex's runtime configuration, with another tenant's limits already in it.
    let runtime_config = ConfigMap {
        metadata: ObjectMeta { name: Some(RUNTIME_CONFIG.into()), ..Default::default() },
        data: Some([(RUNTIME_KEY.to_string(), "overrides:\n  other:\n    ingestion_rate: 5\n".to_string())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), "mla").create(&PostParams::default(), &runtime_config).await?;
    let dir = std::env::temp_dir().join(format!("mla-alerting-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cortex = Cortex::start(&dir.join("cortex")).await?;
    // As a kubelet mounts the ConfigMap into Cortex's pod.
    let kubelet = cortex.mount_config_map(client.clone(), "mla", RUNTIME_CONFIG, RUNTIME_KEY);
    let loki = CortexServer::start().await?;

    let (binary, admin) = spawn_binary(&plane, &cortex, &loki, true).await?;
    Ok(Seed { plane, cortex, loki, binary, admin, _kubelet: kubelet })
}

/// Runs the binary as its ServiceAccount, with MLA offered or not, until it is ready.
async fn spawn_binary(
    plane: &ControlPlane,
    cortex: &Cortex,
    loki: &CortexServer,
    mla_enabled: bool,
) -> anyhow::Result<(ManagedProcess, String)> {
    let flags = [
        format!("--enable-user-cluster-mla={mla_enabled}"),
        format!("--cortex-alertmanager-url={}", cortex.url()),
        format!("--cortex-ruler-url={}", cortex.url()),
        format!("--loki-ruler-url={}", loki.url()),
        "--cortex-request-timeout=2s".to_string(),
    ];
    let manager = support::spawn_seed_manager(plane, flags, "seed-controller-manager.log", WAIT).await?;
    Ok((manager.process, manager.admin))
}

async fn create_cluster(client: &kube::Client, name: &str, monitoring: bool, logging: bool) -> anyhow::Result<()> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    let cluster = support::cluster(name, "p1", monitoring, logging);
    clusters.create(&PostParams::default(), &cluster).await?;
    let namespace = format!("cluster-{name}");
    ensure_namespace(client, &namespace).await?;
    let status = serde_json::json!({"status": {"namespaceName": namespace, "address": {"externalName": format!("{name}.seed.example.com")}}});
    clusters.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

fn rule_group(name: &str, namespace: &str, cluster: &str, kind: RuleGroupType, data: &str) -> RuleGroup {
    let mut group = RuleGroup::new(
        name,
        RuleGroupSpec {
            rule_group_type: kind,
            cluster: ObjectReference { name: Some(cluster.into()), ..Default::default() },
            data: ByteString(data.as_bytes().to_vec()),
            is_default: false,
        },
    );
    group.metadata.namespace = Some(namespace.into());
    group
}

async fn set_secret_config(client: &kube::Client, namespace: &str, config: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"stringData": {"alertmanager.yaml": config}});
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch("alertmanager", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    eventually(what, WAIT, || {
        let done = check();
        async move { Ok(done.then_some(())) }
    })
    .await
}

/// Waits until `check` (a question to real Cortex) answers true.
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    eventually(what, WAIT, || {
        let done = check();
        async move { Ok(done.await?.then_some(())) }
    })
    .await
}

/// The tenant's Alertmanager configuration as Cortex stores and serves it.
async fn am_config(cortex: &Cortex, tenant: &str) -> String {
    cortex.alertmanager_config(tenant).await.expect("cortex answers").unwrap_or_default()
}

async fn cluster_condition(client: &kube::Client, name: &str, reason: &str) -> anyhow::Result<Cluster> {
    let clusters: Api<Cluster> = Api::all(client.clone());
    eventually(&format!("{name}: condition reason {reason}"), WAIT, || {
        let clusters = clusters.clone();
        async move {
            let cluster = clusters.get(name).await?;
            let found = cluster
                .status
                .as_ref()
                .and_then(|s| s.conditions.get("MLAAlertingReady"))
                .and_then(|c| c.reason.clone());
            Ok((found.as_deref() == Some(reason)).then_some(cluster))
        }
    })
    .await
}

async fn event(client: &kube::Client, namespace: &str, reason: &str, contains: &str) -> anyhow::Result<()> {
    support::warning_event(client, namespace, reason, contains, WAIT).await
}

async fn runtime_config(client: &kube::Client) -> anyhow::Result<serde_yaml::Value> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), "mla").get(RUNTIME_CONFIG).await?;
    Ok(serde_yaml::from_str(&map.data.unwrap_or_default()[RUNTIME_KEY])?)
}

async fn writes(client: &kube::Client) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    mla_e2e::write_requests_by_resource(client, &["", "apps", "kubermatic.k8c.io", "rbac.authorization.k8s.io"]).await
}

const METRICS_TEMPLATE: &str =
    "name: kubernetes-absent\nrules:\n  - alert: KubeletDown\n    expr: up{job=\"kubelet\"} == 0\n    for: 15m\n";
const TEAM_CONFIG: &str =
    "template_files: {}\nalertmanager_config: |\n  route:\n    receiver: team\n  receivers:\n    - name: team\n";

#[tokio::test]
async fn alerting_lifecycle() -> anyhow::Result<()> {
    let mut seed = start("alerting").await?;
    let client = seed.plane.client();
    eprintln!(
        "measured: cortex ready {:?} after start, RSS {} KiB",
        seed.cortex.started_in(),
        seed.cortex.rss_kib().unwrap_or_default()
    );

    // A template in the MLA namespace, then two clusters: c1 with monitoring, c2 with logging.
    let templates: Api<RuleGroup> = Api::namespaced(client.clone(), "mla");
    templates
        .create(
            &PostParams::default(),
            &rule_group("kubernetes-absent", "mla", "", RuleGroupType::Metrics, METRICS_TEMPLATE),
        )
        .await?;
    let created = std::time::Instant::now();
    create_cluster(&client, "c1", true, false).await?;
    // c2's user brought their own configuration before MLA was on: it is kept, not replaced.
    ensure_namespace(&client, "cluster-c2").await?;
    let own = Secret {
        metadata: ObjectMeta { name: Some("alertmanager".into()), ..Default::default() },
        string_data: Some([("alertmanager.yaml".to_string(), TEAM_CONFIG.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "cluster-c2").create(&PostParams::default(), &own).await?;
    create_cluster(&client, "c2", false, true).await?;

    // The default Alertmanager and its Secret, pushed under each cluster's tenant only, and
    // run by each tenant's Alertmanager in Cortex.
    let cortex = &seed.cortex;
    wait_until("both tenants' Alertmanagers running their configuration", || async {
        Ok(cortex.alertmanager_running_config("c1").await?.is_some()
            && cortex.alertmanager_running_config("c2").await?.is_some())
    })
    .await?;
    eprintln!(
        "measured: both clusters' Alertmanager configurations running in Cortex {:?} after the first Cluster was created",
        created.elapsed()
    );
    assert!(am_config(cortex, "c1").await.contains("receiver: 'null'"), "KKP's default");
    assert!(am_config(cortex, "c2").await.contains("receiver: team"), "the user's own Secret");
    let running = cortex.alertmanager_running_config("c1").await?.unwrap_or_default();
    assert!(running.contains("receiver: 'null'") || running.contains("receiver: \"null\""), "{running}");
    let c2_secret = Api::<Secret>::namespaced(client.clone(), "cluster-c2").get("alertmanager").await?;
    assert!(String::from_utf8(c2_secret.data.unwrap()["alertmanager.yaml"].0.clone())?.contains("receiver: team"));
    assert_eq!(cortex.alertmanager_config("cluster-c1").await?, None, "the tenant is the cluster name");
    let c1 = cluster_condition(&client, "c1", "Synced").await?;
    assert_eq!(c1.finalizers(), ["mla.k8c.io/cortex"]);
    assert_eq!(
        c1.status.as_ref().and_then(|s| s.extended_health.as_ref()).and_then(|h| h.alertmanager_config),
        Some(HealthStatus::HealthStatusUp)
    );
    let alertmanagers: Api<Alertmanager> = Api::namespaced(client.clone(), "cluster-c1");
    let am = alertmanagers.get("alertmanager").await?;
    assert_eq!(am.spec.config_secret.name, "alertmanager");
    assert_eq!(am.owner_references()[0].uid, c1.uid().unwrap());
    let status = am.status.and_then(|s| s.config_status).unwrap();
    assert_eq!(status.status, ConditionStatus::True, "KKP's value");
    assert!(status.last_updated.is_some());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cluster-c1");
    assert!(secrets.get("alertmanager").await?.data.unwrap().contains_key("alertmanager.yaml"));

    // The template, copied into both cluster namespaces, pushed for both tenants and loaded
    // by the ruler. Cortex serves it normalised (`for: 15m` stays, but it is rebuilt).
    wait_until("the template loaded by both tenants' rulers", || async {
        let loaded = |groups: Vec<serde_json::Value>| groups.iter().any(|g| g["name"] == "kubernetes-absent");
        Ok(loaded(cortex.loaded_rule_groups("c1").await?) && loaded(cortex.loaded_rule_groups("c2").await?))
    })
    .await?;
    let copy = Api::<RuleGroup>::namespaced(client.clone(), "cluster-c2").get("kubernetes-absent").await?;
    assert_eq!(copy.spec.cluster.name.as_deref(), Some("c2"));
    assert!(copy.spec.is_default);
    assert_eq!(copy.owner_references()[0].name, "c2");

    // A user's configuration replaces the default.
    set_secret_config(&client, "cluster-c1", TEAM_CONFIG).await?;
    wait_until("the user's configuration running in Cortex", || async {
        Ok(cortex.alertmanager_running_config("c1").await?.is_some_and(|c| c.contains("receiver: team")))
    })
    .await?;

    // An invalid one (undefined receiver, refused by Cortex): status and Events, and the last
    // valid configuration stays active.
    let invalid = "alertmanager_config: |\n  route:\n    receiver: nobody\n  receivers:\n    - name: team\n";
    set_secret_config(&client, "cluster-c1", invalid).await?;
    let c1 = cluster_condition(&client, "c1", "InvalidAlertmanagerConfig").await?;
    assert_eq!(
        c1.status.as_ref().and_then(|s| s.extended_health.as_ref()).and_then(|h| h.alertmanager_config),
        Some(HealthStatus::HealthStatusDown)
    );
    let status = alertmanagers.get("alertmanager").await?.status.and_then(|s| s.config_status).unwrap();
    assert_eq!(status.status, ConditionStatus::False);
    assert!(
        status.error_message.as_deref().unwrap_or_default().contains("undefined receiver \"nobody\" used in route"),
        "Cortex's reason: {status:?}"
    );
    event(&client, "cluster-c1", "InvalidAlertmanagerConfig", "undefined receiver").await?;
    assert!(am_config(cortex, "c1").await.contains("receiver: team"));
    // Not YAML at all: refused before Cortex sees it.
    let before = cortex.config_mutations().await?;
    set_secret_config(&client, "cluster-c1", "alertmanager_config: [").await?;
    eventually("the status to say so", WAIT, || {
        let alertmanagers = alertmanagers.clone();
        async move {
            let status = alertmanagers.get("alertmanager").await?.status.and_then(|s| s.config_status);
            Ok(status.and_then(|s| s.error_message).filter(|m| m.contains("not YAML")).map(|_| ()))
        }
    })
    .await?;
    assert_eq!(cortex.config_mutations().await?, before, "nothing sent to Cortex");
    set_secret_config(&client, "cluster-c1", TEAM_CONFIG).await?;
    cluster_condition(&client, "c1", "Synced").await?;

    // Rule groups: metrics to the Cortex ruler, logs to the Loki ruler, each for its tenant.
    let c1_groups: Api<RuleGroup> = Api::namespaced(client.clone(), "cluster-c1");
    let c2_groups: Api<RuleGroup> = Api::namespaced(client.clone(), "cluster-c2");
    // Written the way users write them, not the way Cortex serves them back (`300s`, an
    // empty `labels`, a numeric label value): the steady state below holds only because
    // the controller compares normalised forms.
    let metrics = "name: node-down\ninterval: 60s\nrules:\n  - alert: NodeDown\n    expr: up{job=\"node\"} == 0\n    for: 300s\n    labels:\n      priority: 1\n    annotations: {}\n";
    let logs =
        "name: errors\nrules:\n  - alert: ManyErrors\n    expr: sum(rate({app=\"api\"} |= \"error\" [5m])) > 10\n";
    c1_groups
        .create(&PostParams::default(), &rule_group("node-down", "cluster-c1", "c1", RuleGroupType::Metrics, metrics))
        .await?;
    c2_groups
        .create(&PostParams::default(), &rule_group("errors", "cluster-c2", "c2", RuleGroupType::Logs, logs))
        .await?;
    let loki = &seed.loki;
    wait_until("both rule groups in their rulers", || async {
        Ok(cortex.rule_group("c1", "default", "node-down").await?.is_some()
            && loki.rule_group(Ruler::Loki, "c2", "default", "errors").is_some())
    })
    .await?;
    let served = cortex.rule_group("c1", "default", "node-down").await?.unwrap();
    assert_eq!(served["interval"], serde_yaml::Value::from("1m"), "Cortex normalises: {served:?}");
    assert_eq!(served["rules"][0]["for"], serde_yaml::Value::from("5m"), "{served:?}");
    assert!(cortex.rule_group("c2", "default", "errors").await?.is_none());
    assert_eq!(c1_groups.get("node-down").await?.finalizers(), ["mla.k8c.io/rule-group"]);

    // A RuleGroup naming another cluster never reaches that tenant.
    let sneaky = "name: sneaky\nrules:\n  - alert: S\n    expr: vector(1)\n";
    c1_groups
        .create(&PostParams::default(), &rule_group("sneaky", "cluster-c1", "c2", RuleGroupType::Metrics, sneaky))
        .await?;
    event(&client, "cluster-c1", "InvalidRuleGroup", "not the cluster of namespace").await?;
    assert!(cortex.rule_group("c2", "default", "sneaky").await?.is_none());
    c1_groups.delete("sneaky", &DeleteParams::default()).await?;

    // Invalid PromQL: refused by the ruler (Cortex 1.21 gives no reason), an Event, the last
    // valid group stays.
    let broken = serde_json::json!({"spec": {"data": base64_of("name: node-down\nrules:\n  - alert: NodeDown\n    expr: up ==\n")}});
    c1_groups.patch("node-down", &PatchParams::default(), &Patch::Merge(&broken)).await?;
    event(&client, "cluster-c1", "InvalidRuleGroup", "refused").await?;
    let kept = cortex.rule_group("c1", "default", "node-down").await?.unwrap();
    assert_eq!(kept["rules"][0]["expr"], serde_yaml::Value::from("up{job=\"node\"} == 0"));
    let fixed = serde_json::json!({"spec": {"data": base64_of(metrics)}});
    c1_groups.patch("node-down", &PatchParams::default(), &Patch::Merge(&fixed)).await?;

    // Deleting a RuleGroup removes it from its ruler.
    c2_groups.delete("errors", &DeleteParams::default()).await?;
    wait_for("the logs group removed", || loki.rule_group(Ruler::Loki, "c2", "default", "errors").is_none()).await?;
    eventually("the RuleGroup gone", WAIT, || {
        let c2_groups = c2_groups.clone();
        async move { Ok(c2_groups.get_opt("errors").await?.is_none().then_some(())) }
    })
    .await?;

    // Limits: c1's entry in the runtime configuration; the other tenant's stays; Cortex has
    // them in force once the file is (as a kubelet would mount it) the ConfigMap's content.
    let settings = MLAAdminSetting::new(
        MLA_ADMIN_SETTING_NAME,
        MLAAdminSettingSpec {
            cluster_name: "c1".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: Some(50),
                ingestion_burst_size: Some(100),
                max_series_total: Some(1000),
                ..Default::default()
            }),
            logging_rate_limits: None,
        },
    );
    Api::<MLAAdminSetting>::namespaced(client.clone(), "cluster-c1").create(&PostParams::default(), &settings).await?;
    let config = eventually("c1's limits in the runtime configuration", WAIT, || {
        let client = client.clone();
        async move {
            let config = runtime_config(&client).await?;
            Ok((config["overrides"]["c1"]["ingestion_rate"] == 50).then_some(config))
        }
    })
    .await?;
    assert_eq!(config["overrides"]["c1"]["max_series_per_user"], serde_yaml::Value::from(1000));
    assert_eq!(config["overrides"]["other"]["ingestion_rate"], serde_yaml::Value::from(5));
    let overrides = eventually("c1's limits in force in Cortex", WAIT, || async {
        let overrides = cortex.overrides_in_force().await?;
        Ok((overrides["c1"]["ingestion_rate"] == 50).then_some(overrides))
    })
    .await?;
    assert_eq!(overrides["c1"]["max_series_per_user"], serde_yaml::Value::from(1000), "{overrides:?}");
    assert_eq!(overrides["other"]["ingestion_rate"], serde_yaml::Value::from(5), "{overrides:?}");
    // The limit refuses c1's excess pushes, and only c1's: 200 samples at once are over
    // its burst of 100, and within another tenant's default limits.
    let burst: Vec<Series> = (0..200).map(|i| Series::now("e2e_burst", &[("i", &i.to_string())], 1.0)).collect();
    let (status, body) = cortex.push("c1", &burst).await?;
    assert_eq!(status, 429, "c1 over its limit: {body}");
    assert!(body.contains("ingestion rate limit (50) exceeded"), "{body}");
    let (status, body) = cortex.push("c2", &burst).await?;
    assert!((200..300).contains(&status), "c2 has no limit: {status} {body}");
    let (status, body) = cortex.push("c1", &burst[..10]).await?;
    assert!((200..300).contains(&status), "c1 within its limit: {status} {body}");

    // Steady state: two resync periods with no write to Kubernetes and no mutating call to
    // Cortex (counted by Cortex itself) or the Loki ruler.
    wait_until("the fixed group back in Cortex", || async {
        Ok(cortex.rule_group("c1", "default", "node-down").await?.is_some_and(|g| g["rules"][0]["for"] == "5m"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (k8s_before, cortex_before, loki_before) =
        (writes(&client).await?, cortex.mutating_calls().await?, loki.total_mutations());
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(writes(&client).await?, k8s_before, "Kubernetes writes during two no-change resync periods");
    assert_eq!(cortex.mutating_calls().await?, cortex_before, "mutating Cortex calls during two resync periods");
    assert_eq!(loki.total_mutations(), loki_before, "mutating Loki calls during two resync periods");
    eprintln!("measured: 7 s of steady state (3 s resync): 0 Kubernetes writes, 0 mutating Cortex/Loki calls");

    // Cortex down (killed): a condition and an Event, backoff; converges when it is back.
    seed.cortex.stop();
    let later = TEAM_CONFIG.replace("team", "oncall");
    set_secret_config(&client, "cluster-c1", &later).await?;
    cluster_condition(&client, "c1", "BackendUnavailable").await?;
    event(&client, "default", "BackendUnavailable", "connection failed").await?;
    seed.cortex.restart().await?;
    let cortex = &seed.cortex;
    let back = std::time::Instant::now();
    wait_until("the configuration pushed after the outage", || async {
        Ok(am_config(cortex, "c1").await.contains("receiver: oncall"))
    })
    .await?;
    eprintln!("measured: configuration pushed {:?} after Cortex came back", back.elapsed());
    cluster_condition(&client, "c1", "Synced").await?;

    // Switching MLA off for c2 removes its tenant's configuration and rule groups, and what
    // we made in its namespace.
    let off = serde_json::json!({"spec": {"mla": {"loggingEnabled": false}}});
    Api::<Cluster>::all(client.clone()).patch("c2", &PatchParams::default(), &Patch::Merge(&off)).await?;
    wait_until("c2 removed from Cortex and Loki", || async {
        Ok(cortex.alertmanager_config("c2").await?.is_none()
            && cortex.rule_groups("c2").await?.is_empty()
            && loki.rule_groups(Ruler::Loki, "c2").is_empty())
    })
    .await?;
    eventually("c2's objects and finalizer gone", WAIT, || {
        let client = client.clone();
        async move {
            let c2 = Api::<Cluster>::all(client.clone()).get("c2").await?;
            let gone = c2.finalizers().is_empty()
                && Api::<Alertmanager>::namespaced(client.clone(), "cluster-c2")
                    .get_opt("alertmanager")
                    .await?
                    .is_none()
                && Api::<Secret>::namespaced(client.clone(), "cluster-c2").get_opt("alertmanager").await?.is_none()
                && Api::<RuleGroup>::namespaced(client.clone(), "cluster-c2")
                    .get_opt("kubernetes-absent")
                    .await?
                    .is_none()
                && c2.status.as_ref().is_none_or(|s| !s.conditions.contains_key("MLAAlertingReady"));
            Ok(gone.then_some(()))
        }
    })
    .await?;
    assert!(cortex.alertmanager_config("c1").await?.is_some(), "c1 untouched");

    // Deleting c1: its tenant is cleaned out of Cortex and the runtime configuration, then
    // the Cluster goes.
    Api::<Cluster>::all(client.clone()).delete("c1", &DeleteParams::default()).await?;
    eventually("c1 deleted", WAIT, || {
        let client = client.clone();
        async move { Ok(Api::<Cluster>::all(client).get_opt("c1").await?.is_none().then_some(())) }
    })
    .await?;
    assert_eq!(cortex.alertmanager_config("c1").await?, None);
    assert!(cortex.rule_groups("c1").await?.is_empty());
    let config = runtime_config(&client).await?;
    assert!(config["overrides"].get("c1").is_none(), "{config:?}");
    assert_eq!(config["overrides"]["other"]["ingestion_rate"], serde_yaml::Value::from(5));
    let overrides = eventually("c1's limits no longer in force", WAIT, || async {
        let overrides = cortex.overrides_in_force().await?;
        Ok(overrides.get("c1").is_none().then_some(overrides))
    })
    .await?;
    assert_eq!(overrides["other"]["ingestion_rate"], serde_yaml::Value::from(5));

    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert!(metrics.contains("mla_reconciles_total{controller=\"alerting\",result=\"success\"}"), "{metrics}");
    assert!(
        metrics
            .contains("mla_external_requests_total{api=\"cortex\",endpoint=\"alerts\",method=\"POST\",status=\"201\"}"),
        "{metrics}"
    );
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A seed that stops offering MLA (`--enable-user-cluster-mla=false` after a restart)
/// removes every tenant from Cortex, Loki and the runtime configuration.
#[tokio::test]
async fn seed_without_mla_cleans_every_tenant() -> anyhow::Result<()> {
    let mut seed = start("alerting-off").await?;
    let client = seed.plane.client();
    create_cluster(&client, "c3", true, true).await?;
    let settings = MLAAdminSetting::new(
        MLA_ADMIN_SETTING_NAME,
        MLAAdminSettingSpec {
            cluster_name: "c3".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings { ingestion_rate: Some(9), ..Default::default() }),
            logging_rate_limits: None,
        },
    );
    Api::<MLAAdminSetting>::namespaced(client.clone(), "cluster-c3").create(&PostParams::default(), &settings).await?;
    let groups: Api<RuleGroup> = Api::namespaced(client.clone(), "cluster-c3");
    let logs =
        "name: errors\nrules:\n  - alert: ManyErrors\n    expr: sum(rate({app=\"api\"} |= \"error\" [5m])) > 10\n";
    groups.create(&PostParams::default(), &rule_group("errors", "cluster-c3", "c3", RuleGroupType::Logs, logs)).await?;
    let metrics = "name: always\nrules:\n  - alert: Always\n    expr: vector(1)\n";
    groups
        .create(&PostParams::default(), &rule_group("always", "cluster-c3", "c3", RuleGroupType::Metrics, metrics))
        .await?;
    let (cortex, loki) = (&seed.cortex, &seed.loki);
    wait_until("c3 in Cortex and Loki", || async {
        Ok(cortex.alertmanager_config("c3").await?.is_some()
            && cortex.rule_group("c3", "default", "always").await?.is_some()
            && loki.rule_group(Ruler::Loki, "c3", "default", "errors").is_some())
    })
    .await?;
    // The RuleGroup is evaluated by Cortex's ruler and its alert reaches the tenant's own
    // Alertmanager (running the configuration the controller pushed).
    let alerts = eventually("c3's always-firing alert in c3's Alertmanager", WAIT, || async {
        let alerts = cortex.alertmanager_alerts("c3").await?;
        Ok(alerts.iter().any(|a| a["labels"]["alertname"] == "Always").then_some(alerts))
    })
    .await?;
    assert!(alerts.iter().all(|a| a["labels"]["alertname"] == "Always"), "{alerts:?}");
    eventually("c3's limits in force in Cortex", WAIT, || async {
        Ok((cortex.overrides_in_force().await?["c3"]["ingestion_rate"] == 9).then_some(()))
    })
    .await?;

    seed.binary.terminate();
    seed.binary.wait_timeout(Duration::from_secs(10)).await;
    let (binary, _admin) = spawn_binary(&seed.plane, &seed.cortex, &seed.loki, false).await?;
    seed.binary = binary;
    let (cortex, loki) = (&seed.cortex, &seed.loki);
    wait_until("c3 removed from Cortex and Loki", || async {
        Ok(cortex.alertmanager_config("c3").await?.is_none()
            && cortex.rule_groups("c3").await?.is_empty()
            && loki.rule_groups(Ruler::Loki, "c3").is_empty())
    })
    .await?;
    eventually("c3's limits and finalizer gone", WAIT, || {
        let client = client.clone();
        async move {
            let config = runtime_config(&client).await?;
            let c3 = Api::<Cluster>::all(client.clone()).get("c3").await?;
            let errors = Api::<RuleGroup>::namespaced(client.clone(), "cluster-c3").get("errors").await?;
            Ok((config["overrides"].get("c3").is_none()
                && c3.finalizers().is_empty()
                && errors.finalizers().is_empty())
            .then_some(()))
        }
    })
    .await?;
    assert_eq!(runtime_config(&client).await?["overrides"]["other"]["ingestion_rate"], 5);
    eventually("c3's limits no longer in force", WAIT, || async {
        Ok(cortex.overrides_in_force().await?.get("c3").is_none().then_some(()))
    })
    .await?;
    // Nothing is pushed again while the seed does not offer MLA.
    let (cortex_before, loki_before) = (cortex.mutating_calls().await?, loki.total_mutations());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cortex.mutating_calls().await?, cortex_before);
    assert_eq!(loki.total_mutations(), loki_before);
    assert!(cortex.alertmanager_config("c3").await?.is_none());
    Ok(())
}

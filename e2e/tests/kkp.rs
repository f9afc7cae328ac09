//! The system on KKP's own CRDs, beside a stand-in for the KKP controllers that run in a
//! KKP installation whose own user-cluster MLA is off (`mla_e2e::kkp::StandIn`): objects
//! are shaped as KKP writes them (every field KKP's schema requires, extra fields KKP sets,
//! status through the status subresource), left-overs of KKP's own MLA (its finalizers)
//! are on them, and the main scenario steps must hold: copies, gateway, Alertmanager,
//! Grafana, agents, data path under the tenant, steady state with zero writes in every
//! cluster (the stand-in's included), and deletion.
//!
//! KKP's CRDs come from `MLA_KKP_CRDS` or `../shared/reference/kkp-crds`; without either
//! the suite says so and passes, except in CI (`CI` set), where it fails.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code may panic

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mla_e2e::world::{NAMESPACE, SEED, World, WorldOptions};
use mla_e2e::{eventually, kkp};
use serde_json::{Value, json};

mod support;

use support::*;

/// Where the agents run in a KKP user cluster: not `mla-system`, which KKP's own
/// user-cluster manager deletes while KKP's MLA is off (docs/kkp.md).
const AGENTS_NAMESPACE: &str = "mla-agents";

fn kind(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubermatic.k8c.io", "v1", kind))
}

fn all(client: &kube::Client, name: &str) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &kind(name))
}

fn params() -> PatchParams {
    PatchParams::apply("kkp-e2e").force()
}

/// Applies a KKP-shaped object (`kind`, `metadata.name`, the rest as given) and, when it
/// has one, its status through the status subresource.
async fn apply(client: &kube::Client, object: Value) -> anyhow::Result<()> {
    let kind_name = object["kind"].as_str().unwrap().to_string();
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let api = all(client, &kind_name);
    let mut spec = object.clone();
    spec.as_object_mut().unwrap().remove("status");
    api.patch(&name, &params(), &Patch::Apply(&spec)).await?;
    if let Some(status) = object.get("status") {
        let status = json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": kind_name, "metadata": {"name": name}, "status": status});
        api.patch_status(&name, &params(), &Patch::Apply(&status)).await?;
    }
    Ok(())
}

fn project(id: &str, display: &str) -> Value {
    json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
        "metadata": {"name": id, "labels": {"kubermatic.k8c.io/e2e": "kkp"}},
        "spec": {"name": display, "allowedOperatingSystems": {"ubuntu": true, "flatcar": true}},
        "status": {"phase": "Active"}})
}

fn kkp_user(name: &str, email: &str, admin: bool, groups: &[&str]) -> Value {
    json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": name},
        "spec": {"id": format!("{name}-0123456789"), "name": name, "email": email, "admin": admin,
                 "groups": groups, "isGlobalViewer": false,
                 "settings": {"selectedTheme": "dark", "itemsPerPage": 10, "useClustersView": true}},
        "status": {"lastSeen": "2026-11-30T09:00:00Z"}})
}

fn binding(name: &str, email: &str, project: &str, group: &str) -> Value {
    json!({"apiVersion": "kubermatic.k8c.io/v1", "kind": "UserProjectBinding",
        "metadata": {"name": name, "labels": {"project-id": project}},
        "spec": {"userEmail": email, "projectID": project, "group": format!("{group}-{project}")}})
}

/// The parts of an object a copy must carry over: labels, spec and status.
fn copied_parts(object: &DynamicObject) -> Value {
    json!({"labels": object.metadata.labels, "spec": object.data.get("spec"), "status": object.data.get("status")})
}

/// Waits until the seed copy of every listed object equals the master's, field for field.
async fn copies_equal(world: &World, objects: &[(&str, &str)]) -> anyhow::Result<()> {
    eventually("seed copies equal to the master objects", TIMEOUT, || async {
        for (kind_name, name) in objects {
            let master = all(&world.master.client(), kind_name).get(name).await?;
            let Some(copy) = all(&world.seed.client(), kind_name).get_opt(name).await? else { return Ok(None) };
            if copied_parts(&master) != copied_parts(&copy) {
                println!("  {kind_name} {name}: master {} / seed {}", copied_parts(&master), copied_parts(&copy));
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_system_on_kkps_crds_beside_kkps_controllers() {
    let Some(crds) = kkp::crds_dir().expect("KKP's CRDs") else { return };
    let started = Instant::now();
    let resync = Duration::from_secs(20);
    let world = step("0", "control planes with KKP's CRDs, the binaries and the KKP stand-in", async {
        World::start(WorldOptions {
            kkp_crds: Some(crds),
            resync_period: resync,
            seed_args: vec!["--user-cluster-extended-health=false".into()],
            agents_namespace: AGENTS_NAMESPACE.into(),
            ..Default::default()
        })
        .await
    })
    .await;
    let stand_in = kkp::StandIn::start(
        world.master.client(),
        world.seed.client(),
        world.user.client(),
        SEED.into(),
        NAMESPACE.into(),
        Duration::from_secs(2),
    );
    let (master, seed, user_cluster) = (world.master.client(), world.seed.client(), world.user.client());

    step("1", "KKP-shaped Projects, Users and bindings: seed copies equal the master's field for field", async {
        apply(&master, project("p1", "Team")).await?;
        apply(&master, kkp_user("alice", "alice@example.com", false, &["sso-team"])).await?;
        apply(&master, kkp_user("bob", "bob@example.com", false, &[])).await?;
        apply(&master, kkp_user("root", "root@example.com", true, &[])).await?;
        apply(&master, binding("p1-alice", "alice@example.com", "p1", "owners")).await?;
        apply(&master, binding("p1-bob", "bob@example.com", "p1", "viewers")).await?;
        copies_equal(
            &world,
            &[
                ("Project", "p1"),
                ("User", "alice"),
                ("User", "bob"),
                ("User", "root"),
                ("UserProjectBinding", "p1-alice"),
                ("UserProjectBinding", "p1-bob"),
            ],
        )
        .await
    })
    .await;

    step("2", "a KKP-shaped MLA Cluster gets its gateway; its conditions satisfy KKP's schema", async {
        world.create_cluster("c1", "p1", true, true, true).await?;
        let ns = "cluster-c1";
        until_present("gateway Deployment", &Api::<Deployment>::namespaced(seed.clone(), ns), "mla-gateway").await?;
        until_present("gateway CA", &Api::<Secret>::namespaced(seed.clone(), ns), "mla-gateway-ca").await?;
        eventually("MLAGatewayReady with kubermaticVersion and lastHeartbeatTime", TIMEOUT, || async {
            let cluster = all(&seed, "Cluster").get("c1").await?;
            let condition = cluster.data.pointer("/status/conditions/MLAGatewayReady").cloned();
            let health = cluster.data.pointer("/status/extendedHealth/mlaGateway").cloned();
            Ok(condition
                .filter(|c| c["kubermaticVersion"].is_string() && c["lastHeartbeatTime"].is_string())
                .zip(health)
                .map(|_| ()))
        })
        .await?;
        let cluster = all(&seed, "Cluster").get("c1").await?;
        let theirs = cluster.data.pointer("/status/conditions/ClusterControllerReconcilingSuccess");
        anyhow::ensure!(
            theirs
                == Some(&kkp::cluster_status("c1", ns)["status"]["conditions"]["ClusterControllerReconcilingSuccess"]),
            "KKP's own condition was changed: {theirs:?}"
        );
        Ok(())
    })
    .await;

    step("3", "the Alertmanager config reaches Cortex and its status reads as KKP writes it", async {
        eventually("c1's Alertmanager config running in Cortex", TIMEOUT, || async {
            Ok(world.cortex.alertmanager_running_config("c1").await?.map(|_| ()))
        })
        .await?;
        eventually("Alertmanager configStatus.status \"True\"", TIMEOUT, || async {
            let alertmanagers: Api<DynamicObject> =
                Api::namespaced_with(seed.clone(), "cluster-c1", &kind("Alertmanager"));
            let Some(am) = alertmanagers.get_opt("alertmanager").await? else { return Ok(None) };
            Ok((am.data.pointer("/status/configStatus/status") == Some(&json!("True"))).then_some(()))
        })
        .await
    })
    .await;

    let grafana = GrafanaView::new(&world);
    step("4", "Grafana: the project's organization, members' roles and the cluster's datasources", async {
        grafana
            .until("org Team-p1 with roles and datasources", "Team-p1", |members, datasources| {
                members.get("alice@example.com").map(String::as_str) == Some("Editor")
                    && members.get("bob@example.com").map(String::as_str) == Some("Viewer")
                    && members.get("root@example.com").map(String::as_str) == Some("Editor")
                    && *datasources == set(&["alertmanager-c1", "prometheus-c1", "loki-c1"])
            })
            .await
            .map(|_| ())
    })
    .await;

    step("5", "the agents run in the user cluster and KKP's user-cluster manager leaves them alone", async {
        world.run_user_manager("c1").await?;
        let deployments: Api<Deployment> = Api::namespaced(user_cluster.clone(), AGENTS_NAMESPACE);
        until_present("Prometheus", &deployments, "prometheus").await?;
        until_present(
            "Prometheus' certificates",
            &Api::<Secret>::namespaced(user_cluster.clone(), AGENTS_NAMESPACE),
            "prometheus-certificates",
        )
        .await?;
        // KKP's user-cluster manager (the stand-in, every 2 s) deletes mla-system: it is
        // there, and the agents are not in it.
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(user_cluster.clone());
        mla_e2e::master::ensure_namespace(&user_cluster, "mla-system").await?;
        until_absent("mla-system deleted by KKP's user-cluster manager", &namespaces, "mla-system").await?;
        anyhow::ensure!(exists(&deployments, "prometheus").await?, "Prometheus was deleted");
        Ok(())
    })
    .await;

    step("6", "metrics arrive in Cortex under the cluster's tenant only", async {
        let gateway = world.run_gateway("c1").await?;
        world.run_agent("c1").await?;
        // Through the gateway's read path, which pins the tenant.
        let read_path = format!("http://127.0.0.1:{}/api/prom", gateway.read_port);
        let http = reqwest::Client::new();
        eventually("up{cluster=\"c1\"} through c1's read path", TIMEOUT, || async {
            let result = mla_e2e::cortex::query(&http, &read_path, "c1", "up{cluster=\"c1\"}").await?;
            Ok((!result.is_empty()).then_some(()))
        })
        .await?;
        anyhow::ensure!(world.cortex.query("cluster-c1", "up").await?.is_empty(), "samples under another tenant");
        Ok(())
    })
    .await;

    step("7", "steady state beside KKP: no writes in any cluster over two resync periods, KKP's fields kept", async {
        let groups = ["", "apps", "kubermatic.k8c.io", "networking.k8s.io", "rbac.authorization.k8s.io"];
        let planes = [&world.master, &world.seed, &world.user];
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut before = Vec::new();
        for plane in planes {
            before.push(mla_e2e::write_requests_by_resource(&plane.client(), &groups).await?);
        }
        let stand_in_before = stand_in.writes();
        world.grafana.reset_mutations();
        let cortex_before = world.cortex.config_mutations().await?;
        tokio::time::sleep(resync * 2 + Duration::from_secs(5)).await;
        for (plane, before) in planes.iter().zip(before) {
            // The API server's own repair loop releases the IPAddresses of deleted Services
            // whenever it runs: not a write of any controller.
            let ours = |counts: std::collections::BTreeMap<String, u64>| {
                counts.into_iter().filter(|(k, _)| !k.starts_with("networking.k8s.io/ipaddresses/")).collect::<Vec<_>>()
            };
            let (before, after) =
                (ours(before), ours(mla_e2e::write_requests_by_resource(&plane.client(), &groups).await?));
            anyhow::ensure!(after == before, "writes in {}: before {before:?}, after {after:?}", plane.name());
        }
        anyhow::ensure!(stand_in.writes() == stand_in_before, "the KKP stand-in had to write again: a write war");
        anyhow::ensure!(world.grafana.mutations().total() == 0, "Grafana mutations: {:?}", world.grafana.mutations());
        anyhow::ensure!(
            world.cortex.config_mutations().await? == cortex_before,
            "mutating Cortex configuration calls in steady state"
        );
        let seeds: Api<DynamicObject> = Api::namespaced_with(master.clone(), NAMESPACE, &kind("Seed"));
        let condition = seeds.get(SEED).await?.data.pointer("/status/conditions/KubeconfigValid").cloned();
        anyhow::ensure!(condition == Some(kkp::kubeconfig_valid()), "KubeconfigValid changed: {condition:?}");
        println!("  KKP stand-in writes until convergence: {stand_in_before}");
        Ok(())
    })
    .await;

    step("8", "KKP's MLA finalizers hold nothing up: the Cluster and the Project are deleted", async {
        let clusters = all(&seed, "Cluster");
        let cluster = clusters.get("c1").await?;
        let mut finalizers = cluster.metadata.finalizers.clone().unwrap_or_default();
        finalizers.extend(["kubermatic.k8c.io/mla".to_string(), "kubermatic.k8c.io/alertmanager".to_string()]);
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": cluster.metadata.resource_version}});
        clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let projects = all(&seed, "Project");
        let project = projects.get("p1").await?;
        let mut finalizers = project.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push("kubermatic.k8c.io/mla".to_string());
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": project.metadata.resource_version}});
        projects.patch("p1", &PatchParams::default(), &Patch::Merge(&patch)).await?;

        clusters.delete("c1", &Default::default()).await?;
        until_absent("Cluster c1 gone", &clusters, "c1").await?;
        anyhow::ensure!(
            world.cortex.alertmanager_config("c1").await?.is_none(),
            "c1's Alertmanager config left in Cortex"
        );
        all(&master, "Project").delete("p1", &Default::default()).await?;
        until_absent("Project p1 gone from the seed", &projects, "p1").await?;
        until_absent("Project p1 gone from the master", &all(&master, "Project"), "p1").await?;
        eventually("org Team-p1 deleted", TIMEOUT, || async {
            Ok(grafana.org_id("Team-p1").await?.is_none().then_some(()))
        })
        .await
    })
    .await;

    drop(stand_in);
    println!("KKP SUITE passed in {:.1} s", started.elapsed().as_secs_f64());
}

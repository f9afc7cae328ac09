//! The Grafana controller in the real binary, against a real API server under the RBAC of
//! `manifests/seed-controller-manager/` and the Grafana API test server.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::cortex::{Cortex, CortexServer};
use mla_e2e::grafana::{GrafanaConfig, GrafanaServer, GrafanaVersion};
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, apply_manifest, workspace_root};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const ADMIN: &str = "admin";
const PASSWORD: &str = "grafana-admin-password";
const ANNOTATION: &str = "mla.k8c.io/organization";
const FINALIZER: &str = "mla.k8c.io/grafana";
const CONDITION: &str = "MLAGrafanaReady";

struct Seed {
    plane: ControlPlane,
    grafana: GrafanaServer,
    /// Where the alerting controllers (always running) find Cortex (real) and Loki's ruler
    /// (the stand-in: Loki cannot run here): the Clusters' finalizer is removed only once
    /// their tenants are cleaned up there.
    cortex: Cortex,
    loki: CortexServer,
    http: reqwest::Client,
    binary: ManagedProcess,
    log: std::path::PathBuf,
    admin: String,
}

async fn start(name: &str) -> anyhow::Result<Seed> {
    start_as(name, GrafanaVersion::default()).await
}

/// A seed whose Grafana acts as `version`.
async fn start_as(name: &str, version: GrafanaVersion) -> anyhow::Result<Seed> {
    let plane = ControlPlane::start(name).await?;
    plane.install_crds().await?;
    let client = plane.client();
    for namespace in ["kubermatic", "mla"] {
        ensure_namespace(&client, namespace).await?;
    }
    let manifests = workspace_root().join("manifests/seed-controller-manager");
    apply_manifest(&client, &manifests.join("rbac.yaml")).await?;
    apply_manifest(&client, &manifests.join("rbac-grafana.yaml")).await?;
    // The alerting controllers always run: the binary is ready only with their grants too.
    apply_manifest(&client, &manifests.join("rbac-alerting.yaml")).await?;
    let grafana = GrafanaServer::start_with(GrafanaConfig::new(ADMIN, PASSWORD).with_version(version)).await?;
    let secret = Secret {
        metadata: ObjectMeta { name: Some("grafana".into()), ..Default::default() },
        string_data: Some(
            [("admin-user".to_string(), ADMIN.to_string()), ("admin-password".to_string(), PASSWORD.to_string())]
                .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "mla").create(&PostParams::default(), &secret).await?;

    let cortex = Cortex::start(&plane.dir().join("cortex")).await?;
    let loki = CortexServer::start().await?;
    let (binary, log, admin) = spawn(&plane, &grafana, (&cortex, &loki), true, "seed-controller-manager.log").await?;
    Ok(Seed { plane, grafana, cortex, loki, http: reqwest::Client::new(), binary, log, admin })
}

/// Runs the binary (as its ServiceAccount) against `grafana`, Cortex and Loki's ruler until
/// it is ready.
async fn spawn(
    plane: &ControlPlane,
    grafana: &GrafanaServer,
    (cortex, loki): (&Cortex, &CortexServer),
    mla: bool,
    log_name: &str,
) -> anyhow::Result<(ManagedProcess, std::path::PathBuf, String)> {
    let flags = [
        format!("--grafana-url={}", grafana.url()),
        format!("--enable-user-cluster-mla={mla}"),
        "--grafana-timeout=2s".to_string(),
        format!("--cortex-alertmanager-url={}", cortex.url()),
        format!("--cortex-ruler-url={}", cortex.url()),
        format!("--loki-ruler-url={}", loki.url()),
    ];
    let manager = support::spawn_seed_manager(plane, flags, log_name, WAIT).await?;
    Ok((manager.process, manager.log, manager.admin))
}

impl Seed {
    /// A Grafana API call as its admin.
    async fn call(&self, method: reqwest::Method, path: &str, org: Option<i64>) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.grafana.url())).basic_auth(ADMIN, Some(PASSWORD));
        if let Some(org) = org {
            request = request.header("X-Grafana-Org-Id", org.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, org: Option<i64>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, org).await
    }

    async fn org_id(&self, name: &str) -> Option<i64> {
        let (status, body) = self.get(&format!("/api/orgs/name/{}", name.replace(' ', "%20")), None).await;
        (status == 200).then(|| body["id"].as_i64().unwrap())
    }

    async fn user(&self, email: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/api/users/lookup?loginOrEmail={email}"), None).await;
        (status == 200).then_some(body)
    }

    /// Org id -> role of the user with `email`.
    async fn roles(&self, email: &str) -> BTreeMap<i64, String> {
        let Some(user) = self.user(email).await else { return BTreeMap::new() };
        let (_, orgs) = self.get(&format!("/api/users/{}/orgs", user["id"]), None).await;
        orgs.as_array()
            .unwrap()
            .iter()
            .map(|o| (o["orgId"].as_i64().unwrap(), o["role"].as_str().unwrap().to_string()))
            .collect()
    }

    async fn datasources(&self, org: i64) -> BTreeMap<String, Value> {
        let (status, list) = self.get("/api/datasources", Some(org)).await;
        if status != 200 {
            return BTreeMap::new();
        }
        list.as_array().unwrap().iter().map(|d| (d["uid"].as_str().unwrap().to_string(), d.clone())).collect()
    }

    async fn dashboards(&self, org: i64) -> BTreeSet<String> {
        let (_, list) = self.get("/api/search?type=dash-db", Some(org)).await;
        list.as_array().map(|l| l.iter().map(|d| d["uid"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the binary (SIGTERM, so it hands its Lease over) and starts it again.
    async fn restart(&mut self, mla: bool) -> anyhow::Result<()> {
        self.binary.terminate();
        self.binary.wait_timeout(Duration::from_secs(10)).await;
        let (binary, log, admin) =
            spawn(&self.plane, &self.grafana, (&self.cortex, &self.loki), mla, "seed-controller-manager-2.log").await?;
        self.binary = binary;
        self.log = log;
        self.admin = admin;
        Ok(())
    }
}

/// Waits until `check` (an expression that may use `?` and `.await`) is true, failing
/// with the end of the binary's log.
macro_rules! until {
    ($seed:expr, $what:expr, $check:expr) => {{
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let outcome: anyhow::Result<bool> = async { Ok($check) }.await;
            if matches!(outcome, Ok(true)) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let log = $seed.log();
                let tail = &log[log.len().saturating_sub(4000)..];
                anyhow::bail!("timed out waiting for {}: {:?}\n{tail}", $what, outcome.err());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

fn project(name: &str, display: &str) -> Project {
    Project::new(name, ProjectSpec { name: display.into() })
}

fn user(name: &str, email: &str, admin: bool) -> User {
    User::new(name, UserSpec { email: email.into(), name: name.into(), admin })
}

fn binding(name: &str, email: &str, project: &str, role: &str) -> UserProjectBinding {
    UserProjectBinding::new(
        name,
        UserProjectBindingSpec {
            user_email: email.into(),
            project_id: project.into(),
            group: format!("{role}-{project}"),
        },
    )
}

fn cluster(name: &str, project: &str, monitoring: bool, logging: bool) -> Cluster {
    let mut cluster = support::cluster(name, project, monitoring, logging);
    cluster.spec.human_readable_name = Some(format!("{name} shop"));
    cluster
}

/// Creates a Cluster with its namespace and the status the rest of KKP would set.
async fn create_cluster(seed: &Seed, cluster: &Cluster) -> anyhow::Result<()> {
    let client = seed.plane.client();
    let name = cluster.name_any();
    ensure_namespace(&client, &format!("cluster-{name}")).await?;
    let clusters: Api<Cluster> = Api::all(client);
    clusters.create(&PostParams::default(), cluster).await?;
    let status = json!({"status": {"namespaceName": format!("cluster-{name}"), "address": {"externalName": format!("{name}.seed.example.com")}}});
    clusters.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

fn condition(cluster: &Cluster) -> Option<(ConditionStatus, String)> {
    let condition = cluster.status.as_ref()?.conditions.get(CONDITION)?;
    Some((condition.status, condition.reason.clone().unwrap_or_default()))
}

async fn writes(client: &kube::Client) -> anyhow::Result<BTreeMap<String, u64>> {
    mla_e2e::write_requests_by_resource(client, &["", "apps", "kubermatic.k8c.io", "events.k8s.io"]).await
}

/// Waits until a whole resync period (3 s) passes without a Kubernetes write, so that the
/// steady state is measured after every controller has converged, also on a loaded
/// machine; a controller that never stops writing fails here after 60 s.
async fn converged(client: &kube::Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = writes(client).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let now = writes(client).await?;
        if now == last {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "still writing after 60 s: {last:?} -> {now:?}");
        last = now;
    }
}

async fn has_event(client: &kube::Client, namespace: &str, reason: &str, object: &str) -> bool {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events.list(&Default::default()).await.is_ok_and(|list| {
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
        })
    })
}

// The whole lifecycle against each Grafana release the test server can act as (about 40 s
// each on the 2-core CI machine; they run in parallel).
#[tokio::test]
async fn organizations_users_datasources_and_dashboards_grafana_10_4() -> anyhow::Result<()> {
    lifecycle("grafana-10-4", GrafanaVersion::V10_4).await
}

#[tokio::test]
async fn organizations_users_datasources_and_dashboards_grafana_11_2() -> anyhow::Result<()> {
    lifecycle("grafana-11-2", GrafanaVersion::V11_2).await
}

#[tokio::test]
async fn organizations_users_datasources_and_dashboards_grafana_12() -> anyhow::Result<()> {
    lifecycle("grafana-12", GrafanaVersion::V12).await
}

/// A Grafana API call as its admin with a JSON body.
async fn send(seed: &Seed, method: reqwest::Method, path: &str, org: Option<i64>, body: Value) -> (u16, Value) {
    let mut request = seed
        .http
        .request(method, format!("{}{path}", seed.grafana.url()))
        .basic_auth(ADMIN, Some(PASSWORD))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(org) = org {
        request = request.header("X-Grafana-Org-Id", org.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

async fn lifecycle(name: &str, version: GrafanaVersion) -> anyhow::Result<()> {
    let seed = start_as(name, version).await?;
    let client = seed.plane.client();
    let projects: Api<Project> = Api::all(client.clone());
    let users: Api<User> = Api::all(client.clone());
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client.clone());
    let pp = PostParams::default();

    // An org named like p2's exists already: it is adopted, not duplicated.
    let created = seed
        .http
        .post(format!("{}/api/orgs", seed.grafana.url()))
        .basic_auth(ADMIN, Some(PASSWORD))
        .header("Content-Type", "application/json")
        .body(json!({"name": "Shop-p2"}).to_string())
        .send()
        .await?;
    assert_eq!(created.status().as_u16(), 200);
    let adopted = serde_json::from_str::<Value>(&created.text().await?)?["orgId"].as_i64().unwrap();

    projects.create(&pp, &project("p1", "Web")).await?;
    projects.create(&pp, &project("p2", "Shop")).await?;
    until!(seed, "an org per project, annotated", {
        let p1 = projects.get("p1").await?;
        let p2 = projects.get("p2").await?;
        let web = seed.org_id("Web-p1").await;
        web.is_some()
            && p1.annotations().get(ANNOTATION) == web.map(|id| id.to_string()).as_ref()
            && p2.annotations().get(ANNOTATION) == Some(&adopted.to_string())
            && p1.finalizers().contains(&FINALIZER.to_string())
    });
    let web = seed.org_id("Web-p1").await.unwrap();
    let superuser = seed.org_id("mla-superuser").await.expect("the superuser org");
    let (_, orgs) = seed.get("/api/orgs", None).await;
    assert_eq!(orgs.as_array().unwrap().iter().filter(|o| o["name"] == "Shop-p2").count(), 1);

    // Users and roles.
    users.create(&pp, &user("alice", "alice@example.com", false)).await?;
    users.create(&pp, &user("bob", "bob@example.com", false)).await?;
    users.create(&pp, &user("root", "root@example.com", true)).await?;
    bindings.create(&pp, &binding("alice-p1", "alice@example.com", "p1", "owners")).await?;
    bindings.create(&pp, &binding("bob-p1", "bob@example.com", "p1", "viewers")).await?;
    bindings.create(&pp, &binding("bob-p2", "bob@example.com", "p2", "editors")).await?;
    let editor = |org: i64| (org, "Editor".to_string());
    let viewer = |org: i64| (org, "Viewer".to_string());
    until!(seed, "users in their orgs with their roles", {
        seed.roles("alice@example.com").await == BTreeMap::from([editor(web)])
            && seed.roles("bob@example.com").await == BTreeMap::from([viewer(web), editor(adopted)])
            && seed.roles("root@example.com").await == BTreeMap::from([editor(web), editor(adopted), editor(superuser)])
    });
    let root = seed.user("root@example.com").await.unwrap();
    assert_eq!(root["isGrafanaAdmin"], true, "admins are Grafana server admins");
    assert_eq!(root["login"], "root@example.com", "login = email");
    assert_eq!(seed.user("alice@example.com").await.unwrap()["isGrafanaAdmin"], false);
    assert!(users.get("alice").await?.finalizers().contains(&FINALIZER.to_string()));

    // Role change and binding removal.
    let to_viewer = json!({"spec": {"group": "viewers-p1"}});
    bindings.patch("alice-p1", &PatchParams::default(), &Patch::Merge(&to_viewer)).await?;
    bindings.delete("bob-p1", &DeleteParams::default()).await?;
    until!(seed, "alice a Viewer, bob out of p1", {
        seed.roles("alice@example.com").await == BTreeMap::from([viewer(web)])
            && seed.roles("bob@example.com").await == BTreeMap::from([editor(adopted)])
    });

    // Datasources of a cluster, in its project's org and the superuser org.
    create_cluster(&seed, &cluster("c1", "p1", true, true)).await?;
    let all = ["alertmanager-c1", "loki-c1", "prometheus-c1"].map(String::from);
    until!(seed, "c1's datasources", {
        seed.datasources(web).await.keys().cloned().collect::<BTreeSet<_>>() == BTreeSet::from(all.clone())
            && seed.datasources(superuser).await.keys().cloned().collect::<BTreeSet<_>>() == BTreeSet::from(all.clone())
    });
    let in_web = seed.datasources(web).await;
    let gateway = "http://mla-gateway.cluster-c1.svc.cluster.local";
    assert_eq!(in_web["prometheus-c1"]["url"], format!("{gateway}/api/prom"));
    assert_eq!(in_web["prometheus-c1"]["type"], "prometheus");
    assert_eq!(in_web["prometheus-c1"]["name"], "Prometheus c1 shop (c1)");
    assert_eq!(in_web["loki-c1"]["url"], gateway);
    assert_eq!(in_web["alertmanager-c1"]["jsonData"]["implementation"], "cortex");
    assert!(seed.datasources(adopted).await.is_empty(), "not in other projects' orgs");
    until!(seed, "c1 Ready with the finalizer", {
        let c1 = clusters.get("c1").await?;
        condition(&c1) == Some((ConditionStatus::True, "DatasourcesReady".into()))
            && c1.finalizers().contains(&FINALIZER.to_string())
    });

    // A team's own dashboard titled like one of ours, in the adopted org: never taken over
    // (Grafana up to 11.2 would hand it to an overwriting save), ours not saved there.
    let team = json!({"dashboard": {"uid": "team-pods", "title": "Pods", "panels": [{"id": 7}]}});
    let (status, body) = send(&seed, reqwest::Method::POST, "/api/dashboards/db", Some(adopted), team).await;
    assert_eq!(status, 200, "{body}");

    // Dashboards from ConfigMaps into every managed org; a broken one is reported.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "mla");
    let dashboards = ConfigMap {
        metadata: ObjectMeta { name: Some("grafana-dashboards-k8s".into()), ..Default::default() },
        data: Some(BTreeMap::from([
            ("nodes.json".to_string(), r#"{"uid": "nodes", "title": "Nodes", "panels": []}"#.to_string()),
            ("pods.json".to_string(), r#"{"uid": "pods", "title": "Pods"}"#.to_string()),
            ("broken.json".to_string(), "{ this is not json".to_string()),
        ])),
        ..Default::default()
    };
    config_maps.create(&pp, &dashboards).await?;
    let both = BTreeSet::from(["nodes".to_string(), "pods".to_string()]);
    let with_team = BTreeSet::from(["nodes".to_string(), "team-pods".to_string()]);
    until!(seed, "dashboards in every org", {
        seed.dashboards(web).await == both
            && seed.dashboards(adopted).await == with_team
            && seed.dashboards(superuser).await == both
    });
    let (_, team) = seed.get("/api/dashboards/uid/team-pods", Some(adopted)).await;
    assert_eq!(team["dashboard"]["panels"], json!([{"id": 7}]), "the team's dashboard is untouched");
    assert_eq!(team["dashboard"]["version"], 1);
    until!(seed, "Events for the broken key and the taken title", {
        let events: Api<Event> = Api::namespaced(client.clone(), "mla");
        let notes: Vec<(String, String)> = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|e| Some((e.reason?, e.note?)))
            .collect();
        notes.iter().any(|(r, n)| r == "InvalidDashboard" && n.contains("broken.json"))
            && notes
                .iter()
                .any(|(r, n)| r == "DashboardTitleTaken" && n.contains("pods.json") && n.contains("team-pods"))
    });

    // Steady state: two resync periods without a mutating Grafana call or a write.
    converged(&client).await?;
    seed.grafana.reset_mutations();
    let before = writes(&client).await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(seed.grafana.mutations().total(), 0, "{:?}\n{}", seed.grafana.mutations(), seed.log());
    assert_eq!(writes(&client).await?, before, "Kubernetes writes during two no-change resync periods");

    // A dashboard taken out of the ConfigMap goes from every org.
    let remove_pods = json!({"data": {"pods.json": null}});
    config_maps.patch("grafana-dashboards-k8s", &PatchParams::default(), &Patch::Merge(&remove_pods)).await?;
    let nodes = BTreeSet::from(["nodes".to_string()]);
    until!(seed, "pods dashboard removed", {
        seed.dashboards(web).await == nodes && seed.dashboards(superuser).await == nodes
    });

    // Logging off: no Loki datasource.
    let logging_off = json!({"spec": {"mla": {"loggingEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&logging_off)).await?;
    until!(seed, "loki-c1 gone", {
        let web_uids: BTreeSet<String> = seed.datasources(web).await.into_keys().collect();
        let su_uids: BTreeSet<String> = seed.datasources(superuser).await.into_keys().collect();
        let expected = BTreeSet::from(["alertmanager-c1".to_string(), "prometheus-c1".to_string()]);
        web_uids == expected && su_uids == expected
    });

    // MLA off: nothing left, finalizer and condition gone.
    let mla_off = json!({"spec": {"mla": {"monitoringEnabled": false}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&mla_off)).await?;
    until!(seed, "c1's datasources removed, the Cluster released", {
        let c1 = clusters.get("c1").await?;
        seed.datasources(web).await.is_empty()
            && seed.datasources(superuser).await.is_empty()
            && !c1.finalizers().contains(&FINALIZER.to_string())
            && condition(&c1).is_none()
    });

    // On again, then the Cluster deleted: its datasources go before it does.
    let mla_on = json!({"spec": {"mla": {"monitoringEnabled": true}}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&mla_on)).await?;
    until!(seed, "c1's datasources back", seed.datasources(web).await.contains_key("prometheus-c1"));
    until!(seed, "c1's finalizer", clusters.get("c1").await?.finalizers().contains(&FINALIZER.to_string()));
    clusters.delete("c1", &DeleteParams::default()).await?;
    until!(seed, "c1 deleted with its datasources", {
        clusters.get_opt("c1").await?.is_none()
            && seed.datasources(web).await.is_empty()
            && seed.datasources(superuser).await.is_empty()
    });

    // An org deleted behind our back is made again, annotated, and its members restored.
    let (status, _) = seed.call(reqwest::Method::DELETE, &format!("/api/orgs/{adopted}"), None).await;
    assert_eq!(status, 200);
    until!(seed, "Shop-p2 repaired", {
        let id = seed.org_id("Shop-p2").await;
        id.is_some_and(|id| id != adopted)
            && projects.get("p2").await?.annotations().get(ANNOTATION) == id.map(|i| i.to_string()).as_ref()
            && seed.roles("bob@example.com").await == BTreeMap::from([editor(id.unwrap())])
            && seed.dashboards(id.unwrap()).await == nodes
    });

    // A deleted User's Grafana user goes; a deleted Project's org goes.
    users.delete("alice", &DeleteParams::default()).await?;
    projects.delete("p1", &DeleteParams::default()).await?;
    until!(seed, "alice and Web-p1 gone", {
        seed.user("alice@example.com").await.is_none()
            && users.get_opt("alice").await?.is_none()
            && seed.org_id("Web-p1").await.is_none()
            && projects.get_opt("p1").await?.is_none()
    });
    assert!(seed.user("bob@example.com").await.is_some());
    Ok(())
}

#[tokio::test]
async fn grafana_outage_is_reported_and_recovered() -> anyhow::Result<()> {
    let seed = start("grafana-outage").await?;
    let client = seed.plane.client();
    let projects: Api<Project> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client.clone());
    let users: Api<User> = Api::all(client.clone());
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    let pp = PostParams::default();
    projects.create(&pp, &project("p1", "Web")).await?;
    create_cluster(&seed, &cluster("c1", "p1", true, false)).await?;
    until!(seed, "c1 Ready", {
        condition(&clusters.get("c1").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
    });

    // Grafana down: the condition and an Event say so; changes made meanwhile are kept.
    seed.grafana.set_available(false);
    users.create(&pp, &user("carol", "carol@example.com", false)).await?;
    bindings.create(&pp, &binding("carol-p1", "carol@example.com", "p1", "editors")).await?;
    create_cluster(&seed, &cluster("c2", "p1", false, true)).await?;
    until!(seed, "GrafanaUnavailable on the clusters", {
        condition(&clusters.get("c1").await?)
            .is_some_and(|(s, r)| s == ConditionStatus::False && r == "GrafanaUnavailable")
            && condition(&clusters.get("c2").await?).is_some_and(|(_, r)| r == "GrafanaUnavailable")
    });
    until!(seed, "GrafanaUnavailable Events on the Cluster and the Project", {
        has_event(&client, "default", "GrafanaUnavailable", "c2").await
            && has_event(&client, "default", "GrafanaUnavailable", "p1").await
    });
    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert!(
        metrics.contains(r#"mla_reconcile_errors_total{controller="grafana",category="unreachable"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mla_external_requests_total{api="grafana",endpoint="orgs",method="POST",status="200"}"#),
        "{metrics}"
    );
    assert!(!seed.log().contains(PASSWORD), "the password never reaches the log");

    // Back: everything converges.
    seed.grafana.set_available(true);
    let web = seed.org_id("Web-p1").await.expect("Web-p1 made before the outage");
    until!(seed, "converged after the outage", {
        let uids: BTreeSet<String> = seed.datasources(web).await.into_keys().collect();
        uids == BTreeSet::from(["alertmanager-c1", "alertmanager-c2", "loki-c2", "prometheus-c1"].map(String::from))
            && seed.roles("carol@example.com").await == BTreeMap::from([(web, "Editor".to_string())])
            && condition(&clusters.get("c2").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
            && condition(&clusters.get("c1").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
    });

    // Drift: a datasource edited by hand is put back; one deleted by hand is made again.
    let (status, _) = seed.call(reqwest::Method::DELETE, "/api/datasources/uid/prometheus-c1", Some(web)).await;
    assert_eq!(status, 200);
    until!(seed, "prometheus-c1 back", seed.datasources(web).await.contains_key("prometheus-c1"));
    Ok(())
}

#[tokio::test]
async fn seed_without_mla_releases_everything() -> anyhow::Result<()> {
    let mut seed = start("grafana-off").await?;
    let client = seed.plane.client();
    let projects: Api<Project> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client.clone());
    let users: Api<User> = Api::all(client.clone());
    let pp = PostParams::default();
    projects.create(&pp, &project("p1", "Web")).await?;
    users.create(&pp, &user("dave", "dave@example.com", false)).await?;
    create_cluster(&seed, &cluster("c1", "p1", true, true)).await?;
    until!(seed, "c1 Ready", {
        condition(&clusters.get("c1").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
            && users.get("dave").await?.finalizers().contains(&FINALIZER.to_string())
    });
    let web = seed.org_id("Web-p1").await.unwrap();
    let superuser = seed.org_id("mla-superuser").await.unwrap();

    // The seed stops offering MLA: datasources go, every finalizer and the condition too;
    // organizations and users stay.
    seed.restart(false).await?;
    until!(seed, "released", {
        let released = |finalizers: &[String]| !finalizers.contains(&FINALIZER.to_string());
        let c1 = clusters.get("c1").await?;
        seed.datasources(web).await.is_empty()
            && seed.datasources(superuser).await.is_empty()
            && released(c1.finalizers())
            && condition(&c1).is_none()
            && released(projects.get("p1").await?.finalizers())
            && released(users.get("dave").await?.finalizers())
    });
    assert!(seed.org_id("Web-p1").await.is_some() && seed.user("dave@example.com").await.is_some());
    clusters.delete("c1", &DeleteParams::default()).await?;
    until!(seed, "c1 deleted at once", clusters.get_opt("c1").await?.is_none());
    Ok(())
}

/// Grafana 12 refuses datasource uids over 40 characters: a cluster whose name makes
/// `alertmanager-<name>` longer still gets its datasources (shortened uids), and the
/// steady state makes no mutating call.
#[tokio::test]
async fn long_cluster_names_on_grafana_12() -> anyhow::Result<()> {
    let seed = start_as("grafana-long", GrafanaVersion::V12).await?;
    let client = seed.plane.client();
    let projects: Api<Project> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client.clone());
    projects.create(&PostParams::default(), &project("p1", "Web")).await?;
    // 50 characters: a DNS label, and `cluster-<name>` still is one.
    let long = "a-long-cluster-name-for-grafana-twelve-01234567890".to_string();
    assert_eq!(long.len(), 50);
    create_cluster(&seed, &cluster(&long, "p1", true, true)).await?;
    until!(seed, "the long-named cluster Ready", {
        condition(&clusters.get(&long).await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
    });
    let web = seed.org_id("Web-p1").await.unwrap();
    let superuser = seed.org_id("mla-superuser").await.unwrap();
    for org in [web, superuser] {
        let list = seed.datasources(org).await;
        assert_eq!(list.len(), 3, "{list:?}");
        for (uid, ds) in &list {
            assert!(uid.len() <= 40, "{uid}");
            assert!(ds["name"].as_str().unwrap().contains(&long), "{ds}");
        }
        let am = list.keys().find(|u| u.starts_with("alertmanager-")).unwrap();
        let prom = list.values().find(|d| d["type"] == "prometheus").unwrap();
        assert_eq!(&prom["jsonData"]["alertmanagerUid"], am, "the Prometheus datasource names its Alertmanager");
    }
    assert!(!seed.datasources(web).await.contains_key(&format!("loki-{long}")), "loki- + 50 = 55 > 40: shortened");
    converged(&client).await?;
    seed.grafana.reset_mutations();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(seed.grafana.mutations().total(), 0, "{:?}\n{}", seed.grafana.mutations(), seed.log());
    Ok(())
}

/// A read-only (provisioned) datasource: Grafana answers 403 to its update; that cluster
/// reports it (condition, Event, metric) and everything else still converges. The same for
/// an externally synced user's role.
#[tokio::test]
async fn a_read_only_datasource_fails_its_cluster_only() -> anyhow::Result<()> {
    let seed = start("grafana-read-only").await?;
    let client = seed.plane.client();
    let projects: Api<Project> = Api::all(client.clone());
    let clusters: Api<Cluster> = Api::all(client.clone());
    let users: Api<User> = Api::all(client.clone());
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    let pp = PostParams::default();
    projects.create(&pp, &project("p1", "Web")).await?;
    create_cluster(&seed, &cluster("c1", "p1", true, false)).await?;
    until!(seed, "c1 Ready", {
        condition(&clusters.get("c1").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
    });
    let web = seed.org_id("Web-p1").await.unwrap();
    let superuser = seed.org_id("mla-superuser").await.unwrap();
    assert!(seed.grafana.set_datasource_read_only(web, "prometheus-c1", true));

    // c1's datasources must change (new display name); prometheus-c1 in the project's org
    // cannot. Meanwhile a new cluster and a new member arrive.
    let rename = json!({"spec": {"humanReadableName": "renamed"}});
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(&rename)).await?;
    create_cluster(&seed, &cluster("c2", "p1", true, false)).await?;
    users.create(&pp, &user("erin", "erin@example.com", false)).await?;
    bindings.create(&pp, &binding("erin-p1", "erin@example.com", "p1", "editors")).await?;
    until!(seed, "c1 failed on its read-only datasource, everything else done", {
        let c1 = clusters.get("c1").await?;
        let failed = c1.status.as_ref().and_then(|s| s.conditions.get(CONDITION)).is_some_and(|c| {
            c.status == ConditionStatus::False
                && c.reason.as_deref() == Some("DatasourcesFailed")
                && c.message.as_deref().is_some_and(|m| m.contains("403") && m.contains("read-only"))
        });
        let in_web = seed.datasources(web).await;
        let in_superuser = seed.datasources(superuser).await;
        failed
            && condition(&clusters.get("c2").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
            && in_web.contains_key("prometheus-c2")
            && in_web["alertmanager-c1"]["name"] == "Alertmanager renamed (c1)"
            && in_web["prometheus-c1"]["name"] == "Prometheus c1 shop (c1)"
            && in_superuser["prometheus-c1"]["name"] == "Prometheus renamed (c1)"
            && seed.roles("erin@example.com").await == BTreeMap::from([(web, "Editor".to_string())])
    });
    until!(seed, "a GrafanaDatasourcesFailed Event on c1", {
        has_event(&client, "default", "GrafanaDatasourcesFailed", "c1").await
    });
    // c1 retries with backoff; a pass whose first failure is another object's (a transient
    // conflict under load) counts under that category, so wait for one counted as forbidden.
    until!(seed, "a pass counted as forbidden", {
        let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
        metrics.contains(r#"mla_reconcile_errors_total{controller="grafana",category="forbidden"}"#)
    });
    let metrics = reqwest::get(format!("{}/metrics", seed.admin)).await?.text().await?;
    assert!(
        !metrics.contains(r#"mla_reconcile_errors_total{controller="grafana",category="auth"}"#),
        "a 403 on one object is no outage: {metrics}"
    );
    assert!(!has_event(&client, "default", "GrafanaUnavailable", "c2").await);

    // An externally synced user (roles from LDAP/OAuth): its role change is refused with a
    // 403 and reported on the User; another user's change still goes through.
    users.create(&pp, &user("fred", "fred@example.com", false)).await?;
    bindings.create(&pp, &binding("fred-p1", "fred@example.com", "p1", "viewers")).await?;
    until!(
        seed,
        "fred a Viewer",
        seed.roles("fred@example.com").await == BTreeMap::from([(web, "Viewer".to_string())])
    );
    assert!(seed.grafana.set_user_externally_synced("fred@example.com", true));
    let to_editor = json!({"spec": {"group": "editors-p1"}});
    bindings.patch("fred-p1", &PatchParams::default(), &Patch::Merge(&to_editor)).await?;
    let to_viewer = json!({"spec": {"group": "viewers-p1"}});
    bindings.patch("erin-p1", &PatchParams::default(), &Patch::Merge(&to_viewer)).await?;
    until!(seed, "erin a Viewer, fred refused and reported", {
        seed.roles("erin@example.com").await == BTreeMap::from([(web, "Viewer".to_string())])
            && has_event(&client, "default", "GrafanaUserFailed", "fred").await
    });
    assert_eq!(seed.roles("fred@example.com").await, BTreeMap::from([(web, "Viewer".to_string())]));

    // Made writable again: c1 converges.
    seed.grafana.set_datasource_read_only(web, "prometheus-c1", false);
    until!(seed, "c1 Ready again", {
        condition(&clusters.get("c1").await?) == Some((ConditionStatus::True, "DatasourcesReady".into()))
            && seed.datasources(web).await["prometheus-c1"]["name"] == "Prometheus renamed (c1)"
    });
    Ok(())
}

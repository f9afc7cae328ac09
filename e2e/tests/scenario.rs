//! The end-to-end scenario: master, seed and user cluster on real control planes, the
//! three binaries as processes under the RBAC of `manifests/`, real nginx running the
//! gateway configuration the seed manager wrote, a real Prometheus agent running the
//! configuration the user-cluster manager wrote, real Cortex (distributor, query frontend,
//! ruler, Alertmanager), the Grafana API test server and Loki stand-ins for logs. Each step
//! prints `STEP <n> <name>: ok (<seconds>)`.
//!
//! Faults on the way: the seed manager's leader is killed, the seed's API server is
//! stopped (so the master cannot reach it) while the master changes, and Grafana is
//! unavailable for 30 s; a steady state then makes no writes, and a Project deleted
//! afterwards still reaches the seed and Grafana (the restart once left the master's seed
//! watches stuck).
//!
//! Needs the binaries built (`cargo test --workspace` does that; alone: `cargo build
//! --bins` first).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code may panic

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use mla_common::api::{Alertmanager, Cluster, Project, User, UserProjectBinding};
use mla_common::pki;
use mla_e2e::cortex::remote_write::{self, Series};
use mla_e2e::eventually;
use mla_e2e::world::{World, WorldOptions};

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_system_end_to_end() {
    let started = Instant::now();
    let mut world = step("0", "start control planes, Cortex, Grafana and binaries", async {
        World::start(WorldOptions { seed_replicas: 2, resync_period: Duration::from_secs(20), ..Default::default() })
            .await
    })
    .await;
    let seed = world.seed.client();

    step("1", "Project, Users and bindings in the master appear in the seed", async {
        world
            .create_project(
                "p1",
                "Team",
                &[("alice", "alice@example.com", "owners"), ("bob", "bob@example.com", "viewers")],
            )
            .await?;
        world.create_user("root", "root@example.com", true).await?;
        world.create_project("p2", "Other", &[("dave", "dave@example.com", "owners")]).await?;
        until_present("Project p1 in the seed", &Api::<Project>::all(seed.clone()), "p1").await?;
        until_present("User alice in the seed", &Api::<User>::all(seed.clone()), "alice").await?;
        until_present("User root in the seed", &Api::<User>::all(seed.clone()), "root").await?;
        until_present("binding p1-bob in the seed", &Api::<UserProjectBinding>::all(seed.clone()), "p1-bob").await
    })
    .await;

    let mut mla_enabled = Instant::now();
    step("2", "an MLA-enabled Cluster gets its gateway in the seed", async {
        mla_enabled = Instant::now();
        world.create_cluster("c1", "p1", true, true, true).await?;
        world.create_cluster("c2", "p1", true, false, false).await?;
        for cluster in ["c1", "c2"] {
            let ns = format!("cluster-{cluster}");
            until_present("gateway ConfigMap", &Api::<ConfigMap>::namespaced(seed.clone(), &ns), "mla-gateway").await?;
            until_present("gateway Deployment", &Api::<Deployment>::namespaced(seed.clone(), &ns), "mla-gateway")
                .await?;
            until_present("gateway CA", &Api::<Secret>::namespaced(seed.clone(), &ns), "mla-gateway-ca").await?;
        }
        until_present(
            "the user-cluster manager Deployment",
            &Api::<Deployment>::namespaced(seed.clone(), "cluster-c1"),
            "mla-user-cluster-controller-manager",
        )
        .await
    })
    .await;

    step("2b", "the Cluster gets its IAP, letting in exactly the project's members and the admins", async {
        let ns = "cluster-c1";
        until_present("IAP Deployment", &Api::<Deployment>::namespaced(seed.clone(), ns), "mla-iap").await?;
        until_present("IAP Ingress", &Api::<Ingress>::namespaced(seed.clone(), ns), "mla-iap").await?;
        iap_emails(&world, "c1", &["alice@example.com", "bob@example.com", "root@example.com"]).await
    })
    .await;

    step("2c", "each cluster's tenant gets its Alertmanager config in Cortex, and only its own", async {
        // Running in each tenant's Alertmanager in Cortex, not only stored.
        eventually("Alertmanager configs of c1 and c2 running in Cortex", TIMEOUT, || async {
            Ok((world.cortex.alertmanager_running_config("c1").await?.is_some()
                && world.cortex.alertmanager_running_config("c2").await?.is_some())
            .then_some(()))
        })
        .await?;
        let alertmanagers: Api<Alertmanager> = Api::namespaced(seed.clone(), "cluster-c1");
        until_present("the default Alertmanager object", &alertmanagers, "alertmanager").await?;
        anyhow::ensure!(
            world.cortex.alertmanager_config("cluster-c1").await?.is_none(),
            "a config under a foreign tenant"
        );
        Ok(())
    })
    .await;

    let grafana = GrafanaView::new(&world);
    step("2d", "Grafana: the project's organization with its members' roles and the clusters' datasources", async {
        grafana
            .until("org Team-p1 with roles and datasources", "Team-p1", |members, datasources| {
                members.get("alice@example.com").map(String::as_str) == Some("Editor")
                    && members.get("bob@example.com").map(String::as_str) == Some("Viewer")
                    && members.get("root@example.com").map(String::as_str) == Some("Editor")
                    && *datasources
                        == set(&["alertmanager-c1", "prometheus-c1", "loki-c1", "alertmanager-c2", "prometheus-c2"])
            })
            .await?;
        grafana
            .until("the superuser org with every cluster's datasources", "mla-superuser", |_, datasources| {
                datasources.is_superset(&set(&["prometheus-c1", "loki-c1", "prometheus-c2"]))
            })
            .await?;
        let projects: Api<Project> = Api::all(seed.clone());
        let annotated = projects.get("p1").await?.metadata.annotations.unwrap_or_default();
        let org = grafana.org_id("Team-p1").await?.unwrap_or_default();
        anyhow::ensure!(
            annotated.get("mla.k8c.io/organization") == Some(&org.to_string()),
            "Project annotation {annotated:?} does not name org {org}"
        );
        Ok(())
    })
    .await;

    step("3", "the agents appear in the user cluster", async {
        world.run_user_manager("c1").await?;
        let user = world.user.client();
        until_present("Prometheus", &Api::<Deployment>::namespaced(user.clone(), "mla-system"), "prometheus").await?;
        until_present("Promtail", &Api::<DaemonSet>::namespaced(user.clone(), "mla-system"), "promtail").await?;
        until_present(
            "Prometheus' certificates",
            &Api::<Secret>::namespaced(user.clone(), "mla-system"),
            "prometheus-certificates",
        )
        .await
    })
    .await;

    let http = reqwest::Client::new();
    // The read path of a cluster's gateway: nginx pins the tenant, whatever the header says.
    let read = |port: u16, promql: &'static str| {
        let http = http.clone();
        async move { mla_e2e::cortex::query(&http, &format!("http://127.0.0.1:{port}/api/prom"), "c2", promql).await }
    };
    step("4", "metrics arrive in Cortex under the cluster's tenant and nowhere else", async {
        world.run_gateway("c1").await?;
        world.run_gateway("c2").await?;
        let agent_started = Instant::now();
        world.run_agent("c1").await?;
        let gateways = world.gateways.lock().await.clone();
        let (c1_read, c2_read) = (gateways["c1"].read_port, gateways["c2"].read_port);
        eventually("up{cluster=\"c1\"} through c1's read path", TIMEOUT, || async {
            Ok((!read(c1_read, "up{cluster=\"c1\"}").await?.is_empty()).then_some(()))
        })
        .await?;
        println!(
            "  measured: first sample under tenant c1 {:.1} s after the agent started, {:.1} s after the Cluster was created with MLA",
            agent_started.elapsed().as_secs_f64(),
            mla_enabled.elapsed().as_secs_f64()
        );
        anyhow::ensure!(read(c2_read, "up").await?.is_empty(), "c2's read path sees samples");
        // The read path's Alertmanager routes reach the tenant's Alertmanager in Cortex.
        let status: serde_json::Value = serde_json::from_str(
            &http
                .get(format!("http://127.0.0.1:{c1_read}/api/prom/alertmanager/api/v2/status"))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?,
        )?;
        anyhow::ensure!(
            status["config"]["original"].as_str().is_some_and(|c| c.contains("null")),
            "c1's Alertmanager through the read path: {status}"
        );
        anyhow::ensure!(world.cortex.query("c2", "up").await?.is_empty(), "samples under tenant c2");
        anyhow::ensure!(world.cortex.query("cluster-c1", "up").await?.is_empty(), "samples under tenant cluster-c1");
        anyhow::ensure!(!world.cortex.query("c1", "up{cluster=\"c1\"}").await?.is_empty(), "not under c1 in Cortex");
        Ok(())
    })
    .await;

    let c1_ca = cluster_ca(&world, "c1").await.unwrap();
    let c2_ca = cluster_ca(&world, "c2").await.unwrap();
    let gateways = world.gateways.lock().await.clone();
    let (c1_gateway, c2_gateway) = (gateways["c1"].clone(), gateways["c2"].clone());
    let push = |client: reqwest::Client, port: u16, tenant: Option<&'static str>, name: &'static str| async move {
        let mut request = client
            .post(format!("https://127.0.0.1:{port}/api/v1/push"))
            .body(remote_write::body(&[Series::now(name, &[("job", "e2e")], 1.0)]));
        for (header, value) in remote_write::HEADERS {
            request = request.header(header, value);
        }
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        request.send().await
    };

    step(
        "4b",
        "the IAP (real oauth2-proxy) lets the project's members into c1's Alertmanager and no one else",
        async {
            let (iap, host) = world.run_iap("c1").await?;
            let ui = "/api/prom/alertmanager/";
            for email in ["alice@example.com", "bob@example.com", "root@example.com"] {
                let mut browser = mla_e2e::iap::Browser::new(&iap.url, &host)?;
                let status = browser.sign_in(&world.oidc, email, ui).await?;
                anyhow::ensure!(status.is_success(), "{email}: {status}\n{}", iap.log_text());
            }
            // What the member saw is c1's Alertmanager in Cortex, reached through c1's gateway.
            let mut alice = mla_e2e::iap::Browser::new(&iap.url, &host)?;
            alice.sign_in(&world.oidc, "alice@example.com", ui).await?;
            let status = alice.get(&format!("https://{host}{ui}api/v2/status")).await?;
            let body: serde_json::Value = serde_json::from_str(&status.text().await?)?;
            let running = body["config"]["original"].as_str().unwrap_or_default().to_string();
            anyhow::ensure!(
                Some(running.clone()) == world.cortex.alertmanager_running_config("c1").await?,
                "the IAP showed another Alertmanager than c1's: {running}"
            );
            // dave is a member of p2 only; mallory of nothing.
            for email in ["dave@example.com", "mallory@example.com"] {
                let status = mla_e2e::iap::Browser::new(&iap.url, &host)?.sign_in(&world.oidc, email, ui).await?;
                anyhow::ensure!(status == reqwest::StatusCode::FORBIDDEN, "{email}: {status}\n{}", iap.log_text());
            }
            let anonymous = mla_e2e::iap::Browser::new(&iap.url, &host)?.get(&format!("https://{host}{ui}")).await?;
            anyhow::ensure!(
                anonymous.status() == reqwest::StatusCode::FOUND,
                "without a session: {}",
                anonymous.status()
            );
            Ok(())
        },
    )
    .await;

    step("5", "a request claiming another tenant is pinned back", async {
        let identity = pki::issue_client_certificate(&c1_ca.current().unwrap(), "prometheus", SystemTime::now())?;
        let client = gateway_client(c1_ca.cert_pem.as_deref().unwrap(), &identity);
        let response = push(client, c1_gateway.write_port, Some("c2"), "e2e_spoof").await?;
        anyhow::ensure!(response.status().is_success(), "push answered {}", response.status());
        eventually("the spoofed sample under c1", TIMEOUT, || async {
            Ok((!world.cortex.query("c1", "e2e_spoof").await?.is_empty()).then_some(()))
        })
        .await?;
        anyhow::ensure!(world.cortex.query("c2", "e2e_spoof").await?.is_empty(), "the spoofed sample reached c2");
        Ok(())
    })
    .await;

    step("6", "a second cluster's agent cannot write to the first cluster's gateway", async {
        let foreign = pki::issue_client_certificate(&c2_ca.current().unwrap(), "prometheus", SystemTime::now())?;
        let client = gateway_client(c1_ca.cert_pem.as_deref().unwrap(), &foreign);
        match push(client, c1_gateway.write_port, None, "e2e_foreign").await {
            Ok(response) => anyhow::ensure!(
                response.status() == reqwest::StatusCode::BAD_REQUEST,
                "a foreign certificate got {}",
                response.status()
            ),
            Err(error) => tracing::info!(%error, "refused in the handshake"),
        }
        // And the other way round: c2's own certificate works on c2's gateway only.
        let own = push(
            gateway_client(c2_ca.cert_pem.as_deref().unwrap(), &foreign),
            c2_gateway.write_port,
            None,
            "e2e_c2_own",
        )
        .await?;
        anyhow::ensure!(own.status().is_success(), "c2's own push answered {}", own.status());
        eventually("c2's own sample under c2", TIMEOUT, || async {
            Ok((!world.cortex.query("c2", "e2e_c2_own").await?.is_empty()).then_some(()))
        })
        .await?;
        // Queried after c2's later push is visible, so a foreign push would be too.
        for tenant in ["c1", "c2"] {
            anyhow::ensure!(
                world.cortex.query(tenant, "e2e_foreign").await?.is_empty(),
                "a push with a foreign certificate reached tenant {tenant}"
            );
        }
        anyhow::ensure!(world.cortex.query("c1", "e2e_c2_own").await?.is_empty(), "c2's sample under c1");
        Ok(())
    })
    .await;

    step("7", "the seed manager's leader is killed; leadership moves on and work continues", async {
        let leases: Api<Lease> = Api::namespaced(world.seed.client(), "kubermatic");
        let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        let leader = eventually("a seed manager leader", TIMEOUT, || async { Ok(world.seed_leader().await) }).await?;
        let before = holder(leases.get("seed-controller-manager").await?);
        world.seed_managers[leader].kill();
        let after = eventually("a new lease holder", TIMEOUT, || async {
            let now = holder(leases.get("seed-controller-manager").await?);
            Ok((!now.is_empty() && now != before).then_some(now))
        })
        .await?;
        eventually("the new holder to report leadership", TIMEOUT, || async { Ok(world.seed_leader().await) }).await?;
        println!("  lease moved from {before} to {after}");
        Ok(())
    })
    .await;

    step("8", "disabling logging removes Promtail (after the leader change)", async {
        world.set_mla("c1", true, false).await?;
        let user = world.user.client();
        until_absent("Promtail gone", &Api::<DaemonSet>::namespaced(user.clone(), "mla-system"), "promtail").await?;
        until_absent(
            "Promtail's certificates gone",
            &Api::<Secret>::namespaced(user.clone(), "mla-system"),
            "promtail-certificates",
        )
        .await?;
        until_present("Prometheus stays", &Api::<Deployment>::namespaced(user.clone(), "mla-system"), "prometheus")
            .await
    })
    .await;

    step("8b", "deleting a Project in the master removes its copy in the seed and its organization", async {
        grafana
            .until("org Other-p2 with its owner", "Other-p2", |members, _| {
                members.get("dave@example.com").map(String::as_str) == Some("Editor")
            })
            .await?;
        Api::<Project>::all(world.master.client()).delete("p2", &Default::default()).await?;
        until_absent("Project p2 gone from the seed", &Api::<Project>::all(world.seed.client()), "p2").await?;
        until_absent("Project p2 gone from the master", &Api::<Project>::all(world.master.client()), "p2").await?;
        eventually("org Other-p2 deleted", TIMEOUT, || async {
            Ok(grafana.org_id("Other-p2").await?.is_none().then_some(()))
        })
        .await?;
        anyhow::ensure!(grafana.org_id("Team-p1").await?.is_some(), "the other project's org went too");
        Ok(())
    })
    .await;

    step("9", "the seed API server is down while the master changes; everything converges", async {
        world.seed.stop_apiserver();
        world.create_user("carol", "carol@example.com", false).await?;
        world.bind("p1-carol", "carol@example.com", "p1", "editors").await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        world.seed.start_apiserver().await?;
        let seed = world.seed.client();
        until_present("User carol in the seed", &Api::<User>::all(seed.clone()), "carol").await?;
        until_present("binding p1-carol in the seed", &Api::<UserProjectBinding>::all(seed.clone()), "p1-carol")
            .await?;
        iap_emails(&world, "c1", &["alice@example.com", "bob@example.com", "carol@example.com", "root@example.com"])
            .await?;
        grafana
            .until("carol is an Editor", "Team-p1", |members, _| {
                members.get("carol@example.com").map(String::as_str) == Some("Editor")
            })
            .await
            .map(|_| ())
    })
    .await;

    step("9b", "Grafana is unavailable for 30 s while a role changes; it converges, nothing duplicated", async {
        world.grafana.set_available(false);
        world.bind("p1-bob", "bob@example.com", "p1", "editors").await?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let clusters: Api<Cluster> = Api::all(world.seed.client());
        let condition = clusters.get("c1").await?.status.and_then(|s| s.conditions.get("MLAGrafanaReady").cloned());
        println!("  during the outage: MLAGrafanaReady = {:?}", condition.as_ref().map(|c| (&c.status, &c.reason)));
        world.grafana.set_available(true);
        grafana
            .until("bob is an Editor", "Team-p1", |members, _| {
                members.get("bob@example.com").map(String::as_str) == Some("Editor")
            })
            .await?;
        let orgs = grafana.orgs().await?;
        let mut names: Vec<&str> = orgs.iter().map(|(_, n)| n.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        anyhow::ensure!(before == names.len(), "duplicate organizations: {orgs:?}");
        Ok(())
    })
    .await;

    step("10", "deleting the Cluster removes everything in the seed and the user cluster", async {
        let clusters: Api<Cluster> = Api::all(world.seed.client());
        clusters.delete("c1", &Default::default()).await?;
        until_absent("Cluster c1 gone", &clusters, "c1").await?;
        let user = world.user.client();
        until_absent("Prometheus gone", &Api::<Deployment>::namespaced(user.clone(), "mla-system"), "prometheus")
            .await?;
        let seed = world.seed.client();
        until_absent(
            "the user-cluster manager's Deployment gone",
            &Api::<Deployment>::namespaced(seed.clone(), "cluster-c1"),
            "mla-user-cluster-controller-manager",
        )
        .await?;
        // As the kubelet would: the process of a deleted Deployment stops.
        world.user_managers.lock().await.remove("c1");
        let deployments = Api::<Deployment>::namespaced(seed.clone(), "cluster-c1");
        for name in ["mla-gateway", "mla-iap", "mla-user-cluster-controller-manager"] {
            until_absent(&format!("Deployment {name} gone"), &deployments, name).await?;
        }
        let secrets = Api::<Secret>::namespaced(seed.clone(), "cluster-c1");
        for name in ["mla-gateway-ca", "mla-gateway-certificates", "mla-iap"] {
            until_absent(&format!("Secret {name} gone"), &secrets, name).await?;
        }
        eventually("c1's Alertmanager config removed from Cortex", TIMEOUT, || async {
            Ok(world.cortex.alertmanager_config("c1").await?.is_none().then_some(()))
        })
        .await?;
        anyhow::ensure!(
            world.cortex.alertmanager_config("c2").await?.is_some(),
            "c2's Alertmanager config was removed"
        );
        grafana
            .until("c1's datasources removed from the project's org", "Team-p1", |_, datasources| {
                *datasources == set(&["alertmanager-c2", "prometheus-c2"])
            })
            .await?;
        grafana
            .until("and from the superuser org", "mla-superuser", |_, datasources| {
                !datasources.iter().any(|d| d.ends_with("-c1"))
            })
            .await?;
        // The other cluster keeps its gateway.
        until_present("c2's gateway stays", &Api::<Deployment>::namespaced(seed.clone(), "cluster-c2"), "mla-gateway")
            .await
    })
    .await;

    step("11", "steady state: no Kubernetes writes, no mutating Grafana or Cortex call", async {
        let groups = ["", "apps", "kubermatic.k8c.io", "networking.k8s.io", "rbac.authorization.k8s.io"];
        let planes = [&world.master, &world.seed, &world.user];
        // Let the last step's work settle, then watch two resync periods.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut before = Vec::new();
        for plane in planes {
            before.push(mla_e2e::write_requests_by_resource(&plane.client(), &groups).await?);
        }
        world.grafana.reset_mutations();
        let cortex_before = world.cortex.mutating_calls().await?;
        let loki_before = world.loki_ruler.total_mutations();
        tokio::time::sleep(Duration::from_secs(45)).await;
        for (plane, before) in planes.iter().zip(before) {
            let after = mla_e2e::write_requests_by_resource(&plane.client(), &groups).await?;
            anyhow::ensure!(after == before, "writes in {}: before {before:?}, after {after:?}", plane.name());
        }
        anyhow::ensure!(world.grafana.mutations().total() == 0, "Grafana mutations: {:?}", world.grafana.mutations());
        // Counted by Cortex itself; pushes of samples are the data path, not configuration.
        let config_calls = |calls: mla_e2e::cortex::Calls| -> Vec<_> {
            calls.into_iter().filter(|((_, route), _)| mla_e2e::cortex::is_config_route(route)).collect()
        };
        let cortex_after = world.cortex.mutating_calls().await?;
        anyhow::ensure!(
            config_calls(cortex_after.clone()) == config_calls(cortex_before.clone()),
            "mutating Cortex calls in steady state: before {cortex_before:?}, after {cortex_after:?}"
        );
        anyhow::ensure!(world.loki_ruler.total_mutations() == loki_before, "mutating Loki ruler calls in steady state");
        Ok(())
    })
    .await;

    step("12", "after all that, deleting the last Project in the master removes its organization", async {
        Api::<Project>::all(world.master.client()).delete("p1", &Default::default()).await?;
        until_absent("Project p1 gone from the seed", &Api::<Project>::all(world.seed.client()), "p1").await?;
        until_absent("Project p1 gone from the master", &Api::<Project>::all(world.master.client()), "p1").await?;
        eventually("org Team-p1 deleted", TIMEOUT, || async {
            Ok(grafana.org_id("Team-p1").await?.is_none().then_some(()))
        })
        .await
    })
    .await;

    println!("SCENARIO passed in {:.1} s", started.elapsed().as_secs_f64());
}

//! master-controller-manager against real control planes (a master and two seeds), running
//! as a process under the RBAC of `manifests/master-controller-manager/`.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mla_common::api::*;
use mla_e2e::master::{
    NAMESPACE as NS, create_seed, master_identity, prepare_master, put_kubeconfig_secret as put_secret, register_seed,
    seed_identity,
};
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port, write_requests};

const BINARY: &str = env!("CARGO_BIN_EXE_master-controller-manager");
const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    master: ControlPlane,
    seeds: Vec<ControlPlane>,
    binary: Option<ManagedProcess>,
    admin: String,
}

impl Setup {
    /// A master and `seeds` seed control planes with CRDs, the master RBAC applied, and
    /// each seed registered.
    async fn new(test: &str, seeds: usize) -> anyhow::Result<Self> {
        let names: Vec<String> = (0..=seeds)
            .map(|i| if i == 0 { format!("{test}-master") } else { format!("{test}-seed{}", i - 1) })
            .collect();
        let mut planes = futures::future::try_join_all(names.iter().map(|name| ControlPlane::start(name))).await?;
        futures::future::try_join_all(planes.iter().map(|p| p.install_crds())).await?;
        let master = planes.remove(0);
        prepare_master(&master).await?;
        for (i, plane) in planes.iter().enumerate() {
            register_seed(&master, plane, &format!("seed-{i}")).await?;
        }
        Ok(Self { master, seeds: planes, binary: None, admin: String::new() })
    }

    /// Starts the binary with a kubeconfig of its ServiceAccount (the RBAC of the
    /// manifests, not cluster admin).
    async fn start_binary(&mut self, resync: &str) -> anyhow::Result<()> {
        self.start_binary_with(resync, &[]).await
    }

    /// [`Setup::start_binary`] with further flags.
    async fn start_binary_with(&mut self, resync: &str, extra: &[&str]) -> anyhow::Result<()> {
        let kubeconfig = self.master.kubeconfig(&master_identity()).await?;
        let port = free_port()?;
        let mut command = Command::new(BINARY);
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--admin-addr=127.0.0.1:{port}"))
            .arg(format!("--leader-election-namespace={NS}"))
            .arg(format!("--resync-period={resync}"))
            .arg("--log-level=info,kube=warn")
            .args(extra);
        let log = self.master.dir().join("master-controller-manager.log");
        self.binary = Some(ManagedProcess::spawn("master-controller-manager", command, &log)?);
        self.admin = format!("http://127.0.0.1:{port}");
        let readyz = format!("{}/readyz", self.admin);
        eventually("the binary to be ready", WAIT, || {
            let readyz = readyz.clone();
            async move { Ok(reqwest::get(&readyz).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await
        .map_err(|e| e.context(format!("log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())))
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.admin)).await?.text().await?)
    }
}

fn project(name: &str, display: &str, labels: &[(&str, &str)]) -> Project {
    let mut project = Project::new(name, ProjectSpec { name: display.into() });
    project.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    project
}

/// What a copy must equal: name, labels, spec, status.
fn essence<K: kube::Resource + serde::Serialize>(object: &K) -> serde_json::Value {
    let json = serde_json::to_value(object).unwrap_or_default();
    serde_json::json!({
        "name": object.meta().name,
        "labels": object.meta().labels.clone().unwrap_or_default(),
        "spec": json.get("spec"),
        "status": json.get("status"),
    })
}

/// Waits until every seed holds a copy of the master object `name` equal to it.
async fn wait_copied<K>(setup: &Setup, name: &str) -> anyhow::Result<Duration>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let started = Instant::now();
    let original = Api::<K>::all(setup.master.client()).get(name).await?;
    for seed in &setup.seeds {
        let api = Api::<K>::all(seed.client());
        let want = essence(&original);
        eventually(&format!("{name} copied to {} as {want}", seed.name()), WAIT, || {
            let api = api.clone();
            let want = want.clone();
            async move { Ok(api.get_opt(name).await?.filter(|copy| essence(copy) == want).map(|_| ())) }
        })
        .await?;
    }
    Ok(started.elapsed())
}

async fn wait_gone<K>(plane: &ControlPlane, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::all(plane.client());
    eventually(&format!("{name} gone from {}", plane.name()), WAIT, || {
        let api = api.clone();
        async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
    })
    .await
}

#[tokio::test]
async fn create_update_delete_drift_and_zero_write_resync() -> anyhow::Result<()> {
    let mut setup = Setup::new("sync", 2).await?;
    setup.start_binary("4s").await?;
    let master = setup.master.client();
    let projects: Api<Project> = Api::all(master.clone());
    let users: Api<User> = Api::all(master.clone());
    let bindings: Api<UserProjectBinding> = Api::all(master.clone());

    // Create: each kind, with labels and status, reaches both seeds.
    projects.create(&PostParams::default(), &project("p1", "Shop", &[("team", "a"), ("tier", "gold")])).await?;
    let status = serde_json::json!({"status": {"phase": "Active"}});
    projects.patch_status("p1", &PatchParams::default(), &Patch::Merge(&status)).await?;
    users
        .create(
            &PostParams::default(),
            &User::new("u1", UserSpec { email: "a@example.com".into(), name: "A".into(), admin: false }),
        )
        .await?;
    let binding = UserProjectBindingSpec {
        user_email: "a@example.com".into(),
        project_id: "p1".into(),
        group: "editors-p1".into(),
    };
    bindings.create(&PostParams::default(), &UserProjectBinding::new("b1", binding)).await?;
    wait_copied::<Project>(&setup, "p1").await?;
    wait_copied::<User>(&setup, "u1").await?;
    wait_copied::<UserProjectBinding>(&setup, "b1").await?;
    eventually("the cleanup finalizer on the original", WAIT, || {
        let projects = projects.clone();
        async move {
            let p1 = projects.get("p1").await?;
            Ok(p1.finalizers().iter().any(|f| f == "kubermatic.k8c.io/cleanup-seed-projects").then_some(()))
        }
    })
    .await?;

    // Update: a label added, one removed, spec and status changed.
    let patch = serde_json::json!({"metadata": {"labels": {"team": "b", "tier": null, "env": "prod"}}, "spec": {"name": "Shop 2"}});
    projects.patch("p1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let status = serde_json::json!({"status": {"phase": "Inactive"}});
    projects.patch_status("p1", &PatchParams::default(), &Patch::Merge(&status)).await?;
    let patch = serde_json::json!({"spec": {"admin": true, "name": "Anna"}});
    users.patch("u1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let patch = serde_json::json!({"spec": {"group": "viewers-p1"}});
    bindings.patch("b1", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_copied::<Project>(&setup, "p1").await?;
    wait_copied::<User>(&setup, "u1").await?;
    wait_copied::<UserProjectBinding>(&setup, "b1").await?;
    let copy = Api::<Project>::all(setup.seeds[0].client()).get("p1").await?;
    assert_eq!(copy.labels().get("tier"), None, "a label removed in the master is removed from the copy");

    // Drift: a copy edited in seed 0 and one deleted in seed 1 are put back.
    let edit = serde_json::json!({"spec": {"name": "tampered"}, "metadata": {"labels": {"team": "evil"}}});
    Api::<Project>::all(setup.seeds[0].client()).patch("p1", &PatchParams::default(), &Patch::Merge(&edit)).await?;
    Api::<User>::all(setup.seeds[1].client()).delete("u1", &DeleteParams::default()).await?;
    wait_copied::<Project>(&setup, "p1").await?;
    wait_copied::<User>(&setup, "u1").await?;

    // Steady state: two resync periods without a change make no write to either seed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<u64> = futures::future::try_join_all(
        setup.seeds.iter().map(|s| async move { write_requests(&s.client(), "kubermatic.k8c.io").await }),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after: Vec<u64> = futures::future::try_join_all(
        setup.seeds.iter().map(|s| async move { write_requests(&s.client(), "kubermatic.k8c.io").await }),
    )
    .await?;
    assert_eq!(before, after, "writes to the seeds during two no-change resync periods");
    let metrics = setup.metrics().await?;
    for seed in ["seed-0", "seed-1"] {
        for kind in ["project-sync", "user-sync", "userprojectbinding-sync"] {
            let line = format!("mla_seed_objects_in_sync{{seed=\"{seed}\",kind=\"{kind}\"}} 1");
            assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
        }
        assert!(metrics.contains(&format!("mla_seed_reachable{{seed=\"{seed}\"}} 1")), "{metrics}");
    }
    assert!(
        metrics.contains("mla_seed_sync_latency_seconds_count{seed=\"seed-0\",kind=\"project-sync\"}"),
        "{metrics}"
    );

    // Delete: copies go from every seed, then the finalizer is released.
    projects.delete("p1", &DeleteParams::default()).await?;
    users.delete("u1", &DeleteParams::default()).await?;
    bindings.delete("b1", &DeleteParams::default()).await?;
    for seed in &setup.seeds {
        wait_gone::<Project>(seed, "p1").await?;
        wait_gone::<User>(seed, "u1").await?;
        wait_gone::<UserProjectBinding>(seed, "b1").await?;
    }
    wait_gone::<Project>(&setup.master, "p1").await?;
    wait_gone::<User>(&setup.master, "u1").await?;
    wait_gone::<UserProjectBinding>(&setup.master, "b1").await?;
    Ok(())
}

/// Finalizers are added only once every seed's synchronizers finished their first pass,
/// or when `--finalizer-hold` runs out. An original deleted before it got the finalizer
/// goes at once, and the orphan sweep deletes its copies from every seed.
#[tokio::test]
async fn finalizers_wait_for_the_first_pass_and_early_deletions_are_swept() -> anyhow::Result<()> {
    let mut setup = Setup::new("hold", 2).await?;
    // Seed 1 serves no Users: its User synchronizer never completes a list, so its first
    // pass never ends (Projects still reach it).
    Api::<CustomResourceDefinition>::all(setup.seeds[1].client())
        .delete("users.kubermatic.k8c.io", &DeleteParams::default())
        .await?;
    eventually("the User CRD gone from seed 1", WAIT, || async {
        let crds = Api::<CustomResourceDefinition>::all(setup.seeds[1].client());
        Ok(crds.get_opt("users.kubermatic.k8c.io").await?.is_none().then_some(()))
    })
    .await?;
    let hold = Duration::from_secs(40);
    setup.start_binary_with("4s", &["--finalizer-hold=40s"]).await?;
    let held_since = Instant::now();
    let projects: Api<Project> = Api::all(setup.master.client());
    projects.create(&PostParams::default(), &project("early", "Early", &[])).await?;
    wait_copied::<Project>(&setup, "early").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = projects.get("early").await?;
    assert!(held_since.elapsed() < hold, "the test was too slow to see the hold: {:?}", held_since.elapsed());
    assert!(early.finalizers().is_empty(), "finalizer added before seed 1's first pass: {:?}", early.finalizers());

    // Deleted without our finalizer: gone from the master at once, swept from the seeds.
    projects.delete("early", &DeleteParams::default()).await?;
    wait_gone::<Project>(&setup.master, "early").await?;
    for seed in &setup.seeds {
        wait_gone::<Project>(seed, "early").await?;
    }

    // The hold is bounded: after --finalizer-hold the finalizer is added anyway.
    projects.create(&PostParams::default(), &project("late", "Late", &[])).await?;
    eventually("the finalizer once the hold ran out", hold + WAIT, || {
        let projects = projects.clone();
        async move {
            let late = projects.get("late").await?;
            Ok(late.finalizers().iter().any(|f| f == "kubermatic.k8c.io/cleanup-seed-projects").then_some(()))
        }
    })
    .await?;
    // The hold counts from when the seed is served, a little before the binary is ready.
    assert!(
        held_since.elapsed() + Duration::from_secs(10) >= hold,
        "finalizer added after {:?}, before the hold ran out",
        held_since.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_seed_delays_nobody_and_converges_when_back() -> anyhow::Result<()> {
    let mut setup = Setup::new("outage", 2).await?;
    setup.start_binary("10m").await?;
    let projects: Api<Project> = Api::all(setup.master.client());
    projects.create(&PostParams::default(), &project("before", "Before", &[])).await?;
    wait_copied::<Project>(&setup, "before").await?;

    setup.seeds[1].stop_apiserver();
    let patch = serde_json::json!({"spec": {"name": "Changed while away"}});
    projects.patch("before", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    for i in 0..20 {
        projects
            .create(&PostParams::default(), &project(&format!("during-{i}"), "During", &[("n", &i.to_string())]))
            .await?;
    }
    projects.delete("before", &DeleteParams::default()).await?;
    // Seed 0 gets everything although seed 1 is down, and stays down until after this
    // (about 0.1 s alone; the bound leaves room for the other tests of this binary, each
    // with three control planes on the same cores: 10 s was once too short in CI).
    let started = Instant::now();
    let api0 = Api::<Project>::all(setup.seeds[0].client());
    eventually("seed 0 to get the changes", Duration::from_secs(30), || {
        let api0 = api0.clone();
        async move {
            let names: Vec<String> = api0.list(&Default::default()).await?.items.iter().map(|p| p.name_any()).collect();
            Ok((names.len() == 20 && names.iter().all(|n| n.starts_with("during-"))).then_some(()))
        }
    })
    .await?;
    let healthy_seed = started.elapsed();
    // The deleted original waits for the unreachable seed's copy.
    let waiting = projects.get("before").await?;
    assert!(waiting.metadata.deletion_timestamp.is_some() && !waiting.finalizers().is_empty());
    eventually("seed-1 reported unreachable", WAIT, || async {
        Ok(setup.metrics().await?.contains("mla_seed_reachable{seed=\"seed-1\"} 0").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;

    setup.seeds[1].start_apiserver().await?;
    let back = Instant::now();
    let api1 = Api::<Project>::all(setup.seeds[1].client());
    eventually("seed 1 to converge", Duration::from_secs(60), || {
        let api1 = api1.clone();
        async move {
            let names: Vec<String> = api1.list(&Default::default()).await?.items.iter().map(|p| p.name_any()).collect();
            Ok((names.len() == 20 && names.iter().all(|n| n.starts_with("during-"))).then_some(()))
        }
    })
    .await?;
    wait_gone::<Project>(&setup.master, "before").await?;
    println!(
        "healthy seed synced 20 creations in {healthy_seed:?} while the other was down; converged {:?} after it came back",
        back.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn broken_kubeconfigs_are_reported_and_the_rest_syncs() -> anyhow::Result<()> {
    let mut setup = Setup::new("broken", 1).await?;
    create_seed(&setup.master, "missing-secret", "does-not-exist").await?;
    put_secret(&setup.master, "garbage-kubeconfig", "this: [is not a kubeconfig").await?;
    create_seed(&setup.master, "garbage", "garbage-kubeconfig").await?;
    setup.start_binary("10m").await?;

    // KKP's seed-status-controller owns the Seed status; a stand-in writes what it would.
    let seeds: Api<Seed> = Api::namespaced(setup.master.client(), NS);
    let kkp_status = serde_json::json!({"status": {"conditions": {"KubeconfigValid": {
        "status": "True", "reason": "KubeconfigValid", "lastHeartbeatTime": "2026-11-01T00:00:00Z"}}}});
    seeds
        .patch_status("missing-secret", &PatchParams::apply("kkp-seed-status-controller"), &Patch::Merge(&kkp_status))
        .await?;
    let before = seeds.get("missing-secret").await?;
    for (seed, valid) in [("seed-0", 1), ("missing-secret", 0), ("garbage", 0)] {
        let line = format!("mla_seed_kubeconfig_valid{{seed=\"{seed}\"}} {valid}");
        eventually(&line, WAIT, || async { Ok(setup.metrics().await?.contains(&line).then_some(())) }).await?;
    }
    let events: Api<Event> = Api::namespaced(setup.master.client(), NS);
    let reasons = |seed: &'static str| {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok::<_, anyhow::Error>(
                list.items
                    .into_iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(seed))
                    .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                    .collect::<Vec<_>>(),
            )
        }
    };
    for (seed, kind, reason) in [
        ("seed-0", "Normal", "KubeconfigValid"),
        ("missing-secret", "Warning", "KubeconfigSecretMissing"),
        ("garbage", "Warning", "KubeconfigInvalid"),
    ] {
        let found = eventually(&format!("a {kind} {reason} event for {seed}"), WAIT, || async {
            let found = reasons(seed).await?;
            Ok(found.iter().any(|(t, r, _)| t == kind && r == reason).then_some(found))
        })
        .await?;
        if seed == "missing-secret" {
            assert!(found.iter().any(|(_, _, note)| note.contains("does-not-exist")), "{found:?}");
        }
    }
    // Nothing of ours on any Seed: KKP's condition stays as KKP wrote it, the others have none.
    let after = seeds.get("missing-secret").await?;
    assert_eq!(after.status, before.status, "the Seed status is KKP's");
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "no write to the Seed");
    for seed in ["seed-0", "garbage"] {
        let seed = seeds.get(seed).await?;
        assert!(seed.status.as_ref().is_none_or(|s| s.conditions.is_empty()), "no condition written: {seed:?}");
        let managers: Vec<_> = seed.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
        assert!(!managers.iter().any(|m| m.starts_with("master-controller-manager")), "{managers:?}");
    }

    // The good seed syncs regardless.
    Api::<Project>::all(setup.master.client()).create(&PostParams::default(), &project("p", "P", &[])).await?;
    wait_copied::<Project>(&setup, "p").await?;

    // Fixing the Secret brings the broken seed in (and rotating a Secret replaces the client).
    let kubeconfig = std::fs::read_to_string(setup.seeds[0].kubeconfig(&seed_identity()).await?)?;
    put_secret(&setup.master, "garbage-kubeconfig", &kubeconfig).await?;
    let line = "mla_seed_kubeconfig_valid{seed=\"garbage\"} 1";
    eventually("garbage seed valid after the fix", WAIT, || async {
        Ok(setup.metrics().await?.contains(line).then_some(()))
    })
    .await?;
    eventually("a Normal event once the garbage seed's kubeconfig works", WAIT, || async {
        Ok(reasons("garbage").await?.iter().any(|(t, r, _)| t == "Normal" && r == "KubeconfigValid").then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_master_that_is_its_own_seed_writes_nothing() -> anyhow::Result<()> {
    let mut setup = Setup::new("self", 0).await?;
    // The master registers itself as a seed.
    register_seed(&setup.master, &setup.master, "itself").await?;
    let projects: Api<Project> = Api::all(setup.master.client());
    projects.create(&PostParams::default(), &project("p", "P", &[("a", "b")])).await?;
    let writes_before = write_requests(&setup.master.client(), "kubermatic.k8c.io").await?;
    setup.start_binary("3s").await?;
    // Long enough for discovery, the same-cluster check and two resync periods.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let writes_after = write_requests(&setup.master.client(), "kubermatic.k8c.io").await?;
    let p = projects.get("p").await?;
    assert!(p.finalizers().is_empty(), "no finalizer on a master that is its own seed: {:?}", p.finalizers());
    let managers: Vec<_> = p.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(!managers.iter().any(|m| m.starts_with("master-controller-manager")), "{managers:?}");
    // Nothing at all: not even the Seed (its status is KKP's).
    let seed_writes = writes_after - writes_before;
    assert_eq!(seed_writes, 0, "writes to kubermatic.k8c.io objects");
    Ok(())
}

/// After a seed's API server restarts, the seed's watches resume (without a new list)
/// and sit idle; deleting originals must still delete their copies. Regression: the seed
/// client's read timeout broke every watch idle for a minute (and each such failure left
/// the kind "unreachable", see the next test), so copies were never deleted again.
#[tokio::test]
async fn deletions_reach_a_seed_long_after_its_api_server_restarted() -> anyhow::Result<()> {
    let mut setup = Setup::new("restart", 1).await?;
    setup.start_binary("10m").await?;
    copies_held(&setup).await?;

    setup.seeds[0].stop_apiserver();
    tokio::time::sleep(Duration::from_secs(10)).await;
    setup.seeds[0].start_apiserver().await?;
    // The watches resume, then sit idle for over a minute: without failing.
    let log = setup.master.dir().join("master-controller-manager.log");
    let failures = || std::fs::read_to_string(&log).unwrap_or_default().matches("seed unreachable").count();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let resumed = failures();
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(
        failures(),
        resumed,
        "seed watches failed while idle; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    delete_and_release(&setup).await
}

/// A seed watch broken by the network (not by the API server: no new list is needed to
/// resume it) must not leave the seed "unreachable". Regression: the sync marked a kind
/// reachable only on a complete list, so after such a break it never wrote to the seed
/// again, deletions included.
#[tokio::test]
async fn deletions_reach_a_seed_after_its_connections_broke() -> anyhow::Result<()> {
    let mut setup = Setup::new("cut", 1).await?;
    // The binary reaches the seed through a proxy that can break every connection.
    let (proxy, cut) = proxy_to(&setup.seeds[0].url()).await?;
    let kubeconfig = std::fs::read_to_string(setup.seeds[0].kubeconfig(&seed_identity()).await?)?
        .replace(&setup.seeds[0].url(), &proxy);
    put_secret(&setup.master, "seed-0-kubeconfig", &kubeconfig).await?;
    setup.start_binary("10m").await?;
    copies_held(&setup).await?;

    cut.send_modify(|generation| *generation += 1);
    // The watches fail and resume (after the watcher's backoff).
    tokio::time::sleep(Duration::from_secs(5)).await;
    delete_and_release(&setup).await
}

/// A TCP proxy on loopback to the host and port of `url`, and a counter that breaks every
/// open connection when bumped. Returns the proxy's URL.
async fn proxy_to(url: &str) -> anyhow::Result<(String, tokio::sync::watch::Sender<u64>)> {
    let upstream = url.trim_start_matches("https://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("https://{}", listener.local_addr()?);
    let (cut, generation) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut generation = generation.clone();
            generation.mark_unchanged();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = generation.changed() => {}
                }
            });
        }
    });
    Ok((address, cut))
}

const FOREIGN: &str = "test.mla.k8c.io/hold";

/// Creates p1, u1 and b1 in the master and waits for their copies in seed 0, which then
/// get a finalizer of someone else (as the seed manager's controllers add).
async fn copies_held(setup: &Setup) -> anyhow::Result<()> {
    let master = setup.master.client();
    let seed = setup.seeds[0].client();
    Api::<Project>::all(master.clone()).create(&PostParams::default(), &project("p1", "One", &[])).await?;
    let user = User::new("u1", UserSpec { email: "a@example.com".into(), name: "A".into(), admin: false });
    Api::<User>::all(master.clone()).create(&PostParams::default(), &user).await?;
    let binding = UserProjectBindingSpec {
        user_email: "a@example.com".into(),
        project_id: "p1".into(),
        group: "editors-p1".into(),
    };
    Api::<UserProjectBinding>::all(master.clone())
        .create(&PostParams::default(), &UserProjectBinding::new("b1", binding))
        .await?;
    wait_copied::<Project>(setup, "p1").await?;
    wait_copied::<User>(setup, "u1").await?;
    wait_copied::<UserProjectBinding>(setup, "b1").await?;
    let hold = serde_json::json!({"metadata": {"finalizers": [FOREIGN]}});
    Api::<Project>::all(seed.clone()).patch("p1", &PatchParams::default(), &Patch::Merge(&hold)).await?;
    Api::<User>::all(seed.clone()).patch("u1", &PatchParams::default(), &Patch::Merge(&hold)).await?;
    Api::<UserProjectBinding>::all(seed.clone()).patch("b1", &PatchParams::default(), &Patch::Merge(&hold)).await?;
    Ok(())
}

/// Deletes p1, u1 and b1 in the master; each copy must be marked deleted promptly, and
/// once released goes with its original.
async fn delete_and_release(setup: &Setup) -> anyhow::Result<()> {
    let master = setup.master.client();
    let deleted = Instant::now();
    Api::<Project>::all(master.clone()).delete("p1", &DeleteParams::default()).await?;
    Api::<User>::all(master.clone()).delete("u1", &DeleteParams::default()).await?;
    Api::<UserProjectBinding>::all(master.clone()).delete("b1", &DeleteParams::default()).await?;
    released::<Project>(setup, "p1", FOREIGN).await?;
    released::<User>(setup, "u1", FOREIGN).await?;
    released::<UserProjectBinding>(setup, "b1", FOREIGN).await?;
    println!("the copies were deleted within {:?} of the originals", deleted.elapsed());
    Ok(())
}

/// Waits until seed 0's copy of `name` is marked deleted, removes `finalizer` from it,
/// and waits until the copy and the original are gone.
async fn released<K>(setup: &Setup, name: &str, finalizer: &str) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let copies = Api::<K>::all(setup.seeds[0].client());
    let log = setup.master.dir().join("master-controller-manager.log");
    eventually(&format!("the copy {name} marked deleted"), WAIT, || {
        let copies = copies.clone();
        async move { Ok(copies.get(name).await?.meta().deletion_timestamp.as_ref().map(|_| ())) }
    })
    .await
    .map_err(|e| e.context(format!("log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())))?;
    let copy = copies.get(name).await?;
    let rest: Vec<&String> = copy.finalizers().iter().filter(|f| *f != finalizer).collect();
    let release = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": copy.resource_version()}});
    copies.patch(name, &PatchParams::default(), &Patch::Merge(&release)).await?;
    wait_gone::<K>(&setup.seeds[0], name).await?;
    wait_gone::<K>(&setup.master, name).await
}

/// Makes `plane`'s CRD of `plural` keep fields its schema does not list, in spec and
/// status, as KKP's full CRDs keep fields our types do not know.
async fn preserve_unknown_fields(plane: &ControlPlane, plural: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client());
    let name = format!("{plural}.kubermatic.k8c.io");
    let mut crd = crds.get(&name).await?;
    for version in &mut crd.spec.versions {
        let properties = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .ok_or_else(|| anyhow::anyhow!("{name} has no schema"))?;
        for part in ["spec", "status"] {
            if let Some(schema) = properties.get_mut(part) {
                schema.x_kubernetes_preserve_unknown_fields = Some(true);
            }
        }
    }
    crd.metadata.managed_fields = None;
    crds.replace(&name, &PostParams::default(), &crd).await?;
    Ok(())
}

fn dynamic_api(plane: &ControlPlane, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubermatic.k8c.io", "v1", kind), plural);
    Api::all_with(plane.client(), &resource)
}

/// What a copy must equal, untyped: name, labels, spec, status.
fn raw_essence(object: &DynamicObject) -> serde_json::Value {
    serde_json::json!({
        "name": object.metadata.name,
        "labels": object.metadata.labels.clone().unwrap_or_default(),
        "spec": object.data.get("spec"),
        "status": object.data.get("status"),
    })
}

async fn wait_raw_copy(api: &Api<DynamicObject>, name: &str, want: serde_json::Value) -> anyhow::Result<()> {
    eventually(&format!("{name} copied as {want}"), WAIT, || {
        let (api, want) = (api.clone(), want.clone());
        async move { Ok(api.get_opt(name).await?.filter(|copy| raw_essence(copy) == want).map(|_| ())) }
    })
    .await
}

/// KKP-shaped Users (fields our types do not know) and GroupProjectBindings arrive in the
/// seed identical; a field only the copy has is removed; a KKP synchronizer stand-in
/// rewriting the copy from KKP's Go types (zero values spelled out) starts no write war;
/// steady state writes nothing.
#[tokio::test]
async fn kkp_shaped_objects_arrive_identical_beside_kkp_synchronizers() -> anyhow::Result<()> {
    let mut setup = Setup::new("kkp", 1).await?;
    for plane in std::iter::once(&setup.master).chain(&setup.seeds) {
        // GroupProjectBindings come with our CRDs (manifests/crds).
        preserve_unknown_fields(plane, "users").await?;
    }
    let users = dynamic_api(&setup.master, "User", "users");
    let user: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "User",
        "metadata": {"name": "u-kkp", "labels": {"team": "a"}, "annotations": {"kkp": "not copied"}},
        "spec": {"id": "c0ffee", "name": "Anna", "email": "anna@example.com", "admin": true,
                 "groups": ["devs", "ops"], "readAnnouncements": ["a1"],
                 "settings": {"useClusterList": true, "itemsPerPage": 20, "lastSeenChangelogVersion": "v2.31"}}
    }))?;
    users.create(&PostParams::default(), &user).await?;
    let status = serde_json::json!({"status": {"lastSeen": "2026-11-01T00:00:00Z"}});
    users.patch_status("u-kkp", &PatchParams::default(), &Patch::Merge(&status)).await?;
    let bindings = dynamic_api(&setup.master, "GroupProjectBinding", "groupprojectbindings");
    let binding: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "GroupProjectBinding",
        "metadata": {"name": "devs-p1", "labels": {"project": "p1"}},
        "spec": {"group": "devs", "projectID": "p1", "role": "viewers"}
    }))?;
    bindings.create(&PostParams::default(), &binding).await?;
    setup.start_binary("4s").await?;

    let seed_users = dynamic_api(&setup.seeds[0], "User", "users");
    let seed_bindings = dynamic_api(&setup.seeds[0], "GroupProjectBinding", "groupprojectbindings");
    let original = users.get("u-kkp").await?;
    wait_raw_copy(&seed_users, "u-kkp", raw_essence(&original)).await?;
    wait_raw_copy(&seed_bindings, "devs-p1", raw_essence(&bindings.get("devs-p1").await?)).await?;
    let copy = seed_users.get("u-kkp").await?;
    assert_eq!(copy.data["spec"]["groups"], serde_json::json!(["devs", "ops"]));
    assert!(copy.metadata.annotations.is_none_or(|a| !a.contains_key("kkp")), "annotations are not copied");
    eventually("the GroupProjectBinding finalizer on the original", WAIT, || {
        let bindings = bindings.clone();
        async move {
            let b = bindings.get("devs-p1").await?;
            Ok(b.finalizers()
                .iter()
                .any(|f| f == "kubermatic.k8c.io/cleanup-seed-group-project-bindings")
                .then_some(()))
        }
    })
    .await?;

    // A field only the copy has (written by someone else) is removed; so is one the
    // original drops.
    let foreign = serde_json::json!({"spec": {"foreign": "x", "settings": {"itemsPerPage": 50}}});
    seed_users.patch("u-kkp", &PatchParams::apply("someone"), &Patch::Merge(&foreign)).await?;
    let dropped = serde_json::json!({"spec": {"readAnnouncements": null}});
    users.patch("u-kkp", &PatchParams::default(), &Patch::Merge(&dropped)).await?;
    let original = users.get("u-kkp").await?;
    wait_raw_copy(&seed_users, "u-kkp", raw_essence(&original)).await?;

    // KKP's synchronizer stand-in: an Update of the copy with the master's spec as KKP's Go
    // types write it (zero values spelled out), as its own field manager.
    let mut kkp_copy = seed_users.get("u-kkp").await?;
    kkp_copy.data["spec"] = original.data["spec"].clone();
    kkp_copy.data["spec"]["isGlobalViewer"] = serde_json::json!(false);
    kkp_copy.data["spec"]["settings"]["collapseSidebar"] = serde_json::json!(false);
    kkp_copy.data["spec"]["project"] = serde_json::json!("");
    kkp_copy.metadata.managed_fields = None;
    seed_users
        .replace(
            "u-kkp",
            &PostParams { field_manager: Some("kkp-user-synchronizer".into()), ..Default::default() },
            &kkp_copy,
        )
        .await?;
    let mut kkp_binding = seed_bindings.get("devs-p1").await?;
    kkp_binding.metadata.managed_fields = None;
    seed_bindings
        .replace(
            "devs-p1",
            &PostParams { field_manager: Some("group-project-binding-sync-controller".into()), ..Default::default() },
            &kkp_binding,
        )
        .await?;

    // Two resync periods later: no write from us, and KKP's zero values are still there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = write_requests(&setup.seeds[0].client(), "kubermatic.k8c.io").await?;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after = write_requests(&setup.seeds[0].client(), "kubermatic.k8c.io").await?;
    assert_eq!(before, after, "writes to the seed during two resync periods beside KKP's writes");
    let copy = seed_users.get("u-kkp").await?;
    assert_eq!(copy.data["spec"]["isGlobalViewer"], serde_json::json!(false), "KKP's zero values are left alone");
    assert_eq!(copy.data["spec"]["settings"]["collapseSidebar"], serde_json::json!(false));
    let mut want = original.data["spec"].clone();
    want["isGlobalViewer"] = serde_json::json!(false);
    want["settings"]["collapseSidebar"] = serde_json::json!(false);
    want["project"] = serde_json::json!("");
    assert_eq!(copy.data["spec"], want);
    assert_eq!(copy.data["status"], original.data["status"]);

    // Deleting the originals deletes the copies and releases the shared finalizers.
    users.delete("u-kkp", &DeleteParams::default()).await?;
    bindings.delete("devs-p1", &DeleteParams::default()).await?;
    for (api, name) in [(&seed_users, "u-kkp"), (&seed_bindings, "devs-p1"), (&users, "u-kkp"), (&bindings, "devs-p1")]
    {
        eventually(&format!("{name} gone"), WAIT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        })
        .await?;
    }
    Ok(())
}

/// A Seed's kubeconfig under another key (`fieldPath`) in a Secret of another namespace
/// is used when that namespace is watched; a namespace that is not is reported.
#[tokio::test]
async fn kubeconfig_field_path_and_secrets_in_other_namespaces() -> anyhow::Result<()> {
    let mut setup = Setup::new("fieldpath", 1).await?;
    let master = setup.master.client();
    let seeds: Api<Seed> = Api::namespaced(master.clone(), NS);
    seeds.delete("seed-0", &DeleteParams::default()).await?;
    mla_e2e::master::ensure_namespace(&master, "seed-secrets").await?;
    let kubeconfig = std::fs::read_to_string(setup.seeds[0].kubeconfig(&seed_identity()).await?)?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "moved-kubeconfig", "namespace": "seed-secrets"},
        "stringData": {"value": kubeconfig}
    }))?;
    Api::<Secret>::namespaced(master.clone(), "seed-secrets").create(&PostParams::default(), &secret).await?;
    // The documented RBAC for an extra namespace: read Secrets there.
    let role: Role = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "mla:master-controller-manager", "namespace": "seed-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]
    }))?;
    Api::<Role>::namespaced(master.clone(), "seed-secrets").create(&PostParams::default(), &role).await?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "mla:master-controller-manager", "namespace": "seed-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mla:master-controller-manager"},
        "subjects": [{"kind": "ServiceAccount", "name": "master-controller-manager", "namespace": NS}]
    }))?;
    Api::<RoleBinding>::namespaced(master.clone(), "seed-secrets").create(&PostParams::default(), &binding).await?;
    let seed = |name: &str, namespace: &str| {
        Seed::new(
            name,
            SeedSpec {
                kubeconfig: ObjectReference {
                    name: Some("moved-kubeconfig".into()),
                    namespace: Some(namespace.into()),
                    field_path: Some("value".into()),
                    ..Default::default()
                },
                expose_strategy: None,
                mla: None,
            },
        )
    };
    seeds.create(&PostParams::default(), &seed("moved", "seed-secrets")).await?;
    seeds.create(&PostParams::default(), &seed("elsewhere", "not-watched")).await?;
    setup.start_binary_with("10m", &["--kubeconfig-namespaces=seed-secrets"]).await?;

    Api::<Project>::all(master.clone()).create(&PostParams::default(), &project("p", "P", &[])).await?;
    wait_copied::<Project>(&setup, "p").await?;
    let metrics = setup.metrics().await?;
    assert!(metrics.contains("mla_seed_kubeconfig_valid{seed=\"moved\"} 1"), "{metrics}");
    eventually("the unwatched namespace reported", WAIT, || async {
        let metrics = setup.metrics().await?;
        Ok(metrics.contains("mla_seed_kubeconfig_valid{seed=\"elsewhere\"} 0").then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(master.clone(), NS);
    eventually("a Warning event naming the flag", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("elsewhere")
                        && e.reason.as_deref() == Some("KubeconfigSecretNamespaceNotWatched")
                        && e.note.as_deref().unwrap_or_default().contains("--kubeconfig-namespaces")
                })
                .then_some(()))
        }
    })
    .await?;

    // A key the Secret does not have is reported by its name.
    let patch = serde_json::json!({"spec": {"kubeconfig": {"name": "moved-kubeconfig", "namespace": "seed-secrets", "fieldPath": "nope"}}});
    seeds.patch("elsewhere", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("the missing key reported", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("elsewhere")
                        && e.reason.as_deref() == Some("KubeconfigMissing")
                        && e.note.as_deref().unwrap_or_default().contains("\"nope\"")
                })
                .then_some(()))
        }
    })
    .await?;
    Ok(())
}

//! `make demo`: the whole system on loopback (see `mla_e2e::world`): master, seed and
//! user-cluster control planes, the three binaries under their RBAC, the Grafana API test
//! server, a recording backend, and for the sample cluster a real nginx gateway and a real
//! Prometheus agent pushing through it. Runs until SIGTERM/SIGINT; everything it started
//! stops with it.
//!
//! Usage: mla-demo <state-dir>   (hack/demo.sh runs it in the background)

use std::path::PathBuf;
use std::time::Duration;

use mla_e2e::eventually;
use mla_e2e::world::{GRAFANA_ADMIN, World, WorldOptions};

const CLUSTER: &str = "demo-cluster";
const PROJECT: &str = "demo-project";

fn say(message: &str) {
    eprintln!("[demo] {message}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".demo".into()));
    std::fs::create_dir_all(&state)?;
    let state = state.canonicalize()?;

    let world = World::start(WorldOptions {
        seed_replicas: 1,
        resync_period: Duration::from_secs(60),
        dir: Some(state.clone()),
        ..Default::default()
    })
    .await?;

    say("creating a sample Project with two members, an admin, and an MLA-enabled Cluster");
    world
        .create_project(
            PROJECT,
            "Demo",
            &[("jane", "jane@example.com", "owners"), ("joe", "joe@example.com", "viewers")],
        )
        .await?;
    world.create_user("admin", "admin@example.com", true).await?;
    world.create_cluster(CLUSTER, PROJECT, true, true, true).await?;

    say("running the user-cluster manager the seed manager deployed for the cluster");
    world.run_user_manager(CLUSTER).await?;
    say("running the cluster's gateway (nginx, with the config and certificates from the seed)");
    let gateway = world.run_gateway(CLUSTER).await?;
    say("running the cluster's Prometheus agent (config and client certificate from the user cluster)");
    world.run_agent(CLUSTER).await?;
    say("waiting for the agent's first samples to arrive under the cluster's tenant");
    let query = format!("{}/api/v1/query?query=count%20by%20(cluster)(up)", world.backend.receiver_url());
    eventually("the first samples", Duration::from_secs(120), || {
        let query = query.clone();
        async move {
            let body = reqwest::get(&query).await?.text().await?;
            Ok(body.contains(CLUSTER).then_some(()))
        }
    })
    .await?;

    let info = summary(&world, gateway.read_port);
    std::fs::write(state.join("info.txt"), &info)?;
    std::fs::write(state.join("ready"), "")?;
    println!("{info}");

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    say("stopping");
    drop(world);
    let _ = std::fs::remove_file(state.join("ready"));
    Ok(())
}

fn summary(world: &World, read_port: u16) -> String {
    let master = world.master.admin_kubeconfig().display().to_string();
    let seed = world.seed.admin_kubeconfig().display().to_string();
    let user = world.user.admin_kubeconfig().display().to_string();
    let mut out = String::from("MLA controllers demo is running.\n\nControl planes (admin kubeconfigs):\n");
    for plane in [&world.master, &world.seed, &world.user] {
        out.push_str(&format!("  {:<7} {}  {}\n", plane.name(), plane.url(), plane.admin_kubeconfig().display()));
    }
    out.push_str("\nBinaries (admin server: /livez /readyz /metrics; logs in the state directory):\n");
    for binary in std::iter::once(&world.master_manager).chain(&world.seed_managers) {
        out.push_str(&format!("  {:<34} {}/metrics\n", binary.name, binary.admin));
    }
    if let Ok(users) = world.user_managers.try_lock() {
        for binary in users.values() {
            out.push_str(&format!("  {:<34} {}/metrics\n", binary.name, binary.admin));
        }
    }
    out.push_str(&format!(
        "\nTry (kubectl from hack/build-control-plane.sh's bin directory, or any kubectl):\n  \
         kubectl --kubeconfig {master} get seeds,projects,users,userprojectbindings -A\n  \
         kubectl --kubeconfig {seed} get clusters,projects,users\n  \
         kubectl --kubeconfig {seed} -n cluster-{CLUSTER} get secrets,configmaps,deployments,services,ingresses\n  \
         kubectl --kubeconfig {user} -n mla-system get deployments,daemonsets,secrets,configmaps\n\n\
         The cluster's metrics, arriving under its tenant:\n  \
         curl -s '{receiver}/api/v1/query?query=count%20by%20(cluster)(up)'\n  \
         curl -s {backend}/__received      # requests per tenant (X-Scope-OrgID) the gateway forwarded\n  \
         curl -s http://127.0.0.1:{read_port}/api/prom/api/v1/query?query=up   # the read path: recorded under the tenant by the backend\n\n\
         Grafana (API test server, admin {user_name}/{password}):\n  \
         curl -s -u {user_name}:{password} {grafana}/api/orgs\n\n\
         State and logs: {state}\nStop it all:    make demo-down\n",
        receiver = world.backend.receiver_url(),
        backend = world.backend.url(),
        grafana = world.grafana.url(),
        user_name = GRAFANA_ADMIN.0,
        password = GRAFANA_ADMIN.1,
        state = world.dir.display(),
    ));
    out
}

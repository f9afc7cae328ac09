//! `make demo`: the whole system on loopback (see `mla_e2e::world`): master, seed and
//! user-cluster control planes, the three binaries under their RBAC, the Grafana API test
//! server, real Cortex (Loki stand-ins for logs), and for the sample cluster a real nginx gateway and a real
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
    say("waiting for the agent's first samples in Cortex under the cluster's tenant (gateway read path)");
    let read_path = format!("http://127.0.0.1:{}/api/prom", gateway.read_port);
    let http = reqwest::Client::new();
    eventually("the first samples", Duration::from_secs(120), || {
        let (http, read_path) = (&http, &read_path);
        async move {
            // The gateway pins the tenant; the header sent here is overwritten.
            let result = mla_e2e::cortex::query(http, read_path, "ignored", "count by (cluster) (up)").await?;
            Ok((!result.is_empty()).then_some(()))
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
         The cluster's metrics in Cortex, under its tenant:\n  \
         curl -s 'http://127.0.0.1:{read_port}/api/prom/api/v1/query?query=count%20by%20(cluster)(up)'   # the gateway's read path\n  \
         curl -s -H 'X-Scope-OrgID: {CLUSTER}' '{cortex}/prometheus/api/v1/query?query=up'\n  \
         curl -s -H 'X-Scope-OrgID: {CLUSTER}' {cortex}/api/v1/alerts          # its Alertmanager configuration\n  \
         curl -s '{cortex}/runtime_config?mode=diff'                            # per-tenant limits in force\n  \
         curl -s {loki}/__received      # Loki stand-in: requests per tenant the gateway forwarded\n\n\
         Grafana (API test server, admin {user_name}/{password}):\n  \
         curl -s -u {user_name}:{password} {grafana}/api/orgs\n\n\
         State and logs: {state}\nStop it all:    make demo-down\n",
        cortex = world.cortex.url(),
        loki = world.loki.url(),
        grafana = world.grafana.url(),
        user_name = GRAFANA_ADMIN.0,
        password = GRAFANA_ADMIN.1,
        state = world.dir.display(),
    ));
    out
}

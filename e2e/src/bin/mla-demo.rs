//! `make demo`: a master, a seed and a user-cluster control plane on loopback, the CRDs
//! installed, a sample Seed, Project, User, binding and Cluster, and the three binaries
//! running against them. Runs until SIGTERM/SIGINT; everything it started stops with it.
//!
//! Usage: mla-demo <state-dir>   (hack/demo.sh runs it in the background)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use mla_common::api::*;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port};

struct Binary {
    name: &'static str,
    admin: String,
    _process: ManagedProcess,
}

fn say(message: &str) {
    eprintln!("[demo] {message}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".demo".into()));
    std::fs::create_dir_all(&state)?;
    let state = state.canonicalize()?;
    let bin_dir = std::env::current_exe()?.parent().map(Path::to_path_buf).context("binary directory")?;

    say("starting master, seed and user-cluster control planes (etcd + kube-apiserver each)");
    let (master, seed, user) = tokio::try_join!(
        ControlPlane::start_in("master", &state),
        ControlPlane::start_in("seed", &state),
        ControlPlane::start_in("user", &state),
    )?;
    say("installing CRDs into master and seed");
    tokio::try_join!(master.install_crds(), seed.install_crds())?;

    say("creating a sample Seed, Project, User, UserProjectBinding and Cluster");
    sample_objects(&master, &seed).await?;

    say("starting the three binaries");
    let mut binaries = Vec::new();
    binaries.push(start(
        &bin_dir,
        &state,
        "master-controller-manager",
        &master,
        &["--seed-namespace=kubermatic", "--leader-election-namespace=kube-system"],
    )?);
    binaries.push(start(
        &bin_dir,
        &state,
        "seed-controller-manager",
        &seed,
        &["--leader-election-namespace=kube-system", "--enable-user-cluster-mla=true"],
    )?);
    let user_kubeconfig = format!("--user-cluster-kubeconfig={}", user.admin_kubeconfig().display());
    binaries.push(start(
        &bin_dir,
        &state,
        "user-cluster-controller-manager",
        &seed,
        &["--cluster-name=demo-cluster", "--leader-election-namespace=cluster-demo-cluster", &user_kubeconfig],
    )?);
    for binary in &binaries {
        let url = format!("{}/readyz", binary.admin);
        eventually(&format!("{} to be ready", binary.name), Duration::from_secs(60), || {
            let url = url.clone();
            async move {
                let ok = reqwest::get(&url).await.map(|r| r.status().is_success()).unwrap_or(false);
                Ok(ok.then_some(()))
            }
        })
        .await?;
    }

    let info = summary(&state, [&master, &seed, &user], &binaries);
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
    drop(binaries);
    drop((master, seed, user));
    let _ = std::fs::remove_file(state.join("ready"));
    Ok(())
}

fn start(
    bin_dir: &Path,
    state: &Path,
    name: &'static str,
    plane: &ControlPlane,
    extra: &[&str],
) -> anyhow::Result<Binary> {
    let port = free_port()?;
    let mut command = Command::new(bin_dir.join(name));
    command
        .arg(format!("--kubeconfig={}", plane.admin_kubeconfig().display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .args(extra)
        .env("MLA_LOG_LEVEL", "info,kube=warn");
    let process = ManagedProcess::spawn(name, command, &state.join(format!("{name}.log")))
        .with_context(|| format!("run `cargo build --bins` first: {name} not found in {}", bin_dir.display()))?;
    Ok(Binary { name, admin: format!("http://127.0.0.1:{port}"), _process: process })
}

async fn sample_objects(master: &ControlPlane, seed: &ControlPlane) -> anyhow::Result<()> {
    let apply = PatchParams::apply("mla-demo").force();
    let namespace = |name: &str| Namespace { metadata: named(name), ..Default::default() };
    Api::<Namespace>::all(master.client()).patch("kubermatic", &apply, &Patch::Apply(namespace("kubermatic"))).await?;
    let kubeconfig = std::fs::read_to_string(seed.admin_kubeconfig())?;
    let secret = Secret {
        metadata: named("seed-kubeconfig"),
        string_data: Some([("kubeconfig".to_string(), kubeconfig)].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(master.client(), "kubermatic")
        .patch("seed-kubeconfig", &apply, &Patch::Apply(secret))
        .await?;
    let seed_object = Seed::new(
        "demo-seed",
        SeedSpec {
            kubeconfig: ObjectReference { name: Some("seed-kubeconfig".into()), ..Default::default() },
            expose_strategy: Some(ExposeStrategy::NodePort),
            mla: Some(SeedMLASettings { user_cluster_mla_enabled: true }),
        },
    );
    Api::<Seed>::namespaced(master.client(), "kubermatic")
        .patch("demo-seed", &apply, &Patch::Apply(seed_object))
        .await?;
    Api::<Project>::all(master.client())
        .patch("demo-project", &apply, &Patch::Apply(Project::new("demo-project", ProjectSpec { name: "Demo".into() })))
        .await?;
    let user = User::new("demo-user", UserSpec { email: "jane@example.com".into(), name: "Jane".into(), admin: false });
    Api::<User>::all(master.client()).patch("demo-user", &apply, &Patch::Apply(user)).await?;
    let binding = UserProjectBinding::new(
        "demo-binding",
        UserProjectBindingSpec {
            user_email: "jane@example.com".into(),
            project_id: "demo-project".into(),
            group: "owners-demo-project".into(),
        },
    );
    Api::<UserProjectBinding>::all(master.client()).patch("demo-binding", &apply, &Patch::Apply(binding)).await?;

    Api::<Namespace>::all(seed.client())
        .patch("cluster-demo-cluster", &apply, &Patch::Apply(namespace("cluster-demo-cluster")))
        .await?;
    let mut cluster = Cluster::new(
        "demo-cluster",
        ClusterSpec {
            human_readable_name: Some("demo".into()),
            expose_strategy: Some(ExposeStrategy::NodePort),
            mla: Some(MLASettings { monitoring_enabled: true, logging_enabled: true, ..Default::default() }),
        },
    );
    cluster.metadata.labels = Some([(PROJECT_ID_LABEL.to_string(), "demo-project".to_string())].into());
    let clusters = Api::<Cluster>::all(seed.client());
    clusters.patch("demo-cluster", &apply, &Patch::Apply(cluster)).await?;
    // What KKP's own controllers would report: the namespace and the address.
    let status = serde_json::json!({"status": {"namespaceName": "cluster-demo-cluster",
        "address": {"externalName": "demo-cluster.seed.localhost", "ip": "127.0.0.1", "port": 6443}}});
    clusters.patch_status("demo-cluster", &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), ..Default::default() }
}

fn summary(state: &Path, planes: [&ControlPlane; 3], binaries: &[Binary]) -> String {
    let mut out = String::from("MLA controllers demo is running.\n\nControl planes (admin kubeconfigs):\n");
    for plane in planes {
        out.push_str(&format!(
            "  {:<7} {}   kubectl --kubeconfig {} get all -A\n",
            plane.name(),
            plane.url(),
            plane.admin_kubeconfig().display()
        ));
    }
    out.push_str("\nBinaries (admin server: /livez /readyz /metrics; logs in the state directory):\n");
    for binary in binaries {
        out.push_str(&format!("  {:<32} {}/metrics\n", binary.name, binary.admin));
    }
    let master = planes[0].admin_kubeconfig().display().to_string();
    let seed = planes[1].admin_kubeconfig().display().to_string();
    out.push_str(&format!(
        "\nTry:\n  kubectl --kubeconfig {master} get seeds,projects,users,userprojectbindings -A\n  \
         kubectl --kubeconfig {seed} get clusters\n  \
         kubectl --kubeconfig {seed} -n cluster-demo-cluster get secrets,configmaps,deployments,services\n  \
         curl -s {}/readyz\n\n\
         State and logs: {}\nStop it all:    make demo-down\n",
        binaries.first().map(|b| b.admin.as_str()).unwrap_or_default(),
        state.display()
    ));
    out
}

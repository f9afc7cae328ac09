//! The kustomize bases in `manifests/` as an operator uses them: `kubectl kustomize`
//! renders each, a real kube-apiserver accepts what they render (strict field
//! validation), the Deployments run the binaries this workspace builds with flags and
//! environment variables those binaries accept, and the binaries expose exactly the metric
//! families `manifests/monitoring/metrics.txt` lists (which hack/check-monitoring.sh holds
//! the dashboard and the alert rules to).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port, workspace_root};
use serde::Deserialize;

/// The binaries and their crates (one binary per crate, named alike).
const BINARIES: [&str; 3] = ["master-controller-manager", "seed-controller-manager", "user-cluster-controller-manager"];

/// Every kustomize base, relative to `manifests/` ("" is the top level).
const BASES: [&str; 6] = [
    "",
    "crds",
    "master-controller-manager",
    "seed-controller-manager",
    "user-cluster-controller-manager",
    "monitoring",
];

/// YAML files in a base directory that are deliberately not among its resources.
const NOT_RESOURCES: [&str; 1] = [
    // Applied in each seed, not in the master.
    "master-controller-manager/seed-rbac.yaml",
];

/// kubectl of the same Kubernetes version as the test API servers, built beside them.
fn kubectl() -> PathBuf {
    let dir = mla_e2e::control_plane::binaries().expect("control-plane binaries (hack/build-control-plane.sh)");
    let kubectl = dir.join("kubectl");
    assert!(kubectl.exists(), "no kubectl in {}: hack/build-control-plane.sh builds it there", dir.display());
    kubectl
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn manifests() -> PathBuf {
    workspace_root().join("manifests")
}

/// `kubectl kustomize manifests/<base>`, as documents.
fn kustomize(base: &str) -> Vec<serde_yaml::Value> {
    let output = run(Command::new(kubectl()).arg("kustomize").arg(manifests().join(base)));
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

/// `Kind namespace/name` of a rendered object.
fn id(object: &serde_yaml::Value) -> String {
    let field = |path: &[&str]| {
        path.iter().try_fold(object, |v, key| v.get(key)).and_then(|v| v.as_str()).unwrap_or_default().to_string()
    };
    format!("{} {}/{}", field(&["kind"]), field(&["metadata", "namespace"]), field(&["metadata", "name"]))
}

fn deployments(base: &str) -> Vec<Deployment> {
    kustomize(base)
        .into_iter()
        .filter(|o| o.get("kind").and_then(|k| k.as_str()) == Some("Deployment"))
        .map(|o| serde_yaml::from_value(o).unwrap())
        .collect()
}

/// A binary of this workspace, from the target directory this test runs from (where
/// `cargo test --workspace` has put it); built when missing.
fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/manifests-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let path = profile_dir.join(name);
    static BUILT: OnceLock<()> = OnceLock::new();
    if !path.exists() {
        BUILT.get_or_init(|| {
            let target_dir = profile_dir.parent().unwrap();
            let mut build = Command::new(env!("CARGO"));
            build.current_dir(workspace_root()).env("CARGO_TARGET_DIR", target_dir).args(["build", "--bins"]);
            for binary in BINARIES {
                build.args(["-p", binary]);
            }
            run(&mut build);
        });
    }
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// The long flags and environment variables `binary --help` documents, and the defaults
/// by flag.
struct Help {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
    defaults: BTreeMap<String, String>,
}

fn help(name: &str) -> Help {
    let output = Command::new(binary_path(name)).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{name} --help failed ({}):\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut help = Help { flags: BTreeSet::new(), env: BTreeSet::new(), defaults: BTreeMap::new() };
    let mut current = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--").or_else(|| trimmed.split_once(", --").map(|(_, r)| r)) {
            let flag: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            help.flags.insert(flag.clone());
            current = Some(flag);
        }
        for (marker, end) in [("[env: ", "="), ("[default: ", "]")] {
            let Some(start) = line.find(marker) else { continue };
            let value: String = line[start + marker.len()..].split(end).next().unwrap_or_default().to_string();
            match (marker, &current) {
                ("[env: ", _) => {
                    help.env.insert(value);
                }
                (_, Some(flag)) => {
                    help.defaults.insert(flag.clone(), value);
                }
                _ => {}
            }
        }
    }
    assert!(help.flags.contains("kubeconfig"), "{name} --help lists no --kubeconfig:\n{text}");
    help
}

#[test]
fn every_base_renders_and_lists_every_file_in_its_directory() {
    for base in BASES {
        let objects = kustomize(base);
        assert!(!objects.is_empty(), "manifests/{base} renders nothing");
        for object in &objects {
            let id = id(object);
            assert!(object.get("apiVersion").and_then(|v| v.as_str()).is_some(), "{base}: {id} has no apiVersion");
            assert!(!id.ends_with('/'), "{base}: an object without a name: {id}");
        }
        let ids: BTreeSet<String> = objects.iter().map(id).collect();
        assert_eq!(ids.len(), objects.len(), "manifests/{base} renders an object twice");
    }

    // The top level is exactly the CRDs and the master and seed bases.
    let top: BTreeSet<String> = kustomize("").iter().map(id).collect();
    let parts: BTreeSet<String> = ["crds", "master-controller-manager", "seed-controller-manager"]
        .iter()
        .flat_map(|base| kustomize(base).iter().map(id).collect::<Vec<_>>())
        .collect();
    assert_eq!(top, parts);

    // A manifest added to a base directory (e.g. more RBAC for a new controller) is also
    // added to its kustomization.yaml, or it would never be installed.
    for base in ["crds", "master-controller-manager", "seed-controller-manager", "user-cluster-controller-manager"] {
        let dir = manifests().join(base);
        let kustomization: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap();
        let resources: BTreeSet<&str> =
            kustomization["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let listed_elsewhere = NOT_RESOURCES.contains(&format!("{base}/{file}").as_str());
            if file.ends_with(".yaml") && file != "kustomization.yaml" && !listed_elsewhere {
                assert!(resources.contains(file.as_str()), "manifests/{base}/{file} is not in its kustomization.yaml");
            }
        }
    }
}

#[tokio::test]
async fn a_real_api_server_accepts_every_base() -> anyhow::Result<()> {
    let plane = ControlPlane::start("manifests").await?;
    let kubeconfig = plane.admin_kubeconfig().to_path_buf();
    // Neither is created by the bases (docs/install.md): `kubermatic` is KKP's, `mla` the
    // MLA stack's, where the Grafana controller's Role lives.
    for namespace in ["kubermatic", "mla"] {
        ensure_namespace(&plane.client(), namespace).await?;
    }
    let kubectl = |args: &[&str]| {
        let mut command = Command::new(kubectl());
        command.arg(format!("--kubeconfig={}", kubeconfig.display())).args(args);
        String::from_utf8(run(&mut command).stdout).unwrap()
    };
    let path = |base: &str| manifests().join(base).display().to_string();

    // The top level for real: CRDs, RBAC, Deployments, Services (unknown fields are
    // rejected: kubectl asks for strict validation).
    let applied = kubectl(&["apply", "--server-side", "--field-manager=mla-install", "-k", &path("")]);
    assert_eq!(applied.lines().count(), kustomize("").len(), "{applied}");
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client());
    eventually("the CRDs established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let list = crds.list(&Default::default()).await?;
            let established = list
                .items
                .iter()
                .filter(|crd| crd.spec.group == "kubermatic.k8c.io")
                .filter(|crd| {
                    crd.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                        conditions.iter().any(|c| c.type_ == "Established" && c.status == "True")
                    })
                })
                .count();
            Ok((established == kustomize("crds").len()).then_some(()))
        }
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(plane.client(), "kubermatic");
    for name in ["master-controller-manager", "seed-controller-manager"] {
        assert!(deployments.get_opt(name).await?.is_some(), "Deployment {name}");
    }
    // Applying again changes nothing.
    let generation = deployments.get("seed-controller-manager").await?.metadata.generation;
    kubectl(&["apply", "--server-side", "--field-manager=mla-install", "-k", &path("")]);
    assert_eq!(deployments.get("seed-controller-manager").await?.metadata.generation, generation);

    // What goes elsewhere (a seed, a user cluster, the monitoring namespace), dry-run.
    for base in ["user-cluster-controller-manager", "monitoring"] {
        kubectl(&["apply", "--server-side", "--dry-run=server", "-n", "default", "-k", &path(base)]);
    }
    kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &path("master-controller-manager/seed-rbac.yaml")]);

    // The objects hack/kind-e2e.sh creates (it cannot run here) fit the CRDs.
    let script = std::fs::read_to_string(workspace_root().join("hack/kind-e2e.sh"))?;
    let mut documents = Vec::new();
    let mut current: Option<String> = None;
    for line in script.lines() {
        match &mut current {
            None if line.ends_with("<<'YAML'") || line.ends_with("<<YAML") => current = Some(String::new()),
            Some(text) if line == "YAML" => {
                if text.starts_with("apiVersion: kubermatic.k8c.io/") {
                    documents.push(text.clone());
                }
                current = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert_eq!(documents.len(), 3, "the Seed, the master objects and the Cluster in hack/kind-e2e.sh");
    for (index, document) in documents.iter().enumerate() {
        let file = plane.dir().join(format!("kind-e2e-{index}.yaml"));
        std::fs::write(&file, document)?;
        kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &file.display().to_string()]);
    }
    Ok(())
}

#[test]
fn deployments_run_the_shipped_binaries_with_flags_and_env_they_accept() {
    let mut seen = BTreeSet::new();
    for deployment in deployments("") {
        let name = deployment.metadata.name.clone().unwrap();
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.security_context.as_ref().and_then(|s| s.run_as_non_root),
            Some(true),
            "{name}: runs as non-root"
        );
        for container in &pod.containers {
            let binary = container.name.as_str();
            assert!(BINARIES.contains(&binary), "{name}: container {binary} is not one of our binaries");
            seen.insert(binary.to_string());
            let image = container.image.clone().unwrap_or_default();
            assert!(image.starts_with(&format!("mla-controllers/{binary}:")), "{name}: image {image}");
            let help = help(binary);
            let args = container.args.clone().unwrap_or_default();
            for arg in &args {
                let flag = arg
                    .strip_prefix("--")
                    .and_then(|a| a.split_once('='))
                    .map(|(flag, _)| flag)
                    .unwrap_or_else(|| panic!("{name}: argument {arg:?} is not --flag=value"));
                assert!(help.flags.contains(flag), "{name}: {binary} has no flag --{flag} (it has {:?})", help.flags);
            }
            for env in container.env.clone().unwrap_or_default() {
                // POD_NAME and POD_NAMESPACE are read for the lease identity and namespace.
                assert!(
                    help.env.contains(&env.name) || ["POD_NAME", "POD_NAMESPACE"].contains(&env.name.as_str()),
                    "{name}: {binary} reads no environment variable {} (it reads {:?})",
                    env.name,
                    help.env
                );
            }
            // The admin port the probes and the Service use is the one the binary serves.
            let admin_addr = args
                .iter()
                .find_map(|a| a.strip_prefix("--admin-addr="))
                .map(str::to_string)
                .or_else(|| help.defaults.get("admin-addr").cloned())
                .expect("an admin address");
            let admin_port: i32 = admin_addr.rsplit_once(':').unwrap().1.parse().unwrap();
            let ports = container.ports.clone().unwrap_or_default();
            let admin = ports.iter().find(|p| p.name.as_deref() == Some("admin")).expect("a port named admin");
            assert_eq!(admin.container_port, admin_port, "{name}: admin port");
            let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
                probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
            };
            assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/livez"), "{name}");
            assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"), "{name}");
        }
    }
    assert_eq!(seen, BTreeSet::from(["master-controller-manager".into(), "seed-controller-manager".into()]));
}

/// Families every binary has a sample of from its start.
const ALWAYS_PRESENT: &[&str] = &[
    "mla_build_info",
    "mla_leader",
    "mla_leader_transitions_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
];

/// The metric families of one binary in metrics.txt: family -> type.
fn listed_metrics(binary: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(manifests().join("monitoring/metrics.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [b, family, kind] if b == binary => Some((family.to_string(), kind.to_string())),
            _ => None,
        })
        .collect()
}

/// The families a /metrics text (Prometheus format) declares: family -> type.
fn declared_metrics(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(family, kind)| (family.to_string(), kind.trim().to_string()))
        .collect()
}

#[tokio::test]
async fn running_binaries_expose_only_metric_families_listed_in_metrics_txt() -> anyhow::Result<()> {
    let plane = ControlPlane::start("metrics").await?;
    plane.install_crds().await?;
    for namespace in ["kubermatic", "cluster-c1"] {
        ensure_namespace(&plane.client(), namespace).await?;
    }
    let kubeconfig = plane.admin_kubeconfig().display().to_string();
    let deployment_args: BTreeMap<String, Vec<String>> = deployments("")
        .into_iter()
        .map(|d| {
            let container = d.spec.unwrap().template.spec.unwrap().containers.remove(0);
            (container.name, container.args.unwrap_or_default())
        })
        .collect();
    for binary in BINARIES {
        let args = match deployment_args.get(binary) {
            Some(args) => args.clone(),
            // Started by seed-controller-manager with these flags (src/usercluster.rs); the
            // user cluster is the same API server here.
            None => vec![
                "--cluster-name=c1".into(),
                "--cluster-namespace=cluster-c1".into(),
                format!("--user-cluster-kubeconfig={kubeconfig}"),
                "--leader-election-namespace=cluster-c1".into(),
                "--log-format=json".into(),
            ],
        };
        let port = free_port()?;
        let mut command = Command::new(binary_path(binary));
        command
            .args(&args)
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--admin-addr=127.0.0.1:{port}"))
            .env("POD_NAME", format!("{binary}-0"))
            .env("POD_NAMESPACE", "kubermatic");
        let log = plane.dir().join(format!("{binary}.log"));
        let process = std::sync::Mutex::new(ManagedProcess::spawn(binary, command, &log)?);
        let listed = listed_metrics(binary);
        assert!(!listed.is_empty(), "metrics.txt lists nothing for {binary}");
        let readyz = format!("http://127.0.0.1:{port}/readyz");
        let ready = eventually(&format!("{binary} to be ready"), Duration::from_secs(60), || {
            let readyz = readyz.clone();
            if let Some(status) = process.lock().unwrap().try_wait().unwrap() {
                panic!("{binary} exited ({status}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            async move { Ok(reqwest::get(&readyz).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await;
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Err(error) = ready {
            panic!("{binary}: {error:#}\nlog:\n{}", log_text());
        }
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?.text().await?;
        let declared = declared_metrics(&text);
        // Families appear once they have a sample; an idle binary shows those that always
        // have one, and nothing that metrics.txt does not list.
        for (family, kind) in &declared {
            assert_eq!(listed.get(family), Some(kind), "{binary}: {family} ({kind}) is not in metrics.txt");
        }
        for family in ALWAYS_PRESENT {
            assert!(declared.contains_key(*family), "{binary}: no {family} in /metrics:\n{text}\nlog:\n{}", log_text());
        }
    }
    Ok(())
}

/// Rust sources below `dir`, concatenated.
fn sources(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

#[test]
fn every_family_in_metrics_txt_is_registered_by_its_binary() {
    // Families without samples are not exposed yet, so this looks at the registrations:
    // `registry.register("<name>", ...)` in a sub-registry `mla[_<prefix>]`, with `_total`
    // added to counters and `_seconds` for the unit.
    let common = sources(&workspace_root().join("common/src"));
    for binary in BINARIES {
        let code = format!("{common}{}", sources(&workspace_root().join(binary).join("src")));
        let prefixes: Vec<String> = code
            .match_indices("metrics.register(\"")
            .filter_map(|(at, m)| code[at + m.len()..].split('"').next())
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}_"))
            .chain(std::iter::once(String::new()))
            .collect();
        for family in listed_metrics(binary).keys() {
            let base = family.strip_suffix("_total").unwrap_or(family);
            let name = base.strip_prefix("mla_").unwrap_or(base);
            let registered = [name, name.strip_suffix("_seconds").unwrap_or(name)].iter().any(|name| {
                prefixes.iter().any(|prefix| {
                    name.strip_prefix(prefix.as_str()).is_some_and(|rest| code.contains(&format!("\"{rest}\"")))
                })
            });
            assert!(registered, "{binary}: {family} from metrics.txt is registered nowhere in its sources");
        }
    }
}

#[test]
fn the_dockerfile_has_a_stage_per_binary_and_pulls_nothing() {
    // e2e/tests/images.rs builds and runs the images where Docker answers; this holds the
    // Dockerfile to its shape everywhere: a stage per binary that copies and runs that
    // binary, the final stage chosen by BINARY, no base image but scratch (no registry).
    let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    for binary in BINARIES {
        let stage = stages
            .iter()
            .find(|s| s.starts_with(&format!("scratch AS {binary}\n")))
            .unwrap_or_else(|| panic!("Dockerfile has no stage `FROM scratch AS {binary}`"));
        for expected in [format!("COPY {binary} /{binary}\n"), format!("ENTRYPOINT [\"/{binary}\"]")] {
            assert!(stage.contains(&expected), "stage {binary} lacks {expected:?}");
        }
        let other = BINARIES.iter().filter(|b| **b != binary).find(|b| stage.contains(*b));
        assert_eq!(other, None, "stage {binary} names another binary");
    }
    let last = stages.last().unwrap();
    assert!(last.starts_with("${BINARY}\n"), "the last stage is chosen by BINARY: {last:?}");
    assert!(last.contains("USER 65532:65532"), "the image runs as 65532");
    for line in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        assert!(line.starts_with("FROM scratch AS ") || line == "FROM ${BINARY}", "{line:?} would pull an image");
    }
    assert!(!dockerfile.contains("# syntax"), "a syntax directive makes BuildKit pull its frontend");
    for binary in BINARIES {
        assert!(!workspace_root().join(binary).join("Dockerfile").exists(), "{binary}/Dockerfile is gone: one Dockerfile");
    }
}

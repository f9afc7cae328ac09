//! The whole system on loopback, as the end-to-end suite and `make demo` run it: master,
//! seed and user-cluster control planes; the three binaries as processes with the
//! ServiceAccounts and RBAC of `manifests/`; real Cortex (one process: distributor, query
//! frontend, ruler, Alertmanager) with its runtime configuration mounted from the seed's
//! ConfigMap; the Grafana API test server; stand-ins for Loki (AGPL: may not be built
//! here) for logs (a recording distributor and query frontend, the ruler of the
//! configuration test server); and, per cluster, real nginx running exactly the gateway
//! configuration and certificates the seed manager wrote (listen addresses and file paths
//! adapted, the cluster-DNS resolver dropped), and a Prometheus 3 agent running the
//! configuration the user-cluster manager wrote unmodified, in a private mount namespace
//! laid out like its pod, its Kubernetes discovery against the user cluster's API server
//! (`crate::agent`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use mla_common::api::{
    Cluster, ClusterSpec, ExposeStrategy, MLASettings, PROJECT_ID_LABEL, Project, ProjectSpec, User,
    UserProjectBinding, UserProjectBindingSpec, UserSpec,
};
use tokio::sync::Mutex;

use crate::backend::RecordingBackend;
use crate::cortex::{Cortex, CortexServer};
use crate::grafana::GrafanaServer;
use crate::{ControlPlane, Identity, ManagedProcess, apply_manifest, eventually, free_port, master, workspace_root};

/// Grafana's admin credentials in the test server and in Secret `mla/grafana`.
pub const GRAFANA_ADMIN: (&str, &str) = ("admin", "e2e-admin-password");
/// The IAPs' OIDC client (id, secret) at the mock provider; the secret is in Secret
/// `mla/mla-iap-oidc`.
pub const IAP_CLIENT: (&str, &str) = ("mla-iap", "e2e-client-secret");
/// The Seed's name in the master.
pub const SEED: &str = "e2e-seed";
/// Namespace of the shared MLA stack in the seed.
pub const MLA_NAMESPACE: &str = "mla";
/// Namespace of the binaries (and their Leases) in master and seed.
pub const NAMESPACE: &str = "kubermatic";
/// The identity the user-cluster manager has in the user cluster
/// (`manifests/user-cluster-controller-manager/user-cluster-rbac.yaml`).
pub const USER_CLUSTER_IDENTITY: &str = "mla-user-cluster-controller-manager";

/// Cortex's runtime configuration ConfigMap in the MLA namespace, and its key (the seed
/// manager's defaults, KKP's names).
pub const RUNTIME_CONFIG_MAP: &str = "cortex-runtime-config";
/// See [`RUNTIME_CONFIG_MAP`].
pub const RUNTIME_CONFIG_KEY: &str = "runtime_config.yaml";

/// How the world is started.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Replicas of seed-controller-manager (leader election on when more than one).
    pub seed_replicas: usize,
    /// `--resync-period` of the binaries.
    pub resync_period: Duration,
    /// Where state and logs go; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// A directory of KKP's own CRDs to install instead of `manifests/crds/`
    /// (`mla_e2e::kkp::crds_dir`); Clusters are then made with every field KKP requires.
    pub kkp_crds: Option<PathBuf>,
    /// Further arguments of every seed-controller-manager replica.
    pub seed_args: Vec<String>,
    /// The user cluster's namespace for the agents (`--user-cluster-agents-namespace`).
    pub agents_namespace: String,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            seed_replicas: 1,
            resync_period: Duration::from_secs(30),
            dir: None,
            kkp_crds: None,
            seed_args: Vec::new(),
            agents_namespace: "mla-system".into(),
        }
    }
}

/// One binary, restarted when it exits as a kubelet restarts a pod's container (the
/// binaries exit on purpose when they lose their lease).
#[derive(Debug)]
pub struct Binary {
    /// Its name.
    pub name: String,
    /// Base URL of its admin server (`/livez`, `/readyz`, `/metrics`).
    pub admin: String,
    process: Arc<std::sync::Mutex<ManagedProcess>>,
    restarts: Arc<std::sync::atomic::AtomicU32>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl Binary {
    /// Whether `/metrics` reports `mla_leader 1`.
    pub async fn is_leader(&self) -> bool {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.admin)).await else { return false };
        let text = response.text().await.unwrap_or_default();
        text.lines().any(|l| l.starts_with("mla_leader ") && l.trim_end().ends_with(" 1"))
    }

    /// Whether `/readyz` answers 200.
    pub async fn is_ready(&self) -> bool {
        reqwest::get(format!("{}/readyz", self.admin)).await.is_ok_and(|r| r.status().is_success())
    }

    /// Kills the process (SIGKILL); it is restarted a second later.
    pub fn kill(&self) {
        self.process.lock().unwrap_or_else(|p| p.into_inner()).kill();
    }

    /// How often the process was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A gateway of one cluster: nginx on loopback, kept in step with the ConfigMap and
/// certificates Secret in the seed (files rewritten and nginx reloaded on change, as the
/// gateway's Deployment does).
#[derive(Debug)]
pub struct Gateway {
    /// Port of the mTLS write path (8080 in the pod).
    pub write_port: u16,
    /// Port of the read path (8081 in the pod).
    pub read_port: u16,
    /// Where its files are.
    pub dir: PathBuf,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

/// The agent of one cluster: Prometheus in agent mode.
#[derive(Debug)]
pub struct Agent {
    /// Port of its web listener (on `address`).
    pub port: u16,
    /// Its own loopback address (see `crate::agent`).
    pub address: std::net::Ipv4Addr,
    _agent: crate::agent::RunningAgent,
}

/// Everything running.
pub struct World {
    /// The master cluster.
    pub master: ControlPlane,
    /// The seed cluster.
    pub seed: ControlPlane,
    /// The (one) user cluster.
    pub user: ControlPlane,
    /// Grafana.
    pub grafana: GrafanaServer,
    /// The OIDC provider the IAPs sign users in with (a mock; the seed manager's issuer).
    pub oidc: crate::iap::MockOidc,
    /// Real Cortex: distributor, query frontend, ruler and Alertmanager of every tenant.
    pub cortex: Cortex,
    /// Loki stand-in for logs: distributor and query frontend (recording).
    pub loki: RecordingBackend,
    /// Loki stand-in for logs: the ruler (the configuration test server's Loki routes).
    pub loki_ruler: CortexServer,
    /// Keeps Cortex's runtime configuration file equal to the seed's ConfigMap.
    runtime_config_mount: tokio::task::JoinHandle<()>,
    /// master-controller-manager.
    pub master_manager: Binary,
    /// seed-controller-manager replicas.
    pub seed_managers: Vec<Binary>,
    /// user-cluster-controller-manager per cluster.
    pub user_managers: Mutex<BTreeMap<String, Binary>>,
    /// Gateways per cluster.
    pub gateways: Mutex<BTreeMap<String, Arc<Gateway>>>,
    /// Agents per cluster.
    pub agents: Mutex<BTreeMap<String, Agent>>,
    /// State directory.
    pub dir: PathBuf,
    /// Whether KKP's CRDs are installed (objects are made as KKP makes them).
    pub kkp: bool,
    /// The user cluster's namespace for the agents.
    pub agents_namespace: String,
}

impl Drop for World {
    fn drop(&mut self) {
        self.runtime_config_mount.abort();
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn say(message: &str) {
    eprintln!("[world] {message}");
}

fn apply_params() -> PatchParams {
    PatchParams::apply("mla-e2e").force()
}

/// The directory the binaries were built into (beside the test or demo executable).
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).context("executable directory")?;
    // Test executables live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

impl World {
    /// Starts control planes, manifests, Grafana, the backend and the binaries.
    pub async fn start(options: WorldOptions) -> anyhow::Result<Self> {
        let dir = match &options.dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!("mla-world-{}-{:x}", std::process::id(), rand_suffix())),
        };
        std::fs::create_dir_all(&dir)?;
        let dir = dir.canonicalize()?;

        say("starting master, seed and user-cluster control planes (etcd + kube-apiserver each)");
        let (master, mut seed, mut user) = tokio::try_join!(
            ControlPlane::start_in("master", &dir),
            ControlPlane::start_in("seed", &dir),
            ControlPlane::start_in("user", &dir),
        )?;
        // The seed's children carry ownerReferences: deleting a Cluster relies on the
        // garbage collector, as in a real seed.
        seed.start_garbage_collector()?;
        if options.kkp_crds.is_some() {
            // KKP's user-cluster manager deletes namespaces there; let them go as they would.
            user.start_garbage_collector()?;
        }
        say("installing CRDs and the RBAC of manifests/");
        match &options.kkp_crds {
            Some(dir) => tokio::try_join!(master.install_crds_from(dir), seed.install_crds_from(dir))?,
            None => tokio::try_join!(master.install_crds(), seed.install_crds())?,
        };
        master::prepare_master(&master).await?;
        for plane in [&master, &seed] {
            master::ensure_namespace(&plane.client(), NAMESPACE).await?;
        }
        master::ensure_namespace(&seed.client(), MLA_NAMESPACE).await?;
        crate::apply_seed_manager_rbac(&seed.client()).await?;
        apply_manifest(
            &user.client(),
            &workspace_root().join("manifests/user-cluster-controller-manager/user-cluster-rbac.yaml"),
        )
        .await?;

        say("starting Cortex, the Grafana API test server and the Loki stand-ins");
        let grafana = GrafanaServer::start(GRAFANA_ADMIN.0, GRAFANA_ADMIN.1).await?;
        let oidc = crate::iap::MockOidc::start(&dir.join("oidc"), IAP_CLIENT.0, IAP_CLIENT.1).await?;
        let cortex = Cortex::start(&dir.join("cortex")).await?;
        say(&format!(
            "cortex ready {:.2} s after start, RSS {} MiB",
            cortex.started_in().as_secs_f64(),
            cortex.rss_kib().unwrap_or_default() / 1024
        ));
        let loki = RecordingBackend::start().await?;
        let loki_ruler = CortexServer::start().await?;
        // Cortex's runtime configuration, as the MLA stack installs it (empty), mounted
        // into Cortex as a kubelet would; the seed manager writes the tenants' limits.
        let runtime_config = ConfigMap {
            metadata: ObjectMeta { name: Some(RUNTIME_CONFIG_MAP.into()), ..Default::default() },
            data: Some(BTreeMap::from([(RUNTIME_CONFIG_KEY.to_string(), "overrides: {}\n".to_string())])),
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(seed.client(), MLA_NAMESPACE)
            .patch(RUNTIME_CONFIG_MAP, &apply_params(), &Patch::Apply(runtime_config))
            .await?;
        let runtime_config_mount =
            cortex.mount_config_map(seed.client(), MLA_NAMESPACE, RUNTIME_CONFIG_MAP, RUNTIME_CONFIG_KEY);
        let grafana_secret = Secret {
            metadata: ObjectMeta { name: Some("grafana".into()), ..Default::default() },
            string_data: Some(BTreeMap::from([
                ("admin-user".to_string(), GRAFANA_ADMIN.0.to_string()),
                ("admin-password".to_string(), GRAFANA_ADMIN.1.to_string()),
            ])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(seed.client(), MLA_NAMESPACE)
            .patch("grafana", &apply_params(), &Patch::Apply(grafana_secret))
            .await?;
        let iap_client_secret = Secret {
            metadata: ObjectMeta { name: Some("mla-iap-oidc".into()), ..Default::default() },
            string_data: Some(BTreeMap::from([("client-secret".to_string(), IAP_CLIENT.1.to_string())])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(seed.client(), MLA_NAMESPACE)
            .patch("mla-iap-oidc", &apply_params(), &Patch::Apply(iap_client_secret))
            .await?;

        say("registering the seed in the master");
        master::register_seed(&master, &seed, SEED).await?;

        say("starting master-controller-manager and seed-controller-manager");
        let bin = binary_dir()?;
        let resync = format!("--resync-period={}s", options.resync_period.as_secs().max(1));
        let master_kubeconfig = master.kubeconfig(&master::master_identity()).await?;
        let master_manager = spawn_binary(
            &bin,
            &dir,
            "master-controller-manager",
            "master-controller-manager",
            &master_kubeconfig,
            &[format!("--seed-namespace={NAMESPACE}"), format!("--leader-election-namespace={NAMESPACE}")],
        )?;
        let seed_identity =
            Identity::ServiceAccount { namespace: NAMESPACE.into(), name: "seed-controller-manager".into() };
        let seed_identity_kubeconfig = seed.kubeconfig(&seed_identity).await?;
        let mut seed_managers = Vec::new();
        for replica in 0..options.seed_replicas.max(1) {
            seed_managers.push(spawn_binary(
                &bin,
                &dir,
                &format!("seed-controller-manager-{replica}"),
                "seed-controller-manager",
                &seed_identity_kubeconfig,
                &[
                    seed_manager_args(
                        &cortex,
                        &loki,
                        &loki_ruler,
                        &grafana,
                        &oidc.issuer,
                        &resync,
                        options.seed_replicas,
                    ),
                    options.seed_args.clone(),
                    vec![format!("--user-cluster-agents-namespace={}", options.agents_namespace)],
                ]
                .concat(),
            )?);
        }
        let world = Self {
            master,
            seed,
            user,
            grafana,
            oidc,
            cortex,
            loki,
            loki_ruler,
            runtime_config_mount,
            master_manager,
            seed_managers,
            user_managers: Mutex::new(BTreeMap::new()),
            gateways: Mutex::new(BTreeMap::new()),
            agents: Mutex::new(BTreeMap::new()),
            dir,
            kkp: options.kkp_crds.is_some(),
            agents_namespace: options.agents_namespace.clone(),
        };
        for binary in std::iter::once(&world.master_manager).chain(&world.seed_managers) {
            wait_ready(binary).await?;
        }
        Ok(world)
    }

    /// Creates a Project, its Users and bindings in the master. `members` are
    /// `(user name, email, group prefix)`; the binding's group is `<prefix>-<project>`.
    pub async fn create_project(&self, id: &str, display: &str, members: &[(&str, &str, &str)]) -> anyhow::Result<()> {
        let client = self.master.client();
        Api::<Project>::all(client.clone())
            .patch(id, &apply_params(), &Patch::Apply(Project::new(id, ProjectSpec { name: display.into() })))
            .await?;
        for (name, email, group) in members {
            self.create_user(name, email, false).await?;
            self.bind(&format!("{id}-{name}"), email, id, group).await?;
        }
        Ok(())
    }

    /// Creates or updates a User in the master.
    pub async fn create_user(&self, name: &str, email: &str, admin: bool) -> anyhow::Result<()> {
        let user = User::new(name, UserSpec { email: email.into(), name: name.into(), admin });
        Api::<User>::all(self.master.client()).patch(name, &apply_params(), &Patch::Apply(user)).await?;
        Ok(())
    }

    /// Creates or updates a UserProjectBinding in the master.
    pub async fn bind(&self, name: &str, email: &str, project: &str, group: &str) -> anyhow::Result<()> {
        let binding = UserProjectBinding::new(
            name,
            UserProjectBindingSpec {
                user_email: email.into(),
                project_id: project.into(),
                group: format!("{group}-{project}"),
            },
        );
        Api::<UserProjectBinding>::all(self.master.client())
            .patch(name, &apply_params(), &Patch::Apply(binding))
            .await?;
        Ok(())
    }

    /// Creates a Cluster in the seed with its namespace and the status KKP's own
    /// controllers would report; with `user_cluster`, also the `admin-kubeconfig` Secret
    /// of the user cluster (as KKP creates it), so the seed manager deploys the
    /// user-cluster manager for it.
    pub async fn create_cluster(
        &self,
        name: &str,
        project: &str,
        monitoring: bool,
        logging: bool,
        user_cluster: bool,
    ) -> anyhow::Result<()> {
        let namespace = format!("cluster-{name}");
        master::ensure_namespace(&self.seed.client(), &namespace).await?;
        if user_cluster {
            let identity = Identity::User { name: USER_CLUSTER_IDENTITY.into(), group: None };
            let kubeconfig = std::fs::read_to_string(self.user.kubeconfig(&identity).await?)?;
            let secret = Secret {
                metadata: ObjectMeta { name: Some("admin-kubeconfig".into()), ..Default::default() },
                string_data: Some(BTreeMap::from([("kubeconfig".to_string(), kubeconfig)])),
                ..Default::default()
            };
            Api::<Secret>::namespaced(self.seed.client(), &namespace)
                .patch("admin-kubeconfig", &apply_params(), &Patch::Apply(secret))
                .await?;
        }
        let clusters = Api::<Cluster>::all(self.seed.client());
        if self.kkp {
            clusters
                .patch(name, &apply_params(), &Patch::Apply(crate::kkp::cluster(name, project, monitoring, logging)))
                .await?;
            clusters
                .patch_status(name, &apply_params(), &Patch::Apply(crate::kkp::cluster_status(name, &namespace)))
                .await?;
            return Ok(());
        }
        let mut cluster = Cluster::new(
            name,
            ClusterSpec {
                human_readable_name: Some(format!("{name} (e2e)")),
                expose_strategy: Some(ExposeStrategy::NodePort),
                mla: Some(MLASettings {
                    monitoring_enabled: monitoring,
                    logging_enabled: logging,
                    ..Default::default()
                }),
            },
        );
        cluster.metadata.labels = Some(BTreeMap::from([(PROJECT_ID_LABEL.to_string(), project.to_string())]));
        clusters.patch(name, &apply_params(), &Patch::Apply(cluster)).await?;
        let status = serde_json::json!({"status": {"namespaceName": namespace,
            "address": {"externalName": format!("{name}.seed.e2e.localhost"), "ip": "127.0.0.1", "port": 6443,
                        "url": format!("https://{name}.seed.e2e.localhost:6443")}}});
        clusters.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        Ok(())
    }

    /// Sets a Cluster's monitoring and logging switches.
    pub async fn set_mla(&self, name: &str, monitoring: bool, logging: bool) -> anyhow::Result<()> {
        let patch = serde_json::json!({"spec": {"mla": {"monitoringEnabled": monitoring, "loggingEnabled": logging}}});
        Api::<Cluster>::all(self.seed.client()).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Runs the user-cluster manager of `cluster` exactly as the seed manager deployed it:
    /// the Deployment's arguments, its ServiceAccount's token as the seed identity, and
    /// the user-cluster kubeconfig from the Secret it mounts.
    pub async fn run_user_manager(&self, cluster: &str) -> anyhow::Result<()> {
        let namespace = format!("cluster-{cluster}");
        let deployments: Api<Deployment> = Api::namespaced(self.seed.client(), &namespace);
        let deployment = eventually("the user-cluster manager Deployment", Duration::from_secs(60), || {
            let deployments = deployments.clone();
            async move { Ok(deployments.get_opt("mla-user-cluster-controller-manager").await?) }
        })
        .await?;
        let pod = deployment.spec.and_then(|s| s.template.spec).context("Deployment without a pod spec")?;
        let container = pod.containers.first().context("Deployment without a container")?;
        let account = pod.service_account_name.clone().context("Deployment without a ServiceAccount")?;
        let kubeconfig_secret: Api<Secret> = Api::namespaced(self.seed.client(), &namespace);
        let secret = kubeconfig_secret.get("admin-kubeconfig").await?;
        let user_kubeconfig = self.dir.join(format!("{cluster}-user.kubeconfig"));
        std::fs::write(&user_kubeconfig, secret_text(&secret, "kubeconfig").context("kubeconfig in Secret")?)?;
        let mut args: Vec<String> = container
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.starts_with("--user-cluster-kubeconfig=") && !a.starts_with("--admin-addr="))
            .collect();
        args.push(format!("--user-cluster-kubeconfig={}", user_kubeconfig.display()));
        let identity = Identity::ServiceAccount { namespace: namespace.clone(), name: account };
        let kubeconfig = self.seed.kubeconfig(&identity).await?;
        let binary = spawn_binary(
            &binary_dir()?,
            &self.dir,
            &format!("user-cluster-controller-manager-{cluster}"),
            "user-cluster-controller-manager",
            &kubeconfig,
            &args,
        )?;
        wait_ready(&binary).await?;
        self.user_managers.lock().await.insert(cluster.to_string(), binary);
        Ok(())
    }

    /// Runs the IAP of `cluster` as its Deployment says (`crate::iap`): oauth2-proxy with
    /// the Deployment's arguments, the IAP Secret and the emails ConfigMap the seed manager
    /// wrote, against the mock OIDC provider, upstream the cluster's gateway read path
    /// (its gateway must run, [`World::run_gateway`]). Returns it with the IAP's host.
    pub async fn run_iap(&self, cluster: &str) -> anyhow::Result<(crate::iap::OAuth2Proxy, String)> {
        let namespace = format!("cluster-{cluster}");
        let read_port =
            self.gateways.lock().await.get(cluster).context("the cluster's gateway is not running")?.read_port;
        let (deployment, secret, emails) =
            crate::iap::written_objects(&self.seed.client(), &namespace, Duration::from_secs(60)).await?;
        let pod = deployment.spec.and_then(|s| s.template.spec).context("IAP Deployment without a pod spec")?;
        let args = pod.containers.first().and_then(|c| c.args.clone()).context("IAP Deployment without arguments")?;
        let host = args
            .iter()
            .find_map(|a| a.strip_prefix("--redirect-url=https://"))
            .and_then(|rest| rest.split('/').next())
            .context("IAP Deployment without --redirect-url")?
            .to_string();
        let dir = self.dir.join(format!("iap-{cluster}"));
        let proxy = crate::iap::OAuth2Proxy::start(
            &dir,
            &args,
            &secret,
            &emails.data.unwrap_or_default(),
            &namespace,
            read_port,
        )
        .await?;
        Ok((proxy, host))
    }

    /// Runs nginx with the gateway configuration and certificates of `cluster` as they
    /// are in the seed, and keeps it in step with them.
    pub async fn run_gateway(&self, cluster: &str) -> anyhow::Result<Arc<Gateway>> {
        let namespace = format!("cluster-{cluster}");
        let dir = self.dir.join(format!("gateway-{cluster}"));
        for sub in ["certs", "run"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let (write_port, read_port) = (free_port()?, free_port()?);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.seed.client(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.seed.client(), &namespace);
        let files = eventually("the gateway ConfigMap and certificates", Duration::from_secs(60), || {
            let (config_maps, secrets, dir) = (config_maps.clone(), secrets.clone(), dir.clone());
            async move { gateway_files(&config_maps, &secrets, &dir, write_port, read_port).await }
        })
        .await?;
        write_certificates(&dir, &files)?;
        let nginx = crate::nginx::Nginx::start(&format!("nginx-{cluster}"), &dir, &files.nginx_conf)?;
        let sync_dir = dir.clone();
        let sync = tokio::spawn(async move {
            let mut current = files;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Ok(Some(next)) = gateway_files(&config_maps, &secrets, &sync_dir, write_port, read_port).await
                else {
                    continue;
                };
                if next != current && write_certificates(&sync_dir, &next).is_ok() {
                    // A configuration nginx refuses leaves the last one running, as in the pod.
                    let _ = nginx.reload_with(&next.nginx_conf);
                    current = next;
                }
            }
        });
        let gateway = Arc::new(Gateway { write_port, read_port, dir, sync });
        eventually("the gateway to listen", Duration::from_secs(20), || {
            let url = format!("http://127.0.0.1:{read_port}/");
            async move { Ok(reqwest::get(&url).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await?;
        self.gateways.lock().await.insert(cluster.to_string(), gateway.clone());
        Ok(gateway)
    }

    /// Runs the Prometheus 3 agent of `cluster` as its pod runs it (`crate::agent`): the
    /// `prometheus` Deployment's arguments, the generated `prometheus.yaml` unmodified, the
    /// certificates Secret and a token of its ServiceAccount at the pod's paths, and the
    /// user cluster's API server as its in-cluster API (Kubernetes service discovery
    /// included). The gateway's host name leads to the cluster's gateway on loopback.
    pub async fn run_agent(&self, cluster: &str) -> anyhow::Result<()> {
        let gateway =
            self.gateways.lock().await.get(cluster).cloned().context("run the cluster's gateway before its agent")?;
        let dir = self.dir.join(format!("agent-{cluster}"));
        std::fs::create_dir_all(&dir)?;
        let pod_name = format!("prometheus-{cluster}-0");
        let write_port = gateway.write_port;
        let pod = eventually("the agent's Deployment, ConfigMap and certificates", Duration::from_secs(60), || {
            let pod_name = pod_name.clone();
            async move { crate::agent::read_pod(&self.user, &self.agents_namespace, &pod_name, write_port).await }
        })
        .await?;
        let agent = crate::agent::run(&format!("agent-{cluster}"), &pod, &dir).await?;
        self.agents
            .lock()
            .await
            .insert(cluster.to_string(), Agent { port: 9090, address: agent.address, _agent: agent });
        Ok(())
    }

    /// The current leader among the seed manager replicas.
    pub async fn seed_leader(&self) -> Option<usize> {
        for (i, binary) in self.seed_managers.iter().enumerate() {
            if binary.is_leader().await {
                return Some(i);
            }
        }
        None
    }
}

fn seed_manager_args(
    cortex: &Cortex,
    loki: &RecordingBackend,
    loki_ruler: &CortexServer,
    grafana: &GrafanaServer,
    issuer: &str,
    resync: &str,
    replicas: usize,
) -> Vec<String> {
    // One Cortex process serves every Cortex role.
    let cortex = cortex.url();
    let mut args = vec![
        "--enable-user-cluster-mla=true".to_string(),
        format!("--mla-namespace={MLA_NAMESPACE}"),
        format!("--grafana-url={}", grafana.url()),
        format!("--leader-election-namespace={NAMESPACE}"),
        format!("--cortex-distributor-url={cortex}"),
        format!("--loki-distributor-url={}", loki.url()),
        format!("--cortex-query-frontend-url={cortex}"),
        format!("--loki-query-frontend-url={}", loki.url()),
        format!("--cortex-alertmanager-url={cortex}"),
        format!("--cortex-ruler-url={cortex}"),
        format!("--loki-ruler-url={}", loki_ruler.url()),
        format!("--cortex-runtime-config-map={RUNTIME_CONFIG_MAP}"),
        format!("--cortex-runtime-config-key={RUNTIME_CONFIG_KEY}"),
        format!("--iap-oidc-issuer-url={issuer}"),
        format!("--iap-oidc-client-id={}", IAP_CLIENT.0),
        "--iap-domain=e2e.localhost".to_string(),
        resync.to_string(),
    ];
    if replicas > 1 {
        args.push("--leader-election-lease-duration=4s".into());
        args.push("--leader-election-renew-deadline=3s".into());
        args.push("--leader-election-retry-period=1s".into());
    }
    args
}

fn spawn_binary(
    bin: &Path,
    dir: &Path,
    name: &str,
    executable: &str,
    kubeconfig: &Path,
    args: &[String],
) -> anyhow::Result<Binary> {
    let port = free_port()?;
    let log = dir.join(format!("{name}.log"));
    let program = bin.join(executable);
    let mut all_args = vec![format!("--kubeconfig={}", kubeconfig.display()), format!("--admin-addr=127.0.0.1:{port}")];
    all_args.extend(args.iter().cloned());
    // Each start is a new pod, with a new name (the leader election identity).
    let pod = name.to_string();
    let command = move |generation: u32| {
        let mut command = Command::new(&program);
        command.args(&all_args).env("MLA_LOG_LEVEL", "info,kube=warn").env("POD_NAME", format!("{pod}-{generation}"));
        command
    };
    let process = ManagedProcess::spawn(name, command(0), &log)
        .with_context(|| format!("{executable} not found in {}: build the binaries first", bin.display()))?;
    let process = Arc::new(std::sync::Mutex::new(process));
    let restarts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let supervisor = {
        let (process, restarts, name) = (process.clone(), restarts.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let exited = matches!(process.lock().unwrap_or_else(|p| p.into_inner()).try_wait(), Ok(Some(_)));
                if !exited {
                    continue;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let generation = restarts.load(std::sync::atomic::Ordering::Relaxed) + 1;
                if let Ok(next) = ManagedProcess::spawn(&name, command(generation), &log) {
                    say(&format!("{name} exited; restarted"));
                    *process.lock().unwrap_or_else(|p| p.into_inner()) = next;
                    restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    Ok(Binary { name: name.to_string(), admin: format!("http://127.0.0.1:{port}"), process, restarts, supervisor })
}

async fn wait_ready(binary: &Binary) -> anyhow::Result<()> {
    eventually(&format!("{} to be ready", binary.name), Duration::from_secs(60), || async {
        Ok(binary.is_ready().await.then_some(()))
    })
    .await
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// What a gateway runs from: nginx.conf (adapted) and its three certificate files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GatewayFiles {
    nginx_conf: String,
    certificate: String,
    key: String,
    bundle: String,
}

async fn gateway_files(
    config_maps: &Api<ConfigMap>,
    secrets: &Api<Secret>,
    dir: &Path,
    write_port: u16,
    read_port: u16,
) -> anyhow::Result<Option<GatewayFiles>> {
    let (Some(config), Some(secret)) =
        (config_maps.get_opt("mla-gateway").await?, secrets.get_opt("mla-gateway-certificates").await?)
    else {
        return Ok(None);
    };
    let Some(conf) = config.data.and_then(|d| d.get("nginx.conf").cloned()) else { return Ok(None) };
    let (Some(certificate), Some(key), Some(bundle)) = (
        secret_text(&secret, "gateway.crt"),
        secret_text(&secret, "gateway.key"),
        secret_text(&secret, "ca-bundle.crt"),
    ) else {
        return Ok(None);
    };
    Ok(Some(GatewayFiles { nginx_conf: adapt_nginx_conf(&conf, dir, write_port, read_port), certificate, key, bundle }))
}

/// The certificate files (nginx.conf is written by [`crate::nginx::Nginx`]).
fn write_certificates(dir: &Path, files: &GatewayFiles) -> anyhow::Result<()> {
    std::fs::write(dir.join("certs/gateway.crt"), &files.certificate)?;
    std::fs::write(dir.join("certs/gateway.key"), &files.key)?;
    std::fs::write(dir.join("certs/ca-bundle.crt"), &files.bundle)?;
    Ok(())
}

/// The seed's nginx.conf with listen ports on loopback, the pod's file paths replaced by
/// `dir`, and the cluster-DNS resolver dropped (upstreams here are loopback addresses).
pub fn adapt_nginx_conf(conf: &str, dir: &Path, write_port: u16, read_port: u16) -> String {
    let d = dir.display();
    conf.lines()
        .filter(|line| !line.trim_start().starts_with("resolver "))
        .map(|line| {
            // The pod's /tmp first: the replacement paths may themselves be under /tmp.
            line.replace(" /tmp/", &format!(" {d}/run/"))
                .replace(" /tmp;", &format!(" {d}/run;"))
                .replace("listen 8080 ssl;", &format!("listen 127.0.0.1:{write_port} ssl;"))
                .replace("listen 8081;", &format!("listen 127.0.0.1:{read_port};"))
                .replace("/etc/ssl/mla-gateway/", &format!("{d}/certs/"))
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// Namespaces that exist in a plane, for assertions.
pub async fn namespaces(plane: &ControlPlane) -> anyhow::Result<Vec<String>> {
    Ok(Api::<Namespace>::all(plane.client())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

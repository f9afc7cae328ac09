//! One Kubernetes control plane: etcd and kube-apiserver as child processes on free
//! loopback ports, RBAC authorization on, an admin client certificate, and the CRDs of
//! `manifests/crds/` installed on request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::pki::TestCa;
use crate::process::ManagedProcess;
use crate::{eventually, free_port, workspace_root};

/// How a kubeconfig authenticates.
#[derive(Clone, Debug)]
pub enum Identity {
    /// `system:masters`: bypasses RBAC.
    Admin,
    /// A user by client certificate (CN = user, O = group).
    User {
        /// User name.
        name: String,
        /// Group, if any.
        group: Option<String>,
    },
    /// A ServiceAccount by token (created if missing).
    ServiceAccount {
        /// Namespace of the ServiceAccount.
        namespace: String,
        /// Name of the ServiceAccount.
        name: String,
    },
}

/// A running control plane; everything it started is stopped and removed on drop.
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    keep: bool,
    bin_dir: PathBuf,
    host: std::net::Ipv4Addr,
    pods: bool,
    node_ports: Option<String>,
    port: u16,
    etcd_url: String,
    _etcd: ManagedProcess,
    apiserver: Option<ManagedProcess>,
    controller_manager: Option<ManagedProcess>,
    scheduler: Option<ManagedProcess>,
    ca: TestCa,
    admin_kubeconfig: PathBuf,
    client: kube::Client,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("name", &self.name).field("url", &self.url()).finish_non_exhaustive()
    }
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// How a control plane is started: [`ControlPlane::start`] is loopback only, without pods.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The address the API server binds and advertises instead of 127.0.0.1: a host
    /// address of the test network its nodes and pods reach (see [`crate::node`]). With
    /// it, the `kubernetes` Service gets this address as its endpoint.
    pub address: Option<std::net::Ipv4Addr>,
    /// Run pods: the ServiceAccount admission plugin is on (pods get their
    /// ServiceAccount's token mounted), as in any real cluster.
    pub pods: bool,
    /// `--service-node-port-range` (Kubernetes' default: 30000-32767, 2,768 ports): a seed
    /// whose Clusters all use the NodePort strategy holds one NodePort Service per gateway.
    pub node_ports: Option<String>,
}

/// The directory holding `etcd` and `kube-apiserver`: `$MLA_CONTROL_PLANE_BIN`, else what
/// `hack/build-control-plane.sh` prints (it builds once and then answers from its cache).
pub fn binaries() -> anyhow::Result<PathBuf> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| {
            if let Ok(dir) = std::env::var("MLA_CONTROL_PLANE_BIN") {
                return Ok(PathBuf::from(dir));
            }
            let script = workspace_root().join("hack/build-control-plane.sh");
            let output =
                Command::new("bash").arg(&script).output().map_err(|e| format!("running {}: {e}", script.display()))?;
            if !output.status.success() {
                return Err(format!("{} failed:\n{}", script.display(), String::from_utf8_lossy(&output.stderr)));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout.lines().last().map(PathBuf::from).ok_or_else(|| format!("{} printed no directory", script.display()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in a fresh temporary directory (removed on drop)
    /// and waits until the API server is ready.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let instance = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mla-cp-{name}-{}-{instance}", std::process::id()));
        let keep = std::env::var_os("MLA_KEEP_CONTROL_PLANE").is_some();
        Self::start_at(name, dir, keep, &Options::default()).await
    }

    /// [`ControlPlane::start`] as `options` say.
    pub async fn start_options(name: &str, options: &Options) -> anyhow::Result<Self> {
        let instance = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mla-cp-{name}-{}-{instance}", std::process::id()));
        let keep = std::env::var_os("MLA_KEEP_CONTROL_PLANE").is_some();
        Self::start_at(name, dir, keep, options).await
    }

    /// Starts a control plane as `options` say, whose data lives in `<base>/<name>`
    /// (emptied first, kept after drop so its logs can be read).
    pub async fn start_with(name: &str, base: &Path, options: &Options) -> anyhow::Result<Self> {
        Self::start_at(name, base.join(name), true, options).await
    }

    /// Starts a control plane whose data, certificates and logs live in `<base>/<name>`
    /// (emptied first, kept after drop so its logs can be read).
    pub async fn start_in(name: &str, base: &Path) -> anyhow::Result<Self> {
        Self::start_at(name, base.join(name), true, &Options::default()).await
    }

    async fn start_at(name: &str, dir: PathBuf, keep: bool, options: &Options) -> anyhow::Result<Self> {
        // A free port is found by binding and releasing it; another process (or an
        // outgoing connection's ephemeral port) can take it before kube-apiserver binds.
        let mut attempt = 1;
        loop {
            match Self::start_at_once(name, dir.clone(), keep, options).await {
                Err(error) if attempt < 3 && format!("{error:#}").contains("address already in use") => {
                    tracing::warn!(name, attempt, "port taken before kube-apiserver bound it; starting again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_at_once(name: &str, dir: PathBuf, keep: bool, options: &Options) -> anyhow::Result<Self> {
        let bin_dir = binaries()?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let host = options.address.unwrap_or(std::net::Ipv4Addr::LOCALHOST);

        let ca = TestCa::new(name)?;
        let serving = ca.serving(host)?;
        write(&dir.join("ca.crt"), &ca.cert_pem)?;
        write(&dir.join("apiserver.crt"), &serving.cert_pem)?;
        write(&dir.join("apiserver.key"), &serving.key_pem)?;
        let service_account_key = rcgen::KeyPair::generate()?;
        write(&dir.join("sa.key"), &service_account_key.serialize_pem())?;
        write(&dir.join("sa.pub"), &service_account_key.public_key_pem())?;

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bin_dir.join("etcd"));
        etcd.args(["--name", "default", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--unsafe-no-fsync", "--log-level", "warn", "--listen-metrics-urls", ""]);
        let etcd = ManagedProcess::spawn("etcd", etcd, &dir.join("etcd.log"))?;

        let port = free_port()?;
        let admin = ca.client("admin", Some("system:masters"))?;
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(
            &admin_kubeconfig,
            &kubeconfig_yaml(name, &url(host, port), &ca.cert_pem, Auth::Cert(&admin.cert_pem, &admin.key_pem)),
        )?;
        let client = mla_common::runtime::client_for(Some(&admin_kubeconfig), None).await?;

        let mut plane = Self {
            name: name.to_string(),
            dir,
            keep,
            bin_dir,
            host,
            pods: options.pods,
            node_ports: options.node_ports.clone(),
            port,
            etcd_url,
            _etcd: etcd,
            apiserver: None,
            controller_manager: None,
            scheduler: None,
            ca,
            admin_kubeconfig,
            client,
        };
        plane.start_apiserver().await?;
        Ok(plane)
    }

    /// Starts the API server again after [`Self::stop_apiserver`], on the same port and
    /// with the same data.
    pub async fn start_apiserver(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.apiserver.is_none(), "the API server of {} is running", self.name);
        let dir = &self.dir;
        let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
        let mut command = Command::new(self.bin_dir.join("kube-apiserver"));
        command
            .arg(format!("--etcd-servers={}", self.etcd_url))
            .arg(format!("--cert-dir={}", path("certs")))
            .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
            .arg(format!("--client-ca-file={}", path("ca.crt")))
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--bind-address={}", self.host))
            .arg(format!("--advertise-address={}", self.host))
            .args(["--service-cluster-ip-range=10.0.0.0/16", "--allow-privileged=true"])
            .args(["--authorization-mode=RBAC", "--enable-priority-and-fairness=false"]);
        if let Some(range) = &self.node_ports {
            command.arg(format!("--service-node-port-range={range}"));
        }
        if self.pods {
            // Pods reach the API server through the `kubernetes` Service, whose endpoint
            // the lease reconciler keeps.
            command.args(["--endpoint-reconciler-type=lease"]);
        } else {
            command.args(["--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]);
        }
        command
            .arg(format!("--service-account-issuer=https://127.0.0.1:{}/", self.port))
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", path("sa.key")))
            .arg("--v=0");
        let mut apiserver = ManagedProcess::spawn("kube-apiserver", command, &dir.join("kube-apiserver.log"))?;
        let log = dir.join("kube-apiserver.log");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = apiserver.try_wait()? {
                anyhow::bail!("kube-apiserver of {} exited ({status}); log tail:\n{}", self.name, tail(&log, 10));
            }
            match self.client.request_text(http_get("/readyz")?).await {
                Ok(body) if body.trim() == "ok" => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {}
                result => anyhow::bail!(
                    "kube-apiserver of {} not ready within 60s ({result:?}); log tail:\n{}",
                    self.name,
                    tail(&log, 10)
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.apiserver = Some(apiserver);
        // The built-in RBAC roles are created by a post-start hook; wait for one we need.
        let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(self.client.clone());
        eventually("bootstrap RBAC roles", Duration::from_secs(30), || {
            let roles = roles.clone();
            async move { Ok(roles.get_opt("cluster-admin").await?.map(|_| ())) }
        })
        .await?;
        Ok(())
    }

    /// Starts kube-controller-manager with the garbage and namespace collectors only, so
    /// that ownerReferences and namespace deletion work as in a real cluster. Needs
    /// `kube-controller-manager` beside `kube-apiserver` (hack/build-control-plane.sh).
    pub fn start_garbage_collector(&mut self) -> anyhow::Result<()> {
        if self.controller_manager.is_some() {
            return Ok(());
        }
        let binary = self.bin_dir.join("kube-controller-manager");
        anyhow::ensure!(binary.exists(), "{} is missing: run hack/build-control-plane.sh", binary.display());
        let mut command = Command::new(binary);
        command
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(["--controllers=garbagecollector,namespace", "--leader-elect=false", "--secure-port=0"])
            .args(["--concurrent-gc-syncs=5", "--namespace-sync-period=10s", "--v=0"]);
        self.controller_manager = Some(ManagedProcess::spawn(
            "kube-controller-manager",
            command,
            &self.dir.join("kube-controller-manager.log"),
        )?);
        Ok(())
    }

    /// Starts what a cluster that runs pods needs beside the API server: kube-controller-manager
    /// with every default controller (Deployments, ReplicaSets, EndpointSlices for
    /// kube-proxy, ServiceAccounts and the `kube-root-ca.crt` ConfigMap their tokens'
    /// volumes mount, garbage and namespace collection, ...) and kube-scheduler. Needs the
    /// node binaries (`hack/build-control-plane.sh --node`) and [`Options::pods`].
    pub fn start_pod_controllers(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.pods, "{} was not started for pods", self.name);
        anyhow::ensure!(self.controller_manager.is_none(), "kube-controller-manager of {} is running", self.name);
        let dir = self.dir.clone();
        let mut command = Command::new(self.bin_dir.join("kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--root-ca-file={}", dir.join("ca.crt").display()))
            .arg(format!("--service-account-private-key-file={}", dir.join("sa.key").display()))
            // Node IPAM and cloud controllers stay off: each node's CNI config owns its
            // pod range.
            .args(["--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route", "--leader-elect=false"])
            .args(["--secure-port=0", "--use-service-account-credentials=false", "--v=0"]);
        self.controller_manager =
            Some(ManagedProcess::spawn("kube-controller-manager", command, &dir.join("kube-controller-manager.log"))?);
        let scheduler = self.bin_dir.join("kube-scheduler");
        anyhow::ensure!(
            scheduler.exists(),
            "{} is missing: run hack/build-control-plane.sh --node",
            scheduler.display()
        );
        let mut command = Command::new(scheduler);
        command.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display())).args([
            "--leader-elect=false",
            "--secure-port=0",
            "--v=0",
        ]);
        self.scheduler = Some(ManagedProcess::spawn("kube-scheduler", command, &dir.join("kube-scheduler.log"))?);
        Ok(())
    }

    /// The CA that signed the API server's serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Kills the API server (etcd keeps running), as an outage would.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.kill();
        }
    }

    /// Name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL of the API server.
    pub fn url(&self) -> String {
        url(self.host, self.port)
    }

    /// An admin client (system:masters).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Path of the admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The process ids of the API server and etcd (for benchmarks that account their CPU).
    pub fn process_ids(&self) -> Vec<u32> {
        self.apiserver.iter().map(ManagedProcess::id).chain(std::iter::once(self._etcd.id())).collect()
    }

    /// The directory with this control plane's data, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Installs every CRD of `manifests/crds/` (what operators install) and waits until
    /// each is established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        self.install_crds_from(&workspace_root().join("manifests/crds")).await
    }

    /// Installs every CRD file of `dir` (e.g. KKP's own CRDs instead of ours) and waits
    /// until each is established.
    pub async fn install_crds_from(&self, dir: &Path) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .filter(|p| p.file_name().is_some_and(|f| f != "kustomization.yaml"))
            .collect();
        files.sort();
        for file in files {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&file)?)
                .with_context(|| format!("parsing {}", file.display()))?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::apply("mla-e2e").force(), &Patch::Apply(&crd))
                .await
                .with_context(|| format!("applying {}", file.display()))?;
            names.push(name);
        }
        for name in names {
            eventually(&format!("CRD {name} established"), Duration::from_secs(30), || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Creates a namespace `<prefix>-<n>` that no other test uses.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{:08x}", rand_u32());
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(name)
    }

    /// Writes a kubeconfig for `identity` and returns its path. For a ServiceAccount the
    /// account is created if missing and a token valid for a day (the demo runs that long) is requested.
    pub async fn kubeconfig(&self, identity: &Identity) -> anyhow::Result<PathBuf> {
        let (file, yaml) = match identity {
            Identity::Admin => return Ok(self.admin_kubeconfig.clone()),
            Identity::User { name, group } => {
                let cert = self.ca.client(name, group.as_deref())?;
                (
                    format!("user-{name}.kubeconfig"),
                    kubeconfig_yaml(
                        &self.name,
                        &self.url(),
                        &self.ca.cert_pem,
                        Auth::Cert(&cert.cert_pem, &cert.key_pem),
                    ),
                )
            }
            Identity::ServiceAccount { namespace, name } => {
                let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
                if accounts.get_opt(name).await?.is_none() {
                    let account = ServiceAccount {
                        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
                        ..Default::default()
                    };
                    accounts.create(&PostParams::default(), &account).await?;
                }
                let request = TokenRequest {
                    spec: Some(TokenRequestSpec { expiration_seconds: Some(86_400), ..Default::default() }),
                    ..Default::default()
                };
                let token = accounts
                    .create_token_request(name, &PostParams::default(), &request)
                    .await
                    .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?
                    .status
                    .and_then(|s| s.token)
                    .context("token request returned no token")?;
                (
                    format!("sa-{namespace}-{name}.kubeconfig"),
                    kubeconfig_yaml(&self.name, &self.url(), &self.ca.cert_pem, Auth::Token(&token)),
                )
            }
        };
        let path = self.dir.join(file);
        write(&path, &yaml)?;
        Ok(path)
    }

    /// A client for `identity`.
    pub async fn client_as(&self, identity: &Identity) -> anyhow::Result<kube::Client> {
        mla_common::runtime::client_for(Some(&self.kubeconfig(identity).await?), None).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        if let Some(mut controller_manager) = self.controller_manager.take() {
            controller_manager.kill();
        }
        if let Some(mut scheduler) = self.scheduler.take() {
            scheduler.kill();
        }
        // etcd is killed by its own drop; the directory goes unless its logs are wanted.
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

enum Auth<'a> {
    Cert(&'a str, &'a str),
    Token(&'a str),
}

fn url(host: std::net::Ipv4Addr, port: u16) -> String {
    format!("https://{host}:{port}")
}

fn kubeconfig_yaml(name: &str, server: &str, ca_pem: &str, auth: Auth<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match auth {
        Auth::Cert(cert, key) => serde_json::json!({"client-certificate-data": b64(cert), "client-key-data": b64(key)}),
        Auth::Token(token) => serde_json::json!({"token": token}),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "user"}}],
        "current-context": name,
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn http_get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(INSTANCES.fetch_add(1, Ordering::SeqCst));
    hasher.finish() as u32
}

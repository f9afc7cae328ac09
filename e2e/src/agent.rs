//! The Prometheus agent as its pod runs it: Prometheus 3 (built by
//! `hack/build-real-parts.sh`) with the Deployment's arguments, the generated
//! `prometheus.yaml` unmodified, its certificates and the ServiceAccount's credentials at
//! the paths the pod has them, and the user cluster's API server as the in-cluster API.
//!
//! It runs in a private mount namespace (`unshare --mount --propagation private`, so root
//! only) chrooted into a directory laid out like the container's file system (the
//! Prometheus binary is static): `/etc/prometheus/mla/prometheus.yaml` (the ConfigMap),
//! `/etc/ssl/mla/` (the certificates Secret), `/var/run/secrets/kubernetes.io/serviceaccount/`
//! (a token of the Deployment's ServiceAccount and the API server's CA),
//! `/var/lib/prometheus` (storage), and an `/etc/hosts` standing in for the cluster's DNS.
//! Nothing on the host is changed or hidden.
//!
//! Networking stays the host's (the API servers and the gateway are on loopback), which
//! takes two things a pod gets from its network:
//! - each agent has its own loopback address (`127.77.x.y`), which `localhost` resolves to
//!   in its `/etc/hosts`, so the self-scrape target `localhost:9090` is this agent and two
//!   agents both listen on port 9090;
//! - the gateway's host name resolves to that address too, where a TCP forwarder on the
//!   remote-write URL's port plays the seed's nodeport-proxy / kube-proxy and passes the
//!   connection (TLS untouched, SNI and client certificate end to end) to the gateway's
//!   loopback write port.
//!
//! `KUBERNETES_SERVICE_HOST`/`PORT` point at the API server, as the kubelet sets them; its
//! serving certificate has `127.0.0.1` and `kubernetes.default.svc` among its names
//! (`pki.rs`), and its `kubernetes` EndpointSlice is `127.0.0.1:<port>` (advertise
//! address), so the `kubernetes-apiservers` job scrapes it with the ServiceAccount token.
//!
//! The only command-line change: `--web.listen-address=<own loopback address>:9090`
//! (the pod's default is `0.0.0.0:9090`, which every agent on a host cannot have).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

use crate::ManagedProcess;

/// The paths of the pod the configuration refers to.
pub const CONFIG_DIR: &str = "etc/prometheus/mla";
/// The certificates Secret's mount.
pub const CERTIFICATES_DIR: &str = "etc/ssl/mla";
/// The ServiceAccount's projected credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";
/// The storage volume.
pub const STORAGE_DIR: &str = "var/lib/prometheus";

/// What the agent pod is made of, as read from the user cluster.
#[derive(Debug, Clone)]
pub struct AgentPod {
    /// The container's arguments (from the Deployment).
    pub args: Vec<String>,
    /// The container's `POD_NAME` (downward API) and other plain environment.
    pub env: BTreeMap<String, String>,
    /// The ConfigMap's files (`prometheus.yaml`).
    pub config: BTreeMap<String, String>,
    /// The certificates Secret's files.
    pub certificates: BTreeMap<String, String>,
    /// A token of the pod's ServiceAccount.
    pub token: String,
    /// The namespace of the pod (the ServiceAccount's `namespace` file).
    pub namespace: String,
    /// The API server's CA (the ServiceAccount's `ca.crt`).
    pub api_ca: String,
    /// The API server's loopback port.
    pub api_port: u16,
    /// The gateway's write port on 127.0.0.1, where the remote-write host name leads.
    pub gateway_write_port: u16,
}

/// A running agent: the process and its forwarder, stopped when dropped.
#[derive(Debug)]
pub struct RunningAgent {
    /// This agent's loopback address (its web listener is on port 9090 there).
    pub address: Ipv4Addr,
    /// The root directory of its file system.
    pub root: PathBuf,
    /// Its log.
    pub log: PathBuf,
    _process: ManagedProcess,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl RunningAgent {
    /// The base URL of its web listener (`/api/v1/...`, `/-/ready`).
    pub fn url(&self) -> String {
        format!("http://{}:9090", self.address)
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A loopback address no other agent of this process has, e.g. `127.77.12.3`.
fn next_address() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The process id spreads concurrent test binaries over the third octet.
    Ipv4Addr::new(127, 77, (std::process::id() % 250) as u8 + 1, (n % 250) as u8 + 1)
}

/// The remote-write host and port of a generated `prometheus.yaml`.
pub fn remote_write_authority(yaml: &str) -> anyhow::Result<(String, u16)> {
    let config: serde_yaml::Value = serde_yaml::from_str(yaml)?;
    let url = config["remote_write"][0]["url"].as_str().context("remote_write[0].url")?;
    let rest = url.strip_prefix("https://").context("remote write over https")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').map_or((authority, "443"), |(h, p)| (h, p));
    Ok((host.to_string(), port.parse().with_context(|| format!("port of {url}"))?))
}

fn write(root: &Path, rel: &str, content: &str) -> anyhow::Result<()> {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// Starts the agent of `pod` in `dir` (its root file system and log go there).
pub async fn run(name: &str, pod: &AgentPod, dir: &Path) -> anyhow::Result<RunningAgent> {
    let prometheus = crate::real_parts::binary("prometheus", "prometheus")?;
    let yaml = pod.config.get("prometheus.yaml").context("the ConfigMap has no prometheus.yaml")?;
    let (gateway_host, gateway_port) = remote_write_authority(yaml)?;
    let address = next_address();

    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for (file, content) in &pod.config {
        write(&root, &format!("{CONFIG_DIR}/{file}"), content)?;
    }
    for (file, content) in &pod.certificates {
        write(&root, &format!("{CERTIFICATES_DIR}/{file}"), content)?;
    }
    write(&root, &format!("{SERVICE_ACCOUNT_DIR}/token"), &pod.token)?;
    write(&root, &format!("{SERVICE_ACCOUNT_DIR}/ca.crt"), &pod.api_ca)?;
    write(&root, &format!("{SERVICE_ACCOUNT_DIR}/namespace"), &pod.namespace)?;
    // The cluster's DNS, as far as the agent needs it.
    write(&root, "etc/hosts", &format!("{address} localhost\n{address} {gateway_host}\n"))?;
    write(&root, "etc/nsswitch.conf", "hosts: files\n")?;
    for empty in [STORAGE_DIR, "tmp", "proc", "bin"] {
        std::fs::create_dir_all(root.join(empty))?;
    }
    std::fs::write(root.join("bin/prometheus"), b"")?;

    // kube-proxy's part: the remote-write authority leads to the gateway's write port.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((address, gateway_port)))
        .await
        .with_context(|| format!("listening on {address}:{gateway_port} for the gateway"))?;
    let target = SocketAddr::from(([127, 0, 0, 1], pod.gateway_write_port));
    let forwarder = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let mut args = pod.args.clone();
    args.retain(|a| !a.starts_with("--web.listen-address="));
    args.push(format!("--web.listen-address={address}:9090"));
    // Mounts in the private namespace vanish with it; the binary and /proc are bound in,
    // then the pod's root replaces /.
    let script = r#"set -e
root="$1"; binary="$2"; shift 2
mount --bind "$binary" "$root/bin/prometheus"
mount -t proc proc "$root/proc"
exec chroot "$root" /bin/prometheus "$@"
"#;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "agent"])
        .arg(&root)
        .arg(&prometheus)
        .args(&args)
        .env_clear()
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", pod.api_port.to_string())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&pod.env);
    let log = dir.join("agent.log");
    let process = ManagedProcess::spawn(name, command, &log)?;
    Ok(RunningAgent { address, root, log, _process: process, forwarder })
}

/// Reads the agent pod of `namespace` in `plane` as the kubelet would assemble it: the
/// `prometheus` Deployment's container (arguments, environment with `POD_NAME` =
/// `pod_name`), ConfigMap `prometheus`, Secret `prometheus-certificates` and a token of
/// the Deployment's ServiceAccount. `None` while any of them is missing.
pub async fn read_pod(
    plane: &crate::ControlPlane,
    namespace: &str,
    pod_name: &str,
    gateway_write_port: u16,
) -> anyhow::Result<Option<AgentPod>> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
    use kube::Api;

    let client = plane.client();
    let Some(deployment) = Api::<Deployment>::namespaced(client.clone(), namespace).get_opt("prometheus").await? else {
        return Ok(None);
    };
    let Some(config) = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt("prometheus").await? else {
        return Ok(None);
    };
    let Some(secret) = Api::<Secret>::namespaced(client.clone(), namespace).get_opt("prometheus-certificates").await?
    else {
        return Ok(None);
    };
    let template = deployment.spec.context("Deployment spec")?.template.spec.context("pod spec")?;
    let container = template.containers.first().context("a container")?;
    let mut env = BTreeMap::new();
    for var in container.env.clone().unwrap_or_default() {
        let field = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
        match (var.value, field) {
            (Some(value), _) => {
                env.insert(var.name, value);
            }
            (None, Some("metadata.name")) => {
                env.insert(var.name, pod_name.to_string());
            }
            (None, Some("metadata.namespace")) => {
                env.insert(var.name, namespace.to_string());
            }
            (None, other) => anyhow::bail!("environment variable {} from {other:?} is not simulated", var.name),
        }
    }
    let account = template.service_account_name.clone().unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(86_400), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client, namespace)
        .create_token_request(&account, &Default::default(), &request)
        .await
        .with_context(|| format!("a token of ServiceAccount {namespace}/{account}"))?
        .status
        .and_then(|s| s.token)
        .context("the token request returned no token")?;
    let certificates = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| Ok((k, String::from_utf8(v.0)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(AgentPod {
        args: container.args.clone().unwrap_or_default(),
        env,
        config: config.data.unwrap_or_default(),
        certificates,
        token,
        namespace: namespace.to_string(),
        api_ca: std::fs::read_to_string(plane.dir().join("ca.crt"))?,
        api_port: plane.url().rsplit_once(':').and_then(|(_, p)| p.parse().ok()).context("API server port")?,
        gateway_write_port,
    }))
}

/// Makes a running Pod `name` in `namespace` at `address`, annotated
/// `prometheus.io/scrape: "true"` and `prometheus.io/port: <port>`, as the kubelet would
/// report it (status set through the status subresource), so the agent's `kubernetes-pods`
/// job discovers it and scrapes `address:port`.
///
/// Why a Pod and not the API server's own EndpointSlice (the `kubernetes-apiservers` job):
/// the test API servers listen on loopback, and Kubernetes refuses loopback addresses in
/// EndpointSlices (`may not be in the loopback range`), which is also why they run with
/// `--endpoint-reconciler-type=none`. Pod IPs have no such rule.
pub async fn publish_scrape_target_pod(
    plane: &crate::ControlPlane,
    namespace: &str,
    name: &str,
    address: Ipv4Addr,
    port: u16,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Container, Pod, PodIP, PodSpec, PodStatus};
    use kube::api::{Patch, PatchParams, PostParams};
    let pods: kube::Api<Pod> = kube::Api::namespaced(plane.client(), namespace);
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            annotations: Some(BTreeMap::from([
                ("prometheus.io/scrape".to_string(), "true".to_string()),
                ("prometheus.io/port".to_string(), port.to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "exporter".into(),
                image: Some("exporter".into()),
                ..Default::default()
            }],
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &pod).await?;
    let status = PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(address.to_string()),
        pod_ips: Some(vec![PodIP { ip: address.to_string() }]),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

//! Real nodes for test control planes: each [`Node`] is what a kind node container would
//! be, made of namespaces instead of a container: containerd (with runc and the CNI
//! bridge plugin), kubelet and kube-proxy, registered to one [`ControlPlane`], so that
//! Deployments run as real pods.
//!
//! Isolation, so that several clusters' nodes share this host and leave nothing behind:
//! - a network namespace per node (its own CNI bridge, kube-proxy rules, conntrack), with a
//!   veth to the test [`Network`]: a bridge inside a namespace of its own, which the host
//!   reaches through one veth whose host end has the address the API servers listen on
//!   ([`Network::host_address`]). No namespace has a default route: pods and nodes reach
//!   the test network, the Service range and their own pod range, nothing off the machine.
//! - a mount namespace per node (private propagation), shared by its containerd, kubelet
//!   and kube-proxy: pod network namespaces, volume and overlay mounts stay inside it and
//!   vanish with it. There the kernel settings kubelet insists on (`vm.overcommit_memory`,
//!   `kernel.panic`, ...) read as kubelet wants, so it never writes the host's.
//! - one cgroup subtree per node: the node's processes in `<root>/system` (containerd's
//!   shims, which leave its process group, stay in it), kubelet's pods in `<root>/pods`.
//!   Stopping a node kills every process of the subtree, then removes the namespaces and
//!   the cgroups.
//!
//! Needs root, `hack/install-node-deps.sh` (containerd, runc, CNI plugins, iptables,
//! conntrack, nsenter) and `hack/build-control-plane.sh --node` (kubelet, kube-proxy,
//! kube-scheduler).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::control_plane::ControlPlane;
use crate::eventually;
use crate::process::ManagedProcess;

/// Runs `ip` (or any command) and fails with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output =
        Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], for clean-up: failures are logged, not returned.
fn run_quietly(program: &str, args: &[&str]) {
    if let Err(error) = run(program, args) {
        tracing::debug!(%error, "clean-up step failed");
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// Removes what nodes leave outside their processes' groups: kills every process of the
/// cgroups named `$prefix` (and with `$2 = tree`, `$prefix-*`), unmounts the mount
/// namespaces bound under `$dir`, deletes the network namespaces of those names and the
/// host's link `$link`, and removes the cgroups. Run by [`Node`]'s and [`Network`]'s drop
/// and, should the test process die without unwinding, by the network's watchdog.
const CLEAN_UP: &str = r#"
prefix=$1 mode=$2 dir=$3 link=$4
names() { echo "$1/$prefix"; [ "$mode" = tree ] && for d in "$1/$prefix"-*; do echo "$d"; done; }
pids() { for d in $(names /sys/fs/cgroup/pids); do [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} +; done; }
i=0
while [ "$i" -lt 50 ]; do
  left=$(pids)
  [ -z "$left" ] && break
  kill -9 $left 2>/dev/null
  sleep 0.1; i=$((i + 1))
done
[ -d "$dir" ] && grep -F " $dir/" /proc/self/mountinfo | awk '{ print $5 }' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for n in $(names /run/netns); do [ -e "$n" ] && ip netns del "${n##*/}" 2>/dev/null; done
[ -n "$link" ] && ip link del "$link" 2>/dev/null
for h in /sys/fs/cgroup/*/; do
  for d in $(names "${h%/}"); do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
done
exit 0
"#;

fn clean_up(prefix: &str, mode: &str, dir: &Path, link: &str) {
    run_quietly("sh", &["-c", CLEAN_UP, "clean-up", prefix, mode, &dir.to_string_lossy(), link]);
}

/// Waits until the owner (this test process) is gone, then cleans up (like
/// [`crate::process`]'s watchdogs, deaf to terminal signals, in a group of its own).
const WATCHDOG: &str = r#"
trap '' INT TERM HUP QUIT
owner=$1; shift
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
sh -c "$@"
"#;

/// The test network: a bridge in a namespace of its own and the host's veth into it,
/// and the directory where its control planes and nodes keep their files.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    dir: PathBuf,
    third_octet: u8,
    switch: String,
    host_link: String,
    nodes: std::sync::atomic::AtomicU8,
    watchdog: Option<std::process::Child>,
}

impl Network {
    /// Creates the switch namespace with its bridge and the host's veth, on a /24 of
    /// 172.30.0.0/16 that no route of this host uses yet, and the directory
    /// `$TMPDIR/mla-pods-<pid>` (removed on drop unless a panic is unwinding).
    pub fn create() -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let pid = std::process::id();
        let prefix = format!("mla-pods-{pid}");
        let routes = ip(&["-4", "route", "show", "table", "all"])?;
        let third_octet = (0..200u32)
            .map(|i| (20 + (pid + i) % 200) as u8)
            .find(|octet| !routes.contains(&format!("172.30.{octet}.")))
            .context("no free /24 in 172.30.0.0/16")?;
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let host_link = format!("mla{:05x}", pid & 0xfffff);
        // not a ManagedProcess: the network's watchdog, in its own process group, must
        // outlive a panic of this process to remove the namespaces, mounts and cgroups
        // (as ManagedProcess's own watchdog does for a process group).
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "watchdog", &pid.to_string(), CLEAN_UP, "clean-up", &prefix, "tree"])
            .arg(&dir)
            .arg(&host_link)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the network's watchdog")?;
        let mut network = Self {
            switch: format!("{prefix}-switch"),
            prefix,
            dir,
            host_link,
            third_octet,
            nodes: std::sync::atomic::AtomicU8::new(0),
            watchdog: Some(watchdog),
        };
        // From here on, drop removes what was made.
        network.make_links()?;
        Ok(network)
    }

    fn make_links(&mut self) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.switch])?;
        let sw = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec!["netns", "exec", &self.switch, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        sw(&["link", "add", "br0", "type", "bridge"])?;
        sw(&["link", "set", "br0", "up"])?;
        sw(&["link", "set", "lo", "up"])?;
        ip(&["link", "add", &self.host_link, "type", "veth", "peer", "name", "host", "netns", &self.switch])?;
        sw(&["link", "set", "host", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.host_address()), "dev", &self.host_link])?;
        ip(&["link", "set", &self.host_link, "up"])?;
        Ok(())
    }

    /// The host's address on the test network: API servers and host processes the pods
    /// reach (Cortex, say) listen here.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 30, self.third_octet, 1)
    }

    /// Where control planes ([`ControlPlane::start_with`]) and nodes keep their files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn next_node(&self) -> anyhow::Result<u8> {
        let index = self.nodes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        anyhow::ensure!(index < 50, "at most 50 nodes per network");
        Ok(index)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        clean_up(&self.prefix, "tree", &self.dir, &self.host_link);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if std::thread::panicking() || std::env::var_os("MLA_KEEP_PODS").is_some() {
            eprintln!("pods e2e: logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a node runs besides its images.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Image archives (`docker save` output or OCI archives) imported into the node's
    /// containerd before kubelet starts.
    pub images: Vec<PathBuf>,
    /// The sandbox (pause) image, one of `images`, by the name containerd knows it
    /// (e.g. `docker.io/mla-controllers/pause:dev`).
    pub sandbox_image: String,
}

/// A node of `plane`: containerd, kubelet and kube-proxy in the node's namespaces and
/// cgroups. Stopped and removed on drop.
pub struct Node {
    name: String,
    dir: PathBuf,
    address: Ipv4Addr,
    netns: String,
    mountns: PathBuf,
    cgroup: String,
    socket: PathBuf,
    processes: Vec<ManagedProcess>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).field("address", &self.address).finish_non_exhaustive()
    }
}

/// Enters the node's cgroup and namespaces, then runs the command: every process of the
/// node starts through it.
const ENTER: &str = r#"
cgroup=$1 mountns=$2 netns=$3; shift 3
echo $$ > "/sys/fs/cgroup/pids/$cgroup/system/cgroup.procs" || exit 1
exec nsenter --mount="$mountns" --net="/run/netns/$netns" -- "$@"
"#;

/// Makes the node's mount namespace: private tmpfs for the network namespaces of pods and
/// containerd's run directory, and the kernel settings kubelet checks (`setupKernelTunables`)
/// shown with the values it wants, so that it does not change them for the whole host.
const MOUNT_SETUP: &str = r#"
set -e
dir=$1
mount -t tmpfs tmpfs /run/netns 2>/dev/null || { mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns; }
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
mkdir -p "$dir/sysctl"
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1; do
  path=${setting%=*} value=${setting#*=}
  file="$dir/sysctl/$(echo "$path" | tr / _)"
  echo "$value" > "$file"
  mount --bind "$file" "/proc/sys/$path"
done
"#;

impl Node {
    /// Starts a node named `name` for `plane` (which must run with [`crate::control_plane::Options`]
    /// `address` = `network.host_address()` and `pods`), imports the images and waits until
    /// the Node object is Ready.
    pub async fn start(
        plane: &ControlPlane,
        network: &Network,
        name: &str,
        options: &NodeOptions,
    ) -> anyhow::Result<Self> {
        let index = network.next_node()?;
        let dir = network.dir().join(format!("node-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let address = Ipv4Addr::new(172, 30, network.third_octet, 10 + index);
        let mut node = Self {
            name: name.to_string(),
            address,
            netns: format!("{}-{name}", network.prefix),
            mountns: dir.join("mnt.ns"),
            cgroup: format!("{}-{name}", network.prefix),
            socket: dir.join("containerd.sock"),
            dir,
            processes: Vec::new(),
        };
        node.make_namespaces(network, index)?;
        node.make_cgroups()?;
        node.start_containerd(&options.sandbox_image, index).await?;
        for image in &options.images {
            node.import(image)?;
        }
        node.start_kubelet(plane)?;
        node.start_kube_proxy(plane)?;
        let nodes: Api<NodeObject> = Api::all(plane.client());
        let node_name = node.name.clone();
        let started = tokio::time::Instant::now();
        eventually(&format!("node {name} Ready"), Duration::from_secs(120), || {
            let nodes = nodes.clone();
            let node_name = node_name.clone();
            async move {
                let Some(object) = nodes.get_opt(&node_name).await? else { return Ok(None) };
                let ready = object
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok(ready.then_some(()))
            }
        })
        .await
        .with_context(|| format!("kubelet log tail:\n{}", tail(&node.dir.join("kubelet.log"), 20)))?;
        tracing::info!(name, ?address, ready_in = ?started.elapsed(), "node ready");
        Ok(node)
    }

    /// The node's name (also its Node object's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address on the test network (NodePorts answer here).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The directory with the node's configuration and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn make_namespaces(&mut self, network: &Network, index: u8) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.netns])?;
        let veth = format!("n{index}");
        ip(&[
            "netns",
            "exec",
            &network.switch,
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &self.netns,
        ])?;
        ip(&["netns", "exec", &network.switch, "ip", "link", "set", &veth, "master", "br0", "up"])?;
        let ns = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec!["netns", "exec", self.netns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ns(&["addr", "add", &format!("{}/24", self.address), "dev", "eth0"])?;
        ns(&["link", "set", "eth0", "up"])?;
        ns(&["link", "set", "lo", "up"])?;

        // A persistent mount namespace (bound to a file in the node's directory).
        std::fs::write(&self.mountns, "")?;
        let mountns = self.mountns.to_string_lossy().into_owned();
        let dir = self.dir.to_string_lossy().into_owned();
        run(
            "unshare",
            &[&format!("--mount={mountns}"), "--propagation", "private", "sh", "-c", MOUNT_SETUP, "setup", &dir],
        )
        .context("making the node's mount namespace")?;
        Ok(())
    }

    fn make_cgroups(&self) -> anyhow::Result<()> {
        for hierarchy in cgroup_hierarchies()? {
            for sub in ["", "/system", "/pods"] {
                let path = hierarchy.join(format!("{}{sub}", self.cgroup));
                std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
                // A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
                if hierarchy.ends_with("cpuset") {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let parent = path.parent().map(|p| p.join(file)).context("cgroup without parent")?;
                        std::fs::write(path.join(file), std::fs::read_to_string(parent)?.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A command run in the node's cgroup and namespaces.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", ENTER, "enter"]).arg(&self.cgroup).arg(&self.mountns).arg(&self.netns).arg(program);
        command
    }

    fn spawn(&mut self, name: &str, command: Command) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        self.processes.push(ManagedProcess::spawn(&format!("{name} ({})", self.name), command, &log)?);
        Ok(())
    }

    async fn start_containerd(&mut self, sandbox_image: &str, index: u8) -> anyhow::Result<()> {
        let dir = &self.dir;
        let cni_dir = dir.join("cni");
        std::fs::create_dir_all(&cni_dir)?;
        // Pods route to the test network and the Service range through the node, nothing
        // else: no default route. Their traffic leaving the node is masqueraded to the
        // node's address, inside the node's namespace (which has no route off the machine).
        let cni = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "mla-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.244.{index}.0/24")}]],
                        "routes": [{"dst": "10.0.0.0/16"}, {"dst": format!("{}.0/24", self.address.octets()[..3].iter().map(u8::to_string).collect::<Vec<_>>().join("."))}],
                        "dataDir": dir.join("cni-ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(cni_dir.join("10-mla.conflist"), serde_json::to_string_pretty(&cni)?)?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  # This machine refuses lowering oom_score_adj below the parent's (even to root), and
  # kubelet asks -998 for sandboxes: clamp to containerd's own, as rootless kind does.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = dir.join("containerd/root").display(),
            state = dir.join("containerd/state").display(),
            socket = self.socket.display(),
            opt = dir.join("containerd/opt").display(),
            cni = cni_dir.display(),
            runc = std::env::var("MLA_NODE_RUNC").unwrap_or_else(|_| "runc".into()),
        );
        let config_path = dir.join("containerd.toml");
        std::fs::write(&config_path, config)?;
        let mut command = self.command(Path::new("containerd"));
        command.arg("--config").arg(&config_path);
        self.spawn("containerd", command)?;
        let socket = self.socket.clone();
        eventually("containerd socket", Duration::from_secs(30), || {
            let socket = socket.clone();
            async move { Ok(socket.exists().then_some(())) }
        })
        .await
        .with_context(|| format!("containerd log tail:\n{}", tail(&self.dir.join("containerd.log"), 20)))?;
        Ok(())
    }

    /// Imports an image archive into the node's containerd (namespace `k8s.io`, where
    /// kubelet's images live).
    pub fn import(&self, archive: &Path) -> anyhow::Result<()> {
        let socket = self.socket.to_string_lossy().into_owned();
        let archive = archive.to_string_lossy().into_owned();
        run("ctr", &["--address", &socket, "-n", "k8s.io", "images", "import", &archive])
            .with_context(|| format!("importing {archive} into node {}", self.name))?;
        Ok(())
    }

    fn start_kubelet(&mut self, plane: &ControlPlane) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        std::fs::write(dir.join("ca.crt"), plane.ca_pem())?;
        // No name server: what pods reach is named by address (see docs/testing.md).
        std::fs::write(dir.join("resolv.conf"), "")?;
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.address.to_string(),
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}/pods", self.cgroup),
            "failCgroupV1": false,
            "failSwapOn": false,
            "containerRuntimeEndpoint": format!("unix://{}", self.socket.display()),
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": dir.join("ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": dir.join("pod-logs"),
            "resolvConf": dir.join("resolv.conf"),
            "clusterDomain": "cluster.local",
            // The disk is shared with everything else on the machine: never evict or
            // collect images for it.
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": false,
            // Secret volumes (the gateway's certificates) follow their Secret within
            // about this period.
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "rotateCertificates": false,
            "serverTLSBootstrap": false,
        });
        let config_path = dir.join("kubelet.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let kubelet = crate::control_plane::binaries()?.join("kubelet");
        anyhow::ensure!(kubelet.exists(), "{} is missing: run hack/build-control-plane.sh --node", kubelet.display());
        let mut command = self.command(&kubelet);
        command
            .arg(format!("--config={}", config_path.display()))
            .arg(format!("--kubeconfig={}", plane.admin_kubeconfig().display()))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet-pki").display()))
            .arg(format!("--hostname-override={}", self.name))
            .arg(format!("--node-ip={}", self.address))
            .arg("--v=1");
        self.spawn("kubelet", command)
    }

    fn start_kube_proxy(&mut self, plane: &ControlPlane) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let config = serde_json::json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": plane.admin_kubeconfig()},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "bindAddress": self.address.to_string(),
            "clusterCIDR": "10.244.0.0/16",
            "nodePortAddresses": [format!("{}/32", self.address)],
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            // The conntrack table size is the host's, not the namespace's: leave it.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        });
        let config_path = dir.join("kube-proxy.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let binary = crate::control_plane::binaries()?.join("kube-proxy");
        let mut command = self.command(&binary);
        command.arg(format!("--config={}", config_path.display())).arg("--v=1");
        self.spawn("kube-proxy", command)
    }

    /// Stops everything of the node: kills its processes, then every process left in its
    /// cgroups (containers, containerd's shims), releases its namespaces and cgroups.
    fn tear_down(&mut self) {
        // Kubelet first, so that it does not restart what is being killed.
        for process in self.processes.iter_mut().rev() {
            process.kill();
        }
        self.processes.clear();
        clean_up(&self.cgroup, "exact", &self.dir, "");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// Every cgroup v1 hierarchy (and the v2 one of a hybrid layout) under /sys/fs/cgroup.
fn cgroup_hierarchies() -> anyhow::Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").context("reading /sys/fs/cgroup")? {
        let path = entry?.path();
        if path.join("cgroup.procs").exists() && !path.is_symlink() {
            all.push(path);
        }
    }
    Ok(all)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The image references of `hack/build-images.sh --list` (docs/images.md), by image name
/// (`seed-controller-manager`, `nginx`, `pause`, ...), for `IMAGE_TAG` as set.
pub fn image_references() -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let script = crate::workspace_root().join("hack/build-images.sh");
    let output = run("bash", &[&script.to_string_lossy(), "--list"])?;
    Ok(output
        .lines()
        .filter_map(|line| {
            line.split_once(' ').map(|(name, reference)| (name.to_string(), reference.trim().to_string()))
        })
        .collect())
}

/// Writes image `reference` from the local Docker engine (where `make images` put it)
/// into an archive under `dir` (`docker save`), for [`NodeOptions::images`].
pub fn save_image(dir: &Path, reference: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let archive = dir.join(format!("{}.tar", reference.replace(['/', ':'], "_")));
    run("docker", &["save", "-o", &archive.to_string_lossy(), reference])
        .with_context(|| format!("saving image {reference} (built by `make images`?)"))?;
    Ok(archive)
}

/// The name containerd gives an image reference without a registry (`docker.io/...`).
pub fn containerd_name(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    if reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

impl Node {
    /// Gives an imported image a second name, as a registry mirror would serve it: for
    /// images the product names without a flag to change them.
    pub fn tag(&self, reference: &str, alias: &str) -> anyhow::Result<()> {
        let socket = self.socket.to_string_lossy().into_owned();
        run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "tag",
                "--force",
                &containerd_name(reference),
                &containerd_name(alias),
            ],
        )?;
        Ok(())
    }
}

impl Node {
    /// GET `url` from inside the node's network namespace (where pod addresses are
    /// reachable), with curl; the body on a 2xx answer.
    pub fn http_get(&self, url: &str) -> anyhow::Result<String> {
        run("nsenter", &[&format!("--net=/run/netns/{}", self.netns), "curl", "-sSf", "--max-time", "5", url])
    }
}

/// The sum of every series of `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Node {
    /// Runs `iptables` with `args` in the node's network namespace (its own rules only).
    pub fn iptables(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec![format!("--net=/run/netns/{}", self.netns), "iptables".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("nsenter", &all)?;
        Ok(())
    }
}

impl Node {
    /// Runs curl with `args` from inside the node's network namespace; its stdout.
    pub fn curl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![
            format!("--net=/run/netns/{}", self.netns),
            "curl".into(),
            "-sS".into(),
            "--max-time".into(),
            "5".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("nsenter", &all)
    }
}

impl Node {
    /// The contents of the files matching `pattern` (a shell glob under the node's
    /// directory, e.g. `kubelet/pods/*/volumes/kubernetes.io~secret/*/ca.crt`) as the
    /// node's processes see them: volumes are mounted in the node's mount namespace.
    pub fn read_mounted(&self, pattern: &str) -> anyhow::Result<String> {
        let script = format!("cat {}/{pattern}", self.dir.display());
        run("nsenter", &[&format!("--mount={}", self.mountns.display()), "sh", "-c", &script])
    }
}

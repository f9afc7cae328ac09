//! The deployed form on real nodes (mla_e2e::node; docs/testing.md, "Pods"): the binaries
//! run from their images as the Deployments of `manifests/` and as the Deployments the
//! seed manager writes, with in-cluster ServiceAccount credentials, on a seed cluster and a
//! user cluster, each with one node; the Prometheus agent in the user cluster pushes
//! through the gateway's NodePort Service to Cortex on the host.
//!
//! Needs root, `hack/install-node-deps.sh`, `hack/build-control-plane.sh --node` and the
//! images of `make images` in the local Docker engine: `make e2e-pods` does all of it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use mla_common::api::Cluster;
use mla_e2e::control_plane::Options;
use mla_e2e::cortex::Cortex;
use mla_e2e::node::{Network, Node, NodeOptions, containerd_name, image_references, metric_sum, save_image};
use mla_e2e::{ControlPlane, apply_manifest, apply_seed_manager_rbac, eventually, workspace_root};

const CLUSTER: &str = "c1";
const SEED_NAMESPACE: &str = "kubermatic";
/// How long the agent cannot reach the gateway while its pod is replaced.
const OUTAGE: Duration = Duration::from_secs(15);

fn apply() -> PatchParams {
    PatchParams::apply("mla-e2e-pods").force()
}

/// Waits until Deployment `namespace/name` has `replicas` ready replicas; returns how long
/// that took.
async fn deployment_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let result = eventually(&format!("Deployment {namespace}/{name} with {replicas} ready replicas"), timeout, || {
        let api = api.clone();
        async move {
            let Some(deployment) = api.get_opt(name).await? else { return Ok(None) };
            let ready = deployment.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok((ready >= replicas).then_some(()))
        }
    })
    .await;
    if let Err(error) = result {
        // What the pods say is the first thing to read when they do not come up.
        let mut states = Vec::new();
        for pod in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let status = pod.status.unwrap_or_default();
            states.push(format!(
                "{}: {:?} {}",
                pod.metadata.name.unwrap_or_default(),
                status.phase,
                serde_json::to_string(&status.container_statuses).unwrap_or_default()
            ));
        }
        return Err(error.context(format!("pods of {namespace}:\n{}", states.join("\n"))));
    }
    Ok(started.elapsed())
}

async fn lease_holder(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SEED_NAMESPACE);
    Ok(leases.get_opt("seed-controller-manager").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

/// The seed manager's Deployment from `manifests/`, with the image `make images` built and
/// the flags an operator sets for this seed (as a kustomize overlay would).
fn seed_manager_deployment(image: &str, extra_args: &[String]) -> anyhow::Result<Deployment> {
    manifest_deployment("seed-controller-manager", image, extra_args)
}

/// The Deployment of `manifests/<binary>/deployment.yaml` with `image` and `extra_args`.
fn manifest_deployment(binary: &str, image: &str, extra_args: &[String]) -> anyhow::Result<Deployment> {
    let path = workspace_root().join("manifests").join(binary).join("deployment.yaml");
    let mut deployment: Deployment = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let container = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
        .context("deployment.yaml without a container")?;
    container.image = Some(image.to_string());
    container.args.get_or_insert_with(Vec::new).extend_from_slice(extra_args);
    Ok(deployment)
}

/// Start-up times, printed as they are measured (a failing run still shows how far it
/// got) and once more together at the end.
#[derive(Default)]
struct Figures(Vec<(String, Duration)>);

impl Figures {
    fn push(&mut self, (figure, value): (String, Duration)) {
        println!("pods e2e: {figure}: {:.1} s", value.as_secs_f64());
        self.0.push((figure, value));
    }

    fn summary(&self) {
        println!("pods e2e figures:");
        for (figure, value) in &self.0 {
            println!("  {figure}: {:.1} s", value.as_secs_f64());
        }
    }
}

#[tokio::test]
#[ignore = "needs root, node binaries and the images of the current tree: `make e2e-pods` builds them and runs it"]
async fn deployed_form_runs_in_pods() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut figures = Figures::default();
    let network = Network::create()?;
    let host = network.host_address();
    let images = image_references()?;
    let image = |name: &str| {
        images.get(name).cloned().with_context(|| format!("no image {name} in hack/build-images.sh --list"))
    };
    let archives = network.dir().join("images");
    let archive = |name: &str| -> anyhow::Result<PathBuf> { save_image(&archives, &image(name)?) };
    let pause = archive("pause")?;
    let sandbox_image = containerd_name(&image("pause")?);

    let cortex = Cortex::start_on(&network.dir().join("cortex"), host).await?;
    let options = Options { address: Some(host), pods: true, ..Default::default() };
    let mut seed = ControlPlane::start_with("seed", network.dir(), &options).await?;
    seed.start_pod_controllers()?;
    seed.install_crds().await?;
    let mut user = ControlPlane::start_with("user", network.dir(), &options).await?;
    user.start_pod_controllers()?;

    let node_started = Instant::now();
    let seed_node = Node::start(
        &seed,
        &network,
        "seed-1",
        &NodeOptions {
            images: vec![
                pause.clone(),
                archive("seed-controller-manager")?,
                archive("user-cluster-controller-manager")?,
                archive("nginx")?,
            ],
            sandbox_image: sandbox_image.clone(),
        },
    )
    .await?;
    figures.push(("seed node Ready (images imported)".into(), node_started.elapsed()));
    let node_started = Instant::now();
    let user_node = Node::start(
        &user,
        &network,
        "user-1",
        &NodeOptions { images: vec![pause.clone(), archive("prometheus")?], sandbox_image: sandbox_image.clone() },
    )
    .await?;
    figures.push(("user node Ready (images imported)".into(), node_started.elapsed()));

    // P1: seed-controller-manager as the Deployment of manifests/, under its RBAC, with
    // its ServiceAccount's in-cluster credentials.
    let client = seed.client();
    apply_seed_manager_rbac(&client).await?;
    apply_manifest(&client, &workspace_root().join("manifests/seed-controller-manager/service.yaml")).await?;
    let cortex_url = cortex.url().to_string();
    // Nothing plays Loki here: its URLs point at a closed port of the host.
    let nothing = format!("http://{host}:9");
    let deployment = seed_manager_deployment(
        &image("seed-controller-manager")?,
        &[
            format!("--gateway-image={}", image("nginx")?),
            format!("--user-cluster-controller-manager-image={}", image("user-cluster-controller-manager")?),
            // Passed on to each user-cluster manager as `--prometheus-image`.
            format!("--user-cluster-prometheus-image={}", image("prometheus")?),
            format!("--cortex-distributor-url={cortex_url}"),
            format!("--cortex-query-frontend-url={cortex_url}"),
            format!("--cortex-alertmanager-url={cortex_url}"),
            format!("--cortex-ruler-url={cortex_url}"),
            format!("--loki-distributor-url={nothing}"),
            format!("--loki-query-frontend-url={nothing}"),
            format!("--loki-ruler-url={nothing}"),
            // Every upstream is an address: the gateway resolves no name (no DNS here).
            format!("--gateway-resolver={host}"),
            "--leader-election-lease-duration=4s".into(),
            "--leader-election-renew-deadline=3s".into(),
            "--leader-election-retry-period=1s".into(),
        ],
    )?;
    Api::<Deployment>::namespaced(client.clone(), SEED_NAMESPACE)
        .patch("seed-controller-manager", &apply(), &Patch::Apply(&deployment))
        .await?;
    let ready =
        deployment_ready(&client, SEED_NAMESPACE, "seed-controller-manager", 2, Duration::from_secs(180)).await?;
    figures.push(("seed-controller-manager 2/2 Ready".into(), ready));
    let leader = eventually("a seed manager leader", Duration::from_secs(60), || {
        let client = client.clone();
        async move { lease_holder(&client).await }
    })
    .await?;

    // A Cluster with MLA on, as KKP would have it: namespace, status, and the user
    // cluster's kubeconfig (its API server on the test network) in `admin-kubeconfig`.
    let namespace = format!("cluster-{CLUSTER}");
    mla_e2e::master::ensure_namespace(&client, &namespace).await?;
    let kubeconfig = std::fs::read_to_string(user.admin_kubeconfig())?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("admin-kubeconfig".into()), ..Default::default() },
        string_data: Some(BTreeMap::from([("kubeconfig".to_string(), kubeconfig)])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch("admin-kubeconfig", &apply(), &Patch::Apply(secret))
        .await?;
    let clusters: Api<Cluster> = Api::all(client.clone());
    let cluster: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": CLUSTER, "labels": {"project-id": "p1"}},
        "spec": {"humanReadableName": "c1 (pods)", "exposeStrategy": "NodePort", "mla": {"monitoringEnabled": true, "loggingEnabled": false}},
    }))?;
    clusters.patch(CLUSTER, &apply(), &Patch::Apply(&cluster)).await?;
    // The gateway is reached at the seed node's address (its NodePort): no name to resolve.
    let address = seed_node.address().to_string();
    let status = serde_json::json!({"status": {"namespaceName": namespace,
        "address": {"externalName": address, "ip": address, "port": 6443, "url": format!("https://{address}:6443")}}});
    clusters.patch_status(CLUSTER, &PatchParams::default(), &Patch::Merge(&status)).await?;

    let cluster_created = Instant::now();
    deployment_ready(&client, &namespace, "mla-gateway", 1, Duration::from_secs(180)).await?;
    figures.push(("gateway (nginx) Ready after the Cluster was created".into(), cluster_created.elapsed()));

    // P2: the user-cluster manager as the seed manager deployed it, and the agent it
    // installs in the user cluster, pushing through the gateway to Cortex.
    deployment_ready(&client, &namespace, "mla-user-cluster-controller-manager", 1, Duration::from_secs(180)).await?;
    figures.push((
        "user-cluster-controller-manager Ready after the Cluster was created".into(),
        cluster_created.elapsed(),
    ));
    deployment_ready(&user.client(), "mla-system", "prometheus", 1, Duration::from_secs(180)).await?;
    figures.push(("Prometheus agent Ready after the Cluster was created".into(), cluster_created.elapsed()));
    let sample_started = Instant::now();
    let query = format!("count({{cluster=\"{CLUSTER}\"}})");
    eventually("a sample of the user cluster in Cortex under its tenant", Duration::from_secs(180), || {
        let cortex = &cortex;
        let query = query.clone();
        async move { Ok((!cortex.query(CLUSTER, &query).await?.is_empty()).then_some(())) }
    })
    .await?;
    figures.push(("first sample queryable after the agent was Ready".into(), sample_started.elapsed()));
    figures.push(("test start to first sample".into(), started.elapsed()));
    // Nothing of it under another tenant.
    anyhow::ensure!(
        cortex.query("other", &query).await?.is_empty(),
        "the user cluster's samples leaked to another tenant"
    );

    // P3: the gateway pod is deleted while the agent pushes: its samples wait in the
    // agent's WAL and arrive once the new pod serves; none is given up. A new pod serves
    // within about two seconds, less than the agent's send interval, so the user node
    // also refuses connections to the seed node for OUTAGE: the agent must hold and retry.
    let agent_pods: Api<Pod> = Api::namespaced(user.client(), "mla-system");
    let agent_ip = agent_pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=prometheus"))
        .await?
        .items
        .into_iter()
        .find_map(|p| p.status.and_then(|s| s.pod_ip))
        .context("no address of the Prometheus agent pod")?;
    let agent_metrics = || user_node.http_get(&format!("http://{agent_ip}:9090/metrics"));
    let before = agent_metrics()?;
    let gateway_pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let old_gateways: Vec<String> = gateway_pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .filter(|n| n.starts_with("mla-gateway-"))
        .collect();
    anyhow::ensure!(!old_gateways.is_empty(), "no gateway pod in {namespace}");
    let deleted_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let outage_started = Instant::now();
    let seed_address = seed_node.address().to_string();
    let block = ["FORWARD", "-d", &seed_address, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"];
    user_node.iptables(&[&["-I"], &block[..]].concat())?;
    for pod in &old_gateways {
        gateway_pods.delete(pod, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
    }

    eventually("a new gateway pod Ready", Duration::from_secs(120), || {
        let gateway_pods = gateway_pods.clone();
        let old_gateways = old_gateways.clone();
        async move {
            let ready = gateway_pods.list(&ListParams::default()).await?.items.into_iter().any(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                name.starts_with("mla-gateway-")
                    && !old_gateways.contains(&name)
                    && p.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        }
    })
    .await?;
    figures.push(("new gateway pod Ready after the old one's deletion".into(), outage_started.elapsed()));
    tokio::time::sleep(OUTAGE.saturating_sub(outage_started.elapsed())).await;
    user_node.iptables(&[&["-D"], &block[..]].concat())?;
    // Everything the agent had when the pod went is sent: its newest sent sample is newer
    // than the deletion.
    eventually("the agent's samples from the outage sent", Duration::from_secs(120), || {
        let sent =
            agent_metrics().map(|m| metric_sum(&m, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"));
        async move { Ok((sent? > deleted_at + 5.0).then_some(())) }
    })
    .await?;
    figures.push(("agent caught up after the gateway pod's deletion".into(), outage_started.elapsed()));
    let after = agent_metrics()?;
    for lost in ["prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_dropped_total"] {
        anyhow::ensure!(
            metric_sum(&after, lost) == metric_sum(&before, lost),
            "{lost} went from {} to {} across the gateway pod's deletion",
            metric_sum(&before, lost),
            metric_sum(&after, lost)
        );
    }
    let retried = metric_sum(&after, "prometheus_remote_storage_samples_retried_total")
        - metric_sum(&before, "prometheus_remote_storage_samples_retried_total");
    println!("pods e2e: samples retried across the gateway pod's deletion: {retried}");
    anyhow::ensure!(retried > 0.0, "the agent retried nothing: the outage did not reach it");

    // P3: a CA rotation as it happens (docs/gateway.md) while the agent pushes: first the
    // successor CA is prepared and trusted by gateway and agent, then it is promoted (the
    // old CA still trusted). The gateway pod reloads: a client trusting only the new CA,
    // with a certificate of the new CA, gets through. No push fails.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let old_ca = secrets.get("mla-gateway-ca").await?;
    let old_ca_pem = old_ca
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .context("mla-gateway-ca without ca.crt")?;
    let next = mla_common::pki::create_ca(CLUSTER, std::time::SystemTime::now())?;
    let client_cert = mla_common::pki::issue_client_certificate(&next, "prometheus", std::time::SystemTime::now())?;
    let files = network.dir().join("rotation");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("ca.crt"), &next.cert_pem)?;
    std::fs::write(files.join("client.crt"), &client_cert.cert_pem)?;
    std::fs::write(files.join("client.key"), &client_cert.key_pem)?;
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), &namespace);
    let node_port = services
        .get("mla-gateway-ext")
        .await?
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.into_iter().find_map(|p| p.node_port))
        .context("mla-gateway-ext without a NodePort")?;
    let gateway_url = format!("https://{address}:{node_port}/");
    let before = agent_metrics()?;
    let rotation_started = Instant::now();
    // Stage 1: the successor is prepared (what the seed manager does 60 days before expiry).
    let prepared = serde_json::json!({"stringData": {"ca-next.crt": next.cert_pem, "ca-next.key": next.key_pem}});
    secrets.patch("mla-gateway-ca", &PatchParams::default(), &Patch::Merge(&prepared)).await?;
    let client_of_next_ca = |cacert: &str| {
        user_node.curl(&[
            "--cacert",
            cacert,
            "--cert",
            &files.join("client.crt").to_string_lossy(),
            "--key",
            &files.join("client.key").to_string_lossy(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &gateway_url,
        ])
    };
    // The write server answers GET / with 404 once TLS and the client certificate went
    // through; a client certificate it does not trust gets 400 ("The SSL certificate error").
    let got_through = |answer: anyhow::Result<String>| answer.ok().filter(|code| code.trim() == "404").map(|_| ());
    let old_ca_file = files.join("old-ca.crt");
    std::fs::write(&old_ca_file, &old_ca_pem)?;
    eventually("the gateway pod trusting the successor CA", Duration::from_secs(180), || {
        let answer = got_through(client_of_next_ca(&old_ca_file.to_string_lossy()));
        async move { Ok(answer) }
    })
    .await?;
    let mounted_bundle = "kubelet/pods/*/volumes/kubernetes.io~secret/*/ca.crt";
    let next_pem = next.cert_pem.trim().to_string();
    eventually("the agent pod trusting the successor CA", Duration::from_secs(180), || {
        let bundle = user_node.read_mounted(mounted_bundle);
        let next_pem = next_pem.clone();
        async move { Ok(bundle.ok().filter(|b| b.contains(&next_pem)).map(|_| ())) }
    })
    .await?;
    figures.push(("successor CA trusted by gateway and agent pods".into(), rotation_started.elapsed()));
    // Stage 2: the successor is promoted (30 days before expiry), the old CA stays trusted.
    let promotion_started = Instant::now();
    let rotated_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    let promoted = serde_json::json!({
        "stringData": {"ca.crt": next.cert_pem, "ca.key": next.key_pem, "ca-previous.crt": old_ca_pem},
        "data": {"ca-next.crt": null, "ca-next.key": null},
    });
    secrets.patch("mla-gateway-ca", &PatchParams::default(), &Patch::Merge(&promoted)).await?;
    let new_ca_file = files.join("ca.crt");
    eventually("the gateway serving a certificate of the new CA", Duration::from_secs(180), || {
        let answer = got_through(client_of_next_ca(&new_ca_file.to_string_lossy()));
        async move { Ok(answer) }
    })
    .await?;
    figures.push(("gateway serving the new CA's certificate after the promotion".into(), promotion_started.elapsed()));
    let agent_secret: Api<Secret> = Api::namespaced(user.client(), "mla-system");
    let next_pem = next.cert_pem.clone();
    eventually("the agent's client certificate from the new CA", Duration::from_secs(180), || {
        let agent_secret = agent_secret.clone();
        let next_pem = next_pem.clone();
        async move {
            let secret = agent_secret.get("prometheus-certificates").await?;
            let field = |key: &str| {
                secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned())
            };
            let spec = mla_common::pki::LeafSpec::client("prometheus")?;
            let renewed = mla_common::pki::leaf_renewal(
                field("client.crt").as_deref(),
                field("client.key").as_deref(),
                &next_pem,
                &spec,
                std::time::SystemTime::now(),
            )
            .is_none();
            Ok(renewed.then_some(()))
        }
    })
    .await?;
    figures.push(("agent holding a certificate of the new CA after the promotion".into(), promotion_started.elapsed()));
    eventually("the agent's samples after the rotation sent", Duration::from_secs(180), || {
        let sent =
            agent_metrics().map(|m| metric_sum(&m, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"));
        async move { Ok((sent? > rotated_at + 30.0).then_some(())) }
    })
    .await?;
    let after = agent_metrics()?;
    for lost in ["prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_dropped_total"] {
        anyhow::ensure!(
            metric_sum(&after, lost) == metric_sum(&before, lost),
            "{lost} went from {} to {} across the CA rotation",
            metric_sum(&before, lost),
            metric_sum(&after, lost)
        );
    }

    // P3: the leader pod is deleted; the other replica takes over and work goes on (a
    // second Cluster gets its gateway; it has no user cluster, so its user-cluster
    // manager waits for its kubeconfig Secret and is not looked at).
    let pods: Api<Pod> = Api::namespaced(client.clone(), SEED_NAMESPACE);
    let leader_pod = leader.split('_').next().unwrap_or(&leader).to_string();
    let failover_started = Instant::now();
    pods.delete(&leader_pod, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting leader pod {leader_pod} (lease holder {leader})"))?;
    let new_leader = eventually("another seed manager leader", Duration::from_secs(60), || {
        let client = client.clone();
        let leader = leader.clone();
        // A replica that stops releases the lease (holder empty) before another takes it.
        async move { Ok(lease_holder(&client).await?.filter(|h| !h.is_empty() && *h != leader)) }
    })
    .await?;
    figures.push(("new leader after the leader pod's deletion".into(), failover_started.elapsed()));
    mla_e2e::master::ensure_namespace(&client, "cluster-c2").await?;
    let second: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": "c2", "labels": {"project-id": "p1"}},
        "spec": {"humanReadableName": "c2 (pods)", "exposeStrategy": "NodePort", "mla": {"monitoringEnabled": true, "loggingEnabled": false}},
    }))?;
    clusters.patch("c2", &apply(), &Patch::Apply(&second)).await?;
    let status = serde_json::json!({"status": {"namespaceName": "cluster-c2",
        "address": {"externalName": address, "ip": address, "port": 6443, "url": format!("https://{address}:6443")}}});
    clusters.patch_status("c2", &PatchParams::default(), &Patch::Merge(&status)).await?;
    let second_gateway = deployment_ready(&client, "cluster-c2", "mla-gateway", 1, Duration::from_secs(180)).await?;
    figures.push(("second Cluster's gateway Ready under the new leader".into(), second_gateway));
    deployment_ready(&client, SEED_NAMESPACE, "seed-controller-manager", 2, Duration::from_secs(180)).await?;

    // The master: master-controller-manager as the Deployment of manifests/ on a node of
    // the master cluster, with its ServiceAccount's in-cluster credentials; the seed
    // registered as KKP registers it (a Seed and a kubeconfig Secret of the seed
    // ServiceAccount of manifests/master-controller-manager/seed-rbac.yaml, whose server is
    // the seed's API server on the test network). A Project made in the master is copied
    // into the seed.
    let mut master = ControlPlane::start_with("master", network.dir(), &options).await?;
    master.start_pod_controllers()?;
    master.install_crds().await?;
    let node_started = Instant::now();
    let master_node = Node::start(
        &master,
        &network,
        "master-1",
        &NodeOptions { images: vec![pause, archive("master-controller-manager")?], sandbox_image },
    )
    .await?;
    figures.push(("master node Ready (images imported)".into(), node_started.elapsed()));
    mla_e2e::master::prepare_master(&master).await?;
    apply_manifest(&master.client(), &mla_e2e::master::manifest("service.yaml")).await?;
    mla_e2e::master::register_seed(&master, &seed, "seed-1").await?;
    let master_started = Instant::now();
    let deployment = manifest_deployment("master-controller-manager", &image("master-controller-manager")?, &[])?;
    Api::<Deployment>::namespaced(master.client(), SEED_NAMESPACE)
        .patch("master-controller-manager", &apply(), &Patch::Apply(&deployment))
        .await?;
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = deployment_ready(
        &master.client(),
        SEED_NAMESPACE,
        "master-controller-manager",
        replicas,
        Duration::from_secs(180),
    )
    .await?;
    figures.push((format!("master-controller-manager {replicas}/{replicas} Ready"), ready));
    let project: mla_common::api::Project = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
        "metadata": {"name": "p1"},
        "spec": {"name": "pods project"},
    }))?;
    Api::<mla_common::api::Project>::all(master.client()).patch("p1", &apply(), &Patch::Apply(&project)).await?;
    let copied = Instant::now();
    let seed_projects: Api<mla_common::api::Project> = Api::all(client.clone());
    eventually("Project p1 copied from the master into the seed", Duration::from_secs(120), || {
        let seed_projects = seed_projects.clone();
        async move { Ok(seed_projects.get_opt("p1").await?.filter(|p| p.spec.name == "pods project").map(|_| ())) }
    })
    .await?;
    figures.push(("Project copied into the seed".into(), copied.elapsed()));
    figures.push(("master-controller-manager applied to Project in the seed".into(), master_started.elapsed()));

    figures.summary();
    println!("pods e2e: leader {leader} -> {new_leader}");
    drop(master_node);
    drop(user_node);
    drop(seed_node);
    Ok(())
}

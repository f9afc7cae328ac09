//! The Alertmanager IAP for real: oauth2-proxy 7.15.6 (built by `hack/build-real-parts.sh`)
//! runs with the arguments, Secret and emails ConfigMap the real seed-controller-manager
//! wrote into a real API server, against a mock OIDC provider (oauth2-proxy's own
//! `mockoidc`), in front of the cluster's gateway read path (real nginx with the rendered
//! gateway configuration) and a backend standing in for Cortex's Alertmanager that records
//! the tenant of every request.
//!
//! The test plays the browser and the Ingress controller: it sends oauth2-proxy what an
//! Ingress for `alertmanager.c1.iap.example.com` would (the `Host` header, TLS terminated
//! there, `X-Forwarded-Proto: https`) and keeps the cookies itself, so the secure cookies
//! and the `https://` redirect URL run unmodified.
//!
//! Adapted, and only these (each said where it is done): the listen address (loopback, a
//! free port), the emails file's path (a scratch directory laid out as the kubelet lays out
//! a ConfigMap volume) and the upstream's host (the gateway's loopback read port instead of
//! the Service's DNS name; the path is kept). The issuer is the mock's, given to the seed
//! manager as its `--iap-oidc-issuer-url`, so that argument runs as written.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use mla_common::api::*;
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, ManagedProcess, apply_manifest, eventually, free_port, workspace_root};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE};
use seed_controller_manager::gateway::nginx::{self, Upstreams};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "cluster-c1";
const HOST_NAME: &str = "alertmanager.c1.iap.example.com";
const CLIENT_ID: &str = "mla-alertmanager";
const CLIENT_SECRET: &str = "s3cr3t";
/// Where the Deployment mounts the emails ConfigMap (the directory of
/// `--authenticated-emails-file`).
const EMAILS_MOUNT: &str = "/etc/oauth2-proxy/emails";

/// The mock OIDC provider: the issuer and a control API choosing who signs in next.
struct Provider {
    _process: ManagedProcess,
    issuer: String,
    control: String,
}

impl Provider {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let (port, control_port) = (free_port()?, free_port()?);
        let mut command = Command::new(mla_e2e::real_parts::binary("mock-oidc", "mock-oidc")?);
        command
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--control=127.0.0.1:{control_port}"))
            .arg(format!("--client-id={CLIENT_ID}"))
            .arg(format!("--client-secret={CLIENT_SECRET}"));
        let process = ManagedProcess::spawn("mock-oidc", command, &dir.join("mock-oidc.log"))?;
        let issuer = format!("http://127.0.0.1:{port}/oidc");
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        eventually("the mock OIDC provider", WAIT, || {
            let discovery = discovery.clone();
            async move { Ok(reqwest::get(&discovery).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await?;
        Ok(Self { _process: process, issuer, control: format!("http://127.0.0.1:{control_port}") })
    }

    /// The next sign-in at the provider is `email`'s.
    async fn next_user(&self, email: &str) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}/users", self.control))
            .body(serde_json::json!({ "email": email }).to_string())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "queueing {email}: {}", response.status());
        Ok(())
    }
}

/// What the stand-in for Cortex's Alertmanager saw: (tenant header, path) per request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn record(State(seen): State<Seen>, request: Request) -> &'static str {
    let tenant = request
        .headers()
        .get_all("x-scope-orgid")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    seen.lock().unwrap().push((tenant, request.uri().path().to_string()));
    "<title>Alertmanager</title>"
}

/// Writes ConfigMap `data` into `dir` the way the kubelet's atomic writer updates a
/// ConfigMap volume: the files live in a fresh timestamped directory, `..data` is a
/// symlink to it swapped by rename, each key is a symlink `key -> ..data/key`, and the
/// previous directory is removed afterwards (that removal is the event oauth2-proxy's
/// watcher reloads on).
fn project_config_map(dir: &Path, data: &BTreeMap<String, String>, generation: u32) {
    let payload = format!("..2026_12_01_00_00_00.{generation:06}");
    std::fs::create_dir_all(dir.join(&payload)).unwrap();
    for (key, value) in data {
        std::fs::write(dir.join(&payload).join(key), value).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&payload, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for key in data.keys() {
        if std::fs::symlink_metadata(dir.join(key)).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// A browser behind the Ingress: remembers cookies, follows no redirect by itself.
struct Browser {
    client: reqwest::Client,
    proxy: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(proxy: &str) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { client, proxy: proxy.to_string(), cookies: BTreeMap::new() }
    }

    /// GET `url`. Requests for `https://<HOST_NAME>/...` go to oauth2-proxy as the
    /// Ingress would send them; any other URL (the provider) is fetched directly.
    async fn get(&mut self, url: &str) -> anyhow::Result<reqwest::Response> {
        let request = match url.strip_prefix(&format!("https://{HOST_NAME}")) {
            Some(path) => {
                let mut request = self
                    .client
                    .get(format!("{}{path}", self.proxy))
                    .header(HOST, HOST_NAME)
                    .header("x-forwarded-proto", "https")
                    .header("x-forwarded-host", HOST_NAME)
                    .header("x-forwarded-for", "192.0.2.10");
                if !self.cookies.is_empty() {
                    let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
                    request = request.header(COOKIE, cookie);
                }
                request
            }
            None => self.client.get(url),
        };
        let response = request.send().await?;
        if url.starts_with(&format!("https://{HOST_NAME}")) {
            for value in response.headers().get_all(SET_COOKIE) {
                let pair = value.to_str()?.split(';').next().unwrap_or_default();
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if value.is_empty() {
                    self.cookies.remove(name); // cleared (expired) cookie
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        Ok(response)
    }

    /// Opens the Alertmanager UI as `email` from a fresh browser: the sign-in redirects,
    /// then the UI. Returns the status of the last answer.
    async fn sign_in(&mut self, provider: &Provider, email: &str) -> anyhow::Result<StatusCode> {
        self.cookies.clear();
        let ui = format!("https://{HOST_NAME}/api/prom/alertmanager/");
        let first = self.get(&ui).await?;
        anyhow::ensure!(first.status() == StatusCode::FOUND, "unauthenticated: {} not 302", first.status());
        let authorize = location(&first)?;
        anyhow::ensure!(authorize.starts_with(&provider.issuer), "sent to {authorize}, not to the issuer");
        provider.next_user(email).await?;
        let at_provider = self.get(&authorize).await?;
        let callback = location(&at_provider)?;
        anyhow::ensure!(
            callback.starts_with(&format!("https://{HOST_NAME}/oauth2/callback?")),
            "provider sent the browser to {callback}"
        );
        let signed_in = self.get(&callback).await?;
        if signed_in.status() != StatusCode::FOUND {
            return Ok(signed_in.status());
        }
        let back = location(&signed_in)?;
        let back = if back.starts_with('/') { format!("https://{HOST_NAME}{back}") } else { back };
        Ok(self.get(&back).await?.status())
    }
}

fn location(response: &reqwest::Response) -> anyhow::Result<String> {
    Ok(response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| anyhow::anyhow!("{} without Location", response.status()))?
        .to_str()?
        .to_string())
}

fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn binding(name: &str, email: &str, project: &str) -> UserProjectBinding {
    UserProjectBinding::new(
        name,
        UserProjectBindingSpec {
            user_email: email.into(),
            project_id: project.into(),
            group: format!("viewers-{project}"),
        },
    )
}

/// oauth2-proxy's command line from the Deployment's, with the adaptations of this test.
fn adapt_args(args: &[String], proxy_port: u16, emails_dir: &Path, gateway_read_port: u16) -> Vec<String> {
    let emails_file = format!("--authenticated-emails-file={EMAILS_MOUNT}/");
    let gateway = format!("--upstream=http://mla-gateway.{NS}.svc.cluster.local/");
    args.iter()
        .map(|arg| {
            if arg.starts_with("--http-address=") {
                // Adapted: loopback and a free port instead of 0.0.0.0:4180 in the pod.
                format!("--http-address=127.0.0.1:{proxy_port}")
            } else if let Some(key) = arg.strip_prefix(&emails_file) {
                // Adapted: the ConfigMap volume is a scratch directory, same layout.
                format!("--authenticated-emails-file={}", emails_dir.join(key).display())
            } else if let Some(path) = arg.strip_prefix(&gateway) {
                // Adapted: the gateway Service's DNS name is its loopback read port here;
                // the path (the Alertmanager prefix of the read path) is kept.
                format!("--upstream=http://127.0.0.1:{gateway_read_port}/{path}")
            } else {
                arg.clone()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_proxy_lets_in_exactly_the_projects_members() -> anyhow::Result<()> {
    let dir = support::ScratchDir::new("iap-oauth2-proxy");
    let provider = Provider::start(&dir.path).await?;

    // The seed and the real binary, configured with the mock's issuer.
    let plane = ControlPlane::start("iap-oauth2-proxy").await?;
    plane.install_crds().await?;
    let client = plane.client();
    for namespace in ["kubermatic", "mla", NS] {
        ensure_namespace(&client, namespace).await?;
    }
    for manifest in ["rbac.yaml", "rbac-iap.yaml", "rbac-grafana.yaml", "rbac-alerting.yaml"] {
        apply_manifest(&client, &workspace_root().join("manifests/seed-controller-manager").join(manifest)).await?;
    }
    let issuer_flag = format!("--iap-oidc-issuer-url={}", provider.issuer);
    let flags = [
        "--enable-user-cluster-mla=true",
        &issuer_flag,
        "--iap-oidc-client-id=mla-alertmanager",
        "--iap-oidc-client-secret-name=iap-client",
        "--iap-domain=iap.example.com",
    ];
    let _manager = support::spawn_seed_manager(&plane, flags, "seed-controller-manager.log", WAIT).await?;

    let pp = PostParams::default();
    let users: Api<User> = Api::all(client.clone());
    users
        .create(
            &pp,
            &User::new("alice", UserSpec { email: "alice@example.com".into(), name: "alice".into(), admin: false }),
        )
        .await?;
    let bindings: Api<UserProjectBinding> = Api::all(client.clone());
    bindings.create(&pp, &binding("alice-p1", "alice@example.com", "p1")).await?;
    bindings.create(&pp, &binding("bob-p2", "bob@example.com", "p2")).await?;
    let mla_secrets: Api<Secret> = Api::namespaced(client.clone(), "mla");
    let client_secret = Secret {
        metadata: ObjectMeta { name: Some("iap-client".into()), namespace: Some("mla".into()), ..Default::default() },
        string_data: Some([("client-secret".to_string(), CLIENT_SECRET.to_string())].into()),
        ..Default::default()
    };
    mla_secrets.create(&pp, &client_secret).await?;
    let clusters: Api<Cluster> = Api::all(client.clone());
    clusters.create(&pp, &support::cluster("c1", "p1", true, false)).await?;
    let status =
        serde_json::json!({"status": {"namespaceName": NS, "address": {"externalName": "c1.seed.example.com"}}});
    clusters.patch_status("c1", &PatchParams::default(), &Patch::Merge(&status)).await?;

    // What the seed manager wrote.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let emails_data = |cm: ConfigMap| cm.data.unwrap_or_default();
    let (deployment, secret, emails) = eventually("the IAP's Deployment, Secret and emails", WAIT, || {
        let (deployments, secrets, config_maps) = (deployments.clone(), secrets.clone(), config_maps.clone());
        async move {
            let found = deployments.get_opt("mla-iap").await?.zip(secrets.get_opt("mla-iap").await?);
            let emails = config_maps.get_opt("mla-iap-emails").await?;
            Ok(found.zip(emails).map(|((d, s), e)| (d, s, e)))
        }
    })
    .await?;
    let container = deployment.spec.unwrap().template.spec.unwrap().containers.remove(0);
    let args = container.args.unwrap();
    // The volume is the whole ConfigMap at the emails directory (no subPath: else the
    // kubelet's updates would never arrive).
    let mount = container.volume_mounts.unwrap().into_iter().find(|m| m.mount_path == EMAILS_MOUNT).unwrap();
    assert!(mount.sub_path.is_none());

    // The gateway's read path (real nginx, the configuration the seed manager renders)
    // in front of the Alertmanager stand-in.
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let alertmanager = format!("http://{}", listener.local_addr()?);
    let router = axum::Router::new().fallback(record).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    support::write_certs(&dir, "c1");
    let server = support::scratch_server(&dir);
    let gateway_config = nginx::render("c1", None, &Upstreams::all(&alertmanager), &server)?;
    let _gateway = support::Nginx::start(&dir, &gateway_config);

    // oauth2-proxy with the Deployment's arguments, the Secret in its environment and the
    // emails ConfigMap projected as the kubelet does.
    let emails_dir = dir.join("emails");
    std::fs::create_dir_all(&emails_dir)?;
    let mut generation = 0;
    project_config_map(&emails_dir, &emails_data(emails), generation);
    let proxy_port = free_port()?;
    let mut command = Command::new(mla_e2e::real_parts::binary("oauth2-proxy", "oauth2-proxy")?);
    command
        .args(adapt_args(&args, proxy_port, &emails_dir, server.read_port))
        .env_clear()
        .env("OAUTH2_PROXY_CLIENT_SECRET", secret_text(&secret, "client-secret"))
        .env("OAUTH2_PROXY_COOKIE_SECRET", secret_text(&secret, "cookie-secret"));
    let started = Instant::now();
    let _proxy = ManagedProcess::spawn("oauth2-proxy", command, &dir.join("oauth2-proxy.log"))?;
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let ping = format!("{proxy}/ping");
    eventually("oauth2-proxy's /ping", WAIT, || {
        let ping = ping.clone();
        async move { Ok(reqwest::get(&ping).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
    })
    .await
    .map_err(|e| e.context(std::fs::read_to_string(dir.join("oauth2-proxy.log")).unwrap_or_default()))?;
    eprintln!("oauth2-proxy ready {} ms after start", started.elapsed().as_millis());
    let log = || std::fs::read_to_string(dir.join("oauth2-proxy.log")).unwrap_or_default();

    // A member of the project gets the UI, and Alertmanager sees the cluster's tenant.
    let mut browser = Browser::new(&proxy);
    let status = browser.sign_in(&provider, "alice@example.com").await?;
    assert_eq!(status, StatusCode::OK, "alice, member of p1\n{}", log());
    {
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|(tenant, _)| tenant == "c1"), "{seen:?}");
        assert!(seen.iter().all(|(_, path)| path.starts_with("/api/prom/alertmanager/")), "{seen:?}");
    }
    // The proxy is no way into the rest of the read path: only the Alertmanager prefix.
    let metrics = browser.get(&format!("https://{HOST_NAME}/api/prom/api/v1/query?query=up")).await?;
    assert_eq!(metrics.status(), StatusCode::NOT_FOUND);

    // A member of another project and someone unknown are refused at the callback.
    let before = seen.lock().unwrap().len();
    for email in ["bob@example.com", "mallory@example.com"] {
        let status = Browser::new(&proxy).sign_in(&provider, email).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{email}\n{}", log());
    }
    // Nobody without a session reaches Alertmanager.
    let anonymous = Browser::new(&proxy).get(&format!("https://{HOST_NAME}/api/prom/alertmanager/")).await?;
    assert_eq!(anonymous.status(), StatusCode::FOUND);
    assert_eq!(seen.lock().unwrap().len(), before, "refused users reached the upstream");

    // Removing alice's binding: the ConfigMap changes, the kubelet updates the volume,
    // oauth2-proxy reloads the file and her existing session stops working.
    bindings.delete("alice-p1", &DeleteParams::default()).await?;
    let emails = eventually("alice out of the emails ConfigMap", WAIT, || {
        let config_maps = config_maps.clone();
        async move {
            let data = emails_data(config_maps.get("mla-iap-emails").await?);
            let file = data.get("authenticated-emails").cloned().unwrap_or_default();
            Ok((!file.contains("alice@example.com")).then_some(data))
        }
    })
    .await?;
    generation += 1;
    let removed = Instant::now();
    project_config_map(&emails_dir, &emails, generation);
    let ui = format!("https://{HOST_NAME}/api/prom/alertmanager/");
    let refused = eventually("alice's session refused after the reload", WAIT, || {
        let (client, cookies, proxy) = (browser.client.clone(), browser.cookies.clone(), proxy.clone());
        let path = ui.trim_start_matches(&format!("https://{HOST_NAME}")).to_string();
        async move {
            let cookie = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let response = client
                .get(format!("{proxy}{path}"))
                .header(HOST, HOST_NAME)
                .header("x-forwarded-proto", "https")
                .header(COOKIE, cookie)
                .send()
                .await?;
            Ok((response.status() != StatusCode::OK).then_some(response.status()))
        }
    })
    .await
    .map_err(|e| e.context(log()))?;
    eprintln!("alice refused ({refused}) {} ms after the volume update", removed.elapsed().as_millis());
    assert_eq!(refused, StatusCode::FORBIDDEN, "{}", log());
    // ... and signing in again does not help.
    let status = browser.sign_in(&provider, "alice@example.com").await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", log());
    // It was the kubelet-style swap that oauth2-proxy reacted to (the remove event of the
    // old file, then the watch re-added on the new one).
    let log = log();
    assert!(log.contains("watching interrupted on event: REMOVE"), "{log}");
    assert!(log.contains("watching resumed for"), "{log}");
    Ok(())
}

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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use mla_common::api::*;
use mla_e2e::iap::{Browser, EMAILS_MOUNT, MockOidc, OAuth2Proxy, project_config_map};
use mla_e2e::master::ensure_namespace;
use mla_e2e::{ControlPlane, apply_manifest, eventually, workspace_root};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST};
use seed_controller_manager::gateway::nginx::{self, Upstreams};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "cluster-c1";
const HOST_NAME: &str = "alertmanager.c1.iap.example.com";
const CLIENT_ID: &str = "mla-alertmanager";
const CLIENT_SECRET: &str = "s3cr3t";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_proxy_lets_in_exactly_the_projects_members() -> anyhow::Result<()> {
    let dir = support::ScratchDir::new("iap-oauth2-proxy");
    let provider = MockOidc::start(&dir.path, CLIENT_ID, CLIENT_SECRET).await?;

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
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let emails_data = |cm: ConfigMap| cm.data.unwrap_or_default();
    let (deployment, secret, emails) = mla_e2e::iap::written_objects(&client, NS, WAIT).await?;
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
    let started = Instant::now();
    let oauth2_proxy =
        OAuth2Proxy::start(&dir.path, &args, &secret, &emails_data(emails), NS, server.read_port).await?;
    eprintln!("oauth2-proxy ready {} ms after start", started.elapsed().as_millis());
    let proxy = oauth2_proxy.url.clone();
    let mut generation = 0;
    let log = || oauth2_proxy.log_text();
    let ui_path = "/api/prom/alertmanager/";

    // A member of the project gets the UI, and Alertmanager sees the cluster's tenant.
    let mut browser = Browser::new(&proxy, HOST_NAME)?;
    let status = browser.sign_in(&provider, "alice@example.com", ui_path).await?;
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
        let status = Browser::new(&proxy, HOST_NAME)?.sign_in(&provider, email, ui_path).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{email}\n{}", log());
    }
    // Nobody without a session reaches Alertmanager.
    let anonymous = Browser::new(&proxy, HOST_NAME)?.get(&format!("https://{HOST_NAME}{ui_path}")).await?;
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
    project_config_map(&oauth2_proxy.emails_dir, &emails, generation)?;
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
    let status = browser.sign_in(&provider, "alice@example.com", ui_path).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", log());
    // It was the kubelet-style swap that oauth2-proxy reacted to (the remove event of the
    // old file, then the watch re-added on the new one).
    let log = log();
    assert!(log.contains("watching interrupted on event: REMOVE"), "{log}");
    assert!(log.contains("watching resumed for"), "{log}");
    Ok(())
}

//! The Alertmanager IAP for real: oauth2-proxy (built by `hack/build-real-parts.sh`) with
//! the arguments, Secret and emails ConfigMap the seed manager wrote, against a mock OIDC
//! provider (`hack/mock-oidc`, around oauth2-proxy's own `mockoidc`), and a browser that
//! plays the user and the Ingress controller.
//!
//! Adapted from what the pod runs, and only these (each said where it is done): the listen
//! address (loopback, a free port), the emails file's path (a scratch directory laid out
//! as the kubelet lays out a ConfigMap volume) and the upstream's host (the gateway's
//! loopback read port instead of the Service's DNS name; the path is kept). The browser
//! sends what an Ingress for the IAP's host would (the `Host` header, TLS terminated there,
//! `X-Forwarded-Proto: https`) and keeps the cookies itself, so the secure cookies and the
//! `https://` redirect URL run unmodified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE};

use crate::{ManagedProcess, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);
/// Where the IAP Deployment mounts the emails ConfigMap (the directory of
/// `--authenticated-emails-file`).
pub const EMAILS_MOUNT: &str = "/etc/oauth2-proxy/emails";

/// The mock OIDC provider: the issuer and a control API choosing who signs in next.
#[derive(Debug)]
pub struct MockOidc {
    _process: ManagedProcess,
    /// The issuer URL (`--iap-oidc-issuer-url` of the seed manager).
    pub issuer: String,
    control: String,
}

impl MockOidc {
    /// Starts the provider on loopback with a fixed client.
    pub async fn start(dir: &Path, client_id: &str, client_secret: &str) -> anyhow::Result<Self> {
        let (port, control_port) = (free_port()?, free_port()?);
        let mut command = Command::new(crate::real_parts::binary("mock-oidc", "mock-oidc")?);
        command
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--control=127.0.0.1:{control_port}"))
            .arg(format!("--client-id={client_id}"))
            .arg(format!("--client-secret={client_secret}"));
        std::fs::create_dir_all(dir)?;
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
    pub async fn next_user(&self, email: &str) -> anyhow::Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}/users", self.control))
            .body(serde_json::json!({ "email": email }).to_string())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "queueing {email}: {}", response.status());
        Ok(())
    }
}

/// Writes ConfigMap `data` into `dir` the way the kubelet's atomic writer updates a
/// ConfigMap volume: the files live in a fresh timestamped directory, `..data` is a
/// symlink to it swapped by rename, each key is a symlink `key -> ..data/key`, and the
/// previous directory is removed afterwards (that removal is the event oauth2-proxy's
/// watcher reloads on).
pub fn project_config_map(dir: &Path, data: &BTreeMap<String, String>, generation: u32) -> anyhow::Result<()> {
    let payload = format!("..2026_12_01_00_00_00.{generation:06}");
    std::fs::create_dir_all(dir.join(&payload))?;
    for (key, value) in data {
        std::fs::write(dir.join(&payload).join(key), value)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&payload, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    for key in data.keys() {
        if std::fs::symlink_metadata(dir.join(key)).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key))?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// oauth2-proxy's command line from the IAP Deployment's, with the adaptations above:
/// `namespace` is the cluster namespace (the gateway Service's), `gateway_read_port` the
/// gateway's loopback read port.
pub fn adapt_args(
    args: &[String],
    proxy_port: u16,
    emails_dir: &Path,
    namespace: &str,
    gateway_read_port: u16,
) -> Vec<String> {
    let emails_file = format!("--authenticated-emails-file={EMAILS_MOUNT}/");
    let gateway = format!("--upstream=http://mla-gateway.{namespace}.svc.cluster.local/");
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

/// What the seed manager wrote for the IAP of a cluster namespace: its Deployment, Secret
/// and emails ConfigMap, once all three exist.
pub async fn written_objects(
    client: &kube::Client,
    namespace: &str,
    timeout: Duration,
) -> anyhow::Result<(Deployment, Secret, ConfigMap)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    eventually("the IAP's Deployment, Secret and emails", timeout, || {
        let (deployments, secrets, config_maps) = (deployments.clone(), secrets.clone(), config_maps.clone());
        async move {
            let found = deployments.get_opt("mla-iap").await?.zip(secrets.get_opt("mla-iap").await?);
            let emails = config_maps.get_opt("mla-iap-emails").await?;
            Ok(found.zip(emails).map(|((d, s), e)| (d, s, e)))
        }
    })
    .await
}

fn secret_text(secret: &Secret, key: &str) -> anyhow::Result<String> {
    let value =
        secret.data.as_ref().and_then(|d| d.get(key)).with_context(|| format!("key {key} in the IAP Secret"))?;
    Ok(String::from_utf8(value.0.clone())?)
}

/// oauth2-proxy running as the IAP Deployment says.
#[derive(Debug)]
pub struct OAuth2Proxy {
    _process: ManagedProcess,
    /// Its loopback URL.
    pub url: String,
    /// Its log file.
    pub log: PathBuf,
    /// Where the emails ConfigMap is projected (see [`project_config_map`]).
    pub emails_dir: PathBuf,
}

impl OAuth2Proxy {
    /// Starts oauth2-proxy with the Deployment's `args`, the IAP Secret's client and
    /// cookie secrets in its environment (as the Deployment maps them) and the emails
    /// ConfigMap's `emails` projected into `dir/emails`, until `/ping` answers.
    pub async fn start(
        dir: &Path,
        args: &[String],
        secret: &Secret,
        emails: &BTreeMap<String, String>,
        namespace: &str,
        gateway_read_port: u16,
    ) -> anyhow::Result<Self> {
        let emails_dir = dir.join("emails");
        std::fs::create_dir_all(&emails_dir)?;
        project_config_map(&emails_dir, emails, 0)?;
        let proxy_port = free_port()?;
        let mut command = Command::new(crate::real_parts::binary("oauth2-proxy", "oauth2-proxy")?);
        command
            .args(adapt_args(args, proxy_port, &emails_dir, namespace, gateway_read_port))
            .env_clear()
            .env("OAUTH2_PROXY_CLIENT_SECRET", secret_text(secret, "client-secret")?)
            .env("OAUTH2_PROXY_COOKIE_SECRET", secret_text(secret, "cookie-secret")?);
        let log = dir.join("oauth2-proxy.log");
        let process = ManagedProcess::spawn("oauth2-proxy", command, &log)?;
        let url = format!("http://127.0.0.1:{proxy_port}");
        let ping = format!("{url}/ping");
        eventually("oauth2-proxy's /ping", WAIT, || {
            let ping = ping.clone();
            async move { Ok(reqwest::get(&ping).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await
        .map_err(|e| e.context(std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(Self { _process: process, url, log, emails_dir })
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A browser behind the Ingress of the IAP host `host`: remembers cookies, follows no
/// redirect by itself.
#[derive(Debug)]
pub struct Browser {
    /// The HTTP client (no redirects).
    pub client: reqwest::Client,
    proxy: String,
    host: String,
    /// Cookies set by oauth2-proxy.
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    /// A fresh browser for the IAP at `proxy` (its loopback URL) serving `host`.
    pub fn new(proxy: &str, host: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { client, proxy: proxy.to_string(), host: host.to_string(), cookies: BTreeMap::new() })
    }

    /// GET `url`. Requests for `https://<host>/...` go to oauth2-proxy as the Ingress would
    /// send them; any other URL (the provider) is fetched directly.
    pub async fn get(&mut self, url: &str) -> anyhow::Result<reqwest::Response> {
        let origin = format!("https://{}", self.host);
        let request = match url.strip_prefix(&origin) {
            Some(path) => {
                let mut request = self
                    .client
                    .get(format!("{}{path}", self.proxy))
                    .header(HOST, &self.host)
                    .header("x-forwarded-proto", "https")
                    .header("x-forwarded-host", &self.host)
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
        if url.starts_with(&origin) {
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

    /// Opens `path` (the Alertmanager UI) as `email` from a fresh session: the sign-in
    /// redirects, then the page. Returns the status of the last answer.
    pub async fn sign_in(&mut self, provider: &MockOidc, email: &str, path: &str) -> anyhow::Result<StatusCode> {
        self.cookies.clear();
        let origin = format!("https://{}", self.host);
        let first = self.get(&format!("{origin}{path}")).await?;
        anyhow::ensure!(first.status() == StatusCode::FOUND, "unauthenticated: {} not 302", first.status());
        let authorize = location(&first)?;
        anyhow::ensure!(authorize.starts_with(&provider.issuer), "sent to {authorize}, not to the issuer");
        provider.next_user(email).await?;
        let at_provider = self.get(&authorize).await?;
        let callback = location(&at_provider)?;
        anyhow::ensure!(
            callback.starts_with(&format!("{origin}/oauth2/callback?")),
            "provider sent the browser to {callback}"
        );
        let signed_in = self.get(&callback).await?;
        if signed_in.status() != StatusCode::FOUND {
            return Ok(signed_in.status());
        }
        let back = location(&signed_in)?;
        let back = if back.starts_with('/') { format!("{origin}{back}") } else { back };
        Ok(self.get(&back).await?.status())
    }
}

/// The `Location` of a redirect.
pub fn location(response: &reqwest::Response) -> anyhow::Result<String> {
    Ok(response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| anyhow::anyhow!("{} without Location", response.status()))?
        .to_str()?
        .to_string())
}

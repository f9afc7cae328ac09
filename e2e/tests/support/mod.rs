//! Steps, waits and read-only views shared by the end-to-end suites (`scenario.rs` on our
//! CRDs, `kkp.rs` on KKP's).

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)] // test code; not every suite uses every helper

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use mla_common::pki::{self, CaState};
use mla_e2e::eventually;
use mla_e2e::world::{GRAFANA_ADMIN, World};

/// How long a step may take to converge; generous because after an API server restart the
/// watches come back with kube-runtime's backoff (up to 30 s between attempts).
pub const TIMEOUT: Duration = Duration::from_secs(150);

pub async fn step<T, F: Future<Output = anyhow::Result<T>>>(n: &str, name: &str, f: F) -> T {
    let started = Instant::now();
    match f.await {
        Ok(value) => {
            println!("STEP {n} {name}: ok ({:.1} s)", started.elapsed().as_secs_f64());
            value
        }
        Err(error) => {
            println!("STEP {n} {name}: FAILED ({:.1} s): {error:#}", started.elapsed().as_secs_f64());
            panic!("step {n} ({name}) failed: {error:#}");
        }
    }
}

pub async fn exists<K>(api: &Api<K>, name: &str) -> anyhow::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?.is_some())
}

pub async fn until_present<K>(what: &str, api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, TIMEOUT, || async { Ok(exists(api, name).await?.then_some(())) }).await
}

pub async fn until_absent<K>(what: &str, api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, TIMEOUT, || async { Ok((!exists(api, name).await?).then_some(())) }).await
}

/// An mTLS client of a gateway holding `identity`, trusting the gateway's CA.
pub fn gateway_client(ca_pem: &str, identity: &pki::CertifiedKeyPem) -> reqwest::Client {
    let pem = format!("{}\n{}", identity.cert_pem, identity.key_pem);
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn cluster_ca(world: &World, cluster: &str) -> anyhow::Result<CaState> {
    let secrets: Api<Secret> = Api::namespaced(world.seed.client(), &format!("cluster-{cluster}"));
    Ok(CaState::from_secret(Some(&secrets.get("mla-gateway-ca").await?)))
}

/// Read-only views of Grafana through its HTTP API, as the platform admin.
pub struct GrafanaView {
    url: String,
    http: reqwest::Client,
}

impl GrafanaView {
    pub fn new(world: &World) -> Self {
        Self { url: world.grafana.url().to_string(), http: reqwest::Client::new() }
    }

    pub async fn get(&self, path: &str, org: Option<i64>) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request =
            self.http.get(format!("{}{path}", self.url)).basic_auth(GRAFANA_ADMIN.0, Some(GRAFANA_ADMIN.1));
        if let Some(org) = org {
            request = request.header("X-Grafana-Org-Id", org.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)))
    }

    /// Organizations by name (with duplicates, should there be any).
    pub async fn orgs(&self) -> anyhow::Result<Vec<(i64, String)>> {
        let (_, body) = self.get("/api/orgs?perpage=1000", None).await?;
        Ok(body
            .as_array()
            .map(|orgs| {
                orgs.iter().filter_map(|o| Some((o["id"].as_i64()?, o["name"].as_str()?.to_string()))).collect()
            })
            .unwrap_or_default())
    }

    pub async fn org_id(&self, name: &str) -> anyhow::Result<Option<i64>> {
        let matching: Vec<i64> = self.orgs().await?.into_iter().filter(|(_, n)| n == name).map(|(id, _)| id).collect();
        anyhow::ensure!(matching.len() <= 1, "organization {name} exists {} times", matching.len());
        Ok(matching.first().copied())
    }

    /// Members of an org as `email -> role`.
    pub async fn members(&self, org: i64) -> anyhow::Result<BTreeMap<String, String>> {
        let (_, body) = self.get(&format!("/api/orgs/{org}/users"), None).await?;
        Ok(body
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|u| Some((u["email"].as_str()?.to_string(), u["role"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Datasource UIDs of an org.
    pub async fn datasources(&self, org: i64) -> anyhow::Result<BTreeSet<String>> {
        let (_, body) = self.get("/api/datasources", Some(org)).await?;
        Ok(body
            .as_array()
            .map(|list| list.iter().filter_map(|d| d["uid"].as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    /// Waits until `check` holds for the org named `name`.
    pub async fn until<F>(&self, what: &str, name: &str, check: F) -> anyhow::Result<i64>
    where
        F: Fn(&BTreeMap<String, String>, &BTreeSet<String>) -> bool,
    {
        eventually(what, TIMEOUT, || async {
            let Some(org) = self.org_id(name).await? else { return Ok(None) };
            let (members, datasources) = (self.members(org).await?, self.datasources(org).await?);
            Ok(check(&members, &datasources).then_some(org))
        })
        .await
    }
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits until the IAP of `cluster` lets in exactly `expected`.
pub async fn iap_emails(world: &World, cluster: &str, expected: &[&str]) -> anyhow::Result<()> {
    let config_maps: Api<ConfigMap> = Api::namespaced(world.seed.client(), &format!("cluster-{cluster}"));
    let expected: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
    let current = || async {
        let map = config_maps.get_opt("mla-iap-emails").await?;
        let text = map.and_then(|m| m.data).and_then(|d| d.get("authenticated-emails").cloned()).unwrap_or_default();
        let mut emails: Vec<String> = text.lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
        emails.sort();
        anyhow::Ok(emails)
    };
    let result = eventually(&format!("IAP emails {expected:?}"), TIMEOUT, || async {
        Ok((current().await? == expected).then_some(()))
    })
    .await;
    if result.is_err() {
        println!("  IAP emails of {cluster} at the time out: {:?}", current().await);
    }
    result
}

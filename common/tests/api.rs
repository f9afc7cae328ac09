//! The API types: generated CRDs are committed, every kind round-trips, and objects KKP
//! itself writes (with many fields we do not model) deserialize.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use mla_common::api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let generated = crd_files().expect("CRDs serialize");
    let mut stale = Vec::new();
    for (file, yaml) in &generated {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if &committed != yaml {
            stale.push(file.clone());
        }
    }
    let expected: BTreeSet<String> = generated.iter().map(|(f, _)| f.clone()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("manifests/crds exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    let extra: Vec<_> = present.difference(&expected).collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "manifests/crds is stale (run `make crds`): differing {stale:?}, not generated {extra:?}"
    );
}

#[test]
fn every_crd_has_descriptions_and_printer_columns() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert_eq!(crd.spec.group, GROUP);
        assert!(crd.spec.names.short_names.is_none(), "{name}: KKP kinds have no short names");
        assert_eq!(crd.spec.names.plural, format!("{}s", crd.spec.names.kind.to_lowercase()), "{name}");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        let columns = version.additional_printer_columns.as_ref().map_or(0, Vec::len);
        assert!(columns >= 2, "{name} has {columns} printer columns");
        let yaml = serde_yaml::to_string(&crd).expect("serializes");
        assert!(yaml.matches("description:").count() >= 3, "{name} lacks schema descriptions");
    }
}

fn round_trip<K: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(object: K) {
    let json = serde_json::to_value(&object).expect("serializes");
    let back: K = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(back, object);
}

#[test]
fn every_kind_round_trips() {
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": "abc123", "labels": {"project-id": "p1"}},
        "spec": {"humanReadableName": "prod", "exposeStrategy": "LoadBalancer",
                 "mla": {"monitoringEnabled": true, "loggingEnabled": false, "monitoringReplicas": 2,
                         "monitoringResources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}},
        "status": {"namespaceName": "cluster-abc123",
                   "address": {"url": "https://x:6443", "port": 6443, "externalName": "x.example.com", "internalURL": "apiserver-external.cluster-abc123.svc", "ip": "192.0.2.1"},
                   "conditions": {"MLAGatewayReady": {"status": "True", "reason": "Ready", "lastTransitionTime": "2026-01-02T03:04:05Z"}},
                   "extendedHealth": {"mlaGateway": "HealthStatusUp", "monitoring": "HealthStatusProvisioning"}}
    }))
    .expect("Cluster parses");
    assert_eq!(cluster.project_id(), Some("p1"));
    assert!(cluster.mla_enabled());
    assert_eq!(
        cluster.status.as_ref().and_then(|s| s.address.as_ref()).and_then(|a| a.internal_url.as_deref()),
        Some("apiserver-external.cluster-abc123.svc")
    );
    round_trip(cluster);

    round_trip(Project::new("p1", ProjectSpec { name: "Shop".into() }));
    round_trip(User::new("u1", UserSpec { email: "a@example.com".into(), name: "A".into(), admin: true }));
    let binding = UserProjectBinding::new(
        "b1",
        UserProjectBindingSpec {
            user_email: "a@example.com".into(),
            project_id: "p1".into(),
            group: "editors-p1".into(),
        },
    );
    assert_eq!(binding.spec.role(), Some("editors"));
    assert_eq!(serde_json::to_value(&binding.spec).expect("json")["projectID"], "p1");
    round_trip(binding);
    round_trip(Seed::new(
        "europe",
        SeedSpec {
            kubeconfig: ObjectReference { name: Some("europe-kubeconfig".into()), ..Default::default() },
            expose_strategy: Some(ExposeStrategy::Tunneling),
            mla: Some(SeedMLASettings { user_cluster_mla_enabled: true }),
        },
    ));
    round_trip(MLAAdminSetting::new(
        MLA_ADMIN_SETTING_NAME,
        MLAAdminSettingSpec {
            cluster_name: "abc123".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: Some(10),
                ..Default::default()
            }),
            logging_rate_limits: Some(LoggingRateLimitSettings { query_rate: Some(0), ..Default::default() }),
        },
    ));
    round_trip(Alertmanager::new(
        ALERTMANAGER_NAME,
        AlertmanagerSpec { config_secret: LocalObjectReference { name: "alertmanager".into() } },
    ));
    let rule_group = RuleGroup::new(
        "node-alerts",
        RuleGroupSpec {
            rule_group_type: RuleGroupType::Logs,
            cluster: ObjectReference { name: Some("abc123".into()), ..Default::default() },
            data: k8s_openapi::ByteString(b"groups: []\n".to_vec()),
            is_default: true,
        },
    );
    assert_eq!(serde_json::to_value(&rule_group.spec).expect("json")["data"], "Z3JvdXBzOiBbXQo=");
    round_trip(rule_group);
}

#[test]
fn objects_written_by_kkp_parse() {
    // Trimmed from what a KKP 2.x seed serves: many fields this system does not model.
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": "x7k2m9", "labels": {"project-id": "pq8r", "is-credential-preset": "true"}, "finalizers": ["kubermatic.k8c.io/cleanup-in-cluster-lb"]},
        "spec": {"version": "1.31.1", "cloud": {"dc": "aws-eu", "aws": {"credentialsReference": {"name": "x"}}},
                 "clusterNetwork": {"pods": {"cidrBlocks": ["172.25.0.0/16"]}, "proxyMode": "ipvs"},
                 "exposeStrategy": "NodePort", "humanReadableName": "busy-bee", "enableUserSSHKeyAgent": true,
                 "mla": {"monitoringEnabled": true, "loggingEnabled": true, "monitoringResources": null},
                 "componentsOverride": {"apiserver": {"replicas": 2}}},
        "status": {"namespaceName": "cluster-x7k2m9", "phase": "Running", "userEmail": "a@example.com",
                   "address": {"adminToken": "redacted", "externalName": "x7k2m9.europe.example.com", "ip": "198.51.100.7", "port": 31234, "url": "https://x7k2m9.europe.example.com:31234"},
                   "conditions": {"ClusterControllerReconciledSuccessfully": {"kubermaticVersion": "v2.26.0", "status": "True", "lastHeartbeatTime": "2026-11-01T00:00:00Z"}},
                   "extendedHealth": {"apiserver": "HealthStatusUp", "etcd": "HealthStatusUp", "mlaGateway": "HealthStatusDown", "logging": "HealthStatusUp"},
                   "versions": {"apiserver": "1.31.1"}}
    }))
    .expect("a KKP Cluster parses");
    assert_eq!(cluster.spec.expose_strategy, Some(ExposeStrategy::NodePort));
    let health = cluster.status.as_ref().and_then(|s| s.extended_health.clone()).expect("health");
    assert_eq!(health.mla_gateway, Some(HealthStatus::HealthStatusDown));
    assert_eq!(health.other.get("apiserver"), Some(&json!("HealthStatusUp")), "KKP's other health fields are kept");

    let seed: Seed = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
        "metadata": {"name": "europe", "namespace": "kubermatic"},
        "spec": {"country": "DE", "location": "Frankfurt", "datacenters": {"aws-eu": {"country": "DE"}},
                 "kubeconfig": {"name": "kubeconfig-europe", "namespace": "kubermatic", "fieldPath": ""},
                 "mla": {"userClusterMLAEnabled": true}, "exposeStrategy": "LoadBalancer"},
        "status": {"phase": "Healthy", "clusters": 3, "conditions": {"KubeconfigValid": {"status": "True", "reason": ""}}}
    }))
    .expect("a KKP Seed parses");
    assert!(seed.spec.mla.is_some_and(|m| m.user_cluster_mla_enabled));

    let user: User = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "User", "metadata": {"name": "u"},
        "spec": {"email": "a@example.com", "name": "A", "admin": false, "id": "x", "settings": {"useClusterList": true}, "groups": ["g"]},
        "status": {"lastSeen": "2026-11-01T00:00:00Z"}
    }))
    .expect("a KKP User parses");
    assert!(!user.spec.admin);

    let project: Project = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project", "metadata": {"name": "pq8r"},
        "spec": {"name": "shop", "allowedOperatingSystems": {"ubuntu": true}}, "status": {"phase": "Active"}
    }))
    .expect("a KKP Project parses");
    assert_eq!(project.status.and_then(|s| s.phase), Some(ProjectPhase::Active));
}

#[test]
fn binding_role_requires_the_projects_suffix() {
    let spec = |group: &str| UserProjectBindingSpec {
        user_email: "a@b.c".into(),
        project_id: "p1".into(),
        group: group.into(),
    };
    assert_eq!(spec("owners-p1").role(), Some("owners"));
    assert_eq!(spec("projectmanagers-p1").role(), Some("projectmanagers"));
    assert_eq!(spec("owners-p2").role(), None);
    assert_eq!(spec("admins-p1").role(), None);
}

/// Objects as KKP's own controllers and API write them, with every field KKP's CRDs
/// require and extra fields this system does not model.
#[test]
fn kkp_shaped_objects_parse() {
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
        "metadata": {"name": "kkp1", "labels": {"project-id": "p1", "worker-name": ""},
                     "finalizers": ["kubermatic.k8c.io/mla", "kubermatic.k8c.io/alertmanager"]},
        "spec": {"version": "1.31.1", "humanReadableName": "kkp", "exposeStrategy": "Tunneling",
                 "cloud": {"dc": "dc1", "providerName": "bringyourown", "bringyourown": {}},
                 "clusterNetwork": {"pods": {"cidrBlocks": ["172.25.0.0/16"]}, "services": {"cidrBlocks": ["10.240.16.0/20"]},
                                    "dnsDomain": "cluster.local", "proxyMode": "ipvs", "ipFamily": "IPv4",
                                    "nodeLocalDNSCacheEnabled": true, "konnectivityEnabled": true},
                 "pause": false, "features": {"apiserverNetworkPolicy": true},
                 "mla": {"monitoringEnabled": true, "loggingEnabled": true, "monitoringReplicas": 1}},
        "status": {"namespaceName": "cluster-kkp1", "phase": "Running", "userEmail": "a@example.com",
                   "address": {"externalName": "kkp1.seed.example.com", "port": 6443, "url": "https://kkp1.seed.example.com:6443",
                               "internalURL": "apiserver-external.cluster-kkp1.svc.cluster.local.", "adminToken": "x", "ip": "192.0.2.7"},
                   "conditions": {
                       "ClusterControllerReconciledSuccessfully": {"kubermaticVersion": "v2.31.0", "status": "True",
                           "lastHeartbeatTime": "2026-08-21T10:00:00Z", "lastTransitionTime": "2026-08-21T09:00:00Z"},
                       "MLAControllerReconcilingSuccess": {"kubermaticVersion": "v2.31.0", "status": "False",
                           "lastHeartbeatTime": "2026-08-21T10:00:00Z", "reason": "", "message": ""},
                       "MLAGatewayReady": {"kubermaticVersion": "mla-controllers-v0.1.0", "status": "True",
                           "lastHeartbeatTime": "2026-08-21T10:00:00Z", "reason": "GatewayAvailable", "message": "ok"}},
                   "extendedHealth": {"apiserver": "HealthStatusUp", "mlaGateway": "HealthStatusUp",
                                      "alertmanagerConfig": "HealthStatusDown", "monitoring": "HealthStatusProvisioning"},
                   "versions": {"apiserver": "1.31.1", "controlPlane": "1.31.1"}, "lastUpdated": null}
    }))
    .expect("a KKP Cluster parses");
    let condition = cluster.condition("MLAGatewayReady").expect("condition");
    assert_eq!(condition.status, ConditionStatus::True);
    assert_eq!(condition.kubermatic_version.as_deref(), Some("mla-controllers-v0.1.0"));
    assert_eq!(cluster.worker_name(), "");

    let alertmanager: Alertmanager = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Alertmanager",
        "metadata": {"name": "alertmanager", "namespace": "cluster-kkp1"},
        "spec": {"configSecret": {"name": "alertmanager"}},
        "status": {"configStatus": {"status": "True", "lastUpdated": "2026-08-21T10:00:00Z", "errorMessage": ""}}
    }))
    .expect("a KKP Alertmanager parses");
    assert_eq!(alertmanager.status.and_then(|s| s.config_status).map(|c| c.status), Some(ConditionStatus::True));
    // What this system wrote before it used KKP's values reads as Unknown (and is rewritten).
    let older: Alertmanager = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Alertmanager",
        "metadata": {"name": "alertmanager", "namespace": "cluster-kkp1"},
        "spec": {"configSecret": {"name": "alertmanager"}},
        "status": {"configStatus": {"status": "HealthStatusUp"}}
    }))
    .expect("an older Alertmanager parses");
    assert_eq!(older.status.and_then(|s| s.config_status).map(|c| c.status), Some(ConditionStatus::Unknown));
    let written =
        serde_json::to_value(AlertmanagerConfigurationStatus { status: ConditionStatus::False, ..Default::default() })
            .expect("json");
    assert_eq!(written, json!({"status": "False"}), "KKP's corev1.ConditionStatus values");

    let setting: MLAAdminSetting = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "MLAAdminSetting",
        "metadata": {"name": "mla-admin-settings", "namespace": "cluster-kkp1", "finalizers": ["kubermatic.k8c.io/mla"]},
        "spec": {"clusterName": "kkp1",
                 "monitoringRateLimits": {"ingestionRate": 10, "ingestionBurstSize": 20, "maxSeriesPerMetric": 0,
                                          "maxSeriesTotal": 100, "queryRate": 5, "queryBurstSize": 10,
                                          "maxSamplesPerQuery": 1000, "maxSeriesPerQuery": 100},
                 "loggingRateLimits": {"ingestionRate": 1, "ingestionBurstSize": 2, "queryRate": 3, "queryBurstSize": 4}}
    }))
    .expect("a KKP MLAAdminSetting parses");
    assert_eq!(setting.spec.logging_rate_limits.and_then(|l| l.query_burst_size), Some(4));

    let group: RuleGroup = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "RuleGroup",
        "metadata": {"name": "node-alerts", "namespace": "cluster-kkp1", "finalizers": ["kubermatic.k8c.io/rule-group"]},
        "spec": {"ruleGroupType": "Metrics", "isDefault": false, "data": "Z3JvdXBzOiBbXQo=",
                 "cluster": {"kind": "Cluster", "apiVersion": "kubermatic.k8c.io/v1", "name": "kkp1", "fieldPath": "", "resourceVersion": "7"}}
    }))
    .expect("a KKP RuleGroup parses");
    assert_eq!(group.spec.cluster.name.as_deref(), Some("kkp1"));

    let project: Project = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
        "metadata": {"name": "p1", "annotations": {"mla.k8c.io/organization": "2"},
                     "finalizers": ["kubermatic.k8c.io/mla", "kubermatic.k8c.io/cleanup-seed-projects"]},
        "spec": {"name": "shop", "allowedOperatingSystems": {"ubuntu": true}, "defaultTenantSpec": {"x": 1}},
        "status": {"phase": "Active"}
    }))
    .expect("a KKP Project parses");
    assert_eq!(project.spec.name, "shop");

    let user: User = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "User",
        "metadata": {"name": "u1", "finalizers": ["kubermatic.k8c.io/mla"]},
        "spec": {"email": "a@example.com", "name": "A", "admin": false, "isGlobalViewer": false,
                 "groups": ["sre", "dev"], "project": "", "readAnnouncements": [],
                 "invalidTokensReference": {"name": "token-blacklist-u1", "namespace": "kubermatic"},
                 "settings": {"itemsPerPage": 10, "selectedTheme": "light"}},
        "status": {"lastSeen": "2026-08-21T10:00:00Z"}
    }))
    .expect("a KKP User parses");
    assert_eq!(user.spec.email, "a@example.com");

    let binding: GroupProjectBinding = serde_json::from_value(json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "GroupProjectBinding",
        "metadata": {"name": "p1-sre", "labels": {"kubermatic.k8c.io/project-id": "p1"},
                     "finalizers": ["kubermatic.k8c.io/cleanup-seed-group-project-bindings"]},
        "spec": {"group": "sre", "projectID": "p1", "role": "editors"}
    }))
    .expect("a KKP GroupProjectBinding parses");
    assert_eq!(binding.spec.role, GroupProjectRole::Editors);
    assert_eq!(serde_json::to_value(&binding.spec).expect("json")["projectID"], "p1");
    round_trip(binding);
}

/// KKP's Cluster status schema requires kubermaticVersion and lastHeartbeatTime in every
/// condition: every condition this system writes has them.
#[test]
fn written_conditions_satisfy_kkps_schema() {
    let condition = Condition::next(None, ConditionStatus::True, "Ready", "ok".into());
    let json = serde_json::to_value(&condition).expect("json");
    for field in ["kubermaticVersion", "lastHeartbeatTime", "status"] {
        assert!(json.get(field).is_some_and(|v| !v.is_null()), "{field} missing: {json}");
    }
    assert_eq!(json["kubermaticVersion"], CONTROLLER_VERSION);
}

/// Fields KKP keeps that our typed structs do not carry must stay in our CRDs' schemas, or
/// the API server would prune them: `Cluster.spec.pause`, `User.spec.groups`.
#[test]
fn kkp_fields_we_read_are_in_our_schemas() {
    let property =
        |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
         path: &[&str]| {
            let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().expect("schema")).expect("json");
            let mut node = &schema["openAPIV3Schema"];
            for name in path {
                node = &node["properties"][name];
            }
            node.clone()
        };
    assert_eq!(property(&Cluster::crd(), &["spec", "pause"])["type"], "boolean");
    assert_eq!(property(&User::crd(), &["spec", "groups"])["items"]["type"], "string");
    assert_eq!(
        property(&GroupProjectBinding::crd(), &["spec", "role"])["enum"],
        json!(["viewers", "editors", "owners"])
    );
}

/// A CA as KKP's seed controller makes it (`certificates.GetECDSACACertAndKey`: CN `CA`,
/// P-256, the key in SEC1 `EC PRIVATE KEY` PEM): kept as it is and able to issue, so that
/// taking over a gateway KKP made needs no second CA.
#[test]
fn a_ca_kkp_made_is_kept_and_issues() {
    use mla_common::pki;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = std::fs::read_to_string(dir.join("kkp-ca.crt")).expect("fixture");
    let key = std::fs::read_to_string(dir.join("kkp-ca.key")).expect("fixture");
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let now = std::time::SystemTime::now();
    assert_eq!(pki::ca_renewal(Some(&cert), Some(&key), now), None, "KKP's CA is usable as it is");
    let state = pki::CaState { cert_pem: Some(cert.clone()), key_pem: Some(key.clone()), ..Default::default() };
    assert!(pki::reconcile_ca(&state, "k1", now).expect("reconcile").is_none(), "nothing to change");
    let current = state.current().expect("the current CA");
    let leaf = pki::issue_gateway_certificate(&current, "k1.example.com", Some("192.0.2.1"), now).expect("issues");
    let spec = pki::LeafSpec::gateway_server("k1.example.com", Some("192.0.2.1")).expect("spec");
    assert_eq!(pki::leaf_renewal(Some(&leaf.cert_pem), Some(&leaf.key_pem), &cert, &spec, now), None);
}

//! The generated CRDs on a real API server: valid objects are accepted, and every invalid
//! object we can think of is refused with a message that names the offending field.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mla_e2e::ControlPlane;
use serde_json::{Value, json};

struct Case {
    kind: &'static str,
    namespaced: bool,
    object: Value,
    /// Substrings the API server's message must contain (the field path, mostly).
    expect: &'static [&'static str],
}

fn api(plane: &ControlPlane, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kubermatic.k8c.io", "v1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(plane.client(), ns, &resource),
        None => Api::all_with(plane.client(), &resource),
    }
}

async fn create(
    plane: &ControlPlane,
    ns: &str,
    kind: &str,
    namespaced: bool,
    object: &Value,
) -> Result<(), kube::Error> {
    let mut object: DynamicObject = serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?;
    object.types = Some(kube::core::TypeMeta { api_version: "kubermatic.k8c.io/v1".into(), kind: kind.into() });
    api(plane, kind, namespaced.then_some(ns)).create(&PostParams::default(), &object).await.map(|_| ())
}

fn valid_objects() -> Vec<(&'static str, bool, Value)> {
    vec![
        ("Project", false, json!({"metadata": {"name": "p1"}, "spec": {"name": "Shop"}})),
        (
            "User",
            false,
            json!({"metadata": {"name": "u1"}, "spec": {"email": "a@example.com", "name": "A", "admin": true}}),
        ),
        (
            "UserProjectBinding",
            false,
            json!({"metadata": {"name": "b1"}, "spec": {"userEmail": "a@example.com", "projectID": "p1", "group": "projectmanagers-p1"}}),
        ),
        (
            "Seed",
            true,
            json!({"metadata": {"name": "europe"}, "spec": {"kubeconfig": {"name": "kc"}, "exposeStrategy": "Tunneling", "mla": {"userClusterMLAEnabled": true}}}),
        ),
        (
            "Cluster",
            false,
            json!({"metadata": {"name": "c1", "labels": {"project-id": "p1"}}, "spec": {"exposeStrategy": "NodePort", "mla": {"monitoringEnabled": true, "monitoringReplicas": 1, "monitoringResources": {"requests": {"cpu": "100m"}}}}}),
        ),
        (
            "MLAAdminSetting",
            true,
            json!({"metadata": {"name": "mla-admin-settings"}, "spec": {"clusterName": "c1", "monitoringRateLimits": {"ingestionRate": 0, "maxSeriesTotal": 1000}, "loggingRateLimits": {"queryBurstSize": 5}}}),
        ),
        (
            "Alertmanager",
            true,
            json!({"metadata": {"name": "alertmanager"}, "spec": {"configSecret": {"name": "alertmanager"}}}),
        ),
        (
            "RuleGroup",
            true,
            json!({"metadata": {"name": "r1"}, "spec": {"ruleGroupType": "Metrics", "cluster": {"name": "c1"}, "data": "Z3JvdXBzOiBbXQo=", "isDefault": false}}),
        ),
    ]
}

fn invalid_objects() -> Vec<Case> {
    let case = |kind, namespaced, object, expect| Case { kind, namespaced, object, expect };
    vec![
        case(
            "MLAAdminSetting",
            true,
            json!({"metadata": {"name": "neg"}, "spec": {"clusterName": "c1", "monitoringRateLimits": {"ingestionRate": -1}}}),
            &["spec.monitoringRateLimits.ingestionRate", "greater than or equal to 0"],
        ),
        case(
            "MLAAdminSetting",
            true,
            json!({"metadata": {"name": "neg2"}, "spec": {"clusterName": "c1", "loggingRateLimits": {"queryBurstSize": -5}}}),
            &["spec.loggingRateLimits.queryBurstSize"],
        ),
        case(
            "MLAAdminSetting",
            true,
            json!({"metadata": {"name": "noname"}, "spec": {}}),
            &["spec.clusterName", "Required"],
        ),
        case(
            "MLAAdminSetting",
            true,
            json!({"metadata": {"name": "big"}, "spec": {"clusterName": "c1", "monitoringRateLimits": {"maxSeriesTotal": 3_000_000_000u64}}}),
            &["spec.monitoringRateLimits.maxSeriesTotal"],
        ),
        case(
            "UserProjectBinding",
            false,
            json!({"metadata": {"name": "bad-group"}, "spec": {"userEmail": "a@example.com", "projectID": "p1", "group": "admins-p1"}}),
            &["spec.group", "should match"],
        ),
        case(
            "UserProjectBinding",
            false,
            json!({"metadata": {"name": "other-project"}, "spec": {"userEmail": "a@example.com", "projectID": "p1", "group": "owners-p2"}}),
            &["spec.group", "must end with"],
        ),
        case(
            "UserProjectBinding",
            false,
            json!({"metadata": {"name": "no-email"}, "spec": {"projectID": "p1", "group": "owners-p1"}}),
            &["spec.userEmail", "Required"],
        ),
        case(
            "UserProjectBinding",
            false,
            json!({"metadata": {"name": "bad-email"}, "spec": {"userEmail": "nobody", "projectID": "p1", "group": "owners-p1"}}),
            &["spec.userEmail"],
        ),
        case(
            "Cluster",
            false,
            json!({"metadata": {"name": "bad-expose"}, "spec": {"exposeStrategy": "Ingress"}}),
            &["spec.exposeStrategy", "Unsupported value"],
        ),
        case(
            "Cluster",
            false,
            json!({"metadata": {"name": "neg-replicas"}, "spec": {"mla": {"monitoringReplicas": -1}}}),
            &["spec.mla.monitoringReplicas"],
        ),
        case(
            "Seed",
            true,
            json!({"metadata": {"name": "bad-expose"}, "spec": {"kubeconfig": {"name": "kc"}, "exposeStrategy": "Magic"}}),
            &["spec.exposeStrategy", "Unsupported value"],
        ),
        case(
            "Seed",
            true,
            json!({"metadata": {"name": "no-kubeconfig"}, "spec": {}}),
            &["spec.kubeconfig", "Required"],
        ),
        case(
            "Seed",
            true,
            json!({"metadata": {"name": "empty-kubeconfig"}, "spec": {"kubeconfig": {"namespace": "x"}}}),
            &["spec.kubeconfig", "name is required"],
        ),
        case("Project", false, json!({"metadata": {"name": "no-name"}, "spec": {}}), &["spec.name", "Required"]),
        case(
            "Project",
            false,
            json!({"metadata": {"name": "bad-phase"}, "spec": {"name": "x"}, "status": {"phase": "Gone"}}),
            &[],
        ),
        case(
            "User",
            false,
            json!({"metadata": {"name": "no-email"}, "spec": {"name": "x"}}),
            &["spec.email", "Required"],
        ),
        case(
            "RuleGroup",
            true,
            json!({"metadata": {"name": "bad-type"}, "spec": {"ruleGroupType": "Traces", "cluster": {"name": "c1"}, "data": ""}}),
            &["spec.ruleGroupType", "Unsupported value"],
        ),
        case(
            "RuleGroup",
            true,
            json!({"metadata": {"name": "bad-data"}, "spec": {"ruleGroupType": "Logs", "cluster": {"name": "c1"}, "data": "not base64!"}}),
            &["spec.data"],
        ),
        case(
            "Alertmanager",
            true,
            json!({"metadata": {"name": "alertmanager"}, "spec": {}}),
            &["spec.configSecret", "Required"],
        ),
    ]
}

#[tokio::test]
async fn api_server_accepts_valid_and_refuses_invalid_objects_naming_the_field() -> anyhow::Result<()> {
    let plane = ControlPlane::start("crds").await?;
    plane.install_crds().await?;
    let ns = plane.namespace("crds").await?;

    for (kind, namespaced, object) in valid_objects() {
        create(&plane, &ns, kind, namespaced, &object)
            .await
            .map_err(|e| anyhow::anyhow!("valid {kind} refused: {e}"))?;
    }

    let mut failures = Vec::new();
    for case in invalid_objects() {
        match create(&plane, &ns, case.kind, case.namespaced, &case.object).await {
            // A status on create is dropped (status subresource), so an invalid status is
            // not a create error: it is checked on the status endpoint below.
            Ok(()) if case.expect.is_empty() => {}
            Ok(()) => failures.push(format!("{} {} was accepted", case.kind, case.object["metadata"]["name"])),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = case.expect.iter().filter(|s| !status.message.contains(**s)).collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{} {}: code {} message {:?} lacks {missing:?}",
                        case.kind, case.object["metadata"]["name"], status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", case.kind)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An invalid status is refused on the status subresource, naming the field.
    let projects = api(&plane, "Project", None);
    let patch = json!({"status": {"phase": "Gone"}});
    let error = projects
        .patch_status("p1", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect_err("unknown phase must be refused");
    assert!(
        matches!(&error, kube::Error::Api(s) if s.message.contains("status.phase") && s.message.contains("Unsupported value")),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn typed_objects_read_back_equal() -> anyhow::Result<()> {
    use mla_common::api::*;
    let plane = ControlPlane::start("crds-typed").await?;
    plane.install_crds().await?;
    let ns = plane.namespace("typed").await?;
    let settings = MLAAdminSetting::new(
        MLA_ADMIN_SETTING_NAME,
        MLAAdminSettingSpec {
            cluster_name: "c1".into(),
            monitoring_rate_limits: Some(MonitoringRateLimitSettings {
                ingestion_rate: Some(100),
                max_series_total: Some(0),
                ..Default::default()
            }),
            logging_rate_limits: None,
        },
    );
    let api: Api<MLAAdminSetting> = Api::namespaced(plane.client(), &ns);
    api.create(&PostParams::default(), &settings).await?;
    let back = api.get(MLA_ADMIN_SETTING_NAME).await?;
    assert_eq!(back.spec, settings.spec);
    Ok(())
}

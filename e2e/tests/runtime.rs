//! The shared runtime in-process against a real API server: `/readyz` is 503 until the
//! watches sync, 200 while running, and 503 again from the moment shutdown begins while
//! controllers finish their work.

use std::time::Duration;

use clap::Parser;
use kube::Api;
use kube::runtime::watcher;
use mla_common::api::Project;
use mla_common::cli::CommonArgs;
use mla_common::runtime::Runtime;
use mla_e2e::{ControlPlane, eventually, free_port};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

async fn readyz(url: &str) -> Option<u16> {
    let response = reqwest::Client::new().get(url).timeout(Duration::from_secs(1)).send().await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn readyz_is_false_before_sync_true_while_running_false_during_shutdown() -> anyhow::Result<()> {
    let plane = ControlPlane::start("runtime").await?;
    let port = free_port()?;
    let args = Args::parse_from([
        "test".to_string(),
        format!("--kubeconfig={}", plane.admin_kubeconfig().display()),
        format!("--admin-addr=127.0.0.1:{port}"),
        "--leader-elect=false".into(),
    ]);
    let runtime = Runtime::new("runtime-test", &args.common).await?;
    let (_store, watch) =
        runtime.reflect("projects", Api::<Project>::all(runtime.client.clone()), watcher::Config::default());
    let shutdown = runtime.shutdown.clone();
    let controllers_done = tokio_util::sync::CancellationToken::new();
    let done = controllers_done.clone();
    let stop = shutdown.clone();
    let running = tokio::spawn(runtime.run(async move {
        tokio::spawn(watch);
        stop.cancelled().await;
        // A controller finishing in-flight work after the shutdown request.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        done.cancel();
        Ok(())
    }));

    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually("the admin server", Duration::from_secs(10), || async { Ok(readyz(&url).await) }).await?;
    assert_eq!(readyz(&url).await, Some(503), "no CRDs: the Project watch cannot have synced");

    plane.install_crds().await?;
    eventually("/readyz 200", Duration::from_secs(45), || async { Ok(readyz(&url).await.filter(|c| *c == 200)) })
        .await?;

    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!controllers_done.is_cancelled(), "the controller is still finishing");
    assert_eq!(readyz(&url).await, Some(503), "unready as soon as shutdown begins");

    tokio::time::timeout(Duration::from_secs(5), running).await???;
    assert!(controllers_done.is_cancelled(), "run() waited for the controllers to finish");
    assert_eq!(readyz(&url).await, None, "the admin server is gone after run() returns");
    Ok(())
}

/// Five seed controllers add their finalizers to a new Cluster at about the same time; each
/// patch is test-and-set on the list it read. One that lost the race reads the object again
/// and adds its finalizer to what is there now, in the same call (before, it failed with 422
/// and its reconcile waited for a backoff, or a Grafana pass for the next pass).
#[tokio::test]
async fn a_finalizer_add_that_lost_a_race_tries_again_with_what_is_there() -> anyhow::Result<()> {
    use kube::ResourceExt;
    use kube::api::PostParams;
    use mla_common::apply::Applier;
    use mla_common::leader::LeaderState;

    let plane = ControlPlane::start("finalizer-race").await?;
    plane.install_crds().await?;
    let api = Api::<Project>::all(plane.client());
    let project: Project = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubermatic.k8c.io/v1", "kind": "Project",
        "metadata": {"name": "p1"}, "spec": {"name": "one"}
    }))?;
    eventually("the Project CRD serves", Duration::from_secs(30), || async {
        Ok(api.create(&PostParams::default(), &project).await.ok())
    })
    .await?;
    let stale = api.get("p1").await?;
    let first = Applier::new("test/first", LeaderState::always());
    let second = Applier::new("test/second", LeaderState::always());
    first.add_finalizer(&api, &stale, "example.com/first").await?;
    // `stale` has no finalizers; the list now holds one: the test of the patch fails once.
    second.add_finalizer(&api, &stale, "example.com/second").await?;
    let fresh = api.get("p1").await?;
    assert_eq!(fresh.finalizers(), ["example.com/first".to_string(), "example.com/second".to_string()]);
    // And once more from a copy that has one of them but not the other.
    let third = Applier::new("test/third", LeaderState::always());
    third.add_finalizer(&api, &stale, "example.com/third").await?;
    third.add_finalizer(&api, &stale, "example.com/third").await?;
    assert_eq!(api.get("p1").await?.finalizers().len(), 3, "added once");
    // Release them so the API server can delete the Project with the plane.
    for finalizer in ["example.com/first", "example.com/second", "example.com/third"] {
        first.remove_finalizer(&api, &api.get("p1").await?, finalizer).await?;
    }
    Ok(())
}

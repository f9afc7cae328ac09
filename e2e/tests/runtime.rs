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

//! The binary's runtime against a real API server: admin endpoints, readiness gated on
//! watches, SIGTERM handling and leader election between two replicas.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use mla_e2e::{ControlPlane, ManagedProcess, eventually, free_port};

const BINARY: &str = env!("CARGO_BIN_EXE_master-controller-manager");

struct Replica {
    process: ManagedProcess,
    admin: String,
    identity: String,
}

fn start(plane: &ControlPlane, identity: &str, extra: &[&str]) -> anyhow::Result<Replica> {
    let port = free_port()?;
    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", plane.admin_kubeconfig().display()))
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .arg(format!("--leader-election-identity={identity}"))
        .args(["--leader-election-namespace=kube-system", "--seed-namespace=kubermatic", "--log-level=info,kube=warn"])
        .args(extra);
    let log = plane.dir().join(format!("{identity}.log"));
    Ok(Replica {
        process: ManagedProcess::spawn(identity, command, &log)?,
        admin: format!("http://127.0.0.1:{port}"),
        identity: identity.into(),
    })
}

async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let response = reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn readiness_waits_for_the_watch_and_sigterm_exits_cleanly() -> anyhow::Result<()> {
    let plane = ControlPlane::start("readiness").await?;
    // No CRDs yet: the Seed watch cannot sync, so the binary is alive but not ready.
    let mut replica = start(&plane, "solo", &["--leader-elect=false"])?;
    let livez = format!("{}/livez", replica.admin);
    eventually("/livez", Duration::from_secs(20), || {
        let livez = livez.clone();
        async move { Ok(get(&livez).await.ok().filter(|(code, _)| *code == 200)) }
    })
    .await?;
    let readyz = format!("{}/readyz", replica.admin);
    for _ in 0..10 {
        let (code, body) = get(&readyz).await?;
        assert_eq!(code, 503, "ready before the Seed watch synced: {body}");
        assert!(body.contains("[-]seeds"), "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    plane.install_crds().await?;
    let body = eventually("/readyz to turn 200 after the CRDs exist", Duration::from_secs(45), || {
        let readyz = readyz.clone();
        async move { Ok(get(&readyz).await.ok().filter(|(code, _)| *code == 200).map(|(_, body)| body)) }
    })
    .await?;
    assert!(body.contains("[+]seeds"), "{body}");

    let (code, metrics) = get(&format!("{}/metrics", replica.admin)).await?;
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"mla_build_info{binary="master-controller-manager""#), "{metrics}");
    assert!(sample(&metrics, "process_resident_memory_bytes").is_some_and(|v| v > 0.0), "{metrics}");
    assert_metrics_parse(&metrics)?;

    replica.process.terminate();
    let started = Instant::now();
    let status = replica.process.wait_timeout(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "no clean exit within 5 s of SIGTERM: {status:?}");
    println!("exited {:?} after SIGTERM", started.elapsed());
    Ok(())
}

/// An API server that accepts connections and never answers (as one does while it hangs):
/// SIGTERM during the binary's start-up discovery still ends it at once. In a container
/// the binary is PID 1, which ignores SIGTERM until it has a handler; here the handler's
/// absence showed as the process running on until SIGKILL.
#[tokio::test]
async fn sigterm_while_the_api_server_hangs_exits_at_once() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.push(stream);
        }
    });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hanging-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("hanging.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    )?;
    let admin = free_port()?;
    let mut command = Command::new(BINARY);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--admin-addr=127.0.0.1:{admin}"))
        .args(["--leader-elect=false", "--seed-namespace=kubermatic"]);
    let mut process = ManagedProcess::spawn("hanging", command, &dir.join("hanging.log"))?;
    // Long enough for the binary to be inside its first request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(process.try_wait()?.is_none(), "the binary ended before the signal: {}", log(&dir));
    process.terminate();
    let started = Instant::now();
    let status = process.wait_timeout(Duration::from_secs(5)).await;
    held.abort();
    assert!(status.is_some_and(|s| s.success()), "no clean exit within 5 s of SIGTERM: {status:?}\n{}", log(&dir));
    println!("exited {:?} after SIGTERM during start-up", started.elapsed());
    Ok(())
}

fn log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("hanging.log")).unwrap_or_default()
}

/// `promtool check metrics` (the Prometheus project's own parser and linter) accepts the
/// exposition.
fn assert_metrics_parse(metrics: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut promtool = Command::new(mla_e2e::real_parts::binary("prometheus", "promtool")?)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("promtool (hack/build-real-parts.sh builds it): {e}"))?;
    promtool.stdin.take().map(|mut stdin| stdin.write_all(metrics.as_bytes())).transpose()?;
    let output = promtool.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("master-controller-manager").await.ok()??.spec?.holder_identity
}

async fn leader_metric(replica: &Replica) -> Option<f64> {
    let (_, metrics) = get(&format!("{}/metrics", replica.admin)).await.ok()?;
    sample(&metrics, "mla_leader")
}

#[tokio::test]
async fn exactly_one_leader_and_failover_within_the_lease_duration() -> anyhow::Result<()> {
    let plane = ControlPlane::start("leader").await?;
    plane.install_crds().await?;
    let lease_flags = [
        "--leader-election-lease-duration=4s",
        "--leader-election-renew-deadline=3s",
        "--leader-election-retry-period=500ms",
    ];
    let replicas = [start(&plane, "replica-a", &lease_flags)?, start(&plane, "replica-b", &lease_flags)?];
    let leases: Api<Lease> = Api::namespaced(plane.client(), "kube-system");

    let leader = eventually("a leader", Duration::from_secs(30), || {
        let leases = leases.clone();
        async move { Ok(holder(&leases).await) }
    })
    .await?;
    // Give the follower several retry periods to (wrongly) claim leadership too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&leases).await.as_deref(), Some(leader.as_str()), "leadership moved without a failure");
    let mut leading = Vec::new();
    for replica in &replicas {
        let value =
            eventually("mla_leader metric", Duration::from_secs(10), || async { Ok(leader_metric(replica).await) })
                .await?;
        if value == 1.0 {
            leading.push(replica.identity.clone());
        }
    }
    assert_eq!(leading, vec![leader.clone()], "exactly the Lease holder reports mla_leader 1");

    // Kill the leader without a chance to release the lease: the other takes over once
    // the lease expires.
    let [mut a, mut b] = replicas;
    let (dead, survivor) = if a.identity == leader { (&mut a, &b) } else { (&mut b, &a) };
    let killed = Instant::now();
    dead.process.kill();
    let new_leader = eventually("a new leader", Duration::from_secs(15), || {
        let leases = leases.clone();
        let old = leader.clone();
        async move { Ok(holder(&leases).await.filter(|h| *h != old)) }
    })
    .await?;
    let takeover = killed.elapsed();
    assert_eq!(new_leader, survivor.identity);
    // Lease duration 4 s, plus one retry period and the confirmation pause.
    assert!(takeover < Duration::from_secs(6), "takeover took {takeover:?}");
    eventually("survivor reports mla_leader 1", Duration::from_secs(5), || async {
        Ok(leader_metric(survivor).await.filter(|v| *v == 1.0))
    })
    .await?;
    println!("takeover after SIGKILL of the leader: {takeover:?}");
    Ok(())
}

#[tokio::test]
async fn a_leader_stopped_by_sigterm_hands_over_at_once() -> anyhow::Result<()> {
    let plane = ControlPlane::start("handover").await?;
    plane.install_crds().await?;
    let lease_flags = ["--leader-election-lease-duration=15s", "--leader-election-retry-period=500ms"];
    let mut first = start(&plane, "first", &lease_flags)?;
    let leases: Api<Lease> = Api::namespaced(plane.client(), "kube-system");
    eventually("first to lead", Duration::from_secs(30), || {
        let leases = leases.clone();
        async move { Ok(holder(&leases).await.filter(|h| h == "first")) }
    })
    .await?;
    let _second = start(&plane, "second", &lease_flags)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.process.terminate();
    let stopped = Instant::now();
    assert!(first.process.wait_timeout(Duration::from_secs(5)).await.is_some_and(|s| s.success()));
    eventually("second to lead", Duration::from_secs(10), || {
        let leases = leases.clone();
        async move { Ok(holder(&leases).await.filter(|h| h == "second")) }
    })
    .await?;
    let handover = stopped.elapsed();
    // Far below the 15 s lease: the lease was released, not left to expire.
    assert!(handover < Duration::from_secs(5), "handover took {handover:?}");
    println!("handover after SIGTERM of the leader: {handover:?}");
    Ok(())
}

//! The container images `make images` builds (hack/build-images.sh, docs/images.md), run
//! with Docker as a user would run them: each runs as a non-root user (its configured
//! user and the uid its process really has), answers `--help`, holds no compiler, package
//! manager or (but for nginx) shell, and its size is printed. The binaries resolve names
//! by DNS in their scratch images (static glibc) and reach a Kubernetes API by name; nginx
//! runs the gateway Deployment's own command as it runs it (uid 101, read-only root, /tmp
//! writable, no capabilities), reloads a renewed certificate and stops gracefully at once;
//! Cortex and Prometheus become ready as their non-root users with their state in their
//! images' directories; pause exits 0 on SIGTERM.
//!
//! The tests are `#[ignore]`d in the default `cargo test --workspace`: they need Docker
//! and the images, which take minutes to build cold. `make images-test` builds the
//! images and runs them (`cargo test -p mla-e2e --test images -- --ignored`). Without a
//! Docker daemon they skip with a message, except in CI (`CI` set), where they fail.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mla_e2e::{free_port, workspace_root};

const BINARIES: [&str; 3] = ["master-controller-manager", "seed-controller-manager", "user-cluster-controller-manager"];

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("running docker")
}

/// stdout of a docker command that must succeed.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the tests can run: a Docker daemon answers. Without one they skip, but not in
/// CI, which must run them.
fn docker_answers() -> bool {
    let answers = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    if !answers {
        let message = "no Docker daemon answers (`docker info`); hack/install-docker.sh installs and starts one, \
                       `make images-test` builds the images and runs these tests";
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{message}; CI must not skip the image tests");
        }
        eprintln!("SKIPPED: {message}");
    }
    answers
}

/// Image name -> reference, as hack/build-images.sh names them (its `--list`).
fn images() -> &'static BTreeMap<String, String> {
    static IMAGES: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let out = Command::new(workspace_root().join("hack/build-images.sh")).arg("--list").output().unwrap();
        assert!(out.status.success(), "hack/build-images.sh --list: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, reference)| (name.to_string(), reference.to_string()))
            .collect()
    })
}

fn image(name: &str) -> &'static str {
    let reference = images().get(name).unwrap_or_else(|| panic!("hack/build-images.sh lists no image {name}"));
    let present = docker(&["image", "inspect", reference]).status.success();
    assert!(present, "image {reference} is missing: `make images` builds it");
    reference
}

/// A container removed (with its network, if any) when dropped, also on a failed assert.
struct Container {
    id: String,
}

impl Container {
    fn run(args: &[&str]) -> Self {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        Self { id: docker_ok(&all) }
    }

    fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn running(&self) -> bool {
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &self.id]) == "true"
    }

    /// The real uid of the container's main process, read from the host's /proc while it
    /// runs.
    fn process_uid(&self) -> u32 {
        let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.id]);
        assert!(pid != "0", "container {} is not running: {}", self.id, self.logs());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the process status");
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("Uid line");
        // Real, effective, saved and file-system uid: all must be the same non-root one.
        let uids: Vec<u32> = uid.split_whitespace().map(|u| u.parse().unwrap()).collect();
        assert!(uids.windows(2).all(|w| w[0] == w[1]), "uids differ: {uids:?}");
        uids[0]
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.id]);
    }
}

struct Network {
    name: String,
}

impl Network {
    fn create() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("mla-images-test-{}-{nanos}", std::process::id());
        docker_ok(&["network", "create", "--internal", &name]);
        Self { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The user an image is configured to run as: numeric (the kubelet's runAsNonRoot check
/// needs a number) and not root.
fn configured_uid(reference: &str) -> u32 {
    let user = docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", reference]);
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid.parse().unwrap_or_else(|_| panic!("{reference}: user {user:?} is not numeric"));
    assert_ne!(uid, 0, "{reference} runs as root");
    uid
}

/// Prints the image's size and checks its files: no compiler, package manager or
/// interpreter; a shell only where `shell_allowed`.
fn check_contents(name: &str, reference: &str, shell_allowed: bool) {
    let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", reference]).parse().unwrap();
    eprintln!("image {name:<34} {reference:<62} {:>7.1} MB", size as f64 / 1e6);
    let created = docker_ok(&["create", reference]);
    let export =
        Command::new("sh").arg("-c").arg(format!("docker export {created} | tar -t")).output().expect("docker export");
    let _ = docker(&["rm", &created]);
    assert!(export.status.success(), "docker export {reference}: {}", String::from_utf8_lossy(&export.stderr));
    let files = String::from_utf8(export.stdout).unwrap();
    let names: Vec<&str> = files.lines().map(|f| f.trim_end_matches('/')).collect();
    for tool in ["gcc", "cc", "ld", "as", "cargo", "rustc", "go", "apt", "apt-get", "dpkg", "perl", "python3"] {
        let found = names.iter().find(|f| Path::new(f).file_name().is_some_and(|n| n == tool));
        assert_eq!(found, None, "{reference} holds {tool}");
    }
    if !shell_allowed {
        let shell = names.iter().find(|f| ["sh", "bash", "busybox"].iter().any(|s| f.ends_with(&format!("bin/{s}"))));
        assert_eq!(shell, None, "{reference} holds a shell");
    }
}

/// `--help` (or the part's own spelling) answers with its usage.
fn check_help(reference: &str, args: &[&str], expected: &str, allowed_exits: &[i32]) {
    let mut all = vec!["run", "--rm", "--network", "none", reference];
    all.extend_from_slice(args);
    let out = docker(&all);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().unwrap_or(-1);
    assert!(allowed_exits.contains(&code), "{reference} {args:?} exited {code}: {text}");
    assert!(text.contains(expected), "{reference} {args:?} printed no {expected:?}: {text}");
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    // The image's user (65532) reads it through the bind mount.
    std::process::Command::new("chmod").args(["0644", path.to_str().unwrap()]).status().unwrap();
    path
}

#[test]
#[ignore = "needs Docker and the images: make images-test"]
fn the_binaries_run_as_non_root_answer_help_and_reach_the_api_server_by_dns_name() {
    if !docker_answers() {
        return;
    }
    let nginx = image("nginx");
    for binary in BINARIES {
        let reference = image(binary);
        check_contents(binary, reference, false);
        assert_eq!(configured_uid(reference), 65532, "{reference}");
        check_help(reference, &["--help"], &format!("Usage: {binary}"), &[0]);

        // A stand-in for the API server on a network of its own, known to the binary only by
        // its name: Docker's DNS server answers for it, so the binary's static glibc must
        // resolve it through /etc/resolv.conf. The stand-in (busybox nc) prints the request
        // and never answers, which keeps the binary waiting, alive for its uid to be read.
        // The kubeconfig names no CA, so the client also needs the image's CA bundle.
        let network = Network::create();
        let standin = Container::run(&[
            "--network",
            &network.name,
            "--network-alias",
            "kube-standin",
            nginx,
            "sh",
            "-c",
            "sleep 3600 | nc -l -p 8080",
        ]);
        let dir = tempdir(binary);
        let kubeconfig = kubeconfig(&dir, "http://kube-standin:8080");
        let mount = format!("{}:/kubeconfig:ro", kubeconfig.display());
        let mut args = vec!["--network", &network.name, "-v", &mount, "-e", "KUBECONFIG=/kubeconfig", reference];
        if binary == "user-cluster-controller-manager" {
            args.extend(["--cluster-name=images-test", "--user-cluster-kubeconfig=/kubeconfig"]);
        }
        let controller = Container::run(&args);
        let reached = || standin.logs().to_ascii_lowercase().contains("host: kube-standin:8080");
        eventually(&format!("{binary} to reach the API server stand-in by name"), Duration::from_secs(60), || {
            assert!(controller.running() || reached(), "{binary} exited: {}", controller.logs());
            assert!(standin.running() || reached(), "the stand-in exited: {}", standin.logs());
            reached()
        });
        if controller.running() {
            assert_eq!(controller.process_uid(), 65532, "{binary}'s process uid");
        } else {
            panic!("{binary} exited while its API server did not answer: {}", controller.logs());
        }
        // How it stops as PID 1 while its API server does not answer (reported, not held
        // to a limit: master-controller-manager waits for its first discovery request
        // before it handles SIGTERM, so it is killed at the grace period's end here).
        let started = Instant::now();
        docker_ok(&["stop", "-t", "15", &controller.id]);
        let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &controller.id]);
        eprintln!(
            "stop   {binary:<34} SIGTERM while its API server hangs: exit {code} after {:.1?}",
            started.elapsed()
        );
        drop(controller);
        drop(standin);
        drop(network);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
#[ignore = "needs Docker and the images: make images-test"]
fn nginx_runs_as_the_gateway_runs_it() {
    if !docker_answers() {
        return;
    }
    let reference = image("nginx");
    check_contents("nginx", reference, true);
    assert_eq!(configured_uid(reference), 101, "{reference}");
    check_help(reference, &["nginx", "-h"], "nginx version: nginx/", &[0]);
    assert_eq!(docker_ok(&["run", "--rm", "--network", "none", reference, "id", "-u"]), "101");
    // The gateway Deployment's watcher loop (seed-controller-manager's gateway/resources.rs)
    // needs these besides nginx.
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        reference,
        "sh",
        "-c",
        "set -e; for c in cat md5sum sleep kill wait; do command -v $c >/dev/null; done; \
         echo x | md5sum; sleep 0.1",
    ]);
    // As the gateway Deployment runs it: its own command (the watcher loop of
    // seed-controller-manager's gateway/resources.rs, read from there), uid 101, read-only
    // root, /tmp an empty writable volume, no capabilities, no privilege escalation, the
    // configuration and certificates mounted read-only.
    let port = free_port().unwrap().to_string();
    let config = format!(
        "pid /tmp/nginx.pid;\nerror_log stderr notice;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path /tmp/client_body;\n  proxy_temp_path /tmp/proxy;\n  fastcgi_temp_path /tmp/fastcgi;\n  \
         uwsgi_temp_path /tmp/uwsgi;\n  scgi_temp_path /tmp/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate /etc/ssl/mla-gateway/gateway.crt;\n    \
         ssl_certificate_key /etc/ssl/mla-gateway/gateway.key;\n    location / {{ return 200 \"gateway\\n\"; }}\n  }}\n}}\n"
    );
    let dir = tempdir("nginx");
    let (conf, certs) = (dir.join("conf"), dir.join("certs"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(conf.join("nginx.conf"), config).unwrap();
    write_certificate(&certs, "first");
    std::process::Command::new("chmod").args(["-R", "a+rX", dir.to_str().unwrap()]).status().unwrap();
    let conf_mount = format!("{}:/etc/nginx/mla:ro", conf.display());
    let certs_mount = format!("{}:/etc/ssl/mla-gateway:ro", certs.display());
    let entrypoint = gateway_entrypoint();
    let nginx = Container::run(&[
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:uid=101,gid=101",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &conf_mount,
        "-v",
        &certs_mount,
        reference,
        "/bin/sh",
        "-c",
        &entrypoint,
    ]);
    let url = format!("https://127.0.0.1:{port}/");
    let served_by = |cn: &str| {
        let out = Command::new("curl").args(["-skv", "--max-time", "2", &url]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        text.contains("gateway\n") && text.contains(&format!("subject: CN={cn}"))
    };
    eventually("nginx to serve with the first certificate", Duration::from_secs(30), || {
        assert!(nginx.running(), "nginx exited: {}", nginx.logs());
        served_by("first")
    });
    // The shell is PID 1 as in the pod; nginx runs under it as the same user.
    assert_eq!(nginx.process_uid(), 101);
    // A renewed certificate (the kubelet updates the Secret volume in place) is served
    // after the loop's next check (every 10 s), without a restart.
    write_certificate(&certs, "second");
    eventually("nginx to reload the renewed certificate", Duration::from_secs(30), || {
        assert!(nginx.running(), "nginx exited: {}", nginx.logs());
        served_by("second")
    });
    assert_eq!(docker_ok(&["inspect", "-f", "{{.RestartCount}}", &nginx.id]), "0");
    // A pod's deletion: the runtime sends the image's stop signal; the loop must turn it
    // into nginx's graceful stop and exit 0 at once, not be killed at the grace period's end.
    let started = Instant::now();
    docker_ok(&["stop", "-t", "20", &nginx.id]);
    assert!(started.elapsed() < Duration::from_secs(10), "the gateway ignored its stop signal: {}", nginx.logs());
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &nginx.id]), "0", "{}", nginx.logs());
    assert!(nginx.logs().contains("SIGQUIT"), "nginx was stopped gracefully: {}", nginx.logs());
    drop(nginx);
    let _ = std::fs::remove_dir_all(dir);
}

/// The gateway container's shell command, as seed-controller-manager writes it into the
/// gateway Deployment (the `ENTRYPOINT` constant of its gateway/resources.rs).
fn gateway_entrypoint() -> String {
    let source =
        std::fs::read_to_string(workspace_root().join("seed-controller-manager/src/gateway/resources.rs")).unwrap();
    let start = "const ENTRYPOINT: &str = r#\"";
    let at = source.find(start).expect("the gateway's ENTRYPOINT constant") + start.len();
    let len = source[at..].find("\"#;").expect("the end of the ENTRYPOINT constant");
    source[at..at + len].to_string()
}

/// A self-signed serving certificate with common name `cn` as the gateway's Secret
/// volume holds it (gateway.crt, gateway.key), each file replaced at once.
fn write_certificate(dir: &Path, cn: &str) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    for (name, pem) in [("gateway.key", key.serialize_pem()), ("gateway.crt", cert.pem())] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::process::Command::new("chmod").args(["0644", tmp.to_str().unwrap()]).status().unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[test]
#[ignore = "needs Docker and the images: make images-test"]
fn cortex_and_prometheus_become_ready_as_their_users() {
    if !docker_answers() {
        return;
    }
    // Cortex as one process, its state in the image's /data (owned by its user).
    let cortex = image("cortex");
    check_contents("cortex", cortex, false);
    assert_eq!(configured_uid(cortex), 65534, "{cortex}");
    check_help(cortex, &["-help"], "-target", &[0, 2]);
    check_help(cortex, &["-version"], "Cortex, version", &[0]);
    let http = free_port().unwrap().to_string();
    let grpc = free_port().unwrap().to_string();
    let config = include_str!("../src/cortex/cortex.yaml")
        .replace("{DIR}", "/data")
        .replace("{HTTP_ADDR}", "127.0.0.1")
        .replace("{HTTP_PORT}", &http)
        .replace("{GRPC_PORT}", &grpc)
        .replace("file: /data/runtime-config.yaml", "file: /etc/cortex/runtime-config.yaml");
    let dir = tempdir("cortex");
    std::fs::write(dir.join("cortex.yaml"), config).unwrap();
    std::fs::write(dir.join("runtime-config.yaml"), "overrides: {}\n").unwrap();
    std::process::Command::new("chmod").args(["-R", "a+rX", dir.to_str().unwrap()]).status().unwrap();
    let mount = format!("{}:/etc/cortex:ro", dir.display());
    let container =
        Container::run(&["--network", "host", "-v", &mount, cortex, "-config.file=/etc/cortex/cortex.yaml"]);
    let ready = format!("http://127.0.0.1:{http}/ready");
    eventually("Cortex /ready", Duration::from_secs(90), || {
        assert!(container.running(), "cortex exited: {}", container.logs());
        http_get(&ready).is_some()
    });
    assert_eq!(container.process_uid(), 65534);
    drop(container);
    let _ = std::fs::remove_dir_all(dir);

    // Prometheus in agent mode, as the metrics agent runs it (its storage in a directory
    // its user owns).
    let prometheus = image("prometheus");
    check_contents("prometheus", prometheus, false);
    assert_eq!(configured_uid(prometheus), 65534, "{prometheus}");
    check_help(prometheus, &["--help"], "usage: prometheus", &[0]);
    check_help(prometheus, &["--version"], "prometheus, version 3.", &[0]);
    let port = free_port().unwrap();
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let container = Container::run(&[
        "--network",
        "host",
        prometheus,
        "--agent",
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.agent.path=/prometheus",
        &listen,
    ]);
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    eventually("Prometheus /-/ready", Duration::from_secs(60), || {
        assert!(container.running(), "prometheus exited: {}", container.logs());
        http_get(&ready).is_some()
    });
    assert_eq!(container.process_uid(), 65534);
}

#[test]
#[ignore = "needs Docker and the images: make images-test"]
fn oauth2_proxy_mock_oidc_and_pause_run_as_non_root() {
    if !docker_answers() {
        return;
    }
    let proxy = image("oauth2-proxy");
    check_contents("oauth2-proxy", proxy, false);
    assert_eq!(configured_uid(proxy), 65532, "{proxy}");
    check_help(proxy, &["--help"], "Usage of oauth2-proxy", &[0]);
    check_help(proxy, &["--version"], "oauth2-proxy v", &[0]);
    let port = free_port().unwrap();
    let address = format!("--http-address=127.0.0.1:{port}");
    // A provider that needs no discovery at start, so it starts without one.
    let container = Container::run(&[
        "--network",
        "host",
        proxy,
        &address,
        "--provider=github",
        "--client-id=images-test",
        "--client-secret=images-test",
        "--cookie-secret=0123456789abcdef0123456789abcdef",
        "--email-domain=*",
        "--upstream=static://200",
    ]);
    let ping = format!("http://127.0.0.1:{port}/ping");
    eventually("oauth2-proxy /ping", Duration::from_secs(30), || {
        assert!(container.running(), "oauth2-proxy exited: {}", container.logs());
        http_get(&ping).is_some()
    });
    assert_eq!(container.process_uid(), 65532);
    drop(container);

    let oidc = image("mock-oidc");
    check_contents("mock-oidc", oidc, false);
    assert_eq!(configured_uid(oidc), 65532, "{oidc}");
    check_help(oidc, &["-help"], "-client-id", &[0]);

    let pause = image("pause");
    check_contents("pause", pause, false);
    assert_eq!(configured_uid(pause), 65535, "{pause}");
    check_help(pause, &["--help"], "usage: pause", &[0]);
    let container = Container::run(&["--network", "none", pause]);
    eventually("pause to run", Duration::from_secs(10), || container.running());
    assert_eq!(container.process_uid(), 65535);
    // SIGTERM ends it at once with 0 (not after docker stop's grace period with 137).
    let started = Instant::now();
    docker_ok(&["stop", "-t", "20", &container.id]);
    assert!(started.elapsed() < Duration::from_secs(10), "pause ignored SIGTERM");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &container.id]), "0");
}

/// The body of a 200 answer to GET `url`, else None.
fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "2", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("mla-images-test-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

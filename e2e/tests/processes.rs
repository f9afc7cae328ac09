//! Processes started by tests, the demo and benchmarks never outlive their owner, and
//! nginx listens on loopback only: checked on real processes (a shell with a child, real
//! nginx with its workers) and on a real owner killed with SIGKILL.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mla_e2e::process::group_members;
use mla_e2e::{ManagedProcess, free_port};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mla-processes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits up to `timeout` until group `pgid` has no live process; false if it still has.
fn gone_within(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if group_members(pgid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    group_members(pgid).is_empty()
}

fn records_of(pgid: u32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(mla_e2e::process::registry_dir()) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{pgid}-"))))
        .collect()
}

/// Lines of `ss -ltnp` held by the processes of group `pgid`.
fn listening(pgid: u32) -> Vec<String> {
    let members = group_members(pgid);
    let output = Command::new("ss").arg("-ltnpH").output().expect("ss (iproute2)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| members.iter().any(|pid| l.contains(&format!("pid={pid},"))))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_dropped_process_takes_its_whole_group_and_its_record_with_it() {
    let dir = scratch("drop");
    let mut command = Command::new("sh");
    // A child that outlives the shell unless the group is killed.
    command.args(["-c", "sleep 300 & exec sleep 300"]);
    let process = ManagedProcess::spawn("sleepers", command, &dir.join("log")).unwrap();
    let pgid = process.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_members(pgid).len() < 2 {
        assert!(Instant::now() < deadline, "the child did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = records_of(pgid);
    assert_eq!(record.len(), 1, "one registry record for the group");
    let text = std::fs::read_to_string(&record[0]).unwrap();
    assert!(text.contains("name=sleepers\n") && text.contains(&format!("pgid={pgid}\n")), "{text}");
    assert!(text.contains(&format!("owner={}\n", std::process::id())), "{text}");
    drop(process);
    assert!(group_members(pgid).is_empty(), "group {pgid} alive after drop: {:?}", group_members(pgid));
    assert!(records_of(pgid).is_empty(), "record kept after the group went");
    let _ = std::fs::remove_dir_all(&dir);
}

const GATEWAY_LIKE: &str = "worker_processes 2;
pid {dir}/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    access_log off;
    server {
        listen {port};
        location / { return 200 \"ok\\n\"; }
    }
}
";

fn nginx_config(dir: &Path, port: u16) -> String {
    GATEWAY_LIKE.replace("{dir}", &dir.display().to_string()).replace("{port}", &port.to_string())
}

fn wait_listening(pgid: u32, port: u16) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = listening(pgid);
        if lines.iter().any(|l| l.contains(&format!(":{port} "))) {
            return lines;
        }
        assert!(Instant::now() < deadline, "nginx does not listen on {port}: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nginx_listens_on_loopback_only_and_stops_with_its_workers() {
    let dir = scratch("nginx");
    let port = free_port().unwrap();
    let nginx = mla_e2e::nginx::Nginx::start("nginx", &dir, &nginx_config(&dir, port)).unwrap();
    let pgid = nginx.id();
    let lines = wait_listening(pgid, port);
    assert!(lines.iter().all(|l| l.contains(&format!("127.0.0.1:{port} "))), "not loopback only: {lines:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_members(pgid).len() < 3 {
        assert!(Instant::now() < deadline, "master and two workers: {:?}", group_members(pgid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    drop(nginx);
    assert!(group_members(pgid).is_empty(), "nginx processes left: {:?}", group_members(pgid));
    // SIGQUIT did it, not the last resort after the 5 s grace.
    assert!(started.elapsed() < Duration::from_secs(4), "graceful stop took {:?}", started.elapsed());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still served");
    let log = std::fs::read_to_string(dir.join("nginx.log")).unwrap();
    assert!(log.contains("signal 3 (SIGQUIT) received"), "not stopped with SIGQUIT:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nginx_refuses_a_configuration_listening_beyond_loopback() {
    let dir = scratch("refuse");
    let config = nginx_config(&dir, 18099).replace("listen 18099;", "listen 0.0.0.0:18099;");
    let error = mla_e2e::nginx::Nginx::start("nginx", &dir, &config).expect_err("must be refused");
    assert!(error.to_string().contains("not on loopback"), "{error:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// nginx built by hand (not through `mla_e2e::nginx::Nginx`) is refused unless it listens
/// on loopback only, and is stopped with its workers all the same.
#[test]
fn nginx_started_by_hand_must_listen_on_loopback_and_stops_with_its_workers() {
    let dir = scratch("by-hand");
    let port = free_port().unwrap();
    let command = |config: &str| {
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let mut command = Command::new(mla_e2e::nginx::nginx_bin());
        command.arg("-p").arg(&dir).args(["-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]);
        command
    };
    let refused = ManagedProcess::spawn("nginx", command(&nginx_config(&dir, port)), &dir.join("log"))
        .expect_err("a bare port listens on every address");
    assert!(refused.to_string().contains("beyond loopback"), "{refused:#}");

    let loopback = nginx_config(&dir, port).replace("listen ", "listen 127.0.0.1:");
    let process = ManagedProcess::spawn("nginx", command(&loopback), &dir.join("log")).unwrap();
    let pgid = process.id();
    wait_listening(pgid, port);
    let started = Instant::now();
    drop(process);
    assert!(group_members(pgid).is_empty(), "nginx processes left: {:?}", group_members(pgid));
    // SIGQUIT did it, not the last resort after the 5 s grace.
    assert!(started.elapsed() < Duration::from_secs(4), "graceful stop took {:?}", started.elapsed());
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("signal 3 (SIGQUIT) received"), "not stopped with SIGQUIT:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run as a child of [`the_watchdog_stops_the_group_when_its_owner_is_killed`] only: starts
/// nginx, writes its process group id, and waits to be killed.
#[test]
#[ignore = "run by the_watchdog_stops_the_group_when_its_owner_is_killed"]
fn owner_killed_while_running_nginx() {
    let Some(dir) = std::env::var_os("MLA_PROCESSES_OWNER_DIR").map(PathBuf::from) else { return };
    let port: u16 = std::env::var("MLA_PROCESSES_OWNER_PORT").unwrap().parse().unwrap();
    let nginx = mla_e2e::nginx::Nginx::start("nginx", &dir, &nginx_config(&dir, port)).unwrap();
    std::fs::write(dir.join("pgid"), nginx.id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn the_watchdog_stops_the_group_when_its_owner_is_killed() {
    let dir = scratch("owner");
    let port = free_port().unwrap();
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_killed_while_running_nginx", "--ignored", "--nocapture"])
        .env("MLA_PROCESSES_OWNER_DIR", &dir)
        .env("MLA_PROCESSES_OWNER_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pgid: u32 = loop {
        if let Some(pgid) = std::fs::read_to_string(dir.join("pgid")).ok().and_then(|s| s.parse().ok()) {
            break pgid;
        }
        assert!(owner.try_wait().unwrap().is_none(), "the owner exited early");
        assert!(Instant::now() < deadline, "the owner did not start nginx");
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_listening(pgid, port);
    let members = group_members(pgid);
    assert!(members.len() >= 3, "master and two workers: {members:?}");
    assert_eq!(records_of(pgid).len(), 1, "the group is recorded");

    owner.kill().unwrap(); // SIGKILL: no unwinding, no drop
    owner.wait().unwrap();
    assert!(gone_within(pgid, Duration::from_secs(10)), "nginx outlived its owner: {:?}", group_members(pgid));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still served");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !records_of(pgid).is_empty() {
        assert!(Instant::now() < deadline, "the watchdog left the record");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every process started with `.spawn()` outside `e2e/src/process.rs` is short-lived and
/// waited for in the same function (`wait_with_output`); long-running ones go through
/// `ManagedProcess`. A new `.spawn()` fails here until it is one or the other.
#[test]
fn long_running_processes_are_started_only_through_managed_process() {
    let root = mla_e2e::workspace_root();
    let mut offenders = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
                continue;
            }
            if !name.ends_with(".rs") || path.ends_with("e2e/src/process.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (index, line) in text.lines().enumerate() {
                if !line.contains(".spawn()") {
                    continue;
                }
                // Short-lived: the output is collected a few lines further down.
                let rest: String = text.lines().skip(index).take(4).collect();
                if rest.contains("wait_with_output()") {
                    continue;
                }
                // This file's own owner process, killed and waited for by the test.
                if path.ends_with("e2e/tests/processes.rs") {
                    continue;
                }
                // A watchdog that must outlive its owner's panic (as ManagedProcess's own
                // does), marked so with its reason just above the command.
                let before: Vec<&str> = text.lines().skip(index.saturating_sub(12)).take(12.min(index)).collect();
                if before.iter().any(|l| l.contains("not a ManagedProcess:")) {
                    continue;
                }
                offenders.push(format!(
                    "{}:{}: {}",
                    path.strip_prefix(&root).unwrap().display(),
                    index + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "start these through mla_e2e::ManagedProcess:\n{}", offenders.join("\n"));
}

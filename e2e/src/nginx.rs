//! Real nginx for tests, the demo and benchmarks: in the foreground (`daemon off`) in a
//! process group of its own, so that its workers belong to the group; stopped as nginx is
//! meant to be stopped (SIGQUIT to the master, which closes idle connections, lets
//! running requests finish and stops its workers), with SIGKILL to the group as the last
//! resort; and listening on loopback only, whatever the configuration says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::process::{ManagedProcess, Stop};

/// How long nginx may take for a graceful stop before its group is killed.
const GRACE: Duration = Duration::from_secs(5);

/// The nginx to run: `$NGINX`, else Debian's (installed by `hack/install-test-deps.sh`).
pub fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// `config` with every `listen` on loopback: a bare port `listen 8080 ...;` becomes
/// `listen 127.0.0.1:8080 ...;`; an address that is not loopback is refused. The gateway's
/// configuration listens on every address, as a pod must; a test's must not.
pub fn loopback_only(config: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(config.len() + 64);
    for line in config.split_inclusive('\n') {
        let indent = &line[..line.len() - line.trim_start().len()];
        let Some(rest) = line.trim_start().strip_prefix("listen ") else {
            out.push_str(line);
            continue;
        };
        let address = rest.split([' ', ';']).next().unwrap_or_default();
        if !address.is_empty() && address.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(indent);
            out.push_str("listen 127.0.0.1:");
            out.push_str(rest);
        } else if ["127.0.0.1:", "localhost:", "[::1]:"].iter().any(|p| address.starts_with(p)) {
            out.push_str(line);
        } else {
            anyhow::bail!("nginx would listen on {address:?}, not on loopback only: {}", line.trim());
        }
    }
    Ok(out)
}

/// A running nginx with its files in one directory (its prefix): `nginx.conf` and
/// `nginx.log` (stdout and stderr: the error log and, with `/dev/stdout`, the access log).
#[derive(Debug)]
pub struct Nginx {
    prefix: PathBuf,
    process: ManagedProcess,
}

impl Nginx {
    /// Writes `config` (listen addresses moved to loopback, see [`loopback_only`]) to
    /// `<dir>/nginx.conf` and starts nginx with `dir` as prefix, named `name` in the
    /// process registry. It may take a moment to listen.
    pub fn start(name: &str, dir: &Path, config: &str) -> anyhow::Result<Self> {
        let prefix = dir.to_path_buf();
        write_config(&prefix, config)?;
        let mut command = Command::new(nginx_bin());
        command.args(Self::base_args(&prefix)).args(["-g", "daemon off;"]);
        let process = ManagedProcess::spawn_with(
            name,
            command,
            &prefix.join("nginx.log"),
            Stop::Graceful { signal: "QUIT", grace: GRACE },
        )
        .with_context(|| {
            format!("starting nginx ({}; hack/install-test-deps.sh installs it)", nginx_bin().display())
        })?;
        Ok(Self { prefix, process })
    }

    fn base_args(prefix: &Path) -> Vec<String> {
        vec![
            "-e".into(),
            "stderr".into(),
            "-p".into(),
            format!("{}/", prefix.display()),
            "-c".into(),
            prefix.join("nginx.conf").to_string_lossy().into_owned(),
        ]
    }

    /// `nginx -s reload`: nginx re-reads its configuration and the certificate files.
    pub fn reload(&self) -> anyhow::Result<()> {
        let output = Command::new(nginx_bin()).args(Self::base_args(&self.prefix)).args(["-s", "reload"]).output()?;
        anyhow::ensure!(
            output.status.success(),
            "nginx -s reload failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        Ok(())
    }

    /// Replaces the configuration (moved to loopback as at start) and reloads.
    pub fn reload_with(&self, config: &str) -> anyhow::Result<()> {
        write_config(&self.prefix, config)?;
        self.reload()
    }

    /// What nginx wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("nginx.log")).unwrap_or_default()
    }

    /// The master's process id (also its process group's).
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Whether the master has exited, with its status.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.process.try_wait()
    }
}

/// For a command that runs nginx, built by hand rather than by [`Nginx`]: refuses it
/// unless its configuration (`-c`) listens on loopback only, and stops it the way
/// [`Nginx`] does (SIGQUIT to the master first). Other commands keep `stop`.
pub(crate) fn guard(command: &Command, stop: Stop) -> anyhow::Result<Stop> {
    if Path::new(command.get_program()).file_name() != Some("nginx".as_ref()) {
        return Ok(stop);
    }
    let args: Vec<&std::ffi::OsStr> = command.get_args().collect();
    let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| PathBuf::from(w[1]));
    let config = value("-c").context("nginx without -c would run the system's configuration")?;
    let config = match value("-p") {
        Some(prefix) if config.is_relative() => prefix.join(config),
        _ => config,
    };
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    anyhow::ensure!(
        loopback_only(&text)? == text,
        "{} listens beyond loopback: start nginx with mla_e2e::nginx::Nginx, which moves it to loopback",
        config.display()
    );
    Ok(match stop {
        Stop::Kill => Stop::Graceful { signal: "QUIT", grace: GRACE },
        graceful => graceful,
    })
}

fn write_config(prefix: &Path, config: &str) -> anyhow::Result<()> {
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, loopback_only(config)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ports_move_to_loopback_and_other_addresses_are_refused() {
        let config = "server {\n    listen 8080 ssl;\n    listen 8081;\n  listen 127.0.0.1:9000;\n    listen_x 1;\n}\n";
        assert_eq!(
            loopback_only(config).unwrap(),
            "server {\n    listen 127.0.0.1:8080 ssl;\n    listen 127.0.0.1:8081;\n  listen 127.0.0.1:9000;\n    listen_x 1;\n}\n"
        );
        for bad in
            ["listen 0.0.0.0:80;", "listen *:80;", "listen [::]:80;", "listen 10.0.0.1:80 ssl;", "listen unix:/x;"]
        {
            assert!(loopback_only(bad).is_err(), "{bad}");
        }
    }
}

//! Child processes that never outlive the test: killed on drop (also during a panic's
//! unwinding), and by a watchdog when the test process itself dies without unwinding
//! (SIGKILL, abort).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process with its output in a log file, killed on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    watchdog: Option<Child>,
}

impl ManagedProcess {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let child =
            command.spawn().map_err(|e| anyhow::anyhow!("starting {name} ({:?}): {e}", command.get_program()))?;
        // Polls the test process; once it is gone (however it died), kills the child.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -9 \"$2\" 2>/dev/null")
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(Self { name: name.to_string(), child, watchdog })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited, with its status.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends SIGTERM (a graceful stop request) without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Waits up to `timeout` for the process to exit, returning its status.
    pub async fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            tracing::debug!(name = %self.name, pid = self.child.id(), "killing");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

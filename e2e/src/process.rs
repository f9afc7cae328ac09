//! Child processes of tests, the demo and benchmarks, each in a process group of its own,
//! so that stopping it reaches every process it forked (nginx's workers, say). A group
//! never outlives its owner:
//!
//! - on drop (also during a panic's unwinding) the group is stopped: SIGKILL to the whole
//!   group, or for a process with a graceful stop (nginx) its signal to the leader and a
//!   wait, then SIGKILL to whatever of the group is left;
//! - a watchdog (a small `sh` of its own group, deaf to terminal signals) does the same
//!   once the owning process is gone however it died (SIGKILL, abort, Ctrl-C: a child in
//!   its own group no longer gets the terminal's SIGINT);
//! - every group is recorded in the process registry (`$MLA_PROCESS_REGISTRY`, default
//!   `target/mla-processes/` of the workspace) until it is gone, so that
//!   `hack/check-leftovers.sh` can tell whether anything a run started is still alive.
//!
//! Signals are sent with the shell's `kill` (the workspace forbids `unsafe`, so no libc).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a process is stopped when its owner is done with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL to the whole group at once: for processes whose state does not matter
    /// after the test (control planes with throwaway data, the binaries, Prometheus).
    Kill,
    /// `signal` (a name as `kill -s` takes it, e.g. `QUIT`) to the group leader, up to
    /// `grace` for the whole group to exit, then SIGKILL to what is left of the group.
    Graceful {
        /// The leader's stop signal.
        signal: &'static str,
        /// How long the group may take to exit.
        grace: Duration,
    },
}

/// How long a SIGKILLed group may take to disappear before a stop gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A child process (with its process group) logging to a file, stopped on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    stop: Stop,
    stopped: bool,
    watchdog: Option<Child>,
    record: Option<PathBuf>,
}

impl ManagedProcess {
    /// Spawns `command` with stdout and stderr appended to `log`; stopped with SIGKILL to
    /// its group.
    pub fn spawn(name: &str, command: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(name, command, log, Stop::Kill)
    }

    /// Spawns `command` in a process group of its own with stdout and stderr appended to
    /// `log`, records the group in the registry and starts its watchdog.
    /// nginx is refused unless it listens on loopback only, and always stopped gracefully
    /// first (see [`crate::nginx`]).
    pub fn spawn_with(name: &str, mut command: Command, log: &Path, stop: Stop) -> anyhow::Result<Self> {
        let stop = crate::nginx::guard(&command, stop)?;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).process_group(0);
        let command_line = command_line(&command);
        let child =
            command.spawn().map_err(|e| anyhow::anyhow!("starting {name} ({:?}): {e}", command.get_program()))?;
        let mut process = Self { name: name.to_string(), child, stop, stopped: false, watchdog: None, record: None };
        // On error, `process` is dropped here and so stopped.
        process.record = Some(record(name, process.child.id(), &command_line, log)?);
        process.watchdog = Some(spawn_watchdog(process.child.id(), stop, process.record.as_deref())?);
        Ok(process)
    }

    /// The process id (also the id of its process group).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited, with its status.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends SIGTERM (a graceful stop request) to the process without waiting.
    pub fn terminate(&self) {
        signal(&self.child.id().to_string(), "TERM");
    }

    /// Waits up to `timeout` for the process to exit, returning its status.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the whole process group (SIGKILL), as a crash would, and reaps the process.
    pub fn kill(&mut self) {
        self.finish(Stop::Kill);
    }

    /// Stops the process group the way given at spawn, waiting until it is gone.
    pub fn stop(&mut self) {
        self.finish(self.stop);
    }

    fn finish(&mut self, stop: Stop) {
        if self.stopped {
            return;
        }
        let pgid = self.child.id();
        // Signals go out only while the group has live members: the kernel does not hand
        // out an id still in use as a process group id, so they reach only our processes.
        // (The leader, unless a caller reaped it already, is reaped only at the end.)
        if let Stop::Graceful { signal: name, grace } = stop
            && !group_members(pgid).is_empty()
        {
            tracing::debug!(name = %self.name, pgid, signal = name, "stopping");
            signal(&pgid.to_string(), name);
            wait_until_gone(pgid, grace);
        }
        if !group_members(pgid).is_empty() {
            tracing::debug!(name = %self.name, pgid, "killing the process group");
            signal(&format!("-{pgid}"), "KILL");
            wait_until_gone(pgid, KILL_WAIT);
        }
        let _ = self.child.wait();
        let left = group_members(pgid);
        if left.is_empty() {
            if let Some(record) = self.record.take() {
                let _ = std::fs::remove_file(record);
            }
        } else {
            // Kept in the registry: hack/check-leftovers.sh reports it.
            tracing::warn!(name = %self.name, pgid, ?left, "process group still alive after SIGKILL");
        }
        self.stopped = true;
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// Sends `signal` (a `kill -s` name) to `target` (a pid, or `-<pgid>` for a group).
fn signal(target: &str, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" -- \"$2\" 2>/dev/null", "kill", signal, target])
        .stdin(Stdio::null())
        .status();
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // After the command name (which may hold spaces and parentheses): state, ppid, pgrp.
            let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            matches!(fields.as_slice(), [state, _, pgrp, ..] if *state != "Z" && *state != "X" && pgrp.parse() == Ok(pgid))
        })
        .collect()
}

fn wait_until_gone(pgid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !group_members(pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start time of process `pid` in clock ticks after boot (`/proc/<pid>/stat` field 22):
/// with the pid, it names a process unambiguously.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 is the 20th after the command name.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19).map(str::to_string)
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().replace('\n', " "))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The registry directory: `$MLA_PROCESS_REGISTRY`, else `target/mla-processes/` in the
/// workspace (where `hack/check-leftovers.sh` looks by default).
pub fn registry_dir() -> PathBuf {
    std::env::var_os("MLA_PROCESS_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/mla-processes"))
}

/// Writes the registry record of group `pgid`, named `<pgid>-<leader start time>`, in
/// shell-readable `key=value` lines (read by `hack/check-leftovers.sh`).
fn record(name: &str, pgid: u32, command_line: &str, log: &Path) -> anyhow::Result<PathBuf> {
    let dir = registry_dir();
    let start = start_time(pgid).unwrap_or_default();
    let owner = std::process::id();
    let write = || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{pgid}-{start}"));
        let text = format!(
            "name={name}\npgid={pgid}\nstart={start}\nowner={owner}\nowner_start={}\nowner_command={}\nlog={}\ncommand={command_line}\n",
            start_time(owner).unwrap_or_default(),
            std::env::args().next().unwrap_or_default().replace('\n', " "),
            log.display(),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    };
    write().map_err(|e| {
        anyhow::anyhow!("recording {name} in the process registry {} (set MLA_PROCESS_REGISTRY): {e}", dir.display())
    })
}

/// Waits (polling every second) until this process is gone, then stops group `pgid` as
/// `stop` says and removes its record once the group is gone. Ignores the terminal's and
/// other polite signals so that a Ctrl-C or a `kill` of the test's process group cannot
/// stop it before it has done its work; in a group of its own for the same reason.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP QUIT
owner=$1 pgid=$2 signal=$3 grace=$4 record=$5
# A live (not zombie) process in the group: orphaned zombies are never reaped where
# PID 1 does not reap, and count as gone.
alive() {
  for stat in /proc/[0-9]*/stat; do
    read -r line <"$stat" 2>/dev/null || continue
    set -- ${line##*) }
    [ "$1" != Z ] && [ "$3" = "$pgid" ] && return 0
  done
  return 1
}
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
if [ "$signal" != KILL ] && alive; then
  kill -s "$signal" "$pgid" 2>/dev/null
  i=0; while alive && [ "$i" -lt "$((grace * 10))" ]; do sleep 0.1; i=$((i + 1)); done
fi
kill -s KILL -- "-$pgid" 2>/dev/null
i=0; while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if ! alive && [ -n "$record" ]; then rm -f "$record"; fi
"#;

fn spawn_watchdog(pgid: u32, stop: Stop, record: Option<&Path>) -> anyhow::Result<Child> {
    let (signal, grace) = match stop {
        Stop::Kill => ("KILL", 0),
        Stop::Graceful { signal, grace } => (signal, grace.as_secs().max(1)),
    };
    Command::new("sh")
        .args(["-c", WATCHDOG, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(pgid.to_string())
        .arg(signal)
        .arg(grace.to_string())
        .arg(record.map(Path::as_os_str).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting the watchdog of process group {pgid}: {e}"))
}

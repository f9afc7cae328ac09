//! One way for every benchmark program to report a figure, so that `make bench`
//! (`hack/bench.sh`) can print one summary table and docs/benchmarks.md can keep it.
//!
//! A figure is printed as a line of its own (`FIGURE<TAB>figure<TAB>value<TAB>goal<TAB>met<TAB>command`)
//! and, when `MLA_BENCH_RESULTS` names a file, appended to it as the same tab-separated
//! row without the leading word. `met` is `yes`, `no`, or `-` for a figure without a goal.

use std::fmt::Display;
use std::io::Write;

/// How a figure compares with its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// Reported for information: no goal.
    NoGoal,
}

impl Met {
    /// `Yes` when `ok`, else `No`.
    pub fn from(ok: bool) -> Self {
        if ok { Met::Yes } else { Met::No }
    }

    fn word(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "no",
            Met::NoGoal => "-",
        }
    }
}

/// The command that ran this benchmark: `MLA_BENCH_COMMAND` when `hack/bench.sh` set it,
/// else the program's own arguments.
pub fn command() -> String {
    std::env::var("MLA_BENCH_COMMAND").unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "))
}

/// Reports one figure: prints it and appends it to `$MLA_BENCH_RESULTS` when set.
pub fn report(figure: &str, value: impl Display, goal: &str, met: Met) {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let row = format!(
        "{}\t{}\t{}\t{}\t{}",
        clean(figure),
        clean(&value.to_string()),
        clean(goal),
        met.word(),
        clean(&command())
    );
    println!("FIGURE\t{row}");
    if let Ok(path) = std::env::var("MLA_BENCH_RESULTS") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{row}"));
        if let Err(error) = written {
            eprintln!("cannot append the figure to {path}: {error}");
        }
    }
}

/// Peak resident set size of a process in MiB (`VmHWM` of `/proc/<pid>/status`), while it runs.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) the process `pid` has used so far, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// A command that runs `binary`, under the profiler `MLA_BENCH_WRAPPER` names when set
/// (e.g. `heaptrack -o target/bench/seed`, or `perf record -g -o perf.data --`; the peak
/// RSS is then the profiler's process, not the binary's).
pub fn profiled(binary: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let wrapper: Vec<String> =
        std::env::var("MLA_BENCH_WRAPPER").unwrap_or_default().split_whitespace().map(String::from).collect();
    match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    }
}

//! Logging setup.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::{LogArgs, LogFormat};

/// Installs the global `tracing` subscriber: plain or JSON lines on stderr, filtered by
/// the `--log-level` directive.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(&args.level).map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.level))?;
    let registry = tracing_subscriber::registry().with(filter);
    match args.format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr))
            .try_init()?,
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr))
            .try_init()?,
    }
    Ok(())
}

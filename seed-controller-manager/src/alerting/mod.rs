//! Placeholder: filled in by its own change.

use std::future::Future;

use mla_common::runtime::Runtime;

use crate::SeedSettings;

/// Flags of this controller.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(id = "alerting")]
pub struct Args {}

/// Checks the flags and returns the controller, running until shutdown.
pub fn start(
    _runtime: &Runtime,
    _seed: &SeedSettings,
    _args: &Args,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {})
}

//! Shared code of the three MLA controller binaries: the `kubermatic.k8c.io/v1` API types
//! and the runtime every binary is built on (flags, logging, admin server, metrics, leader
//! election, server-side apply, errors, backoff, Events).

pub mod admin;
pub mod api;
pub mod apply;
pub mod backoff;
pub mod cli;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod telemetry;
pub mod validation;

pub use error::{Error, Result};

//! The MLA agents installed into a user cluster's `mla-system` namespace.

pub mod common;
pub mod prometheus;
pub mod promtail;

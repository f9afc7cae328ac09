//! The MLA agents installed into a user cluster's agents namespace (`mla-system` unless
//! told otherwise, see [`placement`]).

pub mod common;
pub mod placement;
pub mod prometheus;
pub mod promtail;

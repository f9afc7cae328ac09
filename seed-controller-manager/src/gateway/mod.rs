//! The MLA gateway of each cluster: nginx in front of the shared Cortex and Loki, pinning
//! the tenant to the cluster.

pub mod controller;
pub mod nginx;
pub mod resources;

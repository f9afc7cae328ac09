//! The user-cluster-controller-manager's controllers, as a library so that tests can drive
//! their pure parts (agent configuration builders) directly.

pub mod agents;
pub mod certificates;
pub mod controller;
pub mod gateway_url;

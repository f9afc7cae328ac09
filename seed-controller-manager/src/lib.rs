//! The seed-controller-manager's controllers, as a library so that tests can drive their
//! pure parts (configuration renderers, resource builders) directly.

pub mod gateway;
pub mod usercluster;

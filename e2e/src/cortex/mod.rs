//! Placeholder: a test server of Cortex's and Loki's per-tenant configuration APIs,
//! filled in by its own change.

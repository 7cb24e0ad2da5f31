//! The operator process: caches and the controller loop, leader election
//! and terms of leading, resilient watches, the HTTP endpoints, metrics and
//! telemetry.

pub mod cache;
pub mod controller;
pub mod lead;
pub mod leader;
pub mod metrics;
pub mod packed;
pub mod server;
pub mod shelf;
pub mod telemetry;
pub mod watch;

//! The operator process: caches and the watches that keep them, the
//! controller loop, leader election and terms of leading, the HTTP
//! endpoints, metrics and telemetry.

pub mod cache;
pub mod controller;
pub mod lead;
pub mod leader;
pub mod metrics;
pub mod resilient;
pub mod server;
pub mod telemetry;
pub mod watches;

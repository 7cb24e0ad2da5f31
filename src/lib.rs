//! appstack-operator: one `AppStack` resource becomes a running application
//! stack — PostgreSQL, migrations, backend, frontend, env and secrets, and
//! Prometheus monitoring — in order, with a status tools can trust.
#![forbid(unsafe_code)]

pub mod api;
pub mod children;
pub mod cli;
pub mod database;
pub mod docs;
pub mod import;
pub mod kinds;
pub mod plugin;
pub mod reconcile;
pub mod runtime;
pub mod secrets;
pub mod stages;

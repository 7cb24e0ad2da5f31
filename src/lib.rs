//! appstack-operator: one `AppStack` resource becomes a running application
//! stack — PostgreSQL, migrations, backend, frontend, env and secrets, and
//! Prometheus monitoring — in order, with a status tools can trust.
#![forbid(unsafe_code)]

pub mod apply;
pub mod children;
pub mod controller;
pub mod crd;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod secrets;
pub mod server;
pub mod stack;
pub mod status;
pub mod telemetry;
pub mod watch;

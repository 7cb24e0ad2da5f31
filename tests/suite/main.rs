//! The integration suite, one test binary with a module per area: it compiles
//! and links `common` once. Tests that need the local control plane, the
//! pinned tools or PostgreSQL run under `scripts/test.sh`, which provides them.

mod common;

mod bad_references;
mod chart;
mod cluster_script;
mod cluster_workloads;
mod crd_validation;
mod database;
mod disruption;
mod docs;
mod exposure;
mod external_database;
mod faults;
mod gitops;
mod images;
mod import;
mod install;
mod least_privilege;
mod operator;
mod other_writers;
mod plugin;
mod pod_causes;
mod process;
mod properties;
mod real_node;
mod real_node_teardown;
mod real_schema;
mod real_stack;
mod render;
mod schema;
mod security;

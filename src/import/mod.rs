//! `appstack import`: an AppStack from a docker-compose project and its
//! `.env`, with secret values kept out of it.
//!
//! The compose files are read as Compose reads them ([`compose`], with
//! [`interpolate`] and [`dotenv`]); [`project`] gives each service the
//! environment its container would get. Each decision has its module:
//! which service plays which part ([`roles`], reading [`facts`]), which
//! values are secret ([`sensitive`], typed by [`env`]), how the database
//! is wired ([`database`]), what the workloads run ([`workload`]), the
//! frontend ([`frontend`]). [`build`] assembles the AppStack from the
//! typed [`AppStackSpec`], so the output always matches the CRD; what it
//! cannot carry is listed in the [`Report`].
//!
//! [`AppStackSpec`]: crate::api::crd::AppStackSpec

use std::collections::BTreeMap;
use std::path::PathBuf;

mod build;
pub mod cli;
pub mod compose;
mod database;
pub mod dotenv;
mod env;
mod facts;
mod frontend;
pub mod interpolate;
mod project;
mod report;
mod roles;
mod sensitive;
mod workload;
mod yaml;

pub use build::{ComposeRequest, Imported, import_compose, secret_manifest};
pub use env::{DotenvRequest, ImportedEnv, import_dotenv};
pub use report::{Report, Skipped};
pub use workload::PLACEHOLDER_IMAGE_PREFIX;

/// Why no AppStack could be made.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "no compose file in {directory} (looked for compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml); name one with -f"
    )]
    NoComposeFile { directory: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: a compose file is a YAML mapping (services:, volumes:, ...)")]
    NotAMapping { path: PathBuf },
    #[error("{path}: {source}")]
    Interpolation {
        path: PathBuf,
        source: interpolate::InterpolationError,
    },
    #[error("{path}: {source}")]
    Dotenv {
        path: PathBuf,
        source: dotenv::DotenvError,
    },
    #[error("the merged compose project is not valid: {source}")]
    Model { source: serde_yaml::Error },
    #[error("service {service}: {reason}")]
    Extends { service: String, reason: String },
    #[error("the compose project has no services")]
    NoServices,
    #[error("no service can be the backend: {reason}")]
    NoBackend { reason: String },
    #[error("{flag} {service}: the compose project has no service {service} (services: {known})")]
    UnknownService {
        flag: &'static str,
        service: String,
        known: String,
    },
}

/// The variables compose files are interpolated with: the process
/// environment, then the `.env` files (the process wins, as in Compose).
#[derive(Debug, Clone, Default)]
pub struct ProjectEnvironment {
    pub process: BTreeMap<String, String>,
    pub files: dotenv::EnvMap,
}

impl ProjectEnvironment {
    pub fn get(&self, name: &str) -> Option<String> {
        self.process
            .get(name)
            .or_else(|| self.files.get(name))
            .cloned()
    }
}

#[cfg(test)]
mod tests;

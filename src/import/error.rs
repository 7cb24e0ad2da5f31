//! Why an import stops without an AppStack: one error type for every
//! step, so the command prints one message naming the file or the service.

use std::path::PathBuf;

use super::dotenv::DotenvError;
use super::interpolate::InterpolationError;

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
        source: InterpolationError,
    },
    #[error("{path}: {source}")]
    Dotenv { path: PathBuf, source: DotenvError },
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

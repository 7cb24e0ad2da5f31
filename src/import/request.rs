//! What `appstack import compose` was asked to do, as the command line
//! gave it: read by every step, so it depends on none of them.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `appstack import compose` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ComposeRequest {
    /// Compose files in merge order; empty for the default files.
    pub files: Vec<PathBuf>,
    /// `.env` files; empty for the project directory's `.env`, if any.
    pub env_files: Vec<PathBuf>,
    /// Relative paths are resolved against it.
    pub working_directory: PathBuf,
    /// The process environment (it wins over `.env`, as in Compose).
    pub process_env: BTreeMap<String, String>,
    /// The AppStack's name; the compose project name when `None`.
    pub name: Option<String>,
    /// `SERVICE=IMAGE` for services that only have `build:`.
    pub images: Vec<(String, String)>,
    /// The backend service, when the heuristics should not choose.
    pub backend: Option<String>,
    /// The frontend service, when the heuristics should not choose.
    pub frontend: Option<String>,
    /// Profiles to enable (`--profile`); `COMPOSE_PROFILES` when empty.
    pub profiles: Vec<String>,
    /// Placeholder secrets become `generate` entries.
    pub generate_secrets: bool,
    /// Where the Secret manifest will be written, for the messages.
    pub secrets_out: Option<PathBuf>,
}

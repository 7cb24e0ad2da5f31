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
//! Each module imports only those before it in this order, so none reaches
//! back into a step that calls it, and what several steps share has one
//! home beneath them all: `request`, `error`, `names`, `report`, `yaml`;
//! `interpolate`, `dotenv`, `compose`, `project`; `sensitive`, `facts`,
//! `traefik`; `roles`; `builder` (what every spec builder reads),
//! `database`, `workload`, `env`, `frontend`; `build`; `cli`.
//!
//! [`AppStackSpec`]: crate::api::crd::AppStackSpec

mod build;
mod builder;
pub mod cli;
pub mod compose;
mod database;
pub mod dotenv;
mod env;
mod error;
mod facts;
mod frontend;
pub mod interpolate;
mod names;
mod project;
mod report;
mod request;
mod roles;
mod sensitive;
mod traefik;
mod workload;
mod yaml;

pub use build::{Imported, import_compose, secret_manifest};
pub use env::{DotenvRequest, ImportedEnv, import_dotenv};
pub use error::ImportError;
pub use report::{Report, Skipped};
pub use request::ComposeRequest;
pub use workload::PLACEHOLDER_IMAGE_PREFIX;

#[cfg(test)]
mod tests;

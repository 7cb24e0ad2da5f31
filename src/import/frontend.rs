//! The frontend: which variable receives the backend's URL, and what of
//! the frontend service an AppStack cannot carry.

use serde_json::json;

use super::build::Builder;
use super::env::valid_name;
use super::facts::Facts;
use super::report::Report;
use super::workload::{DEFAULT_FRONTEND_PORT, Workload};
use crate::api::crd::{FrontendSpec, RESERVED_ENV_NAMES};

impl Builder<'_> {
    pub(super) fn frontend_spec(&self, report: &mut Report) -> Option<FrontendSpec> {
        let facts = self.frontend()?;
        let Workload {
            image,
            command,
            args,
            port,
            health,
            replicas,
            resources,
        } = self.workload(facts, "frontend", DEFAULT_FRONTEND_PORT, report);
        let mut spec: FrontendSpec =
            serde_json::from_value(json!({ "image": image })).expect("a frontend spec");
        spec.command = command;
        spec.args = args;
        spec.port = port;
        spec.health = health;
        spec.replicas = replicas;
        spec.resources = resources;
        let api_url = api_url_variable(facts, self.backend())
            .filter(|name| valid_name(name) && !RESERVED_ENV_NAMES.contains(&name.as_str()));
        match &api_url {
            Some(name) => {
                report.note(format!(
                    "frontend: {name} becomes apiUrlEnv: the operator sets it to the backend Service's URL"
                ));
                spec.api_url_env = name.clone();
            }
            None => report.note(format!(
                "frontend: no variable held the backend's URL; the operator sets {} (apiUrlEnv) to it",
                spec.api_url_env
            )),
        }
        for key in facts
            .env
            .keys()
            .filter(|key| Some(*key) != api_url.as_ref())
        {
            report.skip(
                facts.name,
                format!("variable {key}"),
                "an AppStack gives the frontend only the backend's URL (apiUrlEnv); build the value into the image",
            );
        }
        Some(spec)
    }
}

/// The variable of the frontend that holds the backend's URL: one whose
/// value points at the backend, else one whose name says so.
pub(super) fn api_url_variable(frontend: &Facts, backend: &Facts) -> Option<String> {
    frontend.env_points_at(backend).or_else(|| {
        frontend
            .env
            .keys()
            .find(|key| {
                let key = key.to_ascii_uppercase();
                [
                    "API_URL",
                    "API_BASE",
                    "BACKEND_URL",
                    "API_HOST",
                    "API_ENDPOINT",
                    "SERVER_URL",
                ]
                .iter()
                .any(|part| key.contains(part))
            })
            .cloned()
    })
}

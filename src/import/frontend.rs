//! The frontend and how the stack is reached: the frontend's spec, with
//! the variable that receives the backend's URL (read in [`facts`]) as its
//! `apiUrlEnv`, and `spec.expose` from the traefik routers (read in
//! [`traefik`]): `Host()` rules become `spec.expose.host`, `PathPrefix()`
//! the backend's `apiPath`.
//!
//! [`facts`]: super::facts
//! [`traefik`]: super::traefik

use serde_json::json;

use super::builder::Builder;
use super::facts::{ApiUrl, api_url_variable};
use super::report::Report;
use super::traefik::traefik_routes;
use super::workload::{DEFAULT_FRONTEND_PORT, Workload};
use crate::api::crd::{ExposeSpec, FrontendSpec};

/// Whether `host` is a name `spec.expose.host` takes: a lowercase DNS
/// name, not an IP address or a wildcard.
fn valid_host(host: &str) -> bool {
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok && host.len() <= 253 && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Whether `path` is an `apiPath` the CRD takes: absolute, segments of
/// letters, digits, `-_.~` not starting with `.`, no trailing `/`.
fn valid_api_path(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && !path.ends_with('/')
        && path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        })
}

impl Builder<'_> {
    pub(super) fn frontend_spec(&self, report: &mut Report) -> Option<FrontendSpec> {
        let facts = self.frontend()?;
        report.part(facts.name, "frontend");
        let Workload {
            image,
            command,
            args,
            port,
            health,
            replicas,
            resources,
            run_as_user,
        } = self.workload(facts, "frontend", DEFAULT_FRONTEND_PORT, report);
        let mut spec: FrontendSpec =
            serde_json::from_value(json!({ "image": image })).expect("a frontend spec");
        spec.command = command;
        spec.args = args;
        spec.port = port;
        spec.health = health;
        spec.replicas = replicas;
        spec.resources = resources;
        spec.run_as_user = run_as_user;
        let api_url = api_url_variable(facts, self.backend());
        match &api_url {
            Some(ApiUrl {
                name,
                build_arg: false,
            }) => {
                report.decide(
                    facts.name,
                    format!("{name} becomes apiUrlEnv: the operator sets it to the backend's URL"),
                );
                spec.api_url_env = name.clone();
            }
            Some(ApiUrl {
                name,
                build_arg: true,
            }) => {
                report.decide(
                    facts.name,
                    format!("{name} (a build argument) becomes apiUrlEnv"),
                );
                report.todo(format!(
                    "{} bakes {name} into its bundle at build time; the operator sets {name} at run time, which a static bundle does not read: build it with the backend's public URL, or have it read {name} at start",
                    facts.name
                ));
                spec.api_url_env = name.clone();
            }
            None => {
                report.decide(
                    facts.name,
                    format!(
                        "no variable held the backend's URL: the operator sets {} (apiUrlEnv)",
                        spec.api_url_env
                    ),
                );
                report.todo(format!(
                    "set spec.frontend.apiUrlEnv to the variable {} reads the backend's URL from (now {})",
                    facts.name, spec.api_url_env
                ));
            }
        }
        let dropped: Vec<&String> = facts
            .env
            .keys()
            .filter(|key| Some(key.as_str()) != api_url.as_ref().map(|api| api.name.as_str()))
            .collect();
        for key in &dropped {
            report.skip(
                facts.name,
                format!("variable {key}"),
                "the frontend gets only the backend's URL: an AppStack's env is the backend's and the migrations'; build the value into the image",
            );
        }
        if !dropped.is_empty() {
            report.detail(
                facts.name,
                format!(
                    "{} variables of its env are not given to the frontend (the backend's env is the AppStack's)",
                    dropped.len()
                ),
            );
        }
        Some(spec)
    }

    /// `spec.expose` from the traefik routers of the frontend and backend:
    /// the frontend's host (else the backend's), the backend's path prefix
    /// on that host as `apiPath`.
    pub(super) fn exposure(&self, report: &mut Report) -> Option<ExposeSpec> {
        let backend = self.backend();
        let backend_routes = traefik_routes(backend);
        let frontend_routes = self.frontend().map(traefik_routes).unwrap_or_default();
        let (owner, route) = match (frontend_routes.first(), backend_routes.first()) {
            (Some(route), _) => (self.frontend()?.name, route),
            (None, Some(route)) => (backend.name, route),
            (None, None) => return None,
        };
        let host = route.hosts[0].to_ascii_lowercase();
        if !valid_host(&host) {
            report.warn(format!(
                "{owner}'s traefik rule names host {host:?}, which is not a DNS name spec.expose.host takes: the stack is not exposed; set spec.expose.host"
            ));
            return None;
        }
        let mut expose = json!({ "host": host });
        let on_host = backend_routes.iter().find(|route| {
            route
                .hosts
                .iter()
                .any(|name| name.eq_ignore_ascii_case(&host))
        });
        let mut where_backend = String::new();
        if self.frontend().is_some() {
            match on_host.and_then(|route| route.path_prefix.clone()) {
                Some(prefix) if valid_api_path(prefix.trim_end_matches('/')) => {
                    let prefix = prefix.trim_end_matches('/').to_string();
                    where_backend = format!(", the backend under {prefix}");
                    expose["apiPath"] = json!(prefix);
                }
                _ => {
                    where_backend = ", the backend under /api".into();
                    if let Some(other) = backend_routes
                        .iter()
                        .flat_map(|route| &route.hosts)
                        .find(|name| !name.eq_ignore_ascii_case(&host))
                    {
                        report.todo(format!(
                            "{} was served at {other}; the stack serves it at {host}/api (spec.expose.apiPath): point its clients there, or change apiPath",
                            backend.name
                        ));
                    }
                }
            }
        }
        let tls = frontend_routes
            .iter()
            .chain(&backend_routes)
            .find(|route| route.tls);
        let scheme = if tls.is_some() { "https" } else { "http" };
        report.decide(
            "stack",
            format!("exposed at {scheme}://{host} (traefik Host rule of {owner}){where_backend}"),
        );
        if let Some(route) = tls {
            let from = route
                .cert_resolver
                .as_ref()
                .map(|resolver| format!(" (traefik got them from resolver {resolver})"))
                .unwrap_or_default();
            report.todo(format!(
                "HTTPS: set spec.expose.tls.clusterIssuer (cert-manager) or tls.secretName for the certificate of {host}{from}"
            ));
        }
        Some(serde_json::from_value(expose).expect("an expose spec"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_api_paths_follow_the_crd() {
        assert!(valid_host("dashboard.example.com") && valid_host("localhost"));
        for host in ["api.", "Api.example.com", "10.0.0.1", "*.example.com", ""] {
            assert!(!valid_host(host), "{host}");
        }
        assert!(valid_api_path("/api") && valid_api_path("/api/v1"));
        for path in ["/", "api", "/api/", "/.well-known"] {
            assert!(!valid_api_path(path), "{path}");
        }
    }
}

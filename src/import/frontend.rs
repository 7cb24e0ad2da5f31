//! The frontend and how the stack is reached: which variable of the
//! frontend (in its env or its build arguments) receives the backend's
//! URL, and what the traefik labels say (`Host()` rules become
//! `spec.expose.host`, `PathPrefix()` the backend's `apiPath`, the load
//! balancer port the container port).

use serde_json::json;

use super::build::Builder;
use super::env::valid_name;
use super::facts::{Facts, url_points_at};
use super::report::Report;
use super::sensitive::url_parts;
use super::workload::{DEFAULT_FRONTEND_PORT, Workload};
use crate::api::crd::{ExposeSpec, FrontendSpec, RESERVED_ENV_NAMES};

/// Endings of variable names that hold an API's URL.
const API_URL_SUFFIXES: [&str; 9] = [
    "API_URL",
    "API_BASE",
    "API_BASE_URL",
    "API_ENDPOINT",
    "API_HOST",
    "API_ROOT",
    "API_SERVER",
    "BACKEND_URL",
    "SERVER_URL",
];

/// The frontend's variable that receives the backend's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiUrl {
    pub(super) name: String,
    /// A build argument: its value is baked into the bundle at build time.
    pub(super) build_arg: bool,
}

/// Whether `value` can be a URL (or is still empty, to be filled in).
fn url_like(value: &str) -> bool {
    value.is_empty() || value.starts_with('/') || url_parts(value).is_some()
}

/// The variable of `frontend` that holds the backend's URL: one named so
/// (`VITE_API_URL`, `REACT_APP_BACKEND_URL`...) holding a URL, in its env
/// then its build arguments, else one whose URL points at `backend`. A
/// value that merely equals the backend's name is no URL.
pub(super) fn api_url_variable(frontend: &Facts, backend: &Facts) -> Option<ApiUrl> {
    let env = frontend
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str(), false));
    let args = frontend
        .build_args()
        .into_iter()
        .map(|(name, value)| (name, value, true));
    let candidates: Vec<(&str, &str, bool)> = env.chain(args).collect();
    let named = |name: &str| {
        let name = name.to_ascii_uppercase();
        API_URL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
    };
    candidates
        .iter()
        .find(|(name, value, _)| named(name) && url_like(value))
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, value, _)| url_points_at(value, backend))
        })
        .filter(|(name, _, _)| valid_name(name) && !RESERVED_ENV_NAMES.contains(name))
        .map(|(name, _, build_arg)| ApiUrl {
            name: name.to_string(),
            build_arg: *build_arg,
        })
}

/// Whether `caller` holds a URL pointing at `target`, in its env or its
/// build arguments.
pub(super) fn calls(caller: &Facts, target: &Facts) -> bool {
    caller
        .env
        .values()
        .map(String::as_str)
        .chain(caller.build_args().into_iter().map(|(_, value)| value))
        .any(|value| url_points_at(value, target))
}

/// A traefik router of a service: its host names, path prefix and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) hosts: Vec<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) tls: bool,
    pub(super) cert_resolver: Option<String>,
}

fn traefik_enabled(facts: &Facts) -> bool {
    !facts
        .labels()
        .iter()
        .any(|(key, value)| *key == "traefik.enable" && value.eq_ignore_ascii_case("false"))
}

/// The arguments of `function(` … `)` in a traefik rule: each quoted
/// with backticks or double quotes.
fn rule_arguments(rule: &str, function: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = rule;
    while let Some(start) = rest.find(&format!("{function}(")) {
        let inside = &rest[start + function.len() + 1..];
        let end = inside.find(')').unwrap_or(inside.len());
        for argument in inside[..end].split(',') {
            let argument = argument.trim().trim_matches(['`', '"', '\'']);
            if !argument.is_empty() {
                found.push(argument.to_string());
            }
        }
        rest = &inside[end..];
    }
    found
}

/// The traefik routers of a service (`traefik.http.routers.NAME.*`).
pub(super) fn traefik_routes(facts: &Facts) -> Vec<Route> {
    if !traefik_enabled(facts) {
        return Vec::new();
    }
    let mut routes: Vec<(String, Route)> = Vec::new();
    for (key, value) in facts.labels() {
        let Some(rest) = key.strip_prefix("traefik.http.routers.") else {
            continue;
        };
        let Some((router, setting)) = rest.split_once('.') else {
            continue;
        };
        let index = match routes.iter().position(|(name, _)| name == router) {
            Some(index) => index,
            None => {
                routes.push((router.to_string(), Route::default()));
                routes.len() - 1
            }
        };
        let route = &mut routes[index].1;
        match setting {
            "rule" => {
                route.hosts = rule_arguments(value, "Host");
                route.path_prefix = rule_arguments(value, "PathPrefix").into_iter().next();
            }
            "tls" => route.tls = value.eq_ignore_ascii_case("true"),
            "tls.certresolver" => {
                route.tls = true;
                route.cert_resolver = Some(value.to_string());
            }
            _ => {}
        }
    }
    routes
        .into_iter()
        .map(|(_, route)| route)
        .filter(|route| !route.hosts.is_empty())
        .collect()
}

/// `traefik.http.services.NAME.loadbalancer.server.port`: the port the
/// container serves traefik on.
pub(super) fn load_balancer_port(facts: &Facts) -> Option<u16> {
    if !traefik_enabled(facts) {
        return None;
    }
    facts.labels().into_iter().find_map(|(key, value)| {
        let rest = key.strip_prefix("traefik.http.services.")?;
        rest.ends_with(".loadbalancer.server.port")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

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
    use crate::import::compose::service_from_yaml;
    use crate::import::dotenv::EnvMap;

    fn routes(yaml: &str) -> (Vec<Route>, Option<u16>) {
        let service = service_from_yaml(yaml);
        let env = EnvMap::new();
        let facts = Facts {
            name: "web",
            service: &service,
            env: &env,
        };
        (traefik_routes(&facts), load_balancer_port(&facts))
    }

    #[test]
    fn traefik_labels_give_hosts_paths_tls_and_the_port() {
        let (found, port) = routes(
            "labels:\n\
             - traefik.enable=true\n\
             - traefik.http.services.api.loadbalancer.server.port=8000\n\
             - traefik.http.routers.api-http.rule=Host(`api.example.com`) && PathPrefix(`/v1`)\n\
             - traefik.http.routers.api-https.rule=Host(`api.example.com`, `www.example.com`)\n\
             - traefik.http.routers.api-https.tls.certresolver=le\n",
        );
        assert_eq!(port, Some(8000));
        assert_eq!(
            found,
            [
                Route {
                    hosts: vec!["api.example.com".into()],
                    path_prefix: Some("/v1".into()),
                    tls: false,
                    cert_resolver: None
                },
                Route {
                    hosts: vec!["api.example.com".into(), "www.example.com".into()],
                    path_prefix: None,
                    tls: true,
                    cert_resolver: Some("le".into())
                }
            ]
        );
        let (disabled, port) = routes(
            "labels:\n  traefik.enable: \"false\"\n  traefik.http.routers.x.rule: Host(`a.b`)\n",
        );
        assert!(disabled.is_empty() && port.is_none());
    }

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
